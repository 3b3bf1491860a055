//! The sidecars people run (issue 6), each on its example pod or a pod like it, checked with real
//! clients: promtool and a real Prometheus scrape, curl, nginx reloading, log lines counted.
//! Needs root and Debian's nginx, redis-server, prometheus (promtool), python3 and curl.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pods::{assert_no_leftovers, curl, TestPod};
use wpod_test_support::require_root;

/// A host directory an example mounts by `hostPath`, made empty for the test and removed after
/// it, passed or failed.
struct HostDir(&'static str);

impl HostDir {
    fn fresh(path: &'static str) -> Self {
        let _ = std::fs::remove_dir_all(path);
        HostDir(path)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

const LONG: Duration = Duration::from_secs(90);

/// `promtool check metrics` on `text`; its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    promtool_allowing(text, &[])
}

/// Metric names redis_exporter (oliver006) exports that promtool's lint flags (`_sec`, `_ms`,
/// `_usec` units; counters without `_total`, gauges with it). Dashboards and alerts query these
/// names, so redis-exporter keeps them; promtool must still parse everything.
const REDIS_EXPORTER_LINT: &[&str] = &[
    "redis_aof_current_rewrite_duration_sec",
    "redis_aof_last_rewrite_duration_sec",
    "redis_current_eviction_exceeded_time_ms",
    "redis_dump_payload_sanitizations",
    "redis_eviction_exceeded_time_ms_total",
    "redis_expire_cycle_cpu_time_ms_total",
    "redis_instantaneous_eventloop_duration_usec",
    "redis_io_threaded_reads_processed",
    "redis_io_threaded_writes_processed",
    "redis_memory_used_vm_total",
    "redis_migrate_cached_sockets_total",
    "redis_rdb_current_bgsave_duration_sec",
    "redis_rdb_last_bgsave_duration_sec",
    "redis_rdb_saves_total",
    "redis_total_error_replies",
    "redis_total_reads_processed",
    "redis_total_writes_processed",
    "redis_unexpected_error_replies",
    "redis_eventloop_duration_sum_usec_total",
    "redis_eventloop_duration_cmd_sum_usec_total",
];

/// `promtool check metrics` on `text`, where lint complaints (exit 3, not a parse error's 1)
/// about the metrics named in `allowed` are no failure.
fn promtool_allowing(text: &str, allowed: &[&str]) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool (Debian's prometheus package): {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let only_allowed_lint = out.status.code() == Some(3)
        && complaints
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|name| allowed.contains(&name))
            });
    if out.status.success() || only_allowed_lint {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Samples of the text format: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// `# TYPE` of each family: name → type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// The label names of each sample name (`quantile` and `le` left out): name → names.
fn label_names(text: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let set = out.entry(name.to_string()).or_default();
        // `k="v",...}`: values may hold anything, escaped.
        let mut chars = rest.chars();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').to_string();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            if chars.next() != Some('"') {
                break;
            }
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => escaped = false,
                }
            }
            if key != "quantile" && key != "le" {
                set.insert(key);
            }
        }
    }
    out
}

/// Debian's prometheus-redis-exporter (oliver006's, v1.45) run in the network namespace of
/// process `pid` against the Redis at `redis` there: one scrape of its `/metrics`.
fn reference_redis_exporter(pid: i64, redis: &str) -> String {
    let pid = pid.to_string();
    let mut child = Command::new("nsenter")
        .args(["-t", &pid, "-n", "prometheus-redis-exporter"])
        .args(["-redis.addr", &format!("redis://{redis}")])
        .args(["-web.listen-address", "127.0.0.1:19121"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsenter and prometheus-redis-exporter (Debian's package)");
    let start = Instant::now();
    let mut body = None;
    while body.is_none() && start.elapsed() < Duration::from_secs(20) {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "curl", "-s", "-f", "-m", "5"])
            .arg("http://127.0.0.1:19121/metrics")
            .output()
            .expect("nsenter curl");
        if out.status.success() {
            body = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    body.expect("prometheus-redis-exporter answered")
}

/// A real Prometheus scraping `target` every second, killed (by PID) when dropped.
struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn scraping(target: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("wpod-e2e-prometheus-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: wpod\n  static_configs:\n  - targets: ['{target}']\n")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package)");
        Prometheus { child, dir }
    }

    /// The value of an instant query, once Prometheus has one.
    fn query(&self, port: u16, expr: &str, limit: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(body) = curl(
                &format!("http://127.0.0.1:{port}/api/v1/query?query={expr}"),
                Duration::from_secs(2),
            ) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                    return Some(value.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn redis_exporter_serves_valid_metrics_that_prometheus_scrapes() {
    require_root("redis_exporter_serves_valid_metrics");
    let (pod, port) = TestPod::example("redis", "redis-exporter.yaml");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let running = pod.spawn();
    // Both ready: the exporter answers (its readiness) before Redis may (Redis's readiness).
    running.wait_for("the exporter and redis to be ready", LONG, |r| {
        ["exporter", "redis"]
            .iter()
            .all(|c| r.events(Some(c)).iter().any(|e| e["event"] == "ready"))
    });
    // Two scrapes: `INFO`'s per-command statistics count the commands before this one.
    let _ = curl(&metrics, LONG).expect("metrics through the hostPort");
    let text = curl(&metrics, LONG).expect("metrics through the hostPort");
    promtool_allowing(&text, REDIS_EXPORTER_LINT)
        .unwrap_or_else(|e| panic!("promtool rejects the metrics: {e}\n{text}"));
    let s = samples(&text);
    assert_eq!(s.get("redis_up"), Some(&1.0), "{text}");
    for sample in [
        "redis_connected_clients",
        "redis_memory_max_bytes",
        "redis_mem_fragmentation_ratio",
        "redis_commands_processed_total",
        "redis_keyspace_hits_total",
        "redis_evicted_keys_total",
        "redis_rdb_last_bgsave_status",
        "redis_aof_last_write_status",
        "redis_master_repl_offset",
        "redis_slowlog_length",
        "redis_config_maxclients",
        "redis_db_keys{db=\"db0\"}",
        "redis_commands_total{cmd=\"info\"}",
        "redis_commands_duration_seconds_total{cmd=\"info\"}",
        "redis_latency_percentiles_usec_count{cmd=\"info\"}",
    ] {
        assert!(s.contains_key(sample), "no {sample}:\n{text}");
    }

    // Every family the real redis_exporter shows for this Redis, with its type and labels.
    let pid = running
        .output()
        .events(Some("redis"))
        .iter()
        .find_map(|e| e["pid"].as_i64())
        .expect("redis's pid");
    let reference = reference_redis_exporter(pid, "127.0.0.1:6379");
    // Ours after theirs: whatever its scrape made Redis show, ours shows too.
    let text = curl(&metrics, LONG).expect("metrics through the hostPort");
    let (ours, theirs) = (types(&text), types(&reference));
    // Its Go process, its build, its /scrape endpoint's errors, its opt-in key groups.
    let not_redis = |n: &str| {
        ["go_", "process_", "promhttp_"]
            .iter()
            .any(|p| n.starts_with(p))
            || [
                "redis_exporter_build_info",
                "redis_target_scrape_request_errors_total",
                "redis_last_key_groups_scrape_duration_milliseconds",
            ]
            .contains(&n)
    };
    // A gauge in v1.45, a counter in redis_exporter since.
    let retyped = ["redis_expired_time_cap_reached_total"];
    for (name, kind) in theirs.iter().filter(|(n, _)| !not_redis(n)) {
        match ours.get(name) {
            Some(k) if k == kind || retyped.contains(&name.as_str()) => {}
            other => panic!("redis_exporter has {name} ({kind}), we have {other:?}\n{text}"),
        }
    }
    let (our_labels, their_labels) = (label_names(&text), label_names(&reference));
    for (name, labels) in their_labels.iter().filter(|(n, _)| !not_redis(n)) {
        let mine = our_labels.get(name).cloned().unwrap_or_default();
        assert!(
            labels.is_subset(&mine),
            "{name}: redis_exporter labels {labels:?}, ours {mine:?}"
        );
    }
    assert!(
        s.get("redis_memory_used_bytes").is_some_and(|v| *v > 0.0),
        "{text}"
    );
    assert!(
        s.keys()
            .any(|k| k.starts_with("redis_instance_info{redis_version=\"7.")),
        "{text}"
    );
    // Redis itself is not reachable from the host, only the exporter's declared port.
    assert!(!crate::pods::host_can_connect("127.0.0.1:6379"));

    let web = crate::free_port();
    let prometheus = Prometheus::scraping(&format!("127.0.0.1:{port}"), web);
    let up = prometheus.query(web, "redis_up", LONG);
    assert_eq!(
        up.as_deref(),
        Some("1"),
        "a real Prometheus scrape of the exporter"
    );
    let target_up = prometheus.query(web, "up%7Bjob%3D%22wpod%22%7D", LONG);
    assert_eq!(target_up.as_deref(), Some("1"));
    drop(prometheus);
    let _ = running.stop(LONG);
    assert_no_leftovers("redis");
}

#[test]
fn proc_monitor_reports_the_main_process_as_proc_sees_it() {
    require_root("proc_monitor_reports_the_main_process");
    let (pod, port) = TestPod::example("legacy-app", "proc-monitor.yaml");
    let running = pod.spawn();
    // Once the app serves, its memory and threads settle.
    let run = running.wait_for("the app to serve", LONG, |r| {
        r.events(Some("app")).iter().any(|e| e["event"] == "ready")
    });
    let pid = run
        .events(Some("app"))
        .iter()
        .find_map(|e| e["pid"].as_i64())
        .expect("app pid");
    let proc_status = || -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("app is running");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(-1.0)
        };
        (field("VmRSS:") * 1024.0, field("Threads:"))
    };
    let before = proc_status();
    let text = curl(&format!("http://127.0.0.1:{port}/metrics"), LONG)
        .expect("metrics through the hostPort");
    let after = proc_status();
    promtool(&text).unwrap_or_else(|e| panic!("promtool rejects the metrics: {e}\n{text}"));
    let s = samples(&text);
    let get = |name: &str| {
        *s.get(&format!("{name}{{container=\"app\"}}"))
            .unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    // Within 10% of what /proc said just before and just after the scrape.
    let rss = get("process_resident_memory_bytes");
    let (low, high) = (before.0.min(after.0) * 0.9, before.0.max(after.0) * 1.1);
    assert!(
        rss >= low && rss <= high,
        "rss {rss} outside /proc's [{low}, {high}]"
    );
    assert_eq!(get("process_threads"), after.1, "{text}");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    assert!(
        (get("process_open_fds") - fds).abs() <= 1.0,
        "fds {} vs /proc {fds}",
        get("process_open_fds")
    );
    assert!(get("process_cpu_seconds_total") > 0.0, "{text}");
    // process-exporter's families, the container as the group.
    let group = |name: &str, extra: &str| {
        *s.get(&format!("{name}{{groupname=\"app\"{extra}}}"))
            .unwrap_or_else(|| panic!("no {name}{extra}: {text}"))
    };
    assert_eq!(group("namedprocess_namegroup_num_procs", ""), 1.0);
    assert_eq!(
        group("namedprocess_namegroup_num_threads", ""),
        get("process_threads")
    );
    assert_eq!(
        group("namedprocess_namegroup_open_filedesc", ""),
        get("process_open_fds")
    );
    assert_eq!(
        group(
            "namedprocess_namegroup_memory_bytes",
            ",memtype=\"resident\""
        ),
        rss
    );
    assert_eq!(
        group(
            "namedprocess_namegroup_memory_bytes",
            ",memtype=\"virtual\""
        ),
        get("process_virtual_memory_bytes")
    );
    let cpu = group("namedprocess_namegroup_cpu_seconds_total", ",mode=\"user\"")
        + group(
            "namedprocess_namegroup_cpu_seconds_total",
            ",mode=\"system\"",
        );
    assert!(
        (cpu - get("process_cpu_seconds_total")).abs() < 1e-6,
        "{text}"
    );
    let started = group("namedprocess_namegroup_oldest_start_time_seconds", "");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && now - started < LONG.as_secs_f64() + 5.0,
        "{started} vs {now}"
    );
    let t = types(&text);
    for (name, kind) in [
        ("namedprocess_namegroup_num_procs", "gauge"),
        ("namedprocess_namegroup_cpu_seconds_total", "counter"),
        ("namedprocess_namegroup_memory_bytes", "gauge"),
        ("namedprocess_namegroup_num_threads", "gauge"),
        ("namedprocess_namegroup_open_filedesc", "gauge"),
        ("namedprocess_namegroup_oldest_start_time_seconds", "gauge"),
        ("namedprocess_namegroup_read_bytes_total", "counter"),
        ("namedprocess_namegroup_write_bytes_total", "counter"),
    ] {
        assert_eq!(t.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(
        s.get("wpod_container_up{container=\"app\"}"),
        Some(&1.0),
        "{text}"
    );
    let _ = running.stop(LONG);
    assert_no_leftovers("legacy-app");
}

/// The PIDs of a process's children.
fn children(pid: i64) -> Vec<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn config_reloader_makes_nginx_reload_without_a_restart() {
    require_root("config_reloader_makes_nginx_reload");
    let source = HostDir::fresh("/tmp/wpod-config-source");
    let source = std::path::Path::new(source.0);
    std::fs::create_dir_all(source).unwrap();
    let site =
        |v: &str| format!("server {{ listen 8090; location / {{ return 200 \"{v}\\n\"; }} }}\n");
    std::fs::write(source.join("site.conf"), site("version 1")).unwrap();
    let (pod, port) = TestPod::example("config-reload", "config-reload.yaml");
    let page = format!("http://127.0.0.1:{port}/");
    let running = pod.spawn();
    let first = curl(&page, LONG);
    assert_eq!(
        first.as_deref(),
        Some("version 1\n"),
        "{}",
        running.output().dump()
    );
    let run = running.output();
    let master = run
        .events(Some("nginx"))
        .iter()
        .find_map(|e| e["pid"].as_i64())
        .expect("nginx pid");
    let workers_before = children(master);
    assert!(!workers_before.is_empty());

    std::fs::write(source.join("site.conf"), site("version 2")).unwrap();
    let start = Instant::now();
    let mut served = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        served = curl(&page, Duration::from_secs(2)).unwrap_or_default();
        if served == "version 2\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served, "version 2\n", "{}", running.output().dump());
    // Reloaded, not restarted: same master, new workers, no restart event. (The old workers
    // finish their connections before they exit.)
    let replaced = |workers: &[i64]| {
        !workers.is_empty() && workers.iter().all(|w| !workers_before.contains(w))
    };
    let start = Instant::now();
    while !replaced(&children(master)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = running.output();
    assert!(
        std::path::Path::new(&format!("/proc/{master}")).exists(),
        "nginx's master is gone"
    );
    let workers_after = children(master);
    assert!(
        replaced(&workers_after),
        "{workers_before:?} -> {workers_after:?}"
    );
    assert_eq!(
        run.events(Some("nginx"))
            .iter()
            .filter(|e| e["event"] == "started")
            .count(),
        1,
        "{}",
        run.dump()
    );
    run.assert_line("reloader", "sent signal 1 to nginx");
    let _ = running.stop(LONG);
    assert_no_leftovers("config-reload");
}

#[test]
fn sample_logs_pod_ships_access_and_error_lines_apart() {
    require_root("sample_logs_pod_ships_access_and_error_lines_apart");
    let (pod, _port) = TestPod::example("sample-logs", "sample-logs.yaml");
    let running = pod.spawn();
    // Wait for every line asserted below: the tail ships them one by one.
    let run = running.wait_for("access and error lines", LONG, |r| {
        let lines = r.logs("log-tail");
        lines
            .iter()
            .any(|l| l.starts_with("access ") && l.contains("/empty/"))
            && lines
                .iter()
                .any(|l| l.starts_with("access ") && l.contains("\"GET / "))
            && lines.iter().any(|l| l.starts_with("error "))
    });
    let lines = run.logs("log-tail");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("access ") && l.contains("\"GET / HTTP/1.1\" 200")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("access ") && l.contains("\"GET /empty/ HTTP/1.1\" 403")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("error ")
            && l.contains("directory index of \"/var/www/html/empty/\" is forbidden")),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("access ") && l.contains("open()")),
        "error lines among access lines: {lines:#?}"
    );
    let _ = running.stop(LONG);
    assert_no_leftovers("sample-logs");
}

#[test]
fn log_shipper_survives_rotation_without_losing_or_repeating_a_line() {
    require_root("log_shipper_survives_rotation");
    let pod = TestPod::new(
        "rotation",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rotation}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: collector
    restartPolicy: Always
    command: [python3, -u, -c]
    args:
    - |
      import socketserver
      class H(socketserver.StreamRequestHandler):
          def handle(self):
              for line in self.rfile:
                  print("got " + line.decode().rstrip("\n"), flush=True)
      socketserver.ThreadingTCPServer(("127.0.0.1", 18700), H).serve_forever()
    startupProbe:
      tcpSocket: {port: 18700}
      periodSeconds: 1
  - name: shipper
    restartPolicy: Always
    image: SIDECARS/log-shipper.wasm
    env:
    - {name: FILES, value: "app=/logs/app.log"}
    - {name: SINK, value: "tcp://127.0.0.1:18700"}
    - {name: EXCLUDE, value: noise}
    - {name: INTERVAL_MS, value: "50"}
    volumeMounts: [{name: logs, mountPath: /logs}]
  containers:
  - name: writer
    command: [python3, -u, -c]
    args:
    - |
      import os, shutil, time
      path = "/logs/app.log"
      f = open(path, "a")
      for n in range(1, 901):
          f.write(f"line {n}\n")
          if n % 7 == 0:
              f.write(f"noise {n}\n")
          f.flush()
          if n == 300:  # rename + create
              f.close(); os.rename(path, path + ".1"); f = open(path, "a")
          if n == 600:  # copytruncate
              shutil.copyfile(path, path + ".1"); f.truncate(0); f.seek(0)
          time.sleep(0.002)
      f.close()
      print("wrote 900 lines", flush=True)
      time.sleep(1)
    volumeMounts: [{name: logs, mountPath: /logs}]
  volumes:
  - {name: logs, emptyDir: {}}
"#,
    );
    let run = pod.run(LONG);
    run.assert_line("writer", "wrote 900 lines");
    let got: Vec<String> = run
        .logs("collector")
        .iter()
        .filter_map(|l| l.strip_prefix("got ").map(str::to_string))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in &got {
        *counts.entry(l.clone()).or_default() += 1;
    }
    let missing: Vec<usize> = (1..=900)
        .filter(|n| !counts.contains_key(&format!("app line {n}")))
        .collect();
    let repeated: Vec<&String> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(l, _)| l)
        .collect();
    assert!(missing.is_empty(), "lost across rotation: {missing:?}");
    assert!(repeated.is_empty(), "shipped twice: {repeated:?}");
    assert!(
        !got.iter().any(|l| l.contains("noise")),
        "EXCLUDE=noise was not applied"
    );
    assert_eq!(got.len(), 900, "{}", run.dump());
    assert_no_leftovers("rotation");
}

/// Issue 29: a shipper that starts before its sink says what WASI said (`connection-refused`,
/// not wasi-libc's number for it, which reads as EFAULT), keeps trying from a few milliseconds
/// on, and delivers every line once the sink is up.
#[test]
fn a_shipper_started_before_its_sink_names_the_error_and_delivers_when_it_comes_up() {
    require_root("a_shipper_started_before_its_sink");
    // The collector listens only once the test has seen the shipper fail to reach it.
    let ctl = std::env::temp_dir().join("wpod-e2e-sink-later");
    let _ = std::fs::remove_dir_all(&ctl);
    std::fs::create_dir_all(&ctl).unwrap();
    let pod = TestPod::new(
        "sink-later",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sink-later}}
spec:
  terminationGracePeriodSeconds: 3
  initContainers:
  - name: lines
    command: [sh, -c, "seq 1 500 | sed 's/^/line /' > /logs/app.log"]
    volumeMounts: [{{name: logs, mountPath: /logs}}]
  containers:
  - name: shipper
    image: SIDECARS/log-shipper.wasm
    env:
    - {{name: FILES, value: "app=/logs/app.log"}}
    - {{name: SINK, value: "tcp://127.0.0.1:18702"}}
    volumeMounts: [{{name: logs, mountPath: /logs}}]
  - name: collector
    command: [python3, -u, -c]
    args:
    - |
      import os, socketserver, time
      while not os.path.exists("/ctl/go"):
          time.sleep(0.02)
      class H(socketserver.StreamRequestHandler):
          def handle(self):
              for line in self.rfile:
                  print("got " + line.decode().rstrip("\n"), flush=True)
      socketserver.ThreadingTCPServer(("127.0.0.1", 18702), H).serve_forever()
    volumeMounts: [{{name: ctl, mountPath: /ctl}}]
  volumes:
  - {{name: logs, emptyDir: {{}}}}
  - {{name: ctl, hostPath: {{path: {ctl}, type: Directory}}}}
"#,
            ctl = ctl.display()
        ),
    );
    let running = pod.spawn();
    running.wait_for("the shipper to fail to reach the sink", LONG, |r| {
        r.logs("shipper")
            .iter()
            .any(|l| l.starts_with("sink 127.0.0.1:18702: "))
    });
    std::fs::write(ctl.join("go"), "").unwrap();
    let run = running.wait_for("all 500 lines at the collector", LONG, |r| {
        r.has_line("collector", "got app line 500")
    });
    let got = run.lines_starting("collector", "got ");
    assert_eq!(got.len(), 500, "every line once: {}", run.dump());
    let refusals = run.lines_starting("shipper", "sink 127.0.0.1:18702: ");
    assert!(
        refusals
            .first()
            .is_some_and(|l| l.ends_with(": connection-refused")),
        "the shipper should name WASI's error: {}",
        run.dump()
    );
    assert!(
        !run.logs("shipper").iter().any(|l| l.contains("os error")),
        "{}",
        run.dump()
    );
    let _ = running.stop(LONG);
    assert_no_leftovers("sink-later");
    let _ = std::fs::remove_dir_all(&ctl);
}

#[test]
fn a_python_sidecar_gates_the_main_container_on_health() {
    require_root("a_python_sidecar_gates_the_main_container");
    let pod = TestPod::new(
        "python-health",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: python-health}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 3
  initContainers:
  - name: web
    restartPolicy: Always
    # Comes up slowly: a second before it serves.
    command: [sh, -c, "sleep 1; exec python3 -m http.server 18720 --bind 127.0.0.1"]
    workingDir: /tmp
  - name: health
    restartPolicy: Always
    image: SIDECARS/health-check-py.wasm
    env:
    - {name: TARGET, value: "127.0.0.1:18720"}
    - {name: INTERVAL_MS, value: "200"}
  containers:
  - name: main
    command: [sh, -c, "echo main runs"]
"#,
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.assert_line("health", "main container is unhealthy");
    run.assert_line("health", "main container is healthy");
    let time_of = |c: &str, kind: &str| {
        run.events(Some(c))
            .iter()
            .find(|e| e["event"] == kind)
            .and_then(|e| e["time"].as_str().map(str::to_string))
            .expect("event")
    };
    assert!(
        time_of("health", "ready") <= time_of("main", "started"),
        "{}",
        run.dump()
    );
    run.assert_line("health", "stopping with");
    assert_no_leftovers("python-health");
}

#[test]
fn tls_proxy_terminates_tls_in_front_of_a_localhost_only_service() {
    require_root("tls_proxy_terminates_tls");
    // A fresh Secret-like hostPath: the example's init container writes a self-signed pair.
    let _tls = HostDir::fresh("/tmp/wpod-tls");
    let (pod, port) = TestPod::example("tls-proxy", "tls-proxy.yaml");
    let url = format!("https://localhost:{port}/");
    let running = pod.spawn();
    running.wait_for("the legacy service", LONG, |r| {
        r.events(Some("legacy"))
            .iter()
            .any(|e| e["event"] == "ready")
    });
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--cacert", "/tmp/wpod-tls/tls.crt", &url])
        .output()
        .expect("curl");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && page.contains("Directory listing for /"),
        "curl --cacert: {page} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Clients that connect and say nothing hold up nobody: each connection is a task of its
    // own (the proxy gives each 60 s), so a request meanwhile is answered at once.
    let idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "-m", "3", "--cacert", "/tmp/wpod-tls/tls.crt", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Directory listing"),
        "a request while clients idle: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(idle);
    // openssl s_client verifies the chain and speaks HTTP through it.
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-CAfile",
            "/tmp/wpod-tls/tls.crt",
            "-quiet",
            "-verify_return_error",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let answer = {
        use std::io::{Read, Write};
        let mut stdin = s_client.stdin.take().expect("stdin");
        stdin
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        // Keep stdin open until the answer is in (s_client stops reading at EOF): the whole
        // page, or s_client done.
        let mut stdout = s_client.stdout.take().expect("stdout");
        let (done, answered) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
                if got.windows(7).any(|w| w == b"</html>") {
                    let _ = done.send(());
                }
            }
            got
        });
        let _ = answered.recv_timeout(LONG);
        drop(stdin);
        reader.join().expect("s_client's output")
    };
    let out = s_client.wait_with_output().expect("openssl output");
    let answer = String::from_utf8_lossy(&answer);
    let diag = String::from_utf8_lossy(&out.stderr);
    assert!(
        answer.starts_with("HTTP/1.0 200"),
        "s_client got {answer:?}\n{diag}"
    );
    assert!(diag.contains("verify return:1"), "{diag}");
    // The legacy service's plain HTTP is not reachable from outside the pod.
    assert!(!crate::pods::host_can_connect("127.0.0.1:8000"));
    let _ = running.stop(LONG);
    assert_no_leftovers("tls-proxy");
}

/// wpod's peak resident memory (VmHWM), in KiB.
fn peak_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn log_shipper_streams_a_backlog_its_sink_cannot_take_and_loses_nothing() {
    require_root("log_shipper_streams_a_backlog");
    // 120 MB of lines are written while nothing listens, the file renamed away and recreated
    // half-way with its last line unfinished. The shipper must keep its place in the file, not
    // the backlog in memory (wpod's peak stays far below the backlog), then, once the collector
    // is up, deliver every line once, in order, the unfinished one as a line of its own.
    let pod = TestPod::new(
        "sink-down",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sink-down}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: shipper
    restartPolicy: Always
    image: SIDECARS/log-shipper.wasm
    env:
    - {name: FILES, value: "app=/logs/app.log"}
    - {name: SINK, value: "tcp://127.0.0.1:18701"}
    - {name: INTERVAL_MS, value: "50"}
    volumeMounts: [{name: logs, mountPath: /logs}]
  containers:
  - name: main
    command: [python3, -u, -c]
    args:
    - |
      import os, socket, time
      path = "/logs/app.log"
      pad = "x" * 90
      half = 600000
      f = open(path, "a")
      def write(a, b):
          for s in range(a, b + 1, 10000):
              f.write("".join(f"line {n} {pad}\n" for n in range(s, min(s + 10000, b + 1))))
          f.flush()
      write(1, 100)
      time.sleep(0.5)  # the shipper has opened the file
      write(101, half)
      f.write("unfinished"); f.flush()
      f.close(); os.rename(path, path + ".1"); f = open(path, "a")
      write(half + 1, 2 * half)
      f.write("end\n"); f.flush()
      print("backlog written", flush=True)
      time.sleep(4)  # the test reads wpod's peak memory meanwhile
      srv = socket.create_server(("127.0.0.1", 18701))
      conn, _ = srv.accept()
      chunks, tail = [], b""
      while not tail.endswith(b"app end\n"):
          b = conn.recv(1 << 20)
          if not b:
              break
          chunks.append(b)
          tail = (tail + b)[-16:]
      got = b"".join(chunks).decode().splitlines()
      want = [f"app line {n} {pad}" for n in range(1, half + 1)] + ["app unfinished"]
      want += [f"app line {n} {pad}" for n in range(half + 1, 2 * half + 1)] + ["app end"]
      print("in order" if got == want else f"got {len(got)} lines of {len(want)}, {len(set(want) - set(got))} missing")
    volumeMounts: [{name: logs, mountPath: /logs}]
  volumes:
  - {name: logs, emptyDir: {}}
"#,
    );
    let running = pod.spawn();
    running.wait_for("the backlog", LONG, |r| {
        r.has_line("main", "backlog written")
    });
    std::thread::sleep(Duration::from_secs(2));
    let peak = peak_kib(running.pid());
    let run = running.wait(LONG);
    run.assert_line("main", "in order");
    assert!(
        peak > 0 && peak < 64 * 1024,
        "wpod peaked at {peak} KiB while the shipper held back a 120 MB backlog\n{}",
        run.dump()
    );
    assert_no_leftovers("sink-down");
}

/// The example with a ConfigMap, a Secret and a PersistentVolumeClaim in one file (issue 26,
/// item 13): nginx serves its ConfigMap's site, the Secret's file and the claim's page; `wpod
/// apply` of a changed ConfigMap rewrites the volume in place, the Wasm reloader sees it and
/// nginx reloads without a restart; the claim's data outlives the pod, and `wpod volume rm`
/// refuses it while the pod runs.
#[test]
fn apply_of_a_changed_config_map_reloads_nginx_and_the_claim_outlives_the_pod() {
    require_root("apply_of_a_changed_config_map_reloads_nginx_and_the_claim_outlives_the_pod");
    let (pod, port) = TestPod::example("configmap-reload", "configmap-reload.yaml");
    // A claim of this test's own, not the example's.
    let claim = "e2e-configmap-content";
    let yaml = std::fs::read_to_string(&pod.manifest)
        .unwrap()
        .replace("claimName: content", &format!("claimName: {claim}"))
        .replace("  name: content\nspec:", &format!("  name: {claim}\nspec:"));
    std::fs::write(&pod.manifest, &yaml).unwrap();
    let volume_rm = |name: &str| crate::wpod_output(&["volume", "rm", name]);
    let _ = volume_rm(claim);
    let running = pod.spawn();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let dump = || running.output().dump();
    assert_eq!(
        curl(&url("/version"), LONG).as_deref(),
        Some("version 1\n"),
        "{}",
        dump()
    );
    assert_eq!(
        curl(&url("/user"), LONG).as_deref(),
        Some("operator"),
        "{}",
        dump()
    );
    let page = curl(&url("/"), LONG).unwrap_or_default();
    assert!(
        page.starts_with("kept on the claim since"),
        "{page}\n{}",
        dump()
    );
    // The Secret's files live in memory: a tmpfs of the pod's own.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4)
                .is_some_and(|m| m.ends_with("/pods/configmap-reload/volumes/credentials"))
                && l.contains(" - tmpfs ")
        }),
        "the Secret's volume is not a tmpfs"
    );
    let out = volume_rm(claim);
    assert!(!out.status.success(), "a claim in use was removed");
    assert!(
        crate::text(&out.stderr).contains("in use by a running pod"),
        "{}",
        crate::text(&out.stderr)
    );

    std::fs::write(&pod.manifest, yaml.replace("version 1", "version 2")).unwrap();
    let out = crate::wpod_output(&["apply", pod.manifest.to_str().unwrap()]);
    let said = crate::text(&out.stdout);
    assert!(out.status.success(), "{said}{}", crate::text(&out.stderr));
    assert!(said.contains("updated the files of volume site"), "{said}");
    let start = Instant::now();
    let mut served = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        served = curl(&url("/version"), Duration::from_secs(2)).unwrap_or_default();
        if served == "version 2\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served, "version 2\n", "{}", dump());
    let run = running.output();
    assert_eq!(
        run.events(Some("nginx"))
            .iter()
            .filter(|e| e["event"] == "started")
            .count(),
        1,
        "nginx restarted\n{}",
        run.dump()
    );
    run.assert_line("reloader", "sent signal 1 to nginx");
    let _ = running.stop(LONG);
    assert_no_leftovers("configmap-reload");

    // The claim outlives the pod, listed; then removed.
    let root = std::env::var("WPOD_ROOT").unwrap_or_else(|_| "/var/lib/wpod".into());
    let claim_dir = std::path::Path::new(&root).join("volumes").join(claim);
    assert!(claim_dir.join("index.html").is_file());
    let out = crate::wpod_output(&["volume", "ls"]);
    let listed = crate::text(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(claim) && l.contains(" no ")),
        "{listed}"
    );
    let out = volume_rm(claim);
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert!(!claim_dir.exists());
}
