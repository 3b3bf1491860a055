//! `wpod sidecar run`: one Wasm sidecar as the process of a container already inside a pod, with
//! the grants of its Pod manifest. The container is made here as a container runtime makes
//! one: a network namespace with the pod's address (198.51.100.2 on a veth pair), a private
//! mount namespace whose volumeMounts are tmpfs mounts at their mountPaths, an unprivileged
//! user (65534) with no_new_privs. Needs root (namespaces, mounts), `unshare` and `setpriv`
//! (util-linux).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wpod_test_support::netns::NetNs;
use wpod_test_support::{require_root, sidecar};

use crate::{text, wpod_bin};

/// The runner's user in the container: nobody.
const RUNNER_UID: u32 = 65534;

/// A container of a test's own, for a runner: its network namespace and its directory (the
/// manifest, and the state directory the runner owns).
struct TestContainer {
    net: NetNs,
    dir: PathBuf,
}

impl TestContainer {
    fn new(tag: &str, manifest: &str) -> Self {
        let net = NetNs::new(tag);
        // The pod's own address, as a CNI plugin gives it.
        net.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        net.ip(&["addr", "add", "198.51.100.2/28", "dev", "eth0"]);
        net.ip(&["link", "set", "peer0", "up"]);
        net.ip(&["link", "set", "eth0", "up"]);
        let dir = std::env::temp_dir().join(format!("wpod-kube-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).expect("test dir");
        std::fs::write(dir.join("pod.yaml"), manifest).expect("manifest");
        std::os::unix::fs::chown(dir.join("state"), Some(RUNNER_UID), Some(RUNNER_UID))
            .expect("chown state");
        TestContainer { net, dir }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `wpod sidecar run` in this container: each of `mounts` (mountPath, read-only) is a
    /// tmpfs mounted there (under /mnt, itself a fresh tmpfs), then the runner runs as nobody.
    fn runner(&self, mounts: &[(&str, bool)], component: &Path, extra: &[&str]) -> Command {
        self.runner_of("probe", mounts, component, extra)
    }

    /// [`TestContainer::runner`] for the manifest's container `name`.
    fn runner_of(
        &self,
        name: &str,
        mounts: &[(&str, bool)],
        component: &Path,
        extra: &[&str],
    ) -> Command {
        self.runner_after(name, mounts, component, extra, "")
    }

    /// [`TestContainer::runner_of`], running the shell commands `setup` (as root, in the
    /// container's mount namespace) just before the runner.
    fn runner_after(
        &self,
        name: &str,
        mounts: &[(&str, bool)],
        component: &Path,
        extra: &[&str],
        setup: &str,
    ) -> Command {
        // Every mountPath of the manifest exists; only those in `mounts` are mounts.
        let mut script =
            String::from("set -e\nmount -t tmpfs tmpfs /mnt\nmkdir -p /mnt/data /mnt/conf\n");
        for (path, read_only) in mounts {
            let ro = if *read_only { ",ro" } else { "" };
            script.push_str(&format!(
                "mkdir -p {path}\nmount -t tmpfs -o mode=0777{ro} tmpfs {path}\n"
            ));
        }
        script.push_str(setup);
        script.push_str(
            "exec setpriv --reuid 65534 --regid 65534 --clear-groups --no-new-privs \"$@\"\n",
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(wpod_bin())
            .args(["sidecar", "run", "--manifest"])
            .arg(self.dir.join("pod.yaml"))
            .args(["--container", name, "--component"])
            .arg(component);
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(self.state_dir());
        }
        cmd.args(extra);
        self.net.enter(&mut cmd);
        cmd
    }

    /// `wpod sidecar probe` on this container's state directory.
    fn probe(&self) -> Output {
        Command::new(wpod_bin())
            .args(["sidecar", "probe", "--state-dir"])
            .arg(self.state_dir())
            .output()
            .expect("wpod sidecar probe")
    }

    /// Waits until the probe passes (the guest called ready()), or fails the test.
    fn wait_ready(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.probe().status.success() {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the runner ended before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "the sidecar never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a runner left running by a failed assertion (by its PID, which is the runner's:
/// unshare, sh and setpriv each exec the next).
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running child")
    }

    /// The child, to wait for: no longer killed on drop.
    fn take(&mut self) -> Child {
        self.0.take().expect("a running child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sigterm(child: &Child) {
    // SAFETY: a signal to a child of ours, by PID, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// The outcome the probe guest printed for `action` (`ok: ...`, `err: ...`).
pub fn outcome<'a>(stdout: &'a str, action: &str) -> &'a str {
    let prefix = format!("{action} ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no outcome for {action} in:\n{stdout}"))
}

const PROBE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: nginx
  - name: probe
    image: registry.example/probe:1
    args:
    - connect:127.0.0.1:9
    - connect:198.51.100.2:9
    - connect:198.51.100.1:80
    - listen:8080
    - listen:8081
    - write:/mnt/data/x:hello
    - read:/mnt/data/x
    - read:/etc/passwd
    - read:/mnt/data/../../etc/passwd
    - symlink:/etc/passwd:/mnt/data/link
    - read:/mnt/data/link
    - symlink:x:/mnt/data/relative
    - write:/mnt/conf/y:no
    - alloc:4
    - alloc:128
    - ready
    - wait-stopping
    ports:
    - containerPort: 8080
    resources:
      limits:
        memory: 64Mi
    volumeMounts:
    - name: data
      mountPath: /mnt/data
    - name: conf
      mountPath: /mnt/conf
      readOnly: true
  volumes:
  - name: data
    emptyDir: {}
  - name: conf
    emptyDir: {}
"#;

/// The grants of the manifest hold inside a container: the pod's loopback and own address are
/// reachable, another address is not; only the declared port is listened on; the volumeMounts
/// are the only files (read-only honoured, `..` and symlinks kept inside); the memory limit
/// holds. Readiness reaches `wpod sidecar probe`; SIGTERM is the guest's `stopping` event.
#[test]
fn a_sidecar_in_a_container_gets_exactly_its_manifest_grants() {
    require_root("a_sidecar_in_a_container_gets_exactly_its_manifest_grants");
    let c = TestContainer::new("grants", PROBE_POD);
    assert!(
        !c.probe().status.success(),
        "the probe passes before any runner ran"
    );
    let mut child = Running(Some(
        c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the runner"),
    ));
    c.wait_ready(child.child());
    let probe = c.probe();
    assert!(
        text(&probe.stdout).contains("ready: probe (sha256:"),
        "{}",
        text(&probe.stdout)
    );
    sigterm(child.child());
    let out = child
        .take()
        .wait_with_output()
        .expect("the runner's output");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    // Allowed: the kernel answers (nothing listens), wpod does not refuse.
    assert!(
        outcome(&stdout, "connect:127.0.0.1:9").contains("refused"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "connect:198.51.100.2:9").contains("refused"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "connect:198.51.100.1:80").starts_with("err: Permission denied"),
        "{all}"
    );
    assert!(outcome(&stdout, "listen:8080").starts_with("ok"), "{all}");
    assert!(outcome(&stdout, "listen:8081").starts_with("err"), "{all}");
    assert_eq!(outcome(&stdout, "read:/mnt/data/x"), "ok: hello", "{all}");
    assert!(
        outcome(&stdout, "read:/etc/passwd").starts_with("err"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "read:/mnt/data/../../etc/passwd").starts_with("err"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "read:/mnt/data/link").starts_with("err"),
        "{all}"
    );
    // No link at all: the pod's other containers would follow it (they mount the volume
    // without nosymfollow on Kubernetes).
    assert!(
        outcome(&stdout, "symlink:x:/mnt/data/relative").starts_with("err"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "write:/mnt/conf/y:no").starts_with("err"),
        "{all}"
    );
    assert_eq!(outcome(&stdout, "alloc:4"), "ok: 4 MiB", "{all}");
    assert!(outcome(&stdout, "alloc:128").starts_with("err"), "{all}");
    assert!(
        outcome(&stdout, "wait-stopping").starts_with("ok: stopping with"),
        "{all}"
    );
    // Each refusal is an event on stderr, naming the field that would grant it.
    for denial in [
        "denied connect to 198.51.100.1:80: not in metadata.annotations[wpod.dev/allowed-outbound.probe]",
        "denied listen on 0.0.0.0:8081: not in spec.containers[1].ports",
        "denied write to /mnt/conf/y",
        "denied write to /mnt/data/relative: a sidecar in a container of its own makes no symlinks",
    ] {
        assert!(stderr.contains(denial), "missing {denial:?}\n{all}");
    }
    assert!(stderr.contains("probe ready"), "{all}");
    // Its readiness went with it.
    let after = c.probe();
    assert!(!after.status.success(), "{}", text(&after.stdout));
}

/// Runs `cmd`, a runner that must be refused at start: exit 128, `expect` on stderr, nothing
/// from the guest. A runner that starts instead (its guest waits for `stopping`) fails the
/// test in time rather than hanging it.
fn assert_refused(cmd: &mut Command, expect: &str) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the runner");
    let mut child = Running(Some(child));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.child().try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the runner started: {expect:?} was not refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .take()
        .wait_with_output()
        .expect("the runner's output");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
    assert!(
        text(&out.stdout).is_empty(),
        "the guest ran: {}",
        text(&out.stdout)
    );
}

/// A grant the container does not back, a component that is not the one named, a view this
/// runner cannot give: refused before anything runs, exit 128, with the reason on stderr.
#[test]
fn a_sidecar_in_a_container_is_refused_what_its_container_does_not_back() {
    require_root("a_sidecar_in_a_container_is_refused_what_its_container_does_not_back");
    let c = TestContainer::new("refused", PROBE_POD);
    let refused = assert_refused;
    // /mnt/conf is a directory of the container's own filesystem, not a mount.
    refused(
        &mut c.runner(&[("/mnt/data", false)], &sidecar("probe"), &[]),
        "volumeMount /mnt/conf: nothing is mounted there in this container",
    );
    // Another manifest than the digest named (a ConfigMap someone else made).
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &["--manifest-digest", &format!("sha256:{}", "0".repeat(64))],
        ),
        "another ConfigMap stands in its place",
    );
    // Another component than the digest named.
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &["--component-digest", &format!("sha256:{}", "0".repeat(64))],
        ),
        "is sha256:",
    );
    // The main-process view without shareProcessNamespace: not granted, as in a wpod pod.
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("main-probe"),
            &[],
        ),
        "spec.shareProcessNamespace: true",
    );
    // A mount of the container's own below a volume (as the kubelet's /etc/hosts would be
    // below a volume at /etc): the guest would reach it through the volume.
    refused(
        &mut c.runner(
            &[
                ("/mnt/data", false),
                ("/mnt/conf", true),
                ("/mnt/data/inner", false),
            ],
            &sidecar("probe"),
            &[],
        ),
        "volumeMount /mnt/data: /mnt/data/inner is mounted inside it",
    );
    // A volume that receives mounts made outside the container later (shared propagation).
    refused(
        &mut c.runner_after(
            "probe",
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &[],
            "mount --make-shared /mnt/data\n",
        ),
        "volumeMount /mnt/data: it is mounted with shared or slave propagation",
    );
    // A readOnly volume the container mounted read-write.
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", false)],
            &sidecar("probe"),
            &[],
        ),
        "volumeMount /mnt/conf: the manifest says readOnly, but it is mounted read-write",
    );
    // The runner's own state (its readiness file, its compile cache) inside a volume, and
    // precompiled code from a volume (whose writer could sign its own native code).
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &["--state-dir", "/mnt/data/state"],
        ),
        "the runner's own state directory /mnt/data/state lies inside it",
    );
    refused(
        &mut c.runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &["--precompiled", "/mnt/conf"],
        ),
        "the runner's own precompiled code /mnt/conf lies inside it",
    );
    // A container the manifest does not have, with the manifest's own location.
    refused(
        &mut c.runner_of("nosuch", &[], &sidecar("probe"), &[]),
        "the pod has no container named \"nosuch\" (it has: main, probe)",
    );
}

/// A guest that does not end within the grace period after SIGTERM is stopped by force (137),
/// and a second start of the same component loads its compiled code from the state directory.
#[test]
fn a_sidecar_in_a_container_is_killed_after_its_grace_period_and_starts_warm() {
    require_root("a_sidecar_in_a_container_is_killed_after_its_grace_period_and_starts_warm");
    let manifest = PROBE_POD
        .replace(
            "terminationGracePeriodSeconds: 5",
            "terminationGracePeriodSeconds: 1",
        )
        .replace("    - wait-stopping\n", "    - sleep:60000\n");
    let c = TestContainer::new("grace", &manifest);
    let mounts = [("/mnt/data", false), ("/mnt/conf", true)];
    let mut compiled = Vec::new();
    for _ in 0..2 {
        let mut child = Running(Some(
            c.runner(&mounts, &sidecar("probe"), &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the runner"),
        ));
        c.wait_ready(child.child());
        let started = Instant::now();
        sigterm(child.child());
        let mut ended = child.take();
        let status = ended.wait().expect("wait");
        let stderr: Vec<String> = BufReader::new(ended.stderr.take().expect("stderr"))
            .lines()
            .map_while(Result::ok)
            .collect();
        let stderr = stderr.join("\n");
        assert_eq!(status.code(), Some(137), "{stderr}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "stopped before its grace period ended: {stderr}"
        );
        assert!(
            stderr.contains("killed at the end of the grace period"),
            "{stderr}"
        );
        compiled.push(stderr.contains("compiled the component"));
    }
    assert_eq!(compiled, [true, false], "the second start compiled again");
}

/// After `--`, the guest's argv is the runner's (as the kubelet expanded it) and its
/// environment the container's (as the kubelet resolved it), less the runner's own `WPOD_*`
/// settings and the PATH every container gets; the manifest's args and env are not used.
#[test]
fn a_sidecar_in_a_container_takes_argv_and_env_from_its_container_runtime() {
    require_root("a_sidecar_in_a_container_takes_argv_and_env_from_its_container_runtime");
    let c = TestContainer::new("argv", PROBE_POD);
    let out = c
        .runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &[
                "--",
                "probe",
                "env:GREETING",
                "env:WPOD_HOST_IP",
                "env:PATH",
                "exit:0",
            ],
        )
        .env("GREETING", "from the kubelet")
        .env("WPOD_HOST_IP", "203.0.113.9")
        .output()
        .expect("run the runner");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(
        outcome(&stdout, "env:GREETING"),
        "ok: from the kubelet",
        "{all}"
    );
    assert!(
        outcome(&stdout, "env:WPOD_HOST_IP").starts_with("err"),
        "{all}"
    );
    assert!(outcome(&stdout, "env:PATH").starts_with("err"), "{all}");
    // Not the manifest's args.
    assert!(!stdout.contains("connect:"), "{all}");
}

/// The input and golden output of `wpod kube generate` (tests/kube), in a directory of the
/// test's own with the probe component beside the manifest.
struct GenerateDir(PathBuf);

impl GenerateDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-generate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let repo = wpod_test_support::repo_root();
        std::fs::copy(repo.join("tests/kube/pod.yaml"), dir.join("pod.yaml")).expect("manifest");
        std::fs::copy(sidecar("probe"), dir.join("probe.wasm")).expect("component");
        GenerateDir(dir)
    }

    fn generate(&self, args: &[&str]) -> Output {
        Command::new(wpod_bin())
            .args(["kube", "generate"])
            .arg(self.0.join("pod.yaml"))
            .args(args)
            .output()
            .expect("wpod kube generate")
    }
}

impl Drop for GenerateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RUNNER_IMAGE: &str =
    "registry.example/web/probe@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The generated YAML is the golden file's (the component's digest aside: the guests are
/// rebuilt by each toolchain), and reads back through Kubernetes' types unchanged. Set
/// WPOD_BLESS=1 to rewrite the golden file (then review the diff).
#[test]
fn kube_generate_writes_the_golden_yaml() {
    let dir = GenerateDir::new("golden");
    let out = dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest = wpod_test_support::hostile_registry::sha256_digest(
        &std::fs::read(sidecar("probe")).expect("probe"),
    );
    assert!(
        stdout.contains(&digest),
        "the component's digest is pinned:\n{stdout}"
    );
    let got = stdout.replace(&digest, "sha256:COMPONENT");
    let golden = wpod_test_support::repo_root().join("tests/kube/generated.yaml");
    if std::env::var_os("WPOD_BLESS").is_some() {
        std::fs::write(&golden, &got).expect("bless");
    }
    let want = std::fs::read_to_string(&golden).expect("tests/kube/generated.yaml");
    assert_eq!(
        got, want,
        "wpod kube generate's output changed (WPOD_BLESS=1 to accept)"
    );
    wpod::kube::generate::round_trip(&stdout).expect("a strict round-trip");
}

/// What cannot map is refused by name, with the fix: a sidecar without its runner image, an
/// image not pinned by digest, --image for a native container, a native container whose image
/// is a directory of this machine.
#[test]
fn kube_generate_refuses_what_cannot_map() {
    let dir = GenerateDir::new("refused");
    let refused = |out: Output, expect: &str| {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "generated:\n{}", text(&out.stdout));
        assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    };
    refused(
        dir.generate(&[]),
        "give it with --image probe=REGISTRY/NAME@sha256:",
    );
    refused(
        dir.generate(&["--image", "probe=registry.example/web/probe:1.0"]),
        "name the runner image by its digest",
    );
    refused(
        dir.generate(&[
            "--image",
            &format!("probe={RUNNER_IMAGE}"),
            "--image",
            &format!("nginx={RUNNER_IMAGE}"),
        ]),
        "the pod has no Wasm sidecar named nginx",
    );
    let manifest = dir.0.join("pod.yaml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        original.replace("    image: docker.io/library/busybox:1.36\n", ""),
    )
    .expect("manifest");
    refused(
        dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]),
        "container log-init: its image is none (it runs from the host's own root), which no node",
    );
    let image = format!("probe={RUNNER_IMAGE}");
    let with = |from: &str, to: &str| {
        assert!(original.contains(from), "{from}");
        std::fs::write(&manifest, original.replace(from, to)).expect("manifest");
        dir.generate(&["--image", &image])
    };
    // A variable the runner's dynamic loader would read before wpod runs.
    refused(
        with(
            "    - {name: GREETING, value: \"hello $(POD_NAME)\"}\n",
            "    - {name: LD_PRELOAD, value: /logs/evil.so}\n",
        ),
        "its variable LD_PRELOAD would be read by the runner's dynamic loader",
    );
    // A volume over the runner's own files (its state directory here).
    refused(
        with("mountPath: /logs, readOnly: true", "mountPath: /var/run"),
        "volumeMount /var/run is at, above or under /var/run/wpod",
    );
    // Off the network on one host; on Kubernetes every pod is on the cluster's.
    refused(
        with(
            "  labels:\n",
            "  annotations:\n    wpod.dev/network: none\n  labels:\n",
        ),
        "wpod.dev/network: none keeps a pod off the network on one host",
    );
    // A ConfigMap of the file that the API server would refuse (a value that is not a
    // string) is blamed on the file, not on wpod.
    let mut with_object = original.replace(
        "  volumes:\n",
        "  volumes:\n  - name: conf\n    configMap: {name: conf}\n",
    );
    with_object.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {PORT: 8080}\n",
    );
    std::fs::write(&manifest, with_object).expect("manifest");
    refused(
        dir.generate(&["--image", &image]),
        "the ConfigMap conf does not read as a Kubernetes object",
    );
}

/// A Wasm init container that runs to completion gets no startupProbe (Kubernetes allows one
/// only on regular containers and native sidecars); the runner container never gets the
/// pod's ServiceAccount token (an empty directory is mounted where the kubelet would put it),
/// whatever the other containers need.
#[test]
fn kube_generate_gives_init_runners_no_startup_probe_and_no_runner_a_token() {
    let dir = GenerateDir::new("init");
    let manifest = dir.0.join("pod.yaml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    // The probe sidecar moved to the init containers, run to completion.
    let sidecar_start = original.find("  - name: probe\n").expect("the sidecar");
    let sidecar_end = original.find("  volumes:\n").expect("volumes");
    let block = &original[sidecar_start..sidecar_end];
    let moved = original
        .replace(block, "")
        .replace(
            "  initContainers:\n",
            &format!("  initContainers:\n{block}"),
        )
        .replace("spec:\n", "spec:\n  serviceAccountName: controller\n");
    std::fs::write(&manifest, moved).expect("manifest");
    let out = dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs = wpod::kube::yaml::documents(&text(&out.stdout)).expect("YAML");
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let init = &pod["spec"]["initContainers"];
    let runner = init
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "probe"))
        .unwrap_or_else(|| panic!("the runner among the init containers: {pod}"));
    assert!(runner.get("startupProbe").is_none(), "{runner}");
    let mounts = runner["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts.iter().any(
            |m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
                && m["readOnly"] == true
        ),
        "{runner}"
    );
    // The pod's own token setting is left to the manifest.
    assert!(
        pod["spec"].get("automountServiceAccountToken").is_none(),
        "{pod}"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "controller");
}

/// A sidecar with the main-process view: its runner is told the pod's main containers (the
/// regular native ones; not the native init containers, not itself); granted signals too,
/// it runs as user 0 with KILL as its one capability (Kubernetes gives a non-root container
/// no added capability), and without, as the unprivileged user with none. No ServiceAccount
/// token either way: the view reads /proc of the shared PID namespace.
#[test]
fn kube_generate_gives_the_main_process_view_names_and_kill_only_when_granted() {
    let dir = GenerateDir::new("view");
    std::fs::copy(sidecar("main-probe"), dir.0.join("probe.wasm")).expect("component");
    let manifest = dir.0.join("pod.yaml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    let shared = original.replace("spec:\n", "spec:\n  shareProcessNamespace: true\n");
    let runner_of = |yaml: &str| -> serde_json::Value {
        std::fs::write(&manifest, yaml).expect("manifest");
        let out = dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let docs = wpod::kube::yaml::documents(&text(&out.stdout)).expect("YAML");
        let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
        pod["spec"]["containers"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == "probe"))
            .cloned()
            .unwrap_or_else(|| panic!("the runner: {pod}"))
    };
    let command = |runner: &serde_json::Value| -> Vec<String> {
        runner["command"]
            .as_array()
            .expect("a command")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let watcher = runner_of(&shared);
    let argv = command(&watcher);
    let mains: Vec<&str> = argv
        .windows(2)
        .filter(|w| w[0] == "--main")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(mains, ["nginx"], "{argv:?}");
    let sc = &watcher["securityContext"];
    assert_eq!(sc["runAsUser"], 65532, "{sc}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert!(sc["capabilities"].get("add").is_none(), "{sc}");

    let killer = runner_of(&shared.replace(
        "    command: [probe]\n",
        "    command: [probe]\n    securityContext:\n      capabilities: {add: [KILL]}\n",
    ));
    let sc = &killer["securityContext"];
    assert_eq!(sc["runAsUser"], 0, "{sc}");
    assert_eq!(sc["runAsNonRoot"], false, "{sc}");
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["KILL"]),
        "{sc}"
    );
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{sc}"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert!(command(&killer).contains(&"--main".to_string()));

    // Signals make the runner user 0: not over a host directory it may write.
    let over_host = shared
        .replace(
            "    command: [probe]\n",
            "    command: [probe]\n    securityContext:\n      capabilities: {add: [KILL]}\n",
        )
        .replace(
            "    - {name: logs, mountPath: /logs, readOnly: true}\n",
            "    - {name: logs, mountPath: /logs}\n",
        )
        .replace("    emptyDir: {}\n", "    hostPath: {path: /var/log/web}\n");
    std::fs::write(&manifest, &over_host).expect("manifest");
    let out = dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("mounts the hostPath volume logs writable at /logs"),
        "{}",
        text(&out.stderr)
    );
    // Without shareProcessNamespace the view is not granted, and the pod not written.
    std::fs::write(&manifest, &original).expect("manifest");
    let out = dir.generate(&["--image", &format!("probe={RUNNER_IMAGE}")]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("spec.shareProcessNamespace: true"),
        "{}",
        text(&out.stderr)
    );
}

/// `wpod kube build` pushes the runner image to a real registry (Debian's docker-registry on
/// loopback) at the digest it prints; an independent client (skopeo) reads back an ordinary
/// image: the runner's user, wpod as its entrypoint, the component's digest as a label, one
/// layer holding wpod, the component and its compiled code, and no shell.
#[test]
fn kube_build_pushes_a_runner_image_a_registry_serves() {
    require_root("kube_build_pushes_a_runner_image_a_registry_serves");
    let env = crate::images::ImageEnv::new("kube-build");
    let addr = &crate::images::registry().addr;
    let image = format!("{addr}/wpod-test/probe-runner:1.0");
    let out = Command::new(wpod_bin())
        .args([
            "kube",
            "build",
            path_str(&sidecar("probe")),
            "--tag",
            &image,
        ])
        .envs(env.vars())
        .output()
        .expect("wpod kube build");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pinned = text(&out.stdout).trim().to_string();
    let digest = pinned
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .expect("REF@DIGEST");
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .args(args)
            .arg(format!("docker://{addr}/wpod-test/probe-runner@{digest}"))
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let config = skopeo(&["--config"]);
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/wpod");
    let component = wpod_test_support::hostile_registry::sha256_digest(
        &std::fs::read(sidecar("probe")).expect("probe"),
    );
    assert_eq!(
        config["config"]["Labels"]["dev.wpod.component.digest"],
        component.as_str()
    );
    let manifest = skopeo(&["--raw"]);
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(1),
        "{manifest}"
    );
    // The layer's files, through the registry.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    let blob = Command::new("curl")
        .args([
            "-sf",
            &format!("http://{addr}/v2/wpod-test/probe-runner/blobs/{layer}"),
        ])
        .output()
        .expect("curl");
    assert!(blob.status.success());
    let mut files: Vec<String> = tar_names(&blob.stdout);
    files.sort();
    for want in [
        "usr/local/bin/wpod",
        "wpod/component.wasm",
        "wpod/precompiled/mac.key",
        "etc/wpod/",
        "var/run/wpod/",
    ] {
        assert!(files.iter().any(|f| f == want), "no {want} in {files:?}");
    }
    assert!(files.iter().any(|f| f.ends_with(".cwasm")), "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with("/sh") || f.ends_with("busybox")),
        "{files:?}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The names of a tar's entries.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(bytes)
        .entries()
        .expect("a tar")
        .map(|e| {
            let e = e.expect("an entry");
            e.path().expect("a path").to_string_lossy().into_owned()
        })
        .collect()
}

/// `--policy`: the trust policy's requirements for the pod's images become sigstore
/// policy-controller ClusterImagePolicy documents: the runner images' scope checked with its
/// key, a rejected scope refused, a scope that accepts anything left out.
#[test]
fn kube_generate_writes_the_trust_policy_as_cluster_image_policies() {
    let dir = GenerateDir::new("policy");
    let key = Command::new(wpod_bin())
        .args(["key", "generate", "--no-password", "team"])
        .current_dir(&dir.0)
        .output()
        .expect("wpod key generate");
    assert!(key.status.success(), "{}", text(&key.stderr));
    let public = std::fs::read_to_string(dir.0.join("team.pub")).expect("team.pub");
    let policy = dir.0.join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
                "transports": {{"docker": {{
                  "registry.example/web": [{{"type": "sigstoreSigned", "keyPath": "{}"}}],
                  "docker.io/library/busybox": [{{"type": "insecureAcceptAnything"}}]}}}}}}"#,
            dir.0.join("team.pub").display()
        ),
    )
    .expect("policy.json");
    let generate = || {
        dir.generate(&[
            "--image",
            &format!("probe={RUNNER_IMAGE}"),
            "--policy",
            path_str(&policy),
        ])
    };
    // A policy that rejects an image of the pod: the pod could never be admitted.
    let with = |busybox: &str| {
        let text = std::fs::read_to_string(&policy).expect("policy");
        let start = text
            .find("\"docker.io/library/busybox\"")
            .expect("busybox scope");
        let end = start + text[start..].find(']').expect("its list") + 1;
        std::fs::write(
            &policy,
            format!(
                "{}\"docker.io/library/busybox\": [{busybox}]{}",
                &text[..start],
                &text[end..]
            ),
        )
        .expect("policy.json");
    };
    with(r#"{"type": "reject"}"#);
    let refused = generate();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("the policy rejects docker.io/library/busybox:1.36"),
        "{}",
        text(&refused.stderr)
    );
    with(r#"{"type": "insecureAcceptAnything"}"#);
    let out = generate();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let docs = wpod::kube::yaml::documents(&stdout).expect("YAML");
    let policies: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterImagePolicy")
        .collect();
    assert_eq!(policies.len(), 1, "{stdout}");
    let signed = policies
        .iter()
        .find(|p| p["spec"]["images"][0]["glob"] == "registry.example/web/probe*")
        .unwrap_or_else(|| panic!("no policy for the runner's scope:\n{stdout}"));
    assert_eq!(signed["apiVersion"], "policy.sigstore.dev/v1beta1");
    assert_eq!(
        signed["spec"]["authorities"][0]["key"]["data"],
        public.as_str()
    );
    // nginx's and busybox's scopes accept anything: nothing to enforce.
    assert!(!stdout.contains("library/nginx*"), "{stdout}");
    assert!(!stdout.contains("library/busybox*"), "{stdout}");
    // A glob never holds `@` (policy-controller refuses one that does).
    for p in &policies {
        let glob = p["spec"]["images"][0]["glob"].as_str().unwrap_or_default();
        assert!(!glob.contains('@'), "{glob}");
    }
    wpod::kube::generate::round_trip(&stdout).expect("a strict round-trip");
}

/// On the host's network the container's addresses are the node's: none is the pod's own, as
/// in a wpod pod, so connecting to one needs an outbound rule.
#[test]
fn a_sidecar_in_a_host_network_container_has_no_own_address() {
    require_root("a_sidecar_in_a_host_network_container_has_no_own_address");
    let manifest = PROBE_POD
        .replace("spec:\n", "spec:\n  hostNetwork: true\n")
        .replace(
            "    - connect:198.51.100.1:80\n",
            "    - connect:198.51.100.1:80\n    - exit:0\n",
        );
    let c = TestContainer::new("hostnet", &manifest);
    let out = c
        .runner(
            &[("/mnt/data", false), ("/mnt/conf", true)],
            &sidecar("probe"),
            &[],
        )
        .output()
        .expect("run the runner");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        outcome(&stdout, "connect:127.0.0.1:9").contains("refused"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "connect:198.51.100.2:9").starts_with("err: Permission denied"),
        "{all}"
    );
}

/// A sidecar from a registry (`--artifact`, which kube generate writes for a pulled one) runs
/// only while the approvals file (on a cluster, a ConfigMap) approves that very digest as a
/// Wasm sidecar with the component's imports: then it starts and becomes ready; withdrawn,
/// approved only at another digest, approved as a container image, or with fewer imports
/// than the component has, it is refused at start, exit 128, naming the file.
#[test]
fn a_sidecar_from_a_registry_runs_in_a_container_only_while_approved() {
    require_root("a_sidecar_from_a_registry_runs_in_a_container_only_while_approved");
    let c = TestContainer::new("approved", PROBE_POD);
    let mounts = [("/mnt/data", false), ("/mnt/conf", true)];
    let approvals = c.dir.join("approvals.json");
    let digest = format!("sha256:{}", "a".repeat(64));
    let artifact = format!("registry.example/probe:1@{digest}");
    let approval = |digest: &str, kind: &str, imports: &[String]| {
        serde_json::json!({"version": 1, "approvals": [{
            "repository": "registry.example/probe", "digest": digest, "kind": kind,
            "tag": "1", "imports": imports, "approvedAt": "2026-12-05T00:00:00Z"}]})
        .to_string()
    };
    let imports: Vec<String> = wpod::grants::inspect::inspect(&sidecar("probe"))
        .expect("the probe's imports")
        .imports
        .into_iter()
        .map(|i| i.name)
        .collect();
    let args = ["--artifact", &artifact, "--approvals", path_str(&approvals)];
    // Approved at this digest, with the component's imports: it runs.
    std::fs::write(&approvals, approval(&digest, "sidecar", &imports)).expect("approvals");
    let mut child = Running(Some(
        c.runner(&mounts, &sidecar("probe"), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the runner"),
    ));
    c.wait_ready(child.child());
    sigterm(child.child());
    let out = child
        .take()
        .wait_with_output()
        .expect("the runner's output");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let refused =
        |expect: &str| assert_refused(&mut c.runner(&mounts, &sidecar("probe"), &args), expect);
    // Withdrawn: the approvals hold nothing of it.
    std::fs::write(&approvals, r#"{"version": 1, "approvals": []}"#).expect("approvals");
    refused(&format!(
        "--artifact {artifact}: not approved by {}",
        approvals.display()
    ));
    // Only another digest approved (even one that imported as much): not this one.
    let other = format!("sha256:{}", "b".repeat(64));
    std::fs::write(&approvals, approval(&other, "sidecar", &imports)).expect("approvals");
    refused("not approved by");
    // This digest approved as a container image, or with fewer imports than the component
    // has: not the component that was reviewed.
    std::fs::write(&approvals, approval(&digest, "container", &imports)).expect("approvals");
    refused("approves it as a container image, not as a Wasm sidecar");
    std::fs::write(&approvals, approval(&digest, "sidecar", &[])).expect("approvals");
    refused("beyond what");
    // An approvals file that is not one: refused, naming it.
    std::fs::write(&approvals, "{").expect("approvals");
    refused("not a wpod approvals file");
}

/// The main-process view a container does not back is refused at start: the main containers
/// not named (`--main`, which kube generate writes), a name that is not a main container, a
/// PID namespace of the container's own (the runner is its PID 1), signals (`KILL`) without
/// CAP_KILL. The view itself, on a real runtime, is in tests/e2e/cri.rs.
#[test]
fn a_sidecar_in_a_container_is_refused_a_main_process_view_it_cannot_have() {
    require_root("a_sidecar_in_a_container_is_refused_a_main_process_view_it_cannot_have");
    let shared = PROBE_POD.replace("spec:\n", "spec:\n  shareProcessNamespace: true\n");
    let c = TestContainer::new("view", &shared);
    let mounts = [("/mnt/data", false), ("/mnt/conf", true)];
    let run = |mut cmd: Command, expect: &str| assert_refused(&mut cmd, expect);
    run(
        c.runner(&mounts, &sidecar("main-probe"), &[]),
        "needs the pod's main containers named: give --main NAME",
    );
    run(
        c.runner(&mounts, &sidecar("main-probe"), &["--main", "probe"]),
        "--main probe: not a main container of the pod",
    );
    // Not in a container the kubelet made: no directory of it to recognise the others by.
    run(
        c.runner(&mounts, &sidecar("main-probe"), &["--main", "main"]),
        "and container probe shows none",
    );
    // As PID 1 of a PID namespace of its own: the runtime did not share the pod's.
    let cmd = c.runner(&mounts, &sidecar("main-probe"), &["--main", "main"]);
    let mut pid1 = Command::new("unshare");
    pid1.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c.net.enter(&mut pid1);
    run(
        pid1,
        "has a PID namespace of its own (the runner is its PID 1)",
    );
    // Signals granted, and the runner (nobody, no capability) without CAP_KILL.
    let killer = shared.replace(
        "  - name: probe\n    image: registry.example/probe:1\n",
        "  - name: probe\n    image: registry.example/probe:1\n    securityContext:\n      \
         capabilities:\n        add: [KILL]\n",
    );
    assert_ne!(killer, shared);
    std::fs::write(c.dir.join("pod.yaml"), killer).expect("manifest");
    run(
        c.runner(&mounts, &sidecar("main-probe"), &["--main", "main"]),
        "but the runner has no CAP_KILL",
    );
}

/// A SIGTERM while the component compiles (the runner is its container's PID 1, which ignores
/// a signal it has no handler for) ends the container at once, as a process without a handler
/// ends (143), without starting the guest.
#[test]
fn a_sidecar_in_a_container_stops_on_sigterm_while_it_compiles() {
    require_root("a_sidecar_in_a_container_stops_on_sigterm_while_it_compiles");
    let c = TestContainer::new("compiling", PROBE_POD);
    // A Python component: its compile takes seconds (nothing cached in a new state directory).
    let cmd = c.runner(
        &[("/mnt/data", false), ("/mnt/conf", true)],
        &sidecar("health-check-py"),
        &[],
    );
    // As PID 1 of a PID namespace of its own, as in a container.
    let mut pid1 = Command::new("unshare");
    pid1.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c.net.enter(&mut pid1);
    let mut child = Running(Some(
        pid1.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the runner"),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    // The runner is the child of `unshare --fork`: signal it through its PID namespace.
    let runner = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", child.child().id()))
        .expect("unshare's children");
    let runner: i32 = runner.trim().parse().expect("one child");
    // SAFETY: a signal to a process of ours, by PID, while its parent waits for it.
    unsafe { libc::kill(runner, libc::SIGTERM) };
    let out = child
        .take()
        .wait_with_output()
        .expect("the runner's output");
    let all = format!(
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(143), "{all}");
    assert!(started.elapsed() < Duration::from_secs(5), "{all}");
    assert!(
        !text(&out.stderr).contains("started"),
        "the guest started: {all}"
    );
}

/// A sidecar pulled from a registry (and so reviewed) is a Wasm sidecar to `kube generate`
/// too: `wpod kube build REF` makes its runner image from the stored component, and the
/// generated runner pins that component's digest. A registry image not in the store is taken
/// for a container image.
#[test]
fn kube_generate_and_build_take_a_pulled_sidecar_from_the_store() {
    require_root("kube_generate_and_build_take_a_pulled_sidecar_from_the_store");
    let env = crate::images::ImageEnv::new("kube-pulled");
    let addr = &crate::images::registry().addr;
    let reference = format!("{addr}/wpod-test/kube-probe:1.0");
    let wpod = |args: &[&str]| {
        let out = Command::new(wpod_bin())
            .args(args)
            .envs(env.vars())
            .stdin(Stdio::null())
            .output()
            .expect("wpod");
        assert!(out.status.success(), "wpod {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    wpod(&["push", path_str(&sidecar("probe")), &reference]);
    wpod(&["pull", &reference, "--yes"]);
    let archive = env.dir.join("runner.tar");
    let runner = wpod(&[
        "kube",
        "build",
        &reference,
        "--tag",
        "localhost/wpod-test/kube-probe-runner:1.0",
        "--archive",
        path_str(&archive),
    ]);
    let runner = runner.trim();
    assert!(runner.contains("@sha256:"), "{runner}");
    let manifest = env.dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  containers:\n  \
             - name: main\n    image: docker.io/library/nginx:1.27\n  - name: probe\n    \
             image: {reference}\n    args: [ready, wait-stopping]\n"
        ),
    )
    .expect("manifest");
    let yaml = wpod(&[
        "kube",
        "generate",
        path_str(&manifest),
        "--image",
        &format!("probe={runner}"),
    ]);
    let component = wpod_test_support::hostile_registry::sha256_digest(
        &std::fs::read(sidecar("probe")).expect("probe"),
    );
    assert!(
        yaml.contains(&format!("\"{component}\"")),
        "the stored component's digest is pinned:\n{yaml}"
    );
    assert!(yaml.contains(&format!("image: \"{runner}\"")), "{yaml}");
    // Its runner checks the approvals at each start: the artifact and the approvals
    // ConfigMap (only this pod's repository's, in wpod's format) are in the YAML.
    let docs = wpod::kube::yaml::documents(&yaml).expect("YAML");
    let approvals_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "pulled-wpod-approvals")
        .unwrap_or_else(|| panic!("the approvals ConfigMap:\n{yaml}"));
    assert!(approvals_map.get("immutable").is_none(), "{approvals_map}");
    let written: serde_json::Value = serde_json::from_str(
        approvals_map["data"]["approvals.json"]
            .as_str()
            .expect("approvals.json"),
    )
    .expect("an approvals file");
    let repository = format!("{addr}/wpod-test/kube-probe");
    assert_eq!(written["approvals"][0]["repository"], repository.as_str());
    assert_eq!(
        written["approvals"].as_array().map(Vec::len),
        Some(1),
        "the exact approval of the pod's one sidecar: {written}"
    );
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let probe = pod["spec"]["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "probe"))
        .expect("the runner");
    let command: Vec<&str> = probe["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let artifact = command
        .windows(2)
        .find(|w| w[0] == "--artifact")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("--artifact in {command:?}"));
    assert!(
        artifact.starts_with(&format!("{reference}@sha256:")),
        "{artifact}"
    );
    assert_eq!(
        written["approvals"][0]["digest"].as_str(),
        artifact.rsplit_once('@').map(|(_, d)| d)
    );
    assert!(
        command
            .windows(2)
            .any(|w| w == ["--approvals", "/etc/wpod-approvals/approvals.json"]),
        "{command:?}"
    );
    // In the store but not approved (its approval revoked): refused, as `wpod run` refuses it.
    let approvals = env.root().join("approvals.json");
    let kept = std::fs::read(&approvals).expect("the approval the pull recorded");
    // Approvals named with --approvals are the ones checked.
    let elsewhere = env.dir.join("team-approvals.json");
    std::fs::write(&elsewhere, &kept).expect("approvals");
    std::fs::remove_file(&approvals).expect("move");
    wpod(&[
        "kube",
        "generate",
        path_str(&manifest),
        "--image",
        &format!("probe={runner}"),
        "--approvals",
        path_str(&elsewhere),
    ]);
    std::fs::remove_file(&elsewhere).expect("revoke");
    let unapproved = Command::new(wpod_bin())
        .args(["kube", "generate", path_str(&manifest), "--image"])
        .arg(format!("probe={runner}"))
        .envs(env.vars())
        .output()
        .expect("wpod kube generate");
    assert!(!unapproved.status.success());
    assert!(
        text(&unapproved.stderr).contains("is not approved at this digest"),
        "{}",
        text(&unapproved.stderr)
    );
    std::fs::write(&approvals, kept).expect("approve again");
    // Another registry image, not in the store: a container image, which --image cannot name.
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest)
            .expect("manifest")
            .replace("kube-probe:1.0", "kube-probe:2.0"),
    )
    .expect("manifest");
    let out = Command::new(wpod_bin())
        .args(["kube", "generate", path_str(&manifest), "--image"])
        .arg(format!("probe={runner}"))
        .envs(env.vars())
        .output()
        .expect("wpod kube generate");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the pod has no Wasm sidecar named probe"),
        "{}",
        text(&out.stderr)
    );
}
