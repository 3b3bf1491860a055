//! Container output: every line a container writes is printed with the container's name and
//! appended to its log file (CRI format: `TIMESTAMP STREAM F LINE`) under the pod's state
//! directory. Lines are read until the pipes close, so output of a process that exits at once
//! is never lost.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Lines kept per container for subscribers that start from the beginning.
pub const HISTORY_LINES: usize = 10_000;

/// One line a container wrote.
#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    pub timestamp_ns: u64,
}

/// A container's recent lines and its live feed.
/// A container's recent lines, its live feed, and its log file (opened once).
struct Feed {
    history: VecDeque<Line>,
    live: broadcast::Sender<Line>,
    file: Option<std::fs::File>,
}

impl Feed {
    fn new(path: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Err(e) = &file {
            tracing::warn!(file = %path.display(), error = %e, "cannot open the container's log file");
        }
        Feed {
            history: VecDeque::new(),
            live: broadcast::channel(1024).0,
            file: file.ok(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
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

/// Where container output goes.
pub struct Logs {
    dir: PathBuf,
    format: OutputFormat,
    /// One writer at a time, so lines of different containers never interleave mid-line.
    out: Mutex<()>,
    feeds: Mutex<HashMap<String, Feed>>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    container: &'a str,
    stream: Stream,
    line: &'a str,
}

impl Logs {
    pub fn new(dir: PathBuf, format: OutputFormat) -> Arc<Self> {
        Arc::new(Logs {
            dir,
            format,
            out: Mutex::new(()),
            feeds: Mutex::new(HashMap::new()),
        })
    }

    pub fn file(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.log"))
    }

    /// Reads a container's stream until EOF; the task ends when the stream does.
    pub fn follow(
        self: &Arc<Self>,
        container: &str,
        stream: Stream,
        pipe: impl AsyncRead + Unpin + Send + 'static,
    ) -> JoinHandle<()> {
        let logs = self.clone();
        let container = container.to_string();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        logs.line(&container, stream, line.trim_end_matches(['\n', '\r']));
                    }
                }
            }
        })
    }

    /// Lines of `container` already written (if `from_start`) and a receiver for the next ones,
    /// taken together so that no line is missed or seen twice.
    pub fn subscribe(
        &self,
        container: &str,
        from_start: bool,
    ) -> (Vec<Line>, broadcast::Receiver<Line>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = self.feed(&mut feeds, container);
        let past = if from_start {
            feed.history.iter().cloned().collect()
        } else {
            Vec::new()
        };
        (past, feed.live.subscribe())
    }

    /// The container's feed, made (and its log file opened) on first use.
    fn feed<'a>(&self, feeds: &'a mut HashMap<String, Feed>, container: &str) -> &'a mut Feed {
        feeds
            .entry(container.to_string())
            .or_insert_with(|| Feed::new(self.file(container)))
    }

    /// Adds a line to the container's history, feed and log file (in CRI format).
    fn publish(&self, container: &str, line: Line, record: &str) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = self.feed(&mut feeds, container);
        if let Some(f) = &mut feed.file {
            let _ = writeln!(f, "{record}");
        }
        if feed.history.len() == HISTORY_LINES {
            feed.history.pop_front();
        }
        feed.history.push_back(line.clone());
        let _ = feed.live.send(line);
    }

    /// Records one line of a container's output.
    pub fn line(&self, container: &str, stream: Stream, line: &str) {
        let time = SystemTime::now();
        let timestamp_ns = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let now = humantime::format_rfc3339_nanos(time).to_string();
        let tag = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let record = format!("{now} {tag} F {line}");
        self.publish(
            container,
            Line {
                stream,
                text: line.to_string(),
                timestamp_ns,
            },
            &record,
        );
        let _guard = self.out.lock();
        match self.format {
            OutputFormat::Silent => {}
            OutputFormat::Json => {
                let record = JsonLine {
                    time: now,
                    kind: "log",
                    container,
                    stream,
                    line,
                };
                if let Ok(json) = serde_json::to_string(&record) {
                    let _ = writeln!(std::io::stdout().lock(), "{json}");
                }
            }
            OutputFormat::Text => match stream {
                Stream::Stdout => {
                    let _ = writeln!(std::io::stdout().lock(), "[{container}] {line}");
                }
                Stream::Stderr => {
                    let _ = writeln!(std::io::stderr().lock(), "[{container}] {line}");
                }
            },
        }
    }
}
