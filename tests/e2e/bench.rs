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
    let other_done = dir.join("other-done");
    // Another process, not below load.py: it spins 0.6 s of CPU, says so, then waits to be
    // killed (it must not end before load.py's last sample).
    let mut other = Command::new("python3")
        .args([
            "-c",
            &spin(
                0.6,
                &format!(
                    "open({:?}, 'w').close()\ntime.sleep(600)",
                    other_done.to_str().unwrap()
                ),
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    let out = dir.join("load.json");
    let root = wpod_test_support::repo_root();
    // The measure: 0.4 s of its own CPU, in a child that daemonizes (double fork) to show
    // that what a measure starts stays its own; it ends once the other process has spun.
    let measure = format!(
        "if os.fork() == 0:\n    if os.fork() == 0:\n{}    os._exit(0)\nos.wait()\nwhile not os.path.exists({:?}): time.sleep(0.05)\ntime.sleep(0.6)\n",
        spin(0.4, "")
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>(),
        other_done.to_str().unwrap()
    );
    let status = Command::new("python3")
        .arg(root.join("bench/load.py"))
        .args(["-o", out.to_str().unwrap(), "--", "python3", "-c"])
        .arg(format!("import time, os\n{measure}"))
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
