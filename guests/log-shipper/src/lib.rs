//! The log shipper's parts: files followed through rotation ([`Follower`]), line filters, and
//! sinks (stdout, TCP, HTTP on the pod's loopback). `log-shipper` ships files; `log-tail` adds
//! the main container's stdout/stderr through `main-process`.
//!
//! Configuration (env):
//! - `FILES`: `label=/path,label=/path` (paths inside the sidecar's volume mounts);
//! - `START_AT`: `beginning` (default: every line already in the files) or `end`;
//! - `INCLUDE` / `EXCLUDE`: comma-separated substrings a line must / must not contain;
//! - `SINK`: `stdout` (default), `tcp://127.0.0.1:PORT` (one line per line) or
//!   `http://127.0.0.1:PORT/PATH` (a POST per batch, one line per line);
//! - `INTERVAL_MS`: how often files are polled (default 250).
//!
//! Each shipped line is `LABEL LINE`. Rotation by rename+create: the old file is read to its
//! end before the new one is followed from its start (nothing lost, nothing twice).
//! Copytruncate: when a file is shorter than what was read, the rest is read from its copy
//! `PATH.1` (logrotate's name), then the file from its start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wasi::filesystem::types::{Descriptor, DescriptorFlags, MetadataHashValue, OpenFlags, PathFlags};

pub use wpod_sidecar::{lifecycle, main_process};

pub fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Line filters: every INCLUDE substring (if any) must match one, no EXCLUDE may.
pub struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

fn list(key: &str) -> Vec<String> {
    env(key, "").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

impl Filter {
    pub fn from_env() -> Self {
        Filter { include: list("INCLUDE"), exclude: list("EXCLUDE") }
    }

    pub fn keeps(&self, line: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|s| line.contains(s.as_str())))
            && !self.exclude.iter().any(|s| line.contains(s.as_str()))
    }
}

/// Where shipped lines go. Lines that could not be delivered are kept and retried.
pub enum Sink {
    Stdout,
    Tcp { addr: String, conn: Option<TcpStream>, pending: Vec<String> },
    Http { addr: String, path: String, pending: Vec<String> },
}

impl Sink {
    pub fn from_env() -> Result<Self, String> {
        let spec = env("SINK", "stdout");
        if spec == "stdout" {
            return Ok(Sink::Stdout);
        }
        if let Some(addr) = spec.strip_prefix("tcp://") {
            return Ok(Sink::Tcp { addr: addr.to_string(), conn: None, pending: Vec::new() });
        }
        if let Some(rest) = spec.strip_prefix("http://") {
            let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
            return Ok(Sink::Http { addr: addr.to_string(), path, pending: Vec::new() });
        }
        Err(format!("SINK={spec}: use stdout, tcp://HOST:PORT or http://HOST:PORT/PATH"))
    }

    pub fn push(&mut self, line: String) {
        match self {
            Sink::Stdout => println!("{line}"),
            Sink::Tcp { pending, .. } | Sink::Http { pending, .. } => pending.push(line),
        }
    }

    /// Delivers what is pending; keeps it on failure (a later flush retries).
    pub fn flush(&mut self) {
        match self {
            Sink::Stdout => {
                let _ = std::io::stdout().flush();
            }
            Sink::Tcp { addr, conn, pending } => {
                if pending.is_empty() {
                    return;
                }
                if conn.is_none() {
                    *conn = TcpStream::connect(addr.as_str()).map_err(|e| eprintln!("sink {addr}: {e}")).ok();
                }
                if let Some(c) = conn {
                    let body: String = pending.iter().map(|l| format!("{l}\n")).collect();
                    match c.write_all(body.as_bytes()) {
                        Ok(()) => pending.clear(),
                        Err(e) => {
                            eprintln!("sink {addr}: {e}");
                            *conn = None;
                        }
                    }
                }
            }
            Sink::Http { addr, path, pending } => {
                if pending.is_empty() {
                    return;
                }
                let body: String = pending.iter().map(|l| format!("{l}\n")).collect();
                match post(addr, path, &body) {
                    Ok(()) => pending.clear(),
                    Err(e) => eprintln!("sink http://{addr}{path}: {e}"),
                }
            }
        }
    }
}

fn post(addr: &str, path: &str, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[..n]);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        other => Err(format!("answered {other:?}")),
    }
}

/// A file followed through rotation.
pub struct Follower {
    pub label: String,
    path: String,
    dir: Descriptor,
    rel: String,
    file: Option<(Descriptor, MetadataHashValue)>,
    offset: u64,
    partial: Vec<u8>,
}

fn same(a: &MetadataHashValue, b: &MetadataHashValue) -> bool {
    a.lower == b.lower && a.upper == b.upper
}

impl Follower {
    /// `path` must be inside one of the sidecar's preopened volumes.
    pub fn new(label: &str, path: &str, from_start: bool) -> Result<Self, String> {
        let (dir, mount) = wasi::filesystem::preopens::get_directories()
            .into_iter()
            .filter(|(_, m)| path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
            .max_by_key(|(_, m)| m.len())
            .ok_or_else(|| format!("{path} is not inside a volume mount of this sidecar"))?;
        let rel = path[mount.trim_end_matches('/').len() + 1..].to_string();
        let mut f = Follower { label: label.to_string(), path: path.to_string(), dir, rel, file: None, offset: 0, partial: Vec::new() };
        f.open();
        if !from_start {
            if let Some((d, _)) = &f.file {
                f.offset = d.stat().map(|s| s.size).unwrap_or(0);
            }
        }
        Ok(f)
    }

    fn open(&mut self) {
        let opened = self.dir.open_at(PathFlags::SYMLINK_FOLLOW, &self.rel, OpenFlags::empty(), DescriptorFlags::READ);
        self.file = opened.ok().and_then(|d| d.metadata_hash().ok().map(|h| (d, h)));
        self.offset = 0;
        self.partial.clear();
    }

    /// Reads what is new; returns complete lines. Handles rotation.
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.file.is_none() {
            self.open();
        }
        self.read_to_end(&mut lines);
        let at_path = self.dir.metadata_hash_at(PathFlags::SYMLINK_FOLLOW, &self.rel).ok();
        let rotated = match (&self.file, &at_path) {
            (Some((_, h)), Some(p)) => !same(h, p),
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated {
            // Renamed away and recreated: the old file was read to its end just now; a last
            // line without its newline still counts.
            if !self.partial.is_empty() {
                lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
            }
            self.open();
            self.read_to_end(&mut lines);
        } else if let Some((d, _)) = &self.file {
            // Copied and truncated in place (logrotate's copytruncate): what was written since our
            // last read is only in the copy, `PATH.1`; read it there, then the file from its start.
            if d.stat().map(|s| s.size).unwrap_or(0) < self.offset {
                self.read_rotated_copy(&mut lines);
                self.offset = 0;
                self.partial.clear();
                self.read_to_end(&mut lines);
            }
        }
        lines
    }

    /// Reads `PATH.1` (the copy copytruncate made) from where the file was read up to.
    fn read_rotated_copy(&mut self, lines: &mut Vec<String>) {
        let copy = format!("{}.1", self.rel);
        let opened = self.dir.open_at(PathFlags::empty(), &copy, OpenFlags::empty(), DescriptorFlags::READ);
        let Ok(copy) = opened else {
            eprintln!("{}: truncated and no {}.1 to read the rest from; lines may be missing", self.path, self.path);
            return;
        };
        let Ok(hash) = copy.metadata_hash() else { return };
        let original = self.file.replace((copy, hash));
        self.read_to_end(lines);
        self.file = original;
    }

    fn read_to_end(&mut self, lines: &mut Vec<String>) {
        let Some((d, _)) = &self.file else { return };
        loop {
            match d.read(65536, self.offset) {
                Ok((bytes, eof)) => {
                    if bytes.is_empty() {
                        break;
                    }
                    self.offset += bytes.len() as u64;
                    self.partial.extend_from_slice(&bytes);
                    while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.partial.drain(..=pos).collect();
                        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string());
                    }
                    if eof {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("{}: read: {e:?}", self.path);
                    break;
                }
            }
        }
    }
}

/// `label=/path,label=/path` from `FILES`.
pub fn followers_from_env() -> Result<Vec<Follower>, String> {
    let from_start = env("START_AT", "beginning") != "end";
    list("FILES")
        .iter()
        .map(|spec| {
            let (label, path) = spec.split_once('=').ok_or_else(|| format!("FILES entry {spec}: write label=/path"))?;
            Follower::new(label, path, from_start)
        })
        .collect()
}

/// The shipping loop: poll the files (and `extra`, e.g. a container's output) every interval,
/// filter, ship; until the pod stops this sidecar (then a last round).
pub fn run(mut extra: impl FnMut() -> Vec<(String, String)>) {
    let mut followers = match followers_from_env() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut sink = match Sink::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let filter = Filter::from_env();
    let interval: u64 = env("INTERVAL_MS", "250").parse().unwrap_or(250);
    lifecycle::ready();
    loop {
        let stopping = matches!(lifecycle::next_event(interval), Some(lifecycle::Event::Stopping(_)));
        for f in &mut followers {
            for line in f.poll() {
                if filter.keeps(&line) {
                    sink.push(format!("{} {line}", f.label));
                }
            }
        }
        for (label, line) in extra() {
            if filter.keeps(&line) {
                sink.push(format!("{label} {line}"));
            }
        }
        sink.flush();
        if stopping {
            return;
        }
    }
}
