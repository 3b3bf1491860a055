//! The supervisor drives a pod's containers with Kubernetes' ordering: init containers one by
//! one, each to success; native sidecars (init containers with `restartPolicy: Always`) started
//! in their place, the next container waiting until they have started; then all regular
//! containers together. The pod ends when every regular container is done (per the restart
//! policy) or on Ctrl-C/SIGTERM: every preStop hook begins at once, regular containers get
//! SIGTERM first, then native sidecars in reverse start order, all by one deadline
//! (`terminationGracePeriodSeconds`) and each with at least two seconds after SIGTERM (KEP-753);
//! a second Ctrl-C kills at once.
//!
//! Each container lives in its own runner task (`runner.rs`: start, hooks, probes, restarts);
//! the supervisor sends commands and collects outcomes.

pub mod actions;
pub mod api;
pub mod backoff;
pub mod control;
pub mod events;
pub mod images;
pub mod journal;
pub mod pod;
pub mod probes;
pub mod runner;
#[cfg(test)]
mod tests;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::logs::Logs;
use crate::plan::{PodPlan, Role};
use crate::sandbox::runtime::{PodRuntime, SIDECAR_WORKERS};
use crate::sandbox::PodSandbox;
use crate::sidecars::PreparedSidecar;
use crate::status::PodState;
use events::{ContainerSummary, Event, Events};
pub use runner::Progress;
use runner::{Command, Outcome, PodRun};
pub use workload::Member;
use workload::{BoxFuture, Launcher, PodLauncher, SidecarRuntime};

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
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
    done: JoinHandle<Outcome>,
}

impl Handle {
    fn stop(&self, deadline: Instant) {
        let _ = self.commands.send(Command::Stop {
            deadline,
            wait_turn: false,
        });
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }
}

/// A regular container's runner: its outcome arrives through the supervisor's `JoinSet`.
struct Regular {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
}

/// Where the pod is, for requests from outside (`wpod apply`): containers can change only
/// while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Init containers and native sidecars are starting.
    Starting,
    /// The regular containers have started.
    Running,
    /// Termination has begun.
    Stopping,
}

/// Why a live change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Termination began (a stop request, the main container's end) while it was being made.
    #[error("the pod was {0} during the change")]
    Interrupted(&'static str),
    #[error("the pod is stopping")]
    Stopping,
}

/// A live change of the pod's Wasm sidecars (`wpod apply`), decided and prepared by the control
/// socket: the supervisor only stops and starts runners, in Kubernetes' order.
pub struct Change {
    /// Containers to stop for good (removed, or replaced by one in `start`), by name: each has
    /// the pod's grace period, as at termination.
    pub stop: Vec<String>,
    /// Containers to start once those have ended (their ports are free again then).
    pub start: Vec<Arc<Member>>,
    /// The native sidecars' names in start order after the change: termination stops them in
    /// reverse.
    pub sidecar_order: Vec<String>,
    /// How each started container progresses (to wait for it to be started or ready), or why
    /// nothing was started.
    pub reply: oneshot::Sender<Result<Started, ChangeError>>,
}

/// The containers a change started, by name, and how each progresses.
pub type Started = Vec<(String, watch::Receiver<Progress>)>;

pub struct Supervisor {
    run: Arc<PodRun>,
    members: Vec<Arc<Member>>,
    summary: Vec<ContainerSummary>,
    control: Option<mpsc::Receiver<Change>>,
    phase: watch::Sender<Phase>,
}

impl Supervisor {
    pub fn new(
        plan: Arc<PodPlan>,
        sandbox: Arc<PodSandbox>,
        prepared: Vec<Option<PreparedSidecar>>,
        logs: Arc<Logs>,
        events: Arc<Events>,
        reports: Arc<crate::grants::report::Reporter>,
        backoff_base: Duration,
    ) -> Self {
        let state = main_containers(&plan);
        // Started now, on a thread of its own; the first sidecar waits for it.
        let runtime = match prepared.iter().any(Option::is_some) {
            true => SidecarRuntime::starting(PodRuntime::start(
                plan.name().to_string(),
                sandbox.namespaces.net_handle(),
                SIDECAR_WORKERS,
                sandbox.cgroups.runtime_thread_dirs(),
            )),
            false => SidecarRuntime::default(),
        };
        let members = workload::members(&plan, prepared);
        let launcher = PodLauncher {
            plan: plan.clone(),
            sandbox,
            logs,
            state: state.clone(),
            runtime: std::sync::Mutex::new(runtime),
            reports,
        };
        Self::build(
            plan,
            members,
            Box::new(launcher),
            state,
            events,
            backoff_base,
        )
    }

    /// A supervisor for `plan` whose containers `launcher` starts.
    pub fn with_launcher(
        plan: Arc<PodPlan>,
        launcher: Box<dyn Launcher>,
        state: Arc<PodState>,
        events: Arc<Events>,
        backoff_base: Duration,
    ) -> Self {
        let members = workload::members(&plan, Vec::new());
        Self::build(plan, members, launcher, state, events, backoff_base)
    }

    fn build(
        plan: Arc<PodPlan>,
        members: Vec<Arc<Member>>,
        launcher: Box<dyn Launcher>,
        state: Arc<PodState>,
        events: Arc<Events>,
        backoff_base: Duration,
    ) -> Self {
        let summary = members
            .iter()
            .map(|m| ContainerSummary::new(m.name()))
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
            members,
            summary,
            control: None,
            phase: watch::channel(Phase::Starting).0,
        }
    }

    /// Where live changes to the pod are sent (the control socket), and where the pod is.
    pub fn control(&mut self) -> (mpsc::Sender<Change>, watch::Receiver<Phase>) {
        let (tx, rx) = mpsc::channel(1);
        self.control = Some(rx);
        (tx, self.phase.subscribe())
    }

    fn spawn(&self, member: Arc<Member>) -> Handle {
        let (commands, rx) = mpsc::unbounded_channel();
        let (progress_tx, progress) = watch::channel(Progress::Starting);
        let name = member.name().to_string();
        let done = tokio::spawn(runner::run(self.run.clone(), member, rx, progress_tx));
        Handle {
            name,
            commands,
            progress,
            done,
        }
    }

    /// Starts a regular container: its outcome arrives through `set`.
    fn spawn_regular(
        &self,
        member: Arc<Member>,
        set: &mut JoinSet<(String, Option<Outcome>)>,
    ) -> Regular {
        let Handle {
            name,
            commands,
            progress,
            done,
        } = self.spawn(member);
        let key = name.clone();
        set.spawn(async move { (key, done.await.ok()) });
        Regular {
            name,
            commands,
            progress,
        }
    }

    fn record(&mut self, name: &str, outcome: Outcome) {
        let row = match self.summary.iter().position(|r| r.name == name) {
            Some(i) => &mut self.summary[i],
            None => {
                self.summary.push(ContainerSummary::new(name));
                self.summary.last_mut().expect("just pushed")
            }
        };
        row.restarts = outcome.restarts;
        row.exit = outcome.exit;
        row.waiting = outcome.waiting.map(str::to_string);
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
        let members = self.members.clone();
        let main = members
            .iter()
            .find(|m| m.plan.role == Role::Regular)
            .map(|m| m.name().to_string());
        let mut sidecars: Vec<Handle> = Vec::new();
        let mut failed = false;
        let mut stop_reason: Option<&'static str> = None;
        // The pod's one deadline, from its first stop request.
        let mut deadline: Option<Instant> = None;
        // A second request came: what is left is killed.
        let mut forced = false;

        // Init containers in order; native sidecars start in their place and keep running.
        for member in members.iter().filter(|m| m.plan.role != Role::Regular) {
            let mut handle = self.spawn(member.clone());
            if member.plan.role == Role::NativeSidecar {
                let started = tokio::select! {
                    p = handle.progress.wait_for(|p| matches!(p, Progress::Started | Progress::Ended)) => p.map(|p| *p == Progress::Started).unwrap_or(false),
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
                    // The init container stops, and the sidecars already running begin to:
                    // all by one deadline, a second request killing what is left.
                    stop_reason = Some(reason);
                    let by = *deadline.get_or_insert(Instant::now() + grace);
                    handle.stop(by);
                    for h in &sidecars {
                        h.send(Command::Stop { deadline: by, wait_turn: true });
                    }
                    tokio::select! {
                        outcome = &mut handle.done => outcome.ok(),
                        _ = signals.recv() => {
                            forced = true;
                            handle.send(Command::Kill);
                            sidecars.iter().for_each(|h| h.send(Command::Kill));
                            (&mut handle.done).await.ok()
                        }
                    }
                }
            };
            let ok = outcome
                .as_ref()
                .and_then(|o| o.exit.as_ref())
                .is_some_and(|x| x.code == 0);
            if let Some(outcome) = outcome {
                self.record(&handle.name, outcome);
            }
            if stop_reason.is_some() {
                break;
            }
            if !ok {
                failed = true;
                break;
            }
        }

        // Then the regular containers in their order, each once the one before it was started
        // and its postStart hook ran (as the kubelet starts them), and then run together until
        // each is done or the pod is told to stop; meanwhile `wpod apply` may change the Wasm
        // sidecars.
        let mut regular: JoinSet<(String, Option<Outcome>)> = JoinSet::new();
        let mut live: Vec<Regular> = Vec::new();
        if !failed && stop_reason.is_none() {
            for member in members.iter().filter(|m| m.plan.role == Role::Regular) {
                let container = self.spawn_regular(member.clone(), &mut regular);
                let mut launched = container.progress.clone();
                live.push(container);
                tokio::select! {
                    _ = launched.wait_for(|p| *p != Progress::Starting) => {}
                    reason = signals.recv() => {
                        stop_reason = Some(reason);
                        break;
                    }
                }
            }
        }
        if !failed && stop_reason.is_none() {
            self.phase.send_replace(Phase::Running);
            let mut control = self.control.take();
            loop {
                tokio::select! {
                    next = regular.join_next() => match next {
                        Some(Ok((name, Some(outcome)))) => self.record(&name, outcome),
                        Some(_) => {}
                        None => break,
                    },
                    reason = signals.recv() => {
                        stop_reason = Some(reason);
                        break;
                    }
                    Some(change) = recv(&mut control) => {
                        let mut pods = Containers { live: &mut live, regular: &mut regular, sidecars: &mut sidecars };
                        if let Some(reason) = self.change(change, &mut pods, &mut signals).await {
                            stop_reason = Some(reason);
                            break;
                        }
                    }
                }
            }
        }
        self.phase.send_replace(Phase::Stopping);
        // Requests still queued are refused: their senders see the channel closed.
        self.control = None;

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
        // As the kubelet (KEP-753): every container's preStop hook begins at once; regular
        // containers then get SIGTERM, native sidecars only in their turn (reverse start order,
        // once every regular container has ended), each with at least `MIN_TERM_WINDOW`
        // before the kill even when the grace period is spent. A second request kills what is
        // left at once.
        let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
        for c in &live {
            let _ = c.commands.send(Command::Stop {
                deadline,
                wait_turn: false,
            });
        }
        for h in &sidecars {
            h.send(Command::Stop {
                deadline,
                wait_turn: true,
            });
        }
        if forced {
            sidecars.iter().for_each(|h| h.send(Command::Kill));
        }
        while !regular.is_empty() {
            tokio::select! {
                next = regular.join_next() => {
                    if let Some(Ok((name, Some(outcome)))) = next {
                        self.record(&name, outcome);
                    }
                }
                _ = signals.recv(), if !forced => {
                    forced = true;
                    for c in &live {
                        let _ = c.commands.send(Command::Kill);
                    }
                    sidecars.iter().for_each(|h| h.send(Command::Kill));
                }
            }
        }
        while let Some(mut handle) = sidecars.pop() {
            handle.send(Command::Turn);
            let outcome = tokio::select! {
                outcome = &mut handle.done => outcome.ok(),
                _ = signals.recv(), if !forced => {
                    forced = true;
                    handle.send(Command::Kill);
                    sidecars.iter().for_each(|h| h.send(Command::Kill));
                    (&mut handle.done).await.ok()
                }
            };
            if let Some(outcome) = outcome {
                self.record(&handle.name, outcome);
            }
        }

        let main_exit = main
            .as_deref()
            .and_then(|m| self.summary.iter().find(|r| r.name == m))
            .and_then(|r| r.exit.as_ref());
        let exit_code = match main_exit {
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

    /// Applies a live change: stops the containers it replaces or removes (each with the pod's
    /// grace period, as at termination) and waits until they have ended, then starts the new
    /// ones. A stop request meanwhile wins: it is returned, and every runner is left where
    /// termination finds it.
    async fn change(
        &mut self,
        change: Change,
        pod: &mut Containers<'_>,
        signals: &mut impl StopRequests,
    ) -> Option<&'static str> {
        let deadline = Instant::now() + self.run.plan.grace_period;
        // Kept until they have ended: a runner whose command channel closes stops listening
        // for the kill at its deadline.
        let mut ending: Vec<Regular> = Vec::new();
        let mut retiring: Vec<Handle> = Vec::new();
        for name in &change.stop {
            if let Some(i) = pod.live.iter().position(|r| &r.name == name) {
                let r = pod.live.remove(i);
                let _ = r.commands.send(Command::Stop {
                    deadline,
                    wait_turn: false,
                });
                ending.push(r);
            } else if let Some(i) = pod.sidecars.iter().position(|h| &h.name == name) {
                let h = pod.sidecars.remove(i);
                h.stop(deadline);
                retiring.push(h);
            }
        }
        // Containers that end meanwhile (the main one, say) are recorded as in the main loop.
        let mut finished: Vec<(String, Outcome)> = Vec::new();
        let waited = {
            let ended = async {
                for r in &mut ending {
                    let _ = r.progress.wait_for(|p| *p == Progress::Ended).await;
                }
                let mut outcomes = Vec::new();
                for h in &mut retiring {
                    if let Ok(outcome) = (&mut h.done).await {
                        outcomes.push((h.name.clone(), outcome));
                    }
                }
                outcomes
            };
            tokio::pin!(ended);
            loop {
                tokio::select! {
                    outcomes = &mut ended => break Ok(outcomes),
                    reason = signals.recv() => break Err(reason),
                    Some(next) = pod.regular.join_next() => {
                        if let Ok((name, Some(outcome))) = next {
                            finished.push((name, outcome));
                        }
                    }
                }
            }
        };
        for (name, outcome) in finished {
            self.record(&name, outcome);
        }
        let outcomes = match waited {
            Ok(outcomes) => outcomes,
            Err(reason) => {
                // Termination stops and waits for what has not ended yet.
                pod.live.extend(ending);
                for mut h in retiring {
                    if h.done.is_finished() {
                        if let Ok(outcome) = (&mut h.done).await {
                            self.record(&h.name, outcome);
                        }
                    } else {
                        pod.sidecars.push(h);
                    }
                }
                let _ = change.reply.send(Err(ChangeError::Interrupted(reason)));
                return Some(reason);
            }
        };
        for (name, outcome) in outcomes {
            self.record(&name, outcome);
        }
        let mut started = Vec::new();
        for member in change.start {
            let name = member.name().to_string();
            if member.plan.role == Role::Regular {
                let r = self.spawn_regular(member, pod.regular);
                started.push((name, r.progress.clone()));
                pod.live.push(r);
            } else {
                let h = self.spawn(member);
                started.push((name, h.progress.clone()));
                pod.sidecars.push(h);
            }
        }
        let order = |name: &str| {
            change
                .sidecar_order
                .iter()
                .position(|n| n == name)
                .unwrap_or(usize::MAX)
        };
        pod.sidecars.sort_by_key(|h| order(&h.name));
        let _ = change.reply.send(Ok(started));
        None
    }
}

/// The running containers a change works on.
struct Containers<'a> {
    live: &'a mut Vec<Regular>,
    regular: &'a mut JoinSet<(String, Option<Outcome>)>,
    sidecars: &'a mut Vec<Handle>,
}

/// The next change, or never when nobody can send one.
async fn recv(control: &mut Option<mpsc::Receiver<Change>>) -> Option<Change> {
    match control {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The pod's status, tracking the main containers a sidecar's `main-process` sees: the
/// regular native ones.
fn main_containers(plan: &PodPlan) -> Arc<PodState> {
    PodState::new(plan.main_containers())
}
