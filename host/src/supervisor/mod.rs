//! The supervisor drives a pod's containers through their lives with Kubernetes' ordering: init
//! containers one by one, native sidecars started in their place and kept running, then all
//! regular containers together; on completion or on Ctrl-C/SIGTERM, regular containers stop
//! first and sidecars after them in reverse start order, all within the grace period.
//!
//! Each running container is owned by a driver task that waits for it and obeys stop commands;
//! the supervisor only sends commands and collects outcomes.

pub mod events;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::containers::{ExitInfo, NativeContainer, DEFAULT_PIDS_LIMIT};
use crate::logs::Logs;
use crate::plan::{ContainerPlan, PodPlan, Role};
use crate::sandbox::PodSandbox;
use crate::sidecars::runtime::PodRuntime;
use crate::sidecars::{PodContext, PreparedSidecar, WasmSidecar};
use events::{ContainerSummary, Event, Events};
use state::PodState;

/// How the pod ended.
pub struct PodResult {
    /// The main (first regular) container's exit code, or 1 if the pod failed before it ran.
    pub exit_code: i32,
    pub summary: Vec<ContainerSummary>,
}

enum Started {
    Yes,
    Failed,
    Interrupted(&'static str),
}

enum Command {
    /// Stop gracefully; kill at the deadline.
    Stop { deadline: Instant },
}

/// A container owned by its driver task.
struct Driver {
    index: usize,
    commands: mpsc::UnboundedSender<Command>,
    done: JoinHandle<ExitInfo>,
    /// `done` was already awaited.
    finished: bool,
}

/// Ctrl-C and SIGTERM to `wpod run`.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

/// A running container of either kind.
enum Running {
    Native(NativeContainer),
    Wasm(WasmSidecar),
}

impl Running {
    fn name(&self) -> &str {
        match self {
            Running::Native(c) => c.name(),
            Running::Wasm(s) => s.name(),
        }
    }

    /// Waits for the end (cancel-safe), then collects how it ended.
    async fn exited(&mut self) -> ExitInfo {
        match self {
            Running::Native(c) => {
                let status = c.exited().await;
                c.finish(status).await
            }
            Running::Wasm(s) => s.exited().await,
        }
    }

    /// The polite request to stop: SIGTERM for a process, the `stopping` lifecycle event (with
    /// the time left) for a Wasm sidecar.
    fn terminate(&self, deadline: Instant) {
        match self {
            Running::Native(c) => c.signal(nix::sys::signal::Signal::SIGTERM),
            Running::Wasm(s) => s.stopping(deadline),
        }
    }

    fn kill(&self) {
        match self {
            Running::Native(c) => c.kill_all(),
            Running::Wasm(s) => s.kill(),
        }
    }
}

pub struct Supervisor<'a> {
    plan: &'a PodPlan,
    sandbox: &'a PodSandbox,
    logs: Arc<Logs>,
    events: Arc<Events>,
    state: Arc<PodState>,
    prepared: Vec<Option<PreparedSidecar>>,
    runtime: Option<PodRuntime>,
    summary: Vec<ContainerSummary>,
    pids_limit: u64,
}

impl<'a> Supervisor<'a> {
    /// `prepared` holds the prepared Wasm sidecars (see [`prepare_sidecars`]).
    pub fn new(
        plan: &'a PodPlan,
        sandbox: &'a PodSandbox,
        prepared: Vec<Option<PreparedSidecar>>,
        logs: Arc<Logs>,
        events: Arc<Events>,
    ) -> Result<Self, crate::sidecars::runtime::RuntimeError> {
        let summary = plan
            .containers
            .iter()
            .map(|c| ContainerSummary {
                name: c.name().to_string(),
                restarts: 0,
                exit: None,
            })
            .collect();
        let pids_limit = plan
            .pod
            .metadata
            .annotations
            .get("wpod.dev/pids-limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_PIDS_LIMIT);
        // The main containers a sidecar's `main-process` sees: the regular native ones.
        let mains = plan
            .containers
            .iter()
            .filter(|c| c.role == Role::Regular && !c.image.is_wasm())
            .map(|c| c.name().to_string());
        let state = PodState::new(mains);
        let runtime = match prepared.iter().any(Option::is_some) {
            true => Some(PodRuntime::new(
                plan.name(),
                sandbox.namespaces.net_handle(),
            )?),
            false => None,
        };
        Ok(Supervisor {
            plan,
            sandbox,
            logs,
            events,
            state,
            prepared,
            runtime,
            summary,
            pids_limit,
        })
    }

    /// The pod's shared state (main containers, readiness, lifecycle events).
    pub fn state(&self) -> Arc<PodState> {
        self.state.clone()
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.plan.pod.spec.termination_grace_period_seconds.max(0) as u64)
    }

    /// Starts a container and hands it to a driver task.
    async fn start(&mut self, index: usize) -> Option<Driver> {
        let plan: &ContainerPlan = &self.plan.containers[index];
        let name = plan.name().to_string();
        let started = match &self.prepared[index] {
            Some(prepared) => self
                .start_wasm(prepared)
                .map(Running::Wasm)
                .map_err(|e| e.to_string()),
            None => NativeContainer::start(plan, self.sandbox, &self.logs, self.pids_limit)
                .await
                .map(Running::Native)
                .map_err(|e| e.to_string()),
        };
        match started {
            Ok(running) => {
                let pid = match &running {
                    Running::Native(c) => Some(c.pid),
                    Running::Wasm(_) => None,
                };
                self.events.emit(Some(&name), Event::Started { pid });
                self.state.started(&name, pid.unwrap_or(0));
                let (tx, rx) = mpsc::unbounded_channel();
                let done =
                    tokio::spawn(drive(running, rx, self.events.clone(), self.state.clone()));
                Some(Driver {
                    index,
                    commands: tx,
                    done,
                    finished: false,
                })
            }
            Err(error) => {
                self.events
                    .emit(Some(&name), Event::FailedToStart { error });
                None
            }
        }
    }

    fn start_wasm(
        &self,
        prepared: &PreparedSidecar,
    ) -> Result<WasmSidecar, crate::sidecars::SidecarError> {
        let runtime = self
            .runtime
            .as_ref()
            .map(|r| r.handle())
            .transpose()
            .map_err(|e| crate::sidecars::SidecarError::Start {
                container: prepared.name().to_string(),
                message: e.to_string(),
            })?;
        let Some(runtime) = runtime else {
            return Err(crate::sidecars::SidecarError::Start {
                container: prepared.name().into(),
                message: "no sidecar runtime".into(),
            });
        };
        let ctx = PodContext {
            pod: &self.plan.pod,
            runtime,
            state: self.state.clone(),
            logs: self.logs.clone(),
            volumes: &self.sandbox.volumes,
        };
        WasmSidecar::start(prepared, &ctx)
    }

    /// Waits until a native sidecar counts as started: a Wasm sidecar that imports
    /// `lifecycle.ready` once it calls it; any other as soon as it runs. One that exits first
    /// has failed to start.
    async fn wait_started(
        &mut self,
        index: usize,
        driver: &mut Driver,
        signals: &mut StopSignals,
    ) -> Started {
        let Some(prepared) = &self.prepared[index] else {
            return Started::Yes;
        };
        if !prepared.signals_readiness {
            return Started::Yes;
        }
        let name = prepared.name().to_string();
        let mut ready = self.state.watch_ready();
        let became_ready = ready.wait_for(|r| r.contains(&name));
        tokio::select! {
            result = became_ready => match result {
                Ok(_) => {
                    self.events.emit(Some(&name), Event::Ready);
                    Started::Yes
                }
                Err(_) => Started::Failed,
            },
            exit = &mut driver.done => {
                if let Ok(exit) = exit {
                    self.record(index, exit);
                }
                self.events.emit(Some(&name), Event::FailedToStart { error: "exited before calling lifecycle.ready()".into() });
                driver.finished = true;
                Started::Failed
            }
            reason = signals.recv() => Started::Interrupted(reason),
        }
    }

    fn record(&mut self, index: usize, exit: ExitInfo) {
        self.summary[index].exit = Some(exit);
    }

    /// Runs the pod to its end; the sandbox is torn down by the caller.
    pub async fn run(mut self) -> PodResult {
        let mut signals = match StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                self.events.emit(
                    None,
                    Event::Warning {
                        message: format!("cannot catch Ctrl-C/SIGTERM: {e}"),
                    },
                );
                return PodResult {
                    exit_code: 1,
                    summary: self.summary,
                };
            }
        };
        let mut sidecars: Vec<Driver> = Vec::new();
        let mut regular: JoinSet<(usize, ExitInfo)> = JoinSet::new();
        let mut regular_commands = Vec::new();
        let mut failed = false;
        let mut stop_reason: Option<&'static str> = None;

        // Init containers in order; native sidecars start in their place and keep running.
        let order: Vec<(usize, Role)> = self
            .plan
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.role))
            .collect();
        for &(index, role) in order.iter().filter(|(_, r)| *r != Role::Regular) {
            let Some(driver) = self.start(index).await else {
                failed = true;
                break;
            };
            if role == Role::NativeSidecar {
                // The next container starts once this one has started (Kubernetes' rule).
                let mut driver = driver;
                let ready = self.wait_started(index, &mut driver, &mut signals).await;
                sidecars.push(driver);
                match ready {
                    Started::Yes => continue,
                    Started::Failed => failed = true,
                    Started::Interrupted(reason) => stop_reason = Some(reason),
                }
                break;
            }
            let Driver {
                commands, mut done, ..
            } = driver;
            let exit = tokio::select! {
                exit = &mut done => exit,
                reason = signals.recv() => {
                    stop_reason = Some(reason);
                    let _ = commands.send(Command::Stop { deadline: Instant::now() + self.grace() });
                    done.await
                }
            };
            let exit = exit.unwrap_or_else(|_| ExitInfo {
                code: 1,
                signal: None,
                reason: "Error",
            });
            let ok = exit.code == 0;
            self.record(index, exit);
            if stop_reason.is_some() {
                break;
            }
            if !ok {
                failed = true;
                break;
            }
        }

        // Then all regular containers together.
        if !failed && stop_reason.is_none() {
            for &(index, _) in order.iter().filter(|(_, r)| *r == Role::Regular) {
                match self.start(index).await {
                    Some(Driver {
                        index,
                        commands,
                        done,
                        ..
                    }) => {
                        regular_commands.push(commands);
                        regular.spawn(async move {
                            (
                                index,
                                done.await.unwrap_or(ExitInfo {
                                    code: 1,
                                    signal: None,
                                    reason: "Error",
                                }),
                            )
                        });
                    }
                    None => {
                        failed = true;
                        break;
                    }
                }
            }
        }

        // Until every regular container has exited, or the pod is asked to stop.
        if !failed && stop_reason.is_none() {
            loop {
                tokio::select! {
                    next = regular.join_next() => match next {
                        Some(Ok((index, exit))) => self.record(index, exit),
                        Some(Err(_)) => {}
                        None => break,
                    },
                    reason = signals.recv() => {
                        stop_reason = Some(reason);
                        break;
                    }
                }
            }
        }

        // Termination: regular containers first, then sidecars in reverse start order, all
        // by one deadline; a second Ctrl-C kills at once.
        let grace = self.grace();
        let reason = match (stop_reason, failed) {
            (Some(r), _) => r,
            (None, true) => "a container failed",
            (None, false) => "all containers completed",
        };
        if !regular.is_empty() || !sidecars.is_empty() {
            self.events.emit(
                None,
                Event::PodStopping {
                    reason: reason.to_string(),
                    grace_seconds: grace.as_secs() as i64,
                },
            );
        }
        let deadline = Instant::now() + grace;
        for c in &regular_commands {
            let _ = c.send(Command::Stop { deadline });
        }
        while !regular.is_empty() {
            tokio::select! {
                next = regular.join_next() => {
                    if let Some(Ok((index, exit))) = next {
                        self.record(index, exit);
                    }
                }
                _ = signals.recv() => {
                    for c in &regular_commands {
                        let _ = c.send(Command::Stop { deadline: Instant::now() });
                    }
                }
            }
        }
        while let Some(Driver {
            index,
            commands,
            mut done,
            finished,
        }) = sidecars.pop()
        {
            if finished {
                continue;
            }
            let _ = commands.send(Command::Stop { deadline });
            let exit = tokio::select! {
                exit = &mut done => exit,
                _ = signals.recv() => {
                    let _ = commands.send(Command::Stop { deadline: Instant::now() });
                    done.await
                }
            };
            if let Ok(exit) = exit {
                self.record(index, exit);
            }
        }

        let main = order
            .iter()
            .find(|(_, r)| *r == Role::Regular)
            .map(|(i, _)| *i);
        let exit_code = match main.and_then(|i| self.summary[i].exit.as_ref()) {
            Some(x) if !failed => x.code,
            Some(x) if x.code != 0 => x.code,
            _ => 1,
        };
        self.events.emit(None, Event::PodFinished { exit_code });
        PodResult {
            exit_code,
            summary: self.summary,
        }
    }
}

/// Owns one running container until it ends.
async fn drive(
    mut running: Running,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: Arc<Events>,
    state: Arc<PodState>,
) -> ExitInfo {
    let name = running.name().to_string();
    let mut deadline: Option<Instant> = None;
    let mut killed = false;
    let exit = loop {
        tokio::select! {
            exit = running.exited() => break exit,
            command = commands.recv() => match command {
                Some(Command::Stop { deadline: d }) => {
                    if deadline.is_none() {
                        running.terminate(d);
                    }
                    // A second Ctrl-C brings the deadline forward, never back.
                    deadline = Some(deadline.map_or(d, |old| old.min(d)));
                }
                None => break running.exited().await,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() && !killed => {
                running.kill();
                killed = true;
            }
        }
    };
    if killed {
        events.emit(Some(&name), Event::Killed);
    }
    state.exited(&name, exit.code);
    events.emit(Some(&name), Event::Exited(exit.clone()));
    exit
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Compiles (or loads from the cache), links and pre-instantiates every Wasm container of the
/// pod, before anything of the pod exists: a component that cannot run fails here.
pub fn prepare_sidecars(
    plan: &PodPlan,
) -> Result<Vec<Option<PreparedSidecar>>, crate::sidecars::SidecarError> {
    plan.containers
        .iter()
        .map(|c| {
            if c.image.is_wasm() {
                PreparedSidecar::prepare(c).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect()
}
