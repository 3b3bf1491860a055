//! What `wpod run` reports about the pod: state changes with timestamps, as text on stderr or as
//! JSON lines on stdout (`--output json`), and the final per-container table.

use std::io::Write;
use std::time::SystemTime;

pub use super::api::{ContainerSummary, Event};
use super::api::{EventRecord, Record, Snapshot, Summary, VERSION};
use crate::logs::OutputFormat;

impl Events {
    fn journal_write(&self, time: &str, line: String) {
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

/// Events held back, with the container each is about.
type Held = Vec<(Option<String>, Event)>;

pub struct Events {
    pod: String,
    format: OutputFormat,
    /// Held back instead of reported (an apply's events until the change is accepted).
    captured: Option<std::sync::Mutex<Held>>,
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
        let view = super::journal::read(pod, &path).map_err(std::io::Error::other)?;
        let snapshot = serde_json::to_string(&Record::Snapshot(Snapshot {
            version: VERSION,
            time: time.to_string(),
            pod: pod.to_string(),
            view,
        }))
        .map_err(std::io::Error::other)?;
        let line = format!("{snapshot}\n");
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

    /// Whether events are printed as text to a terminal (where a spinner may show progress).
    pub fn to_terminal(&self) -> bool {
        use std::io::IsTerminal;
        self.format == OutputFormat::Text && std::io::stderr().is_terminal()
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
        let record = Record::Event(EventRecord {
            version: VERSION,
            time: time.clone(),
            pod: self.pod.clone(),
            container: container.map(str::to_string),
            event,
        });
        let Ok(json) = serde_json::to_string(&record) else {
            return;
        };
        match self.format {
            OutputFormat::Silent => {}
            OutputFormat::Json => {
                let _ = writeln!(std::io::stdout().lock(), "{json}");
            }
            OutputFormat::Text => {
                if let Record::Event(e) = &record {
                    let _ = writeln!(std::io::stderr().lock(), "{}", e.text());
                }
            }
        }
        self.journal_write(&time, json);
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

pub fn print_summary(format: OutputFormat, pod: &str, rows: &[ContainerSummary]) {
    match format {
        OutputFormat::Silent => {}
        OutputFormat::Json => {
            if let Ok(json) = serde_json::to_string(&Record::Summary(Summary {
                version: VERSION,
                pod: pod.to_string(),
                containers: rows.to_vec(),
            })) {
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
                    Some(x) => (
                        x.code.to_string(),
                        r.waiting.as_deref().unwrap_or(x.reason.as_str()),
                    ),
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
                image: None,
            },
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        let (reads, lost) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut reads, mut lost) = (0u64, 0u64);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let view = super::super::journal::read("p", &path).unwrap();
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
