//! poller: checks an HTTP endpoint of the main container over the pod's localhost every
//! interval and appends one line per check to a file in a shared volume. It tells the pod it is
//! ready as soon as it runs (as a native sidecar it then lets the main container start), and
//! stops cleanly when its turn to stop comes.
//!
//! Configuration (env): `TARGET` (host:port, default 127.0.0.1:80), `URL_PATH` (default `/`),
//! `INTERVAL_MS` (default 1000), `OUTPUT` (file to append to, default /shared/poll.log).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wpod_sidecar::lifecycle;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// One `GET`: the status line's code, or why there is none.
fn check(target: &str, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(target).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: wpod-poller\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not HTTP: {line:?}"))
}

fn main() {
    let target = env("TARGET", "127.0.0.1:80");
    let path = env("URL_PATH", "/");
    let interval = Duration::from_millis(env("INTERVAL_MS", "1000").parse().unwrap_or(1000));
    let output = env("OUTPUT", "/shared/poll.log");
    println!("polling http://{target}{path} every {interval:?} into {output}");
    lifecycle::ready();
    for n in 1u64.. {
        let result = check(&target, &path);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let line = match &result {
            Ok(code) => format!("{now} check {n} {target}{path} -> {code}\n"),
            Err(e) => format!("{now} check {n} {target}{path} failed: {e}\n"),
        };
        match std::fs::OpenOptions::new().create(true).append(true).open(&output) {
            Ok(mut f) => {
                let _ = f.write_all(line.as_bytes());
            }
            Err(e) => eprintln!("cannot append to {output}: {e}"),
        }
        print!("{line}");
        // Sleep by waiting for pod events, so a stopping pod is noticed at once.
        if let Some(lifecycle::Event::Stopping(ms)) = lifecycle::next_event(interval.as_millis() as u64) {
            println!("pod stopping ({ms} ms left): {n} checks done");
            return;
        }
    }
}
