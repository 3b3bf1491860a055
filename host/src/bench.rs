//! `wpod bench`: how fast a Wasm sidecar starts and how little an idle one costs, measured on a
//! real pod (namespaces, the pod's sidecar runtime) with the `probe` guest.
//!
//! Method: the guest's first action is `lifecycle.ready()`, so "first instruction" is the time
//! from asking for the start until that host call arrives (instantiation and std's startup
//! included); its second action connects to a listener on the pod's loopback, so "first
//! connect" is the time until that listener accepts. Each start is measured
//! - cold: compiling the component (empty cache), linking, pre-instantiating, starting;
//! - restart: starting again from the kept `InstancePre` (what a sidecar restart costs).
//!
//! - warm: loading the precompiled component from the on-disk cache, linking, starting (nothing
//!   of it loaded in the process yet, as in a new `wpod run`);
//!
//! Density: a pod of N sidecar containers running the component, prepared as `wpod run`
//! prepares a pod (the component loaded once and shared), is started idle (each waits for its
//! stopping event). The process's proportional set size after they all called `ready()`, minus
//! before they started, divided by the number actually running, is one idle sidecar's cost.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use wpod::logs::{Logs, OutputFormat};
use wpod::plan::PodPlan;
use wpod::sandbox::namespaces::join_net;
use wpod::sandbox::runtime::PodRuntime;
use wpod::sandbox::PodSandbox;
use wpod::sidecars::{PodContext, PreparedSidecar, WasmSidecar};
use wpod::status::PodState;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Failed(String),
}

/// `e` with its causes (a sandbox step's, a sidecar's trap).
fn fail(e: impl std::error::Error) -> BenchError {
    BenchError::Failed(wpod::error::chain(&e))
}

/// Milliseconds of one kind of start, over the runs.
#[derive(Debug, Serialize)]
pub struct Timing {
    pub kind: &'static str,
    pub runs: usize,
    pub prepare_ms: Summary,
    pub first_instruction_ms: Summary,
    pub first_connect_ms: Summary,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if v.is_empty() { 0.0 } else { v[v.len() / 2] };
        Summary {
            median,
            min: v.first().copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Density {
    /// Sidecars asked for.
    pub sidecars: usize,
    /// Of them, those that started (called `ready()`) and were still running when measured:
    /// the figures per sidecar divide by this.
    pub running: usize,
    /// The process's proportional set size with the component loaded, before any starts.
    pub pss_before_mib: f64,
    pub pss_after_mib: f64,
    pub per_sidecar_kib: f64,
    /// What loading the component cost, once for all of them.
    pub component_pss_kib: f64,
    pub rss_after_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub component: String,
    pub component_kib: u64,
    pub timings: Vec<Timing>,
    pub density: Density,
}

fn rss_bytes() -> u64 {
    wpod::grants::procstat::Status::read("self")
        .ok()
        .and_then(|s| s.number("VmRSS:"))
        .unwrap_or(0)
        * 1024
}

/// This process's proportional set size (shared pages divided among their sharers), in bytes.
fn pss_bytes() -> Result<u64, BenchError> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup")
        .map_err(|e| BenchError::Failed(format!("cannot read /proc/self/smaps_rollup: {e}")))?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Failed("no Pss line in /proc/self/smaps_rollup".into()))
}

/// `n` idle sidecars of one pod (each its own container, prepared as `wpod run` prepares a
/// pod), waiting for their stopping event: what each costs beyond the shared component.
async fn density_of(
    component: &Path,
    port: u16,
    n: usize,
    ctx: &PodContext<'_>,
    state: &Arc<PodState>,
) -> Result<Density, BenchError> {
    let idle = ["ready".to_string(), "wait-stopping".to_string()];
    let plan = pod_plan(component, port, &idle, n)?;
    let empty = pss_bytes()?;
    let prepared = wpod::sidecars::prepare_all(&plan).map_err(fail)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = pss_bytes()?;
    let mut running = Vec::new();
    for p in prepared.iter().flatten() {
        running.push(WasmSidecar::start(p, ctx).map_err(fail)?);
    }
    let names: Vec<String> = prepared
        .iter()
        .flatten()
        .map(|p| p.name().to_string())
        .collect();
    let mut ready = state.watch_ready();
    // Those that cannot start (a full pool) never call ready: wait for the rest, then count.
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        ready.wait_for(|r| names.iter().all(|n| r.contains(n))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pss_bytes()?;
    let rss_after = rss_bytes();
    let started = state.watch_ready().borrow().clone();
    let alive = running
        .iter()
        .filter(|s| s.is_running() && started.contains(s.name()))
        .count();
    for s in &running {
        s.kill();
    }
    for mut s in running {
        let _ = s.exited().await;
    }
    Ok(Density {
        sidecars: n,
        running: alive,
        pss_before_mib: before as f64 / 1048576.0,
        pss_after_mib: after as f64 / 1048576.0,
        per_sidecar_kib: if alive == 0 {
            0.0
        } else {
            after.saturating_sub(before) as f64 / 1024.0 / alive as f64
        },
        component_pss_kib: before.saturating_sub(empty) as f64 / 1024.0,
        rss_after_mib: rss_after as f64 / 1048576.0,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A listener on the pod's loopback, created inside its network namespace.
fn pod_listener(sandbox: &PodSandbox) -> Result<TcpListener, BenchError> {
    let net = sandbox.namespaces.net_handle();
    std::thread::spawn(move || {
        join_net(net.as_fd()).map_err(fail)?;
        TcpListener::bind("127.0.0.1:0").map_err(fail)
    })
    .join()
    .map_err(|_| BenchError::Failed("listener thread panicked".into()))?
}

fn bench_plan(component: &Path, port: u16, args: &[String]) -> Result<PodPlan, BenchError> {
    pod_plan(component, port, args, 1)
}

/// A pod whose native main container is never started, and `n` sidecars running `component`
/// with `args` (`PORT` replaced): `sidecar` when alone, else `sidecar-0`...
fn pod_plan(component: &Path, port: u16, args: &[String], n: usize) -> Result<PodPlan, BenchError> {
    let args = args
        .iter()
        .map(|a| format!("\"{}\"", a.replace("PORT", &port.to_string())))
        .collect::<Vec<_>>()
        .join(", ");
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wpod-bench}\nspec:\n  containers:\n  - name: main\n    command: [sleep, \"1\"]\n",
    );
    for i in 0..n {
        let name = if n == 1 {
            "sidecar".to_string()
        } else {
            format!("sidecar-{i}")
        };
        manifest.push_str(&format!(
            "  - name: {name}\n    image: {}\n    args: [{args}]\n",
            component.display()
        ));
    }
    let pods = wpod::spec::parse(Path::new("<bench>"), &manifest).map_err(fail)?;
    let pod = pods
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::Failed("no pod".into()))?;
    wpod::plan::plan(&pod).map_err(fail)
}

/// A private state root for a benchmark (the cache starts empty, nothing of the host's wpod is
/// touched); set it as `WPOD_ROOT` before any thread starts, remove it afterwards.
pub fn private_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wpod-bench-{}", std::process::id()))
}

/// Runs the benchmark; `runs` starts of each kind, `density` idle sidecars.
pub async fn run(component: &Path, runs: usize, density: usize) -> Result<Report, BenchError> {
    let probe_args = ["ready", "connect:127.0.0.1:PORT", "exit:0"].map(String::from);
    // The pool sized for the density pod, as `wpod run` sizes it for its pod.
    wpod::sidecars::engine::shared_for(density + 1).map_err(fail)?;
    // The sandbox comes from a plan with the real port once the listener exists.
    let sandbox_plan = bench_plan(component, 1, &probe_args)?;
    let state = wpod::sandbox::state_dir::StateDir::acquire(&sandbox_plan.name).map_err(fail)?;
    let sandbox = PodSandbox::create(&sandbox_plan, state).map_err(fail)?;
    let listener = pod_listener(&sandbox)?;
    let port = listener.local_addr().map_err(fail)?.port();
    listener.set_nonblocking(true).map_err(fail)?;
    let plan = bench_plan(component, port, &probe_args)?;
    let sidecar_plan = plan
        .containers
        .iter()
        .find(|c| c.image.is_wasm())
        .cloned()
        .ok_or_else(|| BenchError::Failed("no sidecar".into()))?;

    let state = PodState::new(Vec::<String>::new());
    let logs_dir = sandbox.log_dir();
    let logs = Logs::new(logs_dir, OutputFormat::Silent, (&plan.settings).into());
    let runtime = PodRuntime::new(
        "wpod-bench",
        sandbox.namespaces.net_handle(),
        wpod::sandbox::runtime::SIDECAR_WORKERS,
        &sandbox.cgroups.runtime_thread_dirs(),
    )
    .map_err(fail)?;
    let ctx = PodContext {
        runtime: runtime.handle().map_err(fail)?,
        state: state.clone(),
        logs: logs.clone(),
        volumes: &sandbox.volumes,
        max_handles: plan.settings.sidecar_max_handles,
        network: sandbox.pod_net.clone(),
        reports: wpod::grants::report::Reporter::discard(),
        facts: sandbox.facts.clone(),
    };

    let mut timings = Vec::new();
    let mut kept: Option<PreparedSidecar> = None;
    for kind in ["cold", "warm", "restart"] {
        let (mut prep, mut first, mut connect) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            if kind == "cold" {
                let _ = std::fs::remove_dir_all(wpod::sidecars::cache::dir());
            }
            let t0 = Instant::now();
            // A warm start is a new process's: nothing of this component loaded yet (the
            // process-wide map holds components only while a container uses them).
            if kind != "restart" {
                kept = None;
            }
            let prepared = match &kept {
                Some(p) => p.clone(),
                None => PreparedSidecar::prepare(&sidecar_plan).map_err(fail)?,
            };
            let t_prepared = t0.elapsed();
            let (t_ready, t_connect) = start_once(&prepared, &ctx, &state, &listener).await?;
            prep.push(ms(t_prepared));
            first.push(ms(t_prepared + t_ready));
            connect.push(ms(t_prepared + t_connect));
            kept = Some(prepared);
        }
        timings.push(Timing {
            kind,
            runs,
            prepare_ms: Summary::of(prep),
            first_instruction_ms: Summary::of(first),
            first_connect_ms: Summary::of(connect),
        });
    }

    drop(kept);
    let density = density_of(component, port, density, &ctx, &state).await?;
    drop(runtime);
    drop(sandbox);
    let component_kib = std::fs::metadata(component)
        .map(|m| m.len() / 1024)
        .unwrap_or(0);
    Ok(Report {
        component: component.display().to_string(),
        component_kib,
        timings,
        density,
    })
}

/// Starts the sidecar once; returns the times to its `ready()` call and to its connection.
async fn start_once(
    prepared: &PreparedSidecar,
    ctx: &PodContext<'_>,
    state: &Arc<PodState>,
    listener: &TcpListener,
) -> Result<(Duration, Duration), BenchError> {
    state.clear_ready("sidecar");
    let mut ready = state.watch_ready();
    let t0 = Instant::now();
    let mut sidecar = WasmSidecar::start(prepared, ctx).map_err(fail)?;
    tokio::time::timeout(
        Duration::from_secs(60),
        ready.wait_for(|r| r.contains("sidecar")),
    )
    .await
    .map_err(|_| BenchError::Failed("the guest never called ready()".into()))?
    .map_err(fail)?;
    let t_ready = t0.elapsed();
    let t_connect = loop {
        match listener.accept() {
            Ok(_) => break t0.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if t0.elapsed() > Duration::from_secs(60) {
                    return Err(BenchError::Failed("the guest never connected".into()));
                }
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(fail(e)),
        }
    };
    let exit = sidecar.exited().await;
    if exit.code != 0 {
        return Err(BenchError::Failed(format!(
            "the bench guest exited with {}",
            exit.code
        )));
    }
    Ok((t_ready, t_connect))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "component: {} ({} KiB)",
            self.component, self.component_kib
        )?;
        writeln!(
            f,
            "{:<8} {:>5} {:>22} {:>26} {:>26}",
            "start", "runs", "prepare ms (median)", "first instruction ms", "first connect ms"
        )?;
        for t in &self.timings {
            writeln!(
                f,
                "{:<8} {:>5} {:>22.2} {:>16.2} [{:.2}-{:.2}] {:>16.2} [{:.2}-{:.2}]",
                t.kind,
                t.runs,
                t.prepare_ms.median,
                t.first_instruction_ms.median,
                t.first_instruction_ms.min,
                t.first_instruction_ms.max,
                t.first_connect_ms.median,
                t.first_connect_ms.min,
                t.first_connect_ms.max
            )?;
        }
        let d = &self.density;
        writeln!(
            f,
            "density: {} idle sidecars asked, {} running: PSS {:.1} MiB -> {:.1} MiB, {:.0} KiB per \
             running sidecar (the component, loaded once: {:.0} KiB)",
            d.sidecars,
            d.running,
            d.pss_before_mib,
            d.pss_after_mib,
            d.per_sidecar_kib,
            d.component_pss_kib
        )
    }
}

pub fn print(report: &Report, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{report}");
    }
}
