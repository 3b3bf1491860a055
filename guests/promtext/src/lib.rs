//! Shared by the exporter sidecars: Prometheus text exposition (format 0.0.4) and a minimal
//! HTTP/1.x server that answers `GET /metrics` on the port the sidecar declares.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// One metric family being written.
pub struct Exposition {
    text: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

/// Escapes a label value as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.text, " {value}");
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

/// Serves `GET /metrics` (and `/` with a short page) forever; `render` builds the body of each
/// scrape. Other paths get 404.
pub fn serve(listen: &str, render: impl Fn() -> String) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("serving metrics on http://{listen}/metrics");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(stream, &render) {
                    eprintln!("request failed: {e}");
                }
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

fn answer(mut stream: TcpStream, render: &impl Fn() -> String) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Read the request head (up to the blank line); bodies are not expected.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, body) = match path.split('?').next().unwrap_or("/") {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        "/" => ("200 OK", "text/html", "<a href=\"/metrics\">metrics</a>\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    stream.flush()
}
