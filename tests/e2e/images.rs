//! Pods with ordinary images, pulled from a real registry (Debian's `docker-registry`) on
//! loopback, to which `registries.conf` maps `docker.io` as a mirror would. The images are built
//! offline from Debian packages by `tests/images/build.sh`, once per test run. Needs root and
//! the packages docker-registry, skopeo, umoci, busybox-static, nginx-light (`.ci/setup`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::pods::{assert_no_leftovers, curl, TestPod};
use crate::{free_port, text};

/// The test registry: started once per test process, gone when the process ends.
pub struct Registry {
    pub addr: String,
    /// The registry's storage (its blobs, for tests that tamper with them).
    pub data: PathBuf,
}

pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(start_registry)
}

fn start_registry() -> Registry {
    assert!(
        nix_is_root(),
        "the image tests need root (pods, and umoci keeping file owners): run them as root"
    );
    for tool in ["docker-registry", "skopeo", "umoci"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: install the Debian packages of .ci/setup"
        );
    }
    let dir = std::env::temp_dir().join(format!("wpod-e2e-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    // A watchdog shell owns the registry: when this test process ends (however it ends), the
    // shell sees it gone and takes the registry (and its data) with it.
    let script = format!(
        "docker-registry serve {cfg} >{log} 2>&1 & reg=$!\n\
         while kill -0 {me} 2>/dev/null; do sleep 0.5; done\n\
         kill $reg; wait $reg; rm -rf {dir}",
        cfg = config.display(),
        log = dir.join("registry.log").display(),
        me = std::process::id(),
        dir = dir.display(),
    );
    // Never waited for: it outlives this process by design (and is reaped by init).
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        curl(&format!("http://{addr}/v2/"), Duration::from_secs(1)).is_some()
    });
    assert!(up, "docker-registry did not come up on {addr}");
    let build = wpod_test_support::repo_root().join("tests/images/build.sh");
    let out = Command::new("bash")
        .arg(&build)
        .arg(&addr)
        .output()
        .expect("run tests/images/build.sh");
    assert!(
        out.status.success(),
        "building the test images failed:\n{}",
        text(&out.stderr)
    );
    Registry {
        addr,
        data: dir.join("data"),
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A wpod root of its own (its own image store) and a registries.conf, for one test; removed
/// when dropped.
pub struct ImageEnv {
    pub dir: PathBuf,
}

impl ImageEnv {
    pub fn new(test: &str) -> Self {
        Self::with_registry(test, &registry().addr)
    }

    /// With `docker.io` mapped to `location` (a dead port for "unreachable").
    fn with_registry(test: &str, location: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-e2e-store-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::write(
            dir.join("registries.conf"),
            format!(
                "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{location}\"\ninsecure = true\n\n\
                 [[registry]]\nlocation = \"{location}\"\ninsecure = true\n"
            ),
        )
        .unwrap();
        ImageEnv { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("WPOD_ROOT".into(), self.root().display().to_string()),
            (
                "WPOD_REGISTRIES_CONF".into(),
                self.dir.join("registries.conf").display().to_string(),
            ),
        ]
    }

    pub fn pod(&self, name: &str, yaml: &str) -> TestPod {
        let mut pod = TestPod::new(name, yaml);
        pod.env = self.vars();
        pod
    }

    pub fn wpod(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(crate::wpod_bin());
        cmd.args(args).envs(self.vars());
        cmd.output().expect("run wpod")
    }

    /// Nothing of the pod is left, in this root too.
    pub fn assert_no_leftovers(&self, pod: &str) {
        assert_no_leftovers(pod);
        let state = self.root().join("pods").join(pod);
        assert!(
            !state.exists(),
            "state directory {} is left",
            state.display()
        );
    }

    fn layers(&self) -> Vec<String> {
        std::fs::read_dir(self.root().join("images/layers"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ImageEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn logs_of(run: &crate::pods::PodRun, container: &str) -> String {
    run.logs(container).join("\n")
}

#[test]
fn a_kubernetes_pod_with_nginx_and_busybox_runs_unchanged() {
    let env = ImageEnv::new("seed");
    let port = free_port();
    // As Kubernetes' tutorials write it: images by name, the client with args only.
    let pod = env.pod(
        "img-seed",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: img-seed}}
spec:
  restartPolicy: Never
  containers:
  - name: nginx
    image: nginx
    ports:
    - containerPort: 80
      hostPort: {port}
  - name: client
    image: busybox
    args: [/bin/sh, -c, "until wget -qO- http://localhost:80/; do sleep 0.1; done"]
"#
        ),
    );
    let running = pod.spawn();
    // The client gets the page, and nginx logs the access to stdout as the official image does
    // (the two lines arrive through different pipes, in either order).
    let page = running.wait_for(
        "the page and its access line",
        Duration::from_secs(60),
        |r| r.has_line("client", "Welcome to nginx") && r.has_line("nginx", "GET / HTTP/1.1"),
    );
    assert!(page.has_line("nginx", "GET / HTTP/1.1"), "{}", page.dump());
    // And the hostPort reaches it from the host.
    let body = curl(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
    assert!(body.is_some_and(|b| b.contains("Welcome to nginx")));
    running.signal(libc::SIGTERM);
    let run = running.wait(Duration::from_secs(30));
    let pulled: Vec<_> = run
        .records
        .iter()
        .filter(|r| r["event"] == "pulled")
        .map(|r| r["image"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        pulled.contains(&"docker.io/library/nginx:latest".to_string()),
        "{}",
        run.dump()
    );
    assert!(
        pulled.contains(&"docker.io/library/busybox:latest".to_string()),
        "{}",
        run.dump()
    );
    env.assert_no_leftovers("img-seed");
}

#[test]
fn command_and_args_env_and_working_dir_follow_kubernetes_over_the_image() {
    let env = ImageEnv::new("entry");
    let run = env
        .pod(
            "img-entry",
            r#"
apiVersion: v1
kind: Pod
metadata: {name: img-entry}
spec:
  restartPolicy: Never
  containers:
  - name: neither
    image: wpod-test/entry
  - name: command
    image: wpod-test/entry
    command: [echo, command-only]
  - name: args
    image: wpod-test/entry
    args: [args-only]
  - name: both
    image: wpod-test/entry
    command: [echo, command]
    args: [and-args]
  - name: env
    image: wpod-test/entry
    command: [sh, -c, 'echo "$FROM_IMAGE $SHARED $FROM_POD $(pwd)"']
    env:
    - {name: SHARED, value: pod}
    - {name: FROM_POD, value: pod}
  - name: cwd
    image: wpod-test/entry
    command: [pwd]
    workingDir: /etc
"#,
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(logs_of(&run, "neither"), "from-entrypoint from-cmd");
    assert_eq!(logs_of(&run, "command"), "command-only");
    assert_eq!(logs_of(&run, "args"), "from-entrypoint args-only");
    assert_eq!(logs_of(&run, "both"), "command and-args");
    // The image's env, the Pod's over it; the image's WorkingDir.
    assert_eq!(logs_of(&run, "env"), "image pod pod /tmp");
    assert_eq!(logs_of(&run, "cwd"), "/etc");
    env.assert_no_leftovers("img-entry");
}

#[test]
fn the_images_user_applies_unless_run_as_user_says_otherwise() {
    let env = ImageEnv::new("user");
    let run = env
        .pod(
            "img-user",
            r#"
apiVersion: v1
kind: Pod
metadata: {name: img-user}
spec:
  restartPolicy: Never
  containers:
  - name: image-user
    image: wpod-test/user
  - name: pod-user
    image: wpod-test/user
    securityContext: {runAsUser: 2000, runAsGroup: 3000}
"#,
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(
        logs_of(&run, "image-user").starts_with("uid=1234(app) gid=1234(app)"),
        "{}",
        run.dump()
    );
    assert!(
        logs_of(&run, "pod-user").starts_with("uid=2000 gid=3000"),
        "{}",
        run.dump()
    );

    // runAsNonRoot against an image whose user is root: refused once the image is pulled,
    // located in the manifest, before anything of the pod exists.
    let run = env
        .pod(
            "img-nonroot",
            r#"
apiVersion: v1
kind: Pod
metadata: {name: img-nonroot}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [id]
    securityContext: {runAsNonRoot: true}
"#,
        )
        .run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains(
            "pod.yaml:11:37: spec.containers[0].securityContext.runAsNonRoot: the container would run as root"
        ),
        "{}",
        run.dump()
    );
    assert!(!run.stdout.contains("podStarted"), "{}", run.dump());
    env.assert_no_leftovers("img-nonroot");
}

#[test]
fn pull_policies_follow_kubernetes() {
    let env = ImageEnv::new("policy");
    let yaml = |policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: img-policy}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:latest\n    imagePullPolicy: {policy}\n    command: [echo, ok]\n"
        )
    };
    // Never, with nothing stored: ErrImageNeverPull, and the pod never starts.
    let run = env
        .pod("img-policy", &yaml("Never"))
        .run(Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("imagePullPolicy is Never"),
        "{}",
        run.dump()
    );
    assert!(
        !run.records.iter().any(|r| r["event"] == "podStarted"),
        "{}",
        run.dump()
    );
    env.assert_no_leftovers("img-policy");
    // Pulled once...
    let out = env.wpod(&["pull", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // ...then IfNotPresent and Never use the stored image, even with the registry gone.
    let offline = ImageEnv::with_registry("policy-offline", &format!("127.0.0.1:{}", free_port()));
    let mut vars = offline.vars();
    vars[0].1 = env.root().display().to_string();
    for policy in ["IfNotPresent", "Never"] {
        let mut pod = TestPod::new("img-policy", &yaml(policy));
        pod.env = vars.clone();
        let run = pod.run(Duration::from_secs(60));
        assert_eq!(run.code, Some(0), "{policy}: {}", run.dump());
        assert!(
            run.records.iter().any(|r| r["event"] == "alreadyPresent"),
            "{policy}: {}",
            run.dump()
        );
    }
    // Always asks the registry: gone, the pod does not start; it backs off until stopped.
    let mut pod = TestPod::new("img-policy", &yaml("Always"));
    pod.env = vars;
    pod.args = vec!["--backoff-base".into(), "200ms".into()];
    let running = pod.spawn();
    let run = running.wait_for("a pull back-off", Duration::from_secs(60), |r| {
        r.records.iter().any(|r| r["event"] == "imagePullBackOff")
    });
    assert!(
        run.records.iter().any(|r| r["event"] == "errImagePull")
            && !run.records.iter().any(|r| r["event"] == "podStarted"),
        "{}",
        run.dump()
    );
    running.signal(libc::SIGINT);
    let run = running.wait(Duration::from_secs(30));
    assert_ne!(run.code, Some(0));
    env.assert_no_leftovers("img-policy");
}

/// A pull the registry refuses (an unknown image) or cannot answer (nothing listens) is the
/// kubelet's `ErrImagePull`, in the registry's own words, then `ImagePullBackOff`: the pod
/// waits and tries again (issue 26, item 6) until it is stopped, and then nothing of it is left.
#[test]
fn an_unknown_image_or_an_unreachable_registry_backs_off_and_leaves_nothing() {
    let env = ImageEnv::new("unknown");
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: img-unknown}\nspec:\n  containers:\n  - name: main\n    image: wpod-test/no-such-image:1.0\n";
    let dead = ImageEnv::with_registry("unreachable", &format!("127.0.0.1:{}", free_port()));
    for (env, name) in [(&env, "img-unknown"), (&dead, "img-unreachable")] {
        let mut pod = env.pod(name, &yaml.replace("img-unknown", name));
        pod.args = vec!["--backoff-base".into(), "200ms".into()];
        let running = pod.spawn();
        let run = running.wait_for("two pull back-offs", Duration::from_secs(60), |r| {
            r.records
                .iter()
                .filter(|r| r["event"] == "imagePullBackOff")
                .count()
                >= 2
        });
        let failed = run
            .records
            .iter()
            .find(|r| r["event"] == "errImagePull")
            .unwrap_or_else(|| panic!("no errImagePull\n{}", run.dump()));
        let message = failed["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            message.contains("docker.io/wpod-test/no-such-image:1.0"),
            "{}",
            run.dump()
        );
        // What it means first (issue 27, item 11), then the registry's own words.
        if name == "img-unknown" {
            assert!(message.contains("image not found on"), "{}", run.dump());
            assert!(message.contains("unknown"), "{}", run.dump());
        } else {
            assert!(
                message.contains("registry unreachable: 127.0.0.1:"),
                "{}",
                run.dump()
            );
        }
        // Doubling: 200 ms, then 400 ms.
        let delays: Vec<u64> = run
            .records
            .iter()
            .filter(|r| r["event"] == "imagePullBackOff")
            .filter_map(|r| r["retryInMs"].as_u64())
            .collect();
        assert_eq!(delays[..2], [200, 400], "{}", run.dump());
        running.signal(libc::SIGINT);
        let run = running.wait(Duration::from_secs(30));
        assert_ne!(run.code, Some(0));
        assert!(
            run.stderr
                .contains("stopped (interrupted) while waiting for its images"),
            "{}",
            run.dump()
        );
        env.assert_no_leftovers(name);
    }
}

/// An image that appears on its registry while the pod backs off is pulled at the next try,
/// and the pod starts; meanwhile `wpod run -d` has returned, and `wpod ps` shows why the
/// container waits (issue 26, item 6).
#[test]
fn a_pod_waiting_for_its_image_starts_once_the_image_is_pushed() {
    let env = ImageEnv::new("late");
    let reg = &registry().addr;
    let tag = format!("late-{}:1", std::process::id());
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: img-late}}\nspec:\n  containers:\n  - name: main\n    image: {reg}/wpod-test/{tag}\n    command: [sh, -c, 'echo arrived; sleep 3600']\n"
    );
    let pod = env.pod("img-late", &yaml);
    let out = env.wpod(&[
        "run",
        "-d",
        "--backoff-base",
        "300ms",
        pod.manifest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is waiting: ImagePullBackOff"),
        "{}",
        text(&out.stderr)
    );
    let ps = env.wpod(&["ps"]);
    assert!(
        text(&ps.stdout).contains("ImagePullBackOff"),
        "{}",
        text(&ps.stdout)
    );
    // The image arrives.
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/library/busybox:latest"),
            &format!("docker://{reg}/wpod-test/{tag}"),
        ])
        .output()
        .expect("skopeo");
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let started = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let logs = env.wpod(&["logs", "-c", "main", "img-late"]);
        text(&logs.stdout).contains("arrived")
    });
    let events = text(&env.wpod(&["events", "img-late"]).stdout);
    let stop = env.wpod(&["stop", "img-late"]);
    assert!(
        started,
        "the pod never started once its image was there:\n{events}"
    );
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(events.contains("ImagePullBackOff"), "{events}");
    let _ = env.wpod(&["rm", "img-late"]);
    env.assert_no_leftovers("img-late");
}

#[test]
fn a_layer_with_a_path_traversal_entry_is_refused() {
    let env = ImageEnv::new("evil");
    let escaped = Path::new("/tmp/wpod-evil-layer-escaped");
    let _ = std::fs::remove_file(escaped);
    let out = env.wpod(&["pull", "wpod-test/evil"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("leaves the layer"), "{err}");
    assert!(!escaped.exists(), "the layer wrote outside its directory");
    // Nothing half-unpacked is kept for a later run to trust.
    assert!(env.layers().is_empty(), "{:?}", env.layers());
}

#[test]
fn whiteouts_hide_what_lower_layers_hold() {
    let env = ImageEnv::new("whiteout");
    let run = env
        .pod(
            "img-whiteout",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: img-whiteout}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: wpod-test/whiteout\n    command: [sh, -c, 'ls /data | tr \"\\n\" \" \"; echo; ls /data/dir']\n",
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(logs_of(&run, "main"), "dir keep \ny");
}

#[test]
fn pods_share_stored_layers_and_rmi_removes_what_no_image_uses() {
    let env = ImageEnv::new("share");
    for image in ["busybox", "nginx"] {
        let out = env.wpod(&["pull", image]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // nginx is busybox's layer plus one: three layers stored, not three plus one.
    assert_eq!(env.layers().len(), 2, "{:?}", env.layers());
    let listed = text(&env.wpod(&["images"]).stdout);
    assert!(
        listed.contains("docker.io/library/nginx:latest")
            && listed.contains("docker.io/library/busybox:latest"),
        "{listed}"
    );

    // Two pods from one image at once, on the same stored layers.
    let yaml = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo $HOSTNAME > /tmp/me; sleep 1; cat /tmp/me']\n")
    };
    let a = env.pod("img-share-a", &yaml("img-share-a")).spawn();
    let b = env.pod("img-share-b", &yaml("img-share-b")).spawn();
    let (a, b) = (
        a.wait(Duration::from_secs(60)),
        b.wait(Duration::from_secs(60)),
    );
    // Each wrote to its own upper layer.
    assert_eq!(logs_of(&a, "main"), "img-share-a", "{}", a.dump());
    assert_eq!(logs_of(&b, "main"), "img-share-b", "{}", b.dump());
    assert_eq!(env.layers().len(), 2);

    let out = env.wpod(&["rmi", "nginx"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        env.layers().len(),
        1,
        "busybox's layer stays: {:?}",
        env.layers()
    );
    let out = env.wpod(&["rmi", "busybox"]);
    assert!(out.status.success());
    assert!(env.layers().is_empty());
    let out = env.wpod(&["rmi", "busybox"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no such image"));
}

#[test]
fn what_a_killed_pull_left_is_never_trusted() {
    let env = ImageEnv::new("killed");
    // A pull killed half-way leaves a partial download and a half-unpacked layer directory.
    let images = env.root().join("images");
    std::fs::create_dir_all(images.join("ingest")).unwrap();
    std::fs::create_dir_all(images.join("layers/.tmp-1-dead/bin")).unwrap();
    std::fs::write(images.join("ingest/1-dead"), b"half a layer").unwrap();
    let out = env.wpod(&["pull", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = env
        .pod(
            "img-killed",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: img-killed}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [echo, fine]\n",
        )
        .run(Duration::from_secs(60));
    assert_eq!(logs_of(&run, "main"), "fine", "{}", run.dump());
    // And housekeeping clears it.
    let out = env.wpod(&["image", "prune"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_dir(images.join("ingest")).unwrap().count(), 0);
    assert!(!images.join("layers/.tmp-1-dead").exists());
}

#[test]
fn zstd_layers_are_pulled_and_run() {
    let env = ImageEnv::new("zstd");
    let out = env.wpod(&["pull", "--output", "json", "wpod-test/nginx-zstd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = env
        .pod(
            "img-zstd",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: img-zstd}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: wpod-test/nginx-zstd\n    imagePullPolicy: Never\n    command: [nginx, -v]\n",
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(run.stdout.contains("nginx version"), "{}", run.dump());
}

#[test]
fn the_images_stop_signal_stops_it() {
    let env = ImageEnv::new("stopsignal");
    let pod = env.pod(
        "img-stopsignal",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: img-stopsignal}
spec:
  containers:
  - name: main
    image: wpod-test/stopsignal
    command: [sh, -c, 'trap "echo got USR1; exit 0" USR1; trap "echo got TERM; exit 0" TERM; echo up; while true; do sleep 0.1; done']
"#,
    );
    let running = pod.spawn();
    running.wait_for("the container", Duration::from_secs(60), |r| {
        r.has_line("main", "up")
    });
    running.signal(libc::SIGTERM);
    let run = running.wait(Duration::from_secs(30));
    assert!(run.has_line("main", "got USR1"), "{}", run.dump());
    env.assert_no_leftovers("img-stopsignal");
}

#[test]
fn layers_under_a_running_pod_are_never_pruned() {
    let env = ImageEnv::new("pinned");
    let pod = env.pod(
        "img-pinned",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: img-pinned}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo up; while true; do sleep 0.2; done']\n",
    );
    let running = pod.spawn();
    running.wait_for("the container", Duration::from_secs(60), |r| {
        r.has_line("main", "up")
    });
    let out = env.wpod(&["rmi", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.layers().len(), 1, "the running pod's layer stays");
    running.signal(libc::SIGTERM);
    running.wait(Duration::from_secs(30));
    let out = env.wpod(&["image", "prune"]);
    assert!(out.status.success());
    assert!(env.layers().is_empty(), "{:?}", env.layers());
    env.assert_no_leftovers("img-pinned");
}

#[test]
fn the_images_example_runs_and_its_sidecar_follows_nginx() {
    let env = ImageEnv::new("example");
    let (mut pod, _port) = TestPod::example("images", "images.yaml");
    pod.env = env.vars();
    let running = pod.spawn();
    // The Wasm sidecar follows nginx's stdout: the busybox client's requests, labelled.
    let run = running.wait_for(
        "nginx's access lines in the sidecar",
        Duration::from_secs(60),
        |r| {
            r.logs("log-tail")
                .iter()
                .any(|l| l.starts_with("nginx ") && l.contains("\"GET / HTTP/1.1\" 200"))
        },
    );
    assert!(run.has_line("nginx", "GET / HTTP/1.1"), "{}", run.dump());
    running.signal(libc::SIGINT);
    let _ = running.wait(Duration::from_secs(30));
    env.assert_no_leftovers("images");
}

#[test]
fn an_image_index_resolves_to_linux_amd64() {
    let env = ImageEnv::new("multiarch");
    // The index lists arm64 first (the refused evil image): the amd64 entry must be chosen.
    let run = env
        .pod(
            "img-multiarch",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: img-multiarch}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: wpod-test/multiarch\n    command: [echo, amd64]\n",
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(logs_of(&run, "main"), "amd64");
}

#[test]
fn a_pull_killed_at_any_point_is_retried_cleanly() {
    let env = ImageEnv::new("kill9");
    // Kill pulls at different moments; whatever each leaves, the next pull must succeed and run.
    for delay_ms in [5u64, 40, 120] {
        let mut child = Command::new(crate::wpod_bin())
            .args(["pull", "nginx"])
            .envs(env.vars())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wpod pull");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = env.wpod(&["pull", "nginx"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = env
        .pod(
            "img-kill9",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: img-kill9}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: nginx\n    imagePullPolicy: Never\n    command: [nginx, -t]\n",
        )
        .run(Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    // Only whole layers are in the store.
    assert!(
        env.layers().iter().all(|l| !l.starts_with(".tmp-")),
        "{:?}",
        env.layers()
    );
}

#[test]
fn concurrent_pulls_of_one_image_share_the_store_safely() {
    let env = ImageEnv::new("concurrent");
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            Command::new(crate::wpod_bin())
                .args(["pull", "nginx"])
                .envs(env.vars())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start wpod pull")
        })
        .collect();
    for p in pulls {
        let out = p.wait_with_output().expect("wait for wpod pull");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(env.layers().len(), 2, "{:?}", env.layers());
    let listed = text(&env.wpod(&["images", "--output", "json"]).stdout);
    let images: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{listed}");
}

/// An `image` volume (issue 26, item 15; KEP-4639): an image from the registry, pulled with the
/// pod's images, mounted read-only for a native container and a Wasm sidecar alike.
#[test]
fn an_image_volume_gives_an_images_files_read_only() {
    let env = ImageEnv::new("imgvol");
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: img-volume}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      test -x /data/bin/busybox && echo "has busybox"
      touch /data/x 2>/dev/null && echo "wrote" || echo "read-only"
      test -x /web/usr/sbin/nginx && test -x /web/bin/busybox && echo "both layers of nginx"
    volumeMounts: [{name: data, mountPath: /data}, {name: web, mountPath: /web}]
  - name: wasm
    image: SIDECARS/hello.wasm
    args: ["/data/bin"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    image: {reference: "busybox:latest", pullPolicy: IfNotPresent}
  # Two layers (busybox's, then nginx's): an overlay of them.
  - name: web
    image: {reference: "nginx:latest"}
"#;
    let run = env.pod("img-volume", yaml).run(Duration::from_secs(90));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("main", "has busybox");
    run.assert_line("main", "read-only");
    run.assert_line("main", "both layers of nginx");
    assert!(
        run.logs("wasm")
            .iter()
            .any(|l| l.starts_with("/data/bin: ") && !l.contains("error")),
        "{}",
        run.dump()
    );
    env.assert_no_leftovers("img-volume");
}

/// The same volumes in a pod of its own users (`hostUsers: false`, issue 30): each layer is
/// ID-mapped through the pod's user namespace, so the image's files are the pod's root's (not
/// `nobody`'s), a single layer and an overlay of two alike, and still read-only.
#[test]
fn an_image_volume_in_a_pod_of_its_own_users_belongs_to_the_pods_root() {
    let env = ImageEnv::new("imgvol-userns");
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: img-volume-userns}
spec:
  hostUsers: false
  restartPolicy: Never
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      echo "busybox $(stat -c %u:%g /data/bin/busybox)"
      echo "nginx $(stat -c %u:%g /web/usr/sbin/nginx)"
      touch /data/x 2>/dev/null && echo "wrote" || echo "read-only"
    volumeMounts: [{name: data, mountPath: /data}, {name: web, mountPath: /web}]
  volumes:
  - name: data
    image: {reference: "busybox:latest", pullPolicy: IfNotPresent}
  - name: web
    image: {reference: "nginx:latest"}
"#;
    let run = env
        .pod("img-volume-userns", yaml)
        .run(Duration::from_secs(90));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("main", "busybox 0:0");
    run.assert_line("main", "nginx 0:0");
    run.assert_line("main", "read-only");
    env.assert_no_leftovers("img-volume-userns");
}
