//! Rootless pods (issue 30): an ordinary user, made by the test, runs a pod with `wpod run`:
//! nginx from an image pulled from the test registry, a Wasm log tail, a hostPort, egress through
//! pasta, and a hostPath where what the pod's root writes belongs to the user. The user's wpod
//! keeps its state under the user's home, and neither sees root's pods nor is seen by root's
//! `wpod ps`. Needs root (to make the user), and Debian's uidmap and passt (`.ci/setup`).
//!
//! wpod runs in a "node" of the test's own: a network namespace whose default route leads to a
//! test host on 198.51.100.0/24 (pasta takes its addresses and routes from there), so nothing
//! the pod sends reaches the real network.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wpod_test_support::netns::{NetNs, RemoteHost};
use wpod_test_support::require_root;

use crate::images::ImageEnv;
use crate::pods::{assert_no_leftovers_in, processes_mentioning};

const LONG: Duration = Duration::from_secs(90);

/// An ordinary user of the test's own, with a home and a range of subordinate IDs; deleted
/// (with its home and its ranges) when dropped.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TestUser {
    fn new(name: &str) -> Self {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", name])
            .output()
            .expect("useradd (Debian's passwd package)");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .expect("the new user");
        let user = TestUser {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        };
        // useradd gives a new user subordinate IDs when the system is set to; else here.
        if subordinate_range(&user.name).is_none() {
            let out = Command::new("usermod")
                .args([
                    "--add-subuids",
                    "300000-365535",
                    "--add-subgids",
                    "300000-365535",
                    name,
                ])
                .output()
                .expect("usermod");
            assert!(out.status.success(), "{out:?}");
        }
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

/// The first host ID of `user`'s subordinate UIDs.
fn subordinate_range(user: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/subuid")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{user}:"))?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
}

/// Serves `HTTP/1.0 200` with `body` to every connection on `ip` in the network namespace `ns`
/// (from a thread that joins it), on a free port; returns the port.
fn serve_in(ns: &Path, ip: &str, body: &'static str) -> u16 {
    let ns = std::fs::File::open(ns).expect("the namespace");
    let ip = ip.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind((ip.as_str(), 0)).expect("bind");
        tx.send(listener.local_addr().expect("addr").port()).ok();
        for mut conn in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    rx.recv().expect("the server's port")
}

fn as_user(user: &TestUser, cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.uid(user.uid)
        .gid(user.gid)
        .env("HOME", &user.home)
        .env_remove("WPOD_ROOT")
        .env_remove("XDG_DATA_HOME")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_RUNTIME_DIR");
}

#[test]
fn an_ordinary_user_runs_the_demo_pod_rootless() {
    require_root("an_ordinary_user_runs_the_demo_pod_rootless (it makes a user)");
    assert!(
        Path::new("/usr/bin/newuidmap").exists() && Path::new("/usr/bin/pasta").exists(),
        "rootless pods need newuidmap (Debian's uidmap) and pasta (passt): .ci/setup installs them"
    );
    let user = TestUser::new("wpod-e2e-rl");
    let first = subordinate_range(&user.name).expect("the user's subordinate range");
    let images = ImageEnv::new("rootless");
    // The node, and a test host its default route leads to (pasta copies both into the pod).
    let node = NetNs::new("rootless");
    let remote = RemoteHost::new(Some(&node));
    node.ip(&["route", "add", "default", "via", &remote.addr.to_string()]);
    remote.assert_routed();
    // A second test host joined to the node: what the pod reaches through pasta's sockets.
    let far = RemoteHost::new(Some(&node));
    far.assert_routed();
    // The gateway's address is the node's loopback to the pod.
    let on_node = serve_in(&node.path(), "127.0.0.1", "from-the-node");
    let on_far = serve_in(&far.ns.path(), &far.addr.to_string(), "from-the-far-host");

    let host_port = crate::free_port();
    let mut pod = images.pod(
        "rootless",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: rootless}}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: log-tail
    restartPolicy: Always
    image: SIDECARS/log-tail.wasm
    env:
    - {{name: FOLLOW, value: nginx}}
    - {{name: SINK, value: stdout}}
  containers:
  - name: nginx
    image: nginx
    imagePullPolicy: IfNotPresent
    ports:
    - {{containerPort: 80, hostPort: {host_port}}}
  - name: client
    image: busybox
    imagePullPolicy: IfNotPresent
    args:
    - /bin/sh
    - -c
    - |
      echo "uid_map $(cat /proc/self/uid_map | tr -s ' ' | tr '\n' ' ')"
      echo made-by-root > /out/by-root
      echo made-by-1000 > /out/by-1000 && chown 1000:1000 /out/by-1000
      until wget -qO- http://localhost:80/ >/dev/null; do sleep 0.1; done
      echo "node $(wget -qO- http://{gateway}:{on_node}/)"
      echo "far $(wget -qO- http://{far}:{on_far}/)"
      echo client-done
      sleep 3600
    volumeMounts:
    - {{name: out, mountPath: /out}}
  volumes:
  - name: out
    hostPath: {{path: OUTDIR, type: Directory}}
"#,
            gateway = remote.addr,
            far = far.addr,
        ),
    );
    // The hostPath is the user's, as a directory of theirs would be.
    let out_dir = pod.manifest.parent().unwrap().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(user.uid), Some(user.gid)).unwrap();
    let yaml = std::fs::read_to_string(&pod.manifest).unwrap();
    std::fs::write(
        &pod.manifest,
        yaml.replace("OUTDIR", &out_dir.display().to_string()),
    )
    .unwrap();
    // The image tests' registries, as the user's own configuration (~/.config/wpod, read
    // before /etc/wpod); the state is the user's own too.
    let config = user.home.join(".config/wpod");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::copy(
        images.dir.join("registries.conf"),
        config.join("registries.conf"),
    )
    .unwrap();
    for dir in [user.home.join(".config"), config.clone()] {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    pod.env = vec![("HOME".into(), user.home.display().to_string())];
    // The registry is on this namespace's loopback, not the node's: the user pulls first.
    for image in ["nginx", "busybox"] {
        let mut pull = Command::new(crate::wpod_bin());
        as_user(&user, &mut pull);
        let out = pull
            .args(["pull", image])
            .envs(pod.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("wpod pull");
        assert!(out.status.success(), "wpod pull {image}: {out:?}");
    }
    pod.user = Some((user.uid, user.gid));
    pod.netns = Some(node.path());
    let running = pod.spawn();
    let run = running.wait_for("the client and nginx's lines in the sidecar", LONG, |r| {
        r.has_line("client", "client-done")
            && r.logs("log-tail")
                .iter()
                .any(|l| l.starts_with("nginx ") && l.contains("\"GET / HTTP/1.1\" 200"))
    });
    // The pod's root is the user; its other IDs the user's subordinate range.
    let map = run
        .lines_starting("client", "uid_map ")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no uid_map line\n{}", run.dump()));
    let fields: Vec<&str> = map["uid_map ".len()..].split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "0".to_string(),
            user.uid.to_string(),
            "1".into(),
            "1".into(),
            first.to_string(),
            "65536".into()
        ],
        "{}",
        run.dump()
    );
    // Egress through pasta: the node's loopback through the gateway's address, and a test
    // host.
    run.assert_line("client", "node from-the-node");
    run.assert_line("client", "far from-the-far-host");
    // The hostPort answers on the node.
    let page = node.sh(&format!(
        "curl -s --max-time 5 http://127.0.0.1:{host_port}/"
    ));
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("Welcome to nginx"),
        "{page:?}\n{}",
        run.dump()
    );
    // What the pod's root wrote is the user's on the host; its UID 1000 the range's.
    let by_root = std::fs::metadata(out_dir.join("by-root")).unwrap();
    assert_eq!((by_root.uid(), by_root.gid()), (user.uid, user.gid));
    let by_1000 = std::fs::metadata(out_dir.join("by-1000")).unwrap();
    assert_eq!(by_1000.uid(), first + 999);

    // The user's pods are the user's: their `wpod ps` lists it, root's does not.
    let ps = |cmd: &mut Command| {
        let out = cmd.args(["ps"]).output().expect("wpod ps");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut users_ps = Command::new(crate::wpod_bin());
    as_user(&user, &mut users_ps);
    assert!(ps(&mut users_ps).contains("rootless"), "the user's ps");
    assert!(
        !ps(&mut Command::new(crate::wpod_bin())).contains("rootless"),
        "root's ps lists the user's pod"
    );
    let mut logs = Command::new(crate::wpod_bin());
    as_user(&user, &mut logs);
    let logs = logs
        .args(["logs", "rootless", "-c", "client"])
        .output()
        .expect("wpod logs");
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("client-done"),
        "{logs:?}"
    );
    // describe asks the pod's wpod, through its control socket: the user may.
    let mut describe = Command::new(crate::wpod_bin());
    as_user(&user, &mut describe);
    let described = describe
        .args(["describe", "rootless"])
        .output()
        .expect("wpod describe");
    assert!(
        String::from_utf8_lossy(&described.stdout).contains("Status:      Running"),
        "{described:?}"
    );
    let state = user.home.join(".local/share/wpod");
    assert!(
        state.join("pods/rootless").is_dir(),
        "no state under the user's home"
    );
    // Pulled layers are the user's and the range's, never the host root's.
    let root_owned = files_owned_by(&state, 0);
    assert!(root_owned.is_empty(), "host root owns {root_owned:?}");

    // The user stops it (`wpod stop`, from another process of theirs).
    let mut stop = Command::new(crate::wpod_bin());
    as_user(&user, &mut stop);
    let stopped = stop.args(["stop", "rootless"]).output().expect("wpod stop");
    assert!(stopped.status.success(), "{stopped:?}");
    let run = running.wait(LONG);
    assert!(run.has_line("nginx", "GET / HTTP/1.1"), "{}", run.dump());
    assert_no_leftovers_in(&state, "rootless");
    assert!(
        processes_mentioning(&[&state
            .join("pods/rootless/pasta-netns")
            .display()
            .to_string()])
        .is_empty(),
        "pasta is left"
    );
}

/// Files under `dir` owned by host UID `uid`.
fn files_owned_by(dir: &Path, uid: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.uid() == uid {
                found.push(path.clone());
            }
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    found
}

#[test]
fn a_user_without_subordinate_ids_is_told_how_to_get_them() {
    require_root("a_user_without_subordinate_ids_is_told_how_to_get_them (it runs as nobody)");
    use std::os::unix::process::CommandExt;
    // `nobody` has no range in /etc/subuid.
    let dir = std::env::temp_dir().join(format!("wpod-e2e-rl-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let out = Command::new(crate::wpod_bin())
        .args(["run", "no-such.yaml"])
        .uid(65534)
        .gid(65534)
        .env("HOME", &dir)
        .env_remove("WPOD_ROOT")
        .output()
        .expect("wpod run");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/subuid: no range of 65536 or more subordinate IDs for user nobody")
            && err.contains("usermod --add-subuids"),
        "{err}"
    );
}

/// A machine without the tools a rootless pod needs says which, and how to get it: run in a
/// mount namespace of the test's own where the tool is hidden (an empty file bound over it).
#[test]
fn a_missing_map_tool_or_pasta_is_named_with_its_package() {
    require_root("a_missing_map_tool_or_pasta_is_named_with_its_package (it makes a user)");
    let user = TestUser::new("wpod-e2e-rl2");
    let dir = std::env::temp_dir().join(format!("wpod-e2e-rl-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: rl-tools}\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - name: main\n    command: [\"true\"]\n",
    )
    .unwrap();
    let run_without = |tool: &str| {
        let script = format!(
            "mount --bind /dev/null {tool} && exec setpriv --reuid={} --regid={} --clear-groups \
             env HOME={} {} run {}",
            user.uid,
            user.gid,
            user.home.display(),
            crate::wpod_bin().display(),
            manifest.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("WPOD_ROOT");
        // The pod needs a network namespace without a way out, as every test's.
        let node = NetNs::new("rl-tools");
        node.enter(&mut cmd);
        let out = cmd.output().expect("unshare");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run_without("/usr/bin/newuidmap");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("newuidmap is not installed") && err.contains("apt install uidmap"),
        "{err}"
    );
    let (code, err) = run_without("/usr/bin/pasta");
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("pasta is not installed") && err.contains("apt install passt"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cgroup hierarchies of a hybrid host (this project's test machines): v1 controllers,
/// the unified hierarchy (no controllers) and systemd's named one.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
const SYSTEMD_HIERARCHIES: [&str; 2] = ["unified", "systemd"];

/// Cgroups a test delegates to a user, as systemd or an administrator does: in each hierarchy
/// a directory of the test's own whose directory and `cgroup.procs` the user owns; in the
/// unified and named systemd hierarchies also a root-owned `session` child, where a login
/// session's processes are (not the user's to write, as a real `session-N.scope`). Dropped:
/// every process left in them is killed and all of it removed.
struct DelegatedCgroups {
    name: String,
    dirs: Vec<PathBuf>,
}

impl DelegatedCgroups {
    fn new(user: &TestUser) -> Self {
        assert!(
            Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
                && Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists(),
            "this test delegates cgroups on a hybrid cgroup v1/v2 host (the project's test \
             machines), and this host is not one"
        );
        let name = format!("wpod-e2e-rl-cg-{}", std::process::id());
        let mut cgroups = DelegatedCgroups {
            name: name.clone(),
            dirs: Vec::new(),
        };
        for hierarchy in V1_CONTROLLERS.iter().chain(&SYSTEMD_HIERARCHIES) {
            let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(&name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            cgroups.dirs.push(dir.clone());
            for owned in [
                "",
                "cgroup.procs",
                "tasks",
                "cgroup.subtree_control",
                "cgroup.threads",
            ] {
                let path = dir.join(owned);
                if path.exists() {
                    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
                }
            }
            if SYSTEMD_HIERARCHIES.contains(hierarchy) {
                std::fs::create_dir(dir.join("session")).unwrap();
            }
        }
        cgroups
    }

    /// The test's directory in `hierarchy`.
    fn dir(&self, hierarchy: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(hierarchy).join(&self.name)
    }

    /// The `cgroup.procs` files a process of the user's session is in: the session's in
    /// systemd's hierarchies, the delegated ones of the v1 controllers.
    fn session_procs(&self) -> Vec<PathBuf> {
        let session = SYSTEMD_HIERARCHIES
            .iter()
            .map(|h| self.dir(h).join("session/cgroup.procs"));
        let delegated = V1_CONTROLLERS
            .iter()
            .map(|h| self.dir(h).join("cgroup.procs"));
        session.chain(delegated).collect()
    }

    /// The cgroups under the test's directories, deepest first.
    fn tree(&self) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut todo = self.dirs.clone();
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    todo.push(entry.path());
                }
            }
            all.push(dir);
        }
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        all
    }
}

impl Drop for DelegatedCgroups {
    fn drop(&mut self) {
        for _ in 0..100 {
            let tree = self.tree();
            for dir in &tree {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: a process the test's cgroups hold (the test's user manager, the
                    // pod's), never the test itself (it never joins them).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = std::fs::remove_dir(dir);
            }
            if self.dirs.iter().all(|d| !d.exists()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("cannot remove the test's cgroups: {:?}", self.tree());
    }
}

/// The user's own systemd manager (`systemd --user`), as a login starts it, in the delegated
/// cgroups: run in a mount namespace of its own where `/run/systemd/system` says the host booted
/// with systemd (this machine's PID 1 is not systemd). Stopped when dropped.
struct UserManager {
    child: std::process::Child,
    runtime_dir: PathBuf,
}

impl UserManager {
    fn start(user: &TestUser, cgroups: &DelegatedCgroups) -> Self {
        let systemd = Path::new("/lib/systemd/systemd");
        assert!(
            systemd.exists(),
            "no {}: Debian's systemd package (.ci/setup installs it)",
            systemd.display()
        );
        let runtime_dir = std::env::temp_dir().join(format!("wpod-e2e-rl-run-{}", user.uid));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir(&runtime_dir).unwrap();
        std::os::unix::fs::chown(&runtime_dir, Some(user.uid), Some(user.gid)).unwrap();
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let procs: Vec<String> = SYSTEMD_HIERARCHIES
            .iter()
            .chain(&V1_CONTROLLERS)
            .map(|h| cgroups.dir(h).join("cgroup.procs").display().to_string())
            .collect();
        let log = std::fs::File::create(runtime_dir.with_extension("log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && \
                 for f in \"$@\"; do echo $$ > \"$f\" || exit 1; done && \
                 exec setpriv --reuid={uid} --regid={gid} --init-groups env -i HOME={home} \
                 USER={name} XDG_RUNTIME_DIR={run} {systemd} --user",
                uid = user.uid,
                gid = user.gid,
                home = user.home.display(),
                name = user.name,
                run = runtime_dir.display(),
                systemd = systemd.display(),
            ))
            .arg("sh")
            .args(&procs)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare");
        let manager = UserManager { child, runtime_dir };
        // Its private socket, and the user's D-Bus (socket-activated by the manager), which
        // wpod asks it through.
        let sockets = ["systemd/private", "bus"].map(|s| manager.runtime_dir.join(s));
        let start = std::time::Instant::now();
        while !sockets.iter().all(|s| s.exists()) {
            assert!(
                start.elapsed() < LONG,
                "the user's systemd manager did not start: {}",
                std::fs::read_to_string(manager.runtime_dir.with_extension("log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        manager
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SAFETY: signalling the test's own child (the manager, which exec'd in its place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        let _ = std::fs::remove_file(self.runtime_dir.with_extension("log"));
    }
}

/// Whether `run` warned of something containing `needle`.
fn warned(run: &crate::pods::PodRun, needle: &str) -> bool {
    run.stderr.contains(needle)
        || run.records.iter().any(|r| {
            r["event"] == "warning" && r["message"].as_str().unwrap_or("").contains(needle)
        })
}

/// A rootless pod's limits: without a delegated cgroup they are said not to apply (and do not:
/// a memory hog survives); from the user's session, wpod asks the user's systemd manager for a
/// delegated scope and puts the pod's cgroups under the user's delegated ones, where the memory
/// limit OOM-kills the hog and the CPU limit is the container's quota; nothing of them is left.
#[test]
fn a_rootless_pods_limits_hold_in_cgroups_delegated_to_the_user() {
    require_root("a_rootless_pods_limits_hold_in_cgroups_delegated_to_the_user (it makes a user)");
    let user = TestUser::new("wpod-e2e-rl3");
    let pod_yaml = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{wpod.dev/network: none}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    command: [python3, -c, "b = bytearray(256 * 1024 * 1024); print('survived')"]
    resources: {{limits: {{memory: 32Mi}}}}
  - name: steady
    command: [sh, -c, "cat /proc/self/cgroup; echo listed; until [ -e /sync/go ]; do sleep 0.1; done"]
    resources: {{limits: {{cpu: 250m}}}}
    volumeMounts: [{{name: sync, mountPath: /sync}}]
  volumes:
  - name: sync
    hostPath: {{path: SYNC, type: Directory}}
"#
        )
    };
    let pod_for = |name: &str| {
        let mut pod = crate::pods::TestPod::new(name, &pod_yaml(name));
        let sync = pod.manifest.parent().unwrap().join("sync");
        std::fs::create_dir_all(&sync).unwrap();
        std::os::unix::fs::chown(&sync, Some(user.uid), Some(user.gid)).unwrap();
        let yaml = std::fs::read_to_string(&pod.manifest).unwrap();
        std::fs::write(
            &pod.manifest,
            yaml.replace("SYNC", &sync.display().to_string()),
        )
        .unwrap();
        pod.env = vec![("HOME".into(), user.home.display().to_string())];
        pod.user = Some((user.uid, user.gid));
        (pod, sync)
    };

    let cgroups = DelegatedCgroups::new(&user);
    let manager = UserManager::start(&user, &cgroups);
    let runtime_dir = (
        "XDG_RUNTIME_DIR".to_string(),
        manager.runtime_dir.display().to_string(),
    );

    // Started outside the user's cgroups (in the test's, the host root's): the user's systemd
    // cannot move wpod into a scope, and no cgroup is the user's. Both are said, and the
    // limits do not hold.
    let (mut pod, sync) = pod_for("rl-nolimits");
    pod.env.push(runtime_dir.clone());
    std::fs::write(sync.join("go"), "").unwrap();
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    for said in [
        "cannot get a delegated scope from the user's systemd (systemd's job ended without \
         moving wpod",
        "no cgroup is delegated to this user",
    ] {
        assert!(warned(&run, said), "{said}\n{}", run.dump());
    }
    run.assert_line("hog", "survived");

    // From the user's session, under the user's systemd manager, with cgroups delegated to
    // the user.
    let (mut pod, sync) = pod_for("rl-limits");
    pod.env.push(runtime_dir);
    pod.cgroups = cgroups.session_procs();
    let running = pod.spawn();
    let run = running.wait_for("steady's cgroups and hog's end", LONG, |r| {
        r.has_line("steady", "listed")
            && r.events(Some("hog")).iter().any(|e| e["event"] == "exited")
    });
    let cgroup_of = |hierarchy: &str| {
        run.logs("steady")
            .iter()
            .find_map(|l| {
                let (_, rest) = l.split_once(':')?;
                let (names, path) = rest.split_once(':')?;
                (names == hierarchy).then(|| path.to_string())
            })
            .unwrap_or_else(|| panic!("no {hierarchy} line\n{}", run.dump()))
    };
    // wpod asked the user's manager (over the user's D-Bus) for a scope of its own, with its
    // PID in the unit's name.
    let scope = format!("/{}/app.slice/wpod-{}.scope", cgroups.name, running.pid());
    assert_eq!(cgroup_of(""), scope, "{}", run.dump());
    assert_eq!(cgroup_of("name=systemd"), scope, "{}", run.dump());
    // The containers' cgroups are under the delegated ones: the memory hierarchy's is the
    // scope's (the manager made it there), the cpu hierarchy's the test's directory.
    let ends = "/pod-rl-limits/containers/ctr-steady";
    let memory = cgroup_of("memory");
    assert!(
        memory.starts_with(&format!("{scope}/wpod/")) && memory.ends_with(ends),
        "{memory}"
    );
    let cpu = cgroup_of("cpu");
    assert!(
        cpu.starts_with(&format!("/{}/wpod/", cgroups.name)) && cpu.ends_with(ends),
        "{cpu}"
    );
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us"))
        .expect("the container's cpu cgroup");
    assert_eq!(quota.trim(), "25000", "250m of a 100 ms period");
    let pids = cgroup_of("pids");
    assert!(pids.ends_with(ends), "{pids}");
    let pids_max = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{pids}/pids.max")).unwrap();
    assert!(
        pids_max.trim().parse::<u64>().is_ok(),
        "pids.max {pids_max}"
    );
    std::fs::write(sync.join("go"), "").unwrap();
    let run = running.wait(LONG);
    let exit = run.exit("hog");
    assert_eq!(exit["reason"], "OOMKilled", "{}", run.dump());
    assert!(!run.has_line("hog", "survived"), "{}", run.dump());
    assert!(!warned(&run, "not applied"), "{}", run.dump());
    assert!(!warned(&run, "cannot apply"), "{}", run.dump());
    // Nothing of the pod is left in the user's cgroups, and the scope goes (systemd removes
    // it once it is empty, in its own time).
    let left = || -> Vec<PathBuf> {
        cgroups
            .tree()
            .into_iter()
            .filter(|d| {
                d.iter().any(|c| {
                    let c = c.to_string_lossy();
                    c == "wpod" || (c.starts_with("wpod-") && c.ends_with(".scope"))
                })
            })
            .collect()
    };
    let start = std::time::Instant::now();
    while !left().is_empty() && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        left().is_empty(),
        "left in the user's cgroups: {:?}",
        left()
    );
    drop(manager);
}

/// A rootless wpod accepts its user's commands from outside its user namespace (`wpod
/// describe`, `apply`), but not from a container of its pods, though it is the same user. A
/// container without an image sees the user's home, the pod's control socket among it, but
/// through an overlay, whose socket file leads to no listener; were it reached, wpod refuses a
/// peer outside its mount namespace.
#[test]
fn a_rootless_pods_container_cannot_control_its_pod() {
    require_root("a_rootless_pods_container_cannot_control_its_pod (it makes a user)");
    let user = TestUser::new("wpod-e2e-rl4");
    let socket = user
        .home
        .join(".local/share/wpod/pods/rl-peer/control.sock");
    let script = crate::apply::control_socket_try(&socket);
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: rl-peer\n  annotations: {{wpod.dev/network: \
         none}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    \
         command: [python3, -u, -c, {}]\n",
        // The pod stays up for the test's own try.
        serde_json::to_string(&format!("{script}time.sleep(3600)\n")).unwrap()
    );
    let mut pod = crate::pods::TestPod::new("rl-peer", &yaml);
    pod.env = vec![("HOME".into(), user.home.display().to_string())];
    pod.user = Some((user.uid, user.gid));
    let running = pod.spawn();
    let run = running.wait_for("the container's try", LONG, |r| !r.logs("main").is_empty());
    let out = run.logs("main").join("\n");
    assert!(
        out.starts_with("refused") || out.contains("not from inside a container"),
        "{}",
        run.dump()
    );
    assert!(!out.contains("\"ok\":true"), "{}", run.dump());
    // The socket itself, from a process in wpod's user namespace (so the same user, with the
    // same rights over it as a container's) but in a mount namespace of its own, as a
    // container's: refused by wpod's check.
    let out = Command::new("nsenter")
        .args(["--user", "--target", &running.pid().to_string(), "--"])
        .args(["unshare", "--mount", "--", "python3", "-c", &script])
        .output()
        .expect("nsenter");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("not from inside a container"), "{out:?}");
    // From outside it, the user is answered (`wpod describe`).
    let mut describe = Command::new(crate::wpod_bin());
    as_user(&user, &mut describe);
    let described = describe
        .args(["describe", "rl-peer"])
        .output()
        .expect("wpod describe");
    assert!(
        String::from_utf8_lossy(&described.stdout).contains("rl-peer"),
        "{described:?}"
    );
    // Stopped, the container (the first process of its PID namespace, so deaf to SIGTERM) is
    // killed at the end of its grace period, with no cgroup to find it by.
    running.signal(libc::SIGTERM);
    let run = running.wait(LONG);
    assert_eq!(run.exit("main")["code"], 137, "{}", run.dump());
    let socket = socket.display().to_string();
    assert!(
        processes_mentioning(&[&socket]).is_empty(),
        "the container's process is left"
    );
}
