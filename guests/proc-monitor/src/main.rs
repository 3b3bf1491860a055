//! proc-monitor: a monitoring endpoint for a legacy app that has none. On each scrape of
//! `GET /metrics` it reads the main containers' live stats through `main-process` (granted by
//! `shareProcessNamespace: true`) and answers Prometheus text twice over:
//!
//! - the standard `process_*` names, labelled by `container` (as a process's own client
//!   library would export them), with `wpod_container_up` and `wpod_container_restarts_total`;
//! - the `namedprocess_namegroup_*` families of process-exporter (ncabatoff), one group per
//!   container (`groupname` = the container's name), so its dashboards and alerts work as they
//!   are. A group is the container's main process: the host reports no children. Its counters
//!   stay monotonic across restarts of the container, as process-exporter's do across the
//!   processes of a group.
//!
//! Configuration (env): `LISTEN` (default 0.0.0.0:9256; declare the port in the sidecar's
//! `ports`), `CONTAINERS` (comma-separated names; default every main container).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use promtext::Families;

use wpod_sidecar::main_process::{self, ProcessStats, State};

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

struct Row {
    name: String,
    restarts: u32,
    stats: Option<ProcessStats>,
}

type Field = fn(&ProcessStats) -> f64;

/// (metric, type, help, value) of the `process_*` families.
const PROCESS: &[(&str, &str, &str, Field)] = &[
    ("process_cpu_seconds_total", COUNTER, "Total user and system CPU time spent in seconds.", |s| (s.cpu_user_us + s.cpu_system_us) as f64 / 1e6),
    ("process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.", |s| s.rss_bytes as f64),
    ("process_virtual_memory_bytes", GAUGE, "Virtual memory size in bytes.", |s| s.vm_bytes as f64),
    ("process_threads", GAUGE, "Number of OS threads.", |s| s.threads as f64),
    ("process_open_fds", GAUGE, "Number of open file descriptors.", |s| s.open_fds as f64),
    ("process_io_read_bytes_total", COUNTER, "Bytes read from storage.", |s| s.read_bytes as f64),
    ("process_io_write_bytes_total", COUNTER, "Bytes written to storage.", |s| s.write_bytes as f64),
    ("process_uptime_seconds", GAUGE, "Seconds since the process started.", |s| s.uptime_seconds as f64),
];

/// The counters process-exporter keeps per group, in this order in `Group`'s arrays.
const CPU_USER: usize = 0;
const CPU_SYSTEM: usize = 1;
const READ: usize = 2;
const WRITE: usize = 3;

fn counters(s: &ProcessStats) -> [f64; 4] {
    [s.cpu_user_us as f64 / 1e6, s.cpu_system_us as f64 / 1e6, s.read_bytes as f64, s.write_bytes as f64]
}

/// What a group carries from scrape to scrape.
#[derive(Default)]
struct Group {
    /// The container's restarts when last seen: a change means a new process.
    restarts: u32,
    /// The raw counters last seen, and what earlier processes of the group had counted.
    last: [f64; 4],
    base: [f64; 4],
    /// The process's start time, fixed once per process (uptime is whole seconds).
    start: Option<f64>,
}

#[derive(Default)]
struct Monitor {
    groups: HashMap<String, Group>,
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn collect(only: &[String]) -> Vec<Row> {
    main_process::containers()
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .map(|c| {
            let stats = if c.state == State::Running { main_process::stats(&c.name).ok() } else { None };
            Row { name: c.name, restarts: c.restarts, stats }
        })
        .collect()
}

fn render(only: &[String], mon: &RefCell<Monitor>) -> String {
    let mut mon = mon.borrow_mut();
    let rows = collect(only);
    let mut m = Families::new();
    for r in &rows {
        let c = [("container", r.name.as_str())];
        m.add("wpod_container_up", GAUGE, "Whether the container's process is running.", &c, if r.stats.is_some() { 1.0 } else { 0.0 });
        m.add("wpod_container_restarts_total", COUNTER, "Restarts of the container.", &c, r.restarts as f64);
        if let Some(s) = &r.stats {
            for (name, kind, help, value) in PROCESS {
                m.add(*name, kind, *help, &c, value(s));
            }
        }
    }
    let now = now_unix();
    for r in &rows {
        let g = [("groupname", r.name.as_str())];
        m.add("namedprocess_namegroup_num_procs", GAUGE, "number of processes in this group", &g, if r.stats.is_some() { 1.0 } else { 0.0 });
        let Some(s) = &r.stats else { continue };
        let group = mon.groups.entry(r.name.clone()).or_default();
        let raw = counters(s);
        if group.restarts != r.restarts {
            // A new process: what the old one counted (when last seen) carries on.
            for i in 0..4 {
                group.base[i] += group.last[i];
            }
            group.restarts = r.restarts;
            group.start = None;
        }
        group.last = raw;
        let total = |i: usize| group.base[i] + raw[i];
        let start = *group.start.get_or_insert((now - s.uptime_seconds as f64).floor());
        let with = |k: &'static str, v: &'static str| [("groupname", r.name.as_str()), (k, v)];
        const CPU: &str = "namedprocess_namegroup_cpu_seconds_total";
        m.add(CPU, COUNTER, "Cpu user usage in seconds", &with("mode", "system"), total(CPU_SYSTEM));
        m.add(CPU, COUNTER, "Cpu user usage in seconds", &with("mode", "user"), total(CPU_USER));
        const MEM: &str = "namedprocess_namegroup_memory_bytes";
        m.add(MEM, GAUGE, "number of bytes of memory in use", &with("memtype", "resident"), s.rss_bytes as f64);
        m.add(MEM, GAUGE, "number of bytes of memory in use", &with("memtype", "virtual"), s.vm_bytes as f64);
        m.add("namedprocess_namegroup_num_threads", GAUGE, "Number of threads", &g, s.threads as f64);
        m.add("namedprocess_namegroup_open_filedesc", GAUGE, "number of open file descriptors for this group", &g, s.open_fds as f64);
        m.add("namedprocess_namegroup_oldest_start_time_seconds", GAUGE, "start time in seconds since 1970/01/01 of oldest process in group", &g, start);
        m.add("namedprocess_namegroup_read_bytes_total", COUNTER, "number of bytes read by this group", &g, total(READ));
        m.add("namedprocess_namegroup_write_bytes_total", COUNTER, "number of bytes written by this group", &g, total(WRITE));
    }
    m.finish()
}

fn main() {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:9256".into());
    let only: Vec<String> = std::env::var("CONTAINERS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mon = RefCell::new(Monitor::default());
    if let Err(e) = promtext::serve(&listen, move || render(&only, &mon)) {
        eprintln!("cannot serve on {listen}: {e}");
        std::process::exit(1);
    }
}
