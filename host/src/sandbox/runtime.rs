//! An async runtime inside a pod's network namespace: for its Wasm sidecars, and for its
//! hostPort forwarders (`ports.rs`), whose connections to the pod are then plain connects.
//! `setns` is per thread and wasmtime-wasi creates sockets on whichever thread runs the guest
//! at that moment (name lookups and file I/O on the blocking pool), so every thread of this
//! runtime, workers and blocking pool alike, joins the pod's network namespace when it starts.
//! Two pods never share one.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::namespaces::join_net;
use crate::sys::LinuxSyscall;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the pod's runtime: {0}")]
    Build(std::io::Error),
    #[error("a thread of the pod's runtime could not join the pod's network namespace")]
    NotInPod,
}

/// Worker threads of a pod's sidecar runtime.
pub const SIDECAR_WORKERS: usize = 2;

/// Threads a pod's sidecars may keep busy with blocking work (file I/O) at once.
pub const MAX_BLOCKING_THREADS: usize = 16;

pub struct PodRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    join_failed: Arc<AtomicBool>,
}

impl PodRuntime {
    /// A runtime of `workers` threads (and a bounded blocking pool) in the pod's network
    /// namespace `net`, whose threads start in the v1 cgroups `cgroups` (the pod's `_runtime`:
    /// [`super::cgroups::PodCgroups::runtime_thread_dirs`]; none on v2, where wpod moved whole).
    pub fn new(
        pod: &str,
        net: Arc<OwnedFd>,
        workers: usize,
        cgroups: &[PathBuf],
    ) -> Result<Self, RuntimeError> {
        if cgroups.is_empty() {
            return Self::build(pod, net, workers);
        }
        // A thread starts in the cgroups of the thread that makes it: the workers are made by
        // a thread that joined first, and the blocking pool's threads by whichever thread calls
        // `spawn_blocking` first: the workers, where the sidecars' file I/O is started. (Not
        // a move in `on_thread_start`: a thread made while the pod stops would join `_runtime`
        // after wpod left it, and keep the cgroup from being removed.)
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    for dir in cgroups {
                        if let Err(e) = super::cgroups::move_this_thread(&LinuxSyscall, dir) {
                            // Accounting, not containment: their memory is still wpod's.
                            tracing::warn!(cgroup = %dir.display(), error = %e, "the pod's sidecar threads start outside its runtime cgroup: their kernel memory is not counted there");
                        }
                    }
                    Self::build(pod, net, workers)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// [`PodRuntime::new`] on a thread of its own: its threads' `setns` and cgroup moves take
    /// a few hundred microseconds, which a pod's start spends on its first native container
    /// meanwhile. [`StartingRuntime::wait`] gives the runtime.
    pub fn start(
        pod: String,
        net: Arc<OwnedFd>,
        workers: usize,
        cgroups: Vec<PathBuf>,
    ) -> StartingRuntime {
        let making = std::thread::Builder::new()
            .name("wpod-runtime-start".into())
            .spawn(move || Self::new(&pod, net, workers, &cgroups));
        StartingRuntime(making)
    }

    fn build(pod: &str, net: Arc<OwnedFd>, workers: usize) -> Result<Self, RuntimeError> {
        let join_failed = Arc::new(AtomicBool::new(false));
        let failed = join_failed.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            // Guests' file I/O runs here: bounded, so sidecars cannot multiply wpod's threads.
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name(format!("wpod-pod-{pod}"))
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = join_net(net.as_fd()) {
                    // A thread of this runtime outside the pod would give a sidecar (or a
                    // forwarded connection) the host's network: never run on. Aborting ends
                    // wpod, and its helpers, seeing their lifeline close, take the pod down.
                    tracing::error!(error = %e, "a thread of the pod's runtime cannot join the pod's network namespace; stopping");
                    failed.store(true, Ordering::SeqCst);
                    std::process::abort();
                }
            })
            .build()
            .map_err(RuntimeError::Build)?;
        Ok(PodRuntime {
            runtime: Some(runtime),
            join_failed,
        })
    }

    pub fn handle(&self) -> Result<tokio::runtime::Handle, RuntimeError> {
        if self.join_failed.load(Ordering::SeqCst) {
            return Err(RuntimeError::NotInPod);
        }
        match &self.runtime {
            Some(rt) => Ok(rt.handle().clone()),
            None => Err(RuntimeError::NotInPod),
        }
    }
}

/// A pod's runtime on its way ([`PodRuntime::start`]).
pub struct StartingRuntime(
    std::io::Result<std::thread::JoinHandle<Result<PodRuntime, RuntimeError>>>,
);

impl StartingRuntime {
    /// Waits for the runtime's thread and drops what it made, whatever that is (in a `Drop`,
    /// where a panic passed on would abort).
    pub fn abandon(self) {
        if let Ok(making) = self.0 {
            let _ = making.join();
        }
    }

    /// Waits for the runtime.
    pub fn wait(self) -> Result<PodRuntime, RuntimeError> {
        match self.0 {
            Ok(making) => making
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => Err(RuntimeError::Build(e)),
        }
    }
}

impl Drop for PodRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another; its tasks were stopped already.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
