//! Everything that crosses the process boundary between a pod's `wpod run` and the CLI in
//! another shell, as one set of serde types that writer and reader share (as youki's `State`):
//!
//! - [`Record`]: one line of the pod's event journal (`events.jsonl`) and of `wpod run
//!   --output json` (events, the final summary; container output is [`crate::logs::LogRecord`]).
//!   `wpod ps`, `wpod events` and `wpod describe` read the journal back as these types, and
//!   `wpod run`, `wpod events` and `wpod describe` print an event with one renderer
//!   ([`EventRecord::text`]).
//! - [`Request`] and [`Answer`]: the control socket's protocol (`control.rs`), with
//!   [`PodDescription`] (`describe`) and [`ApplyReport`] (`apply`) as results.
//! - [`PodView`] and [`ContainerView`]: a pod's state as its journal tells it (`journal.rs`).
//!
//! Every record carries [`VERSION`]; a reader refuses a newer one with a message that names
//! it, rather than misreading it. Records written before the field existed have the same
//! shape as version 1 and read as it.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::grants::report::Action;
use crate::plan::{Network, Role};
use crate::spec::RestartPolicy;
use crate::status::ExitInfo;

/// The version of every type here that this wpod writes and reads.
pub const VERSION: u32 = 1;

fn version_1() -> u32 {
    1
}

/// One JSON line of the journal, or of `wpod run --output json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Record {
    Event(EventRecord),
    /// The journal's first line after a rotation: the state folded so far.
    Snapshot(Snapshot),
    /// `wpod run --output json`'s last line: the final per-container table.
    Summary(Summary),
    /// A line of container output (`wpod run --output json` only: logs have files of their own).
    Log(crate::logs::LogRecord),
}

impl Record {
    /// The version it was written with (output lines have none: they are never read back).
    pub fn version(&self) -> u32 {
        match self {
            Record::Event(e) => e.version,
            Record::Snapshot(s) => s.version,
            Record::Summary(s) => s.version,
            Record::Log(_) => VERSION,
        }
    }
}

/// Something that happened to the pod or one of its containers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    #[serde(default = "version_1")]
    pub version: u32,
    /// RFC 3339, milliseconds.
    pub time: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

impl EventRecord {
    /// `TIME pod/NAME WHAT` or `TIME container/NAME WHAT`, as `wpod run` prints it, escaped:
    /// messages carry a container's words (an exec probe's output) and a registry's (pull
    /// errors), and JSON escapes neither C1 controls nor bidi overrides.
    pub fn text(&self) -> String {
        let who = match &self.container {
            Some(c) => format!("container/{c}"),
            None => format!("pod/{}", self.pod),
        };
        let line = format!("{} {who} {}", self.time, self.event.text());
        crate::logs::escape_controls(&line).into_owned()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default = "version_1")]
    pub version: u32,
    pub time: String,
    pub pod: String,
    pub view: PodView,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default = "version_1")]
    pub version: u32,
    pub pod: String,
    pub containers: Vec<ContainerSummary>,
}

/// One row of the final table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub name: String,
    pub restarts: u32,
    pub exit: Option<ExitInfo>,
    /// Set when it ended waiting to be restarted (`CrashLoopBackOff`).
    pub waiting: Option<String>,
}

impl ContainerSummary {
    pub fn new(name: &str) -> Self {
        ContainerSummary {
            name: name.to_string(),
            restarts: 0,
            exit: None,
            waiting: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The pod's containers, in the order they start, before anything of it runs (its images
    /// may still be pulled): `wpod ps` lists every one from then on.
    PodPlanned {
        containers: Vec<PlannedContainer>,
    },
    /// The pod's sandbox exists; containers are about to start.
    PodStarted {
        hostname: String,
        /// `cni`, `loopback` (`wpod.dev/network: none`) or `host` (`hostNetwork`).
        network: Network,
        /// Its address on its network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Started {
        pid: Option<i32>,
        restarts: u32,
        /// Its image as shown: `host`, a component's file name, `REF@DIGEST` once pulled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
    },
    Ready,
    NotReady,
    /// One failed probe attempt.
    ProbeFailed {
        probe: String,
        message: String,
    },
    /// A startup or liveness probe gave up: the container is killed and restarted per policy.
    Unhealthy {
        message: String,
    },
    HookFailed {
        hook: String,
        message: String,
    },
    /// The container will be restarted after this delay (kubelet's back-off).
    #[serde(rename_all = "camelCase")]
    BackOff {
        restart_in_ms: u64,
        restarts: u32,
    },
    Exited(ExitInfo),
    FailedToStart {
        error: String,
    },
    /// The pod is stopping; containers have this long to exit.
    #[serde(rename_all = "camelCase")]
    PodStopping {
        reason: String,
        grace_seconds: i64,
    },
    Killed,
    /// A Wasm sidecar that cannot hear the `stopping` event was stopped as soon as its turn
    /// to stop came, as SIGTERM ends a process without a handler for it.
    StoppedAtOnce,
    /// A Wasm sidecar's component is compiled (it is not in the cache yet): the first run of
    /// a new component waits for this.
    #[serde(rename_all = "camelCase")]
    Compiling {
        component: String,
        size_bytes: u64,
    },
    /// It was compiled, and cached for later runs.
    #[serde(rename_all = "camelCase")]
    Compiled {
        component: String,
        seconds: f64,
    },
    /// Pulling the container's image (kubelet's `Pulling`).
    Pulling {
        image: String,
        from: String,
    },
    /// kubelet's `Pulled`.
    Pulled {
        image: String,
        digest: String,
        size: u64,
        seconds: f64,
    },
    /// The stored image is used (`IfNotPresent`, `Never`).
    #[serde(rename_all = "camelCase")]
    AlreadyPresent {
        image: String,
    },
    /// A mirror failed; the next source is tried.
    MirrorFailed {
        mirror: String,
        message: String,
    },
    /// kubelet's `ErrImagePull`: the pod does not start.
    ErrImagePull {
        image: String,
        message: String,
    },
    /// A pulled image that wpod's review refused (a sidecar not approved, a kind changed):
    /// not a pull failure, and no retry helps.
    ImageRefused {
        image: String,
        message: String,
    },
    /// The kubelet's `ImagePullBackOff`: the pull is tried again in this long (10 s doubling
    /// to 5 min), the pod waiting.
    #[serde(rename_all = "camelCase")]
    ImagePullBackOff {
        image: String,
        retry_in_ms: u64,
    },
    Warning {
        message: String,
    },
    /// A Wasm sidecar was refused a connect, listen or lookup its grants do not allow
    /// (rate-limited: `total` counts every refusal of the container so far).
    Denied {
        action: Action,
        target: String,
        field: String,
        message: String,
        total: u64,
        suppressed: u64,
    },
    /// Under `--audit`: a sidecar used this for the first time.
    Audited {
        class: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// Under `--audit`, when the pod ends: the narrowest grant for what the sidecar did.
    #[serde(rename_all = "camelCase")]
    AuditSummary {
        outbound: Vec<String>,
        listens: Vec<u16>,
        /// The annotation to write (`wpod.dev/allowed-outbound.<container>`).
        annotation: String,
        /// The host interfaces it called.
        calls: Vec<String>,
        /// Its volumes it read and never wrote: they could be mounted `readOnly: true`.
        read_only: Vec<String>,
        denied: u64,
    },
    /// `wpod apply` changed the pod's Wasm sidecars live: the replaced ones have stopped and
    /// their successors started; the removed ones are gone from the pod.
    PodChanged {
        added: Vec<String>,
        replaced: Vec<String>,
        removed: Vec<String>,
        /// Projected volumes whose files were written again (new ConfigMaps or Secrets).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refreshed: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    PodFinished {
        exit_code: i32,
    },
}

impl Event {
    /// What a `wpod __pull` helper may report for the pod (`control.rs`): nothing else of
    /// what it prints is taken.
    pub fn is_pull(&self) -> bool {
        matches!(
            self,
            Event::Pulling { .. }
                | Event::Pulled { .. }
                | Event::AlreadyPresent { .. }
                | Event::MirrorFailed { .. }
                | Event::ErrImagePull { .. }
                | Event::ImagePullBackOff { .. }
                | Event::ImageRefused { .. }
                | Event::Warning { .. }
        )
    }

    /// The event in words (not escaped: see [`EventRecord::text`]).
    pub fn text(&self) -> String {
        match self {
            Event::PodPlanned { containers } => {
                let list: Vec<String> = containers
                    .iter()
                    .map(|c| {
                        let role = match c.role {
                            crate::spec::Role::Init => "init, ",
                            crate::spec::Role::NativeSidecar => "sidecar, ",
                            crate::spec::Role::Regular => "",
                        };
                        format!("{} ({role}{})", c.name, c.image)
                    })
                    .collect();
                format!("containers: {}", list.join(", "))
            }
            Event::PodStarted {
                hostname,
                network,
                ip,
            } => match (network, ip) {
                (_, Some(ip)) => format!("sandbox ready (hostname {hostname}, IP {ip})"),
                (Network::Host, None) => "sandbox ready (on the host's network)".to_string(),
                (Network::Pasta, None) => {
                    format!("sandbox ready (hostname {hostname}, the host's network through pasta)")
                }
                (_, None) => format!("sandbox ready (hostname {hostname}, loopback only)"),
            },
            Event::Started { pid, restarts, .. } => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                let again = match restarts {
                    0 => String::new(),
                    n => format!(", restart {n}"),
                };
                format!("started{pid}{again}")
            }
            Event::Ready => "ready".to_string(),
            Event::NotReady => "not ready".to_string(),
            Event::ProbeFailed { probe, message } => format!("{probe} probe failed: {message}"),
            // Restarted or not, as its policy says: the events after it tell.
            Event::Unhealthy { message } => format!("unhealthy, stopping it: {message}"),
            Event::HookFailed { hook, message } => format!("{hook} hook failed: {message}"),
            Event::BackOff {
                restart_in_ms,
                restarts,
            } => format!(
                "back-off: restart {restarts} in {:.1}s",
                *restart_in_ms as f64 / 1000.0
            ),
            Event::Exited(x) => {
                let said = match x.signal {
                    Some(sig) => format!("exited with code {} (signal {sig}, {})", x.code, x.reason),
                    None => format!("exited with code {} ({})", x.code, x.reason),
                };
                match &x.message {
                    // One line: the message's own lines joined, escaped, shortened.
                    Some(m) => {
                        let one: String = m.trim_end().chars().take(200).collect();
                        format!("{said}: {:?}", one)
                    }
                    None => said,
                }
            }
            Event::FailedToStart { error } => format!("failed to start: {error}"),
            Event::PodStopping {
                reason,
                grace_seconds,
            } => format!("stopping ({reason}; grace period {grace_seconds}s)"),
            Event::Killed => "killed at the end of the grace period".to_string(),
            Event::StoppedAtOnce => "stopped at once: it does not listen for the stopping event \
                (wpod:sidecar/lifecycle next-event), as a process without a SIGTERM handler ends \
                on SIGTERM"
                .to_string(),
            Event::Compiling {
                component,
                size_bytes,
            } => format!(
                "compiling {component} ({}), first run only: later runs load it from the cache \
                 (`wpod compile` does this ahead of time)",
                crate::spec::quantity::show_bytes(*size_bytes)
            ),
            Event::Compiled { component, seconds } => {
                format!("compiled {component} in {seconds:.1}s")
            }
            Event::Pulling { image, from } => format!("pulling image \"{image}\" from {from}"),
            Event::Pulled {
                image,
                digest,
                size,
                seconds,
            } => format!(
                "successfully pulled image \"{image}\" ({digest}) in {seconds:.1}s; image size {size} bytes"
            ),
            Event::AlreadyPresent { image } => {
                format!("container image \"{image}\" already present on machine")
            }
            Event::MirrorFailed { mirror, message } => {
                format!("mirror {mirror} failed, trying the next source: {message}")
            }
            Event::ErrImagePull { image, message } => {
                format!("failed to pull image \"{image}\" (ErrImagePull): {message}")
            }
            Event::ImageRefused { image, message } => {
                format!("image \"{image}\" refused: {message}")
            }
            Event::ImagePullBackOff { image, retry_in_ms } => format!(
                "back-off pulling image \"{image}\" (ImagePullBackOff): next try in {:.1}s",
                *retry_in_ms as f64 / 1000.0
            ),
            Event::Warning { message } => format!("warning: {message}"),
            Event::Denied {
                message,
                total,
                suppressed,
                ..
            } => match suppressed {
                0 => message.clone(),
                n => format!("{message} ({n} more refusals not shown; {total} in all)"),
            },
            Event::Audited { class, target, via } => match via {
                Some(v) => format!("audit: {class} {target} (as {v})"),
                None => format!("audit: {class} {target}"),
            },
            Event::AuditSummary {
                outbound,
                listens,
                annotation,
                calls,
                read_only,
                denied,
            } => {
                let outbound = match outbound.is_empty() {
                    true => "no outbound connection".to_string(),
                    false => format!("{annotation}: \"{}\"", outbound.join(",")),
                };
                let listens = match listens.is_empty() {
                    true => "no listening port".to_string(),
                    false => format!(
                        "ports: [{}]",
                        listens
                            .iter()
                            .map(|p| format!("{{containerPort: {p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                let read_only = match read_only.is_empty() {
                    true => String::new(),
                    false => format!("; readOnly: true would do for {}", read_only.join(", ")),
                };
                format!(
                    "audit: the narrowest grant for this run: {outbound}; {listens}{read_only}; {denied} refusals; called {}",
                    calls.join(", ")
                )
            }
            Event::PodChanged {
                added,
                replaced,
                removed,
                refreshed,
            } => {
                let part = |verb: &str, names: &[String]| {
                    (!names.is_empty()).then(|| format!("{verb} {}", names.join(", ")))
                };
                let parts: Vec<String> = [
                    part("added", added),
                    part("replaced", replaced),
                    part("removed", removed),
                    part("updated the files of volume", refreshed),
                ]
                .into_iter()
                .flatten()
                .collect();
                format!("applied: {}", parts.join("; "))
            }
            Event::PodFinished { exit_code } => format!("finished with exit code {exit_code}"),
        }
    }
}

/// Where a pod stands, as `wpod ps` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Its sandbox is being made (images pulled, namespaces made).
    #[default]
    Starting,
    Running,
    Stopping,
    /// Its journal says it ended.
    Finished,
    /// Its state directory is there but no `wpod run` holds it (the run was killed).
    Lost,
    /// Only its logs and journal are left.
    Exited,
}

impl std::fmt::Display for PodPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Where a container stands, as its events tell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerState {
    #[default]
    Waiting,
    Running,
    Exited,
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerState::Waiting => "waiting",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        })
    }
}

/// A container as its events tell it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub state: ContainerState,
    pub ready: bool,
    pub restarts: u32,
    pub pid: Option<i32>,
    pub exit_code: Option<i64>,
    /// How it last ended (`Completed`, `Error`, `OOMKilled`...) and its termination message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub image: Option<String>,
    /// How its last run ended (`Error`, `OOMKilled`...), also while it waits to restart
    /// (kubectl's `lastState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_reason: Option<String>,
}

/// One container as the pod plans it ([`Event::PodPlanned`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlannedContainer {
    pub name: String,
    pub role: crate::spec::Role,
    /// As `ps` shows it ([`crate::plan::ContainerPlan::shown_image`]).
    pub image: String,
}

/// A pod as its events tell it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    /// RFC 3339 time of its `podStarted` event.
    pub started: Option<String>,
    /// Its address on its network, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub phase: PodPhase,
    pub exit_code: Option<i64>,
    pub containers: Vec<ContainerView>,
    /// Its run-to-completion init containers, by name: until each has ended well, the others
    /// wait in `PodInitializing` (kept through the journal's rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<String>,
}

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    Describe {},
    Apply {
        file: PathBuf,
        /// Files of ConfigMaps, Secrets and claims beside the manifest (`--configmap`).
        #[serde(default, rename = "configMaps", skip_serializing_if = "Vec::is_empty")]
        objects: Vec<PathBuf>,
        #[serde(default, rename = "dryRun")]
        dry_run: bool,
    },
}

/// A request as it is sent: the operation with the version beside it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestLine {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// The answer to a request: `result` when `ok`, else `error`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer<T> {
    pub version: u32,
    pub ok: bool,
    // (Missing options read as `None` without `default`, which would ask `T: Default`.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<T> Answer<T> {
    /// The answer for `result`: its error in words, with its causes.
    pub fn of<E: std::error::Error>(result: Result<T, E>) -> Self {
        let result = result.map_err(|e| crate::error::chain(&e));
        match result {
            Ok(r) => Answer {
                version: VERSION,
                ok: true,
                result: Some(r),
                error: None,
            },
            Err(e) => Answer {
                version: VERSION,
                ok: false,
                result: None,
                error: Some(e),
            },
        }
    }
}

/// Only the version of an answer, read first so that another version is named rather than
/// misread.
#[derive(Debug, Deserialize)]
pub struct Versioned {
    pub version: Option<u64>,
}

/// Where the pod's supervisor stands (`supervisor::Phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorPhase {
    Starting,
    Running,
    Stopping,
}

/// `describe`: the running pod's plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDescription {
    pub pod: String,
    pub phase: SupervisorPhase,
    /// The `wpod run` that holds it.
    pub pid: u32,
    pub grace_period_seconds: u64,
    pub share_process_namespace: bool,
    /// The host IDs of the pod's own user namespace (`hostUsers: false`); absent: the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<crate::sandbox::userns::IdMap>,
    pub host_ports: Vec<HostPortView>,
    pub containers: Vec<ContainerDescription>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPortView {
    pub container: String,
    #[serde(rename = "hostIP")]
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// A container's place, image and, for a Wasm sidecar, what it is granted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDescription {
    pub name: String,
    /// Where it is declared (`spec.containers[0]`).
    pub path: String,
    pub role: Role,
    pub image: String,
    pub restart_policy: RestartPolicy,
    /// A Wasm sidecar's component digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
}

/// `apply`: each change and, once applied, where each started sidecar is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub pod: String,
    pub dry_run: bool,
    pub unchanged: bool,
    /// The pod was not running: `wpod apply` starts it (`--dry-run` says it would).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    pub added: Vec<Applied>,
    pub replaced: Vec<Applied>,
    pub removed: Vec<String>,
    /// Projected volumes whose files were (or, in a dry run, would be) written again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refreshed: Vec<String>,
}

/// A sidecar an apply added or replaced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub name: String,
    /// What changed (replacements only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Unset in a dry run.
    pub state: Option<StartState>,
}

/// Where a sidecar an apply started stands when the apply answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartState {
    Started,
    Ended,
    /// Not started within `control::START_TIMEOUT`.
    Starting,
}

impl std::fmt::Display for StartState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartState::Started => "started",
            StartState::Ended => "ended",
            StartState::Starting => "starting",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer writes, the reader reads: every kind of record, round trip.
    #[test]
    fn records_read_back_as_written() {
        let events = [
            Event::PodPlanned {
                containers: vec![PlannedContainer {
                    name: "web".into(),
                    role: crate::spec::Role::Regular,
                    image: "nginx:1.25".into(),
                }],
            },
            Event::PodStarted {
                hostname: "web".into(),
                network: Network::Cni,
                ip: Some("10.88.0.2".into()),
            },
            Event::Started {
                pid: Some(42),
                restarts: 1,
                image: Some("nginx:1.25@sha256:ab".into()),
            },
            Event::Exited(ExitInfo::exited(3)),
            Event::Pulled {
                image: "nginx".into(),
                digest: "sha256:ab".into(),
                size: 7,
                seconds: 2.0,
            },
            Event::Denied {
                action: Action::Connect,
                target: "198.51.100.1:80".into(),
                field: "f".into(),
                message: "m".into(),
                total: 3,
                suppressed: 1,
            },
            Event::PodFinished { exit_code: 0 },
        ];
        for event in events {
            let record = Record::Event(EventRecord {
                version: VERSION,
                time: "2026-12-05T10:00:00.000Z".into(),
                pod: "p".into(),
                container: Some("c".into()),
                event,
            });
            let line = serde_json::to_string(&record).unwrap();
            let back: Record = serde_json::from_str(&line).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), line);
        }
    }

    /// A journal line from before the version field reads as version 1; `wpod run --output
    /// json`'s shape (`type`, `event`, fields beside them) is unchanged.
    #[test]
    fn the_wire_format_is_the_documented_one() {
        let line = r#"{"time":"t","type":"event","pod":"p","container":"c","event":"exited","code":137,"signal":9,"reason":"Error"}"#;
        let Record::Event(e) = serde_json::from_str::<Record>(line).unwrap() else {
            panic!("not an event");
        };
        assert_eq!(e.version, 1);
        assert!(matches!(e.event, Event::Exited(ExitInfo { code: 137, .. })));
        assert_eq!(
            e.text(),
            "t container/c exited with code 137 (signal 9, Error)"
        );
        let v: serde_json::Value = serde_json::to_value(Record::Event(e)).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"], "exited");
        assert_eq!(v["code"], 137);
        assert_eq!(v["version"], VERSION);
    }

    /// A pod started by the wpod before these types (same protocol version) answers
    /// `describe` in words this one reads: a wpod upgraded while detached pods run still
    /// describes them.
    #[test]
    fn a_pod_run_by_the_previous_wpod_is_still_described() {
        let old = r#"{"version":1,"ok":true,"result":{"pod":"p","phase":"Running","pid":7,
            "gracePeriodSeconds":30,"shareProcessNamespace":false,
            "hostPorts":[{"container":"web","hostIP":"127.0.0.1","hostPort":8080,"containerPort":80}],
            "containers":[{"name":"tail","path":"spec.initContainers[0]","role":"sidecar",
            "image":"/x/tail.wasm","restartPolicy":"Always","component":"sha256:ab",
            "grants":["reads /logs"]}]}}"#;
        let answer: Answer<PodDescription> = serde_json::from_str(old).unwrap();
        let described = answer.result.unwrap();
        assert_eq!(described.containers[0].role, Role::NativeSidecar);
        assert_eq!(described.phase, SupervisorPhase::Running);
        assert_eq!(described.host_ports[0].host_port, 8080);
    }

    #[test]
    fn requests_carry_their_version_beside_the_operation() {
        let line = serde_json::to_string(&RequestLine {
            version: VERSION,
            request: Request::Apply {
                file: "/p.yaml".into(),
                objects: Vec::new(),
                dry_run: true,
            },
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"op":"apply","file":"/p.yaml","dryRun":true}"#
        );
    }

    #[test]
    fn escapes_what_a_container_wrote() {
        let e = EventRecord {
            version: VERSION,
            time: "t".into(),
            pod: "p".into(),
            container: None,
            event: Event::Warning {
                message: "\u{1b}[2Jgone\u{202e}".into(),
            },
        };
        assert_eq!(e.text(), "t pod/p warning: \\x1b[2Jgone\\u{202e}");
    }
}
