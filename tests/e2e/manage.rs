//! Pods from another shell: `wpod ps` and `wpod logs` on a pod that `wpod run` holds, and on
//! one whose `wpod run` was killed. Needs root.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pods::TestPod;
use crate::text;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: mgmt-ps}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "echo line-1; sleep 1; echo line-2; sleep 2; echo line-3; sleep 60"]
  - name: hello
    image: SIDECARS/hello.wasm
"#;

/// `wpod ps --output json`'s entry for `pod` (null when it is not listed).
fn ps(pod: &str) -> serde_json::Value {
    ps_entry(&["ps", "--output", "json"], pod)
}

/// `wpod ps -a --output json`'s entry for `pod`: ended pods too.
fn ps_all(pod: &str) -> serde_json::Value {
    ps_entry(&["ps", "-a", "--output", "json"], pod)
}

/// Container `name` of a `ps` entry (panics, showing the entry, when it is not listed).
fn container(p: &serde_json::Value, name: &str) -> serde_json::Value {
    p["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no container {name} in {p}"))
}

fn ps_entry(args: &[&str], pod: &str) -> serde_json::Value {
    let out = crate::wpod_output(args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps json");
    all.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pod)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn ps_and_logs_see_a_running_pod_from_another_shell() {
    wpod_test_support::require_root("wpod ps / wpod logs");
    let pod = TestPod::new("mgmt-ps", POD);
    let running = pod.spawn();
    running.wait_for("line-1", Duration::from_secs(30), |r| {
        r.has_line("main", "line-1")
    });
    // ps: the pod, running, with its containers' states.
    let p = ps("mgmt-ps");
    assert_eq!(p["phase"], "Running", "{p}");
    assert_eq!(p["supervised"], true, "{p}");
    let main = container(&p, "main");
    assert_eq!(main["state"], "running", "{p}");
    assert!(main["pid"].as_i64().is_some(), "{p}");
    // logs -c: what the container wrote so far; a pod of two containers needs -c.
    let out = crate::wpod_output(&["logs", "mgmt-ps", "-c", "main"]);
    assert!(
        text(&out.stdout).contains("line-1"),
        "{}",
        text(&out.stderr)
    );
    let out = crate::wpod_output(&["logs", "mgmt-ps"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("choose one with -c"),
        "{}",
        text(&out.stderr)
    );
    // logs -f: follows a live container.
    let mut follow = Command::new(crate::wpod_bin())
        .args(["logs", "-f", "mgmt-ps", "-c", "main"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wpod logs -f");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "line-3") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "logs -f saw only {seen:?}"
        );
        match lines.next() {
            Some(Ok(l)) => seen.push(l),
            _ => break,
        }
    }
    assert!(seen.contains(&"line-3".to_string()), "{seen:?}");
    // SAFETY: kill on the PID of our own child.
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let _ = follow.wait();
    // A killed wpod run: ps says no wpod holds it.
    running.signal(libc::SIGKILL);
    let gone = Instant::now();
    loop {
        let p = ps("mgmt-ps");
        if p["supervised"] == false {
            assert_eq!(p["phase"], "Lost", "{p}");
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "ps still shows it supervised: {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text_ps = text(&crate::wpod_output(&["ps"]).stdout);
    assert!(
        text_ps.contains("no wpod holds this pod") && text_ps.contains("wpod rm mgmt-ps"),
        "{text_ps}"
    );
    // Its logs are still there to read; `wpod rm` clears what the killed run left.
    let out = crate::wpod_output(&["logs", "mgmt-ps", "-c", "main"]);
    assert!(
        text(&out.stdout).contains("line-3"),
        "{}",
        text(&out.stderr)
    );
    let out = crate::wpod_output(&["rm", "mgmt-ps"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    crate::pods::assert_no_leftovers("mgmt-ps");
    assert!(ps_all("mgmt-ps").is_null(), "{}", ps_all("mgmt-ps"));
    drop(running);
}

#[test]
fn stop_terminates_a_pod_in_order_from_another_shell() {
    wpod_test_support::require_root("wpod stop");
    // The main container ignores SIGTERM: only `-t` (a second request) ends it before its
    // 60-second grace period.
    let pod = TestPod::new(
        "mgmt-stop",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: mgmt-stop}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 60
  containers:
  - name: main
    command: [sh, -c, "trap '' TERM; echo up; while true; do sleep 0.2; done"]
"#,
    );
    let running = pod.spawn();
    running.wait_for("up", Duration::from_secs(30), |r| r.has_line("main", "up"));
    let start = Instant::now();
    let out = crate::wpod_output(&["stop", "-t", "1", "mgmt-stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        start.elapsed()
    );
    let run = running.wait(Duration::from_secs(30));
    let stopping = run
        .records
        .iter()
        .any(|r| r["event"] == "podStopping" && r["reason"] == "terminated");
    assert!(stopping, "{}", run.dump());
    assert!(ps("mgmt-stop").is_null(), "{}", ps("mgmt-stop"));
    // Stopping a stopped pod is done already, as podman says (issue 27, item 13); a pod that
    // never was is an error.
    let out = crate::wpod_output(&["stop", "mgmt-stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("was not running"),
        "{}",
        text(&out.stderr)
    );
    let out = crate::wpod_output(&["stop", "mgmt-never-was"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no pod"),
        "{}",
        text(&out.stderr)
    );
    crate::pods::assert_no_leftovers("mgmt-stop");
}

/// `wpod stop -t N` cuts a running preStop hook short, as `kubectl delete --grace-period=N`
/// does (issue 26, item 5): a 50-second preStop sleep no longer runs to its end.
#[test]
fn stop_with_a_short_time_cuts_a_long_pre_stop_short() {
    wpod_test_support::require_root("wpod stop -t with a preStop");
    let pod = TestPod::new(
        "mgmt-prestop",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: mgmt-prestop}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 60
  containers:
  - name: main
    command: [sh, -c, "trap 'exit 0' TERM; echo up; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        sleep: {seconds: 50}
"#,
    );
    let running = pod.spawn();
    running.wait_for("up", Duration::from_secs(30), |r| r.has_line("main", "up"));
    let start = Instant::now();
    let out = crate::wpod_output(&["stop", "-t", "1", "mgmt-prestop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stop took {:?}: the preStop hook ran to its end",
        start.elapsed()
    );
    let run = running.wait(Duration::from_secs(30));
    assert!(
        run.events(Some("main"))
            .iter()
            .any(|e| e["event"] == "killed"),
        "{}",
        run.dump()
    );
    crate::pods::assert_no_leftovers("mgmt-prestop");
}

fn detached_pod(name: &str) -> TestPod {
    TestPod::new(
        name,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "echo hello from {name}; while true; do sleep 0.2; done"]
  - name: hello
    image: SIDECARS/hello.wasm
"#
        ),
    )
}

/// `wpod logs` of a container, waiting until `needle` shows up.
fn wait_for_log(pod: &str, container: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let out = text(&crate::wpod_output(&["logs", pod, "-c", container]).stdout);
        if out.contains(needle) {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{pod}/{container} never wrote {needle:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn detached_pods_outlive_the_command_and_are_managed_from_another_shell() {
    wpod_test_support::require_root("wpod run -d");
    let a = detached_pod("mgmt-det-a");
    let b = detached_pod("mgmt-det-b");
    // Two detached pods at once; each `run -d` returns with the pod's name once it started.
    // The first with a log level, which its supervisor is given.
    for (pod, name, level) in [
        (&a, "mgmt-det-a", "info,wpod_spec::memory=debug"),
        (&b, "mgmt-det-b", "info"),
    ] {
        let manifest = pod.manifest.to_str().unwrap();
        let out = crate::wpod_output(&["--log-level", level, "run", "-d", manifest]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), name);
        assert_eq!(ps(name)["supervised"], true, "{}", ps(name));
    }
    for name in ["mgmt-det-a", "mgmt-det-b"] {
        wait_for_log(name, "main", &format!("hello from {name}"));
        wait_for_log(name, "hello", "hello from a Wasm sidecar");
        assert_eq!(ps(name)["phase"], "Running", "{}", ps(name));
    }
    // The supervisor's own log (at the level it was given): once the pod started, it gave back
    // the stack its start-up had used.
    let root = std::env::var_os("WPOD_ROOT").unwrap_or_else(|| "/var/lib/wpod".into());
    let log = std::path::Path::new(&root).join("detached/mgmt-det-a.log");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let given = said
        .lines()
        .find(|l| l.contains("gave back start-up memory"))
        .unwrap_or_else(|| {
            panic!(
                "{} has no debug line of the memory given back: {said}",
                log.display()
            )
        });
    let stack = given
        .split("stack=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no stack=N in {given}"));
    assert!(stack >= 16 * 1024, "{given}");
    // The same pod twice is refused, naming what to do.
    let again = crate::wpod_output(&["run", "-d", a.manifest.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already running"),
        "{}",
        text(&again.stderr)
    );
    for name in ["mgmt-det-a", "mgmt-det-b"] {
        // A running pod is not removed.
        let out = crate::wpod_output(&["rm", name]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("stop it first"),
            "{}",
            text(&out.stderr)
        );
        let out = crate::wpod_output(&["stop", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(ps(name).is_null(), "{}", ps(name));
        crate::pods::assert_no_leftovers(name);
        // Stopped, it is listed by `ps -a` with its containers' exit codes, and its logs stay
        // readable until `wpod rm`.
        let p = ps_all(name);
        assert_eq!(p["phase"], "Exited", "{p}");
        let main = container(&p, "main");
        assert_eq!(main["state"], "exited", "{p}");
        wait_for_log(name, "main", &format!("hello from {name}"));
        let out = crate::wpod_output(&["rm", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(ps_all(name).is_null(), "{}", ps_all(name));
        let out = crate::wpod_output(&["logs", name, "-c", "main"]);
        assert!(!out.status.success());
    }
    // A pod that cannot start (an image that is not stored, and imagePullPolicy Never: no
    // back-off helps): `run -d` fails with the foreground's error, and nothing is left.
    let bad = TestPod::new(
        "mgmt-det-bad",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: mgmt-det-bad}
spec:
  containers:
  - name: main
    image: 127.0.0.1:1/nothing:1
    imagePullPolicy: Never
"#,
    );
    let out = crate::wpod_output(&["run", "-d", bad.manifest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pod mgmt-det-bad failed to start"),
        "{}",
        text(&out.stderr)
    );
    assert!(ps("mgmt-det-bad").is_null());
    crate::pods::assert_no_leftovers("mgmt-det-bad");
}

#[test]
fn kube_play_events_and_kube_down_as_podman_users_type_them() {
    wpod_test_support::require_root("wpod kube play");
    let pod = detached_pod("mgmt-kube");
    let file = pod.manifest.to_str().unwrap().to_string();
    let out = crate::wpod_output(&["kube", "play", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for_log("mgmt-kube", "main", "hello from mgmt-kube");
    // The pod's events: the same JSON records `wpod run --output json` prints.
    let out = crate::wpod_output(&["events", "--output", "json", "mgmt-kube"]);
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        records.iter().any(|r| r["event"] == "podStarted"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "started" && r["container"] == "main"),
        "{records:?}"
    );
    let out = crate::wpod_output(&["events", "mgmt-kube"]);
    assert!(
        text(&out.stdout).contains("container/main started"),
        "{}",
        text(&out.stdout)
    );
    // `events -f` follows until the pod ends: it sees the stop.
    let follow = Command::new(crate::wpod_bin())
        .args(["events", "-f", "mgmt-kube"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wpod events -f");
    let out = crate::wpod_output(&["kube", "down", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let followed = follow.wait_with_output().unwrap();
    assert!(
        text(&followed.stdout).contains("pod/mgmt-kube finished with exit code"),
        "{}",
        text(&followed.stdout)
    );
    assert!(ps_all("mgmt-kube").is_null(), "{}", ps_all("mgmt-kube"));
    crate::pods::assert_no_leftovers("mgmt-kube");
}

/// `wpod run -d` returns once every container has started (issue 27, item 7), as `podman kube
/// play` does: right after it, `ps` lists both containers running and `logs` of the one that
/// started last has its output, though a native sidecar held them back for two seconds.
#[test]
fn run_detached_returns_once_every_container_has_started() {
    wpod_test_support::require_root("run -d");
    let pod = TestPod::new(
        "mgmt-det-wait",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: mgmt-det-wait}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: gate
    restartPolicy: Always
    command: [sh, -c, 'sleep 2; touch /tmp/up; exec sleep 300']
    startupProbe:
      exec: {command: [test, -f, /tmp/up]}
      periodSeconds: 1
      failureThreshold: 30
  containers:
  - name: first
    command: [sh, -c, 'echo first here; exec sleep 300']
  - name: second
    command: [sh, -c, 'echo second here; exec sleep 300']
"#,
    );
    let started = std::time::Instant::now();
    let out = crate::wpod_output(&["run", "-d", pod.manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "returned after {:?}, before the gate opened",
        started.elapsed()
    );
    let p = ps("mgmt-det-wait");
    for name in ["gate", "first", "second"] {
        assert_eq!(container(&p, name)["state"], "running", "{name}: {p}");
    }
    let logs = crate::wpod_output(&["logs", "-c", "second", "mgmt-det-wait"]);
    let _ = crate::wpod_output(&["stop", "mgmt-det-wait"]);
    let _ = crate::wpod_output(&["rm", "mgmt-det-wait"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    crate::pods::assert_no_leftovers("mgmt-det-wait");
}

/// Reading root's pods needs root (their state is root's alone): an ordinary user pointed at
/// it is told so, not shown an empty table or "no pod" (issue 27, item 12). The user's own
/// state root (rootless, issue 30), which holds no pod yet, lists none.
#[test]
fn an_ordinary_user_is_told_reading_pods_needs_root() {
    wpod_test_support::require_root("an ordinary user's wpod ps");
    let roots = std::env::temp_dir().join(format!("wpod-e2e-ps-user-{}", std::process::id()));
    let (roots_, own) = (roots.join("root's"), roots.join("own"));
    std::fs::create_dir_all(&roots_).unwrap();
    std::fs::create_dir_all(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    let as_nobody = |root: &std::path::Path, args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::wpod_bin())
            .args(args)
            .env("WPOD_ROOT", root)
            .output()
            .expect("setpriv")
    };
    for args in [
        &["ps", "-a"][..],
        &["logs", "some-pod"],
        &["events", "some-pod"],
    ] {
        let out = as_nobody(&roots_, args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("which is uid 0's alone: run it as that user (sudo wpod"),
            "{args:?}: {err}"
        );
    }
    let out = as_nobody(&own, &["ps"]);
    let _ = std::fs::remove_dir_all(&roots);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `rm --all` removes the pods that ended and only those, `rm -f` stops a running pod first
/// (podman's flags), and stop, rm, logs and validate answer in JSON with `-o json` (issue 27,
/// item 13). Under a state root of its own: `--all` sees no other test's pods.
#[test]
fn rm_all_and_force_and_json_answers() {
    wpod_test_support::require_root("wpod rm --all");
    let root = std::env::temp_dir().join("wpod-e2e-rm-all-root");
    let _ = std::fs::remove_dir_all(&root);
    let wpod = |args: &[&str]| {
        crate::wpod()
            .args(args)
            .env("WPOD_ROOT", &root)
            .output()
            .expect("wpod")
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
    };
    let ended = TestPod::new(
        "mgmt-rm-ended",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: mgmt-rm-ended}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: main, command: [sh, -c, 'echo done here']}\n",
    );
    let long = detached_pod("mgmt-rm-long");
    let out = wpod(&["validate", "-o", "json", ended.manifest.to_str().unwrap()]);
    let checked = json(&out);
    assert_eq!(checked[0]["valid"], true, "{checked}");
    assert_eq!(checked[0]["pods"][0]["name"], "mgmt-rm-ended", "{checked}");
    for pod in [&ended, &long] {
        let out = wpod(&["run", "-d", pod.manifest.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The ended one is ended once its journal says so.
    let start = Instant::now();
    while !text(&wpod(&["ps", "-a"]).stdout).contains("Exited(0)") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mgmt-rm-ended never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = wpod(&["logs", "-o", "json", "mgmt-rm-ended"]);
    let line: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(line["line"], "done here", "{line}");
    assert_eq!(line["stream"], "stdout", "{line}");
    let out = wpod(&["stop", "-o", "json", "mgmt-rm-ended"]);
    assert_eq!(json(&out)["wasRunning"], false);

    let removed = json(&wpod(&["rm", "--all", "-o", "json"]));
    assert_eq!(
        removed["removed"],
        serde_json::json!(["mgmt-rm-ended"]),
        "{removed}"
    );
    let removed = json(&wpod(&["rm", "-f", "-o", "json", "mgmt-rm-long"]));
    assert_eq!(
        removed["stopped"],
        serde_json::json!(["mgmt-rm-long"]),
        "{removed}"
    );
    assert_eq!(
        removed["removed"],
        serde_json::json!(["mgmt-rm-long"]),
        "{removed}"
    );
    let listed = text(&wpod(&["ps", "-a"]).stdout);
    assert!(!listed.contains("mgmt-rm"), "{listed}");
    crate::pods::assert_no_leftovers_in(&root, "mgmt-rm-long");
    crate::pods::assert_no_leftovers_in(&root, "mgmt-rm-ended");
    let _ = std::fs::remove_dir_all(&root);
}
