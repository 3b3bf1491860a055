//! The log shipper's parts: files followed through rotation ([`Follower`]), line filters
//! ([`Filter`]), and what lines are shipped to ([`Outbox`] over a [`Sink`]: stdout, TCP, HTTP on
//! the pod's loopback). `log-shipper` ships files; `log-tail` adds the main container's
//! stdout/stderr through `main-process`.
//!
//! Configuration (env):
//! - `FILES`: `label=/path,label=/path` (paths inside the sidecar's volume mounts);
//! - `START_AT`: `beginning` (default: every line already in the files) or `end`;
//! - `INCLUDE` / `EXCLUDE`: comma-separated substrings a line must / must not contain;
//! - `SINK`: `stdout` (default), `tcp://HOST:PORT` (one line per line),
//!   `tls://HOST:PORT` (the same over TLS, run by the host: `wpod:sidecar/tls`) or
//!   `http://HOST:PORT/PATH` (a POST per batch, one line per line). A HOST other than the pod's
//!   loopback must be allowed by the sidecar's `wpod.dev/allowed-outbound.<container>`;
//! - `TLS_CA`: for `tls://`, a PEM CA bundle to trust (a path in the sidecar's volumes) instead
//!   of the host's roots; `TLS_SERVER_NAME`: the name the server's certificate must carry
//!   (default: HOST);
//! - `INTERVAL_MS`: how often files are polled once caught up (default 250).
//!
//! Each shipped line is `LABEL LINE`. Rotation by rename+create: the old file is read to its
//! end before the new one is followed from its start (nothing lost, nothing twice).
//! Copytruncate: when a file is shorter than it was (or than what was read), the rest is read
//! from its copy `PATH.1` (logrotate's name), then the file from its start.
//!
//! Memory stays bounded whatever the backlog: files are read in chunks, lines are cut in place
//! and written, labelled, into one output buffer, and reading stops while that buffer holds a
//! batch the sink has not taken. A file is its own buffer: when the sink is slow or down, the
//! shipper simply stays behind in the file (it keeps the file open, so a rename loses nothing)
//! and catches up when the sink takes lines again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use memchr::memmem::Finder;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, MetadataHashValue, OpenFlags, PathFlags};

pub use wpod_sidecar::{io_error, lifecycle, main_process};

/// How much one file read asks for: large enough that the cost of a call into the host is
/// spread over ~1000 lines, small enough to stay in cache.
const CHUNK: u64 = 128 * 1024;
/// Shipped bytes held for the sink: files are read until the output holds this much, then it
/// is delivered in one write (or one POST). While the sink does not take it, files are not read.
const BATCH: usize = 256 * 1024;
/// Main containers' lines are not in a file we could come back to: while the sink is down they
/// are held up to this much (beyond it they wait in wpod's buffer, which drops the oldest).
const STREAM_HOLD: usize = 4 << 20;
/// A line with no newline within this many bytes is shipped in pieces of this size: without a
/// limit one endless line would have to be held whole.
const MAX_LINE: usize = 1 << 20;

pub fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn list(key: &str) -> Vec<String> {
    env(key, "").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Line filters: every INCLUDE substring (if any) must match one, no EXCLUDE may.
pub struct Filter {
    include: Vec<Finder<'static>>,
    exclude: Vec<Finder<'static>>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        // Searchers built once: each line is then one fast substring search per pattern.
        let finders = |l: &[String]| l.iter().map(|s| Finder::new(s.as_bytes()).into_owned()).collect();
        Filter { include: finders(include), exclude: finders(exclude) }
    }

    pub fn from_env() -> Self {
        Filter::new(&list("INCLUDE"), &list("EXCLUDE"))
    }

    pub fn keeps(&self, line: &str) -> bool {
        self.keeps_bytes(line.as_bytes())
    }

    fn keeps_bytes(&self, line: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|f| f.find(line).is_some()))
            && !self.exclude.iter().any(|f| f.find(line).is_some())
    }
}

/// Where shipped lines go.
pub enum Sink {
    Stdout,
    Tcp { addr: String, conn: Option<TcpStream> },
    Tls { addr: String, server_name: Option<String>, config: wpod_sidecar::tls::ClientConfig, conn: Option<wpod_sidecar::tls::TlsStream> },
    Http { addr: String, path: String },
}

impl Sink {
    pub fn from_env() -> Result<Self, String> {
        let spec = env("SINK", "stdout");
        if spec == "stdout" {
            return Ok(Sink::Stdout);
        }
        if let Some(addr) = spec.strip_prefix("tcp://") {
            return Ok(Sink::Tcp { addr: addr.to_string(), conn: None });
        }
        if let Some(addr) = spec.strip_prefix("tls://") {
            use wpod_sidecar::tls::Trust;
            let trust = match std::env::var("TLS_CA") {
                Ok(path) => Trust::Bundle(std::fs::read(&path).map_err(|e| format!("TLS_CA={path}: {e}"))?),
                Err(_) => Trust::System,
            };
            let config = wpod_sidecar::tls::client_config(trust).map_err(|e| format!("SINK={spec}: {e}"))?;
            let server_name = std::env::var("TLS_SERVER_NAME").ok();
            return Ok(Sink::Tls { addr: addr.to_string(), server_name, config, conn: None });
        }
        if let Some(rest) = spec.strip_prefix("http://") {
            let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
            return Ok(Sink::Http { addr: addr.to_string(), path });
        }
        Err(format!("SINK={spec}: use stdout, tcp://HOST:PORT, tls://HOST:PORT or http://HOST:PORT/PATH"))
    }

    /// Delivers `data` (whole lines); on failure the batch is retried later.
    fn deliver(&mut self, data: &[u8]) -> Result<(), Failure> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                if let Err(e) = out.write_all(data).and_then(|()| out.flush()) {
                    eprintln!("stdout: {e}");
                }
                Ok(())
            }
            Sink::Tcp { addr, conn } => {
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(TcpStream::connect(addr.as_str()).map_err(|e| Failure::io(format!("sink {addr}"), &e))?),
                };
                c.write_all(data).map_err(|e| {
                    // Part of the batch may be lost with the connection: all of it is sent
                    // again on the next one (lines may then arrive twice, none is missing).
                    *conn = None;
                    Failure::io(format!("sink {addr}"), &e)
                })
            }
            Sink::Tls { addr, server_name, config, conn } => {
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(
                        wpod_sidecar::tls::connect(addr, server_name.as_deref(), config, None)
                            .map_err(|e| Failure::new(format!("sink tls://{addr}"), e))?,
                    ),
                };
                c.write_all(data).and_then(|()| c.flush()).map_err(|e| {
                    *conn = None;
                    Failure::io(format!("sink tls://{addr}"), &e)
                })
            }
            Sink::Http { addr, path } => post(addr, path, data).map_err(|e| Failure::new(format!("sink http://{addr}{path}"), e)),
        }
    }
}

/// Why a delivery failed, as the shipper reports it.
struct Failure {
    text: String,
    /// Nothing listens at the sink's address: most often a collector still starting, which a
    /// try costs nothing to find (a refused connection is one round trip, answered at once).
    refused: bool,
}

impl Failure {
    /// `error` names WASI's error code (`io_error`, or inside the TLS sink's longer messages).
    fn new(what: String, error: String) -> Failure {
        Failure { refused: error.contains("connection-refused"), text: format!("{what}: {error}") }
    }

    fn io(what: String, e: &std::io::Error) -> Failure {
        Failure::new(what, io_error(e))
    }
}

fn post(addr: &str, path: &str, body: &[u8]) -> Result<(), String> {
    let e = |e: std::io::Error| io_error(&e);
    let mut s = TcpStream::connect(addr).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(e)?;
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(e)?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).map_err(e)?;
    let status = String::from_utf8_lossy(&head[..n]);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        other => Err(format!("answered {other:?}")),
    }
}

/// Filtered, labelled lines on their way to the sink: one buffer, reused, of at most about
/// [`BATCH`] bytes from files ([`STREAM_HOLD`] from main containers while the sink is down).
pub struct Outbox {
    filter: Filter,
    sink: Sink,
    pending: Vec<u8>,
    /// After a failed delivery the sink is tried again after this long (from [`MIN_BACKOFF`],
    /// doubling up to [`MAX_BACKOFF`], or [`MAX_REFUSED_BACKOFF`] while it refuses), not at
    /// every poll: a sink that is down costs a connection attempt now and then; one that is
    /// starting (a collector started after the shipper) is reached within milliseconds.
    backoff: Duration,
    retry_at: Option<std::time::Instant>,
    /// The failure last reported, when, and how many like it were not reported since.
    failing: Option<(String, std::time::Instant, u32)>,
    /// Since when the sink has refused every try (for [`REFUSED_FAST_FOR`]).
    refused_since: Option<std::time::Instant>,
}

/// The first wait after a failed delivery: a sink that is coming up is reached as soon as it is.
const MIN_BACKOFF: Duration = Duration::from_millis(2);
/// The longest wait between two delivery attempts to a failing sink.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait while the sink refuses connections (nothing listens yet), for the first
/// [`REFUSED_FAST_FOR`]: a collector that comes up after the shipper is reached within this
/// long, where doubling up to [`MAX_BACKOFF`] could leave it idle for a second or more after it
/// is up. A refused try is one round trip answered at once.
const MAX_REFUSED_BACKOFF: Duration = Duration::from_millis(20);
/// How long refusals are tried at [`MAX_REFUSED_BACKOFF`] at most: a collector starting takes
/// seconds, not minutes; one missing for good (or a wrong port) is then tried as any failing
/// sink, up to every [`MAX_BACKOFF`], rather than fifty times a second forever.
const REFUSED_FAST_FOR: Duration = Duration::from_secs(30);
/// A failure that repeats is reported at most this often, with how many tries it stands for.
const REPORT_EVERY: Duration = Duration::from_secs(2);

impl Outbox {
    pub fn new(filter: Filter, sink: Sink) -> Self {
        Outbox {
            filter,
            sink,
            pending: Vec::with_capacity(BATCH + 4096),
            backoff: Duration::ZERO,
            retry_at: None,
            failing: None,
            refused_since: None,
        }
    }

    /// Whether sources should add lines; false while a full batch waits for the sink.
    pub fn has_room(&self) -> bool {
        self.pending.len() < BATCH
    }

    /// Like [`has_room`](Self::has_room) for lines that cannot be left where they are (a main
    /// container's output): they are taken up to a larger bound.
    pub fn has_room_for_stream(&self) -> bool {
        self.pending.len() < STREAM_HOLD
    }

    /// Queues `LABEL LINE\n` if the filters keep `line`.
    pub fn ship(&mut self, label: &str, line: &str) {
        self.ship_text(label, line.as_bytes());
    }

    /// `ship` for a line known to be UTF-8.
    fn ship_text(&mut self, label: &str, line: &[u8]) {
        if self.filter.keeps_bytes(line) {
            self.pending.reserve(label.len() + line.len() + 2);
            self.pending.extend_from_slice(label.as_bytes());
            self.pending.push(b' ');
            self.pending.extend_from_slice(line);
            self.pending.push(b'\n');
        }
    }

    /// A line of a file, without its `\n`: trailing `\r`s go, invalid UTF-8 is replaced (the
    /// filters and the sink see text). `ascii`: the scan found only ASCII, so UTF-8 as it is.
    fn ship_file_line(&mut self, label: &str, raw: &[u8], ascii: bool) {
        let line = &raw[..raw.iter().rposition(|b| *b != b'\r').map_or(0, |i| i + 1)];
        if ascii {
            return self.ship_text(label, line);
        }
        // `from_utf8` checks a word at a time; `from_utf8_lossy` goes byte by byte, so it is
        // only for the lines that need it.
        match std::str::from_utf8(line) {
            Ok(_) => self.ship_text(label, line),
            Err(_) => self.ship(label, &String::from_utf8_lossy(line)),
        }
    }

    /// Delivers what is pending; what the sink did not take stays for a later flush. Returns
    /// whether everything was delivered.
    pub fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        if self.retry_at.is_some_and(|at| std::time::Instant::now() < at) {
            return false;
        }
        match self.sink.deliver(&self.pending) {
            Ok(()) => {
                self.pending.clear();
                self.backoff = Duration::ZERO;
                self.retry_at = None;
                self.refused_since = None;
                self.end_report("; delivering again");
            }
            Err(f) => {
                let now = std::time::Instant::now();
                let fast = match f.refused {
                    true => now.duration_since(*self.refused_since.get_or_insert(now)) < REFUSED_FAST_FOR,
                    false => {
                        self.refused_since = None;
                        false
                    }
                };
                let cap = if fast { MAX_REFUSED_BACKOFF } else { MAX_BACKOFF };
                self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, cap);
                self.retry_at = Some(now + self.backoff);
                self.report(f, now);
            }
        }
        self.pending.is_empty()
    }

    /// One line on stderr for a new failure, then at most one per [`REPORT_EVERY`] while it
    /// repeats (a refused sink is tried up to fifty times a second), with how many tries went
    /// unreported; a failure of another kind first closes the count of the last one.
    fn report(&mut self, f: Failure, now: std::time::Instant) {
        if let Some((text, at, unreported)) = &mut self.failing {
            if *text == f.text && now.duration_since(*at) < REPORT_EVERY {
                *unreported += 1;
                return;
            }
        }
        // A repeat past REPORT_EVERY is said by its count; anything else by a line of its own.
        let repeat = self.failing.as_ref().is_some_and(|(text, ..)| *text == f.text);
        if !(self.end_report("") && repeat) {
            eprintln!("{}", f.text);
        }
        self.failing = Some((f.text, now, 0));
    }

    /// Ends the count of the failure last reported: a line if tries went unreported since
    /// (`then` ends it); returns whether there was one.
    fn end_report(&mut self, then: &str) -> bool {
        match self.failing.take() {
            Some((text, _, n)) if n > 0 => {
                eprintln!("{text} (and {n} more tries since the last report){then}");
                true
            }
            _ => false,
        }
    }

    /// How long until a failed delivery is tried again, if one waits.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_at.map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }
}

/// Where the first `\n` of `hay` is, if any, and whether every byte before it is ASCII (then
/// the line is UTF-8 without another look). The shipper's inner loop: with wasm SIMD (which
/// wasmtime runs natively) it takes 16 bytes a step, where `memchr` built for plain wasm takes 4
/// and a UTF-8 check would read the line once more.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn line_end(hay: &[u8]) -> (Option<usize>, bool) {
    use std::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128, v128_load};
    let newline = u8x16_splat(b'\n');
    let mut high = 0u32; // the high bits seen so far: none means ASCII
    let mut i = 0;
    while i + 16 <= hay.len() {
        // SAFETY: the 16 bytes at `i` are inside `hay`; v128_load needs no alignment.
        let v = unsafe { v128_load(hay.as_ptr().add(i) as *const v128) };
        let newlines = u32::from(u8x16_bitmask(u8x16_eq(v, newline)));
        let highs = u32::from(u8x16_bitmask(v));
        if newlines != 0 {
            let at = newlines.trailing_zeros();
            return (Some(i + at as usize), high | (highs & ((1 << at) - 1)) == 0);
        }
        high |= highs;
        i += 16;
    }
    for (j, &b) in hay[i..].iter().enumerate() {
        if b == b'\n' {
            return (Some(i + j), high == 0);
        }
        high |= u32::from(b >> 7);
    }
    (None, high == 0)
}

#[cfg(not(target_arch = "wasm32"))]
fn line_end(hay: &[u8]) -> (Option<usize>, bool) {
    let end = memchr::memchr(b'\n', hay);
    (end, hay[..end.unwrap_or(hay.len())].is_ascii())
}

/// A file followed through rotation.
pub struct Follower {
    pub label: String,
    path: String,
    dir: Descriptor,
    rel: String,
    /// What is being read: the file at `path`, or after a copytruncate its copy `PATH.1`.
    file: Option<(Descriptor, MetadataHashValue)>,
    /// Where the next read of `file` starts.
    offset: u64,
    /// The file's size when last looked at. Smaller later means truncated, even when it has
    /// grown past `offset` again meanwhile (we may be far behind while the sink is down).
    seen_size: u64,
    /// While the copy is read: the truncated file, to be read from its start afterwards.
    after_copy: Option<(Descriptor, MetadataHashValue)>,
    /// Bytes read and not shipped yet are `buf[start..]`: lines the outbox had no room for,
    /// then a last line still waiting for its newline.
    buf: Vec<u8>,
    start: usize,
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
        let mut f = Follower {
            label: label.to_string(),
            path: path.to_string(),
            dir,
            rel,
            file: None,
            offset: 0,
            seen_size: 0,
            after_copy: None,
            buf: Vec::with_capacity(CHUNK as usize + 4096),
            start: 0,
        };
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
        self.seen_size = 0;
        self.clear_buf();
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Ships what is new while the outbox has room, following rotation. Returns whether it
    /// read or shipped anything (then there may be more: call again once the outbox is flushed).
    pub fn pump(&mut self, out: &mut Outbox) -> bool {
        if self.file.is_none() {
            self.open(); // not there yet, or gone at the last rotation
        }
        // Looked at on every call, not only at the end of the file: while we are behind, a
        // truncated file can grow past `offset` before we get there.
        if self.truncated() {
            self.read_copy_next();
        }
        let mut progressed = false;
        loop {
            progressed |= self.ship_lines(out);
            if !out.has_room() {
                return progressed;
            }
            match self.read_chunk() {
                Some(true) => progressed = true,
                Some(false) if self.at_end(out) => {}
                _ => return progressed,
            }
        }
    }

    /// Ships the complete lines in `buf` while the outbox has room; returns whether it did.
    fn ship_lines(&mut self, out: &mut Outbox) -> bool {
        let before = self.start;
        while out.has_room() {
            let rest = &self.buf[self.start..];
            let (len, used, ascii) = match line_end(rest) {
                (Some(nl), ascii) => (nl, nl + 1, ascii),
                (None, _) if rest.len() >= MAX_LINE => (MAX_LINE, MAX_LINE, false),
                (None, _) => break, // the last line waits for its newline
            };
            out.ship_file_line(&self.label, &rest[..len], ascii);
            self.start += used;
        }
        self.start != before
    }

    /// Appends the next chunk of the file to `buf`: `Some(true)` if bytes came, `Some(false)`
    /// at its end, `None` with no file or on an error (retried next round).
    fn read_chunk(&mut self) -> Option<bool> {
        // Only the unfinished last line is left before `start`'s move to 0: a short copy.
        self.buf.drain(..self.start);
        self.start = 0;
        let (d, _) = self.file.as_ref()?;
        match d.read(CHUNK, self.offset) {
            Ok((bytes, _)) if bytes.is_empty() => Some(false),
            Ok((bytes, _)) => {
                self.offset += bytes.len() as u64;
                self.buf.extend_from_slice(&bytes);
                Some(true)
            }
            Err(e) => {
                eprintln!("{}: read: {e:?}", self.path);
                None
            }
        }
    }

    /// At the end of what is being read: moves on if the file was rotated (then returns true:
    /// read on), else there is nothing more for now.
    fn at_end(&mut self, out: &mut Outbox) -> bool {
        if let Some(truncated) = self.after_copy.take() {
            // The copy is read to its end; the file was truncated, so its next line starts at 0.
            // An unfinished last line of the copy is dropped (it never got its newline).
            self.file = Some(truncated);
            self.restart_truncated();
            return true;
        }
        let Some((_, hash)) = &self.file else { return false };
        let at_path = self.dir.metadata_hash_at(PathFlags::SYMLINK_FOLLOW, &self.rel).ok();
        if at_path.is_some_and(|p| !same(hash, &p)) {
            // Renamed away and recreated: the old file was read to its end just now; a last
            // line without its newline still counts.
            let rest = &self.buf[self.start..];
            if !rest.is_empty() {
                out.ship_file_line(&self.label, rest, false);
            }
            self.open();
            return self.file.is_some();
        }
        if self.truncated() {
            self.read_copy_next();
            return true;
        }
        false
    }

    /// Whether the file being followed is smaller than when last looked at, or than what was
    /// read of it. Not asked of the copy being read (nothing truncates it).
    fn truncated(&mut self) -> bool {
        let Some((d, _)) = &self.file else { return false };
        if self.after_copy.is_some() {
            return false;
        }
        let Ok(size) = d.stat().map(|s| s.size) else { return false }; // unknown is not smaller
        let truncated = size < self.seen_size.max(self.offset);
        self.seen_size = size;
        truncated
    }

    /// Copied and truncated in place (logrotate's copytruncate): what was written since our
    /// last read is only in the copy, `PATH.1`; read it there from the same offset (the line in
    /// `buf` continues in it), then the file from its start.
    fn read_copy_next(&mut self) {
        let copy = format!("{}.1", self.rel);
        let opened = self.dir.open_at(PathFlags::empty(), &copy, OpenFlags::empty(), DescriptorFlags::READ);
        match opened.map(|c| c.metadata_hash().map(|h| (c, h))) {
            Ok(Ok(copy)) => self.after_copy = self.file.replace(copy),
            Ok(Err(_)) => self.restart_truncated(),
            Err(_) => {
                eprintln!("{}: truncated and no {}.1 to read the rest from; lines may be missing", self.path, self.path);
                self.restart_truncated();
            }
        }
    }

    fn restart_truncated(&mut self) {
        self.offset = 0;
        self.seen_size = 0;
        self.clear_buf();
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

fn is_stopping(e: Option<lifecycle::Event>) -> bool {
    matches!(e, Some(lifecycle::Event::Stopping(_)))
}

/// Ships until every source is caught up or the sink takes no more (the files keep the rest for
/// the next round). Each pass gives each file up to a batch, so a long backlog in one does not
/// hold up the others. Returns whether the pod said it is stopping meanwhile.
fn ship_round(followers: &mut [Follower], extra: &mut impl FnMut(&mut Outbox) -> bool, out: &mut Outbox) -> bool {
    let mut stopping = false;
    loop {
        let mut progressed = false;
        for f in followers.iter_mut() {
            progressed |= f.pump(out);
            if !out.has_room() {
                if !out.flush() {
                    return stopping;
                }
                // A full batch went out (the first after the sink came back, perhaps): there
                // is room again, so this is progress, not a reason to sleep a whole interval.
                progressed = true;
            }
        }
        progressed |= extra(out);
        if !out.flush() || !progressed {
            return stopping;
        }
        // Still catching up: note a stop now (the round goes on to the end of the files, as the
        // last round after a stop always did).
        stopping |= is_stopping(lifecycle::try_next_event());
    }
}

/// The shipping loop: ship what the files (and `extra`, e.g. a container's output, which adds
/// lines with [`Outbox::ship`] while [`Outbox::has_room_for_stream`] and returns whether it
/// added any) have, then again every interval; until the pod stops this sidecar (then a last
/// round).
pub fn run(mut extra: impl FnMut(&mut Outbox) -> bool) {
    let mut followers = match followers_from_env() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let sink = match Sink::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut out = Outbox::new(Filter::from_env(), sink);
    let interval: u64 = env("INTERVAL_MS", "250").parse().unwrap_or(250);
    lifecycle::ready();
    let mut stopping = false;
    loop {
        stopping |= ship_round(&mut followers, &mut extra, &mut out);
        if stopping {
            return;
        }
        // Files are polled every interval; a sink that failed is tried again when its back-off
        // ends, which may be sooner.
        // Rounded up: a wait rounded down to 0 ms would poll in a loop until the retry is due.
        let wait = out.retry_in().map_or(interval, |d| interval.min(d.as_micros().div_ceil(1000) as u64));
        stopping = is_stopping(lifecycle::next_event(wait));
    }
}
