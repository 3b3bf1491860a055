//! What a running pod knows about itself: its main containers' state, readiness, the lifecycle
//! events Wasm sidecars can wait on, and how each container ended. Written by the supervisor and
//! the container runners, read by the sidecars' `main-process` and `lifecycle` grants; it sits
//! below all of them and depends on none.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainState {
    Waiting,
    Running,
    Exited,
}

/// One main (regular) container.
#[derive(Clone, Debug)]
pub struct MainStatus {
    pub name: String,
    /// Host PID of its process; 0 when not running.
    pub pid: i32,
    pub state: MainState,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    /// The process's start time (clock ticks after boot) when the process was found rather
    /// than started (a runner container's view): with a PID that the tracker does not reap,
    /// the PID alone could name a later process, so a signal checks both.
    pub start: Option<u64>,
}

/// The exit code a `main-exited` event carries when the code cannot be known
/// ([`PodState::vanished`]).
pub const UNKNOWN_EXIT: i32 = -1;

#[derive(Clone, Debug)]
pub enum PodEvent {
    MainStarted(String),
    MainExited(String, i32),
}

pub struct PodState {
    mains: Mutex<Vec<MainStatus>>,
    events: broadcast::Sender<PodEvent>,
    ready: watch::Sender<HashSet<String>>,
}

impl PodState {
    pub fn new(main_names: impl IntoIterator<Item = String>) -> Arc<Self> {
        let mains = main_names
            .into_iter()
            .map(|name| MainStatus {
                name,
                pid: 0,
                state: MainState::Waiting,
                exit_code: None,
                restarts: 0,
                start: None,
            })
            .collect();
        Arc::new(PodState {
            mains: Mutex::new(mains),
            events: broadcast::channel(256).0,
            ready: watch::channel(HashSet::new()).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<MainStatus>> {
        self.mains.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mains(&self) -> Vec<MainStatus> {
        self.lock().clone()
    }

    pub fn main(&self, name: &str) -> Option<MainStatus> {
        self.lock().iter().find(|m| m.name == name).cloned()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut MainStatus)) -> bool {
        match self.lock().iter_mut().find(|m| m.name == name) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        }
    }

    /// A container started; only main containers are tracked and announced.
    pub fn started(&self, name: &str, pid: i32) {
        self.found(name, pid, None)
    }

    /// A container's process found running, by its PID and `start` time (see
    /// [`MainStatus::start`]); as [`PodState::started`] otherwise.
    pub fn found(&self, name: &str, pid: i32, start: Option<u64>) {
        let restarted = |m: &mut MainStatus| {
            if m.state == MainState::Exited {
                m.restarts += 1;
            }
            m.pid = pid;
            m.start = start;
            m.state = MainState::Running;
            m.exit_code = None;
        };
        if self.update(name, restarted) {
            let _ = self.events.send(PodEvent::MainStarted(name.to_string()));
        }
    }

    pub fn exited(&self, name: &str, code: i32) {
        let done = |m: &mut MainStatus| {
            m.pid = 0;
            m.start = None;
            m.state = MainState::Exited;
            m.exit_code = Some(code);
        };
        if self.update(name, done) {
            let _ = self
                .events
                .send(PodEvent::MainExited(name.to_string(), code));
        }
    }

    /// A main container's process is gone and how it ended cannot be known (a runner
    /// container on Kubernetes sees the process, not its exit status): its state is `Exited`
    /// without an exit code, and the event carries [`UNKNOWN_EXIT`].
    pub fn vanished(&self, name: &str) {
        let done = |m: &mut MainStatus| {
            m.pid = 0;
            m.start = None;
            m.state = MainState::Exited;
            m.exit_code = None;
        };
        if self.update(name, done) {
            let _ = self
                .events
                .send(PodEvent::MainExited(name.to_string(), UNKNOWN_EXIT));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PodEvent> {
        self.events.subscribe()
    }

    /// A sidecar called `lifecycle.ready()`.
    pub fn set_ready(&self, name: &str) {
        self.ready.send_modify(|r| {
            r.insert(name.to_string());
        });
    }

    /// Forgets that a container was ready (it is starting again).
    pub fn clear_ready(&self, name: &str) {
        self.ready.send_modify(|r| {
            r.remove(name);
        });
    }

    pub fn watch_ready(&self) -> watch::Receiver<HashSet<String>> {
        self.ready.subscribe()
    }
}

/// Why a container ended, in Kubernetes' words (`kubectl get pod` shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    Completed,
    Error,
    OOMKilled,
    /// A Wasm sidecar trapped.
    Trapped,
    /// The container could not be started.
    StartError,
    /// Its postStart hook failed, so it was killed.
    FailedPostStartHook,
    /// Written by wpod before 0.1 reported a container killed for a failed probe as Kubernetes
    /// does (`Completed`/`Error` with its exit code, and an `unhealthy` event); read from the
    /// journals of pods it ran.
    Unhealthy,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
            ExitReason::Trapped => "Trapped",
            ExitReason::StartError => "StartError",
            ExitReason::FailedPostStartHook => "FailedPostStartHook",
            ExitReason::Unhealthy => "Unhealthy",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a container (a process or a Wasm sidecar) ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// Exit code; 128 + signal number when killed by a signal (as a shell reports it).
    pub code: i32,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    /// Kubernetes' termination message: what the container wrote to its
    /// `terminationMessagePath`, or (`FallbackToLogsOnError`, on an error) the end of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExitInfo {
    /// A program that returned `code`.
    pub fn exited(code: i32) -> Self {
        ExitInfo {
            code,
            signal: None,
            reason: if code == 0 {
                ExitReason::Completed
            } else {
                ExitReason::Error
            },
            message: None,
        }
    }

    /// Ended by a stop request it could not handle, as a process without a SIGTERM handler
    /// ends on SIGTERM: 143.
    pub fn terminated() -> Self {
        ExitInfo {
            code: 128 + libc::SIGTERM,
            signal: Some(libc::SIGTERM),
            reason: ExitReason::Error,
            message: None,
        }
    }

    /// Killed with SIGKILL (a forced stop).
    pub fn killed() -> Self {
        ExitInfo {
            code: 128 + libc::SIGKILL,
            signal: Some(libc::SIGKILL),
            reason: ExitReason::Error,
            message: None,
        }
    }

    pub fn from_status(status: std::process::ExitStatus, oom_killed: bool) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
        // An OOM kill in the container's cgroup counts as its end only if it ended in failure:
        // an exec probe or hook killed there does not make a clean exit `OOMKilled`.
        let reason = if oom_killed && code != 0 {
            ExitReason::OOMKilled
        } else if code == 0 {
            ExitReason::Completed
        } else {
            ExitReason::Error
        };
        ExitInfo {
            code,
            signal,
            reason,
            message: None,
        }
    }
}
