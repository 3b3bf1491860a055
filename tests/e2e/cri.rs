//! The pod `wpod kube generate` writes, run on a real container runtime as the kubelet runs it:
//! Debian's containerd (1.6, runc, the CNI bridge plugin) driven through the Kubernetes CRI API
//! (`tests/cri`: a private containerd in a network namespace of its own, a small CRI client,
//! offline images). The test plays the kubelet's part for this pod: volumes as host
//! directories, the environment (`fieldRef`, `$(VAR)`) resolved, the securityContext and the
//! memory limit passed on, the startupProbe run through `ExecSync`, the stop through
//! `StopContainer`. The runtime, the shim, the sandbox, the mounts and the network are real.
//!
//! Needs root and Debian's containerd, runc, containernetworking-plugins, python3-grpcio,
//! python3-protobuf, protobuf-compiler, gcc, busybox-static and nginx-light (`.ci/setup`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};
use wpod_test_support::{repo_root, require_root, sidecar};

use crate::kube::outcome;
use crate::{text, wpod_bin};

/// A private containerd (tests/cri/setup.sh), torn down with everything it made when dropped.
struct Harness {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Harness {
    fn start(dir: &Path) -> Self {
        let out = Command::new(repo_root().join("tests/cri/setup.sh"))
            .arg(dir)
            .output()
            .expect("tests/cri/setup.sh");
        assert!(
            out.status.success(),
            "the containerd harness did not start: {}\n(needs Debian's containerd, runc, \
             containernetworking-plugins, python3-grpcio, python3-protobuf, protobuf-compiler, \
             gcc and busybox-static: bash .ci/setup)",
            text(&out.stderr)
        );
        let env: BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(dir.join("env.json")).expect("the harness's env.json"),
        )
        .expect("env.json");
        Harness {
            dir: dir.to_path_buf(),
            env,
        }
    }

    /// `cri.py ARGS`: its JSON answer, which must be a success.
    fn cri(&self, args: &[&str]) -> Value {
        let out = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/cri/cri.py"))
            .args(args)
            .envs(&self.env)
            .output()
            .expect("cri.py");
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "cri.py {args:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        assert!(out.status.success(), "cri.py {args:?}: {answer}");
        answer
    }

    /// Imports an image (`tests/cri/image.sh`); its digest-pinned reference.
    fn import(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(repo_root().join("tests/cri/image.sh"))
            .arg(&self.dir)
            .arg(name)
            .args(args)
            .output()
            .expect("tests/cri/image.sh");
        assert!(out.status.success(), "image {name}: {}", text(&out.stderr));
        pinned(name, &text(&out.stdout))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let out = Command::new(repo_root().join("tests/cri/teardown.sh"))
            .arg(&self.dir)
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!("teardown left something: {}", text(&out.stderr));
            }
        }
    }
}

/// `REPO@DIGEST` from an image's name and mkimage.py's JSON line.
fn pinned(name: &str, json_line: &str) -> String {
    let v: Value = serde_json::from_str(json_line.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("not mkimage.py's line: {json_line}"));
    let digest = v["manifest_digest"].as_str().expect("manifest_digest");
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    format!("{repo}@{digest}")
}

/// What the kubelet knows of the pod while it runs it.
struct Kubelet<'a> {
    harness: &'a Harness,
    pod: core::Pod,
    /// Each volume's host directory.
    volumes: BTreeMap<String, PathBuf>,
    pod_id: String,
    pod_ip: String,
}

const POD_UID: &str = "6b3e1f0e-0000-4000-8000-000000000001";

impl<'a> Kubelet<'a> {
    /// Makes the pod's volumes (emptyDir: a directory anyone in the pod may write; configMap:
    /// its keys as files) and its sandbox.
    fn run_pod(harness: &'a Harness, pod: core::Pod, config_maps: &[core::ConfigMap]) -> Self {
        let spec = pod.spec.clone().expect("a spec");
        let mut volumes = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            let dir = harness.dir.join("volumes").join(&v.name);
            std::fs::create_dir_all(&dir).expect("volume dir");
            if let Some(source) = &v.config_map {
                let cm = config_maps
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(source.name.as_str()))
                    .unwrap_or_else(|| panic!("no ConfigMap {}", source.name));
                for (key, value) in cm.data.iter().flatten() {
                    std::fs::write(dir.join(key), value).expect("configMap file");
                }
                chmod(&dir, 0o755);
            } else {
                assert!(
                    v.empty_dir.is_some(),
                    "volume {} is not an emptyDir",
                    v.name
                );
                chmod(&dir, 0o777);
            }
            volumes.insert(v.name.clone(), dir);
        }
        let name = pod.metadata.name.clone().expect("a name");
        let sandbox = json!({
            "metadata": {"name": name, "namespace": "default", "uid": POD_UID, "attempt": 0},
            "hostname": name,
            "linux": {"security_context": {"namespace_options": namespaces(&spec)}},
        });
        let sandbox_file = harness.dir.join("sandbox.json");
        std::fs::write(&sandbox_file, sandbox.to_string()).expect("sandbox.json");
        let pod_id = harness.cri(&["run-pod", path(&sandbox_file)])["pod_id"]
            .as_str()
            .expect("pod_id")
            .to_string();
        let pod_ip = harness.cri(&["pod-status", &pod_id])["ip"]
            .as_str()
            .expect("the pod's IP")
            .to_string();
        Kubelet {
            harness,
            pod,
            volumes,
            pod_id,
            pod_ip,
        }
    }

    /// The container `name` of the pod as the kubelet hands it to the runtime; started.
    fn start(&self, name: &str) -> String {
        let c = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
            .clone();
        let config = self.container_config(&c);
        let file = self.harness.dir.join(format!("container-{name}.json"));
        std::fs::write(&file, config.to_string()).expect("container json");
        let sandbox_file = self.harness.dir.join("sandbox.json");
        self.harness
            .cri(&["run", &self.pod_id, path(&sandbox_file), path(&file)])["container_id"]
            .as_str()
            .expect("container_id")
            .to_string()
    }

    fn container_config(&self, c: &core::Container) -> Value {
        // The environment in order, each value expanded against the ones before (`$(VAR)`).
        let mut env: Vec<(String, String)> = Vec::new();
        for var in c.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => expand(v, &env),
                (None, Some(from)) => {
                    let field = &from
                        .field_ref
                        .as_ref()
                        .expect("only fieldRef here")
                        .field_path;
                    match field.as_str() {
                        "metadata.name" => self.pod.metadata.name.clone().unwrap_or_default(),
                        "metadata.namespace" => "default".into(),
                        "metadata.uid" => POD_UID.into(),
                        "status.podIP" => self.pod_ip.clone(),
                        "status.hostIP" => "198.51.100.1".into(),
                        other => panic!("fieldRef {other} is not given by this kubelet"),
                    }
                }
                (None, None) => String::new(),
            };
            env.push((var.name.clone(), value));
        }
        let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|a| expand(a, &env)).collect()
        };
        let mut mounts: Vec<Value> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                json!({
                    "container_path": m.mount_path,
                    "host_path": path(&self.volumes[&m.name]),
                    "readonly": m.read_only.unwrap_or(false),
                })
            })
            .collect();
        mounts.push(self.termination_log(c));
        let memory = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| wpod::spec::quantity::bytes(&q.0).expect("a quantity"));
        let sc = c.security_context.clone().unwrap_or_default();
        let mut security = json!({
            "namespace_options": namespaces(self.pod.spec.as_ref().expect("spec")),
            "readonly_rootfs": sc.read_only_root_filesystem.unwrap_or(false),
            "no_new_privs": sc.allow_privilege_escalation == Some(false),
        });
        if let Some(uid) = sc.run_as_user {
            security["run_as_user"] = json!({"value": uid});
        }
        if let Some(gid) = sc.run_as_group {
            security["run_as_group"] = json!({"value": gid});
        }
        if let Some(caps) = &sc.capabilities {
            security["capabilities"] = json!({
                "drop_capabilities": caps.drop.clone().unwrap_or_default(),
                "add_capabilities": caps.add.clone().unwrap_or_default(),
            });
        }
        if let Some(seccomp) = &sc.seccomp_profile {
            security["seccomp"] = json!({"profile_type": seccomp.type_});
        }
        let mut linux = json!({"security_context": security});
        if let Some(bytes) = memory {
            linux["resources"] = json!({"memory_limit_in_bytes": bytes});
        }
        json!({
            "metadata": {"name": c.name, "attempt": 0},
            "image": {"image": c.image.clone().expect("an image")},
            "command": expand_all(&c.command),
            "args": expand_all(&c.args),
            "envs": env.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "mounts": mounts,
            "log_path": format!("{}.log", c.name),
            "linux": linux,
        })
    }
}

impl Kubelet<'_> {
    /// The container's termination message file, as the kubelet makes it: a new file in the
    /// container's directory (`<root>/pods/<pod uid>/containers/<name>/<8 hex digits>`),
    /// bind-mounted at its terminationMessagePath (the API server's default
    /// /dev/termination-log), writable by any user.
    fn termination_log(&self, c: &core::Container) -> Value {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0x5eed_0000);
        let dir = self
            .harness
            .dir
            .join("kubelet/pods")
            .join(POD_UID)
            .join("containers")
            .join(&c.name);
        std::fs::create_dir_all(&dir).expect("the container's directory");
        let file = dir.join(format!("{:08x}", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&file, b"").expect("termination log");
        chmod(&file, 0o666);
        let at = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        json!({"container_path": at, "host_path": path(&file)})
    }
}

fn namespaces(spec: &core::PodSpec) -> Value {
    let pid = match spec.share_process_namespace {
        Some(true) => "POD",
        _ => "CONTAINER",
    };
    json!({"network": "POD", "pid": pid, "ipc": "POD"})
}

fn expand(text: &str, env: &[(String, String)]) -> String {
    wpod::spec::env::expand(text, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The test's own directory, removed when dropped (after the harness's teardown).
struct WorkDir(PathBuf);

impl WorkDir {
    /// A new, empty directory of the test's own (`wpod-cri-TAG-PID` under the temp dir).
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-cri-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: nginx
    image: NGINX_IMAGE
    ports:
    - containerPort: 8080
  - name: probe
    image: ./probe.wasm
    args:
    - ready
    - connect:127.0.0.1:8080
    - connect:$(POD_IP):8080
    - connect:198.51.100.1:80
    - listen:9090
    - listen:9999
    - write:/data/hello:$(GREETING)
    - read:/etc/passwd
    - read:/data/../../etc/passwd
    - read:/etc/wpod/pod.yaml
    - alloc:4
    - alloc:128
    - wait-stopping
    env:
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: GREETING
      value: hello-from-$(POD_IP)
    ports:
    - containerPort: 9090
    resources:
      limits:
        memory: 64Mi
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
"#;

/// nginx as the main container and the probe sidecar as a runner container, from `wpod kube
/// generate`'s YAML, on containerd: the startupProbe passes through ExecSync once the guest
/// called ready(); the guest reaches nginx on the pod's loopback and the pod's own address,
/// listens on its declared port only, writes its volume, and is refused an address outside
/// the pod, an undeclared port, files outside its mounts (the runner's own among them) and
/// memory past its limit; the container's memory limit is the sidecar's plus the runner's;
/// StopContainer's SIGTERM is the guest's `stopping`.
/// Debian's nginx as an offline image; its digest-pinned reference.
fn nginx_image(harness: &Harness) -> String {
    let out = Command::new(repo_root().join("tests/cri/nginx-image.sh"))
        .arg(&harness.dir)
        .arg("localhost/wpod-test/nginx:1")
        .output()
        .expect("tests/cri/nginx-image.sh");
    assert!(out.status.success(), "{}", text(&out.stderr));
    pinned("localhost/wpod-test/nginx:1", &text(&out.stdout))
}

/// The wpod runner images hold here: the one under test, without its debug info (a copy, made
/// once per test run: 79 MB instead of 248). It is linked dynamically, so `wpod kube build`
/// puts its shared libraries and loader beside it. The static wpod of `runner/build.sh` would
/// take a second full release compile, a third of CI's time; the only code it leaves out is
/// the author tools, whose stand-in is tested in `host/src/scaffold.rs`.
fn runner_wpod() -> PathBuf {
    static STRIPPED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STRIPPED
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runner-wpod");
            std::fs::create_dir_all(&dir).expect("runner-wpod directory");
            let partial = dir.join(format!("wpod.{}.partial", std::process::id()));
            let out = Command::new("objcopy")
                .arg("--strip-debug")
                .arg(wpod_bin())
                .arg(&partial)
                .output()
                .expect("objcopy (binutils)");
            assert!(out.status.success(), "objcopy: {}", text(&out.stderr));
            let stripped = dir.join("wpod");
            std::fs::rename(&partial, &stripped).expect("runner wpod");
            stripped
        })
        .clone()
}

/// The runner image of the test sidecar `component`, as `wpod kube build` makes it of
/// [`runner_wpod`], imported; its pinned reference.
fn runner_image(harness: &Harness, work: &Path, component: &str) -> String {
    let runner_wpod = runner_wpod();
    let archive = work.join(format!("{component}-runner.tar"));
    let tag = format!("localhost/wpod-test/{component}-runner:1");
    let built = Command::new(wpod_bin())
        .args(["kube", "build", path(&sidecar(component))])
        .args(["--tag", &tag])
        .args(["--archive", path(&archive)])
        .args(["--wpod", path(&runner_wpod)])
        .output()
        .expect("wpod kube build");
    // A dynamically linked wpod (the test build's) runs in its container only if its
    // libraries and loader went in beside it.
    assert!(built.status.success(), "{}", text(&built.stderr));
    let runner = harness.import(&tag, &["--archive", path(&archive)]);
    let digest = runner.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    assert_eq!(
        text(&built.stdout).trim(),
        format!("{tag}@{digest}"),
        "the pinned reference kube build printed"
    );
    runner
}

/// `wpod kube generate` of `manifest` (written in `work`, beside its components) with
/// `--image` for each of `images`, read through Kubernetes' types.
fn generate(
    work: &Path,
    manifest: &str,
    images: &[(&str, &str)],
) -> (core::Pod, Vec<core::ConfigMap>) {
    std::fs::write(work.join("pod.yaml"), manifest).expect("pod");
    let mut cmd = Command::new(wpod_bin());
    cmd.args(["kube", "generate"]).arg(work.join("pod.yaml"));
    for (name, image) in images {
        cmd.args(["--image", &format!("{name}={image}")]);
    }
    let generated = cmd.output().expect("wpod kube generate");
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let docs = wpod::kube::yaml::documents(&text(&generated.stdout)).expect("YAML");
    let mut config_maps: Vec<core::ConfigMap> = Vec::new();
    let mut pod: Option<core::Pod> = None;
    for doc in docs {
        match doc["kind"].as_str() {
            Some("ConfigMap") => config_maps.push(serde_json::from_value(doc).expect("ConfigMap")),
            Some("Pod") => pod = Some(serde_json::from_value(doc).expect("Pod")),
            other => panic!("an unexpected document: {other:?}"),
        }
    }
    (pod.expect("a Pod"), config_maps)
}

impl Kubelet<'_> {
    /// Runs the container `name`'s startupProbe as the kubelet does (ExecSync in the runner's
    /// container) until it passes; fails the test if the runner ends first or in a minute.
    fn wait_started(&self, name: &str, id: &str) {
        let probe_cmd: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| c.name == name)
            .and_then(|c| c.startup_probe.as_ref())
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
            .expect("the runner's startupProbe");
        let mut exec = vec!["exec", id, "--timeout", "5", "--"];
        exec.extend(probe_cmd.iter().map(String::as_str));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.harness.cri(&exec);
            if answer["exit_code"] == 0 {
                let said = answer["stdout"].as_str().unwrap_or_default();
                assert!(said.starts_with(&format!("ready: {name}")), "{answer}");
                return;
            }
            let status = self.harness.cri(&["status", id]);
            assert_ne!(
                status["state"],
                "CONTAINER_EXITED",
                "the runner ended: {status}\n{}",
                self.harness.cri(&["logs", id])
            );
            assert!(Instant::now() < deadline, "never ready: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A container's stdout and stderr, and both with its status for a failure message.
    fn output(&self, id: &str) -> (String, String, String) {
        let status = self.harness.cri(&["status", id]);
        let logs = self.harness.cri(&["logs", id]);
        let stdout = logs["stdout"].as_str().unwrap_or_default().to_string();
        let stderr = logs["stderr"].as_str().unwrap_or_default().to_string();
        let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nstatus: {status}");
        (stdout, stderr, all)
    }
}

/// nginx as the main container and the probe sidecar as a runner container, from `wpod kube
/// generate`'s YAML, on containerd: the startupProbe passes through ExecSync once the guest
/// called ready(); the guest reaches nginx on the pod's loopback and the pod's own address,
/// listens on its declared port only, writes its volume, and is refused an address outside
/// the pod, an undeclared port, files outside its mounts (the runner's own among them) and
/// memory past its limit; the container's memory limit is the sidecar's plus the runner's;
/// StopContainer's SIGTERM is the guest's `stopping`.
#[test]
fn a_generated_pod_runs_on_containerd_with_its_sidecars_grants() {
    require_root("a_generated_pod_runs_on_containerd_with_its_sidecars_grants");
    let work = WorkDir::new("grants");
    let harness = Harness::start(&work.0.join("cri"));

    // The images, offline: nginx from Debian's binary, the runner of the probe component.
    let nginx = nginx_image(&harness);
    let runner = runner_image(&harness, &work.0, "probe");
    std::fs::copy(sidecar("probe"), work.0.join("probe.wasm")).expect("component");
    let (pod, config_maps) = generate(
        &work.0,
        &POD.replace("NGINX_IMAGE", &nginx),
        &[("probe", &runner)],
    );
    let kubelet = Kubelet::run_pod(&harness, pod, &config_maps);
    let started = Instant::now();
    let nginx_id = kubelet.start("nginx");
    let runner_id = kubelet.start("probe");
    kubelet.wait_started("probe", &runner_id);
    eprintln!(
        "runner ready {} ms after its pod's containers were created",
        started.elapsed().as_millis()
    );

    // The container's memory limit: the sidecar's 64Mi and the runner's 32Mi.
    let status = harness.cri(&["status", &runner_id]);
    let limit = &status["info"]["info"]["runtimeSpec"]["linux"]["resources"]["memory"]["limit"];
    assert_eq!(limit, &json!(96u64 << 20), "{status}");

    // SIGTERM (StopContainer, as the kubelet stops a container) is the guest's `stopping`.
    harness.cri(&["stop", &runner_id, "--timeout", "10"]);
    let ended = harness.cri(&["status", &runner_id]);
    let (stdout, stderr, all) = kubelet.output(&runner_id);
    assert_eq!(ended["exit_code"], 0, "{all}");
    assert!(
        outcome(&stdout, "wait-stopping").starts_with("ok: stopping with"),
        "{all}"
    );
    let ip = &kubelet.pod_ip;
    assert!(
        outcome(&stdout, "connect:127.0.0.1:8080").starts_with("ok: HTTP/1.1 400"),
        "{all}"
    );
    assert!(
        outcome(&stdout, &format!("connect:{ip}:8080")).starts_with("ok: HTTP/1.1 400"),
        "{all}"
    );
    assert!(
        outcome(&stdout, "connect:198.51.100.1:80").starts_with("err: Permission denied"),
        "{all}"
    );
    assert!(outcome(&stdout, "listen:9090").starts_with("ok"), "{all}");
    assert!(outcome(&stdout, "listen:9999").starts_with("err"), "{all}");
    assert!(
        outcome(&stdout, &format!("write:/data/hello:hello-from-{ip}")).starts_with("ok"),
        "{all}"
    );
    for refused in [
        "read:/etc/passwd",
        "read:/data/../../etc/passwd",
        "read:/etc/wpod/pod.yaml",
        "alloc:128",
    ] {
        assert!(
            outcome(&stdout, refused).starts_with("err"),
            "{refused}: {all}"
        );
    }
    assert_eq!(outcome(&stdout, "alloc:4"), "ok: 4 MiB", "{all}");
    for denial in [
        "denied connect to 198.51.100.1:80: not in metadata.annotations[wpod.dev/allowed-outbound.probe]",
        "denied listen on 0.0.0.0:9999: not in spec.containers[1].ports",
    ] {
        assert!(stderr.contains(denial), "missing {denial:?}: {all}");
    }
    // The image's precompiled code was used: nothing was compiled at start.
    assert!(!stderr.contains("compiled the component"), "{all}");
    // What the guest wrote is in the pod's volume, as the runtime mounted it.
    let written = std::fs::read_to_string(kubelet.volumes["data"].join("hello")).expect("hello");
    assert_eq!(written, format!("hello-from-{ip}"));
    // The main container was there all along.
    assert_eq!(
        harness.cri(&["status", &nginx_id])["state"],
        "CONTAINER_RUNNING"
    );
}

const VIEW_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: view
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 10
  containers:
  - name: nginx
    image: NGINX_IMAGE
  - name: watcher
    image: ./main-probe.wasm
    args: [ready, procs, "stats:nginx", "logs:nginx:1", "signal:nginx:15", wait-stopping]
  - name: killer
    image: ./main-probe.wasm
    args: [ready, procs, "signal:nginx:15", "sleep:1500", procs, wait-stopping]
    securityContext:
      capabilities:
        add: [KILL]
"#;

/// The main-process view of runner containers in a pod that shares its PID namespace, on
/// containerd: a sidecar finds nginx (the kubelet's container directory among its mounts)
/// with its PID as the pod sees it, and reads its statistics; it is told that the output is
/// not visible from its container, and, without KILL, refused signals. A sidecar granted KILL
/// (its runner user 0 with that one capability) stops nginx with SIGTERM, which nginx logs,
/// and then sees it exited. Neither runner gets a ServiceAccount token.
#[test]
fn the_main_process_view_works_in_runner_containers_through_the_shared_pid_namespace() {
    require_root(
        "the_main_process_view_works_in_runner_containers_through_the_shared_pid_namespace",
    );
    let work = WorkDir::new("view");
    let harness = Harness::start(&work.0.join("cri"));
    let nginx = nginx_image(&harness);
    let runner = runner_image(&harness, &work.0, "main-probe");
    std::fs::copy(sidecar("main-probe"), work.0.join("main-probe.wasm")).expect("component");
    let (pod, config_maps) = generate(
        &work.0,
        &VIEW_POD.replace("NGINX_IMAGE", &nginx),
        &[("watcher", &runner), ("killer", &runner)],
    );
    let kubelet = Kubelet::run_pod(&harness, pod, &config_maps);
    let nginx_id = kubelet.start("nginx");
    let watcher_id = kubelet.start("watcher");
    kubelet.wait_started("watcher", &watcher_id);
    // nginx's PID on the node (its status), and in the pod's PID namespace.
    let running = harness.cri(&["status", &nginx_id]);
    assert_eq!(running["state"], "CONTAINER_RUNNING", "{running}");
    let pod_pid = ns_pid(running["pid"].as_i64().unwrap_or_default());
    let killer_id = kubelet.start("killer");
    kubelet.wait_started("killer", &killer_id);

    // nginx ends, by the killer's SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(20);
    let nginx_status = loop {
        let status = harness.cri(&["status", &nginx_id]);
        if status["state"] == "CONTAINER_EXITED" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "nginx still runs: {status}\n{}",
            kubelet.output(&killer_id).2
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(2000));
    harness.cri(&["stop", &watcher_id, "--timeout", "10"]);
    harness.cri(&["stop", &killer_id, "--timeout", "10"]);
    let (watched, _, watcher_all) = kubelet.output(&watcher_id);
    let (killed, _, killer_all) = kubelet.output(&killer_id);
    let (_, nginx_err, nginx_all) = kubelet.output(&nginx_id);

    // The watcher saw nginx running, with its PID in the pod's namespace.
    assert_eq!(
        outcome(&watched, "procs"),
        format!("ok: nginx=State::Running/{pod_pid}"),
        "{watcher_all}"
    );
    let stats = outcome(&watched, "stats:nginx");
    assert!(stats.starts_with("ok: rss="), "{watcher_all}");
    let rss: u64 = stats
        .trim_start_matches("ok: rss=")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(rss > 1 << 20, "nginx's resident memory: {stats}");
    assert!(
        outcome(&watched, "logs:nginx:1").contains("output is not visible here"),
        "{watcher_all}"
    );
    assert!(
        outcome(&watched, "signal:nginx:15").contains("capabilities.add: [KILL]"),
        "{watcher_all}"
    );
    // The killer: nginx running, signalled, then seen gone (no exit code from here).
    assert!(
        outcome(&killed, "procs").starts_with("ok: nginx=State::Running/"),
        "{killer_all}"
    );
    assert_eq!(
        outcome(&killed, "signal:nginx:15"),
        "ok: sent",
        "{killer_all}"
    );
    let after: Vec<&str> = killed
        .lines()
        .filter_map(|l| l.strip_prefix("procs "))
        .collect();
    assert_eq!(
        after.last(),
        Some(&"ok: nginx=State::Exited/0"),
        "{killer_all}"
    );
    // nginx heard SIGTERM (nothing else in the pod sent one) and ended as it does on it.
    assert!(
        nginx_err.contains("signal 15 (SIGTERM) received"),
        "{nginx_all}"
    );
    assert_eq!(nginx_status["exit_code"], 0, "{nginx_all}");

    // The runners' securityContexts as the runtime ran them: user 0 with KILL alone for the
    // killer, the unprivileged user with nothing for the watcher.
    let caps = |id: &str| {
        let status = harness.cri(&["status", id]);
        let process = &status["info"]["info"]["runtimeSpec"]["process"];
        (
            process["user"]["uid"].clone(),
            process["capabilities"]["effective"].clone(),
        )
    };
    assert_eq!(caps(&killer_id), (json!(0), json!(["CAP_KILL"])));
    let (uid, effective) = caps(&watcher_id);
    assert_eq!(uid, json!(65532));
    assert!(
        effective.as_array().is_none_or(|a| a.is_empty()),
        "{effective}"
    );
}

/// A process's PID in its innermost PID namespace (the last of `NSpid` in its status).
fn ns_pid(host_pid: i64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|f| f.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| panic!("no NSpid for {host_pid}"))
}
