//! Wasm sidecars with capability handles to the pod (issue 4). Every capability has a test that
//! shows the grant works beside one that shows its absence is enforced. The sidecars are the
//! `probe` and `main-probe` guests (guests/probe), which run the actions named in their args.
//! Needs root and Debian's python3.

use std::net::SocketAddr;
use std::time::Duration;

use crate::pods::{assert_no_leftovers, TestPod};
use crate::{text, wpod_output};
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

/// A python main container answering `reply` to every connection on 127.0.0.1:`port`.
fn replier(port: u16, reply: &str) -> String {
    format!(
        r#"  - name: main
    command: [python3, -u, -c]
    args:
    - |
      import socket
      s = socket.create_server(("127.0.0.1", {port}))
      print("listening", flush=True)
      while True:
          c, _ = s.accept(); c.recv(100); c.sendall(b"{reply}\n"); c.close()
"#
    )
}

fn assert_ok(run: &crate::pods::PodRun, container: &str, action: &str, expect: &str) {
    let got = run.outcome(container, action);
    assert!(
        got.starts_with("ok: ") && got.contains(expect),
        "{action}: expected ok with {expect:?}, got {got:?}\n{}",
        run.dump()
    );
}

fn assert_err(run: &crate::pods::PodRun, container: &str, action: &str) {
    let got = run.outcome(container, action);
    assert!(
        got.starts_with("err: "),
        "{action} must be refused, got {got:?}\n{}",
        run.dump()
    );
}

#[test]
fn network_reaches_the_pod_loopback_only_and_listens_only_on_declared_ports() {
    require_root("network_reaches_the_pod_loopback_only");
    // A server on the host's own loopback: a sidecar must not reach it.
    let host_port = crate::free_port();
    let host_server =
        std::net::TcpListener::bind(("127.0.0.1", host_port)).expect("bind host port");
    let pod = TestPod::new(
        "wasm-net",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: wasm-net}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: probe
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:300, connect:127.0.0.1:18410, connect:127.0.0.1:{host_port}, connect:10.1.2.3:80, "connect:[2001:db8::1]:80", listen:18412, listen:18413, resolve:db.example.test, resolve:localhost, exit:0]
    ports: [{{containerPort: 18412}}]
  containers:
{}"#,
            replier(18410, "pong-from-the-pod")
        ),
    );
    let running = pod.spawn();
    let run = running.wait_for("the probe to finish", LONG, |r| {
        r.logs("probe")
            .iter()
            .any(|l| l.starts_with("resolve:localhost"))
    });
    assert_ok(
        &run,
        "probe",
        "connect:127.0.0.1:18410",
        "pong-from-the-pod",
    );
    // The host's loopback is not the pod's.
    assert_err(&run, "probe", &format!("connect:127.0.0.1:{host_port}"));
    assert_err(&run, "probe", "connect:10.1.2.3:80");
    assert_err(&run, "probe", "connect:[2001:db8::1]:80");
    assert_ok(&run, "probe", "listen:18412", "bound"); // declared in its ports
    assert_err(&run, "probe", "listen:18413"); // not declared
                                               // Without outbound rules no name is looked up; the pod's own names need none.
    assert_err(&run, "probe", "resolve:db.example.test");
    assert_ok(&run, "probe", "resolve:localhost", "127.0.0.1:80");
    drop(host_server);
    let _ = running.stop(LONG);
    assert_no_leftovers("wasm-net");
}

/// A TCP socket of a process, as the test sees it through a copy of its descriptor.
#[derive(Debug)]
struct Socket {
    local: SocketAddr,
    peer: Option<SocketAddr>,
    listening: bool,
    nodelay: bool,
}

/// The TCP sockets of `pid` and its children, read through copies of their descriptors
/// (`pidfd_getfd`, which root may take from any process).
fn tcp_sockets(pid: i32) -> Vec<Socket> {
    use nix::sys::socket::{getpeername, getsockname, getsockopt, sockopt, SockaddrStorage};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let inet = |a: nix::Result<SockaddrStorage>| -> Option<SocketAddr> {
        let a = a.ok()?;
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::V4((*v4).into()))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
    };
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid == Some(pid.to_string().as_str()) {
            pids.extend(
                entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok()),
            );
        }
    }
    let mut found = Vec::new();
    for p in pids {
        // SAFETY: pidfd_open takes a PID and flags, and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
        if pidfd < 0 {
            continue;
        }
        // SAFETY: just made, owned here alone.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        for entry in std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if !is_socket {
                continue;
            }
            // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that process and flags,
            // and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
            if fd < 0 {
                continue;
            }
            // SAFETY: just made, owned here alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let (Some(local), Ok(nodelay)) = (
                inet(getsockname(fd.as_raw_fd())),
                getsockopt(&fd, sockopt::TcpNoDelay),
            ) else {
                continue;
            };
            found.push(Socket {
                local,
                peer: inet(getpeername(fd.as_raw_fd())),
                listening: getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false),
                nodelay,
            });
        }
    }
    found
}

/// Issue 29: WASI 0.2 cannot turn off Nagle's algorithm, so the host does: the socket a sidecar
/// listens on, the one it accepts from it and the one it connects all have TCP_NODELAY (a
/// response written in pieces no longer waits 40 ms for the peer's delayed ACK).
#[test]
fn a_sidecars_listening_accepted_and_connected_sockets_have_tcp_nodelay() {
    require_root("TCP_NODELAY");
    let pod = TestPod::new(
        "wasm-nodelay",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-nodelay}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sleep, "600"]
  - name: server
    image: SIDECARS/probe.wasm
    args: ["park:18420:300000"]
    ports: [{containerPort: 18420}]
  - name: client
    image: SIDECARS/probe.wasm
    args: ["hold:127.0.0.1:18420:300000"]
"#,
    );
    let running = pod.spawn();
    running.wait_for("the client connected", LONG, |r| {
        r.has_line("client", "hold:127.0.0.1:18420 connected")
    });
    // The server's accept may come after the client's connect returns: look until all three
    // are there with the option, or a while has passed.
    let start = std::time::Instant::now();
    let (listener, accepted, connected) = loop {
        let sockets = tcp_sockets(running.pid());
        let pick = |f: &dyn Fn(&Socket) -> bool| sockets.iter().find(|s| f(s)).map(|s| s.nodelay);
        let port = |a: &SocketAddr| a.port() == 18420;
        let seen = (
            pick(&|s| s.listening && port(&s.local)),
            pick(&|s| !s.listening && port(&s.local) && s.peer.is_some()),
            pick(&|s| s.peer.as_ref().is_some_and(port)),
        );
        if seen == (Some(true), Some(true), Some(true)) || start.elapsed() > LONG {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let all = format!("{:#?}", tcp_sockets(running.pid()));
    assert_eq!(listener, Some(true), "the listener: {all}");
    assert_eq!(accepted, Some(true), "the accepted socket: {all}");
    assert_eq!(connected, Some(true), "the connected socket: {all}");
    let _ = running.stop(LONG);
    assert_no_leftovers("wasm-nodelay");
}

#[test]
fn two_pods_on_the_same_port_each_reach_their_own_server() {
    require_root("two_pods_on_the_same_port");
    let pod = |name: &str, reply: &str| {
        TestPod::new(
            name,
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: probe
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:300, connect:127.0.0.1:18420, sleep:200, connect:127.0.0.1:18420]
  containers:
{}"#,
                replier(18420, reply)
            ),
        )
    };
    let (a, b) = (pod("same-port-a", "i-am-a"), pod("same-port-b", "i-am-b"));
    let (ra, rb) = (a.spawn(), b.spawn());
    let done = |r: &crate::pods::PodRun| {
        r.logs("probe")
            .iter()
            .filter(|l| l.starts_with("connect:"))
            .count()
            == 2
    };
    let (oa, ob) = (
        ra.wait_for("pod a's probe", LONG, done),
        rb.wait_for("pod b's probe", LONG, done),
    );
    for line in oa
        .logs("probe")
        .iter()
        .filter(|l| l.starts_with("connect:"))
    {
        assert!(line.ends_with("ok: i-am-a"), "pod a reached {line}");
    }
    for line in ob
        .logs("probe")
        .iter()
        .filter(|l| l.starts_with("connect:"))
    {
        assert!(line.ends_with("ok: i-am-b"), "pod b reached {line}");
    }
    ra.signal(libc::SIGINT);
    rb.signal(libc::SIGINT);
    let _ = (ra.wait(LONG), rb.wait(LONG));
    assert_no_leftovers("same-port-a");
    assert_no_leftovers("same-port-b");
}

#[test]
fn files_are_the_volumes_only_read_only_honoured_and_symlinks_lead_nowhere() {
    require_root("files_are_the_volumes_only");
    let pod = TestPod::new(
        "wasm-fs",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-fs}
spec:
  restartPolicy: Never
  initContainers:
  - name: planter
    command: [sh, -c, "echo from-host > /data/seed; echo config > /conf/app.conf; ln -s /etc/passwd /data/planted-abs; ln -s ../../../../../../etc/passwd /data/planted-rel"]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: conf, mountPath: /conf}
  - name: probe
    image: SIDECARS/probe.wasm
    args:
    - read:/data/seed
    - write:/data/by-wasm:wasm-wrote-this
    - read:/conf/app.conf
    - write:/conf/app.conf:overwritten
    - read:/etc/passwd
    - read:/data/../../etc/passwd
    - read:/data/planted-abs
    - read:/data/planted-rel
    - ls:/
    - symlink:/etc/passwd:/data/evil-abs
    - symlink:../../../../../../etc/passwd:/data/evil-rel
    - symlink:by-wasm:/data/inside-link
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: conf, mountPath: /conf, readOnly: true}
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      echo "main read: $(cat /data/by-wasm)"
      for f in evil-abs evil-rel inside-link; do
        if out=$(cat /data/$f 2>&1); then echo "$f followed: $(echo "$out" | head -c 20)"; else echo "$f not followed"; fi
      done
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, emptyDir: {}}
  - {name: conf, emptyDir: {}}
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    // The grant: its volumes, read-write where not readOnly.
    assert_ok(&run, "probe", "read:/data/seed", "from-host");
    assert_ok(
        &run,
        "probe",
        "write:/data/by-wasm:wasm-wrote-this",
        "written",
    );
    assert_ok(&run, "probe", "read:/conf/app.conf", "config");
    run.assert_line("main", "main read: wasm-wrote-this");
    // Its absence: nothing else, no writes to a readOnly volume, no way out.
    assert_err(&run, "probe", "write:/conf/app.conf:overwritten");
    assert_err(&run, "probe", "read:/etc/passwd");
    assert_err(&run, "probe", "read:/data/../../etc/passwd");
    assert_err(&run, "probe", "read:/data/planted-abs");
    assert_err(&run, "probe", "read:/data/planted-rel");
    assert_err(&run, "probe", "ls:/");
    // Links the sidecar plants lead the native container nowhere either (nosymfollow).
    run.assert_line("main", "evil-abs not followed");
    run.assert_line("main", "evil-rel not followed");
    run.assert_line("main", "inside-link not followed");
    // Each refusal the host saw is an event naming the mount and the field.
    let denied: Vec<String> = run
        .events(Some("probe"))
        .iter()
        .filter(|e| e["event"] == "denied")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    let mounts = "spec.initContainers[1].volumeMounts";
    for want in [
        format!("denied write to /conf/app.conf: volume \"conf\" is mounted read-only ({mounts}[1].readOnly)"),
        format!("denied open of /data/../../etc/passwd: the path leads out of volume \"data\" (mounted at /data) ({mounts}[0])"),
        format!("denied open of /data/planted-abs: the path leads out of volume \"data\" (mounted at /data) ({mounts}[0])"),
        format!("denied open of /data/planted-rel: the path leads out of volume \"data\" (mounted at /data) ({mounts}[0])"),
    ] {
        assert!(denied.contains(&want), "no event {want:?} in {denied:#?}");
    }
    assert_no_leftovers("wasm-fs");
}

#[test]
fn main_process_is_readable_with_shared_pid_namespace_and_signalable_with_kill() {
    require_root("main_process_is_readable");
    let pod = TestPod::new(
        "wasm-proc",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-proc}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: watcher
    restartPolicy: Always
    image: SIDECARS/main-probe.wasm
    args: [ready, wait-main-started, logs:main:2, procs, stats:main, signal:main:10, stats:nobody]
  - name: killer
    restartPolicy: Always
    image: SIDECARS/main-probe.wasm
    args: [ready, wait-main-started, sleep:300, signal:main:10]
    securityContext:
      capabilities: {add: [KILL]}
  containers:
  - name: main
    command: [python3, -u, -c]
    args:
    - |
      import signal, time
      signal.signal(signal.SIGUSR1, lambda *a: print("main got SIGUSR1", flush=True))
      print("first line", flush=True)
      print("second line", flush=True)
      while True: time.sleep(0.1)
"#,
    );
    let running = pod.spawn();
    let run = running.wait_for("the signal to arrive", LONG, |r| {
        r.has_line("main", "main got SIGUSR1") && r.logs("watcher").len() >= 5
    });
    assert_ok(&run, "watcher", "procs", "main=State::Running");
    let stats = run.outcome("watcher", "stats:main");
    let rss: u64 = stats
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rss="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        rss > 1 << 20,
        "rss of a python process should be over 1 MiB: {stats}"
    );
    assert_ok(&run, "watcher", "logs:main:2", "first line|second line");
    // Without KILL the same call is refused; with it the main container sees the signal.
    let denied = run.outcome("watcher", "signal:main:10");
    assert!(
        denied.starts_with("err: ") && denied.contains("KILL"),
        "{denied}"
    );
    assert_ok(&run, "killer", "signal:main:10", "sent");
    assert_eq!(
        run.logs("main")
            .iter()
            .filter(|l| l.contains("got SIGUSR1"))
            .count(),
        1,
        "{}",
        run.dump()
    );
    // Only the pod's own containers.
    assert!(run
        .outcome("watcher", "stats:nobody")
        .contains("NoSuchContainer"));
    let _ = running.stop(LONG);
    assert_no_leftovers("wasm-proc");
}

#[test]
fn a_component_importing_main_process_is_refused_without_share_process_namespace() {
    let dir = std::env::temp_dir().join("wpod-e2e-refused");
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = crate::pods::TestDir(dir.clone());
    let manifest = dir.join("pod.yaml");
    let sidecar = wpod_test_support::sidecar("main-probe");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: refused}}\nspec:\n  containers:\n  - name: main\n    command: [sleep, \"1\"]\n  - name: watcher\n    image: {}\n",
            sidecar.display()
        ),
    )
    .unwrap();
    let expected = format!(
        "{}:9:12: spec.containers[1].image: sidecar \"watcher\" imports wpod:sidecar/main-process@0.2.2, which this pod does not grant: set spec.shareProcessNamespace: true to grant it\n",
        manifest.display()
    );
    for cmd in ["validate", "run"] {
        let out = wpod_output(&[cmd, manifest.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(text(&out.stderr), expected, "{cmd}");
    }
    // `run` refused before creating anything.
    assert!(!std::path::Path::new("/var/lib/wpod/pods/refused").exists());
}

#[test]
fn memory_limit_fails_allocations_and_a_trap_ends_only_its_sidecar() {
    require_root("memory_limit_fails_allocations");
    let pod = TestPod::new(
        "wasm-limits",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-limits}
spec:
  restartPolicy: Never
  initContainers:
  - name: hungry
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, alloc:4, alloc:64]
    resources: {limits: {memory: 16Mi}}
  - name: crasher
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, trap]
  containers:
  - name: main
    command: [sh, -c, "sleep 1; echo main finished"]
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(
        run.code,
        Some(0),
        "a trapping sidecar must not fail the pod\n{}",
        run.dump()
    );
    assert_ok(&run, "hungry", "alloc:4", "4 MiB");
    assert_err(&run, "hungry", "alloc:64");
    assert_ok(&run, "hungry", "ready", "told");
    assert!(
        run.events(Some("hungry"))
            .iter()
            .any(|e| e["event"] == "ready"),
        "{}",
        run.dump()
    );
    run.assert_line("crasher", "wasm trap:");
    assert_eq!(run.exit("crasher")["reason"], "Trapped", "{}", run.dump());
    assert!(run.has_line("main", "main finished"));
    assert_no_leftovers("wasm-limits");
}

#[test]
fn a_spinning_sidecar_blocks_nobody_and_is_stopped_at_termination() {
    require_root("a_spinning_sidecar_blocks_nobody");
    let pod = TestPod::new(
        "wasm-spin",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-spin}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: spinner
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, spin]
  - name: other
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:300, env:MARK, sleep:300, env:MARK]
    env: [{name: MARK, value: still-running}]
  containers:
  - name: main
    command: [sh, -c, "sleep 3; echo main done"]
"#,
    );
    // Two sidecars on a 2-thread runtime, one spinning forever: the other still ran to its end.
    let run = run_spinners(&pod, &["spinner"]);
    assert!(
        run.events(Some("spinner"))
            .iter()
            .any(|e| e["event"] == "killed"),
        "{}",
        run.dump()
    );
    assert_no_leftovers("wasm-spin");
}

/// Runs `pod`, whose `spinners` spin until stopped and whose sidecar `other` prints
/// `ok: still-running` twice, and asserts that the pod ended well within 10 s, every spinner
/// spun and was stopped (137), and `other` still ran to its end.
fn run_spinners(pod: &TestPod, spinners: &[&str]) -> crate::pods::PodRun {
    let started = std::time::Instant::now();
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    for spinner in spinners {
        assert!(run.has_line(spinner, "spin started"), "{}", run.dump());
        assert_eq!(run.exit(spinner)["code"], 137, "{}", run.dump());
    }
    assert_eq!(
        run.logs("other")
            .iter()
            .filter(|l| l.ends_with("ok: still-running"))
            .count(),
        2,
        "{}",
        run.dump()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the pod took {:?}",
        started.elapsed()
    );
    run
}

/// The epoch ticker stops while no guest runs Wasm (`sidecars/engine.rs`); guests that start
/// computing after the pod has idled must wake it, or they would never yield: two spinners on
/// the pod's two runtime threads would then keep the third sidecar from running at all, and
/// could not be stopped.
#[test]
fn guests_that_spin_after_the_pod_idled_still_yield_and_stop() {
    require_root("guests_that_spin_after_the_pod_idled");
    let pod = TestPod::new(
        "wasm-spin-late",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-spin-late}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: one
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:1500, spin]
  - name: two
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:1500, spin]
  - name: other
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: [ready, sleep:1800, env:MARK, sleep:300, env:MARK]
    env: [{name: MARK, value: still-running}]
  containers:
  - name: main
    command: [sh, -c, "sleep 4; echo main done"]
"#,
    );
    run_spinners(&pod, &["one", "two"]);
    assert_no_leftovers("wasm-spin-late");
}

/// A pod whose sidecars all wait (here in `lifecycle.next-event`) costs no wake-ups of the
/// epoch ticker: it ticked 100 times a second for every pod with sidecars.
#[test]
fn an_idle_pods_epoch_ticker_sleeps() {
    require_root("an_idle_pods_epoch_ticker_sleeps");
    let pod = TestPod::new(
        "wasm-idle",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-idle}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, "60"]
  - name: a
    image: SIDECARS/probe.wasm
    args: [ready, wait-stopping]
  - name: b
    image: SIDECARS/probe.wasm
    args: [ready, wait-stopping]
"#,
    );
    let running = pod.spawn();
    // Ready, and told that main started (an event that brings them back into Wasm once).
    running.wait_for("both sidecars ready and main started", LONG, |r| {
        r.has_line("a", "told the pod") && r.has_line("b", "told the pod") && r.started("main")
    });
    let tasks = format!("/proc/{}/task", running.pid());
    let ticker = std::fs::read_dir(&tasks)
        .expect("the pod's threads")
        .filter_map(Result::ok)
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "wpod-epoch")
        })
        .map(|t| t.path())
        .expect("an epoch ticker thread in the pod's wpod");
    let wake_ups = || {
        let status = std::fs::read_to_string(ticker.join("status")).expect("ticker status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("voluntary_ctxt_switches")
    };
    // Past the ticks the sidecars' start took, and the ones that follow before it parks.
    std::thread::sleep(Duration::from_millis(500));
    let before = wake_ups();
    std::thread::sleep(Duration::from_secs(2));
    let after = wake_ups();
    assert!(
        after - before <= 2,
        "the epoch ticker woke {} times in 2 s of an idle pod",
        after - before
    );
    running.signal(libc::SIGTERM);
    let run = running.wait(LONG);
    assert!(run.has_line("a", "stopping with"), "{}", run.dump());
    assert_no_leftovers("wasm-idle");
}

#[test]
fn compiled_components_are_cached_and_a_corrupt_entry_is_recompiled() {
    require_root("compiled_components_are_cached");
    let root = std::env::temp_dir().join("wpod-e2e-cache-root");
    let _ = std::fs::remove_dir_all(&root);
    let mut pod = TestPod::new(
        "wasm-cache",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-cache}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: SIDECARS/probe.wasm
    args: [env:X]
    env: [{name: X, value: from-the-pod}]
"#,
    );
    pod.env
        .push(("WPOD_ROOT".into(), root.display().to_string()));
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(root.join("cache"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pod.run(LONG);
    assert_ok(&first, "probe", "env:X", "from-the-pod");
    // The first run says it compiles, and how long it took (issue 27, item 4).
    let compiling = first.events(Some("probe"));
    let compiling: Vec<&str> = compiling
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|k| k.starts_with("compil"))
        .collect();
    assert_eq!(compiling, ["compiling", "compiled"], "{}", first.dump());
    let cached = entries();
    assert_eq!(cached.len(), 1, "one compiled component cached: {cached:?}");
    let compiled = std::fs::read(&cached[0]).unwrap();

    // Tampered bytes are never deserialized: the entry is recompiled and the pod still runs.
    let mut bad = compiled.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&cached[0], &bad).unwrap();
    let second = pod.run(LONG);
    assert_ok(&second, "probe", "env:X", "from-the-pod");
    assert!(
        second.stderr.contains("does not carry wpod's MAC"),
        "{}",
        second.dump()
    );
    assert_eq!(
        std::fs::read(&cached[0]).unwrap(),
        compiled,
        "the entry was rewritten"
    );

    // A valid entry is used as it is.
    let third = pod.run(LONG);
    assert_ok(&third, "probe", "env:X", "from-the-pod");
    assert!(!third.stderr.contains("recompiling"), "{}", third.dump());
    assert!(
        !third
            .events(Some("probe"))
            .iter()
            .any(|e| e["event"] == "compiling"),
        "{}",
        third.dump()
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// `wpod compile` puts a component's compiled code in the cache before its first run, which
/// then compiles nothing (issue 27, item 4); a file that is no component is named as such.
#[test]
fn wpod_compile_warms_the_cache_ahead_of_the_first_run() {
    require_root("wpod_compile_warms_the_cache");
    let root = std::env::temp_dir().join("wpod-e2e-compile-root");
    let _ = std::fs::remove_dir_all(&root);
    let component = wpod_test_support::sidecar("probe");
    let compile = |args: &[&str]| {
        crate::wpod()
            .arg("compile")
            .args(args)
            .env("WPOD_ROOT", &root)
            .output()
            .unwrap()
    };
    let out = compile(&[component.to_str().unwrap()]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(": compiled (") && said.contains(" in "),
        "{said}"
    );
    let out = compile(&[component.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("already compiled"),
        "{}",
        text(&out.stdout)
    );
    let out = compile(&["Cargo.toml"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Cargo.toml is not a Wasm component"),
        "{}",
        text(&out.stderr)
    );

    let mut pod = TestPod::new(
        "wasm-precompiled",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-precompiled}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: SIDECARS/probe.wasm
    args: [env:X]
    env: [{name: X, value: precompiled}]
"#,
    );
    pod.env
        .push(("WPOD_ROOT".into(), root.display().to_string()));
    let run = pod.run(LONG);
    assert_ok(&run, "probe", "env:X", "precompiled");
    assert!(
        !run.events(Some("probe"))
            .iter()
            .any(|e| e["event"] == "compiling"),
        "{}",
        run.dump()
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_bench_command_measures_every_kind_of_start() {
    require_root("the_bench_command_measures_every_kind_of_start");
    let probe = wpod_test_support::sidecar("probe");
    let out = wpod_output(&[
        "bench",
        "--runs",
        "1",
        "--density",
        "3",
        "--json",
        "--component",
        probe.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let kinds: Vec<&str> = report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["cold", "warm", "restart"]);
    // Shape only (speed is for BENCHMARKS.md, not for tests): every start reached the guest.
    for t in report["timings"].as_array().unwrap() {
        assert!(
            t["first_connect_ms"]["median"].as_f64().unwrap() > 0.0,
            "{t}"
        );
    }
    assert_eq!(report["density"]["sidecars"], 3);
    assert_eq!(
        report["density"]["running"], 3,
        "every idle sidecar counted started"
    );
}

/// A pod of `n` native sidecars (each the probe, ready then idle until stopped) before a main
/// container that exits at once: the main container starts only once every sidecar is ready.
/// Each sidecar's handle quota is what lets `n` of them fit the descriptors wpod may open here
/// (issue 23, finding D: the hard limit, which a test cannot raise without CAP_SYS_RESOURCE).
fn many_sidecars_pod(name: &str, n: usize) -> String {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    // wpod's reserve (256) and 8 per container, with room to spare.
    let left = hard.saturating_sub(256 + 8 * (n as u64 + 1) + 512);
    // The annotation's floor is 32: past what fits, the pod is refused by the budget (which
    // `validate_names_the_sidecar_past_the_pool` allows for).
    let handles = (left / n as u64).clamp(32, 64);
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{wpod.dev/sidecar-max-handles: \"{handles}\"}}\nspec:\n  restartPolicy: Never\n  initContainers:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{name: s{i}, image: SIDECARS/probe.wasm, restartPolicy: Always, args: [ready, wait-stopping]}}\n"
        ));
    }
    yaml.push_str("  containers:\n  - {name: main, command: [\"true\"]}\n");
    yaml
}

#[test]
fn a_pod_holds_hundreds_of_sidecars_at_once() {
    require_root("a_pod_holds_hundreds_of_sidecars_at_once");
    // Past the 100 one wpod process used to host: all 300 run at once (each is ready and idle
    // before the main container starts), share one loaded component, and stop cleanly.
    let n = 300;
    let pod = TestPod::new("many-sidecars", &many_sidecars_pod("many-sidecars", n));
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(run.exit("main")["code"], 0, "{}", run.dump());
    for i in 0..n {
        let name = format!("s{i}");
        assert!(
            run.events(Some(&name))
                .iter()
                .any(|e| e["event"] == "ready"),
            "sidecar {name} never became ready\n{}",
            run.dump()
        );
    }
    assert!(!run.stdout.contains("wasm trap"), "{}", run.dump());
    assert_no_leftovers("many-sidecars");
}

#[test]
fn validate_names_the_sidecar_past_the_pool() {
    // Past 1024 Wasm containers at once a sidecar would fail at every start: validation refuses
    // the pod and names the first one over, with the fix.
    let pod = TestPod::new("too-many", &many_sidecars_pod("too-many", 1025));
    let validate =
        |manifest: &std::path::Path| wpod_output(&["validate", manifest.to_str().unwrap()]);
    let out = validate(&pod.manifest);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("spec.initContainers[1024].image")
            && stderr.contains("at most 1024 Wasm containers at once")
            && stderr.contains("move sidecars to another pod"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("at most 1024").count(), 1, "{stderr}");
    let fits = TestPod::new("fits", &many_sidecars_pod("fits", 1024));
    let out = validate(&fits.manifest);
    let stderr = text(&out.stderr);
    // 1024 fit the pool; only the descriptors wpod may open here (its hard limit) can refuse
    // them, and that error is another.
    assert!(
        out.status.success()
            || (!stderr.contains("Wasm containers at once")
                && stderr.contains("the pod needs more descriptors than wpod may open")),
        "{stderr}"
    );
}
