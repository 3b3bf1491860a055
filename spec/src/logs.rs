//! Container output: every line a container writes is printed with the container's name and
//! appended to its log file (CRI format: `TIMESTAMP STREAM P|F LINE`) under the pod's state
//! directory. Lines are read until the pipes close, so output of a process that exits at once
//! is never lost.
//!
//! Everything here is bounded, whatever a container writes: a line longer than
//! [`MAX_LINE_BYTES`] is split into chunks (CRI partial lines, tagged `P`, as containerd does);
//! the history kept for `main-process.logs` holds at most [`HISTORY_LINES`] lines and
//! [`HISTORY_BYTES`] bytes, shared (not copied) with every reader; output beyond the pod's rate
//! (`wpod.dev/log-rate-limit`) waits, which makes the writer wait (a full pipe for a process, a
//! pending write for a Wasm sidecar); log files rotate by size like the kubelet's
//! (`wpod.dev/log-max-size`, `wpod.dev/log-max-files`). Control characters are escaped where
//! output reaches a terminal, so a container cannot rewrite what wpod prints.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The longest line kept whole (containerd's `max_container_log_line_size`).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Recent lines kept per container for readers that start from the beginning...
pub const HISTORY_LINES: usize = 10_000;
/// ...and at most this many bytes of them.
pub const HISTORY_BYTES: usize = 1 << 20;
/// Lines a live reader may fall behind before it skips ahead.
const LIVE_LINES: usize = 256;
/// The first read of a container's stream, in bytes, and the most it grows to (a pipe's
/// default capacity).
const FIRST_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// One line (or, when `partial`, one chunk of a longer line) a container wrote. Shared by the
/// history and every reader.
#[derive(Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    pub timestamp_ns: u64,
    /// More of the same line follows (CRI `P`).
    pub partial: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// Its name in a CRI log record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// How `wpod run` prints what happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `[container] line` for output, human-readable events on stderr.
    Text,
    /// One JSON object per line on stdout, for output and events alike.
    Json,
    /// Nothing printed (log files and feeds only): for benchmarks.
    Silent,
}

/// Limits on a pod's output (from its annotations).
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// A log file is rotated once it is this large.
    pub max_file_bytes: u64,
    /// Files kept per container, the current one included.
    pub max_files: u64,
    /// Bytes per second a container may write; more waits.
    pub rate_bytes: u64,
}

impl From<&crate::spec::Annotations> for LogLimits {
    fn from(a: &crate::spec::Annotations) -> Self {
        LogLimits {
            max_file_bytes: a.log_max_bytes,
            max_files: a.log_max_files,
            rate_bytes: a.log_rate_bytes,
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`], looking at each byte once. A
/// longer line comes out as chunks, cut at a UTF-8 character boundary when there is one.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; calls `emit(line, partial)` for each complete line or full chunk.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    if self.pending.is_empty() {
                        emit(&window[..i], false);
                    } else {
                        self.pending.extend_from_slice(&window[..i]);
                        emit(&self.pending, false);
                        self.pending.clear();
                    }
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.pending.len() == MAX_LINE_BYTES {
                        let cut = utf8_cut(&self.pending);
                        emit(&self.pending[..cut], true);
                        self.pending.drain(..cut);
                    }
                }
            }
        }
    }

    /// The last line, if it had no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, false);
            self.pending.clear();
        }
    }
}

/// Where to cut a full chunk: before a character split at its end, else at the end.
fn utf8_cut(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
        _ => bytes.len(),
    }
}

/// A token bucket over bytes: the rate a container may write at, with a burst of one second.
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimit {
            rate: bytes_per_second as f64,
            tokens: bytes_per_second as f64,
            last: Instant::now(),
        }
    }

    /// Spends `n` bytes; how long the writer must wait before the next write, if at all.
    pub fn spend(&mut self, n: usize) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        self.tokens -= n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// A container's log files: `NAME.log` and its rotated predecessors `NAME.log.1` (the newest)
/// to `NAME.log.N`, in the CRI format (`TIMESTAMP STREAM P|F TEXT`, as the kubelet and
/// containerd write them). The one type that writes, rotates and reads them: `wpod run`
/// writes through it, `wpod logs` reads through it.
pub struct LogFiles {
    path: PathBuf,
    /// Open for appending while a pod writes; `None` for a reader.
    file: Option<File>,
    /// Bytes in the current file.
    written: u64,
}

/// One record of a log file, whole lines joined from their partial chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine {
    pub time: Option<SystemTime>,
    pub stream: Option<Stream>,
    pub text: String,
}

impl LogFiles {
    /// The files of the log at `path` (`NAME.log`), to read.
    pub fn at(path: PathBuf) -> Self {
        LogFiles {
            path,
            file: None,
            written: 0,
        }
    }

    /// Opens the log at `path` to append to it.
    fn open(path: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path);
        let written = file
            .as_ref()
            .ok()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if let Err(e) = &file {
            tracing::warn!(file = %path.display(), error = %e, "cannot open the container's log file");
        }
        LogFiles {
            path,
            file: file.ok(),
            written,
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    fn write(&mut self, time: &str, stream: Stream, partial: bool, text: &str, limits: &LogLimits) {
        let Some(f) = &mut self.file else {
            return;
        };
        let tag = if partial { "P" } else { "F" };
        let record = format!("{time} {} {tag} {text}\n", stream.as_str());
        if f.write_all(record.as_bytes()).is_ok() {
            self.written += record.len() as u64;
        }
        if self.written >= limits.max_file_bytes {
            self.rotate(limits.max_files);
        }
    }

    /// `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, ...; the oldest beyond `max_files`
    /// goes.
    fn rotate(&mut self, max_files: u64) {
        self.file = None;
        let numbered = |n: u64| rotated(&self.path, n);
        let _ = std::fs::remove_file(numbered(max_files.saturating_sub(1)));
        for n in (1..max_files.saturating_sub(1)).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if max_files > 1 {
            let _ = std::fs::rename(&self.path, numbered(1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        *self = LogFiles::open(self.path.clone());
    }

    /// The rotated files there are, oldest first (however many the pod kept: up to
    /// `wpod.dev/log-max-files`).
    pub fn rotated_files(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut numbered: Vec<u64> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                n.to_str()?.strip_prefix(&prefix)?.parse::<u64>().ok()
            })
            .collect();
        numbered.sort_unstable_by(|a, b| b.cmp(a));
        numbered
            .into_iter()
            .map(|n| rotated(&self.path, n))
            .collect()
    }

    /// Every line of the log, the rotated files first (only those written at or after
    /// `since`, if given), and the offset in the current file after the last whole record.
    pub fn read_all(&self, since: Option<SystemTime>) -> (Vec<CriLine>, u64) {
        let mut lines = Vec::new();
        // A line cut into chunks may span a rotation.
        let mut partial = String::new();
        for file in self.rotated_files() {
            read_records(&file, 0, &mut lines, since, &mut partial);
        }
        let offset = read_records(&self.path, 0, &mut lines, since, &mut partial);
        (lines, offset)
    }

    /// The lines of the current file from `offset` on (from its start if it was rotated
    /// meanwhile), and the offset after them.
    pub fn read_new(&self, offset: u64) -> (Vec<CriLine>, u64) {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let offset = if size < offset { 0 } else { offset };
        let mut lines = Vec::new();
        let offset = read_records(&self.path, offset, &mut lines, None, &mut String::new());
        (lines, offset)
    }
}

/// Appends the lines of `path`'s records from `offset` on to `out` (only those written at or
/// after `since`, if given); returns the offset after the last whole record read. `partial`
/// holds the chunks of a line not yet ended (`P` records), before and after.
fn read_records(
    path: &Path,
    offset: u64,
    out: &mut Vec<CriLine>,
    since: Option<SystemTime>,
    partial: &mut String,
) -> u64 {
    use std::io::{BufRead, Read, Seek};
    let Ok(mut f) = File::open(path) else {
        return offset;
    };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    // Only whole records: a line being written is read next time.
    let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in buf[..whole].lines().map_while(Result::ok) {
        let mut parts = line.splitn(4, ' ');
        let (time, stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        partial.push_str(text.unwrap_or_default());
        if tag == Some("P") {
            continue;
        }
        let time = time.and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let text = std::mem::take(partial);
        if since.is_some_and(|since| time.is_some_and(|t| t < since)) {
            continue;
        }
        let stream = match stream {
            Some("stdout") => Some(Stream::Stdout),
            Some("stderr") => Some(Stream::Stderr),
            _ => None,
        };
        out.push(CriLine { time, stream, text });
    }
    offset + whole as u64
}

/// The `n`th rotated file of a log.
fn rotated(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A container's recent lines, its live feed, and its log file.
struct Feed {
    history: VecDeque<Arc<Line>>,
    history_bytes: usize,
    /// Made when the first reader follows: a channel holds [`LIVE_LINES`] slots from the start
    /// (8 KiB), most of an idle sidecar's log state, and most containers are never followed.
    live: Option<broadcast::Sender<Arc<Line>>>,
    file: LogFiles,
}

impl Feed {
    fn new(file: LogFiles) -> Self {
        Feed {
            history: VecDeque::new(),
            history_bytes: 0,
            live: None,
            file,
        }
    }

    fn remember(&mut self, line: Arc<Line>) {
        self.history_bytes += line.text.len();
        self.history.push_back(line);
        while self.history.len() > HISTORY_LINES || self.history_bytes > HISTORY_BYTES {
            match self.history.pop_front() {
                Some(old) => self.history_bytes -= old.text.len(),
                None => break,
            }
        }
    }
}

/// Where container output goes.
pub struct Logs {
    dir: PathBuf,
    format: OutputFormat,
    limits: LogLimits,
    /// One writer at a time, so lines of different containers never interleave mid-line.
    out: Mutex<()>,
    feeds: Mutex<HashMap<String, Feed>>,
    /// The output as it is, on wpod's own stdout and stderr, with no files ([`Logs::stdio`]).
    plain: bool,
}

/// A line of container output in `wpod run --output json` (`"type": "log"`; read back as
/// `supervisor::api::Record::Log`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: String,
    pub container: String,
    pub stream: Stream,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// How a [`LogRecord`] is printed: tagged as `supervisor::api::Record` tags it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Output<'a> {
    Log(&'a LogRecord),
}

impl Logs {
    pub fn new(dir: PathBuf, format: OutputFormat, limits: LogLimits) -> Arc<Self> {
        Arc::new(Logs {
            dir,
            format,
            limits,
            out: Mutex::new(()),
            feeds: Mutex::new(HashMap::new()),
            plain: false,
        })
    }

    /// One container's output as it is, on wpod's own stdout and stderr (no `[name]` prefix,
    /// no files): for `wpod sidecar`, whose container runtime keeps the logs as it keeps any
    /// container's. The rate limit still holds.
    pub fn stdio(limits: LogLimits) -> Arc<Self> {
        Arc::new(Logs {
            dir: PathBuf::new(),
            format: OutputFormat::Text,
            limits,
            out: Mutex::new(()),
            feeds: Mutex::new(HashMap::new()),
            plain: true,
        })
    }

    pub fn file(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.log"))
    }

    /// A rate limit for one of a container's streams.
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.limits.rate_bytes)
    }

    /// Reads a container's stream until EOF; the task ends when the stream does.
    pub fn follow(
        self: &Arc<Self>,
        container: &str,
        stream: Stream,
        mut pipe: impl AsyncRead + Unpin + Send + 'static,
    ) -> JoinHandle<()> {
        let logs = self.clone();
        let container = container.to_string();
        tokio::spawn(async move {
            let mut splitter = LineSplitter::default();
            let mut rate = logs.rate_limit();
            // A quiet container's stream holds one page for its whole life; one that fills
            // the buffer doubles it, up to a pipe's capacity, so bulk output still takes one
            // read per pipeful. (64 KiB from the start cost 128 KiB a container, zeroed.)
            let mut buf = vec![0u8; FIRST_READ];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        splitter.push(&buf[..n], |line, partial| {
                            logs.record(&container, stream, line, partial)
                        });
                        if n == buf.len() && buf.len() < MAX_READ {
                            buf.resize(buf.len() * 2, 0);
                        }
                        // Reading no faster than the rate leaves the rest in the pipe, where
                        // it makes the container wait.
                        if let Some(wait) = rate.spend(n) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            splitter.finish(|line, partial| logs.record(&container, stream, line, partial));
        })
    }

    /// Lines of `container` already written (if `from_start`) and a receiver for the next ones,
    /// taken together so that no line is missed or seen twice. The lines are shared, not copied.
    pub fn subscribe(
        &self,
        container: &str,
        from_start: bool,
    ) -> (Vec<Arc<Line>>, broadcast::Receiver<Arc<Line>>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = self.feed(&mut feeds, container);
        let past = if from_start {
            feed.history.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let live = feed
            .live
            .get_or_insert_with(|| broadcast::channel(LIVE_LINES).0);
        (past, live.subscribe())
    }

    /// The container's feed, made (and its log file opened) on first use.
    fn feed<'a>(&self, feeds: &'a mut HashMap<String, Feed>, container: &str) -> &'a mut Feed {
        feeds
            .entry(container.to_string())
            .or_insert_with(|| match self.plain {
                // A reader's handle writes nothing.
                true => Feed::new(LogFiles::at(PathBuf::new())),
                false => Feed::new(LogFiles::open(self.file(container))),
            })
    }

    /// Records a message of wpod's about a container (e.g. a trap), split like output.
    pub fn line(&self, container: &str, stream: Stream, text: &str) {
        let mut splitter = LineSplitter::default();
        let mut emit = |line: &[u8], partial| self.record(container, stream, line, partial);
        splitter.push(text.as_bytes(), &mut emit);
        splitter.finish(&mut emit);
    }

    /// Records one line (or chunk) of a container's output: history, feed, log file, screen.
    pub fn record(&self, container: &str, stream: Stream, bytes: &[u8], partial: bool) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let time = SystemTime::now();
        let timestamp_ns = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let now = humantime::format_rfc3339_nanos(time).to_string();
        let line = Arc::new(Line {
            stream,
            text: text.to_string(),
            timestamp_ns,
            partial,
        });
        {
            let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
            let feed = self.feed(&mut feeds, container);
            feed.file.write(&now, stream, partial, text, &self.limits);
            feed.remember(line.clone());
            // The last reader gone, the channel goes too (a reader subscribes under this lock).
            if feed.live.as_ref().is_some_and(|l| l.send(line).is_err()) {
                feed.live = None;
            }
        }
        let _guard = self.out.lock();
        if self.plain {
            let end = if partial { "" } else { "\n" };
            let _ = match stream {
                Stream::Stdout => write!(std::io::stdout().lock(), "{text}{end}"),
                Stream::Stderr => write!(std::io::stderr().lock(), "{text}{end}"),
            };
            return;
        }
        match self.format {
            OutputFormat::Silent => {}
            OutputFormat::Json => {
                let record = LogRecord {
                    time: now,
                    container: container.to_string(),
                    stream,
                    line: text.to_string(),
                    partial,
                };
                if let Ok(json) = serde_json::to_string(&Output::Log(&record)) {
                    let _ = writeln!(std::io::stdout().lock(), "{json}");
                }
            }
            OutputFormat::Text => {
                let text = escape_controls(text);
                let more = if partial { " [...]" } else { "" };
                let _ = match stream {
                    Stream::Stdout => {
                        writeln!(std::io::stdout().lock(), "[{container}] {text}{more}")
                    }
                    Stream::Stderr => {
                        writeln!(std::io::stderr().lock(), "[{container}] {text}{more}")
                    }
                };
            }
        }
    }
}

/// `text` with every control character (C0, DEL, C1), bidirectional override, isolate or mark
/// (U+202A-202E, U+2066-2069, U+200E, U+200F, U+061C) and line or paragraph separator
/// (U+2028, U+2029) written as an escape (`\r`, `\x1b`, `\u{202e}`), tabs aside: what a
/// container, a registry or a publisher wrote cannot move the cursor, recolour the terminal,
/// reorder what is shown or disguise itself as one of wpod's own lines.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let harmful = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(
                c,
                '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{061c}'
                    | '\u{2028}'
                    | '\u{2029}'
            )
    };
    // The common case, printable ASCII, is decided on bytes; anything else char by char.
    let plain = text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
    if plain || !text.chars().any(harmful) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if harmful(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if harmful(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A sidecar's stdout or stderr: an async writer that splits what the guest writes into lines
/// (see [`Logs::record`]) and holds the guest back once it writes faster than the pod's rate.
pub struct LogWriter {
    logs: Arc<Logs>,
    container: String,
    stream: Stream,
    splitter: LineSplitter,
    rate: RateLimit,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LogWriter {
    pub fn new(logs: Arc<Logs>, container: &str, stream: Stream) -> Self {
        LogWriter {
            rate: logs.rate_limit(),
            logs,
            container: container.to_string(),
            stream,
            splitter: LineSplitter::default(),
            wait: None,
        }
    }

    fn flush_partial(&mut self) {
        let (logs, container, stream) = (&self.logs, &self.container, self.stream);
        self.splitter
            .finish(|line, partial| logs.record(container, stream, line, partial));
    }
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(wait) = &mut self.wait {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let this = &mut *self;
        let (logs, container, stream) = (&this.logs, &this.container, this.stream);
        this.splitter.push(buf, |line, partial| {
            logs.record(container, stream, line, partial)
        });
        if let Some(wait) = this.rate.spend(buf.len()) {
            this.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // A last line without a newline is still a line.
        self.flush_partial();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of a test's own, removed when the test ends, passed or failed.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("wpod-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a test directory");
            TestDir(dir)
        }
    }

    impl std::ops::Deref for TestDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn split(input: &[&[u8]]) -> Vec<(usize, bool)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in input {
            s.push(chunk, |l, p| out.push((l.len(), p)));
        }
        s.finish(|l, p| out.push((l.len(), p)));
        out
    }

    #[test]
    fn long_lines_are_split_into_bounded_chunks() {
        assert_eq!(split(&[b"ab\ncd", b"e\n"]), [(2, false), (3, false)]);
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        assert_eq!(
            split(&[&long, b"\n"]),
            [(MAX_LINE_BYTES, true), (MAX_LINE_BYTES, true), (10, false)]
        );
        // No newline at all: still bounded.
        let endless = vec![b'y'; MAX_LINE_BYTES * 3];
        let chunks = split(&[&endless]);
        assert!(chunks.iter().all(|(n, _)| *n <= MAX_LINE_BYTES));
        assert_eq!(chunks.iter().map(|(n, _)| n).sum::<usize>(), endless.len());
    }

    #[test]
    fn chunks_do_not_split_characters() {
        let mut text = vec![b'a'; MAX_LINE_BYTES - 1];
        text.extend("é".as_bytes()); // 2 bytes across the boundary
        text.push(b'\n');
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(&text, |l, p| {
            out.push((String::from_utf8(l.to_vec()).unwrap(), p))
        });
        assert_eq!(out[0].0.len(), MAX_LINE_BYTES - 1);
        assert_eq!(out[1].0, "é");
    }

    /// A reader that notes how much each read asks for.
    struct Asking {
        inner: std::io::Cursor<Vec<u8>>,
        asked: Arc<Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Asking {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.asked.lock().unwrap().push(buf.remaining());
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    /// A stream read in growing chunks (4 KiB first, each full read doubles it up to 64 KiB)
    /// gives the lines it carried, whole and in order.
    #[tokio::test]
    async fn a_followed_stream_gives_its_lines_whatever_the_reads() {
        let dir = TestDir::new("follow");
        let limits = LogLimits {
            max_file_bytes: 64 << 20,
            max_files: 1,
            rate_bytes: u64::MAX,
        };
        let logs = Logs::new(dir.to_path_buf(), OutputFormat::Silent, limits);
        // Lines of up to 7 KiB, 730 KiB in all (within the history kept).
        let lines: Vec<String> = (0..200)
            .map(|i| format!("{i}:{}", "x".repeat(i * 37 % 9000)))
            .collect();
        let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        assert!(text.len() > 512 << 10 && text.len() < HISTORY_BYTES);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let pipe = Asking {
            inner: std::io::Cursor::new(text.into_bytes()),
            asked: asked.clone(),
        };
        logs.follow("c", Stream::Stdout, pipe)
            .await
            .expect("followed");
        // 4 KiB asked first, doubling while reads fill it, never more than 64 KiB.
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked[..5], [4096, 8192, 16384, 32768, 65536], "{asked:?}");
        assert!(asked.iter().all(|n| *n <= 65536), "{asked:?}");
        let (seen, _) = logs.subscribe("c", true);
        let seen: Vec<&str> = seen.iter().map(|l| l.text.as_str()).collect();
        let lengths = |l: &[&str]| l.iter().map(|l| l.len()).collect::<Vec<_>>();
        let want: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(
            seen == want,
            "lengths {:?}, not {:?}",
            lengths(&seen),
            lengths(&want)
        );
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_controls("a\rb\x1b[2Jc\u{202e}d\u{85}"),
            "a\\rb\\x1b[2Jc\\u{202e}d\\x85"
        );
    }

    #[test]
    fn bidi_marks_and_separators_are_escaped() {
        assert_eq!(
            escape_controls("a\u{200e}b\u{200f}c\u{61c}d"),
            "a\\u{200e}b\\u{200f}c\\u{61c}d"
        );
        assert_eq!(
            escape_controls("one\u{2028}two\u{2029}three"),
            "one\\u{2028}two\\u{2029}three"
        );
        assert_eq!(
            escape_controls("\u{2066}x\u{2069}\u{202a}y\u{202c}"),
            "\\u{2066}x\\u{2069}\\u{202a}y\\u{202c}"
        );
        assert_eq!(escape_controls("a\nb\x7f"), "a\\nb\\x7f");
        // Other non-ASCII text is kept as it is, and borrowed.
        assert!(matches!(escape_controls("café ✓ 日本"), Cow::Borrowed(_)));
        // Zero-width joiner and no-break space are not directional: kept.
        assert_eq!(escape_controls("a\u{200d}b\u{a0}c"), "a\u{200d}b\u{a0}c");
    }

    #[test]
    fn rate_limit_asks_to_wait_past_the_burst() {
        let mut r = RateLimit::new(1000);
        assert_eq!(r.spend(1000), None);
        let wait = r.spend(500).unwrap();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
    }

    #[test]
    fn history_is_bounded_by_bytes_and_lines() {
        let dir = TestDir::new("logs");
        let mut feed = Feed::new(LogFiles::open(dir.join("c.log")));
        for _ in 0..200 {
            feed.remember(Arc::new(Line {
                stream: Stream::Stdout,
                text: "z".repeat(MAX_LINE_BYTES),
                timestamp_ns: 0,
                partial: false,
            }));
        }
        assert!(feed.history_bytes <= HISTORY_BYTES);
        for _ in 0..HISTORY_LINES * 2 {
            feed.remember(Arc::new(Line {
                stream: Stream::Stdout,
                text: String::new(),
                timestamp_ns: 0,
                partial: false,
            }));
        }
        assert_eq!(feed.history.len(), HISTORY_LINES);
    }

    #[test]
    fn a_live_feed_exists_only_while_someone_follows() {
        let dir = TestDir::new("live");
        let limits = LogLimits::from(&crate::spec::Annotations::default());
        let logs = Logs::new(dir.to_path_buf(), OutputFormat::Silent, limits);
        let live = |logs: &Logs| logs.feeds.lock().unwrap()["c"].live.is_some();
        logs.record("c", Stream::Stdout, b"before", false);
        assert!(!live(&logs), "a container nobody follows has no channel");
        let (past, mut rx) = logs.subscribe("c", true);
        assert_eq!(past.len(), 1);
        logs.record("c", Stream::Stdout, b"followed", false);
        assert_eq!(rx.try_recv().unwrap().text, "followed");
        drop(rx);
        logs.record("c", Stream::Stdout, b"after", false);
        assert!(!live(&logs), "the last reader gone, the channel goes");
        let (past, mut rx) = logs.subscribe("c", false);
        assert!(past.is_empty());
        logs.record("c", Stream::Stdout, b"again", false);
        assert_eq!(rx.try_recv().unwrap().text, "again");
    }

    #[test]
    fn log_files_rotate_by_size() {
        let dir = TestDir::new("rotate");
        let limits = LogLimits {
            max_file_bytes: 1000,
            max_files: 3,
            rate_bytes: u64::MAX,
        };
        let path = dir.join("c.log");
        let mut file = LogFiles::open(path.clone());
        for i in 0..100 {
            // 31 + 7 + 2 + 60 bytes a record, with its newline.
            file.write(
                "2026-12-05T10:00:00.000000000Z",
                Stream::Stdout,
                false,
                &format!("{i:0>59}"),
                &limits,
            );
        }
        assert!(path.exists() && rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only max_files files are kept");
        for p in [path.clone(), rotated(&path, 1)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 1000);
        }
        // Read back, oldest first, whatever number of files were kept.
        let reader = LogFiles::at(path.clone());
        assert_eq!(
            reader.rotated_files(),
            [rotated(&path, 2), rotated(&path, 1)]
        );
        let (lines, offset) = reader.read_all(None);
        let numbers: Vec<u64> = lines.iter().map(|l| l.text.parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers.last(), Some(&99));
        assert_eq!(offset, std::fs::metadata(&path).unwrap().len());
    }

    /// `wpod logs` once read `.1` to `.9` only, though a pod may keep up to 100 files.
    #[test]
    fn every_rotated_file_is_read_and_partial_lines_are_joined() {
        let dir = TestDir::new("rotate12");
        let limits = LogLimits {
            max_file_bytes: 160,
            max_files: 30,
            rate_bytes: u64::MAX,
        };
        let path = dir.join("c.log");
        let mut file = LogFiles::open(path.clone());
        let t = "2026-12-05T10:00:00.000000000Z";
        for i in 0..15u32 {
            // Chunks of one line may be written on either side of a rotation.
            file.write(t, Stream::Stderr, true, &format!("{i}-"), &limits);
            file.write(t, Stream::Stderr, false, &format!("{i:0>59}"), &limits);
        }
        let reader = LogFiles::at(path.clone());
        let rotated = reader.rotated_files();
        assert!(rotated.len() >= 9, "{rotated:?}");
        let ends_partial = |p: &PathBuf| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .last()
                .is_some_and(|l| l.contains(" stderr P "))
        };
        assert!(rotated.iter().any(ends_partial), "no line spans a rotation");
        let (lines, _) = reader.read_all(None);
        assert_eq!(lines.len(), 15);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.text, format!("{i}-{i:0>59}"));
            assert_eq!(l.stream, Some(Stream::Stderr));
        }
    }
}
