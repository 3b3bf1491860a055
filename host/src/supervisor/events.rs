//! What `wpod run` reports about the pod: state changes with timestamps, as text on stderr or as
//! JSON lines on stdout (`--output json`), and the final per-container table.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::logs::OutputFormat;
use crate::status::ExitInfo;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The pod's sandbox exists; containers are about to start.
    PodStarted {
        hostname: String,
        /// `cni`, `loopback` (`wpod.dev/network: none`) or `host` (`hostNetwork`).
        network: crate::plan::Network,
        /// Its address on its network.
        #[serde(skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Started {
        pid: Option<i32>,
        restarts: u32,
    },
    Ready,
    NotReady,
    /// One failed probe attempt.
    ProbeFailed {
        probe: &'static str,
        message: String,
    },
    /// A startup or liveness probe gave up: the container is killed and restarted per policy.
    Unhealthy {
        message: String,
    },
    HookFailed {
        hook: &'static str,
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
    Warning {
        message: String,
    },
    /// A Wasm sidecar was refused a connect, listen or lookup its grants do not allow
    /// (rate-limited: `total` counts every refusal of the container so far).
    Denied {
        action: crate::grants::report::Action,
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
        #[serde(skip_serializing_if = "Option::is_none")]
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
    },
    #[serde(rename_all = "camelCase")]
    PodFinished {
        exit_code: i32,
    },
}

impl Events {
    fn journal_write(&self, time: &str, container: Option<&str>, event: &Event) {
        let record = Record {
            time: time.to_string(),
            kind: "event",
            pod: &self.pod,
            container,
            event,
        };
        let Ok(line) = serde_json::to_string(&record) else {
            return;
        };
        let mut guard = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let j = &mut *guard;
        match &mut j.file {
            Some(f) => {
                if writeln!(f, "{line}").is_ok() {
                    j.written += line.len() as u64 + 1;
                }
                if j.written > super::journal::MAX_JOURNAL_BYTES {
                    if let Err(e) = j.rotate(&self.pod, time) {
                        tracing::warn!(error = %e, "cannot rotate the event journal");
                        j.written = 0;
                    }
                }
            }
            // Bounded: only what happens before the sandbox exists (pulls) waits here.
            None if j.early.len() < 1000 => j.early.push(line),
            None => {}
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    pod: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event,
}

pub struct Events {
    pod: String,
    format: OutputFormat,
    /// Held back instead of reported (an apply's events until the change is accepted).
    captured: Option<std::sync::Mutex<Vec<(Option<String>, Event)>>>,
    /// The pod's event journal (`events.jsonl` in its state directory), once it exists: what
    /// `wpod ps` reads. Events before it (the pulls) are kept and written first.
    journal: std::sync::Mutex<Journal>,
}

#[derive(Default)]
struct Journal {
    file: Option<std::fs::File>,
    path: Option<std::path::PathBuf>,
    /// Bytes in the current file.
    written: u64,
    early: Vec<String>,
}

impl Journal {
    /// Moves the journal to `events.jsonl.1` and starts a new one with the state folded so
    /// far (see `journal.rs`). A reader (`wpod ps` from another shell) always finds a whole
    /// journal at the path: the new file is written aside and renamed over it.
    fn rotate(&mut self, pod: &str, time: &str) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let old = super::journal::rotated(&path);
        let view = super::journal::read(pod, &path);
        #[derive(Serialize)]
        struct Snapshot<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            time: &'a str,
            pod: &'a str,
            view: super::journal::PodView,
        }
        let snapshot = serde_json::to_string(&Snapshot {
            kind: "snapshot",
            time,
            pod,
            view,
        })
        .map_err(std::io::Error::other)?;
        let line = format!("{snapshot}\n");
        debug_assert!(super::journal::is_snapshot(&line));
        let fresh = path.with_extension("jsonl.new");
        let linked = path.with_extension("jsonl.old");
        let _ = std::fs::remove_file(&fresh);
        let _ = std::fs::remove_file(&linked);
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&fresh)?;
        file.write_all(line.as_bytes())?;
        // The full journal becomes the rotated one while it is still at its path, then the
        // new one takes its place.
        std::fs::hard_link(&path, &linked)?;
        std::fs::rename(&linked, &old)?;
        std::fs::rename(&fresh, &path)?;
        self.written = line.len() as u64;
        self.file = Some(file);
        Ok(())
    }
}

/// The name of a pod's event journal in its state directory.
pub const JOURNAL: &str = "events.jsonl";

impl Events {
    pub fn new(pod: &str, format: OutputFormat) -> Self {
        Events {
            pod: pod.to_string(),
            format,
            captured: None,
            journal: Default::default(),
        }
    }

    /// Events that are only held, to be [`Events::replay`]ed into the pod's once what they
    /// belong to happens (a refused `wpod apply` leaves no trace of its containers).
    pub fn capturing(pod: &str) -> Self {
        Events {
            captured: Some(Default::default()),
            ..Events::new(pod, OutputFormat::Silent)
        }
    }

    /// What a capturing `Events` held.
    pub fn take_captured(&self) -> Vec<(Option<String>, Event)> {
        match &self.captured {
            Some(c) => std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    /// Reports events another `Events` held.
    pub fn replay(&self, events: Vec<(Option<String>, Event)>) {
        for (container, event) in events {
            self.emit(container.as_deref(), event);
        }
    }

    /// From now on every event is also appended, as a JSON line, to `path`.
    pub fn journal_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
        for line in j.early.drain(..) {
            writeln!(file, "{line}")?;
            written += line.len() as u64 + 1;
        }
        j.written = written;
        j.file = Some(file);
        j.path = Some(path.to_path_buf());
        Ok(())
    }

    pub fn emit(&self, container: Option<&str>, event: Event) {
        if let Some(c) = &self.captured {
            let mut held = c.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: an apply's pulls say a few things per container.
            if held.len() < 10_000 {
                held.push((container.map(str::to_string), event));
            }
            return;
        }
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.journal_write(&time, container, &event);
        match self.format {
            OutputFormat::Silent => {}
            OutputFormat::Json => {
                let record = Record {
                    time,
                    kind: "event",
                    pod: &self.pod,
                    container,
                    event: &event,
                };
                if let Ok(json) = serde_json::to_string(&record) {
                    let _ = writeln!(std::io::stdout().lock(), "{json}");
                }
            }
            OutputFormat::Text => {
                let who = container
                    .map_or_else(|| format!("pod/{}", self.pod), |c| format!("container/{c}"));
                // Messages carry a container's words (an exec probe's output) and a registry's
                // (pull errors): the whole line is escaped.
                let line = format!("{time} {who} {}", describe(&event));
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{}",
                    crate::logs::escape_controls(&line)
                );
            }
        }
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::PodStarted {
            hostname,
            network,
            ip,
        } => match (network, ip) {
            (_, Some(ip)) => format!("sandbox ready (hostname {hostname}, IP {ip})"),
            (crate::plan::Network::Host, None) => {
                format!("sandbox ready (on the host's network)")
            }
            (_, None) => format!("sandbox ready (hostname {hostname}, loopback only)"),
        },
        Event::Started { pid, restarts } => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            let again = if *restarts > 0 {
                format!(", restart {restarts}")
            } else {
                String::new()
            };
            format!("started{pid}{again}")
        }
        Event::Ready => "ready".to_string(),
        Event::NotReady => "not ready".to_string(),
        Event::ProbeFailed { probe, message } => format!("{probe} probe failed: {message}"),
        Event::Unhealthy { message } => format!("unhealthy, restarting: {message}"),
        Event::HookFailed { hook, message } => format!("{hook} hook failed: {message}"),
        Event::BackOff {
            restart_in_ms,
            restarts,
        } => {
            format!(
                "back-off: restart {restarts} in {:.1}s",
                *restart_in_ms as f64 / 1000.0
            )
        }
        Event::Exited(x) => match x.signal {
            Some(sig) => format!("exited with code {} (signal {sig}, {})", x.code, x.reason),
            None => format!("exited with code {} ({})", x.code, x.reason),
        },
        Event::FailedToStart { error } => format!("failed to start: {error}"),
        Event::PodStopping {
            reason,
            grace_seconds,
        } => format!("stopping ({reason}; grace period {grace_seconds}s)"),
        Event::Killed => "killed at the end of the grace period".to_string(),
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
        } => {
            let part = |verb: &str, names: &[String]| {
                (!names.is_empty()).then(|| format!("{verb} {}", names.join(", ")))
            };
            let parts: Vec<String> = [
                part("added", added),
                part("replaced", replaced),
                part("removed", removed),
            ]
            .into_iter()
            .flatten()
            .collect();
            format!("applied: {}", parts.join("; "))
        }
        Event::PodFinished { exit_code } => format!("finished with exit code {exit_code}"),
    }
}

/// Sidecars' refusals and audited uses (`grants::report`), as pod events.
pub struct ReportEvents(pub std::sync::Arc<Events>);

impl crate::grants::report::ReportSink for ReportEvents {
    fn denied(
        &self,
        container: &str,
        d: &crate::grants::report::Denial,
        total: u64,
        suppressed: u64,
    ) {
        self.0.emit(
            Some(container),
            Event::Denied {
                action: d.action,
                target: d.target.clone(),
                field: d.field.clone(),
                message: d.message(),
                total,
                suppressed,
            },
        );
    }

    fn used(&self, container: &str, u: &crate::grants::report::Use) {
        self.0.emit(
            Some(container),
            Event::Audited {
                class: u.class.clone(),
                target: u.target.clone(),
                via: u.via.clone(),
            },
        );
    }
}

/// Under `--audit`, when the pod ends: one event per Wasm sidecar with the narrowest grant
/// for what it did.
pub fn audit_summary(
    events: &Events,
    plan: &crate::plan::PodPlan,
    reports: &crate::grants::report::Reporter,
) {
    let seen = reports.summary();
    for c in plan.containers.iter().filter(|c| c.grants.is_some()) {
        let name = c.name();
        let (uses, denied) = seen.get(name).cloned().unwrap_or_default();
        let s = crate::grants::report::suggest(&uses);
        // Only volumes it may write are worth a readOnly.
        let writable: Vec<&str> = c
            .grants
            .as_ref()
            .map(|g| {
                g.fs.mounts
                    .iter()
                    .filter(|m| !m.read_only)
                    .map(|m| m.volume.as_str())
                    .collect()
            })
            .unwrap_or_default();
        events.emit(
            Some(name),
            Event::AuditSummary {
                outbound: s.outbound,
                listens: s.listens,
                annotation: format!("{}{name}", crate::spec::OUTBOUND_PREFIX),
                calls: s.calls,
                read_only: s
                    .read_only
                    .into_iter()
                    .filter(|v| writable.contains(&v.as_str()))
                    .collect(),
                denied,
            },
        );
    }
}

/// One row of the final table.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub name: String,
    pub restarts: u32,
    pub exit: Option<ExitInfo>,
    /// Set when it ended waiting to be restarted (CrashLoopBackOff).
    pub waiting: Option<&'static str>,
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

pub fn print_summary(format: OutputFormat, pod: &str, rows: &[ContainerSummary]) {
    match format {
        OutputFormat::Silent => {}
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Summary<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                pod: &'a str,
                containers: &'a [ContainerSummary],
            }
            if let Ok(json) = serde_json::to_string(&Summary {
                kind: "summary",
                pod,
                containers: rows,
            }) {
                let _ = writeln!(std::io::stdout().lock(), "{json}");
            }
        }
        OutputFormat::Text => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "{:<24} {:>8} {:>9}  REASON",
                "CONTAINER", "RESTARTS", "EXIT CODE"
            );
            for r in rows {
                let (code, reason) = match &r.exit {
                    Some(x) => (x.code.to_string(), r.waiting.unwrap_or(x.reason.as_str())),
                    None => ("-".to_string(), "NotStarted"),
                };
                let _ = writeln!(
                    err,
                    "{:<24} {:>8} {:>9}  {}",
                    crate::logs::escape_controls(&r.name),
                    r.restarts,
                    code,
                    crate::logs::escape_controls(reason)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_never_finds_the_journal_half_rotated() {
        let dir = std::env::temp_dir().join(format!("wpod-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(JOURNAL);
        let events = Events::new("p", OutputFormat::Silent);
        events.journal_to(&path).unwrap();
        events.emit(
            Some("steady"),
            Event::Started {
                pid: Some(1),
                restarts: 0,
            },
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        let (reads, lost) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut reads, mut lost) = (0u64, 0u64);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let view = super::super::journal::read("p", &path);
                    reads += 1;
                    if !view.containers.iter().any(|c| c.name == "steady") {
                        lost += 1;
                    }
                }
                (reads, lost)
            });
            // About 8 rotations' worth of a crash loop's events.
            for i in 0..60_000u32 {
                events.emit(
                    Some("crasher"),
                    Event::BackOff {
                        restart_in_ms: 1,
                        restarts: i,
                    },
                );
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(
            super::super::journal::rotated(&path).exists(),
            "no rotation"
        );
        assert!(reads > 10, "the reader hardly ran ({reads} reads)");
        assert_eq!(lost, 0, "{lost} of {reads} reads found no steady container");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
