//! proc-monitor: a monitoring endpoint for a legacy app that has none. On each scrape of
//! `GET /metrics` it reads the main containers' live stats through `main-process` (granted by
//! `shareProcessNamespace: true`) and answers Prometheus text with the standard `process_*`
//! names, labelled by container.
//!
//! Configuration (env): `LISTEN` (default 0.0.0.0:9256; declare the port in the sidecar's
//! `ports`), `CONTAINERS` (comma-separated names; default every main container).

use promtext::Exposition;

use wpod_sidecar::main_process::{self, ProcessStats, State};

struct Row {
    name: String,
    restarts: u32,
    up: bool,
    stats: Option<ProcessStats>,
}

fn collect(only: &[String]) -> Vec<Row> {
    main_process::containers()
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .map(|c| {
            let stats = if c.state == State::Running { main_process::stats(&c.name).ok() } else { None };
            Row { up: stats.is_some(), name: c.name, restarts: c.restarts, stats }
        })
        .collect()
}

type Field = fn(&ProcessStats) -> f64;

/// (metric, type, help, value) for every stat.
const METRICS: &[(&str, &str, &str, Field)] = &[
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", |s| (s.cpu_user_us + s.cpu_system_us) as f64 / 1e6),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", |s| s.rss_bytes as f64),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", |s| s.vm_bytes as f64),
    ("process_threads", "gauge", "Number of OS threads.", |s| s.threads as f64),
    ("process_open_fds", "gauge", "Number of open file descriptors.", |s| s.open_fds as f64),
    ("process_io_read_bytes_total", "counter", "Bytes read from storage.", |s| s.read_bytes as f64),
    ("process_io_write_bytes_total", "counter", "Bytes written to storage.", |s| s.write_bytes as f64),
    ("process_uptime_seconds", "gauge", "Seconds since the process started.", |s| s.uptime_seconds as f64),
];

fn render(only: &[String]) -> String {
    let rows = collect(only);
    let mut out = Exposition::new();
    out.family("wpod_container_up", "gauge", "Whether the container's process is running.");
    for r in &rows {
        out.sample("wpod_container_up", &[("container", &r.name)], if r.up { 1.0 } else { 0.0 });
    }
    out.family("wpod_container_restarts_total", "counter", "Restarts of the container.");
    for r in &rows {
        out.sample("wpod_container_restarts_total", &[("container", &r.name)], r.restarts as f64);
    }
    for (name, kind, help, value) in METRICS {
        out.family(name, kind, help);
        for r in &rows {
            if let Some(s) = &r.stats {
                out.sample(name, &[("container", &r.name)], value(s));
            }
        }
    }
    out.finish()
}

fn main() {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:9256".into());
    let only: Vec<String> = std::env::var("CONTAINERS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if let Err(e) = promtext::serve(&listen, move || render(&only)) {
        eprintln!("cannot serve on {listen}: {e}");
        std::process::exit(1);
    }
}
