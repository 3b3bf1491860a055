//! One container's whole life, in its own task: start, `postStart`, probes, wait, restart with
//! back-off per its restart policy, and on request `preStop`, the polite stop (SIGTERM or the
//! `stopping` event) and the kill at the deadline. The supervisor only sends [`Command`]s and
//! watches [`Progress`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::actions::{self, ActionTarget};
use super::backoff::BackOff;
use super::events::{Event, Events};
use super::probes::{self, ProbeEvent};
use super::workload::{Launcher, Member, Workload};
use crate::plan::{ContainerPlan, PodPlan};
use crate::spec::{Handler, RestartPolicy};
use crate::status::{ExitInfo, ExitReason, PodState};

/// What every runner of a pod shares.
pub struct PodRun {
    pub plan: Arc<PodPlan>,
    pub launcher: Box<dyn Launcher>,
    pub events: Arc<Events>,
    pub state: Arc<PodState>,
    pub backoff_base: Duration,
}

pub enum Command {
    /// Stop gracefully, as the kubelet kills a container: its preStop hook at once; then, for
    /// a native sidecar at pod termination (`wait_turn`), its turn ([`Command::Turn`]); then
    /// SIGTERM (or `stopping`); the kill at the deadline, but never sooner than
    /// [`MIN_TERM_WINDOW`] after SIGTERM. A later stop with an earlier deadline brings the
    /// deadline forward.
    Stop { deadline: Instant, wait_turn: bool },
    /// A native sidecar's turn to get SIGTERM: the containers it outlives have ended.
    Turn,
    /// Kill now (a second Ctrl-C, or `wpod stop -t N` spent): no hook, no window.
    Kill,
}

/// The least time a container gets between SIGTERM and the kill, even when its preStop hook
/// or its wait for its turn spent the grace period: the kubelet's
/// `minimumGracePeriodInSeconds` (KEP-753), so a sidecar that stops quickly ends 0/Completed
/// rather than 137.
pub const MIN_TERM_WINDOW: Duration = Duration::from_secs(2);

/// How far a container got, for the start order of init containers and native sidecars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Starting,
    /// Its first start was tried and its `postStart` hook has run (or failed, or it has none):
    /// the next container in the list may start, as the kubelet starts them one by one.
    Launched,
    /// Started in Kubernetes' sense: its startup probe passed, or (a Wasm sidecar that imports
    /// `ready`) it called `lifecycle.ready()`, or it simply runs.
    Started,
    /// It ended for good (no more restarts).
    Ended,
}

/// How a container's life ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub exit: Option<ExitInfo>,
    pub restarts: u32,
    /// Kubernetes' waiting reason when it ended between restarts (CrashLoopBackOff).
    pub waiting: Option<&'static str>,
}

/// The runner task of one container.
pub async fn run(
    run: Arc<PodRun>,
    member: Arc<Member>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    progress: watch::Sender<Progress>,
) -> Outcome {
    let plan = &member.plan;
    let name = plan.name().to_string();
    let policy = plan.restart_policy;
    let mut backoff = BackOff::new(run.backoff_base);
    let mut outcome = Outcome {
        exit: None,
        restarts: 0,
        waiting: None,
    };
    loop {
        let started_at = Instant::now();
        // Before starting: a sidecar may call ready() the moment it runs.
        run.state.clear_ready(&name);
        let (exit, ended) = match run.launcher.start(&member).await {
            Ok(running) => {
                live(
                    &run,
                    &member,
                    running,
                    &mut commands,
                    &progress,
                    outcome.restarts,
                )
                .await
            }
            Err(error) => {
                let error = crate::error::chain(&error);
                run.events.emit(Some(&name), Event::FailedToStart { error });
                // What containerd reports for a container that could not start.
                let exit = ExitInfo {
                    code: 128,
                    signal: None,
                    reason: ExitReason::StartError,
                    message: None,
                };
                run.events.emit(Some(&name), Event::Exited(exit.clone()));
                launched(&progress);
                (exit, Ended::Itself)
            }
        };
        run.state.exited(&name, exit.code);
        outcome.exit = Some(exit.clone());
        if !ended.restarts(policy, exit.code) {
            break;
        }
        let delay = backoff.next_delay(started_at.elapsed());
        run.events.emit(
            Some(&name),
            Event::BackOff {
                restart_in_ms: delay.as_millis() as u64,
                restarts: outcome.restarts + 1,
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            command = commands.recv() => {
                // Asked to stop while waiting to restart: it stays down.
                let _ = command;
                outcome.waiting = Some("CrashLoopBackOff");
                break;
            }
        }
        outcome.restarts += 1;
    }
    progress.send_replace(Progress::Ended);
    outcome
}

/// One life of a started container: until it exits (or is stopped). Returns how it ended and
/// whether a stop command ended it.
async fn live(
    run: &PodRun,
    member: &Member,
    mut running: Box<dyn Workload>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    progress: &watch::Sender<Progress>,
    restarts: u32,
) -> (ExitInfo, Ended) {
    let plan = &member.plan;
    let name = plan.name();
    run.events.emit(
        Some(name),
        Event::Started {
            pid: running.pid(),
            restarts,
            image: Some(plan.shown_image.clone()),
        },
    );
    run.state.started(name, running.pid().unwrap_or(0));
    let target = run.launcher.action_target(member, running.as_ref());
    let post_start = plan.hooks.post_start.as_ref().zip(target.as_ref());
    // A stop asked for while the postStart hook runs: it cuts the hook short (its deadline
    // bounds everything the container does from then on).
    let mut stop_first: Option<Command> = None;
    if let Some((hook, target)) = post_start {
        let limit = run.plan.grace_period.max(Duration::from_secs(1));
        // Boxed: the hook's future (an HTTP client, an exec) is kilobytes, and held inline it
        // would size every container's task for its whole life, hook or not.
        let result = tokio::select! {
            result = Box::pin(actions::run(hook, target, limit)) => result,
            command = commands.recv() => {
                stop_first = Some(command.unwrap_or(Command::Kill));
                Ok(String::new())
            }
        };
        if let Err(e) = result {
            // Its postStart has run: the next container may start.
            launched(progress);
            run.events.emit(
                Some(name),
                Event::HookFailed {
                    hook: "postStart".into(),
                    message: e.message(),
                },
            );
            running.kill();
            let mut exit = running.exited().await;
            exit.reason = ExitReason::FailedPostStartHook;
            run.events.emit(Some(name), Event::Exited(exit.clone()));
            return (exit, Ended::Itself);
        }
    }

    let (mut probes, mut probe_rx) = target
        .clone()
        .filter(|_| stop_first.is_none())
        .and_then(|target| probes::start(&plan.probes, target))
        .unzip();
    // What makes this container "started" for the ones ordered after it.
    let waits_for_ready = run.launcher.waits_for_ready(member);
    let has_startup_probe = plan.probes.startup.is_some();
    let has_readiness_probe = plan.probes.readiness.is_some();
    let mark_started = |progress: &watch::Sender<Progress>| {
        if matches!(*progress.borrow(), Progress::Starting | Progress::Launched) {
            progress.send_replace(Progress::Started);
        }
    };
    let mut ready_watch = run.state.watch_ready();
    let already_ready = ready_watch.borrow_and_update().contains(name);
    if (waits_for_ready && already_ready) || (!waits_for_ready && !has_startup_probe) {
        // Said before the next container may start, so the events keep their order.
        if !has_readiness_probe {
            run.events.emit(Some(name), Event::Ready);
        }
        mark_started(progress);
    }
    // Its postStart has run (and its Ready, if any, was said): the next container may start.
    launched(progress);

    let mut stop: Option<Stopping> = None;
    let mut killed = false;
    // Asked to stop (Ctrl-C, `wpod stop`, a live change): it stays down, even when a failed
    // probe had already begun stopping it for a restart.
    let mut stop_requested = false;
    // Killed for a failed startup or liveness probe: restarted unless the policy is Never, as
    // the kubelet decides when it kills it (whatever the exit code then).
    let mut unhealthy = false;
    // The preStop hook while it runs; SIGTERM follows it (and the container's turn), and the
    // deadline bounds both.
    let mut hook: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
    let exit = loop {
        // What this turn of the loop asks of the stop.
        let mut step: Option<Step> = stop_first.take().map(Step::Command);
        if step.is_none() {
            tokio::select! {
                exit = running.exited() => {
                    // A sidecar that called ready() and ended at once: started all the same
                    // (its ready may have raced its end here), so those after it may start.
                    let starting = matches!(*progress.borrow(), Progress::Starting | Progress::Launched);
                    if waits_for_ready && starting && ready_watch.borrow().contains(name) {
                        if !has_readiness_probe {
                            run.events.emit(Some(name), Event::Ready);
                        }
                        mark_started(progress);
                    }
                    break exit;
                }
                command = commands.recv() => match command {
                    Some(command) => step = Some(Step::Command(command)),
                    None => break running.exited().await,
                },
                () = async {
                    if let Some(h) = hook.as_mut() {
                        h.await;
                    }
                }, if hook.is_some() => {
                    hook = None;
                    step = Some(Step::HookDone);
                }
                _ = tokio::time::sleep_until(stop.as_ref().map_or_else(far_future, Stopping::alarm)), if stop.is_some() && !killed => {
                    step = Some(Step::Alarm);
                }
                changed = ready_watch.changed(), if waits_for_ready && matches!(*progress.borrow(), Progress::Starting | Progress::Launched) => {
                    if changed.is_ok() && ready_watch.borrow().contains(name) {
                        // Said before the next container may start, so the events keep their order.
                        if !has_readiness_probe {
                            run.events.emit(Some(name), Event::Ready);
                        }
                        mark_started(progress);
                    }
                }
                Some(event) = next_probe_event(&mut probe_rx) => match event {
                    // Already on its way when termination stopped the startup probe.
                    ProbeEvent::StartupPassed if stop.is_some() => {}
                    ProbeEvent::StartupPassed => {
                        // Said before the next container may start, so the events keep their order.
                        if !has_readiness_probe {
                            run.events.emit(Some(name), Event::Ready);
                        }
                        mark_started(progress);
                    }
                    ProbeEvent::Ready(true) => run.events.emit(Some(name), Event::Ready),
                    ProbeEvent::Ready(false) => run.events.emit(Some(name), Event::NotReady),
                    ProbeEvent::Failed { probe, message } => {
                        // A terminating container's startup and liveness probes are stopped; a
                        // failure already on its way is no longer news.
                        if stop.is_none() || probe == "readiness" {
                            run.events.emit(Some(name), Event::ProbeFailed { probe: probe.into(), message });
                        }
                    }
                    ProbeEvent::StartupFailed(ref message) | ProbeEvent::LivenessFailed(ref message) => {
                        if stop.is_none() {
                            // Kubernetes kills the container (preStop, then SIGTERM within its
                            // grace period: the probe's own, else the pod's) and restarts it
                            // per its policy.
                            let probe = match event {
                                ProbeEvent::StartupFailed(_) => &plan.probes.startup,
                                _ => &plan.probes.liveness,
                            };
                            let grace = probe
                                .as_ref()
                                .and_then(|p| p.termination_grace_period_seconds)
                                .map_or(run.plan.grace_period, Duration::from_secs);
                            run.events.emit(Some(name), Event::Unhealthy { message: message.clone() });
                            unhealthy = true;
                            step = Some(Step::Unhealthy(grace));
                        }
                    }
                },
            }
        }
        let Some(step) = step else { continue };
        // Where the stop goes from here.
        let mut term = false;
        match step {
            Step::Command(Command::Stop {
                deadline,
                wait_turn,
            }) => {
                stop_requested = true;
                match stop.as_mut() {
                    Some(s) => s.sooner(deadline),
                    None => {
                        stop = Some(Stopping::new(deadline, wait_turn));
                        term = true;
                    }
                }
            }
            Step::Unhealthy(grace) => {
                stop = Some(Stopping::new(Instant::now() + grace, false));
                term = true;
            }
            Step::Command(Command::Turn) => {
                if let Some(s) = stop.as_mut() {
                    s.wait_turn = false;
                    term = true;
                }
            }
            Step::Command(Command::Kill) => {
                stop_requested = true;
                hook = None;
                if !killed {
                    running.kill();
                    killed = true;
                }
            }
            Step::HookDone => term = true,
            Step::Alarm => {
                // The grace period is spent, preStop or not (a shorter `wpod stop -t` cuts a
                // running hook short too), or the window after SIGTERM is.
                hook = None;
                match stop.as_mut() {
                    Some(s) if s.kill_at.is_none() => {
                        s.wait_turn = false;
                        term = true;
                    }
                    _ => {
                        running.kill();
                        killed = true;
                    }
                }
            }
        }
        let Some(s) = stop.as_mut() else { continue };
        if !term || killed || s.kill_at.is_some() {
            continue;
        }
        if s.hook_pending {
            // The first step of a stop: liveness ends, the preStop hook begins.
            s.hook_pending = false;
            if let Some(p) = probes.as_mut() {
                p.stop_liveness();
            }
            if let (Some(target), Some(handler)) = (&target, pre_stop_hook(plan)) {
                hook = Some(Box::pin(pre_stop(run, plan, handler, target, s.deadline)));
                continue;
            }
        }
        if hook.is_none() && !s.wait_turn {
            let kill_at = s.deadline.max(Instant::now() + MIN_TERM_WINDOW);
            s.kill_at = Some(kill_at);
            if running.terminate(kill_at) {
                run.events.emit(Some(name), Event::StoppedAtOnce);
            }
        }
    };
    if killed {
        run.events.emit(Some(name), Event::Killed);
    }
    run.events.emit(Some(name), Event::Exited(exit.clone()));
    let ended = match (stop_requested, unhealthy) {
        // Stopped by a command, not by a probe alone: the container stays down.
        (true, _) => Ended::Stopped,
        (false, true) => Ended::Unhealthy,
        (false, false) => Ended::Itself,
    };
    (exit, ended)
}

/// Why one life of a container ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Its process exited on its own (or was killed from outside).
    Itself,
    /// A stop command: it stays down.
    Stopped,
    /// Killed for a failed startup or liveness probe: restarted unless the policy is Never.
    Unhealthy,
}

impl Ended {
    fn restarts(self, policy: RestartPolicy, code: i32) -> bool {
        match self {
            Ended::Itself => policy.restarts(code),
            Ended::Stopped => false,
            Ended::Unhealthy => policy != RestartPolicy::Never,
        }
    }
}

/// The first start was tried and its postStart hook ran: the next container may start.
fn launched(progress: &watch::Sender<Progress>) {
    if *progress.borrow() == Progress::Starting {
        progress.send_replace(Progress::Launched);
    }
}

/// The container's preStop hook, if it has one.
fn pre_stop_hook(plan: &ContainerPlan) -> Option<&Handler> {
    plan.hooks.pre_stop.as_ref()
}

/// The next of the probes' events; never, for a container without probes.
async fn next_probe_event(
    rx: &mut Option<mpsc::UnboundedReceiver<ProbeEvent>>,
) -> Option<ProbeEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the container's preStop hook, bounded by the stop deadline.
async fn pre_stop(
    run: &PodRun,
    plan: &ContainerPlan,
    hook: &Handler,
    target: &ActionTarget,
    deadline: Instant,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = actions::run(hook, target, left).await {
        run.events.emit(
            Some(plan.name()),
            Event::HookFailed {
                hook: "preStop".into(),
                message: e.message(),
            },
        );
    }
}

/// What one turn of a container's loop brings to its stop.
enum Step {
    Command(Command),
    /// A failed startup or liveness probe: the container is stopped to be restarted, within
    /// this grace period.
    Unhealthy(Duration),
    /// The preStop hook ended.
    HookDone,
    /// The deadline (before SIGTERM) or the kill time (after it) came.
    Alarm,
}

/// A container being stopped.
struct Stopping {
    /// The grace period's end: the preStop hook and the wait for the container's turn end
    /// there at the latest.
    deadline: Instant,
    /// Its preStop hook is still to begin.
    hook_pending: bool,
    /// SIGTERM waits for [`Command::Turn`] (a native sidecar at pod termination).
    wait_turn: bool,
    /// Once SIGTERM (or `stopping`) was sent: when it is killed.
    kill_at: Option<Instant>,
}

impl Stopping {
    fn new(deadline: Instant, wait_turn: bool) -> Self {
        Stopping {
            deadline,
            hook_pending: true,
            wait_turn,
            kill_at: None,
        }
    }

    /// A later stop with an earlier deadline (a shorter `wpod stop -t`, termination during a
    /// probe's restart) brings it forward, never back.
    fn sooner(&mut self, deadline: Instant) {
        self.deadline = self.deadline.min(deadline);
        self.kill_at = self
            .kill_at
            .map(|k| k.min(deadline.max(Instant::now() + MIN_TERM_WINDOW)));
    }

    /// When the stop moves on by itself: the kill time once SIGTERM was sent, the deadline
    /// before.
    fn alarm(&self) -> Instant {
        self.kill_at.unwrap_or(self.deadline)
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
