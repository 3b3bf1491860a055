//! Pod lifecycle with Kubernetes semantics (issue 5): start order and native sidecars, probes,
//! restarts with back-off, hooks, termination order and grace period. The order is proven by the
//! timestamps of the events and log lines (RFC 3339 with fixed precision, so they compare as
//! strings). Needs root and Debian's python3.

use std::time::Duration;

use serde_json::Value;

use crate::pods::{assert_no_leftovers, PodRun, TestPod};
use crate::status_field;
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

/// The time of the first event `kind` of `container`.
fn event_time(run: &PodRun, container: &str, kind: &str) -> String {
    run.events(Some(container))
        .iter()
        .find(|e| e["event"] == kind)
        .and_then(|e| e["time"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {kind} event for {container}\n{}", run.dump()))
}

/// The time of the first log line of `container` containing `needle`.
fn line_time(run: &PodRun, container: &str, needle: &str) -> String {
    run.records
        .iter()
        .find(|r| {
            r["type"] == "log"
                && r["container"] == container
                && r["line"].as_str().is_some_and(|l| l.contains(needle))
        })
        .and_then(|r| r["time"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{container} never printed {needle}\n{}", run.dump()))
}

fn events_of(run: &PodRun, container: &str, kind: &str) -> Vec<Value> {
    run.events(Some(container))
        .into_iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

#[test]
fn init_containers_then_sidecars_that_gate_then_main() {
    require_root("init_containers_then_sidecars_that_gate_then_main");
    let pod = TestPod::new(
        "order",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: order}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: setup
    command: [sh, -c, "echo from-init > /work/config"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: slow-native
    restartPolicy: Always
    command: [sh, -c, "sleep 1; touch /tmp/up; exec sleep 300"]
    startupProbe:
      exec: {command: [test, -f, /tmp/up]}
      periodSeconds: 1
      failureThreshold: 10
  - name: slow-wasm
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [sleep:1000, ready, wait-stopping]
  containers:
  - name: main
    command: [sh, -c, "echo main read $(cat /work/config)"]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes:
  - {name: work, emptyDir: {}}
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("main", "main read from-init");
    // setup done -> slow-native started, held back by its startup probe -> slow-wasm started,
    // held back until ready() -> main started.
    let setup_done = event_time(&run, "setup", "exited");
    let native_started = event_time(&run, "slow-native", "started");
    let native_ready = event_time(&run, "slow-native", "ready");
    let wasm_started = event_time(&run, "slow-wasm", "started");
    let wasm_ready = event_time(&run, "slow-wasm", "ready");
    let main_started = event_time(&run, "main", "started");
    assert!(setup_done <= native_started, "{}", run.dump());
    assert!(
        native_ready <= wasm_started,
        "the wasm sidecar started before the native one passed its startup probe\n{}",
        run.dump()
    );
    assert!(
        wasm_ready <= main_started,
        "main started before the wasm sidecar called ready()\n{}",
        run.dump()
    );
    // The gates held for real: about a second each.
    let secs = |t: &str| humantime::parse_rfc3339(t).expect("rfc3339");
    let held = secs(&main_started)
        .duration_since(secs(&native_started))
        .unwrap_or_default();
    assert!(
        held >= Duration::from_millis(1800),
        "main was held back only {held:?}\n{}",
        run.dump()
    );
    // Job-style: main done under Never, the sidecars (which would run forever) were stopped
    // right away, in reverse order, and the Wasm one saw its stopping event.
    assert!(
        event_time(&run, "slow-wasm", "exited") <= event_time(&run, "slow-native", "exited"),
        "{}",
        run.dump()
    );
    run.assert_line("slow-wasm", "wait-stopping ok: stopping with");
    assert_no_leftovers("order");
}

#[test]
fn ctrl_c_stops_main_first_then_sidecars_in_reverse_and_kills_at_the_grace_period() {
    require_root("ctrl_c_stops_main_first");
    let trapper = |name: &str| {
        format!(
            r#"trap 'echo {name} got TERM; exit 0' TERM; echo {name} up; while true; do sleep 0.1; done"#
        )
    };
    let pod = TestPod::new(
        "termination",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: termination}}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: first-sidecar
    restartPolicy: Always
    # Notes the SIGTERM but does not exit: killed when the grace period ends.
    command: [sh, -c, "trap 'echo first-sidecar got TERM' TERM; echo first-sidecar up; while true; do sleep 0.1; done"]
  - name: second-sidecar
    restartPolicy: Always
    command: [sh, -c, "{}"]
  containers:
  - name: main
    command: [sh, -c, "{}"]
"#,
            trapper("second-sidecar"),
            trapper("main")
        ),
    );
    let running = pod.spawn();
    running.wait_for("everything up", LONG, |r| {
        r.has_line("main", "main up") && r.has_line("first-sidecar", "first-sidecar up")
    });
    let interrupted = std::time::Instant::now();
    let run = running.stop(LONG);
    let took = interrupted.elapsed();
    // main got SIGTERM before any sidecar; the sidecars after it, in reverse start order.
    let main_term = line_time(&run, "main", "main got TERM");
    let second_term = line_time(&run, "second-sidecar", "second-sidecar got TERM");
    let first_term = line_time(&run, "first-sidecar", "first-sidecar got TERM");
    assert!(
        event_time(&run, "main", "exited") <= second_term,
        "{}",
        run.dump()
    );
    assert!(
        main_term < second_term,
        "{main_term} !< {second_term}\n{}",
        run.dump()
    );
    assert!(
        second_term < first_term,
        "{second_term} !< {first_term}\n{}",
        run.dump()
    );
    // The one ignoring SIGTERM was killed when the 2 s grace period (counted from Ctrl-C) ended.
    assert_eq!(
        events_of(&run, "first-sidecar", "killed").len(),
        1,
        "{}",
        run.dump()
    );
    assert!(
        events_of(&run, "second-sidecar", "killed").is_empty(),
        "{}",
        run.dump()
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "termination took {took:?}"
    );
    // The main container's own exit code (it exited 0 on TERM) is wpod's.
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers("termination");
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    require_root("a_second_ctrl_c_kills_at_once");
    let pod = TestPod::new(
        "double-ctrl-c",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: double-ctrl-c}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: stubborn
    command: [sh, -c, "trap '' TERM; echo up; while true; do sleep 0.1; done"]
"#,
    );
    let running = pod.spawn();
    running.wait_for("the container", LONG, |r| r.has_line("stubborn", "up"));
    let t = std::time::Instant::now();
    running.signal(libc::SIGINT);
    running.second_ctrl_c(LONG);
    let run = running.wait(LONG);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a second Ctrl-C must not wait for the 30 s grace period: {:?}",
        t.elapsed()
    );
    assert_eq!(
        events_of(&run, "stubborn", "killed").len(),
        1,
        "{}",
        run.dump()
    );
    assert_no_leftovers("double-ctrl-c");
}

#[test]
fn a_crashing_container_restarts_with_growing_back_off_and_never_means_never() {
    require_root("a_crashing_container_restarts_with_growing_back_off");
    let mut pod = TestPod::new(
        "crashloop",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crashloop}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sh, -c, "echo crashing; exit 3"]
"#,
    );
    pod.args = vec!["--backoff-base".into(), "200ms".into()];
    let running = pod.spawn();
    let run = running.wait_for("four back-offs", LONG, |r| {
        r.events(Some("main"))
            .iter()
            .filter(|e| e["event"] == "backOff")
            .count()
            >= 4
    });
    let delays: Vec<u64> = events_of(&run, "main", "backOff")
        .iter()
        .filter_map(|e| e["restartInMs"].as_u64())
        .collect();
    assert_eq!(
        &delays[..4],
        &[200, 400, 800, 1600],
        "kubelet's doubling back-off: {delays:?}"
    );
    // The gaps between starts grow like the back-off.
    let starts: Vec<std::time::SystemTime> = events_of(&run, "main", "started")
        .iter()
        .filter_map(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
        .collect();
    assert!(starts.len() >= 4, "{}", run.dump());
    let gap = |i: usize| starts[i + 1].duration_since(starts[i]).unwrap_or_default();
    assert!(
        gap(2) > gap(0),
        "gaps must grow: {:?} then {:?}",
        gap(0),
        gap(2)
    );
    let run = running.stop(LONG);
    let summary = run
        .records
        .iter()
        .find(|r| r["type"] == "summary")
        .cloned()
        .expect("summary");
    let main = &summary["containers"][0];
    assert!(main["restarts"].as_u64().unwrap_or(0) >= 3, "{summary}");
    assert_eq!(main["exit"]["code"], 3, "{summary}");
    assert_eq!(main["waiting"], "CrashLoopBackOff", "{summary}");
    assert_eq!(run.code, Some(3));
    assert_no_leftovers("crashloop");

    // restartPolicy: Never does not restart.
    let never = TestPod::new(
        "no-restart",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: no-restart}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sh, -c, "echo once; exit 4"]
"#,
    );
    let run = never.run(LONG);
    assert_eq!(run.code, Some(4), "{}", run.dump());
    assert_eq!(
        events_of(&run, "main", "started").len(),
        1,
        "{}",
        run.dump()
    );
    assert!(
        events_of(&run, "main", "backOff").is_empty(),
        "{}",
        run.dump()
    );
    assert_no_leftovers("no-restart");
}

#[test]
fn liveness_failure_restarts_and_readiness_is_reported() {
    require_root("liveness_failure_restarts");
    let mut pod = TestPod::new(
        "probes",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probes}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    # Serves /healthz for about two seconds, then stops answering it (but keeps running).
    command: [python3, -u, -c]
    args:
    - |
      import http.server, threading, time
      born = time.time()
      class H(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              healthy = time.time() - born < 2
              self.send_response(200 if healthy else 500); self.end_headers()
          def log_message(self, *a): pass
      print("serving", flush=True)
      http.server.ThreadingHTTPServer(("127.0.0.1", 18610), H).serve_forever()
    ports: [{name: http, containerPort: 18610}]
    readinessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {path: /healthz, port: 18610}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    pod.args = vec!["--backoff-base".into(), "100ms".into()];
    let running = pod.spawn();
    let run = running.wait_for("a liveness restart", LONG, |r| {
        r.events(Some("web"))
            .iter()
            .filter(|e| e["event"] == "started")
            .count()
            >= 2
    });
    let web = run.events(Some("web"));
    let kinds: Vec<&str> = web.iter().filter_map(|e| e["event"].as_str()).collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(pos("ready") < pos("notReady"), "{kinds:?}");
    assert!(pos("notReady") < pos("unhealthy"), "{kinds:?}");
    assert!(pos("unhealthy") < pos("exited"), "{kinds:?}");
    // As Kubernetes reports it: the exit as it was, the probe's verdict in the event. (python
    // is PID 1 of its PID namespace, where SIGTERM has no default action: it is killed when the
    // grace period of one second is spent, 137.)
    let exit = events_of(&run, "web", "exited");
    assert_eq!(exit[0]["reason"], "Error", "{}", run.dump());
    assert_eq!(exit[0]["code"], 137, "{}", run.dump());
    let _ = running.stop(LONG);
    assert_no_leftovers("probes");
}

/// A container killed for a failed liveness probe gets its preStop hook first, then SIGTERM
/// (issue 26: the kubelet's killContainer); one that then exits 0 ends `Completed`, and is
/// restarted all the same (restartPolicy OnFailure: the kubelet decided so when it killed it).
#[test]
fn a_container_failing_its_liveness_probe_gets_pre_stop_then_sigterm() {
    require_root("a_container_failing_its_liveness_probe_gets_pre_stop_then_sigterm");
    let mut pod = TestPod::new(
        "liveness-prestop",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness-prestop}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      trap 'echo "TERM after preStop wrote: $(cat /tmp/pre-stop 2>/dev/null)"; exit 0' TERM
      touch /tmp/up
      echo up
      while true; do sleep 0.1; done
    livenessProbe:
      # Passes until the container has set its trap, then fails.
      exec: {command: [sh, -c, "test ! -f /tmp/up"]}
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "echo bye-from-pre-stop > /tmp/pre-stop"]}
"#,
    );
    pod.args = vec!["--backoff-base".into(), "100ms".into()];
    let running = pod.spawn();
    let run = running.wait_for("a restart after the liveness kill", LONG, |r| {
        r.events(Some("main"))
            .iter()
            .filter(|e| e["event"] == "started")
            .count()
            >= 2
    });
    run.assert_line("main", "TERM after preStop wrote: bye-from-pre-stop");
    let exit = events_of(&run, "main", "exited");
    assert_eq!(exit[0]["reason"], "Completed", "{}", run.dump());
    assert_eq!(exit[0]["code"], 0, "{}", run.dump());
    assert!(
        !events_of(&run, "main", "unhealthy").is_empty(),
        "{}",
        run.dump()
    );
    let _ = running.stop(LONG);
    assert_no_leftovers("liveness-prestop");
}

/// Pod termination with two native sidecars, as the kubelet does it (issue 26, item 2; KEP-753):
/// their preStop hooks begin together, not one after the other; and though the main container
/// spends the whole grace period (it ignores SIGTERM), each sidecar then still gets SIGTERM and
/// two seconds, so both end 0/Completed rather than being killed.
#[test]
fn sidecars_hooks_run_together_and_sigterm_comes_even_after_the_grace_period() {
    require_root("sidecars_hooks_run_together_and_sigterm_comes_even_after_the_grace_period");
    let sidecar = |name: &str| {
        format!(
            r#"
  - name: {name}
    restartPolicy: Always
    command: [sh, -c]
    args:
    - |
      trap 'echo "{name} got TERM"; exit 0' TERM
      echo up
      while true; do
        if [ -f /tmp/pre-stop ] && [ -z "$seen" ]; then echo "{name} preStop began"; seen=1; fi
        sleep 0.1
      done
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "touch /tmp/pre-stop; sleep 2"]}}"#
        )
    };
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: sidecar-stop}}
spec:
  terminationGracePeriodSeconds: 3
  initContainers:{}{}
  containers:
  - name: main
    command: [sh, -c]
    args: ["trap '' TERM; echo up; while true; do sleep 0.1; done"]
"#,
        sidecar("agent"),
        sidecar("proxy")
    );
    let pod = TestPod::new("sidecar-stop", &manifest);
    let running = pod.spawn();
    running.wait_for("the main container", LONG, |r| r.has_line("main", "up"));
    let run = running.stop(LONG);
    let secs = |t: String| humantime::parse_rfc3339(&t).expect("rfc3339");
    let agent = secs(line_time(&run, "agent", "agent preStop began"));
    let proxy = secs(line_time(&run, "proxy", "proxy preStop began"));
    let apart = agent
        .duration_since(proxy)
        .or_else(|_| proxy.duration_since(agent))
        .unwrap_or_default();
    assert!(
        apart < Duration::from_secs(1),
        "the preStop hooks began {apart:?} apart\n{}",
        run.dump()
    );
    let main = events_of(&run, "main", "exited");
    assert_eq!(main[0]["code"], 137, "{}", run.dump());
    for sidecar in ["agent", "proxy"] {
        run.assert_line(sidecar, &format!("{sidecar} got TERM"));
        let exit = events_of(&run, sidecar, "exited");
        assert_eq!(exit[0]["code"], 0, "{sidecar}\n{}", run.dump());
        assert_eq!(exit[0]["reason"], "Completed", "{sidecar}\n{}", run.dump());
    }
    assert_no_leftovers("sidecar-stop");
}

/// While a pod terminates, liveness stops: a probe that starts failing once the container
/// handles SIGTERM neither restarts it nor changes how it ended (issue 26).
#[test]
fn liveness_stops_while_a_pod_terminates() {
    require_root("liveness_stops_while_a_pod_terminates");
    let pod = TestPod::new(
        "liveness-stops",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness-stops}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      trap 'rm /tmp/healthy; echo draining; sleep 3; echo drained; exit 0' TERM
      touch /tmp/healthy /tmp/started
      echo up
      while true; do sleep 0.1; done
    livenessProbe:
      # Healthy until SIGTERM (passes before the container has begun, too).
      exec: {command: [sh, -c, "test -f /tmp/healthy || test ! -f /tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    let running = pod.spawn();
    running.wait_for("the container", LONG, |r| r.has_line("main", "up"));
    let run = running.stop(LONG);
    run.assert_line("main", "drained");
    let exit = events_of(&run, "main", "exited");
    assert_eq!(exit.len(), 1, "{}", run.dump());
    assert_eq!(exit[0]["reason"], "Completed", "{}", run.dump());
    assert!(
        events_of(&run, "main", "unhealthy").is_empty(),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers("liveness-stops");
}

#[test]
fn post_start_and_pre_stop_hooks_run_in_the_container() {
    require_root("post_start_and_pre_stop_hooks");
    let pod = TestPod::new(
        "hooks",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      trap 'echo "TERM after preStop wrote: $(cat /shared/pre-stop 2>/dev/null)"; exit 0' TERM
      while [ ! -f /tmp/post-start ]; do sleep 0.05; done
      echo "postStart wrote: $(cat /tmp/post-start)"
      while true; do sleep 0.1; done
    volumeMounts: [{name: shared, mountPath: /shared}]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo hello-from-post-start > /tmp/post-start"]}
      preStop:
        exec: {command: [sh, -c, "echo bye-from-pre-stop > /shared/pre-stop"]}
  volumes:
  - {name: shared, emptyDir: {}}
"#,
    );
    let running = pod.spawn();
    running.wait_for("postStart", LONG, |r| r.has_line("main", "postStart wrote"));
    let run = running.stop(LONG);
    // postStart ran inside the container (its /tmp), preStop before the SIGTERM.
    run.assert_line("main", "postStart wrote: hello-from-post-start");
    run.assert_line("main", "TERM after preStop wrote: bye-from-pre-stop");
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers("hooks");
}

#[test]
fn a_wasm_sidecar_has_network_probes_and_http_hooks() {
    require_root("a_wasm_sidecar_has_network_probes_and_http_hooks");
    let pod = TestPod::new(
        "wasm-probes",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-probes}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  # The hooks' HTTP target: a native sidecar, so it outlives the regular containers' stop.
  - name: main
    restartPolicy: Always
    command: [python3, -u, -c]
    args:
    - |
      import http.server
      class H(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              print("main saw GET " + self.path, flush=True)
              self.send_response(200); self.end_headers()
          def log_message(self, *a): pass
      http.server.ThreadingHTTPServer(("127.0.0.1", 18640), H).serve_forever()
    # Started (for the order) once it listens.
    startupProbe:
      tcpSocket: {port: 18640}
      periodSeconds: 1
  containers:
  - name: server
    image: SIDECARS/probe.wasm
    args: ["serve:18641:hello"]
    ports: [{containerPort: 18641}]
    readinessProbe:
      tcpSocket: {port: 18641}
      periodSeconds: 1
    lifecycle:
      postStart:
        httpGet: {path: /post-start-of-wasm, port: 18640}
      preStop:
        httpGet: {path: /pre-stop-of-wasm, port: 18640}
"#,
    );
    let running = pod.spawn();
    let run = running.wait_for("the wasm sidecar to be ready", LONG, |r| {
        r.events(Some("server"))
            .iter()
            .any(|e| e["event"] == "ready")
    });
    run.assert_line("main", "main saw GET /post-start-of-wasm");
    let run = running.stop(LONG);
    run.assert_line("main", "main saw GET /pre-stop-of-wasm");
    // preStop came before the sidecar was told to stop (it was then stopped, in place of SIGTERM).
    assert!(
        line_time(&run, "main", "pre-stop-of-wasm") <= event_time(&run, "server", "exited"),
        "{}",
        run.dump()
    );
    assert!(
        events_of(&run, "server", "hookFailed").is_empty(),
        "{}",
        run.dump()
    );
    assert_no_leftovers("wasm-probes");
}

#[test]
fn a_terminal_ctrl_c_reaches_wpod_alone_even_with_a_shared_pid_namespace() {
    require_root("a_terminal_ctrl_c_reaches_wpod_alone");
    let pod = TestPod::new(
        "terminal-ctrl-c",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: terminal-ctrl-c}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: side
    restartPolicy: Always
    command: [sh, -c, "trap 'echo side got TERM; exit 0' TERM; echo side up; while true; do sleep 0.1; done"]
  containers:
  - name: main
    command: [sh, -c, "trap 'echo main got TERM; exit 0' TERM; echo main up; while true; do sleep 0.1; done"]
"#,
    );
    let running = pod.spawn();
    running.wait_for("both up", LONG, |r| {
        r.has_line("main", "main up") && r.has_line("side", "side up")
    });
    // Ctrl-C at a terminal signals the whole foreground process group.
    running.signal_group(libc::SIGINT);
    let run = running.wait(LONG);
    run.assert_line("main", "main got TERM");
    run.assert_line("side", "side got TERM");
    assert!(
        line_time(&run, "main", "got TERM") < line_time(&run, "side", "got TERM"),
        "{}",
        run.dump()
    );
    assert!(
        run.events(None)
            .iter()
            .chain(run.events(Some("main")).iter())
            .all(|e| e["event"] != "killed"),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers("terminal-ctrl-c");
}

#[test]
fn a_command_that_ends_at_once_is_never_a_start_error() {
    require_root("a_command_that_ends_at_once");
    // `true` may exit and be reaped between wpod's two looks at the pid its shim reported;
    // that is a quick command, not a shim lying about its child (it once failed 1 run in 20
    // with "reported pid N, which is not its child").
    let pod = TestPod::new(
        "quick-true",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quick-true\n  annotations: {wpod.dev/network: none}\n\
         spec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    command: ['true']\n",
    );
    for i in 0..60 {
        let run = pod.run(Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "run {i}:\n{}", run.dump());
        assert_eq!(
            run.exit("main")["reason"],
            "Completed",
            "run {i}:\n{}",
            run.dump()
        );
    }
}

/// Regular containers start one by one in their order, each once the one before it has run its
/// postStart hook, as the kubelet starts them (issue 26: the next one started first).
#[test]
fn a_post_start_hook_holds_back_the_next_container() {
    require_root("a_post_start_hook_holds_back_the_next_container");
    let pod = TestPod::new(
        "poststart-order",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: poststart-order}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: first
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "sleep 1; echo done > /shared/hooked"]}
  - name: second
    command: [sh, -c]
    args: ['echo "the hook before me: $(cat /shared/hooked 2>/dev/null || echo missing)"']
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - {name: shared, emptyDir: {}}
"#,
    );
    let running = pod.spawn();
    running.wait_for("the second container", LONG, |r| {
        r.has_line("second", "the hook before me")
    });
    let run = running.stop(LONG);
    run.assert_line("second", "the hook before me: done");
    let started: Vec<String> = run
        .records
        .iter()
        .filter(|e| e["type"] == "event" && e["event"] == "started")
        .filter_map(|e| e["container"].as_str().map(str::to_string))
        .collect();
    assert_eq!(started, ["first", "second"], "{}", run.dump());
    assert_no_leftovers("poststart-order");
}

/// A Wasm sidecar that does not listen for the `stopping` event is stopped as soon as its turn
/// comes, as SIGTERM ends a process without a handler: it ends 143 with an event that says
/// so, not 137 "killed at the end of the grace period" (issue 27, item 6).
#[test]
fn a_sidecar_that_cannot_hear_stopping_is_stopped_at_once_and_told_so() {
    require_root("a_sidecar_that_cannot_hear_stopping_is_stopped_at_once_and_told_so");
    let pod = TestPod::new(
        "deaf-sidecar",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: deaf-sidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 20
  initContainers:
  - name: deaf
    restartPolicy: Always
    image: SIDECARS/redis-exporter.wasm
    env: [{name: LISTEN, value: "127.0.0.1:9411"}]
    ports: [{containerPort: 9411}]
  containers:
  - name: main
    command: [sh, -c, "sleep 1; echo main done"]
"#,
    );
    let started = std::time::Instant::now();
    let run = pod.run(Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the pod took {:?}: the sidecar waited for the grace period\n{}",
        started.elapsed(),
        run.dump()
    );
    let exit = events_of(&run, "deaf", "exited");
    assert!(
        !events_of(&run, "deaf", "stoppedAtOnce").is_empty(),
        "{}",
        run.dump()
    );
    assert!(
        events_of(&run, "deaf", "killed").is_empty(),
        "{}",
        run.dump()
    );
    assert_eq!(exit[0]["code"], 143, "{}", run.dump());
    assert_no_leftovers("deaf-sidecar");
}

/// An exec probe that outlasts its `timeoutSeconds` fails as timed out, and its command is
/// killed at the deadline (the exec helper is killed when the probe stops waiting; the command,
/// its child, dies with it): timed-out commands never pile up in the container.
#[test]
fn an_exec_probe_past_its_timeout_fails_and_its_command_is_killed() {
    require_root("an_exec_probe_past_its_timeout");
    let pod = TestPod::new(
        "slowprobe",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slowprobe}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, infinity]
    readinessProbe:
      exec: {command: [sleep, "4711"]}
      periodSeconds: 1
      timeoutSeconds: 1
"#,
    );
    let running = pod.spawn();
    let run = running.wait_for("three timed-out probes", LONG, |r| {
        events_of(r, "main", "probeFailed").len() >= 3
    });
    for failed in events_of(&run, "main", "probeFailed") {
        let message = failed["message"].as_str().unwrap_or_default();
        assert!(message.contains("timed out"), "{failed}\n{}", run.dump());
    }
    // At most the probe in flight: each earlier one was killed at its deadline. (The exec
    // helper's command line names the command too; the command's own starts with it.)
    let commands = || {
        crate::pods::processes_mentioning(&["sleep\u{0}4711"])
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep 4711"))
            .collect::<Vec<_>>()
    };
    let sleeping = commands();
    assert!(
        sleeping.len() <= 1,
        "timed-out probe commands left: {sleeping:?}"
    );
    let _ = running.stop(LONG);
    assert!(commands().is_empty(), "{:?}", commands());
    assert_no_leftovers("slowprobe");
}

/// An exec probe's command that prints without end costs wpod no memory: of each stream the
/// first 10 KiB are kept (the kubelet's limit), the rest read and dropped.
#[test]
fn an_exec_probe_printing_hundreds_of_megabytes_costs_wpod_no_memory() {
    require_root("an_exec_probe_printing_hundreds_of_megabytes");
    let pod = TestPod::new(
        "loudprobe",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: loudprobe}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, infinity]
    readinessProbe:
      exec: {command: [head, -c, "300000000", /dev/zero]}
      periodSeconds: 1
      timeoutSeconds: 30
"#,
    );
    let running = pod.spawn();
    let run = running.wait_for("the probe's success", LONG, |r| {
        !events_of(r, "main", "ready").is_empty()
    });
    assert!(
        events_of(&run, "main", "probeFailed").is_empty(),
        "{}",
        run.dump()
    );
    // The largest wpod's resident memory has been, in KiB.
    let peak = status_field(running.pid(), "VmHWM:");
    assert!(peak < 100 * 1024, "wpod's peak resident memory: {peak} KiB");
    // Its descriptor table was grown to 512 entries while it had one thread: growing it later
    // waits for an RCU grace period. (Without that, a small pod's wpod had 256, grown by the
    // sealed helper's descriptor at 64.)
    let table = status_field(running.pid(), "FDSize:");
    assert!(table >= 512, "wpod's descriptor table: {table} entries");
    let _ = running.stop(LONG);
    assert_no_leftovers("loudprobe");
}

/// An exec probe's command holds no descriptor of wpod's: its stdio only (the exec helper's
/// own, such as the container's pidfd it joins the namespaces through, stay behind).
#[test]
fn an_exec_probes_command_inherits_nothing_but_its_stdio() {
    require_root("an_exec_probes_command_inherits_nothing_but_its_stdio");
    let pod = TestPod::new(
        "fdprobe",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: fdprobe}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, infinity]
    readinessProbe:
      exec: {command: [sh, -c, "echo fds; ls /proc/$$/fd; exit 1"]}
      periodSeconds: 1
"#,
    );
    let running = pod.spawn();
    let run = running.wait_for("a failed probe", LONG, |r| {
        !events_of(r, "main", "probeFailed").is_empty()
    });
    let failed = &events_of(&run, "main", "probeFailed")[0];
    let message = failed["message"].as_str().unwrap_or_default();
    let listed: Vec<&str> = message
        .rsplit_once("fds")
        .map(|(_, fds)| fds.split_whitespace().collect())
        .unwrap_or_default();
    assert!(!listed.is_empty(), "{failed}");
    // Beyond stdio, only the shell's own (dash keeps a descriptor at 10).
    let strays: Vec<_> = listed
        .iter()
        .filter(|fd| !["0", "1", "2", "10"].contains(fd))
        .collect();
    assert!(strays.is_empty(), "the command held {strays:?}: {failed}");
    let _ = running.stop(LONG);
    assert_no_leftovers("fdprobe");
}
