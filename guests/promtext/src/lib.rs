//! Shared by the exporter sidecars: Prometheus text exposition (format 0.0.4) and a minimal
//! HTTP/1.x server that answers `GET /metrics` on the port the sidecar declares, each
//! connection a task on wstd's reactor (many scrapers at once; a slow one holds up nobody).

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
