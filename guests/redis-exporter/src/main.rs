//! redis-exporter: on each scrape of `GET /metrics` it connects to Redis on the pod's localhost,
//! runs `INFO`, and answers Prometheus text with the metric names of the well-known
//! `redis_exporter` (oliver006) for the common fields.
//!
//! Configuration (env): `REDIS_ADDR` (default 127.0.0.1:6379), `LISTEN` (default 0.0.0.0:9121;
//! the port must be in the sidecar's `ports`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use promtext::Exposition;

/// `INFO` as key/value pairs (sections merged).
fn info(addr: &str) -> Result<BTreeMap<String, String>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"*1\r\n$4\r\nINFO\r\n").map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    let mut header = String::new();
    reader.read_line(&mut header).map_err(|e| e.to_string())?;
    // A bulk string: `$LEN\r\n` then LEN bytes.
    let len: usize = header
        .trim()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected reply to INFO: {}", header.trim()))?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// (INFO field, metric name, type, help) as redis_exporter names them.
const FIELDS: &[(&str, &str, &str, &str)] = &[
    ("uptime_in_seconds", "redis_uptime_in_seconds", "gauge", "Seconds since the Redis server started."),
    ("connected_clients", "redis_connected_clients", "gauge", "Number of client connections."),
    ("blocked_clients", "redis_blocked_clients", "gauge", "Clients pending on a blocking call."),
    ("used_memory", "redis_memory_used_bytes", "gauge", "Bytes allocated by Redis."),
    ("used_memory_rss", "redis_memory_used_rss_bytes", "gauge", "Bytes of Redis as the OS sees them."),
    ("used_memory_peak", "redis_memory_used_peak_bytes", "gauge", "Peak bytes allocated by Redis."),
    ("maxmemory", "redis_memory_max_bytes", "gauge", "The maxmemory setting (0: none)."),
    ("total_connections_received", "redis_connections_received_total", "counter", "Connections accepted."),
    ("total_commands_processed", "redis_commands_processed_total", "counter", "Commands processed."),
    ("keyspace_hits", "redis_keyspace_hits_total", "counter", "Successful key lookups."),
    ("keyspace_misses", "redis_keyspace_misses_total", "counter", "Failed key lookups."),
    ("expired_keys", "redis_expired_keys_total", "counter", "Keys expired."),
    ("evicted_keys", "redis_evicted_keys_total", "counter", "Keys evicted for maxmemory."),
    ("total_net_input_bytes", "redis_net_input_bytes_total", "counter", "Bytes read from the network."),
    ("total_net_output_bytes", "redis_net_output_bytes_total", "counter", "Bytes written to the network."),
    ("connected_slaves", "redis_connected_slaves", "gauge", "Connected replicas."),
];

fn render(addr: &str) -> String {
    let start = Instant::now();
    let mut out = Exposition::new();
    let result = info(addr);
    out.single("redis_up", "gauge", "Whether the last scrape of Redis succeeded.", if result.is_ok() { 1.0 } else { 0.0 });
    match result {
        Ok(info) => {
            let version = info.get("redis_version").map(String::as_str).unwrap_or("");
            let mode = info.get("redis_mode").map(String::as_str).unwrap_or("");
            let role = info.get("role").map(String::as_str).unwrap_or("");
            out.family("redis_instance_info", "gauge", "Information about the Redis instance.")
                .sample("redis_instance_info", &[("redis_version", version), ("redis_mode", mode), ("role", role)], 1.0);
            for (field, name, kind, help) in FIELDS {
                if let Some(v) = info.get(*field).and_then(|v| v.parse::<f64>().ok()) {
                    out.single(name, kind, help, v);
                }
            }
            // Keyspace: `db0:keys=1,expires=0,avg_ttl=0`.
            let dbs: Vec<(&String, BTreeMap<&str, f64>)> = info
                .iter()
                .filter(|(k, _)| k.starts_with("db") && k[2..].chars().all(|c| c.is_ascii_digit()))
                .map(|(k, v)| (k, v.split(',').filter_map(|kv| kv.split_once('=')).filter_map(|(a, b)| Some((a, b.parse().ok()?))).collect()))
                .collect();
            if !dbs.is_empty() {
                out.family("redis_db_keys", "gauge", "Keys per database.");
                for (db, stats) in &dbs {
                    out.sample("redis_db_keys", &[("db", db)], stats.get("keys").copied().unwrap_or(0.0));
                }
                out.family("redis_db_keys_expiring", "gauge", "Keys with an expiry per database.");
                for (db, stats) in &dbs {
                    out.sample("redis_db_keys_expiring", &[("db", db)], stats.get("expires").copied().unwrap_or(0.0));
                }
            }
        }
        Err(e) => eprintln!("scrape failed: {e}"),
    }
    out.single("redis_exporter_scrape_duration_seconds", "gauge", "How long the scrape of Redis took.", start.elapsed().as_secs_f64());
    out.finish()
}

fn main() {
    let addr = std::env::var("REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:9121".into());
    if let Err(e) = promtext::serve(&listen, move || render(&addr)) {
        eprintln!("cannot serve on {listen}: {e}");
        std::process::exit(1);
    }
}
