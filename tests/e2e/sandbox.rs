//! The pod sandbox with real namespaces, volumes, cgroups and port publishing (issue 3).
//! Needs root, and Debian's curl, python3, procps and nginx (installed by .ci/setup).

use std::path::Path;
use std::time::Duration;

use crate::pods::{assert_no_leftovers, curl, host_can_connect, TestPod};
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn containers_share_the_pod_loopback_and_hostname_but_the_host_only_sees_host_ports() {
    require_root("containers_share_the_pod_loopback");
    let host_port = crate::free_port();
    let pod = TestPod::new(
        "net-share",
        &r#"
apiVersion: v1
kind: Pod
metadata: {name: net-share}
spec:
  hostname: shared-host
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: server
    restartPolicy: Always
    command: [python3, -m, http.server, "18181", --bind, 127.0.0.1]
    workingDir: /srv/www
    ports: [{containerPort: 18181}]
    volumeMounts: [{name: www, mountPath: /srv/www}]
  containers:
  - name: client
    command: [sh, -c]
    args:
    - |
      echo hello-over-loopback > /srv/www/index.html
      until curl -sf http://127.0.0.1:18181/index.html; do sleep 0.1; done
      echo "hostname=$(hostname)"
      exec sleep 300
    volumeMounts: [{name: www, mountPath: /srv/www}]
  - name: proxy
    command: [python3, -c]
    args:
    - |
      import socket, threading
      srv = socket.create_server(("0.0.0.0", 18183))
      while True:
          c, _ = srv.accept()
          c.sendall(b"via-host-port\n"); c.close()
    ports: [{containerPort: 18183, hostPort: HOST_PORT}]
  volumes:
  - {name: www, emptyDir: {}}
"#
        .replace("HOST_PORT", &host_port.to_string()),
    );
    let running = pod.spawn();
    let run = running.wait_for("the client to reach the server", LONG, |r| {
        r.has_line("client", "hostname=")
    });
    run.assert_line("client", "hello-over-loopback");
    run.assert_line("client", "hostname=shared-host");
    // The pod's loopback is not the host's: nothing answers there on the host.
    assert!(
        !host_can_connect("127.0.0.1:18181"),
        "the pod's localhost server is reachable from the host"
    );
    assert!(
        !host_can_connect("127.0.0.1:18183"),
        "a container port without hostPort is reachable from the host"
    );
    // A hostPort is, and the host forwards to the container port.
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
            use std::io::Read;
            let _ = s.read_to_string(&mut got);
            if !got.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, "via-host-port\n");
    let run = running.stop(LONG);
    // `sleep` as PID 1 of its namespace ignores SIGTERM: killed when the 2s grace period ends.
    assert_eq!(run.code, Some(137), "{}", run.dump());
    assert!(
        run.events(Some("client"))
            .iter()
            .any(|e| e["event"] == "killed"),
        "{}",
        run.dump()
    );
    assert!(
        run.events(None).iter().any(|e| e["event"] == "podStopping"),
        "{}",
        run.dump()
    );
    assert!(
        !host_can_connect(&format!("127.0.0.1:{host_port}")),
        "the host port is still published after the pod ended"
    );
    assert_no_leftovers("net-share");
}

fn ps_pod(name: &str, share: bool) -> Vec<String> {
    let pod = TestPod::new(
        name,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  shareProcessNamespace: {share}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: napper
    restartPolicy: Always
    command: [sleep, "301"]
  containers:
  - name: looker
    command: [sh, -c, "sleep 0.5; ps -e -o pid=,args="]
"#
        ),
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers(name);
    run.logs("looker")
}

#[test]
fn processes_of_other_containers_are_visible_only_with_share_process_namespace() {
    require_root("processes_are_visible_only_with_shareProcessNamespace");
    let shared = ps_pod("ps-shared", true);
    assert!(
        shared.iter().any(|l| l.contains("sleep 301")),
        "with shareProcessNamespace, ps must see the sidecar: {shared:?}"
    );
    // PID 1 is the pod's reaper, not a container.
    assert!(
        !shared
            .iter()
            .any(|l| l.trim_start().starts_with("1 sleep") || l.trim_start().starts_with("1 sh")),
        "{shared:?}"
    );

    let private = ps_pod("ps-private", false);
    assert!(
        !private.iter().any(|l| l.contains("sleep 301")),
        "without it, ps must not see the sidecar: {private:?}"
    );
    // The container is PID 1 of its own namespace.
    assert!(
        private.iter().any(|l| l.trim_start().starts_with("1 sh")),
        "{private:?}"
    );
}

#[test]
fn volumes_are_shared_read_only_honoured_and_memory_size_limited() {
    require_root("volumes_are_shared");
    let pod = TestPod::new(
        "volumes",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: volumes}
spec:
  restartPolicy: Never
  initContainers:
  - name: writer
    command: [sh, -c, "echo written-by-init > /data/note"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: reader
    command: [sh, -c]
    args:
    - |
      echo "read: $(cat /data/note)"
      if echo x > /data/other 2>/dev/null; then echo ro-write-succeeded; else echo ro-write-refused; fi
      if dd if=/dev/zero of=/mem/fill bs=1M count=8 2>/dev/null; then echo size-limit-ignored; else echo size-limit-hit; fi
      echo "tmpfs size: $(df -k /mem | tail -1 | tr -s ' ' | cut -d' ' -f2)k"
    volumeMounts:
    - {name: data, mountPath: /data, readOnly: true}
    - {name: mem, mountPath: /mem}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 4Mi}}
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("reader", "read: written-by-init");
    run.assert_line("reader", "ro-write-refused");
    run.assert_line("reader", "size-limit-hit");
    run.assert_line("reader", "tmpfs size: 4096k");
    assert_no_leftovers("volumes");
}

#[test]
fn a_memory_limit_oom_kills_and_the_pod_reports_it() {
    require_root("a_memory_limit_oom_kills");
    let pod = TestPod::new(
        "oom",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    command: [python3, -c, "b = bytearray(256 * 1024 * 1024); print('survived')"]
    resources: {limits: {memory: 32Mi}}
"#,
    );
    let run = pod.run(LONG);
    let exit = run.exit("hog");
    assert_eq!(exit["reason"], "OOMKilled", "{}", run.dump());
    assert_eq!(exit["code"], 137, "{}", run.dump());
    assert_eq!(run.code, Some(137));
    assert!(!run.has_line("hog", "survived"));
    assert_no_leftovers("oom");
}

/// Pod-level `resources` (KEP-2837; issue 26, item 17): the limits go on the cgroup of the
/// pod's native containers together, less the Wasm sidecars' own (they run in wpod's process),
/// so two containers that each fit in it but not both are held to it (one is OOM-killed),
/// while wpod's own `_runtime` cgroup stays outside it; a container without limits of its own
/// reads the pod's through the downward API.
#[test]
fn pod_level_limits_bound_the_pod_as_a_whole() {
    require_root("pod_level_limits_bound_the_pod_as_a_whole");
    let pod = TestPod::new(
        "pod-limits",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: pod-limits}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  resources:
    limits: {cpu: 500m, memory: 96Mi}
  containers:
  - name: main
    command: [sh, -c, 'echo "memory=$MEM_MI cpu=$CPU_M"; trap "exit 0" TERM; while true; do sleep 0.1; done']
    env:
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CPU_M
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
  - name: hog-a
    command: [python3, -c, "import time; b = bytearray(60 << 20); open('/shared/a', 'w').close(); print('a holds 60Mi', flush=True); time.sleep(60)"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: hog-b
    command: [python3, -c, "import os, time\nwhile not os.path.exists('/shared/a'): time.sleep(0.05)\nb = bytearray(60 << 20); print('b holds 60Mi too', flush=True); time.sleep(60)"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: wasm
    image: SIDECARS/hello.wasm
    resources: {limits: {memory: 16Mi}}
  volumes:
  - {name: shared, emptyDir: {}}
"#,
    );
    let running = pod.spawn();
    let oom_killed = |r: &crate::pods::PodRun| {
        ["hog-a", "hog-b"].into_iter().find(|c| {
            r.events(Some(c))
                .iter()
                .any(|e| e["event"] == "exited" && e["reason"] == "OOMKilled")
        })
    };
    let run = running.wait_for("a hog OOM-killed", LONG, |r| {
        r.has_line("main", "memory=") && oom_killed(r).is_some()
    });
    run.assert_line("main", "memory=96 cpu=500");
    // 60 MiB each fits the 96 MiB limit alone, 120 MiB together does not.
    assert!(oom_killed(&run).is_some(), "{}", run.dump());
    // The containers' cgroup (the parent of main's) holds the limits, in whichever hierarchy;
    // wpod's own cgroup is beside it, not under it.
    let pid = run
        .events(Some("main"))
        .iter()
        .find_map(|e| e["pid"].as_i64())
        .unwrap_or_else(|| panic!("no pid\n{}", run.dump()));
    let cgroup_of = |pid: i64, controller: &str| -> std::path::PathBuf {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let (hierarchy, path) = cgroups
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                let v1 = names.split(',').any(|n| n == controller);
                let dir = if v1 { controller } else { "" };
                (v1 || names.is_empty())
                    .then(|| (dir.to_string(), path.trim_start_matches('/').to_string()))
            })
            .unwrap_or_else(|| panic!("no {controller} cgroup: {cgroups}"));
        Path::new("/sys/fs/cgroup").join(hierarchy).join(path)
    };
    let containers = |controller: &str| -> std::path::PathBuf {
        let dir = cgroup_of(pid, controller);
        assert!(
            dir.ends_with("pod-pod-limits/containers/ctr-main"),
            "{}",
            dir.display()
        );
        dir.parent().unwrap().to_path_buf()
    };
    let read = |dir: &Path, files: &[&str]| {
        files
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_default()
    };
    // The Wasm sidecar's 16 MiB are carved out of the pod's 96: it runs in wpod's process.
    let memory = read(
        &containers("memory"),
        &["memory.limit_in_bytes", "memory.max"],
    );
    assert_eq!(memory.trim(), (80u64 << 20).to_string());
    let cpu = read(&containers("cpu"), &["cpu.cfs_quota_us", "cpu.max"]);
    assert!(
        cpu.trim() == "50000" || cpu.trim() == "50000 100000",
        "{cpu}"
    );
    let runtime = cgroup_of(i64::from(running.pid()), "memory");
    assert!(
        runtime.ends_with("pod-pod-limits/_runtime"),
        "{}",
        runtime.display()
    );
    // And so are the threads that run the sidecars (on v1 wpod moves its main thread alone, and
    // the sidecars' runtime makes its threads there: kernel memory is charged per thread).
    let sidecar_threads: Vec<i64> = std::fs::read_dir(format!("/proc/{}/task", running.pid()))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("wpod-pod-"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    assert!(!sidecar_threads.is_empty(), "no sidecar runtime thread");
    for tid in sidecar_threads {
        assert_eq!(cgroup_of(tid, "memory"), runtime, "thread {tid}");
    }
    running.stop(LONG);
    assert_no_leftovers("pod-limits");
}

#[test]
fn nginx_example_serves_through_its_host_port_and_stops_within_the_grace_period() {
    require_root("nginx_example_serves");
    let (pod, port) = TestPod::example("nginx", "nginx.yaml");
    let running = pod.spawn();
    let page = curl(&format!("http://127.0.0.1:{port}/"), LONG);
    assert!(
        page.as_deref()
            .is_some_and(|p| p.contains("Welcome to nginx")),
        "no nginx page: {}",
        running.output().dump()
    );
    assert!(
        !host_can_connect("127.0.0.1:80"),
        "nginx's own port 80 must not be reachable from the host"
    );
    let stop = std::time::Instant::now();
    let run = running.stop(LONG);
    assert!(
        stop.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stop.elapsed()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_no_leftovers("nginx");
}

#[test]
fn a_container_that_cannot_start_fails_the_pod_with_the_step_and_leaves_nothing() {
    require_root("a_container_that_cannot_start");
    let pod = TestPod::new(
        "bad-start",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: bad-start}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sleep, "5"]
    workingDir: /no/such/dir
"#,
    );
    let run = pod.run(LONG);
    // As containerd reports a container that could not start: exit code 128, StartError.
    assert_eq!(run.code, Some(128), "{}", run.dump());
    assert_eq!(run.exit("main")["reason"], "StartError", "{}", run.dump());
    let failed: Vec<_> = run
        .events(Some("main"))
        .into_iter()
        .filter(|e| e["event"] == "failedToStart")
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.dump());
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("chdir to workingDir") && error.contains("No such file or directory"),
        "{error}"
    );
    assert_no_leftovers("bad-start");

    let missing = TestPod::new(
        "missing-cmd",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: missing-cmd}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [no-such-program-wpod]
"#,
    );
    let run = missing.run(LONG);
    assert_eq!(run.code, Some(128), "{}", run.dump());
    let error = run
        .events(Some("main"))
        .iter()
        .find(|e| e["event"] == "failedToStart")
        .map(|e| e["error"].to_string())
        .unwrap_or_default();
    assert!(
        error.contains("exec no-such-program-wpod"),
        "{}",
        run.dump()
    );
    assert_no_leftovers("missing-cmd");
}

fn sigkill_pod(name: &str, share: bool) {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  shareProcessNamespace: {share}
  initContainers:
  - name: side
    restartPolicy: Always
    command: [sleep, "3001"]
  containers:
  - name: main
    command: [sh, -c, "sleep 3002 & exec sleep 3003"]
"#
    );
    let pod = TestPod::new(name, &yaml);
    let running = pod.spawn();
    running.wait_started("main", LONG);
    let sleeps =
        || crate::pods::processes_mentioning(&["sleep\x003001", "sleep\x003002", "sleep\x003003"]);
    // `started` is said once the shell runs; its sleeps follow a moment later.
    let start = std::time::Instant::now();
    while sleeps().len() < 3 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sleeps().len(), 3, "{:?}", sleeps());
    running.signal(libc::SIGKILL);
    let _ = running.wait(LONG);
    let start = std::time::Instant::now();
    while !sleeps().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sleeps().is_empty(),
        "processes outlived wpod (shareProcessNamespace: {share}): {:?}",
        sleeps()
    );
    // The same pod starts again cleanly (and clears what the killed run left).
    let again = TestPod::new(
        name,
        &yaml.replace("sleep 3002 & exec sleep 3003", "echo second run"),
    );
    let run = again.spawn();
    let out = run.wait_for("the second run", LONG, |r| r.has_line("main", "second run"));
    assert!(out.has_line("main", "second run"));
    let _ = run.stop(LONG);
    assert_no_leftovers(name);
}

#[test]
fn killing_wpod_with_sigkill_takes_every_process_of_the_pod_along() {
    require_root("killing_wpod_with_sigkill");
    // Without a shared PID namespace only the lifeline can tell the shims; with one, the pod's
    // PID 1 dying also ends every process in it. Both must hold. (Serial: same sleep markers.)
    sigkill_pod("sigkill-private", false);
    sigkill_pod("sigkill-shared", true);
}

/// The (pid, comm) of every child of `parent`, from `/proc/*/stat`.
fn children_of(parent: i32) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // comm is in parentheses and may hold spaces; the ppid is the second field after it.
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: i32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent).then(|| (pid, comm.to_string()))
        })
        .collect()
}

#[test]
fn helper_processes_are_named_for_their_job() {
    require_root("helper_processes_are_named");
    // Helpers run through /proc/self/fd/N, which the kernel would make their name ("64").
    let pod = TestPod::new(
        "helper-names",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: helper-names}
spec:
  containers:
  - name: main
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
"#,
    );
    let running = pod.spawn();
    running.wait_started("main", LONG);
    let helpers = children_of(running.pid());
    let names = |want: &str| helpers.iter().filter(|(_, c)| c == want).count();
    assert_eq!(names("wpod-holder"), 1, "{helpers:?}");
    assert_eq!(names("wpod-shim"), 1, "{helpers:?}");
    assert!(
        helpers
            .iter()
            .all(|(_, c)| !c.bytes().all(|b| b.is_ascii_digit())),
        "{helpers:?}"
    );
    // The shim's child is the container, named by what it runs.
    let shim = helpers.iter().find(|(_, c)| c == "wpod-shim").unwrap().0;
    let container = children_of(shim);
    assert!(container.iter().any(|(_, c)| c == "sh"), "{container:?}");
    running.stop(LONG);
    assert_no_leftovers("helper-names");
}

/// Capability bit numbers (linux/capability.h) for reading /proc/self/status masks.
const CAP_KILL: u32 = 5;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

fn status_field(lines: &[String], field: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in {lines:?}"))
}

fn cap_mask(lines: &[String]) -> u64 {
    u64::from_str_radix(&status_field(lines, "CapBnd"), 16).expect("hex mask")
}

#[test]
fn security_context_is_honoured_and_nothing_else_is_granted() {
    require_root("security_context_is_honoured");
    let pod = TestPod::new(
        "security",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: security}
spec:
  restartPolicy: Never
  containers:
  - name: default
    command: [sh, -c, "grep -E '^(CapBnd|CapEff|NoNewPrivs|Uid|Gid):' /proc/self/status; ls /proc/self/fd | tr '\n' ' '; echo; touch /rootfs-write && echo root-writable"]
  - name: locked
    command: [sh, -c, "grep -E '^(CapBnd|CapEff|NoNewPrivs|Uid|Gid):' /proc/self/status; touch /rootfs-write 2>/dev/null || echo root-read-only; touch /tmp/x 2>/dev/null || echo tmp-read-only"]
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL], add: [NET_ADMIN]}
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());

    let default = run.logs("default");
    let caps = cap_mask(&default);
    assert_ne!(
        caps & (1 << CAP_KILL),
        0,
        "KILL is in the default set: {default:?}"
    );
    assert_eq!(
        caps & (1 << CAP_SYS_ADMIN),
        0,
        "SYS_ADMIN must not be granted: {default:?}"
    );
    assert_eq!(
        caps & (1 << CAP_NET_ADMIN),
        0,
        "NET_ADMIN must not be granted by default: {default:?}"
    );
    assert_eq!(status_field(&default, "NoNewPrivs"), "1");
    assert!(
        status_field(&default, "Uid").starts_with("0\t"),
        "{default:?}"
    );
    // Only stdio, plus the directory `ls` itself opened.
    assert!(
        default.iter().any(|l| l.trim() == "0 1 2 3"),
        "descriptors beyond stdio: {default:?}"
    );
    assert!(default.iter().any(|l| l == "root-writable"), "{default:?}");

    let locked = run.logs("locked");
    assert_eq!(cap_mask(&locked), 1 << CAP_NET_ADMIN, "{locked:?}");
    assert_eq!(
        u64::from_str_radix(&status_field(&locked, "CapEff"), 16).unwrap(),
        0,
        "a non-root user has no effective capabilities"
    );
    assert!(
        status_field(&locked, "Uid").starts_with("1000\t"),
        "{locked:?}"
    );
    assert!(
        status_field(&locked, "Gid").starts_with("1000\t"),
        "{locked:?}"
    );
    assert!(locked.iter().any(|l| l == "root-read-only"), "{locked:?}");
    assert!(locked.iter().any(|l| l == "tmp-read-only"), "{locked:?}");
    // The host's root was not written through the container's layer.
    assert!(
        !std::path::Path::new("/rootfs-write").exists(),
        "a container wrote to the host's root"
    );
    assert_no_leftovers("security");
}

#[test]
fn an_image_directory_becomes_the_container_root() {
    require_root("an_image_directory_becomes_the_container_root");
    // A minimal rootfs: a static busybox and nothing else of the host.
    let pod = TestPod::new(
        "rootfs",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rootfs}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: rootfs
    command: [/bin/busybox, sh, -c]
    args: ["/bin/busybox ls /; /bin/busybox cat /etc/marker; /bin/busybox ls /usr/bin/curl 2>&1; /bin/busybox touch /new-file && echo wrote"]
"#,
    );
    let root = pod.manifest.parent().unwrap().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    std::fs::write(root.join("etc/marker"), "inside-the-image\n").unwrap();
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let logs = run.logs("main");
    assert!(logs.iter().any(|l| l == "inside-the-image"), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("/usr/bin/curl") && l.contains("No such file")),
        "the host leaks into the image: {logs:?}"
    );
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp"] {
        assert!(
            logs.iter().any(|l| l == dir),
            "{dir} missing from /: {logs:?}"
        );
    }
    assert!(logs.iter().any(|l| l == "wrote"), "{logs:?}");
    // Writes go to the container's layer, never into the image.
    assert!(
        !root.join("new-file").exists(),
        "the container wrote into its image"
    );
    assert_no_leftovers("rootfs");
}

#[test]
fn cpu_and_process_runaways_are_held_by_their_limits() {
    require_root("cpu_and_process_runaways_are_held");
    let pod = TestPod::new(
        "runaway",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: runaway
  annotations: {wpod.dev/pids-limit: "30"}
spec:
  restartPolicy: Never
  containers:
  - name: spinner
    # Two seconds of busy loop under a 200m limit buy at most ~0.4 s of CPU.
    command: [python3, -c]
    args:
    - |
      import os, time
      end = time.time() + 2
      while time.time() < end:
          pass
      t = os.times()
      print(f"cpu {t.user + t.system:.2f}", flush=True)
    resources: {limits: {cpu: 200m}}
  - name: forker
    command: [python3, -c]
    args:
    - |
      import subprocess
      kids, error = [], None
      for _ in range(100):
          try:
              kids.append(subprocess.Popen(["sleep", "30"]))
          except OSError as e:
              error = e
              break
      print(f"started {len(kids)}: {error}", flush=True)
      for k in kids:
          k.kill()
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let cpu: f64 = run
        .logs("spinner")
        .iter()
        .find_map(|l| l.strip_prefix("cpu ").and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{}", run.dump()));
    assert!(
        cpu > 0.1 && cpu < 0.7,
        "a 200m limit over 2 s allows ~0.4 s of CPU, got {cpu}"
    );
    let line = run
        .logs("forker")
        .into_iter()
        .find(|l| l.starts_with("started "))
        .unwrap_or_else(|| panic!("{}", run.dump()));
    let started: usize = line["started ".len()..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(
        (5..30).contains(&started),
        "pids limit 30 must stop the forker: {line}"
    );
    assert!(line.contains("Resource temporarily unavailable"), "{line}");
    assert_no_leftovers("runaway");
}

#[test]
fn a_host_port_forwards_bytes_exactly_both_ways_and_passes_half_close_on() {
    require_root("a_host_port_forwards_bytes_exactly");
    // The main container echoes everything it receives until the client's half-close, then
    // closes: 8 MiB must come back byte for byte through the forwarder (splice, both ways),
    // and the client's shutdown must reach the container (or the echo would never end). The
    // forwarder is a pod off the network's (a pod on one has its hostPorts in the kernel).
    let host_port = crate::free_port();
    let pod = TestPod::new(
        "port-echo",
        &r#"
apiVersion: v1
kind: Pod
metadata:
  name: port-echo
  annotations: {wpod.dev/network: none}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [python3, -u, -c]
    args:
    - |
      import socket
      srv = socket.create_server(("127.0.0.1", 18190))
      print("listening", flush=True)
      while True:
          c, _ = srv.accept()
          n = 0
          while True:
              b = c.recv(65536)
              if not b:
                  break
              c.sendall(b)
              n += len(b)
          print(f"echoed {n}", flush=True)
          c.close()
    ports: [{containerPort: 18190, hostPort: HOST_PORT, hostIP: 127.0.0.1}]
"#
        .replace("HOST_PORT", &host_port.to_string()),
    );
    let running = pod.spawn();
    running.wait_for("the echo server", LONG, |r| r.has_line("main", "listening"));
    let sent: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("connect hostPort");
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let received = std::thread::scope(|s| {
        let reading = s.spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        });
        use std::io::Write;
        stream.write_all(&sent).expect("send");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        reading.join().unwrap().expect("read the echo")
    });
    assert_eq!(received.len(), sent.len(), "echo length");
    assert!(received == sent, "the echo differs from what was sent");
    let run = running.wait_for("the server's count", LONG, |r| {
        r.has_line("main", "echoed ")
    });
    run.assert_line("main", &format!("echoed {}", sent.len()));
    let _ = running.stop(LONG);
    assert_no_leftovers("port-echo");
}

/// `seccompProfile: {type: Localhost}`: the profile is read from the host's profile root
/// (`$WPOD_SECCOMP_ROOT` here) in moby's format, and the container runs under it; the default
/// profile stays on the container beside it; a profile that is missing or leaves the root is
/// refused before the pod exists, located in the manifest.
#[test]
fn a_localhost_seccomp_profile_is_applied_and_a_missing_one_refused() {
    require_root("a_localhost_seccomp_profile_is_applied");
    let pod = TestPod::new(
        "seccomp-local",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: seccomp-local}
spec:
  restartPolicy: Never
  containers:
  - name: audited
    command: [sh, -c, "mkdir /tmp/d 2>&1 || echo mkdir-refused; echo still-running"]
    securityContext:
      seccompProfile: {type: Localhost, localhostProfile: profiles/no-mkdir.json}
  - name: default
    command: [sh, -c, "mkdir /tmp/d && echo mkdir-allowed; unshare -m true 2>/dev/null || echo unshare-refused"]
"#,
    );
    let root = pod.manifest.parent().unwrap().join("seccomp");
    std::fs::create_dir_all(root.join("profiles")).unwrap();
    // A denylist: everything allowed but mkdir and mkdirat, which fail with EACCES (13).
    std::fs::write(
        root.join("profiles/no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let mut pod = pod;
    pod.env
        .push(("WPOD_SECCOMP_ROOT".into(), root.display().to_string()));
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let audited = run.logs("audited").join("\n");
    assert!(
        audited.contains("Permission denied") && audited.contains("mkdir-refused"),
        "{}",
        run.dump()
    );
    assert!(audited.contains("still-running"), "{}", run.dump());
    let default = run.logs("default").join("\n");
    assert!(
        default.contains("mkdir-allowed") && default.contains("unshare-refused"),
        "{}",
        run.dump()
    );

    // A profile that is not there, or a path out of the root: refused, located, nothing made.
    for (profile, says) in [
        ("profiles/absent.json", "absent.json"),
        (
            "../escape.json",
            "must be a relative path under the profile root",
        ),
    ] {
        let bad = TestPod::new(
            "seccomp-missing",
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: seccomp-missing}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: ["true"]
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: "{profile}"}}
"#
            ),
        );
        let mut bad = bad;
        bad.env
            .push(("WPOD_SECCOMP_ROOT".into(), root.display().to_string()));
        let run = bad.run(LONG);
        assert_ne!(run.code, Some(0), "{}", run.dump());
        assert!(
            run.stderr
                .contains("spec.containers[0].securityContext.seccompProfile.localhostProfile: ")
                && run.stderr.contains(says),
            "{}",
            run.dump()
        );
        assert!(!run.stdout.contains("podStarted"), "{}", run.dump());
        crate::pods::assert_no_leftovers("seccomp-missing");
    }
    crate::pods::assert_no_leftovers("seccomp-local");
}
