//! What the capabilities tell the pod about its sidecars: every refused connect, listen and
//! lookup becomes a pod event naming the container, the target and the field that would allow
//! it, rate-limited as the kubelet's event spam filter is; under `--audit`, every allowed use
//! is recorded too (once per target), so that an operator can write the narrowest grant from
//! one trial run.
//!
//! Capabilities report on the guest's own thread: a report is a map update and, when one is
//! due, one event written by the sink; it never waits on the guest's behalf.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a sidecar tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Connect,
    Listen,
    Lookup,
    /// A path that leads out of a volume.
    Open,
    /// A write to a read-only volume.
    Write,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Listen => "listen",
            Action::Lookup => "lookup",
            Action::Open => "open",
            Action::Write => "write",
        }
    }
}

/// One refusal: what, to where, and the Pod field that would allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub action: Action,
    /// `10.0.0.7:5432`, `0.0.0.0:8080`, `db.example.com`.
    pub target: String,
    pub field: String,
    /// Why, when it is not simply "not in the field".
    pub reason: Option<String>,
}

impl Denial {
    /// `denied connect to 10.0.0.7:5432: not in metadata.annotations[...]`.
    pub fn message(&self) -> String {
        let (verb, prep) = match self.action {
            Action::Connect => ("connect", "to"),
            Action::Listen => ("listen", "on"),
            Action::Lookup => ("lookup", "of"),
            Action::Open => ("open", "of"),
            Action::Write => ("write", "to"),
        };
        match &self.reason {
            Some(r) => format!("denied {verb} {prep} {}: {r} ({})", self.target, self.field),
            None => format!(
                "denied {verb} {prep} {}: not in {}",
                self.target, self.field
            ),
        }
    }
}

/// One allowed use, as `--audit` records it: `connect 10.0.0.7:5432` (`via` the name a
/// lookup gave it), `listen :9121`, `lookup db.example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Use {
    pub class: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// Where reports go (the supervisor turns them into pod events).
pub trait ReportSink: Send + Sync {
    /// A refusal worth an event: `total` is every refusal of the container so far, and
    /// `suppressed` how many were not reported since its last event.
    fn denied(&self, container: &str, denial: &Denial, total: u64, suppressed: u64);
    /// A use seen for the first time (only under `--audit`).
    fn used(&self, container: &str, use_: &Use);
}

/// A key is reported at once, then at most once a minute (with the count since).
const REPEAT_AFTER: Duration = Duration::from_secs(60);
/// Events per container: a burst, then one a second (a port scan is a few events, counted).
const BURST: f64 = 20.0;
const PER_SECOND: f64 = 1.0;
/// Distinct targets remembered per container (past it, the bucket alone limits).
const MAX_KEYS: usize = 4096;
/// Distinct uses an audit records per container.
const MAX_USES: usize = 1024;

/// The reports of one pod's sidecars.
pub struct Reporter {
    sink: Arc<dyn ReportSink>,
    audit: bool,
    state: Mutex<HashMap<String, Counts>>,
}

struct Counts {
    total: u64,
    suppressed: u64,
    tokens: f64,
    refilled: Instant,
    last: HashMap<(Action, String), Instant>,
    uses: BTreeSet<Use>,
}

impl Counts {
    fn new(now: Instant) -> Self {
        Counts {
            total: 0,
            suppressed: 0,
            tokens: BURST,
            refilled: now,
            last: HashMap::new(),
            uses: BTreeSet::new(),
        }
    }
}

impl Reporter {
    pub fn new(sink: Arc<dyn ReportSink>, audit: bool) -> Arc<Self> {
        Arc::new(Reporter {
            sink,
            audit,
            state: Mutex::new(HashMap::new()),
        })
    }

    /// A reporter that drops everything (benchmarks, tools that run no pod).
    pub fn discard() -> Arc<Self> {
        struct Nowhere;
        impl ReportSink for Nowhere {
            fn denied(&self, _: &str, _: &Denial, _: u64, _: u64) {}
            fn used(&self, _: &str, _: &Use) {}
        }
        Self::new(Arc::new(Nowhere), false)
    }

    pub fn auditing(&self) -> bool {
        self.audit
    }

    pub fn deny(&self, container: &str, denial: Denial) {
        self.deny_at(container, denial, Instant::now());
    }

    fn deny_at(&self, container: &str, denial: Denial, now: Instant) {
        let due = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let counts = state
                .entry(container.to_string())
                .or_insert_with(|| Counts::new(now));
            counts.total += 1;
            let elapsed = now.saturating_duration_since(counts.refilled).as_secs_f64();
            counts.tokens = (counts.tokens + elapsed * PER_SECOND).min(BURST);
            counts.refilled = now;
            let key = (denial.action, denial.target.clone());
            let key_due = match counts.last.get(&key) {
                Some(at) => now.saturating_duration_since(*at) >= REPEAT_AFTER,
                None => true,
            };
            if key_due && counts.tokens >= 1.0 {
                counts.tokens -= 1.0;
                if counts.last.len() < MAX_KEYS || counts.last.contains_key(&key) {
                    counts.last.insert(key, now);
                }
                let suppressed = std::mem::take(&mut counts.suppressed);
                Some((counts.total, suppressed))
            } else {
                counts.suppressed += 1;
                None
            }
        };
        if let Some((total, suppressed)) = due {
            self.sink.denied(container, &denial, total, suppressed);
        }
    }

    /// Records an allowed use (under `--audit`; otherwise nothing).
    pub fn used(&self, container: &str, use_: Use) {
        if !self.audit {
            return;
        }
        let new = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let counts = state
                .entry(container.to_string())
                .or_insert_with(|| Counts::new(Instant::now()));
            counts.uses.len() < MAX_USES && counts.uses.insert(use_.clone())
        };
        if new {
            self.sink.used(container, &use_);
        }
    }

    /// What each container was seen to use, and its refusals (for the audit's summary).
    pub fn summary(&self) -> BTreeMap<String, (Vec<Use>, u64)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .iter()
            .map(|(c, counts)| {
                (
                    c.clone(),
                    (counts.uses.iter().cloned().collect(), counts.total),
                )
            })
            .collect()
    }
}

/// The narrowest grant for what an audit saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suggestion {
    /// Outbound entries: a name when a lookup led to the address, `localhost` for the pod's
    /// own addresses, else the address.
    pub outbound: Vec<String>,
    /// Ports listened on.
    pub listens: Vec<u16>,
    /// The host interfaces called.
    pub calls: Vec<String>,
    /// Volumes read and never written.
    pub read_only: Vec<String>,
}

pub fn suggest(uses: &[Use]) -> Suggestion {
    let mut outbound = BTreeSet::new();
    let mut listens = BTreeSet::new();
    let mut calls = BTreeSet::new();
    let (mut read, mut written) = (BTreeSet::new(), BTreeSet::new());
    for u in uses {
        match u.class.as_str() {
            "connect" => {
                let Ok(addr) = u.target.parse::<std::net::SocketAddr>() else {
                    continue;
                };
                let host = match (&u.via, addr.ip()) {
                    (Some(name), _) => name.clone(),
                    (None, std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                    (None, ip) => ip.to_string(),
                };
                outbound.insert(format!("{host}:{}", addr.port()));
            }
            "listen" => {
                if let Ok(p) = u.target.parse() {
                    listens.insert(p);
                }
            }
            "call" => {
                calls.insert(u.target.clone());
            }
            "read" => {
                read.insert(u.target.clone());
            }
            "write" => {
                written.insert(u.target.clone());
            }
            _ => {}
        }
    }
    Suggestion {
        outbound: outbound.into_iter().collect(),
        listens: listens.into_iter().collect(),
        calls: calls.into_iter().collect(),
        read_only: read.difference(&written).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String, u64, u64)>>);

    impl ReportSink for Recorded {
        fn denied(&self, container: &str, d: &Denial, total: u64, suppressed: u64) {
            self.0
                .lock()
                .unwrap()
                .push((container.into(), d.target.clone(), total, suppressed));
        }
        fn used(&self, container: &str, u: &Use) {
            self.0
                .lock()
                .unwrap()
                .push((container.into(), u.target.clone(), 0, 0));
        }
    }

    fn denial(target: &str) -> Denial {
        Denial {
            action: Action::Connect,
            target: target.into(),
            field: "metadata.annotations[wpod.dev/allowed-outbound.x]".into(),
            reason: None,
        }
    }

    #[test]
    fn a_target_is_reported_once_a_minute_with_the_count_between() {
        let sink = Arc::new(Recorded::default());
        let r = Reporter::new(sink.clone(), false);
        let t0 = Instant::now();
        for i in 0..5 {
            r.deny_at("x", denial("10.0.0.7:5432"), t0 + Duration::from_secs(i));
        }
        r.deny_at("x", denial("10.0.0.7:5432"), t0 + Duration::from_secs(61));
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                ("x".into(), "10.0.0.7:5432".into(), 1, 0),
                ("x".into(), "10.0.0.7:5432".into(), 6, 4)
            ]
        );
        assert_eq!(
            denial("10.0.0.7:5432").message(),
            "denied connect to 10.0.0.7:5432: not in metadata.annotations[wpod.dev/allowed-outbound.x]"
        );
    }

    #[test]
    fn a_scan_is_a_burst_of_events_then_one_a_second() {
        let sink = Arc::new(Recorded::default());
        let r = Reporter::new(sink.clone(), false);
        let t0 = Instant::now();
        for port in 1..=1000u32 {
            r.deny_at("x", denial(&format!("10.0.0.7:{port}")), t0);
        }
        assert_eq!(sink.0.lock().unwrap().len(), 20);
        r.deny_at("x", denial("10.0.0.8:1"), t0 + Duration::from_secs(2));
        let last = sink.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.2, last.3), (1001, 980));
        // Another container has its own bucket.
        r.deny_at("y", denial("10.0.0.7:1"), t0);
        assert_eq!(sink.0.lock().unwrap().len(), 22);
    }

    #[test]
    fn the_suggestion_names_what_was_reached_and_how() {
        let u = |class: &str, target: &str, via: Option<&str>| Use {
            class: class.into(),
            target: target.into(),
            via: via.map(str::to_string),
        };
        let s = suggest(&[
            u(
                "connect",
                "198.51.100.7:9000",
                Some("collector.example.test"),
            ),
            u("connect", "198.51.100.9:5432", None),
            u("connect", "127.0.0.1:6379", Some("localhost")),
            u("connect", "[2001:db8::1]:443", None),
            u("lookup", "collector.example.test", None),
            u("listen", "9121", None),
            u("read", "config", None),
            u("read", "data", None),
            u("write", "data", None),
            u("call", "wasi:sockets/tcp", None),
        ]);
        assert_eq!(
            s.outbound,
            [
                "198.51.100.9:5432",
                "[2001:db8::1]:443",
                "collector.example.test:9000",
                "localhost:6379"
            ]
        );
        assert_eq!(s.listens, [9121]);
        assert_eq!(s.read_only, ["config"]);
        assert_eq!(s.calls, ["wasi:sockets/tcp"]);
    }

    #[test]
    fn uses_are_recorded_once_and_only_under_audit() {
        let sink = Arc::new(Recorded::default());
        let quiet = Reporter::new(sink.clone(), false);
        let u = Use {
            class: "connect".into(),
            target: "10.0.0.7:5432".into(),
            via: None,
        };
        quiet.used("x", u.clone());
        assert!(sink.0.lock().unwrap().is_empty());
        let audit = Reporter::new(sink.clone(), true);
        audit.used("x", u.clone());
        audit.used("x", u.clone());
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        assert_eq!(audit.summary()["x"].0, vec![u]);
    }
}
