//! `wpod apply`: Wasm sidecars added, replaced and removed in a running pod while its main
//! container (Debian's nginx) serves a client that never stops, and the pod's control socket
//! facing bad requests. Needs root, nginx and curl.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pods::{curl, TestPod};
use crate::text;

/// nginx's hostPort and the exporter's: free ports (`crate::free_port`), the same for every
/// version of the pod this test applies.
fn nginx_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(crate::free_port)
}

fn metrics_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(crate::free_port)
}

/// The pod with `exporter` running `component` and, when given, an extra sidecar.
fn manifest(exporter: &str, extra: Option<&str>, nginx_args: &str) -> String {
    let extra = extra
        .map(|image| {
            format!(
                "  - name: extra\n    image: {image}\n    args: [extra]\n    resources:\n      limits: {{memory: 16Mi}}\n"
            )
        })
        .unwrap_or_default();
    let (nginx_port, metrics_port) = (nginx_port(), metrics_port());
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: mgmt-apply}}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    command: [nginx, -g, "daemon off;{nginx_args}"]
    ports:
    - {{containerPort: 80, hostPort: {nginx_port}, hostIP: 127.0.0.1}}
  - name: exporter
    image: {exporter}
    env:
    - {{name: LISTEN, value: "0.0.0.0:9400"}}
    ports:
    - {{containerPort: 9400, hostPort: {metrics_port}, hostIP: 127.0.0.1}}
    resources:
      limits: {{memory: 32Mi}}
{extra}"#
    )
}

/// A client that requests nginx's page over and over, each on a new connection, counting the
/// answers that are not a 200.
struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match get_page() {
                    Ok(()) => o.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        f.lock().unwrap().push(e);
                        0
                    }
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Client {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the client: (answers, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failed)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn get_page() -> Result<(), String> {
    let addr = format!("127.0.0.1:{}", nginx_port()).parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.starts_with("HTTP/1.1 200") {
        true => Ok(()),
        false => Err(format!("answer: {}", answer.lines().next().unwrap_or(""))),
    }
}

/// Stops a detached pod when the test ends, passed or not.
struct Stopper(&'static str);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = crate::wpod_output(&["stop", "-t", "1", self.0]);
    }
}

fn metrics() -> String {
    curl(
        &format!("http://127.0.0.1:{}/metrics", metrics_port()),
        Duration::from_secs(20),
    )
    .unwrap_or_default()
}

fn apply(args: &[&str]) -> std::process::Output {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    crate::wpod_output(&all)
}

/// The pod's containers as `wpod ps --output json` lists them.
fn containers() -> Vec<serde_json::Value> {
    let out = crate::wpod_output(&["ps", "--output", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps json");
    all.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mgmt-apply")
        .and_then(|p| p["containers"].as_array().cloned())
        .unwrap_or_default()
}

fn container(name: &str) -> Option<serde_json::Value> {
    containers().into_iter().find(|c| c["name"] == name)
}

#[test]
fn apply_adds_replaces_and_removes_sidecars_while_nginx_serves() {
    wpod_test_support::require_root("wpod apply");
    let sidecars = wpod_test_support::sidecars_dir();
    let component = |name: &str| sidecars.join(name).display().to_string();
    let v1 = manifest(&component("proc-monitor.wasm"), None, "");
    let pod = TestPod::new("mgmt-apply", &v1);
    let dir = pod.manifest.parent().unwrap().to_path_buf();
    let write = |file: &str, yaml: String| {
        let path = dir.join(file);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    };
    // A pod that is not running is started (detached), as kubectl apply creates what is
    // missing.
    let out = apply(&[pod.manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _running = Stopper("mgmt-apply");
    assert_eq!(text(&out.stdout).trim(), "mgmt-apply");
    assert!(
        metrics().contains("wpod_container_up{container=\"web\"}"),
        "{}",
        metrics()
    );
    assert!(curl(
        &format!("http://127.0.0.1:{}/", nginx_port()),
        Duration::from_secs(20)
    )
    .is_some());
    let master = container("web")
        .and_then(|c| c["pid"].as_i64())
        .expect("nginx's pid");
    let client = Client::start();

    // The control socket is root's alone, and a bad request gets an error, never a crash.
    let root = std::env::var("WPOD_ROOT").unwrap_or_else(|_| "/var/lib/wpod".into());
    let socket = std::path::Path::new(&root)
        .join("pods/mgmt-apply")
        .join("control.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("control socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let oversized = "x".repeat(70_000);
    for (request, says) in [
        ("garbage\n", "not JSON"),
        ("{\"version\":9,\"op\":\"describe\"}\n", "version 9"),
        ("{\"version\":1,\"op\":\"rm -rf\"}\n", "bad request"),
        (oversized.as_str(), "larger than 64 KiB"),
    ] {
        let mut s = UnixStream::connect(&socket).expect("connect");
        let _ = s.write_all(request.as_bytes());
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("an answer");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
        assert_eq!(v["ok"], false, "{answer}");
        assert_eq!(v["version"], 1, "{answer}");
        assert!(v["error"].as_str().unwrap().contains(says), "{answer}");
    }

    // --dry-run says what would change and changes nothing.
    let v2 = write(
        "v2.yaml",
        manifest(&component("redis-exporter.wasm"), None, ""),
    );
    let out = apply(&["--dry-run", &v2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("would replace sidecar exporter (image changed)"),
        "{}",
        text(&out.stdout)
    );
    assert!(metrics().contains("wpod_container_up"), "{}", metrics());

    // Replace: another component serves on the same port.
    let out = apply(&[&v2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replaced sidecar exporter (image changed): started"),
        "{}",
        text(&out.stdout)
    );
    let served = metrics();
    assert!(served.contains("redis_up"), "{served}");
    assert!(!served.contains("wpod_container_up"), "{served}");

    // Add a sidecar; describe shows what it was granted.
    let v3 = write(
        "v3.yaml",
        manifest(
            &component("redis-exporter.wasm"),
            Some(&component("hello.wasm")),
            "",
        ),
    );
    let out = apply(&[&v3]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("added sidecar extra: started"),
        "{}",
        text(&out.stdout)
    );
    let start = Instant::now();
    while !text(&crate::wpod_output(&["logs", "mgmt-apply", "-c", "extra"]).stdout)
        .contains("hello from a Wasm sidecar")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "extra never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let described = crate::wpod_output(&["describe", "mgmt-apply"]);
    let described = text(&described.stdout);
    assert!(described.contains("listens on 9400"), "{described}");
    assert!(
        described.contains("pod/mgmt-apply applied: added extra"),
        "{described}"
    );
    assert!(described.contains("extra:"), "{described}");

    // Remove it: gone from the pod, its log kept.
    let out = apply(&[&v2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed sidecar extra"),
        "{}",
        text(&out.stdout)
    );
    assert!(container("extra").is_none(), "{:?}", containers());
    let kept = crate::wpod_output(&["logs", "mgmt-apply", "-c", "extra"]);
    assert!(
        text(&kept.stdout).contains("hello from a Wasm sidecar"),
        "{}",
        text(&kept.stderr)
    );
    // --since: what was written since then, as a duration or a time.
    let since =
        |when: &str| crate::wpod_output(&["logs", "--since", when, "mgmt-apply", "-c", "extra"]);
    assert!(text(&since("1h").stdout).contains("hello from a Wasm sidecar"));
    let later = since("2099-01-01T00:00:00Z");
    assert!(later.status.success(), "{}", text(&later.stderr));
    assert_eq!(text(&later.stdout), "");
    let bad = since("yesterday-ish");
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("RFC 3339"),
        "{}",
        text(&bad.stderr)
    );

    // A program that keeps running (a controller) asks the control socket itself: the
    // protocol docs/operators.md gives, one JSON line each way. extra comes back (its
    // compiled component, cached by its first start, loaded as the manifest is read), then
    // goes again.
    let ask = |file: &str| -> serde_json::Value {
        let mut s = UnixStream::connect(&socket).expect("connect");
        let request = serde_json::json!({"version": 1, "op": "apply", "file": file});
        s.write_all(format!("{request}\n").as_bytes())
            .expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("an answer");
        serde_json::from_str(&answer).expect("JSON answer")
    };
    let answer = ask(&v3);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    assert_eq!(answer["result"]["added"][0]["name"], "extra", "{answer}");
    assert_eq!(answer["result"]["added"][0]["state"], "started", "{answer}");
    assert!(container("extra").is_some(), "{:?}", containers());
    let answer = ask(&v2);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["removed"][0], "extra", "{answer}");
    assert!(container("extra").is_none(), "{:?}", containers());

    // A new version that cannot run leaves the old one serving.
    std::fs::write(dir.join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let broken = write(
        "broken.yaml",
        manifest(&dir.join("broken.wasm").display().to_string(), None, ""),
    );
    let out = apply(&[&broken]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spec.containers[1].image: cannot load Wasm component"),
        "{}",
        text(&out.stderr)
    );
    assert!(metrics().contains("redis_up"), "{}", metrics());

    // A change to the native container is refused, naming the field; nothing changes.
    let native = write(
        "native.yaml",
        manifest(
            &component("redis-exporter.wasm"),
            None,
            " worker_processes 2;",
        ),
    );
    let out = apply(&[&native]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("spec.containers[0].command"), "{err}");
    assert!(err.contains("native container"), "{err}");
    // ... and says at once how to take it: a new pod (issue 27, item 9).
    assert!(err.contains("wpod apply --replace"), "{err}");

    // nginx served throughout, and is the same process: never restarted or signalled.
    let (ok, failed) = client.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok >= 5, "only {ok} requests");
    assert_eq!(
        container("web").and_then(|c| c["pid"].as_i64()),
        Some(master)
    );
    assert_eq!(
        container("web").map(|c| c["restarts"].clone()),
        Some(0.into())
    );
    let events = crate::wpod_output(&["events", "mgmt-apply", "--output", "json"]);
    let web_starts = text(&events.stdout)
        .lines()
        .filter(|l| l.contains("\"container\":\"web\"") && l.contains("\"event\":\"started\""))
        .count();
    assert_eq!(web_starts, 1);

    // --replace: said first (a dry run changes nothing), then the pod stops and runs again
    // from the file, with a change the running pod would refuse.
    let native = write(
        "native2.yaml",
        manifest(
            &component("redis-exporter.wasm"),
            None,
            " error_log stderr;",
        ),
    );
    let out = apply(&["--replace", "--dry-run", &native]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stopping it") && text(&out.stderr).contains("running it again"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        container("web").and_then(|c| c["pid"].as_i64()),
        Some(master)
    );
    let out = apply(&["--replace", &native]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_master = container("web").and_then(|c| c["pid"].as_i64());
    assert!(
        new_master.is_some() && new_master != Some(master),
        "{:?}",
        containers()
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", new_master.unwrap_or_default()))
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("error_log stderr"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );

    let out = crate::wpod_output(&["stop", "mgmt-apply"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    crate::pods::assert_no_leftovers("mgmt-apply");
}

/// A Python script that asks the control socket `socket` to describe its pod and prints
/// `answer ...`, or `refused ERROR` when it cannot connect or read. wpod answers a refused
/// peer at once and closes, maybe before the request is sent: its answer is still read then.
pub fn control_socket_try(socket: &Path) -> String {
    format!(
        "import socket, time\ntime.sleep(0.3)\ntry:\n    s = socket.socket(socket.AF_UNIX)\n    \
         s.connect('{}')\n    try:\n        s.sendall(b'{{\"version\":1,\"op\":\"describe\"}}\\n')\n    \
         except BrokenPipeError:\n        pass\n    print('answer', s.recv(100000).decode())\n\
         except OSError as e:\n    print('refused', e)\n",
        socket.display()
    )
}

#[test]
fn a_container_cannot_control_its_own_pod() {
    wpod_test_support::require_root("the control socket from inside a container");
    let root = std::env::var("WPOD_ROOT").unwrap_or_else(|_| "/var/lib/wpod".into());
    let script = control_socket_try(Path::new(&format!("{root}/pods/mgmt-peer/control.sock")));
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: mgmt-peer}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    command: [python3, -c, {}]\n",
        serde_json::to_string(&script).unwrap()
    );
    let pod = TestPod::new("mgmt-peer", &yaml);
    let run = pod.run(Duration::from_secs(60));
    let out = run.logs("main").join("\n");
    // Root in a container that shares the host's files reaches no control: the socket is
    // not there for it, or wpod refuses a peer outside its own mount namespace.
    assert!(
        out.starts_with("refused") || out.contains("not from inside a container"),
        "{}",
        run.dump()
    );
    assert!(!out.contains("\"ok\":true"), "{}", run.dump());
}
