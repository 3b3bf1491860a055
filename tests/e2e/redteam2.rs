//! The second red-team round (issue 23): attacks around the first round's fixes, on wpod's own
//! files and on its budgets. Each test names the finding it guards (A-H, 1-15 of the issue); the
//! registry attacks are in `redteam_registry.rs`. Needs root, and Debian's python3, util-linux
//! (`unshare`, `setpriv`) and passwd (`useradd`).
//!
//! `WPOD_BIN=/path/to/older/wpod cargo test --test e2e redteam2` runs it against another build:
//! on the wpod before issue 23, these tests fail.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pods::{assert_no_leftovers, TestPod};
use crate::text;
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(90);

/// A state root of its own for one test, removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-rt2-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }

    fn state(&self) -> PathBuf {
        self.0.join("root")
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![("WPOD_ROOT".into(), self.state().display().to_string())]
    }

    fn wpod(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::wpod_bin())
            .args(args)
            .envs(self.vars())
            .stdin(Stdio::null())
            .output()
            .expect("run wpod")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local user made for one test (`useradd`), removed when dropped.
struct LocalUser {
    name: String,
    uid: u32,
}

impl LocalUser {
    fn new(name: &str) -> Self {
        let _ = Command::new("userdel").arg(name).output();
        let out = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", name])
            .output()
            .expect("useradd (Debian's passwd package)");
        assert!(out.status.success(), "useradd: {}", text(&out.stderr));
        let id = Command::new("id").args(["-u", name]).output().unwrap();
        let uid = text(&id.stdout).trim().parse().expect("the new user's uid");
        LocalUser {
            name: name.to_string(),
            uid,
        }
    }

    /// `sh -c SCRIPT` as this user: (success, stdout + stderr).
    fn sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.uid),
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux)");
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// Finding A: a container granted SYS_PTRACE in a pod sharing its PID namespace watches for
/// every new process while another container crash-loops and an exec probe runs every second.
/// Before the fix it opened `/proc/N/root` of a container's setup helper (still the host's root)
/// and wrote files on the host, and attached to helpers holding every capability. Now nothing it
/// can see ever holds more than a container's capabilities, and nothing it writes lands on the
/// host.
#[test]
fn a_ptrace_container_never_sees_a_privileged_helper() {
    require_root("a_ptrace_container_never_sees_a_privileged_helper");
    ptrace_race("rt2-race", "");
}

/// Finding A again, in a pod of its own users (`hostUsers: false`, issue 30): the helpers join
/// the pod's user namespace only as they take the container's privileges, and the watcher's
/// `SYS_PTRACE` counts in the pod's user namespace only.
#[test]
fn a_ptrace_container_of_its_own_users_never_sees_a_privileged_helper() {
    require_root("a_ptrace_container_of_its_own_users_never_sees_a_privileged_helper");
    ptrace_race("rt2-race-userns", "\n  hostUsers: false");
}

fn ptrace_race(name: &str, spec: &str) {
    let marker = format!("wpod-rt2-escape-{name}-{}", std::process::id());
    let host_marker = Path::new("/tmp").join(&marker);
    let _ = std::fs::remove_file(&host_marker);
    let mut pod = TestPod::new(
        name,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:{spec}
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: watcher
    command: [python3, -u, -c]
    args:
    - |
      import os, time, ctypes
      libc = ctypes.CDLL(None, use_errno=True)
      me = os.getpid()
      seen, privileged, attached, wrote = set(), 0, 0, 0
      end = time.time() + 12
      while time.time() < end:
          for p in os.listdir("/proc"):
              if not p.isdigit() or int(p) == me:
                  continue
              pid = int(p)
              try:
                  with open(f"/proc/{{pid}}/status") as f:
                      caps = [l for l in f if l.startswith("CapEff:")][0].split()[1]
              except Exception:
                  continue
              if int(caps, 16) & (1 << 21):
                  privileged += 1
              if pid not in seen:
                  seen.add(pid)
                  try:
                      with open(f"/proc/{{pid}}/root/tmp/{marker}", "w") as f:
                          f.write("x")
                      wrote += 1
                  except Exception:
                      pass
                  # Only what holds CAP_SYS_ADMIN is worth attaching to (a traced container
                  # could no longer be reaped by its shim). PTRACE_SEIZE = 0x4206.
                  if int(caps, 16) & (1 << 21) and libc.ptrace(0x4206, pid, 0, 0) == 0:
                      attached += 1
      print(f"seen {{len(seen)}} privileged {{privileged}} attached {{attached}} wrote {{wrote}}", flush=True)
      time.sleep(3600)
    securityContext: {{capabilities: {{add: [SYS_PTRACE]}}}}
  - name: crasher
    command: [sh, -c, "exit 1"]
  - name: probed
    command: [sleep, "3600"]
    livenessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
"#
        ),
    );
    pod.args = vec!["--backoff-base".into(), "20ms".into()];
    let running = pod.spawn();
    let run = running.wait_for("the watcher's verdict", LONG, |r| {
        r.logs("watcher").iter().any(|l| l.starts_with("seen "))
    });
    let verdict = run
        .logs("watcher")
        .into_iter()
        .find(|l| l.starts_with("seen "))
        .unwrap();
    let restarts = run
        .events(Some("crasher"))
        .iter()
        .filter(|e| e["event"] == "started")
        .count();
    let _ = running.stop(LONG);
    let escaped = host_marker.exists();
    let _ = std::fs::remove_file(&host_marker);
    assert!(
        !escaped,
        "a container wrote {} on the host",
        host_marker.display()
    );
    assert!(
        restarts >= 10,
        "the crasher started only {restarts} times: too few to race ({verdict})"
    );
    assert!(
        verdict.contains(" privileged 0 ") && verdict.contains(" attached 0 "),
        "a container saw or attached to a helper holding CAP_SYS_ADMIN: {verdict}"
    );
    assert_no_leftovers(name);
}

/// Finding C: PID 1 of the pod and every other helper run with an empty environment: the
/// `wpod run` caller's (registry tokens, signing passwords) is nowhere a container can read it.
#[test]
fn helpers_carry_no_environment_of_the_caller() {
    require_root("helpers_carry_no_environment_of_the_caller");
    let mut pod = TestPod::new(
        "rt2-environ",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-environ}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader
    command: [python3, -u, -c]
    args:
    - |
      import os, time
      time.sleep(1)
      found = []
      for p in os.listdir("/proc"):
          if p.isdigit():
              try:
                  if b"WPOD_TEST_SECRET" in open(f"/proc/{p}/environ", "rb").read():
                      found.append(p)
              except Exception:
                  pass
      print("pid1-environ", len(open("/proc/1/environ", "rb").read()), "found", found, flush=True)
      time.sleep(3600)
    securityContext: {capabilities: {add: [SYS_PTRACE]}}
"#,
    );
    pod.env
        .push(("WPOD_TEST_SECRET".into(), "hunter2-registry-token".into()));
    let running = pod.spawn();
    let run = running.wait_for("the reader", LONG, |r| {
        r.logs("reader")
            .iter()
            .any(|l| l.starts_with("pid1-environ"))
    });
    let line = run
        .logs("reader")
        .into_iter()
        .find(|l| l.starts_with("pid1-environ"))
        .unwrap();
    let _ = running.stop(LONG);
    assert_eq!(line, "pid1-environ 0 found []", "{}", run.dump());
    assert_no_leftovers("rt2-environ");
}

/// Finding B: a hostPath that holds wpod's state is refused when a container may write it, and
/// for a Wasm sidecar even read-only.
#[test]
fn host_paths_holding_wpods_own_files_are_refused() {
    require_root("host_paths_holding_wpods_own_files_are_refused");
    let root = Root::new("own-paths");
    std::fs::create_dir_all(root.state()).unwrap();
    let manifest = root.0.join("pod.yaml");
    let write = |yaml: &str| {
        let yaml = yaml
            .replace("ABOVE", &root.0.display().to_string())
            .replace(
                "SIDECARS/",
                &format!("{}/", wpod_test_support::sidecars_dir().display()),
            );
        std::fs::write(&manifest, yaml).unwrap();
    };
    write(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-own}
spec:
  containers:
  - name: main
    command: [sleep, "1"]
    volumeMounts: [{name: lib, mountPath: /lib2}]
  volumes:
  - {name: lib, hostPath: {path: ABOVE}}
"#,
    );
    let out = root.wpod(&["validate", manifest.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a writable hostPath above the state root passed"
    );
    assert!(
        err.contains("spec.volumes[0].hostPath.path") && err.contains("wpod's own state"),
        "{err}"
    );
    // Read-only, for a native container: allowed (as Kubernetes trusts a pod author).
    write(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-own}
spec:
  containers:
  - name: main
    command: [sleep, "1"]
    volumeMounts: [{name: lib, mountPath: /lib2, readOnly: true}]
  volumes:
  - {name: lib, hostPath: {path: ABOVE}}
"#,
    );
    let out = root.wpod(&["validate", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Read-only, for a Wasm sidecar: refused.
    write(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-own}
spec:
  containers:
  - name: main
    command: [sleep, "1"]
  - name: side
    image: SIDECARS/hello.wasm
    volumeMounts: [{name: lib, mountPath: /lib2, readOnly: true}]
  volumes:
  - {name: lib, hostPath: {path: ABOVE}}
"#,
    );
    let out = root.wpod(&["validate", manifest.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Wasm sidecar \"side\""),
        "{err}"
    );
}

/// Finding B: a sidecar (or anything else) that rewrites the compiled cache cannot make a pod
/// run other code: two entries swapped with their MAC files are both recompiled, and each pod
/// runs its own component.
#[test]
fn swapped_cache_entries_are_recompiled_never_run() {
    require_root("swapped_cache_entries_are_recompiled_never_run");
    let root = Root::new("cache-swap");
    let pod_of = |name: &str, sidecar: &str, args: &str| {
        let mut pod = TestPod::new(
            name,
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  containers:
  - name: side
    image: SIDECARS/{sidecar}.wasm
    args: [{args}]
"#
            ),
        );
        pod.env = root.vars();
        pod
    };
    let hello = pod_of("rt2-cache-a", "hello", "");
    let probe = pod_of("rt2-cache-b", "probe", "\"env:PATH\"");
    let first = hello.run(LONG);
    assert_eq!(first.code, Some(0), "{}", first.dump());
    let first_probe = probe.run(LONG);
    assert_eq!(first_probe.code, Some(0), "{}", first_probe.dump());
    let cache = root.state().join("cache");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for ext in ["cwasm", "mac"] {
        let (a, b) = (
            entries[0].with_extension(ext),
            entries[1].with_extension(ext),
        );
        let tmp = cache.join("swap");
        std::fs::rename(&a, &tmp).unwrap();
        std::fs::rename(&b, &a).unwrap();
        std::fs::rename(&tmp, &b).unwrap();
    }
    let again = hello.run(LONG);
    assert_eq!(again.code, Some(0), "{}", again.dump());
    assert_eq!(again.logs("side"), first.logs("side"), "{}", again.dump());
    assert!(again.stderr.contains("MAC"), "{}", again.dump());
    let again = probe.run(LONG);
    assert_eq!(
        again.logs("side"),
        first_probe.logs("side"),
        "{}",
        again.dump()
    );
}

/// Finding 1: the state root, the image store and its locks are root's alone, whatever mode the
/// root had; a local user can neither read the store nor hold a lock that blocks wpod.
#[test]
fn the_store_is_closed_to_local_users() {
    require_root("the_store_is_closed_to_local_users");
    let root = Root::new("store-modes");
    std::fs::create_dir_all(root.state()).unwrap();
    // As an older wpod left it.
    std::fs::set_permissions(root.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = root.wpod(&["image", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    for dir in [
        "",
        "images",
        "images/layers",
        "images/blobs",
        "images/ingest",
    ] {
        let p = root.state().join(dir);
        assert_eq!(mode(&p), 0o700, "{} is {:o}", p.display(), mode(&p));
    }
    assert_eq!(mode(&root.state().join("images/lock")), 0o600);
    // Everything above the root is the test's temp dir, open to the user: only the root's own
    // mode keeps them out.
    std::fs::set_permissions(&root.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = LocalUser::new(&format!("wpodrt{}", std::process::id() % 100_000));
    let images = root.state().join("images");
    let (listed, said) = user.sh(&format!("ls {}", images.display()));
    assert!(!listed, "a local user listed the store: {said}");
    let lock = images.join("lock");
    let (locked, said) = user.sh(&format!("flock -s -n {} true", lock.display()));
    assert!(!locked, "a local user took the store's lock: {said}");
    // A root owned by someone else is refused, naming the fix.
    std::fs::create_dir_all(root.0.join("theirs")).unwrap();
    std::os::unix::fs::chown(root.0.join("theirs"), Some(user.uid), Some(user.uid)).unwrap();
    let out = Command::new(crate::wpod_bin())
        .args(["image", "prune"])
        .env("WPOD_ROOT", root.0.join("theirs"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("owned by uid"),
        "{err}"
    );
}

/// Finding H: a state root inside another is refused (a pod of the outer root named like a
/// directory there would remove it).
#[test]
fn nested_state_roots_are_refused() {
    require_root("nested_state_roots_are_refused");
    let root = Root::new("nested");
    let out = root.wpod(&["image", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inner = root.state().join("pods/web/root");
    let out = Command::new(crate::wpod_bin())
        .args(["image", "prune"])
        .env("WPOD_ROOT", &inner)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("inside another one"),
        "{err}"
    );
}

/// Finding H: a pod name Kubernetes accepts but wpod cannot name files after is refused by
/// `validate`, not at run time.
#[test]
fn pod_names_wpod_cannot_hold_are_refused_at_validation() {
    let dir = std::env::temp_dir().join("wpod-rt2-longname");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name.len(), 253);
    let manifest = dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  hostname: short\n  containers:\n  - {{name: main, command: [\"true\"]}}\n"
        ),
    )
    .unwrap();
    let out = crate::wpod_output(&["validate", manifest.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("metadata.name") && err.contains("250"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding D: sidecars whose handle quotas (as the manifest sets them) together exceed what
/// wpod may open are refused with the arithmetic, before anything starts.
#[test]
fn sidecar_quotas_must_fit_what_wpod_may_open() {
    require_root("sidecar_quotas_must_fit_what_wpod_may_open");
    let sidecars: String = (0..20)
        .map(|i| format!("  - {{name: s{i}, image: SIDECARS/hello.wasm}}\n"))
        .collect();
    let mut pod = TestPod::new(
        "rt2-fdbudget",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: rt2-fdbudget, annotations: {{wpod.dev/sidecar-max-handles: \"1024\"}}}}\nspec:\n  containers:\n  - {{name: main, command: [sleep, \"1\"]}}\n{sidecars}"
        ),
    );
    pod.nofile = Some(8192);
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(
        run.stderr.contains("wpod.dev/sidecar-max-handles")
            && run
                .stderr
                .contains("20 Wasm sidecars x 1024 handles = 20480")
            && run.stderr.contains("8192"),
        "{}",
        run.dump()
    );
    assert_no_leftovers("rt2-fdbudget");
}

/// Issue 29: without the annotation, the same pod starts: each sidecar's quota is a share of
/// what wpod may open (8192 here: (8192 - 256 - 8 x 21) / 20 = 388 handles, not the default
/// 1024), and a sidecar that hoards handles is held to that share. The running pod keeps that
/// quota: an apply that adds sidecars it would not fit is refused, with the arithmetic.
#[test]
fn without_a_set_quota_sidecars_share_what_wpod_may_open() {
    require_root("without_a_set_quota_sidecars_share_what_wpod_may_open");
    let yaml = |n: usize| {
        let sidecars: String = (0..n)
            .map(|i| format!("  - {{name: s{i}, image: SIDECARS/hello.wasm}}\n"))
            .collect();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: rt2-fdshare}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, command: [sleep, \"600\"]}}\n  - {{name: hoarder, image: SIDECARS/hostile.wasm, args: [\"sockets:100000\"]}}\n{sidecars}"
        )
    };
    let mut pod = TestPod::new("rt2-fdshare", &yaml(19));
    pod.nofile = Some(8192);
    let running = pod.spawn();
    let run = running.wait_for("the hoarder to stop", LONG, |r| {
        r.events(Some("hoarder"))
            .iter()
            .any(|e| e["event"] == "exited")
    });
    let held = run.lines_starting("hoarder", "holding");
    assert!(
        held.iter().any(|l| l == "holding 256 sockets")
            && !held.iter().any(|l| l == "holding 512 sockets"),
        "the hoarder should get its share (388), no more: {held:?}\n{}",
        run.dump()
    );
    assert_eq!(run.exit("hoarder")["reason"], "Trapped", "{}", run.dump());

    // Eight more at 388 each no longer fit: refused, and the pod runs on unchanged.
    let more = pod.manifest.with_file_name("more.yaml");
    std::fs::write(
        &more,
        yaml(27).replace(
            "SIDECARS/",
            &format!("{}/", wpod_test_support::sidecars_dir().display()),
        ),
    )
    .unwrap();
    let out = crate::wpod_output(&["apply", more.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("pod rt2-fdshare unchanged")
            && err.contains("28 Wasm sidecars x 388 handles"),
        "{err}"
    );
    let _ = running.stop(LONG);
    assert_no_leftovers("rt2-fdshare");
}

/// Findings D and E: within what fits, a sidecar hoarding every handle it may and a client
/// holding thousands of hostPort connections leave wpod the descriptors it needs: the main
/// container keeps restarting (its cgroup, pipes and log files open), and wpod warns about
/// failing accepts at most once per interval.
#[test]
fn hoarders_inside_and_outside_leave_wpod_its_descriptors() {
    require_root("hoarders_inside_and_outside_leave_wpod_its_descriptors");
    let [p0, p1, p2, p3, p4] = [(); 5].map(|_| crate::free_port());
    let mut pod = TestPod::new(
        "rt2-fdflood",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: rt2-fdflood
  annotations: {{wpod.dev/sidecar-max-handles: "1000", wpod.dev/network: none}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [python3, -u, -c]
    args:
    - |
      import selectors, socket, time
      sel = selectors.DefaultSelector()
      for port in range(18470, 18475):
          s = socket.create_server(("127.0.0.1", port), backlog=4096)
          s.setblocking(False)
          sel.register(s, selectors.EVENT_READ)
      print("listening", flush=True)
      conns = []
      end = time.time() + 4
      while time.time() < end:
          for key, _ in sel.select(0.2):
              try:
                  conns.append(key.fileobj.accept()[0])
              except Exception:
                  pass
      raise SystemExit(1)
    ports:
    - {{containerPort: 18470, hostPort: {p0}, hostIP: 127.0.0.1}}
    - {{containerPort: 18471, hostPort: {p1}, hostIP: 127.0.0.1}}
    - {{containerPort: 18472, hostPort: {p2}, hostIP: 127.0.0.1}}
    - {{containerPort: 18473, hostPort: {p3}, hostIP: 127.0.0.1}}
    - {{containerPort: 18474, hostPort: {p4}, hostIP: 127.0.0.1}}
  - name: hoarder
    image: SIDECARS/hostile.wasm
    args: [sockets:100000, sleep:300000]
"#
        ),
    );
    pod.nofile = Some(4096);
    pod.args = vec!["--backoff-base".into(), "100ms".into()];
    let running = pod.spawn();
    running.wait_for("main to listen", LONG, |r| r.has_line("main", "listening"));
    // A thousand connections on each of five hostPorts, far more than the budget left them:
    // the rest wait in the kernel's backlog.
    let mut clients = Vec::new();
    for port in [p0, p1, p2, p3, p4] {
        for _ in 0..1000 {
            match std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().unwrap(),
                Duration::from_millis(200),
            ) {
                Ok(c) => clients.push(c),
                Err(_) => break,
            }
        }
    }
    assert!(clients.len() > 500, "only {} connections", clients.len());
    let run = running.wait_for("main to restart twice", LONG, |r| {
        r.events(Some("main"))
            .iter()
            .filter(|e| e["event"] == "started")
            .count()
            >= 3
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", running.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    drop(clients);
    let run_end = running.stop(LONG);
    assert!(
        run.stderr.matches("accept failed").count() <= 2,
        "accept failures are said more than once per interval: {}",
        run.dump()
    );
    assert!(
        !run.events(Some("main"))
            .iter()
            .any(|e| e["event"] == "failedToStart"),
        "main could not restart: {}",
        run.dump()
    );
    assert!(fds < 4096, "wpod holds {fds} descriptors");
    assert!(!run_end.stderr.contains("panicked"), "{}", run_end.dump());
    assert_no_leftovers("rt2-fdflood");
}

/// Finding F: a memory-backed emptyDir a 16Mi sidecar writes, without a sizeLimit, in a pod
/// whose main container has no limit, holds what its writers may: the sidecar's 16Mi, not
/// half of the host's memory charged to nobody.
#[test]
fn a_memory_volume_a_sidecar_writes_is_sized_by_its_writers() {
    require_root("a_memory_volume_a_sidecar_writes_is_sized_by_its_writers");
    let pod = TestPod::new(
        "rt2-tmpfs",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-tmpfs}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sh, -c, "sleep 4; df -k /shared | tail -1"]
    volumeMounts: [{name: shared, mountPath: /shared, readOnly: true}]
  - name: filler
    image: SIDECARS/hostile.wasm
    args: [fill:/shared/big]
    resources: {limits: {memory: 16Mi}}
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - {name: shared, emptyDir: {medium: Memory}}
"#,
    );
    let run = pod.run(LONG);
    let df = run
        .logs("main")
        .into_iter()
        .find(|l| l.contains("/shared"))
        .unwrap_or_else(|| panic!("no df line\n{}", run.dump()));
    let size_kib: u64 = df
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{df}"));
    assert_eq!(
        size_kib,
        16 * 1024,
        "the volume's size: {df}\n{}",
        run.dump()
    );
    let used_kib: u64 = df
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(used_kib <= 16 * 1024, "{df}");
    assert_no_leftovers("rt2-tmpfs");
}

/// Finding 12: peers the control socket refuses (here root in another mount namespace, as in a
/// container sharing the host's files) are turned away before they take a slot: 64 of them
/// holding their connections delay root's `wpod describe` by nothing.
#[test]
fn refused_control_peers_hold_no_slot() {
    require_root("refused_control_peers_hold_no_slot");
    let pod = TestPod::new(
        "rt2-control",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-control}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, command: [sleep, "3600"]}
"#,
    );
    let running = pod.spawn();
    running.wait_started("main", LONG);
    let socket = Path::new("/var/lib/wpod/pods/rt2-control/control.sock");
    let mut peers = Command::new("unshare")
        .args(["-m", "python3", "-c"])
        .arg(format!(
            "import socket, time\n\
             s = []\n\
             for _ in range(64):\n\
             \x20   c = socket.socket(socket.AF_UNIX); c.connect('{}'); s.append(c)\n\
             print('holding', flush=True)\n\
             time.sleep(30)\n",
            socket.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(peers.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "holding");
    let start = Instant::now();
    let out = crate::wpod_output(&["describe", "rt2-control"]);
    let took = start.elapsed();
    let _ = peers.kill();
    let _ = peers.wait();
    let _ = running.stop(LONG);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(2),
        "describe took {took:?} behind refused peers"
    );
    assert_no_leftovers("rt2-control");
}

/// Finding H: a crash loop's events no longer grow the journal without bound: it is rotated
/// past 1 MiB, and `wpod ps` still folds the pod's state from it.
#[test]
fn the_event_journal_is_bounded() {
    require_root("the_event_journal_is_bounded");
    let mut pod = TestPod::new(
        "rt2-journal",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-journal}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
  - name: steady
    command: [sleep, "3600"]
  - name: crasher
    command: [sh, -c, "exit 3"]
    livenessProbe:
      exec: {command: ["false"]}
"#,
    );
    pod.args = vec!["--backoff-base".into(), "1ms".into()];
    let running = pod.spawn();
    let logs = Path::new("/var/lib/wpod/logs/rt2-journal");
    let journal = logs.join("events.jsonl");
    let rotated = logs.join("events.jsonl.1");
    let start = Instant::now();
    while !rotated.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rotated.exists(), "the journal never rotated");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bound = (1 << 20) + (64 << 10);
    assert!(size(&journal) <= bound && size(&rotated) <= bound);
    // While it keeps rotating, every `ps` sees the whole pod (a reader once found the journal
    // gone between the rename and the new file: a pod with no containers).
    let mut lost = None;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) && lost.is_none() {
        let ps = text(&crate::wpod_output(&["ps", "--output", "json"]).stdout);
        let list: serde_json::Value = serde_json::from_str(&ps).unwrap_or_default();
        let mine = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "rt2-journal")
            .cloned();
        let steady = mine.as_ref().is_some_and(|p| {
            p["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == "steady" && c["state"] == "running")
        });
        if !steady {
            lost = Some(ps);
        }
    }
    let _ = running.stop(LONG);
    if let Some(ps) = lost {
        panic!("ps lost the steady container around a rotation: {ps}");
    }
    assert_no_leftovers("rt2-journal");
}

/// Finding 8: `wpod apply` checks the change before it pulls anything, pulls outside the pod's
/// cgroup (a process of its own), and a refused apply leaves no trace of its containers in
/// `wpod ps`.
#[test]
fn a_refused_apply_pulls_nothing_and_leaves_no_phantom() {
    require_root("a_refused_apply_pulls_nothing_and_leaves_no_phantom");
    let dir = std::env::temp_dir().join("wpod-rt2-apply");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let registries = dir.join("registries.conf");
    // A registry nobody listens on: any pull would fail (and take its time).
    std::fs::write(
        &registries,
        "[[registry]]\nlocation = \"127.0.0.1:9\"\ninsecure = true\n",
    )
    .unwrap();
    let base = r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-apply}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, "3600"]
"#;
    let mut pod = TestPod::new("rt2-apply", base);
    pod.env = vec![(
        "WPOD_REGISTRIES_CONF".into(),
        registries.display().to_string(),
    )];
    let running = pod.spawn();
    running.wait_started("main", LONG);
    let apply = |yaml: &str| {
        let file = dir.join("change.yaml");
        std::fs::write(&file, yaml).unwrap();
        let start = Instant::now();
        let out = Command::new(crate::wpod_bin())
            .args(["apply", file.to_str().unwrap()])
            .envs(pod.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (out, start.elapsed())
    };
    // A change the running pod cannot take (a native container added, with an image): refused
    // before its image is pulled.
    let (out, took) = apply(&format!(
        "{base}  - name: added\n    image: 127.0.0.1:9/team/native:1\n    command: [sleep, \"1\"]\n  - name: changed\n    command: [sleep, \"2\"]\n"
    ));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("only Wasm sidecars can be added"), "{err}");
    assert!(
        !err.contains("127.0.0.1:9"),
        "it tried to pull first: {err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A sidecar whose image cannot be pulled: refused, and nothing of it in the pod's journal.
    let (out, _) = apply(&format!(
        "{base}  - name: phantom\n    image: 127.0.0.1:9/team/sidecar:1\n"
    ));
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let ps = crate::wpod_output(&["ps", "--output", "json"]);
    let ps = text(&ps.stdout);
    let journal = std::fs::read_to_string("/var/lib/wpod/logs/rt2-apply/events.jsonl").unwrap();
    let _ = running.stop(LONG);
    assert!(
        !ps.contains("phantom"),
        "a refused apply left a container in ps: {ps}"
    );
    assert!(!journal.contains("phantom"), "{journal}");
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_leftovers("rt2-apply");
}

/// Finding 9: `wpod load` reads a layout's files beneath its directory, regular files only,
/// within caps: an `index.json` that is a symlink to /dev/zero, or a FIFO, is refused at once
/// (it once read until memory ran out, or hung).
#[test]
fn a_hostile_layout_is_refused_without_reading_it() {
    require_root("a_hostile_layout_is_refused_without_reading_it");
    let root = Root::new("layout");
    let layout = root.0.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", layout.join("index.json")).unwrap();
    let load = || {
        let start = Instant::now();
        let mut child = Command::new(crate::wpod_bin())
            .args(["load", "--yes", layout.to_str().unwrap()])
            .envs(root.vars())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (out, start.elapsed())
    };
    let (out, took) = load();
    assert!(
        took < Duration::from_secs(10),
        "load took {took:?} on /dev/zero"
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("symlink"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(layout.join("index.json")).unwrap();
    nix::unistd::mkfifo(
        &layout.join("index.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (out, took) = load();
    assert!(
        took < Duration::from_secs(10),
        "load hung on a FIFO ({took:?})"
    );
    assert!(
        text(&out.stderr).contains("not a regular file"),
        "{}",
        text(&out.stderr)
    );
}

/// Finding 3: `wpod logs` keeps a container's bytes in its files, but what it prints on a
/// terminal is escaped (`--raw` prints the bytes).
#[test]
fn logs_are_escaped_on_a_terminal_and_raw_on_request() {
    require_root("logs_are_escaped_on_a_terminal_and_raw_on_request");
    let pod = TestPod::new(
        "rt2-logs",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rt2-logs}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [printf, "before\u001b[2Jafter\n"]
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let on_terminal = |args: &str| {
        let out = Command::new("script")
            .args([
                "-qec",
                &format!("{} logs {args} rt2-logs", crate::wpod_bin().display()),
                "/dev/null",
            ])
            .output()
            .expect("script (util-linux)");
        text(&out.stdout)
    };
    let shown = on_terminal("-c main");
    assert!(
        shown.contains("before\\x1b[2Jafter") && !shown.contains('\u{1b}'),
        "{shown:?}"
    );
    let raw = on_terminal("--raw -c main");
    assert!(raw.contains("before\u{1b}[2Jafter"), "{raw:?}");
    let piped = crate::wpod_output(&["logs", "-c", "main", "rt2-logs"]);
    assert!(text(&piped.stdout).contains("before\u{1b}[2Jafter"));
    assert_no_leftovers("rt2-logs");
}
