//! redis-exporter: on each scrape of `GET /metrics` it connects to Redis on the pod's localhost,
//! sends one pipeline (`INFO ALL`, a few `CONFIG GET`s, `SLOWLOG LEN`, `SLOWLOG GET 1`,
//! `LATENCY LATEST`) and answers Prometheus text with the metric families, names, types,
//! labels and help of the well-known `redis_exporter` (oliver006): most `INFO` fields through
//! its own mapping table (`fields.rs`), and the per-command, per-database, replication,
//! slowlog, latency and config families it builds by hand.
//!
//! Configuration (env): `REDIS_ADDR` (default 127.0.0.1:6379; a `redis://` prefix is
//! accepted), `REDIS_USER` and `REDIS_PASSWORD` (for `AUTH`), `LISTEN` (default 0.0.0.0:9121;
//! the port must be in the sidecar's `ports`).

mod fields;
mod resp;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promtext::Families;
use resp::Reply;

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";
const TIMEOUT: Duration = Duration::from_secs(5);

/// The `CONFIG GET` parameters read on each scrape (as redis_exporter reads them from
/// `CONFIG GET *`, which is far larger).
const CONFIG_KEYS: &[&str] = &["databases", "maxclients", "maxmemory", "io-threads", "repl-backlog-size", "client-output-buffer-limit"];

struct Config {
    addr: String,
    user: Option<String>,
    password: Option<String>,
}

/// One `INFO` field's metric: full name, type and help, built once at start.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

/// The field -> metric table (see `fields.rs`).
struct Table(HashMap<&'static str, Metric>);

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Table {
    fn new() -> Self {
        let mut map = HashMap::new();
        for (kind, list) in [(GAUGE, fields::GAUGES), (COUNTER, fields::COUNTERS)] {
            for (field, short) in list {
                // redis_exporter exports latest_fork_usec as seconds.
                let short = if *short == "latest_fork_usec" { "latest_fork_seconds" } else { short };
                map.insert(*field, Metric { name: leak(format!("redis_{short}")), kind, help: leak(format!("{short} metric")) });
            }
        }
        Table(map)
    }
}

/// Counters of the exporter itself, across scrapes.
#[derive(Default)]
struct State {
    scrapes: Cell<u64>,
    duration_sum: Cell<f64>,
}

/// What one pipeline brought back.
struct Replies {
    info: String,
    config: Vec<(String, String)>,
    slowlog_len: Option<i64>,
    slowlog_last: Option<Reply>,
    latency_latest: Option<Reply>,
    cluster_info: Option<String>,
}

fn connect(cfg: &Config) -> Result<TcpStream, String> {
    let addrs = cfg.addr.to_socket_addrs().map_err(|e| format!("resolve {}: {e}", cfg.addr))?;
    let mut last = format!("no address for {}", cfg.addr);
    for a in addrs {
        // Not `connect_timeout`: on wasip2 it reports a refused connection as a success.
        match TcpStream::connect(a) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("dial {a}: {e}"),
        }
    }
    Err(last)
}

fn err_text(r: &Reply) -> Option<&str> {
    match r {
        Reply::Error(e) => Some(e),
        _ => None,
    }
}

/// Sends the pipeline and reads its replies.
fn query(s: TcpStream, cfg: &Config) -> Result<Replies, String> {
    s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let mut req = Vec::with_capacity(512);
    let auth = cfg.password.is_some();
    if let Some(password) = &cfg.password {
        match &cfg.user {
            Some(user) => resp::encode(&mut req, &["AUTH", user, password]),
            None => resp::encode(&mut req, &["AUTH", password]),
        }
    }
    resp::encode(&mut req, &["INFO", "ALL"]);
    for key in CONFIG_KEYS {
        resp::encode(&mut req, &["CONFIG", "GET", key]);
    }
    resp::encode(&mut req, &["SLOWLOG", "LEN"]);
    resp::encode(&mut req, &["SLOWLOG", "GET", "1"]);
    resp::encode(&mut req, &["LATENCY", "LATEST"]);
    let mut writer = &s;
    writer.write_all(&req).map_err(|e| format!("write to Redis: {e}"))?;
    let mut r = BufReader::with_capacity(64 * 1024, &s);
    let mut next = || resp::read(&mut r).map_err(|e| format!("read from Redis: {e}"));
    if auth {
        let reply = next()?;
        if let Some(e) = err_text(&reply) {
            return Err(format!("AUTH: {e}"));
        }
    }
    let info = next()?;
    let mut config = Vec::new();
    for _ in CONFIG_KEYS {
        let reply = next()?;
        for pair in reply.items().chunks(2) {
            if let [k, v] = pair {
                if let (Some(k), Some(v)) = (k.text(), v.text()) {
                    config.push((k.into_owned(), v.into_owned()));
                }
            }
        }
    }
    let slowlog_len = next()?.int();
    let slowlog_last = Some(next()?).filter(|r| matches!(r, Reply::Array(Some(_))));
    let latency_latest = Some(next()?).filter(|r| matches!(r, Reply::Array(Some(_))));
    let mut extra = |args: &[&str]| -> Result<Reply, String> {
        let mut req = Vec::new();
        resp::encode(&mut req, args);
        writer.write_all(&req).map_err(|e| format!("write to Redis: {e}"))?;
        resp::read(&mut r).map_err(|e| format!("read from Redis: {e}"))
    };
    // Servers without `INFO ALL` (before 2.8) answer plain `INFO`.
    let info = match info {
        Reply::Error(_) => extra(&["INFO"])?,
        other => other,
    };
    let info = match info {
        Reply::Error(e) => return Err(format!("INFO: {e}")),
        other => other.text().map(Cow::into_owned).ok_or("INFO: not a string reply")?,
    };
    let cluster_info = if info.contains("cluster_enabled:1") { extra(&["CLUSTER", "INFO"])?.text().map(Cow::into_owned) } else { None };
    Ok(Replies { info, config, slowlog_len, slowlog_last, latency_latest, cluster_info })
}

/// A field's value as redis_exporter reads it: `ok`/`true` 1, `err`/`fail`/`false` 0, else a
/// number (or nothing).
fn value(v: &str) -> Option<f64> {
    match v {
        "ok" | "true" => Some(1.0),
        "err" | "fail" | "false" => Some(0.0),
        v => v.parse().ok(),
    }
}

/// `a=1,b=2` as pairs.
fn pairs(v: &str) -> impl Iterator<Item = (&str, &str)> {
    v.split(',').filter_map(|kv| kv.split_once('='))
}

fn pair_value(v: &str, key: &str) -> Option<f64> {
    pairs(v).find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok())
}

/// `master_host` / `master_1_host` -> `host`: what follows `master(_N)?_`.
fn after_master(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("master_")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some(if digits > 0 && rest[digits..].starts_with('_') { &rest[digits + 1..] } else { rest })
}

/// A field no table names but redis_exporter still exports (`cluster_*`), named as it names it.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0)
}

/// The generic path: a field of the table (or `cluster_*`) as a gauge or counter.
fn generic(m: &mut Families, table: &Table, key: &str, v: &str) {
    let Some(val) = value(v) else { return };
    if let Some(metric) = table.0.get(key) {
        let val = if key == "latest_fork_usec" { val / 1e6 } else { val };
        m.add(metric.name, metric.kind, metric.help, &[], val);
    } else if key.starts_with("cluster_") {
        let short = sanitize(key);
        let help = format!("{short} metric");
        m.add(format!("redis_{short}"), GAUGE, help, &[], val);
    }
}

/// The replication fields redis_exporter labels by master or replica; true if handled.
fn replication(m: &mut Families, key: &str, v: &str, master_host: &str, master_port: &str) -> bool {
    let master = [("master_host", master_host), ("master_port", master_port)];
    if let Some(rest) = after_master(key) {
        if rest.starts_with("link_status") {
            m.add("redis_master_link_up", GAUGE, "Master link status on Redis slave", &master, if v == "up" { 1.0 } else { 0.0 });
            return true;
        }
        let (name, help) = if rest.starts_with("last_io_seconds_ago") {
            ("redis_master_last_io_seconds_ago", "Master last io seconds ago")
        } else if rest.starts_with("sync_in_progress") {
            ("redis_master_sync_in_progress", "Master sync in progress")
        } else {
            return false;
        };
        m.add(name, GAUGE, help, &master, v.parse::<i64>().unwrap_or(0) as f64);
        return true;
    }
    if key.starts_with("slave_repl_offset") {
        m.add("redis_slave_repl_offset", GAUGE, "Slave replication offset", &master, v.parse::<i64>().unwrap_or(0) as f64);
        return true;
    }
    // `slave0:ip=10.0.0.1,port=6379,state=online,offset=1751844676,lag=0`
    if key.strip_prefix("slave").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())) {
        let get = |k: &str| pairs(v).find(|(a, _)| *a == k).map(|(_, b)| b);
        let Some(offset) = get("offset").and_then(|o| o.parse::<f64>().ok()) else { return false };
        let labels = [("slave_ip", get("ip").unwrap_or("")), ("slave_port", get("port").unwrap_or("")), ("slave_state", get("state").unwrap_or(""))];
        m.add("redis_connected_slave_offset_bytes", GAUGE, "Offset of connected slave", &labels, offset);
        if let Some(lag) = get("lag").and_then(|l| l.parse::<f64>().ok()) {
            m.add("redis_connected_slave_lag_seconds", GAUGE, "Lag of connected slave", &labels, lag);
        }
        return true;
    }
    false
}

/// `INFO ALL`, section by section, as redis_exporter's `extractInfoMetrics`.
fn extract_info(m: &mut Families, table: &Table, info: &str, db_count: usize) {
    let mut section = "";
    let mut kv: HashMap<&str, &str> = HashMap::new();
    let (mut master_host, mut master_port) = ("", "");
    // cmd -> (calls, usec) and cmd -> [(quantile, usec)], for the latency summaries.
    let mut calls: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut percentiles: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    let mut dbs: HashSet<&str> = HashSet::new();
    for line in info.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix("# ") {
            section = s;
            continue;
        }
        let Some((key, v)) = line.split_once(':') else { continue };
        kv.insert(key, v);
        match after_master(key) {
            Some(r) if r.starts_with("host") => master_host = v,
            Some(r) if r.starts_with("port") => master_port = v,
            _ => {}
        }
        match section {
            "Replication" if replication(m, key, v, master_host, master_port) => continue,
            "Server" => {
                if key == "uptime_in_seconds" {
                    if let Ok(up) = v.parse::<f64>() {
                        m.add("redis_start_time_seconds", GAUGE, "Start time of the Redis instance since unix epoch in seconds.", &[], now_unix() - up);
                    }
                } else if key == "hz" || key == "configured_hz" {
                    if let Ok(hz) = v.parse::<i64>() {
                        m.add(format!("redis_{key}"), GAUGE, format!("{key} metric"), &[], hz as f64);
                    }
                }
            }
            "Commandstats" => {
                // `cmdstat_get:calls=21,usec=175,usec_per_call=8.33,rejected_calls=0,failed_calls=0`
                if let Some(cmd) = key.strip_prefix("cmdstat_") {
                    if let (Some(n), Some(usec)) = (pair_value(v, "calls"), pair_value(v, "usec")) {
                        let l = [("cmd", cmd)];
                        m.add("redis_commands_total", COUNTER, "Total number of calls per command", &l, n);
                        m.add("redis_commands_duration_seconds_total", COUNTER, "Total amount of time in seconds spent per command", &l, usec / 1e6);
                        if let (Some(rej), Some(fail)) = (pair_value(v, "rejected_calls"), pair_value(v, "failed_calls")) {
                            m.add("redis_commands_rejected_calls_total", COUNTER, "Total number of errors within command execution per command", &l, rej);
                            m.add("redis_commands_failed_calls_total", COUNTER, "Total number of errors prior command execution per command", &l, fail);
                        }
                        calls.insert(cmd, (n, usec));
                    }
                }
                continue;
            }
            "Latencystats" => {
                // `latency_percentiles_usec_get:p50=0.001,p99=1.003,p99.9=4.015`
                if let Some(cmd) = key.strip_prefix("latency_percentiles_usec_") {
                    let qs: Option<Vec<(&str, f64)>> = pairs(v).map(|(p, x)| Some((p.strip_prefix('p')?, x.parse().ok()?))).collect();
                    if let Some(qs) = qs {
                        percentiles.insert(cmd, qs);
                    }
                }
                continue;
            }
            "Errorstats" => {
                // `errorstat_ERR:count=4`
                if let (Some(err), Some(n)) = (key.strip_prefix("errorstat_"), pair_value(v, "count")) {
                    m.add("redis_errors_total", COUNTER, "Total number of errors per error type", &[("err", err)], n);
                }
                continue;
            }
            // `db0:keys=1,expires=0,avg_ttl=0` (KeyDB adds `cached_keys`)
            "Keyspace" if key.starts_with("db") => {
                if let (Some(keys), Some(expires)) = (pair_value(v, "keys"), pair_value(v, "expires")) {
                    let l = [("db", key)];
                    m.add("redis_db_keys", GAUGE, "Total number of keys by DB", &l, keys);
                    m.add("redis_db_keys_expiring", GAUGE, "Total number of expiring keys by DB", &l, expires);
                    if let Some(c) = pair_value(v, "cached_keys") {
                        m.add("redis_db_keys_cached", GAUGE, "Total number of cached keys by DB", &l, c);
                    }
                    if let Some(ttl) = pair_value(v, "avg_ttl") {
                        m.add("redis_db_avg_ttl_seconds", GAUGE, "Avg TTL in seconds", &l, ttl / 1000.0);
                    }
                    dbs.insert(key);
                    continue;
                }
            }
            _ => {}
        }
        generic(m, table, key, v);
    }
    // Per-command latency: a summary of Redis's percentiles, with commandstats' calls and usec.
    for (cmd, qs) in &percentiles {
        let Some((n, usec)) = calls.get(cmd) else { continue };
        const NAME: &str = "redis_latency_percentiles_usec";
        const HELP: &str = "A summary of latency percentile distribution per command";
        for (q, x) in qs {
            m.add(NAME, "summary", HELP, &[("cmd", cmd), ("quantile", q)], *x);
        }
        m.add_suffixed(NAME, "_sum", "summary", HELP, &[("cmd", cmd)], *usec);
        m.add_suffixed(NAME, "_count", "summary", HELP, &[("cmd", cmd)], *n);
    }
    // Empty databases, as redis_exporter v1.45 (Debian's) shows them.
    for i in 0..db_count {
        let db = format!("db{i}");
        if !dbs.contains(db.as_str()) {
            m.add("redis_db_keys", GAUGE, "Total number of keys by DB", &[("db", &db)], 0.0);
            m.add("redis_db_keys_expiring", GAUGE, "Total number of expiring keys by DB", &[("db", &db)], 0.0);
        }
    }
    let get = |k: &str| kv.get(k).copied().unwrap_or("");
    // redis_version first: label order means nothing to Prometheus, and tests match on it.
    let mut labels = vec![
        ("redis_version", get("redis_version")),
        ("role", get("role")),
        ("redis_build_id", get("redis_build_id")),
        ("redis_mode", get("redis_mode")),
        ("os", get("os")),
        ("maxmemory_policy", get("maxmemory_policy")),
        ("tcp_port", get("tcp_port")),
        ("run_id", get("run_id")),
        ("process_id", get("process_id")),
        ("master_replid", get("master_replid")),
    ];
    for k in ["valkey_version", "valkey_release_stage"] {
        if let Some(v) = kv.get(k) {
            labels.push((k, v));
        }
    }
    m.add("redis_instance_info", GAUGE, "Information about the Redis instance", &labels, 1.0);
    if get("role") == "slave" {
        let l = [("master_host", get("master_host")), ("master_port", get("master_port")), ("read_only", get("slave_read_only"))];
        m.add("redis_slave_info", GAUGE, "Information about the Redis slave", &l, 1.0);
    }
}

/// `config_*` gauges; returns the number of databases.
fn extract_config(m: &mut Families, config: &[(String, String)]) -> Option<usize> {
    let mut dbs = None;
    for (k, v) in config {
        match k.as_str() {
            "databases" => dbs = v.parse().ok(),
            "maxclients" | "maxmemory" | "io-threads" | "repl-backlog-size" => {
                if let Ok(x) = v.parse::<f64>() {
                    let short = format!("config_{}", k.replace('-', "_"));
                    let help = format!("{short} metric");
                    m.add(format!("redis_{short}"), GAUGE, help, &[], x);
                }
            }
            "client-output-buffer-limit" => {
                // `normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60`
                let parts: Vec<&str> = v.split(' ').collect();
                for c in parts.chunks_exact(4) {
                    let class = c[0];
                    for (limit, x) in [("hard", c[1]), ("soft", c[2])] {
                        if let Ok(x) = x.parse::<f64>() {
                            m.add("redis_config_client_output_buffer_limit_bytes", GAUGE, "The configured buffer limits per class", &[("class", class), ("limit", limit)], x);
                        }
                    }
                    if let Ok(x) = c[3].parse::<f64>() {
                        m.add(
                            "redis_config_client_output_buffer_limit_overcome_seconds",
                            GAUGE,
                            "How long for buffer limits per class to be exceeded before replicas are dropped",
                            &[("class", class), ("limit", "soft")],
                            x,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    dbs
}

fn extract(m: &mut Families, table: &Table, r: &Replies) {
    let mut db_count = extract_config(m, &r.config).unwrap_or(0);
    if let Some(ci) = &r.cluster_info {
        for line in ci.lines() {
            if let Some((k, v)) = line.trim().split_once(':') {
                generic(m, table, k, v);
            }
        }
        db_count = 1;
    } else if db_count == 0 {
        db_count = 16;
    }
    extract_info(m, table, &r.info, db_count);
    if let Some(n) = r.slowlog_len {
        m.add("redis_slowlog_length", GAUGE, "Total slowlog", &[], n as f64);
    }
    if let Some(last) = &r.slowlog_last {
        // Entries: [id, unix time, duration in usec, args, ...].
        let entry = last.items().first().map(Reply::items).unwrap_or(&[]);
        let id = entry.first().and_then(Reply::int).unwrap_or(0);
        let usec = entry.get(2).and_then(Reply::int).unwrap_or(0);
        m.add("redis_slowlog_last_id", GAUGE, "Last id of slowlog", &[], id as f64);
        m.add("redis_last_slow_execution_duration_seconds", GAUGE, "The amount of time needed for last slow execution, in seconds", &[], usec as f64 / 1e6);
    }
    if let Some(latest) = &r.latency_latest {
        // Events: [name, unix time of the latest spike, its ms, the max ms].
        for ev in latest.items() {
            let ev = ev.items();
            let (Some(name), Some(last), Some(ms)) = (ev.first().and_then(Reply::text), ev.get(1).and_then(Reply::int), ev.get(2).and_then(Reply::int)) else { continue };
            let l = [("event_name", name.as_ref())];
            m.add("redis_latency_spike_last", GAUGE, "When the latency spike last occurred", &l, last as f64);
            m.add("redis_latency_spike_duration_seconds", GAUGE, "Length of the last latency spike in seconds", &l, ms as f64 / 1e3);
        }
    }
}

fn render(cfg: &Config, table: &Table, state: &State) -> String {
    let start = Instant::now();
    state.scrapes.set(state.scrapes.get() + 1);
    let mut m = Families::new();
    let conn = connect(cfg);
    m.add("redis_exporter_last_scrape_connect_time_seconds", GAUGE, "exporter_last_scrape_connect_time_seconds metric", &[], start.elapsed().as_secs_f64());
    let result = conn.and_then(|s| query(s, cfg));
    let up = result.is_ok();
    match result {
        Ok(r) => {
            extract(&mut m, table, &r);
            m.add("redis_exporter_last_scrape_error", GAUGE, "The last scrape error status.", &[("err", "")], 0.0);
        }
        Err(e) => {
            eprintln!("scrape failed: {e}");
            m.add("redis_exporter_last_scrape_error", GAUGE, "The last scrape error status.", &[("err", &e)], 1.0);
        }
    }
    m.add("redis_up", GAUGE, "Information about the Redis instance", &[], if up { 1.0 } else { 0.0 });
    let took = start.elapsed().as_secs_f64();
    state.duration_sum.set(state.duration_sum.get() + took);
    m.add("redis_exporter_last_scrape_duration_seconds", GAUGE, "exporter_last_scrape_duration_seconds metric", &[], took);
    const SUMMARY: &str = "redis_exporter_scrape_duration_seconds";
    m.add_suffixed(SUMMARY, "_sum", "summary", "Durations of scrapes by the exporter", &[], state.duration_sum.get());
    m.add_suffixed(SUMMARY, "_count", "summary", "Durations of scrapes by the exporter", &[], state.scrapes.get() as f64);
    m.add("redis_exporter_scrapes_total", COUNTER, "Current total redis scrapes.", &[], state.scrapes.get() as f64);
    m.finish()
}

fn main() {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let addr = env("REDIS_ADDR").unwrap_or_else(|| "127.0.0.1:6379".into());
    let addr = addr.strip_prefix("redis://").unwrap_or(&addr).trim_end_matches('/').to_string();
    let cfg = Config { addr, user: env("REDIS_USER"), password: env("REDIS_PASSWORD") };
    let listen = env("LISTEN").unwrap_or_else(|| "0.0.0.0:9121".into());
    let table = Table::new();
    let state = State::default();
    if let Err(e) = promtext::serve(&listen, move || render(&cfg, &table, &state)) {
        eprintln!("cannot serve on {listen}: {e}");
        std::process::exit(1);
    }
}
