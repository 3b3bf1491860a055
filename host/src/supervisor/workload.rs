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
use crate::plan::{ContainerPlan, PodPlan};
use crate::sandbox::runtime::PodRuntime;
use crate::sandbox::PodSandbox;
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
    /// lifecycle event for a Wasm sidecar. Returns whether it was stopped by force instead (a
    /// sidecar that cannot hear `stopping`).
    fn terminate(&self, deadline: Instant) -> bool;
    /// The forced stop.
    fn kill(&self);
    /// How to run commands inside it (exec probes and hooks), if it is a process.
    fn exec_target(&self) -> Option<ExecTarget> {
        None
    }
}

/// One container of the pod as the supervisor runs it: its plan (a native container's carries
/// its planned process), and what was made ready for it before it starts (a Wasm sidecar's
/// compiled and linked component). A
/// live `wpod apply` adds and replaces members while the pod runs; the plan of the pod itself
/// (its pod-level fields) never changes.
pub struct Member {
    /// The same plan as its prepared sidecar's, when it has one.
    pub plan: Arc<ContainerPlan>,
    /// A Wasm sidecar's component, prepared; `None` for a native container.
    pub prepared: Option<PreparedSidecar>,
}

impl Member {
    pub fn name(&self) -> &str {
        self.plan.name()
    }
}

/// The members of `plan`, in start order, from what was prepared for each container (by
/// index).
pub fn members(plan: &PodPlan, mut prepared: Vec<Option<PreparedSidecar>>) -> Vec<Arc<Member>> {
    plan.containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let prepared = prepared.get_mut(i).and_then(Option::take);
            Arc::new(Member {
                plan: match &prepared {
                    Some(p) => p.plan.clone(),
                    None => Arc::new(c.clone()),
                },
                prepared,
            })
        })
        .collect()
}

/// Why a container did not start (its `failedToStart` event, then exit code 128).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Container(#[from] crate::containers::ContainerError),
    #[error(transparent)]
    Sidecar(#[from] crate::sidecars::SidecarError),
    #[error("cannot start the pod's sidecar runtime")]
    Runtime(#[from] crate::sandbox::runtime::RuntimeError),
}

/// Starts the pod's containers.
pub trait Launcher: Send + Sync {
    fn start<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Box<dyn Workload>, StartError>>;
    /// Whether `member` counts as started only once it calls `lifecycle.ready()`.
    fn waits_for_ready(&self, member: &Member) -> bool {
        member
            .prepared
            .as_ref()
            .is_some_and(|p| p.component.signals_readiness)
    }
    /// Where its hooks and probes act; `None` when it takes none.
    fn action_target(&self, member: &Member, workload: &dyn Workload) -> Option<ActionTarget>;
}

/// The pod's real launcher: native containers in the sandbox, Wasm sidecars on the pod's
/// runtime.
pub struct PodLauncher {
    /// The runtime Wasm sidecars run on: started with the pod when it has any (its first
    /// sidecar waits for it), else made at the first `wpod apply` that adds one. Dropped
    /// before the sandbox (fields drop in order): its threads are in the pod's cgroups.
    pub runtime: std::sync::Mutex<SidecarRuntime>,
    pub plan: Arc<PodPlan>,
    pub sandbox: Arc<PodSandbox>,
    pub logs: Arc<Logs>,
    pub state: Arc<PodState>,
    /// Where sidecars' refusals and audited uses go.
    pub reports: Arc<crate::grants::report::Reporter>,
}

impl PodLauncher {
    /// A handle on the pod's sidecar runtime, made on first use.
    fn runtime(&self) -> Result<tokio::runtime::Handle, StartError> {
        let mut slot = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let runtime = slot.ready(|| {
            PodRuntime::new(
                self.plan.name(),
                self.sandbox.namespaces.net_handle(),
                crate::sandbox::runtime::SIDECAR_WORKERS,
                &self.sandbox.cgroups.runtime_thread_dirs(),
            )
        })?;
        Ok(runtime.handle()?)
    }
}

/// The pod's sidecar runtime, as [`PodLauncher`] holds it: started with the pod when it has
/// sidecars, or made when the first one needs it.
#[derive(Default)]
pub struct SidecarRuntime {
    starting: Option<crate::sandbox::runtime::StartingRuntime>,
    ready: Option<PodRuntime>,
}

impl Drop for SidecarRuntime {
    /// A runtime still starting is waited for: its thread moves into the pod's `_runtime`
    /// cgroups, and must have done so before the sandbox's teardown moves wpod out of them
    /// (a thread left there would keep them from being removed).
    fn drop(&mut self) {
        if let Some(starting) = self.starting.take() {
            starting.abandon();
        }
    }
}

impl SidecarRuntime {
    /// The runtime `starting` makes.
    pub fn starting(starting: crate::sandbox::runtime::StartingRuntime) -> Self {
        SidecarRuntime {
            starting: Some(starting),
            ready: None,
        }
    }

    /// The runtime: the one started, or else one `make` makes now. A start that failed is
    /// told once; the next sidecar tries again.
    fn ready(
        &mut self,
        make: impl FnOnce() -> Result<PodRuntime, crate::sandbox::runtime::RuntimeError>,
    ) -> Result<&PodRuntime, crate::sandbox::runtime::RuntimeError> {
        if let Some(starting) = self.starting.take() {
            self.ready = Some(starting.wait()?);
        }
        match &mut self.ready {
            Some(runtime) => Ok(runtime),
            none => Ok(none.insert(make()?)),
        }
    }
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

    fn terminate(&self, _deadline: Instant) -> bool {
        self.signal(self.stop_signal);
        false
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

    fn terminate(&self, deadline: Instant) -> bool {
        self.stopping(deadline)
    }

    fn kill(&self) {
        WasmSidecar::kill(self);
    }
}

impl Launcher for PodLauncher {
    fn start<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Box<dyn Workload>, StartError>> {
        Box::pin(async move {
            match &member.prepared {
                Some(prepared) => {
                    let handle = self.runtime()?;
                    let ctx = PodContext {
                        runtime: handle,
                        state: self.state.clone(),
                        logs: self.logs.clone(),
                        volumes: &self.sandbox.volumes,
                        max_handles: self.plan.settings.sidecar_max_handles,
                        network: self.sandbox.pod_net.clone(),
                        reports: self.reports.clone(),
                        facts: self.sandbox.facts.clone(),
                    };
                    Ok(Box::new(WasmSidecar::start(prepared, &ctx)?) as Box<dyn Workload>)
                }
                None => NativeContainer::start(
                    &member.plan,
                    &self.sandbox,
                    &self.logs,
                    self.plan.settings.pids_limit,
                )
                .await
                .map(|c| Box::new(c) as Box<dyn Workload>)
                .map_err(StartError::from),
            }
        })
    }

    fn action_target(&self, member: &Member, workload: &dyn Workload) -> Option<ActionTarget> {
        Some(ActionTarget {
            dialer: self.sandbox.dialer.clone(),
            ports: member.plan.ports.clone(),
            exec: workload.exec_target(),
        })
    }
}
