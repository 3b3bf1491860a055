//! The supervisor drives a pod's containers with Kubernetes' ordering: init containers one by
//! one, each to success; native sidecars (init containers with `restartPolicy: Always`) started
//! in their place, the next container waiting until they have started; then all regular
//! containers together. The pod ends when every regular container is done (per the restart
//! policy) or on Ctrl-C/SIGTERM: regular containers stop first, then native sidecars in reverse
//! start order, all by one deadline (`terminationGracePeriodSeconds`); a second Ctrl-C kills at
//! once.
//!
//! Each container lives in its own runner task (`runner.rs`: start, hooks, probes, restarts);
//! the supervisor sends commands and collects outcomes.

pub mod actions;
pub mod backoff;
pub mod events;
pub mod images;
pub mod journal;
pub mod probes;
pub mod runner;
#[cfg(test)]
mod tests;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::logs::Logs;
use crate::oci::pull::StoredImage;
use crate::plan::{PodPlan, Role};
use crate::sandbox::PodSandbox;
use crate::sidecars::runtime::{PodRuntime, RuntimeError};
use crate::sidecars::PreparedSidecar;
use crate::status::PodState;
use events::{ContainerSummary, Event, Events};
use runner::{Command, Outcome, PodRun, Progress};
use workload::{BoxFuture, Launcher, PodLauncher};

/// How the pod ended.
pub struct PodResult {
    /// The main (first regular) container's exit code, or 1 if the pod failed before it ran.
    pub exit_code: i32,
    pub summary: Vec<ContainerSummary>,
}

/// Ctrl-C and SIGTERM to `wpod run`.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    last: Option<Instant>,
}

/// Two stop signals closer than this are one request (`timeout` and service managers signal
/// both the process and its group); a person's second Ctrl-C comes later.
const SAME_REQUEST: Duration = Duration::from_millis(250);

/// Requests to stop the pod: Ctrl-C and SIGTERM in `wpod run`, a script in the tests.
pub trait StopRequests: Send {
    /// The next request, with what to call it ("interrupted").
    fn recv(&mut self) -> BoxFuture<'_, &'static str>;
}

impl StopRequests for StopSignals {
    fn recv(&mut self) -> BoxFuture<'_, &'static str> {
        Box::pin(StopSignals::recv(self))
    }
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            last: None,
        })
    }

    async fn recv(&mut self) -> &'static str {
        loop {
            let reason = tokio::select! {
                _ = self.interrupt.recv() => "interrupted",
                _ = self.terminate.recv() => "terminated",
            };
            let now = Instant::now();
            let repeat = self
                .last
                .is_some_and(|t| now.duration_since(t) < SAME_REQUEST);
            self.last = Some(now);
            if !repeat {
                return reason;
            }
        }
    }
}

/// A container's runner, seen from the supervisor.
struct Handle {
    index: usize,
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
    done: JoinHandle<Outcome>,
}

impl Handle {
    fn stop(&self, deadline: Instant) {
        let _ = self.commands.send(Command::Stop { deadline });
    }
}

pub struct Supervisor {
    run: Arc<PodRun>,
    summary: Vec<ContainerSummary>,
}

impl Supervisor {
    pub fn new(
        plan: Arc<PodPlan>,
        sandbox: Arc<PodSandbox>,
        prepared: Vec<Option<PreparedSidecar>>,
        images: Vec<Option<StoredImage>>,
        logs: Arc<Logs>,
        events: Arc<Events>,
        backoff_base: Duration,
    ) -> Result<Self, RuntimeError> {
        let state = main_containers(&plan);
        let runtime = match prepared.iter().any(Option::is_some) {
            true => Some(PodRuntime::new(
                plan.name(),
                sandbox.namespaces.net_handle(),
            )?),
            false => None,
        };
        let launcher = PodLauncher {
            plan: plan.clone(),
            sandbox,
            logs,
            state: state.clone(),
            prepared,
            images,
            runtime,
        };
        Ok(Self::with_launcher(
            plan,
            Box::new(launcher),
            state,
            events,
            backoff_base,
        ))
    }

    /// A supervisor for `plan` whose containers `launcher` starts.
    pub fn with_launcher(
        plan: Arc<PodPlan>,
        launcher: Box<dyn Launcher>,
        state: Arc<PodState>,
        events: Arc<Events>,
        backoff_base: Duration,
    ) -> Self {
        let summary = plan
            .containers
            .iter()
            .map(|c| ContainerSummary {
                name: c.name().to_string(),
                restarts: 0,
                exit: None,
                waiting: None,
            })
            .collect();
        let run = PodRun {
            plan,
            launcher,
            events,
            state,
            backoff_base,
        };
        Supervisor {
            run: Arc::new(run),
            summary,
        }
    }

    fn spawn(&self, index: usize) -> Handle {
        let (commands, rx) = mpsc::unbounded_channel();
        let (progress_tx, progress) = watch::channel(Progress::Starting);
        let done = tokio::spawn(runner::run(self.run.clone(), index, rx, progress_tx));
        Handle {
            index,
            commands,
            progress,
            done,
        }
    }

    fn record(&mut self, index: usize, outcome: Outcome) {
        let row = &mut self.summary[index];
        row.restarts = outcome.restarts;
        row.exit = outcome.exit;
        row.waiting = outcome.waiting;
    }

    /// Runs the pod to its end, stopping it on Ctrl-C or SIGTERM; the caller tears the sandbox
    /// down afterwards.
    pub async fn run(self) -> PodResult {
        match StopSignals::install() {
            Ok(signals) => self.run_until(signals).await,
            Err(e) => {
                self.run.events.emit(
                    None,
                    Event::Warning {
                        message: format!("cannot catch Ctrl-C/SIGTERM: {e}"),
                    },
                );
                PodResult {
                    exit_code: 1,
                    summary: self.summary,
                }
            }
        }
    }

    /// Runs the pod to its end, stopping it when `signals` asks.
    pub async fn run_until(mut self, mut signals: impl StopRequests) -> PodResult {
        let grace = self.run.plan.grace_period;
        let order: Vec<(usize, Role)> = self
            .run
            .plan
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.role))
            .collect();
        let mut sidecars: Vec<Handle> = Vec::new();
        let mut failed = false;
        let mut stop_reason: Option<&'static str> = None;

        // Init containers in order; native sidecars start in their place and keep running.
        for &(index, role) in order.iter().filter(|(_, r)| *r != Role::Regular) {
            let mut handle = self.spawn(index);
            if role == Role::NativeSidecar {
                let started = tokio::select! {
                    p = handle.progress.wait_for(|p| *p != Progress::Starting) => p.map(|p| *p == Progress::Started).unwrap_or(false),
                    reason = signals.recv() => {
                        stop_reason = Some(reason);
                        false
                    }
                };
                sidecars.push(handle);
                if started {
                    continue;
                }
                failed = stop_reason.is_none();
                break;
            }
            let outcome = tokio::select! {
                outcome = &mut handle.done => outcome.ok(),
                reason = signals.recv() => {
                    stop_reason = Some(reason);
                    handle.stop(Instant::now() + grace);
                    (&mut handle.done).await.ok()
                }
            };
            let ok = outcome
                .as_ref()
                .and_then(|o| o.exit.as_ref())
                .is_some_and(|x| x.code == 0);
            if let Some(outcome) = outcome {
                self.record(index, outcome);
            }
            if stop_reason.is_some() {
                break;
            }
            if !ok {
                failed = true;
                break;
            }
        }

        // Then all regular containers together, until each is done or the pod is told to stop.
        let mut regular: JoinSet<(usize, Option<Outcome>)> = JoinSet::new();
        let mut regular_commands = Vec::new();
        if !failed && stop_reason.is_none() {
            for &(index, _) in order.iter().filter(|(_, r)| *r == Role::Regular) {
                let Handle {
                    index,
                    commands,
                    done,
                    ..
                } = self.spawn(index);
                regular_commands.push(commands);
                regular.spawn(async move { (index, done.await.ok()) });
            }
            loop {
                tokio::select! {
                    next = regular.join_next() => match next {
                        Some(Ok((index, Some(outcome)))) => self.record(index, outcome),
                        Some(_) => {}
                        None => break,
                    },
                    reason = signals.recv() => {
                        stop_reason = Some(reason);
                        break;
                    }
                }
            }
        }

        // Termination: regular containers first, then native sidecars in reverse start order.
        let reason = match (stop_reason, failed) {
            (Some(r), _) => r,
            (None, true) => "a container failed",
            (None, false) => "all containers completed",
        };
        if !regular.is_empty() || !sidecars.is_empty() {
            self.run.events.emit(
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
                    if let Some(Ok((index, Some(outcome)))) = next {
                        self.record(index, outcome);
                    }
                }
                _ = signals.recv() => {
                    for c in &regular_commands {
                        let _ = c.send(Command::Stop { deadline: Instant::now() });
                    }
                }
            }
        }
        while let Some(mut handle) = sidecars.pop() {
            handle.stop(deadline);
            let outcome = tokio::select! {
                outcome = &mut handle.done => outcome.ok(),
                _ = signals.recv() => {
                    handle.stop(Instant::now());
                    (&mut handle.done).await.ok()
                }
            };
            if let Some(outcome) = outcome {
                self.record(handle.index, outcome);
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
        self.run.events.emit(None, Event::PodFinished { exit_code });
        PodResult {
            exit_code,
            summary: self.summary,
        }
    }
}

/// The pod's status, tracking the main containers a sidecar's `main-process` sees: the
/// regular native ones.
fn main_containers(plan: &PodPlan) -> Arc<PodState> {
    PodState::new(
        plan.containers
            .iter()
            .filter(|c| c.role == Role::Regular && !c.image.is_wasm())
            .map(|c| c.name().to_string()),
    )
}
