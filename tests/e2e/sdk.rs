//! Sidecars written with the SDKs (`guests/wpod-sidecar`), and `wpod:sidecar@0.2.0` beside
//! 0.1.0: an async Rust sidecar that waits on sockets, the main container's output and the
//! pod's events in one poll, serving many clients at once; a component built against 0.1.0
//! still runs. Needs root.

use std::io::Read;
use std::time::Duration;

use crate::pods::TestPod;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn an_async_sidecar_serves_many_clients_while_it_follows_the_main_container() {
    wpod_test_support::require_root("an async sidecar");
    let peek_port = crate::free_port();
    let pod = TestPod::new(
        "sdk-peek",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sdk-peek}}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    command: [sh, -c, "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.1; done"]
  - name: peek
    image: SIDECARS/log-peek.wasm
    env: [{{name: LISTEN, value: "0.0.0.0:9500"}}]
    ports: [{{containerPort: 9500, hostPort: {peek_port}, hostIP: 127.0.0.1}}]
"#
        ),
    );
    let running = pod.spawn();
    running.wait_for("the sidecar following main's output", LONG, |r| {
        r.has_line("peek", "seen: line-5") && r.has_line("peek", "serving the latest line")
    });
    // Many clients at once, each answered while the sidecar keeps following the output.
    let clients: Vec<_> = (0..24)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", peek_port))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok::<_, std::io::Error>(answer)
            })
        })
        .collect();
    for c in clients {
        let answer = c.join().unwrap().expect("an answer");
        assert!(answer.starts_with("line-"), "{answer:?}");
    }
    let before = running.output().logs("peek").len();
    running.wait_for("more lines followed after serving", LONG, |r| {
        r.logs("peek").len() > before + 5
    });
    let run = running.stop(LONG);
    // It heard `stopping` through its pollable and ended by itself, well before its grace.
    run.assert_line("peek", "stopping with");
    assert_eq!(run.exit("peek")["code"], 0, "{}", run.dump());
    assert!(
        run.events(Some("peek"))
            .iter()
            .all(|e| e["event"] != "killed"),
        "{}",
        run.dump()
    );
}

#[test]
fn a_component_built_against_0_1_0_keeps_running() {
    wpod_test_support::require_root("a 0.1.0 component");
    let pod = TestPod::new(
        "sdk-compat",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sdk-compat}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: old
    image: SIDECARS/compat-0-1.wasm
    restartPolicy: Always
  containers:
  - name: main
    command: [sh, -c, "echo main up; sleep 60"]
"#,
    );
    let running = pod.spawn();
    // As a native sidecar it gates main: ready() of 0.1.0 works.
    running.wait_for("main after the 0.1.0 sidecar", LONG, |r| {
        r.has_line("main", "main up")
    });
    let run = running.stop(LONG);
    run.assert_line("old", "compat 0.1.0: ready");
    run.assert_line("old", "compat 0.1.0: stopping with");
    assert_eq!(run.exit("old")["code"], 0, "{}", run.dump());
}

/// `wpod new NAME --lang LANG` in a fresh directory, built with the one command its README
/// gives (`build`), then its own pod.yaml run until the sidecar has done what the template
/// does: ready, a line of the main container's output, its statistics, and `stopping`.
fn scaffold_builds_and_runs(name: &str, lang: &str, build: &[&str], env: &[(&str, String)]) {
    let (parent, dir) = scaffold_and_build(name, lang, build, env);
    let pod = TestPod::from_file(name, &dir.join("pod.yaml"));
    let running = pod.spawn();
    let tag = format!("{name}: ");
    running.wait_for(
        "the scaffolded sidecar's work",
        Duration::from_secs(120),
        |r| {
            r.has_line(name, &format!("{tag}ready"))
                && r.has_line(name, "main said")
                && r.has_line(name, "KiB of memory")
        },
    );
    let run = running.stop(LONG);
    run.assert_line(name, &format!("{tag}main said"));
    run.assert_line(name, "hello from main");
    run.assert_line(name, &format!("{tag}stopping ("));
    assert_eq!(run.exit(name)["code"], 0, "{}", run.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

/// `wpod new NAME --lang LANG` in a fresh directory, built with `build`: the temporary parent
/// and the project's directory.
fn scaffold_and_build(
    name: &str,
    lang: &str,
    build: &[&str],
    env: &[(&str, String)],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let parent = std::env::temp_dir().join(format!("wpod-e2e-new-{name}"));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let out = crate::wpod()
        .args(["new", name, "--lang", lang])
        .current_dir(&parent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert!(crate::text(&out.stdout).contains(&format!("Created sidecar {name}")));
    let dir = parent.join(name);
    let mut cmd = std::process::Command::new(build[0]);
    // The test run's cargo settings are not the project's (as tests/support/build.rs does).
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUST") && key != "RUSTUP_HOME" && key != "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key);
        }
    }
    // Builds fetch packages (npm's registry): the host's network, not the tests' isolated one.
    wpod_test_support::in_host_network(&mut cmd);
    let built = cmd
        .args(&build[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", build[0]));
    assert!(
        built.status.success(),
        "{}{}",
        crate::text(&built.stdout),
        crate::text(&built.stderr)
    );
    (parent, dir)
}

#[test]
fn wpod_new_rust_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded Rust sidecar");
    // Its dependencies compiled once per clone, beside the guests'.
    let target = wpod_test_support::repo_root().join("target/scaffold");
    let name = "new-rs";
    // `make` puts the component beside pod.yaml, wherever CARGO_TARGET_DIR is (issue 27,
    // item 5).
    scaffold_builds_and_runs(
        name,
        "rust",
        &["make"],
        &[("CARGO_TARGET_DIR", target.display().to_string())],
    );
}

#[test]
fn wpod_new_python_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded Python sidecar");
    scaffold_builds_and_runs(
        "new-py",
        "python",
        &[
            "componentize-py",
            "-d",
            "wit",
            "-w",
            "wpod:sidecar/sidecar",
            "componentize",
            "app",
            "-o",
            "new-py.wasm",
        ],
        &[],
    );
}

/// A Python sidecar built for `sidecar-basic` (no `main-process`, so its pod needs no
/// `shareProcessNamespace`) with the scaffold's SDK: the standard library's networking works
/// (`http.client` by name, `create_server`/`accept` on a declared port), and an uncaught
/// exception prints its Python traceback, source lines included, and ends the sidecar with
/// exit code 1, not a trap (issue 27, items 1 and 3).
#[test]
fn a_python_sidecar_uses_stdlib_sockets_and_fails_with_a_traceback() {
    wpod_test_support::require_root("a Python sidecar's networking and traceback");
    let name = "new-py-net";
    let app = r#"
import http.client
import socket
import time

import wpod_sidecar
from wit_world import exports


def fetch(port):
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("localhost", port, timeout=5)
            conn.request("GET", "/")
            return conn.getresponse().status
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise TimeoutError("no server")


def fail(status):
    raise ValueError(f"failing on purpose after HTTP {status}")


class Run(exports.Run):
    @wpod_sidecar.entrypoint
    def run(self) -> None:
        print(f"GET / answered {fetch(8099)}", flush=True)
        with socket.create_server(("0.0.0.0", 8100)) as srv:
            with socket.create_connection(("127.0.0.1", 8100), timeout=5) as c:
                peer, _ = srv.accept()
                c.sendall(b"ping")
                print(f"echo {peer.recv(4)!r}", flush=True)
                peer.close()
        fail(200)
"#;
    let build = format!(
        "printf %s \"$APP_PY\" > app.py && componentize-py -d wit -w wpod:sidecar/sidecar-basic componentize app -o {name}.wasm"
    );
    let (parent, dir) = scaffold_and_build(
        name,
        "python",
        &["sh", "-c", &build],
        &[("APP_PY", app.to_string())],
    );
    let pod = TestPod::new(
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
    command: [sh, -c, "trap 'exit 0' TERM; python3 -m http.server 8099 --bind 127.0.0.1 & wait"]
    workingDir: /tmp
  - name: {name}
    image: {wasm}
    ports: [{{containerPort: 8100}}]
"#,
            wasm = dir.join(format!("{name}.wasm")).display()
        ),
    );
    let running = pod.spawn();
    running.wait_for("the sidecar's exit", Duration::from_secs(120), |r| {
        r.events(Some(name)).iter().any(|e| e["event"] == "exited")
    });
    let run = running.stop(LONG);
    run.assert_line(name, "GET / answered 200");
    run.assert_line(name, "echo b'ping'");
    run.assert_line(name, "Traceback (most recent call last):");
    // The source line, though the component holds no .py file at run time.
    run.assert_line(name, "raise ValueError(f\"failing on purpose");
    run.assert_line(name, "ValueError: failing on purpose after HTTP 200");
    for noise in ["panicked", "wasm trap", "unknown encoding", "wrapper"] {
        assert!(!run.has_line(name, noise), "{noise}\n{}", run.dump());
    }
    let exit = run.exit(name);
    assert_eq!(exit["code"], 1, "{}", run.dump());
    assert_eq!(exit["reason"], "Error", "{}", run.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

/// The scaffold README's least-privilege build: the same app built for `sidecar-basic` runs
/// in its pod without `shareProcessNamespace` (issue 27, item 3).
#[test]
fn wpod_new_python_builds_for_sidecar_basic_and_runs_without_the_grant() {
    wpod_test_support::require_root("a scaffolded Python sidecar on sidecar-basic");
    let name = "new-py-basic";
    let build = format!(
        "componentize-py -d wit -w wpod:sidecar/sidecar-basic componentize app -o {name}.wasm && sed -i '/shareProcessNamespace: true/d' pod.yaml"
    );
    let (parent, dir) = scaffold_and_build(name, "python", &["sh", "-c", &build], &[]);
    let yaml = std::fs::read_to_string(dir.join("pod.yaml")).unwrap();
    assert!(!yaml.contains("shareProcessNamespace: true"), "{yaml}");
    let pod = TestPod::from_file(name, &dir.join("pod.yaml"));
    let running = pod.spawn();
    running.wait_for("the sidecar, ready", Duration::from_secs(120), |r| {
        r.has_line(name, "not watching the main container")
    });
    let run = running.stop(LONG);
    run.assert_line(name, &format!("{name}: ready"));
    run.assert_line(name, &format!("{name}: stopping ("));
    assert_eq!(run.exit(name)["code"], 0, "{}", run.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

#[test]
fn wpod_new_c_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded C sidecar");
    // Debian's clang and wasi-libc; `wpod component new` is the wpod under test.
    scaffold_builds_and_runs(
        "new-c",
        "c",
        &["make", &format!("WPOD={}", crate::wpod_bin().display())],
        &[],
    );
}

#[test]
fn wpod_new_go_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded Go sidecar");
    let go = ["/usr/bin/go", "/usr/lib/go-1.23/bin/go"];
    assert!(
        go.iter().any(|g| std::path::Path::new(g).exists()),
        "Go 1.23 is needed: apt install -t bookworm-backports golang-1.23-go (.ci/setup does)"
    );
    let name = "new-go";
    let (parent, dir) = scaffold_and_build(
        name,
        "go",
        &["make", &format!("WPOD={}", crate::wpod_bin().display())],
        &[],
    );
    // A native sidecar: main starts only once the Go sidecar has called Ready(), and reads
    // what it writes into their shared volume.
    let pod = TestPod::from_file(name, &dir.join("pod.yaml"));
    let running = pod.spawn();
    running.wait_for("main reading the Go sidecar's file", LONG, |r| {
        r.logs("main").iter().any(|l| l.contains("main read 20"))
    });
    let run = running.stop(LONG);
    run.assert_line(name, &format!("{name}: ready"));
    // The journal's times are RFC 3339 in one format: they sort as strings.
    let at = |container: &str, event: &str| {
        run.events(Some(container))
            .iter()
            .find(|e| e["event"] == event)
            .and_then(|e| e["time"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no {event} of {container}: {}", run.dump()))
    };
    assert!(at(name, "ready") <= at("main", "started"), "{}", run.dump());
    assert_eq!(run.exit("main")["code"], 0, "{}", run.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

/// `wpod new NAME --lang js`, built with its README's one command, and its own pod.yaml run:
/// the sidecar reads its env, writes a file into the shared volume, answers the main container
/// on a port of the pod's loopback and stops on `stopping`, in a pod that grants only that
/// (issue 27, items 2 and 3: no shareProcessNamespace, no main-process import).
#[test]
fn wpod_new_js_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded JavaScript sidecar");
    let name = "new-js";
    let (parent, dir) = scaffold_and_build(
        name,
        "js",
        &[
            "sh",
            "-c",
            "npm install --no-audit --no-fund && npm run build",
        ],
        &[],
    );
    let manifest = std::fs::read_to_string(dir.join("pod.yaml")).unwrap();
    assert!(
        !manifest.contains("shareProcessNamespace: true"),
        "{manifest}"
    );
    let inspect = crate::wpod()
        .arg("inspect")
        .arg(dir.join(format!("{name}.wasm")))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", crate::text(&inspect.stderr));
    let imports = crate::text(&inspect.stdout);
    assert!(imports.contains("wpod:sidecar/lifecycle@"), "{imports}");
    assert!(!imports.contains("main-process"), "{imports}");
    let pod = TestPod::from_file(name, &dir.join("pod.yaml"));
    let running = pod.spawn();
    running.wait_for(
        "the scaffolded sidecar answering the main container",
        Duration::from_secs(120),
        |r| {
            r.has_line(name, &format!("{name}: ready, answering on port 8080"))
                && r.has_line("main", &format!("main read hello from {name}"))
                && r.has_line("main", &format!("main got: hello from {name} (answer 2)"))
        },
    );
    let run = running.stop(LONG);
    run.assert_line(name, &format!("{name}: /shared holds greeting.txt"));
    run.assert_line(name, "asked \"how are you?\"");
    run.assert_line(name, &format!("{name}: stopping ("));
    assert_eq!(run.exit(name)["code"], 0, "{}", run.dump());
    assert_eq!(run.exit("main")["code"], 0, "{}", run.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

/// The JavaScript SDK's env, file and TCP helpers reach what the pod grants (env, args, a
/// volume, a read-only one, a declared port, the loopback, a native server on it) and are
/// refused the rest with WASI's codes; `wpod.main` prints an uncaught refusal with its stack
/// (issue 27, item 2).
#[test]
fn the_js_sdk_reaches_the_env_files_and_sockets_its_pod_grants() {
    wpod_test_support::require_root("the JavaScript SDK's helpers");
    let name = "new-js-sdk";
    let (parent, dir) = scaffold_and_build(
        name,
        "js",
        &["npm", "install", "--no-audit", "--no-fund"],
        &[],
    );
    std::fs::write(dir.join("app.js"), JS_SDK_CHECKER.replace("NAME", name)).unwrap();
    std::fs::write(dir.join("pod.yaml"), JS_SDK_POD.replace("NAME", name)).unwrap();
    std::fs::write(
        dir.join("throw.yaml"),
        JS_SDK_THROW_POD.replace("NAME", name),
    )
    .unwrap();
    let built = std::process::Command::new("npm")
        .args(["run", "build"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}{}",
        crate::text(&built.stdout),
        crate::text(&built.stderr)
    );
    let run = TestPod::from_file(name, &dir.join("pod.yaml")).run(Duration::from_secs(180));
    run.assert_line(name, "DONE");
    let failed: Vec<String> = run
        .logs(name)
        .into_iter()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", run.dump());
    assert_eq!(run.exit(name)["code"], 0, "{}", run.dump());
    let thrown = TestPod::from_file(&format!("{name}-throw"), &dir.join("throw.yaml")).run(LONG);
    thrown.assert_line("thrower", "WasiError: read /data/missing: no-entry");
    thrown.assert_line("thrower", "readFile@wpod-sidecar.js");
    assert_eq!(thrown.exit("thrower")["code"], 1, "{}", thrown.dump());
    let _ = std::fs::remove_dir_all(&parent);
}

#[test]
fn an_exporter_answers_while_another_client_holds_its_connection_idle() {
    wpod_test_support::require_root("an exporter serving concurrently");
    let port = crate::free_port();
    let pod = TestPod::new(
        "sdk-exporter",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sdk-exporter}}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sleep, "60"]
  - name: exporter
    image: SIDECARS/proc-monitor.wasm
    env: [{{name: LISTEN, value: "0.0.0.0:9256"}}]
    ports: [{{containerPort: 9256, hostPort: {port}, hostIP: 127.0.0.1}}]
"#
        ),
    );
    let running = pod.spawn();
    assert!(
        crate::pods::curl(&format!("http://127.0.0.1:{port}/metrics"), LONG).is_some(),
        "{}",
        running.output().dump()
    );
    // Idle clients that never send a request (the exporter gives each 5 s) hold up nobody:
    // a scrape meanwhile is answered at once.
    let idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = std::time::Instant::now();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "2",
            "-f",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "no answer within 2 s while clients idled"
    );
    assert!(crate::text(&out.stdout).contains("process_resident_memory_bytes"));
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(idle);
    let _ = running.stop(LONG);
}

/// What the JavaScript SDK's helpers reach and what they are refused: PASS or FAIL a line,
/// then DONE (`NAME` is the sidecar's name).
const JS_SDK_CHECKER: &str = include_str!("fixtures/js-sdk-checker.js");
/// Its pod: a native server on the loopback, env, args, a workingDir, a writable and a
/// read-only volume, one declared port.
const JS_SDK_POD: &str = include_str!("fixtures/js-sdk-pod.yaml");
/// The checker told to throw.
const JS_SDK_THROW_POD: &str = include_str!("fixtures/js-sdk-throw.yaml");
