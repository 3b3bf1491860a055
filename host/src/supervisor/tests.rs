//! The supervisor's rules, without root: a real plan (parsed from a manifest), the real
//! supervisor and runners, and scripted workloads in place of processes. Time is tokio's paused
//! clock, so back-off and grace periods take no wall time and every instant is exact.

use crate::supervisor::workload::StartError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::actions::ActionTarget;
use super::events::Events;
use super::workload::{BoxFuture, Launcher, Member, Workload};
use super::{StopRequests, Supervisor};
use crate::logs::OutputFormat;
use crate::status::{ExitInfo, PodState};

/// What one start of a scripted container does.
#[derive(Clone, Copy, Debug)]
struct Script {
    /// Ends by itself after this long, with `code`; `None`: runs until stopped.
    exits_after: Option<Duration>,
    code: i32,
    /// Ends at once on SIGTERM (143), or ignores it and waits for the kill.
    honours_term: bool,
    /// Ends cleanly (0) this long after SIGTERM: a process that finishes its work first.
    /// Overrides `honours_term`.
    stops_in: Option<Duration>,
}

const RUNS: Script = Script {
    exits_after: None,
    code: 0,
    honours_term: true,
    stops_in: None,
};

fn exits(after_secs: u64, code: i32) -> Script {
    Script {
        exits_after: Some(Duration::from_secs(after_secs)),
        code,
        honours_term: true,
        stops_in: None,
    }
}

/// What happened, and when (seconds of the paused clock since the pod started).
type Log = Arc<Mutex<Vec<(u64, String)>>>;

struct FakeLauncher {
    /// Per container, the script of each start in turn (the last one repeats).
    scripts: HashMap<String, Vec<Script>>,
    starts: Mutex<HashMap<String, usize>>,
    log: Log,
    t0: Instant,
}

fn note(log: &Log, t0: Instant, what: String) {
    let secs = t0.elapsed().as_secs();
    log.lock().unwrap().push((secs, what));
}

struct FakeWorkload {
    name: String,
    script: Script,
    ended: Arc<watch::Sender<Option<ExitInfo>>>,
    log: Log,
    t0: Instant,
}

impl Workload for FakeWorkload {
    fn pid(&self) -> Option<i32> {
        None
    }

    fn exited(&mut self) -> BoxFuture<'_, ExitInfo> {
        let mut ended = self.ended.subscribe();
        let by_itself = self.script.exits_after;
        let code = self.script.code;
        Box::pin(async move {
            let stopped = async {
                let x = ended.wait_for(Option::is_some).await;
                x.ok()
                    .and_then(|x| x.clone())
                    .unwrap_or_else(ExitInfo::killed)
            };
            match by_itself {
                Some(after) => tokio::select! {
                    _ = tokio::time::sleep(after) => ExitInfo::exited(code),
                    x = stopped => x,
                },
                None => stopped.await,
            }
        })
    }

    fn terminate(&self, _deadline: Instant) -> bool {
        note(&self.log, self.t0, format!("term {}", self.name));
        if let Some(after) = self.script.stops_in {
            let ended = self.ended.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                ended.send_if_modified(|x| x.is_none() && x.replace(ExitInfo::exited(0)).is_none());
            });
        } else if self.script.honours_term {
            self.ended.send_replace(Some(ExitInfo {
                code: 143,
                signal: Some(15),
                reason: crate::status::ExitReason::Error,
                message: None,
            }));
        }
        false
    }

    fn kill(&self) {
        note(&self.log, self.t0, format!("kill {}", self.name));
        self.ended.send_replace(Some(ExitInfo::killed()));
    }
}

impl Launcher for FakeLauncher {
    fn start<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Box<dyn Workload>, StartError>> {
        let name = member.name().to_string();
        let n = {
            let mut starts = self.starts.lock().unwrap();
            let n = starts.entry(name.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let scripts = &self.scripts[&name];
        let script = scripts[n.min(scripts.len() - 1)];
        note(&self.log, self.t0, format!("start {name}"));
        let workload = FakeWorkload {
            name,
            script,
            ended: Arc::new(watch::channel(None).0),
            log: self.log.clone(),
            t0: self.t0,
        };
        Box::pin(async move { Ok(Box::new(workload) as Box<dyn Workload>) })
    }

    fn action_target(&self, _member: &Member, _workload: &dyn Workload) -> Option<ActionTarget> {
        // Hooks that `sleep` need no pod: a dialer where the test runs.
        Some(ActionTarget {
            dialer: crate::sandbox::namespaces::Dialer::here().expect("a dialer thread"),
            ports: Vec::new(),
            exec: None,
        })
    }
}

/// Stop requests the test sends when it wants (Ctrl-C in `wpod run`).
struct Stops(mpsc::UnboundedReceiver<&'static str>);

impl StopRequests for Stops {
    fn recv(&mut self) -> BoxFuture<'_, &'static str> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(r) => r,
                None => std::future::pending().await,
            }
        })
    }
}

struct Pod {
    supervisor: Supervisor,
    log: Log,
}

/// A pod from `manifest` (containers run host commands, so planning touches nothing) whose
/// containers follow `scripts`.
fn pod(manifest: &str, scripts: &[(&str, Vec<Script>)]) -> Pod {
    let pods = crate::spec::parse(Path::new("pod.yaml"), manifest).expect("manifest parses");
    let plan = Arc::new(crate::plan::plan(&pods[0]).expect("manifest plans"));
    let log: Log = Arc::default();
    let launcher = FakeLauncher {
        scripts: scripts
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
        starts: Mutex::default(),
        log: log.clone(),
        t0: Instant::now(),
    };
    let state = PodState::new(Vec::new());
    let events = Arc::new(Events::new(plan.name(), OutputFormat::Silent));
    let supervisor = Supervisor::with_launcher(
        plan,
        Box::new(launcher),
        state,
        events,
        Duration::from_secs(10),
    );
    Pod { supervisor, log }
}

fn entries(log: &Log) -> Vec<(u64, String)> {
    log.lock().unwrap().clone()
}

fn what(log: &Log) -> Vec<String> {
    entries(log).into_iter().map(|(_, w)| w).collect()
}

const ORDERED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  restartPolicy: Never
  initContainers:
  - {name: setup, command: [setup]}
  - {name: agent, command: [agent], restartPolicy: Always}
  - {name: proxy, command: [proxy], restartPolicy: Always}
  containers:
  - {name: main, command: [main]}
"#;

#[tokio::test(start_paused = true)]
async fn init_containers_then_native_sidecars_then_regular_and_reverse_on_the_way_out() {
    let p = pod(
        ORDERED,
        &[
            ("setup", vec![exits(3, 0)]),
            ("agent", vec![RUNS]),
            ("proxy", vec![RUNS]),
            ("main", vec![exits(5, 0)]),
        ],
    );
    let (_tx, rx) = mpsc::unbounded_channel();
    let result = p.supervisor.run_until(Stops(rx)).await;
    assert_eq!(result.exit_code, 0);
    assert_eq!(
        entries(&p.log),
        [
            (0, "start setup".to_string()),
            // The native sidecars wait for the init container before them to succeed...
            (3, "start agent".to_string()),
            (3, "start proxy".to_string()),
            // ...and the regular container for the sidecars before it to have started.
            (3, "start main".to_string()),
            // When the regular container is done, the sidecars stop in reverse order.
            (8, "term proxy".to_string()),
            (8, "term agent".to_string()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_stops_the_pod_before_the_main_container() {
    let p = pod(
        ORDERED,
        &[
            ("setup", vec![exits(1, 2)]),
            ("agent", vec![RUNS]),
            ("proxy", vec![RUNS]),
            ("main", vec![RUNS]),
        ],
    );
    let (_tx, rx) = mpsc::unbounded_channel();
    let result = p.supervisor.run_until(Stops(rx)).await;
    assert_eq!(result.exit_code, 1);
    assert_eq!(what(&p.log), ["start setup"]);
    assert_eq!(result.summary[0].exit.as_ref().map(|x| x.code), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_failing_container_restarts_with_doubling_back_off() {
    let p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: main, command: [main]}
"#,
        &[(
            "main",
            vec![exits(0, 1), exits(0, 1), exits(0, 1), exits(0, 0)],
        )],
    );
    let (_tx, rx) = mpsc::unbounded_channel();
    let result = p.supervisor.run_until(Stops(rx)).await;
    assert_eq!(result.exit_code, 0);
    let starts: Vec<u64> = entries(&p.log).into_iter().map(|(t, _)| t).collect();
    // Kubelet's back-off: 10 s, then doubling (base 10 s here, as in Kubernetes).
    assert_eq!(starts, [0, 10, 30, 70]);
    assert_eq!(result.summary[0].restarts, 3);
}

#[tokio::test(start_paused = true)]
async fn restart_policy_never_keeps_a_failed_container_down() {
    let p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: main, command: [main]}
"#,
        &[("main", vec![exits(1, 3)])],
    );
    let (_tx, rx) = mpsc::unbounded_channel();
    let result = p.supervisor.run_until(Stops(rx)).await;
    assert_eq!(result.exit_code, 3);
    assert_eq!(what(&p.log), ["start main"]);
}

const GRACEFUL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: graceful}
spec:
  terminationGracePeriodSeconds: 30
  initContainers:
  - {name: agent, command: [agent], restartPolicy: Always}
  containers:
  - {name: main, command: [main]}
"#;

#[tokio::test(start_paused = true)]
async fn a_stop_request_stops_regular_containers_first_and_kills_at_the_deadline() {
    let stubborn = Script {
        honours_term: false,
        ..RUNS
    };
    let p = pod(GRACEFUL, &[("agent", vec![RUNS]), ("main", vec![stubborn])]);
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send("interrupted").unwrap();
        tx // kept open: no second request
    });
    let result = p.supervisor.run_until(Stops(rx)).await;
    drop(stop);
    let log = entries(&p.log);
    assert_eq!(
        log[..5],
        [
            (0, "start agent".to_string()),
            (0, "start main".to_string()),
            (5, "term main".to_string()),
            // It ignored SIGTERM: killed when the grace period ends...
            (35, "kill main".to_string()),
            // ...and the sidecar is asked to stop only after the main container is gone,
            // with its own short window though the pod's deadline is past: it ends on SIGTERM.
            (35, "term agent".to_string()),
        ]
    );
    assert_eq!(log.len(), 5, "{log:?}");
    let agent = result.summary.iter().find(|r| r.name == "agent").unwrap();
    assert_eq!(agent.exit.as_ref().map(|x| x.code), Some(143));
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_request_kills_at_once() {
    let stubborn = Script {
        honours_term: false,
        ..RUNS
    };
    let p = pod(
        GRACEFUL,
        &[("agent", vec![stubborn]), ("main", vec![stubborn])],
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let stops = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send("interrupted").unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send("interrupted").unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send("interrupted").unwrap();
        tx
    });
    let result = p.supervisor.run_until(Stops(rx)).await;
    drop(stops);
    assert_eq!(
        entries(&p.log),
        [
            (0, "start agent".to_string()),
            (0, "start main".to_string()),
            (5, "term main".to_string()),
            // The second request reaches every container, native sidecars too.
            (7, "kill main".to_string()),
            (7, "kill agent".to_string()),
        ]
    );
    assert_ne!(result.exit_code, 0);
}

/// Sorted, for events of one instant whose order is the scheduler's.
fn sorted(mut log: Vec<(u64, String)>) -> Vec<(u64, String)> {
    log.sort();
    log
}

/// KEP-753: at pod termination every preStop hook begins at once (not one sidecar after
/// another), and a native sidecar gets SIGTERM once the regular containers and the sidecars
/// started after it have ended, and its hook has run.
#[tokio::test(start_paused = true)]
async fn pre_stop_hooks_begin_together_and_sidecars_stop_in_reverse_after_main() {
    let p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 30
  initContainers:
  - {name: agent, command: [agent], restartPolicy: Always, lifecycle: {preStop: {sleep: {seconds: 4}}}}
  - {name: proxy, command: [proxy], restartPolicy: Always, lifecycle: {preStop: {sleep: {seconds: 1}}}}
  containers:
  - {name: main, command: [main], lifecycle: {preStop: {sleep: {seconds: 2}}}}
"#,
        &[
            ("agent", vec![RUNS]),
            ("proxy", vec![RUNS]),
            ("main", vec![RUNS]),
        ],
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send("interrupted").unwrap();
        tx
    });
    p.supervisor.run_until(Stops(rx)).await;
    drop(stop);
    assert_eq!(
        entries(&p.log)[3..],
        [
            // main's hook (2 s) ran from 5.
            (7, "term main".to_string()),
            // proxy's hook (1 s) ended at 6; its turn came when main ended.
            (7, "term proxy".to_string()),
            // agent's hook (4 s) began at 5 too, so it ends at 9, after its turn came at 7.
            (9, "term agent".to_string()),
        ]
    );
}

/// KEP-753: when the grace period is spent, each remaining sidecar still gets SIGTERM and
/// two seconds before the kill, so one that stops within a second ends 0, not 137.
#[tokio::test(start_paused = true)]
async fn sidecars_get_sigterm_and_two_seconds_after_the_grace_period() {
    let stubborn = Script {
        honours_term: false,
        ..RUNS
    };
    let quick = Script {
        stops_in: Some(Duration::from_secs(1)),
        ..RUNS
    };
    let p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  terminationGracePeriodSeconds: 4
  initContainers:
  - {name: agent, command: [agent], restartPolicy: Always}
  - {name: proxy, command: [proxy], restartPolicy: Always}
  containers:
  - {name: main, command: [main]}
"#,
        &[
            ("agent", vec![quick]),
            ("proxy", vec![quick]),
            ("main", vec![stubborn]),
        ],
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send("interrupted").unwrap();
        tx
    });
    let result = p.supervisor.run_until(Stops(rx)).await;
    drop(stop);
    assert_eq!(
        sorted(entries(&p.log)[3..].to_vec()),
        [
            (5, "term main".to_string()),
            (9, "kill main".to_string()),
            // The deadline ends every wait for a turn: both get SIGTERM then.
            (9, "term agent".to_string()),
            (9, "term proxy".to_string()),
        ]
    );
    for sidecar in ["agent", "proxy"] {
        let row = result.summary.iter().find(|r| r.name == sidecar).unwrap();
        assert_eq!(row.exit, Some(ExitInfo::exited(0)), "{sidecar}");
    }
}

/// A stop while a postStart hook runs cuts it short: the container stops within its grace
/// period instead of after the hook.
#[tokio::test(start_paused = true)]
async fn a_stop_cuts_a_running_post_start_hook_short() {
    let p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slow-start}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - {name: main, command: [main], lifecycle: {postStart: {sleep: {seconds: 20}}}}
"#,
        &[("main", vec![RUNS])],
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send("interrupted").unwrap();
        tx
    });
    p.supervisor.run_until(Stops(rx)).await;
    drop(stop);
    assert_eq!(
        entries(&p.log),
        [(0, "start main".to_string()), (3, "term main".to_string())]
    );
}

/// Containers the fake launcher starts that ignore SIGTERM until the kill: what a replaced
/// sidecar's grace period looks like.
fn stubborn() -> Script {
    Script {
        honours_term: false,
        ..RUNS
    }
}

#[tokio::test(start_paused = true)]
async fn a_live_change_stops_the_old_sidecars_before_starting_the_new_and_spares_the_rest() {
    let mut p = pod(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 4
  initContainers:
  - {name: agent, command: [agent], restartPolicy: Always}
  containers:
  - {name: main, command: [main]}
  - {name: side, command: [side]}
"#,
        &[
            ("agent", vec![RUNS]),
            ("main", vec![RUNS]),
            // The first `side` ignores SIGTERM (its replacement waits for the kill); the second
            // stops on it.
            ("side", vec![stubborn(), RUNS]),
            ("extra", vec![RUNS]),
        ],
    );
    let plan = p.supervisor.run.plan.clone();
    let (changes, phase) = p.supervisor.control();
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let pod = tokio::spawn(p.supervisor.run_until(Stops(stop_rx)));
    let mut phase = phase;
    phase
        .wait_for(|p| *p == super::Phase::Running)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Replace `side` (it ignores SIGTERM: killed when the pod's 4 s grace period ends) and add
    // `extra` as a native sidecar.
    let side = plan.containers.iter().find(|c| c.name() == "side").unwrap();
    let mut extra = plan.containers[0].clone();
    extra.name = "extra".into();
    let member = |plan: crate::plan::ContainerPlan| {
        Arc::new(Member {
            plan: Arc::new(plan),
            prepared: None,
        })
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    changes
        .send(super::Change {
            stop: vec!["side".into()],
            start: vec![member(side.clone()), member(extra)],
            sidecar_order: vec!["agent".into(), "extra".into()],
            reply,
        })
        .await
        .unwrap_or_else(|_| panic!("the supervisor takes changes while running"));
    let started = answer.await.unwrap().unwrap();
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["side", "extra"]);

    // Then the pod stops: `extra`, started after `agent`, stops before it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send("interrupted").unwrap();
    let result = pod.await.unwrap();
    let log = entries(&p.log);
    assert_eq!(
        log,
        [
            (0, "start agent".to_string()),
            (0, "start main".to_string()),
            (0, "start side".to_string()),
            (1, "term side".to_string()),
            (5, "kill side".to_string()),
            // The new `side` only once the old one has ended; `main` untouched throughout.
            (5, "start side".to_string()),
            (5, "start extra".to_string()),
            (6, "term main".to_string()),
            (6, "term side".to_string()),
            // Once the regular containers have ended, `extra`, started after `agent`, stops
            // first.
            (6, "term extra".to_string()),
            (6, "term agent".to_string()),
        ]
    );
    assert!(result.summary.iter().any(|r| r.name == "extra"));
}
