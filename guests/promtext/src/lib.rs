//! Shared by the exporter sidecars: Prometheus text exposition (format 0.0.4) and a minimal
//! HTTP/1.x server that answers `GET /metrics` on the port the sidecar declares, each
//! connection a task on wstd's reactor (many scrapers at once; a slow one holds up nobody).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use wstd::future::FutureExt as _;
use wstd::io::{AsyncRead as _, AsyncWrite as _};
use wstd::iter::AsyncIterator as _;

/// One metric family being written.
pub struct Exposition {
    text: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends a label value escaped as the text format requires.
fn push_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `{k="v",...}` (nothing for no labels).
fn push_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        push_escaped(out, v);
        out.push('"');
    }
    out.push('}');
}

/// Appends a sample value as the text format spells it (`NaN`, `+Inf`, `-Inf`, else decimal).
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Exposition {
    pub fn new() -> Self {
        Exposition { text: String::new() }
    }

    /// Starts a family: `# HELP` and `# TYPE` (gauge or counter).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        push_labels(&mut self.text, labels);
        self.text.push(' ');
        push_value(&mut self.text, value);
        self.text.push('\n');
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Metric families gathered in any order (a family's samples may come from several places) and
/// written sorted by name, each family once with its samples together, as the text format
/// requires. The first `add` of a name fixes its type and help.
#[derive(Default)]
pub struct Families {
    map: BTreeMap<Cow<'static, str>, Family>,
}

struct Family {
    kind: &'static str,
    help: Cow<'static, str>,
    samples: String,
}

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample of family `name`.
    pub fn add(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        kind: &'static str,
        help: impl Into<Cow<'static, str>>,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.add_suffixed(name, "", kind, help, labels, value)
    }

    /// One sample of family `name` whose sample name has `suffix` (`_sum`, `_count` of a
    /// summary; "" for the family's own name).
    pub fn add_suffixed(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        suffix: &str,
        kind: &'static str,
        help: impl Into<Cow<'static, str>>,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let name = name.into();
        let mut line = String::with_capacity(name.len() + suffix.len() + 24);
        line.push_str(&name);
        line.push_str(suffix);
        push_labels(&mut line, labels);
        line.push(' ');
        push_value(&mut line, value);
        line.push('\n');
        match self.map.get_mut(name.as_ref()) {
            Some(f) => f.samples.push_str(&line),
            None => {
                self.map.insert(name, Family { kind, help: help.into(), samples: line });
            }
        }
    }

    /// How many families there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let size: usize = self.map.iter().map(|(k, f)| 2 * k.len() + f.help.len() + f.samples.len() + 24).sum();
        let mut text = String::with_capacity(size);
        for (name, f) in self.map {
            let _ = writeln!(text, "# HELP {name} {}", f.help.replace('\\', "\\\\").replace('\n', "\\n"));
            let _ = writeln!(text, "# TYPE {name} {}", f.kind);
            text.push_str(&f.samples);
        }
        text
    }
}

/// Serves `GET /metrics` (and `/` with a short page) forever; `render` builds the body of each
/// scrape. Other paths get 404.
pub fn serve(listen: &str, render: impl Fn() -> String + 'static) -> std::io::Result<()> {
    let listen = listen.to_string();
    let render: Rc<dyn Fn() -> String> = Rc::new(render);
    // wstd's reactor: every connection is a task, so a slow or idle client (a scraper that
    // keeps its connection open, a port scanner) holds up nobody else.
    wstd::runtime::block_on(async move {
        let listener = wstd::net::TcpListener::bind(&listen).await?;
        println!("serving metrics on http://{listen}/metrics");
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            match conn {
                Ok(stream) => {
                    let render = render.clone();
                    wstd::runtime::spawn(async move {
                        if let Err(e) = answer(stream, &*render).await {
                            eprintln!("request failed: {e}");
                        }
                    })
                    .detach();
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
        Ok(())
    })
}

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer(mut stream: wstd::net::TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    let head = read_head(&mut stream)
        .timeout(wstd::time::Duration::from(REQUEST_TIMEOUT))
        .await??;
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, body) = match path.split('?').next().unwrap_or("/") {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        "/" => ("200 OK", "text/html", "<a href=\"/metrics\">metrics</a>\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let answer = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(answer.as_bytes()).await?;
    stream.flush().await
}

/// The request head, up to the blank line (bodies are not expected), at most 16 KiB.
async fn read_head(stream: &mut wstd::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}
