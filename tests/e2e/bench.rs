//! The bench suite's own tools (issue 29): `bench/load.py`, which tells a measure's CPU time
//! from everyone else's so that the suite can refuse results taken on a busy machine.
//! Needs Debian's python3.

use std::process::{Command, Stdio};

/// Python that spins until this process has used `cpu` seconds of CPU (not of wall time, so a
/// busy machine only makes it slower), then runs `then`.
fn spin(cpu: f64, then: &str) -> String {
    format!(
        "import time, os\nt = time.process_time()\nwhile time.process_time() - t < {cpu}: pass\n{then}\n"
    )
}

#[test]
fn load_py_counts_the_measures_cpu_apart_from_another_processs() {
    let dir = std::env::temp_dir().join(format!("wpod-e2e-loadpy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (go, other_done, child_done) = (
        dir.join("go"),
        dir.join("other-done"),
        dir.join("child-done"),
    );
    let path = |p: &std::path::Path| format!("{:?}", p.to_str().unwrap_or_default());
    // Another process, not below load.py: once the measure says go (so after load.py's first
    // sample), it spins 0.6 s of CPU, says so, then waits to be killed.
    let mut other = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import time, os\nwhile not os.path.exists({}): time.sleep(0.01)\n{}",
                path(&go),
                spin(
                    0.6,
                    &format!("open({}, 'w').close()\ntime.sleep(600)", path(&other_done))
                )
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    let out = dir.join("load.json");
    let root = wpod_test_support::repo_root();
    // The measure: 0.4 s of its own CPU in a child that daemonizes (double fork), to show that
    // what a measure starts stays its own; it ends once that child and the other process have
    // spun.
    let grandchild = spin(
        0.4,
        &format!("open({}, 'w').write(str(os.getpid()))", path(&child_done)),
    )
    .lines()
    .map(|l| format!("        {l}\n"))
    .collect::<String>();
    // Until the daemonized child has ended (a zombie of load.py's, or reaped), so that
    // load.py finds it to reap with its whole CPU time.
    let gone = format!(
        "pid = open({}).read()\nwhile True:\n    try:\n        if open('/proc/' + pid + '/stat').read().rsplit(')', 1)[1].split()[0] == 'Z': break\n    except OSError: break\n    time.sleep(0.01)\n",
        path(&child_done)
    );
    let measure = format!(
        "import time, os\nopen({go}, 'w').close()\nif os.fork() == 0:\n    if os.fork() == 0:\n{grandchild}    os._exit(0)\nos.wait()\nwhile not (os.path.exists({od}) and os.path.exists({cd})): time.sleep(0.05)\n{gone}",
        go = path(&go),
        od = path(&other_done),
        cd = path(&child_done),
    );
    let status = Command::new("python3")
        .arg(root.join("bench/load.py"))
        .args(["-o", out.to_str().unwrap(), "--", "python3", "-c", &measure])
        .status()
        .expect("bench/load.py");
    let _ = other.kill();
    let _ = other.wait();
    assert!(status.success(), "load.py: {status}");
    let load: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("load.json")).unwrap();
    let ours = load["ours_cpu_s"].as_f64().unwrap_or(0.0);
    let others = load["others_cpu_s"].as_f64().unwrap_or(0.0);
    assert!(
        ours >= 0.35,
        "the measure's 0.4 s (a daemonized child's): {load}"
    );
    assert!(others >= 0.5, "the other process's 0.6 s: {load}");
    let pid = other.id() as i64;
    assert!(
        load["top_others"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e[1].as_i64() == Some(pid))),
        "the other process among the top others: {load}"
    );
    let share = load["others_share"].as_f64().unwrap_or(0.0);
    let expected =
        others / (load["cpus"].as_f64().unwrap_or(1.0) * load["wall_s"].as_f64().unwrap_or(1.0));
    assert!((share - expected).abs() < 0.01, "{load}");
    let _ = std::fs::remove_dir_all(&dir);
}
