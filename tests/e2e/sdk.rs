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
    running.signal(libc::SIGINT);
    let run = running.wait(LONG);
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
    running.signal(libc::SIGINT);
    let run = running.wait(LONG);
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
    running.signal(libc::SIGINT);
    let run = running.wait(LONG);
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
    running.signal(libc::SIGINT);
    let run = running.wait(LONG);
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

#[test]
fn wpod_new_js_builds_with_one_command_and_runs() {
    wpod_test_support::require_root("a scaffolded JavaScript sidecar");
    scaffold_builds_and_runs(
        "new-js",
        "js",
        &[
            "sh",
            "-c",
            "npm install --no-audit --no-fund && npm run build",
        ],
        &[],
    );
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
    running.signal(libc::SIGINT);
    let _ = running.wait(LONG);
}
