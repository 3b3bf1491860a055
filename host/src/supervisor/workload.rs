//! The seam between the supervisor's rules (start order, restarts with back-off, ordered
//! termination, a second Ctrl-C) and what it supervises. In a pod, a [`Workload`] is a native
//! process or a Wasm sidecar and the [`Launcher`] is [`PodLauncher`]; the unit tests drive the
//! same supervisor with scripted workloads and no root, as youki tests its namespace logic
//! through a recording `Syscall` fake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::actions::ActionTarget;
use crate::containers::{ExecTarget, NativeContainer};
use crate::logs::Logs;
use crate::oci::pull::StoredImage;
use crate::plan::PodPlan;
use crate::sandbox::PodSandbox;
use crate::sidecars::runtime::PodRuntime;
use crate::sidecars::{PodContext, PreparedSidecar, WasmSidecar};
use crate::status::{ExitInfo, PodState};

/// A future a trait object can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started container, whatever runs it.
pub trait Workload: Send {
    /// Its host PID, if it is a process.
    fn pid(&self) -> Option<i32>;
    /// Waits for it to end. Cancel-safe: used in `select!`.
    fn exited(&mut self) -> BoxFuture<'_, ExitInfo>;
    /// The polite request to stop by `deadline`: SIGTERM for a process, the `stopping`
    /// lifecycle event for a Wasm sidecar.
    fn terminate(&self, deadline: Instant);
    /// The forced stop.
    fn kill(&self);
    /// How to run commands inside it (exec probes and hooks), if it is a process.
    fn exec_target(&self) -> Option<ExecTarget> {
        None
    }
}

/// Starts the pod's containers, by index into the plan.
pub trait Launcher: Send + Sync {
    fn start(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn Workload>, String>>;
    /// Whether container `index` counts as started only once it calls `lifecycle.ready()`.
    fn waits_for_ready(&self, index: usize) -> bool;
    /// Where its hooks and probes act; `None` when it takes none.
    fn action_target(&self, index: usize, workload: &dyn Workload) -> Option<ActionTarget>;
}

/// The pod's real launcher: native containers in the sandbox, Wasm sidecars on the pod's
/// runtime.
pub struct PodLauncher {
    pub plan: Arc<PodPlan>,
    pub sandbox: Arc<PodSandbox>,
    pub logs: Arc<Logs>,
    pub state: Arc<PodState>,
    pub prepared: Vec<Option<PreparedSidecar>>,
    /// Pulled images, by container index (`None`: not from a registry).
    pub images: Vec<Option<StoredImage>>,
    pub runtime: Option<PodRuntime>,
}

impl Workload for NativeContainer {
    fn pid(&self) -> Option<i32> {
        Some(self.pid)
    }

    fn exited(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(async move {
            let status = NativeContainer::exited(self).await;
            self.finish(status).await
        })
    }

    fn terminate(&self, _deadline: Instant) {
        self.signal(self.stop_signal);
    }

    fn kill(&self) {
        self.kill_all();
    }

    fn exec_target(&self) -> Option<ExecTarget> {
        Some(NativeContainer::exec_target(self))
    }
}

impl Workload for WasmSidecar {
    fn pid(&self) -> Option<i32> {
        None
    }

    fn exited(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(WasmSidecar::exited(self))
    }

    fn terminate(&self, deadline: Instant) {
        self.stopping(deadline);
    }

    fn kill(&self) {
        WasmSidecar::kill(self);
    }
}

impl Launcher for PodLauncher {
    fn start(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn Workload>, String>> {
        Box::pin(async move {
            let plan = &self.plan.containers[index];
            match &self.prepared[index] {
                Some(prepared) => {
                    let handle = self
                        .runtime
                        .as_ref()
                        .ok_or("no sidecar runtime")?
                        .handle()
                        .map_err(|e| e.to_string())?;
                    let ctx = PodContext {
                        runtime: handle,
                        state: self.state.clone(),
                        logs: self.logs.clone(),
                        volumes: &self.sandbox.volumes,
                        max_handles: self.plan.settings.sidecar_max_handles,
                    };
                    WasmSidecar::start(prepared, &ctx)
                        .map(|s| Box::new(s) as Box<dyn Workload>)
                        .map_err(|e| e.to_string())
                }
                None => NativeContainer::start(
                    plan,
                    self.images.get(index).and_then(Option::as_ref),
                    &self.sandbox,
                    &self.logs,
                    self.plan.settings.pids_limit,
                )
                .await
                .map(|c| Box::new(c) as Box<dyn Workload>)
                .map_err(|e| e.to_string()),
            }
        })
    }

    fn waits_for_ready(&self, index: usize) -> bool {
        self.prepared[index]
            .as_ref()
            .is_some_and(|p| p.signals_readiness)
    }

    fn action_target(&self, index: usize, workload: &dyn Workload) -> Option<ActionTarget> {
        Some(ActionTarget {
            dialer: self.sandbox.dialer.clone(),
            ports: self.plan.containers[index].spec.ports.clone(),
            exec: workload.exec_target(),
        })
    }
}
