//! Running real pods from tests: a manifest in a temp dir, `wpod run --output json`, the events
//! and logs parsed, and a check that nothing of the pod is left on the host afterwards. A guard
//! stops and clears a pod even when the test fails half-way.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::text;

/// A pod manifest written for one test.
pub struct TestPod {
    pub name: String,
    pub manifest: PathBuf,
    /// Extra environment for `wpod run` (e.g. WPOD_ROOT).
    pub env: Vec<(String, String)>,
    /// Extra options for `wpod run` (e.g. --backoff-base).
    pub args: Vec<String>,
    /// Soft and hard limit on open files for `wpod run` (RLIMIT_NOFILE).
    pub nofile: Option<u64>,
    /// A network namespace (a test's own "host") to run `wpod run` in.
    pub netns: Option<PathBuf>,
    /// Another `wpod` binary to run the pod with (default: the one under test).
    pub bin: Option<PathBuf>,
    /// An ordinary user (UID, GID) to run `wpod` as (a rootless pod), instead of root.
    pub user: Option<(u32, u32)>,
    /// Cgroups (their `cgroup.procs` files) `wpod run` is moved into before it starts.
    pub cgroups: Vec<PathBuf>,
    /// The directory `new` wrote the manifest into, held by its runs too.
    dir: Option<Arc<TestDir>>,
}

/// A test's directory: removed when its last holder is dropped, unless the test failed (then it
/// stays, to be looked at).
pub struct TestDir(pub PathBuf);

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestPod {
    /// Writes `yaml` (whose `metadata.name` must be `name`) into a fresh directory. Image paths
    /// may use `SIDECARS/x.wasm` for the built guests.
    pub fn new(name: &str, yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-e2e-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let sidecars = wpod_test_support::sidecars_dir();
        let yaml = yaml.replace("SIDECARS/", &format!("{}/", sidecars.display()));
        let manifest = dir.join("pod.yaml");
        std::fs::write(&manifest, yaml).expect("write manifest");
        let mut pod = TestPod::from_file(name, &manifest);
        pod.dir = Some(Arc::new(TestDir(dir)));
        pod
    }

    /// A pod from an existing manifest (an example).
    pub fn from_file(name: &str, manifest: &Path) -> Self {
        TestPod {
            name: name.to_string(),
            manifest: manifest.to_path_buf(),
            env: Vec::new(),
            args: Vec::new(),
            nofile: None,
            netns: None,
            bin: None,
            user: None,
            cgroups: Vec::new(),
            dir: None,
        }
    }

    /// An example pod (`examples/FILE`, with one hostPort) as a test runs it: a copy whose
    /// hostPort is a free port of its own (`crate::free_port`), so tests running at once never
    /// publish the same one, and whose guests are the built ones the example names
    /// (`../target/sidecars/`). Returns the pod and its host port.
    pub fn example(name: &str, file: &str) -> (Self, u16) {
        let path = wpod_test_support::repo_root().join("examples").join(file);
        let yaml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let port = crate::free_port();
        let mut parts = yaml.split("hostPort: ");
        let mut moved = parts.next().unwrap_or_default().to_string();
        let mut found = 0;
        for part in parts {
            let rest = part.trim_start_matches(|c: char| c.is_ascii_digit());
            assert!(
                rest.len() < part.len(),
                "{file}: a hostPort without a number"
            );
            moved.push_str(&format!("hostPort: {port}{rest}"));
            found += 1;
        }
        assert_eq!(found, 1, "{file} must publish exactly one hostPort");
        let moved = moved.replace("../target/sidecars/", "SIDECARS/");
        (TestPod::new(name, &moved), port)
    }

    /// Runs the pod to its end (at most `limit`).
    pub fn run(&self, limit: Duration) -> PodRun {
        self.spawn().wait(limit)
    }

    /// Starts the pod in the background.
    pub fn spawn(&self) -> RunningPod {
        // Pods get networks: never where their traffic could reach the real network.
        wpod_test_support::require_isolated_network();
        // Each run's own files (a test may run the same pod again while the first run is
        // still being dropped).
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            |ext: &str| std::env::temp_dir().join(format!("wpod-e2e-{}.{run}.{ext}", self.name));
        let (out, err) = (log("out"), log("err"));
        let mut cmd = Command::new(self.bin.clone().unwrap_or_else(crate::wpod_bin));
        if self.user.is_some() {
            // An ordinary user's session is the user's: never the test runner's (root's) D-Bus
            // or runtime directory (a test gives its own in `env`).
            cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
                .env_remove("XDG_RUNTIME_DIR");
        }
        cmd.args(["run", "--output", "json"])
            .args(&self.args)
            .arg(&self.manifest)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Its own process group, so a test can signal it as a terminal would.
            .process_group(0);
        if let Some(n) = self.nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(ns) = &self.netns {
            wpod_test_support::netns::enter(ns, &mut cmd);
        }
        if !self.cgroups.is_empty() {
            join_cgroups(&mut cmd, &self.cgroups);
        }
        // After the namespace is joined (which takes root): pre_exec closures run in order.
        if let Some(user) = self.user {
            become_user(&mut cmd, user);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start wpod run");
        RunningPod {
            name: self.name.clone(),
            child: Some(child),
            out,
            err,
            env: self.env.clone(),
            netns: self.netns.clone(),
            user: self.user,
            _dir: self.dir.clone(),
        }
    }
}

/// Moves `cmd`'s process into the cgroups whose `cgroup.procs` files are `files`, between fork
/// and exec.
fn join_cgroups(cmd: &mut Command, files: &[PathBuf]) {
    use std::os::unix::ffi::OsStrExt;
    let files: Vec<std::ffi::CString> = files
        .iter()
        .map(|f| std::ffi::CString::new(f.as_os_str().as_bytes()).expect("a path"))
        .collect();
    // SAFETY: open, write and close are async-signal-safe; the paths were made before the fork,
    // and the PID is formatted into a stack buffer.
    unsafe {
        cmd.pre_exec(move || {
            let mut pid = [0u8; 12];
            let mut n = libc::getpid() as u32;
            let mut at = pid.len();
            loop {
                at -= 1;
                pid[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for file in &files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, pid[at..].as_ptr().cast(), pid.len() - at);
                let error = std::io::Error::last_os_error();
                libc::close(fd);
                if written < 0 {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
}

/// Makes `cmd` drop to an ordinary user (UID, GID, no supplementary groups) between fork and
/// exec, after whatever was set up before it as root.
fn become_user(cmd: &mut Command, (uid, gid): (u32, u32)) {
    // SAFETY: setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for TestPod {
    /// What the pod's runs kept (logs, journal) goes with the test.
    fn drop(&mut self) {
        let mut cmd = Command::new(crate::wpod_bin());
        cmd.args(["rm", &self.name])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A pod's network lives in the namespace it was run in: deleted from there.
        if let Some(ns) = &self.netns {
            wpod_test_support::netns::enter(ns, &mut cmd);
        }
        if let Some(user) = self.user {
            become_user(&mut cmd, user);
        }
        let _ = cmd.status();
    }
}

/// A `wpod run` in the background; dropping it stops the pod and clears what is left.
pub struct RunningPod {
    pub name: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    env: Vec<(String, String)>,
    netns: Option<PathBuf>,
    user: Option<(u32, u32)>,
    /// The pod's directory stays while it runs, even if its `TestPod` goes first.
    _dir: Option<Arc<TestDir>>,
}

impl RunningPod {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// What the pod printed so far.
    pub fn output(&self) -> PodRun {
        PodRun::parse(None, read(&self.out), read(&self.err))
    }

    /// Waits until `pred` holds for the output so far.
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&PodRun) -> bool) -> PodRun {
        let start = Instant::now();
        loop {
            let run = self.output();
            if pred(&run) {
                return run;
            }
            if start.elapsed() > limit {
                panic!("pod {}: timed out after {limit:?} waiting for {what}\nstdout:\n{}\nstderr:\n{}", self.name, run.stdout, run.stderr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `container` has started.
    pub fn wait_started(&self, container: &str, limit: Duration) -> PodRun {
        self.wait_for(&format!("{container} to start"), limit, |r| {
            r.started(container)
        })
    }

    /// Sends a signal to `wpod run`'s whole process group, as a terminal's Ctrl-C does.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: kill on the process group our own child leads.
        unsafe { libc::kill(-self.pid(), sig) };
    }

    /// Sends a signal to `wpod run` itself.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on the PID of our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Ctrl-C: SIGINT to `wpod run`, then waits for it to end, as [`RunningPod::wait`] does.
    pub fn stop(self, limit: Duration) -> PodRun {
        self.signal(libc::SIGINT);
        self.wait(limit)
    }

    /// A person's second Ctrl-C (SIGINT to `wpod run`), after a first one: sent once wpod took
    /// the first (its `podStopping` event is out) and more than its window for one request
    /// (250 ms, `SAME_REQUEST` in host/src/supervisor/mod.rs, which merges the signals
    /// `timeout` sends to the process and its group) has passed since then, so it is never
    /// merged into the first. The window opens before the event is stamped: counted from the
    /// event's time, it is over.
    pub fn second_ctrl_c(&self, limit: Duration) {
        const SAME_REQUEST: Duration = Duration::from_millis(250);
        let run = self.wait_for("the first Ctrl-C to be taken", limit, |r| {
            r.events(None).iter().any(|e| e["event"] == "podStopping")
        });
        let stopping = run
            .events(None)
            .into_iter()
            .find(|e| e["event"] == "podStopping")
            .and_then(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
            .unwrap_or_else(|| panic!("podStopping without a time\n{}", run.dump()));
        // The stamp is in whole milliseconds; a little more for the clocks.
        let after = stopping + SAME_REQUEST + Duration::from_millis(50);
        if let Ok(wait) = after.duration_since(std::time::SystemTime::now()) {
            std::thread::sleep(wait);
        }
        self.signal(libc::SIGINT);
    }

    /// Waits for `wpod run` to exit (killing it after `limit`, which fails the test).
    pub fn wait(mut self, limit: Duration) -> PodRun {
        let mut child = self.child.take().expect("pod already waited for");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for wpod") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let run = PodRun::parse(None, read(&self.out), read(&self.err));
                panic!(
                    "pod {}: wpod run did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name, run.stdout, run.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        PodRun::parse(status.code(), read(&self.out), read(&self.err))
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && start.elapsed() < Duration::from_secs(15)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let mut cmd = Command::new(crate::wpod_bin());
            cmd.args(["__cleanup", &self.name])
                .envs(self.env.iter().map(|(k, v)| (k, v)));
            if let Some(ns) = &self.netns {
                wpod_test_support::netns::enter(ns, &mut cmd);
            }
            if let Some(user) = self.user {
                become_user(&mut cmd, user);
            }
            let _ = cmd.output();
        }
        // wpod's output, kept where a failed test can be looked at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.out);
            let _ = std::fs::remove_file(&self.err);
        }
    }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// What a pod run printed, parsed.
pub struct PodRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub records: Vec<Value>,
}

impl PodRun {
    fn parse(code: Option<i32>, stdout: String, stderr: String) -> Self {
        let records = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        PodRun {
            code,
            stdout,
            stderr,
            records,
        }
    }

    /// Lines a container wrote (stdout and stderr), in order.
    pub fn logs(&self, container: &str) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r["type"] == "log" && r["container"] == container)
            .filter_map(|r| r["line"].as_str().map(str::to_string))
            .collect()
    }

    /// A container's lines that start with `prefix`, in order.
    pub fn lines_starting(&self, container: &str, prefix: &str) -> Vec<String> {
        self.logs(container)
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// What a probe sidecar printed for `action`: `ok: …` or `err: …`.
    pub fn outcome(&self, container: &str, action: &str) -> String {
        let prefix = format!("{action} ");
        self.logs(container)
            .iter()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("{container} printed nothing for {action}\n{}", self.dump()))
    }

    /// Fails the test, showing everything, unless `container` printed a line with `needle`.
    #[track_caller]
    pub fn assert_line(&self, container: &str, needle: &str) {
        assert!(
            self.has_line(container, needle),
            "{container} never printed {needle:?}\n{}",
            self.dump()
        );
    }

    pub fn has_line(&self, container: &str, needle: &str) -> bool {
        self.logs(container).iter().any(|l| l.contains(needle))
    }

    /// Whether `container` has started (at least once).
    pub fn started(&self, container: &str) -> bool {
        self.events(Some(container))
            .iter()
            .any(|e| e["event"] == "started")
    }

    /// Events about a container (or the pod, with `None`), in order.
    pub fn events(&self, container: Option<&str>) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["type"] == "event")
            .filter(|r| match container {
                Some(c) => r["container"] == c,
                None => r.get("container").is_none(),
            })
            .collect()
    }

    /// The last `exited` event of a container.
    pub fn exit(&self, container: &str) -> Value {
        self.events(Some(container))
            .into_iter()
            .rev()
            .find(|e| e["event"] == "exited")
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no exit event for {container}\n{}\n{}",
                    self.stdout, self.stderr
                )
            })
    }

    /// Diagnostics for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            text(self.stderr.as_bytes())
        )
    }
}

/// Nothing of the pod is left: no state directory, cgroup, mount, namespace holder or shim.
pub fn assert_no_leftovers(pod: &str) {
    let root = std::env::var_os("WPOD_ROOT").unwrap_or_else(|| "/var/lib/wpod".into());
    assert_no_leftovers_in(Path::new(&root), pod);
}

/// [`assert_no_leftovers`] for a pod of the state root `root` (a test's own `WPOD_ROOT`).
pub fn assert_no_leftovers_in(root: &Path, pod: &str) {
    let state = root.join("pods").join(pod);
    assert!(
        !state.exists(),
        "state directory {} is left",
        state.display()
    );
    // Cgroups live at wpod/<root-id>/pod-<pod> in each hierarchy.
    for hierarchy in ["memory", "cpu", "pids", "unified", ""] {
        let wpod = Path::new("/sys/fs/cgroup").join(hierarchy).join("wpod");
        for root in std::fs::read_dir(&wpod).into_iter().flatten().flatten() {
            let dir = root.path().join(format!("pod-{pod}"));
            assert!(!dir.exists(), "cgroup {} is left", dir.display());
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let marker = format!("/pods/{pod}/");
    assert!(
        !mounts.contains(&marker),
        "mounts of pod {pod} are left:\n{mounts}"
    );
    let pin = format!("/net/{pod}.netns ");
    assert!(
        !mounts.contains(&pin),
        "the network namespace of pod {pod} is still pinned:\n{mounts}"
    );
    let procs = processes_mentioning(&[&marker, &format!("--hostname\0{pod}\0")]);
    assert!(
        procs.is_empty(),
        "processes of pod {pod} are left: {procs:?}"
    );
}

/// PIDs whose command line contains any of `needles` (NUL-separated arguments).
pub fn processes_mentioning(needles: &[&str]) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmdline).into_owned();
        if needles.iter().any(|n| cmd.contains(n)) {
            found.push((pid, cmd.replace('\0', " ")));
        }
    }
    found
}

/// Whether something accepts TCP connections at `addr` from the host.
pub fn host_can_connect(addr: &str) -> bool {
    let addr = addr.parse().expect("socket address");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// `curl -s URL` from the host, retrying until it answers or `limit` passes.
pub fn curl(url: &str, limit: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", "-f", url])
            .output()
            .ok()?;
        if out.status.success() {
            return Some(text(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
