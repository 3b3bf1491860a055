//! Startup, readiness and liveness probes of one container instance, with Kubernetes' settings
//! (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold, failureThreshold). The
//! startup probe runs first; readiness and liveness start once it passed. Results go to the
//! container's runner as [`ProbeEvent`]s.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::actions::{self, ActionTarget};
use crate::plan::ContainerProbes;
use crate::spec::Probe;

#[derive(Debug)]
pub enum ProbeEvent {
    StartupPassed,
    /// The startup probe failed `failureThreshold` times: the container is restarted.
    StartupFailed(String),
    Ready(bool),
    /// The liveness probe failed `failureThreshold` times: the container is restarted.
    LivenessFailed(String),
    /// One failed attempt, for the record.
    Failed {
        probe: &'static str,
        message: String,
    },
}

/// The probe tasks of one container instance; dropping it stops them.
pub struct Probes {
    /// The startup probe, then liveness.
    liveness: Option<JoinHandle<()>>,
    /// Readiness, once the startup probe passed.
    readiness: Option<JoinHandle<()>>,
}

impl Probes {
    /// The container is terminating: its startup and liveness probes stop, as the kubelet
    /// stops them (a failure could no longer restart it); readiness goes on.
    pub fn stop_liveness(&mut self) {
        if let Some(t) = self.liveness.take() {
            t.abort();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in [self.liveness.take(), self.readiness.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(n.into())
}

/// Starts the container's probes, and the channel of what they find; `None` if it has none
/// (no channel either: one allocates its first block of slots at once, 1 KiB, and would sit in
/// every container's task for its whole life).
pub fn start(
    probes: &ContainerProbes,
    target: ActionTarget,
) -> Option<(Probes, mpsc::UnboundedReceiver<ProbeEvent>)> {
    if !probes.any() {
        return None;
    }
    let (events, found) = mpsc::unbounded_channel();
    let ContainerProbes {
        startup,
        readiness,
        liveness,
    } = probes.clone();
    // Readiness and liveness begin once the startup probe passed (at once without one).
    let (started_tx, mut started) = watch::channel(startup.is_none());
    let readiness = readiness.map(|p| {
        let (target, events) = (target.clone(), events.clone());
        tokio::spawn(async move {
            // Never started (the startup probe gave up or was stopped): nothing to do.
            if started.wait_for(|s| *s).await.is_ok() {
                readiness_loop(p, target, events).await;
            }
        })
    });
    let liveness = tokio::spawn(async move {
        if let Some(p) = startup {
            match probe_until(&p, "startup", &target, &events).await {
                Ok(()) => {
                    let _ = events.send(ProbeEvent::StartupPassed);
                    started_tx.send_replace(true);
                }
                Err(e) => {
                    let _ = events.send(ProbeEvent::StartupFailed(e.to_string()));
                    return;
                }
            }
        }
        if let Some(p) = liveness {
            if let Err(e) = probe_until(&p, "liveness", &target, &events).await {
                let _ = events.send(ProbeEvent::LivenessFailed(e.to_string()));
            }
        }
    });
    let probes = Probes {
        liveness: Some(liveness),
        readiness,
    };
    Some((probes, found))
}

/// A startup or liveness probe that gave up.
#[derive(Debug, thiserror::Error)]
#[error("{probe} probe failed {failures} times: {last}")]
pub struct ProbeGaveUp {
    probe: &'static str,
    failures: u32,
    /// The last attempt's message (an exec probe's output, an HTTP status).
    last: String,
}

/// Probes every period until `failureThreshold` failures in a row (`Err`), or, for a startup
/// probe, until the first success (`Ok`). A liveness probe forgets failures on success.
async fn probe_until(
    p: &Probe,
    probe: &'static str,
    target: &ActionTarget,
    events: &mpsc::UnboundedSender<ProbeEvent>,
) -> Result<(), ProbeGaveUp> {
    tokio::time::sleep(secs(p.initial_delay_seconds)).await;
    let mut failures = 0;
    loop {
        match actions::run(&p.handler, target, secs(p.timeout_seconds)).await {
            Ok(_) if probe == "startup" => return Ok(()),
            Ok(_) => failures = 0,
            Err(e) => {
                let msg = e.message();
                failures += 1;
                let _ = events.send(ProbeEvent::Failed {
                    probe,
                    message: msg.clone(),
                });
                if failures >= p.failure_threshold {
                    return Err(ProbeGaveUp {
                        probe,
                        failures,
                        last: msg,
                    });
                }
            }
        }
        tokio::time::sleep(secs(p.period_seconds)).await;
    }
}

/// Reports readiness changes: ready after `successThreshold` successes in a row, not ready after
/// `failureThreshold` failures in a row. A container starts not ready.
async fn readiness_loop(p: Probe, target: ActionTarget, events: mpsc::UnboundedSender<ProbeEvent>) {
    tokio::time::sleep(secs(p.initial_delay_seconds)).await;
    let (mut ready, mut successes, mut failures) = (false, 0, 0);
    loop {
        match actions::run(&p.handler, &target, secs(p.timeout_seconds)).await {
            Ok(_) => {
                successes += 1;
                failures = 0;
                if !ready && successes >= p.success_threshold {
                    ready = true;
                    let _ = events.send(ProbeEvent::Ready(true));
                }
            }
            Err(e) => {
                failures += 1;
                successes = 0;
                let _ = events.send(ProbeEvent::Failed {
                    probe: "readiness",
                    message: e.message(),
                });
                if ready && failures >= p.failure_threshold {
                    ready = false;
                    let _ = events.send(ProbeEvent::Ready(false));
                }
            }
        }
        tokio::time::sleep(secs(p.period_seconds)).await;
    }
}
