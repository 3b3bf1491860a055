//! A registry that a test scripts: an HTTP/1.1 server on `127.0.0.1:<ephemeral port>`, one
//! thread per connection, that serves ordinary OCI content from memory (manifests by tag and
//! digest, blobs by digest, tag lists, a catalog) so that a real image or Wasm sidecar pulls
//! from it, and, on the paths a test names, misbehaves: a body that never ends, one that trickles,
//! one far larger than anything sane, a token challenge and a token service that records the
//! credentials it was sent, a tag that moves between two requests.
//!
//! Every request is recorded (method, target, headers) for the test's assertions. Dropping the
//! server stops it: its listener is closed and every thread joined (a connection thread notices
//! within about 100 ms, even in the middle of an endless body).
//!
//! The content helpers build what such a registry serves: tar streams written header by header
//! (so that a header may lie about its size), gzip and zstd (zstd frames are written by hand from
//! raw and RLE blocks: a gigabyte of zeros is a few tens of kilobytes, made instantly), container
//! images, and Wasm sidecars in wpod's artifact layout.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// wpod's Wasm artifact (oci/src/artifact.rs): this config, one `application/wasm` layer.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
/// The bearer token the token service hands out and the registry accepts.
pub const TOKEN: &str = "wpod-hostile-registry-token";

/// A connection the server speaks HTTP over (a `TcpStream`, or TLS around one).
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// Turns an accepted socket into the connection HTTP is spoken over (e.g. a TLS server session).
/// It runs on the connection's own thread; the socket has 100 ms read and write timeouts, which
/// the wrapper may change (a handshake wants longer ones) but should restore.
pub type Wrap = Box<dyn Fn(TcpStream) -> io::Result<Box<dyn Conn>> + Send + Sync>;

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

impl Request {
    /// The path without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers on one path instead of its content.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200, chunked, a body that never ends: `prefix`, then `repeat` over and over, as fast as
    /// the client reads.
    Endless {
        content_type: String,
        prefix: Vec<u8>,
        repeat: Vec<u8>,
    },
    /// 200 with `body`'s true Content-Length, written one byte every `every`.
    Slow {
        content_type: String,
        body: Vec<u8>,
        every: Duration,
    },
    /// 200 with a true Content-Length of `len`: `prefix`, then `fill` up to `len` bytes.
    Oversized {
        content_type: String,
        prefix: Vec<u8>,
        len: u64,
        fill: u8,
    },
    /// Any fixed answer (Content-Length added).
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// 401 with `WWW-Authenticate: Bearer realm="<realm>",service="x"`.
    Challenge { realm: String },
    /// A token service: answers anyone with [`TOKEN`] (the request, with its Authorization
    /// header, is recorded like every other).
    Token,
}

#[derive(Default)]
struct Content {
    blobs: HashMap<String, Vec<u8>>,
    /// By digest: media type and bytes.
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// (repository, tag) -> the digests it resolves to, in turn; the last one stays.
    tags: HashMap<(String, String), VecDeque<String>>,
    /// What `/v2/_catalog` lists (else every repository with a tag).
    catalog: Option<Vec<String>>,
    /// Exact paths (no query) answered by a behaviour, before anything else.
    routes: HashMap<String, Behaviour>,
    /// Every `/v2/` request without `Authorization: Bearer TOKEN` is challenged with this realm.
    realm: Option<String>,
}

struct Shared {
    content: Mutex<Content>,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
    wrap: Option<Wrap>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server. Stopped (listener closed, threads joined) when dropped.
pub struct HostileRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HostileRegistry {
    /// A plain-HTTP registry on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// A registry whose connections `wrap` makes (e.g. TLS).
    pub fn start_with(wrap: Wrap) -> Self {
        Self::start_inner(Some(wrap))
    }

    fn start_inner(wrap: Option<Wrap>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            content: Mutex::new(Content::default()),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            wrap,
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("hostile-registry-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the acceptor");
        HostileRegistry {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>`, as registries.conf and image names spell it.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    // ---- content ----

    /// Stores a blob; its digest.
    pub fn put_blob(&self, bytes: impl Into<Vec<u8>>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        lock(&self.shared.content)
            .blobs
            .insert(digest.clone(), bytes);
        digest
    }

    /// Stores a manifest (served by digest from any repository); its digest.
    pub fn put_manifest(&self, media_type: &str, bytes: impl Into<Vec<u8>>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        lock(&self.shared.content)
            .manifests
            .insert(digest.clone(), (media_type.to_string(), bytes));
        digest
    }

    /// Points `repo:tag` at the manifest `digest` from now on.
    pub fn tag(&self, repo: &str, tag: &str, digest: &str) {
        self.tag_sequence(repo, tag, &[digest.to_string()]);
    }

    /// `repo:tag` resolves to `digests[0]` for the first GET of it, `digests[1]` for the second,
    /// ..., and to the last one from then on (a tag repointed between two requests). HEADs see
    /// the current one without moving it.
    pub fn tag_sequence(&self, repo: &str, tag: &str, digests: &[String]) {
        assert!(!digests.is_empty(), "a tag needs a manifest");
        lock(&self.shared.content).tags.insert(
            (repo.to_string(), tag.to_string()),
            digests.iter().cloned().collect(),
        );
    }

    /// Stores `image` (its blobs and manifest) and tags it `repo:tag`; the manifest's digest.
    pub fn push(&self, repo: &str, tag: &str, image: &Image) -> String {
        for b in &image.blobs {
            self.put_blob(b.clone());
        }
        let digest = self.put_manifest(&image.media_type, image.manifest.clone());
        assert_eq!(digest, image.digest);
        self.tag(repo, tag, &digest);
        digest
    }

    /// What `/v2/_catalog` lists (by default: every repository with a tag).
    pub fn set_catalog(&self, repos: &[&str]) {
        lock(&self.shared.content).catalog = Some(repos.iter().map(|r| r.to_string()).collect());
    }

    // ---- behaviours ----

    /// Answers `path` (exact, without query) with `behaviour`, whatever content there is.
    pub fn route(&self, path: &str, behaviour: Behaviour) {
        lock(&self.shared.content)
            .routes
            .insert(path.to_string(), behaviour);
    }

    /// `repo:reference`'s manifest never ends (an OCI manifest's opening, then layers forever).
    pub fn endless_manifest(&self, repo: &str, reference: &str) {
        let layer = format!(
            "{{\"mediaType\":\"{LAYER_GZIP}\",\"digest\":\"sha256:{}\",\"size\":1}},",
            "0".repeat(64)
        );
        self.route(
            &format!("/v2/{repo}/manifests/{reference}"),
            Behaviour::Endless {
                content_type: OCI_MANIFEST.into(),
                prefix: format!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"layers\":["
                )
                .into_bytes(),
                repeat: layer.into_bytes(),
            },
        );
    }

    /// `repo`'s tag list never ends.
    pub fn endless_tags(&self, repo: &str) {
        self.route(
            &format!("/v2/{repo}/tags/list"),
            Behaviour::Endless {
                content_type: "application/json".into(),
                prefix: format!("{{\"name\":\"{repo}\",\"tags\":[").into_bytes(),
                repeat: b"\"1.0.0\",".to_vec(),
            },
        );
    }

    /// The catalog never ends.
    pub fn endless_catalog(&self) {
        self.route(
            "/v2/_catalog",
            Behaviour::Endless {
                content_type: "application/json".into(),
                prefix: b"{\"repositories\":[".to_vec(),
                repeat: b"\"wpod-test/a-repository-among-infinitely-many\",".to_vec(),
            },
        );
    }

    /// `path` is answered with `body`, one byte every `every`.
    pub fn slow(&self, path: &str, content_type: &str, body: Vec<u8>, every: Duration) {
        self.route(
            path,
            Behaviour::Slow {
                content_type: content_type.into(),
                body,
                every,
            },
        );
    }

    /// `path` is answered with `len` bytes (`prefix`, then spaces), at full speed.
    pub fn oversized(&self, path: &str, content_type: &str, prefix: &[u8], len: u64) {
        self.route(
            path,
            Behaviour::Oversized {
                content_type: content_type.into(),
                prefix: prefix.to_vec(),
                len,
                fill: b' ',
            },
        );
    }

    /// From now on every `/v2/` request without the bearer [`TOKEN`] is answered 401 with a
    /// Bearer challenge naming `realm` (`None`: this server's own `/token`, which is then served).
    pub fn require_token(&self, realm: Option<&str>) {
        let realm = match realm {
            Some(r) => r.to_string(),
            None => {
                self.serve_token();
                format!("{}/token", self.base_url())
            }
        };
        lock(&self.shared.content).realm = Some(realm);
    }

    /// Serves a token service at `/token` (see [`Behaviour::Token`]).
    pub fn serve_token(&self) {
        self.route("/token", Behaviour::Token);
    }

    /// `http://127.0.0.1:<port>` (or `https://` for a wrapped server: the caller knows which).
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.wrap.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    // ---- what happened ----

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path().starts_with(prefix))
            .collect()
    }

    /// Waits (at most `limit`) for a request matching `pred`.
    pub fn wait_for_request(
        &self,
        limit: Duration,
        pred: impl Fn(&Request) -> bool,
    ) -> Option<Request> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The requests, one line each, for assertion messages.
    pub fn log(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        match listener.accept() {
            Ok((tcp, _)) => {
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("hostile-registry-conn".into())
                    .spawn(move || serve(s, tcp));
                if let Ok(t) = spawned {
                    connections.push(t);
                }
                connections.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    drop(listener);
    for t in connections {
        let _ = t.join();
    }
}

fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let tick = Some(Duration::from_millis(100));
    if tcp.set_nonblocking(false).is_err()
        || tcp.set_read_timeout(tick).is_err()
        || tcp.set_write_timeout(tick).is_err()
    {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let mut conn: Box<dyn Conn> = match &shared.wrap {
        Some(wrap) => match wrap(tcp) {
            Ok(c) => c,
            Err(_) => return,
        },
        None => Box::new(tcp),
    };
    let mut pending = Vec::new();
    while let Some(req) = read_request(&shared, &mut *conn, &mut pending) {
        lock(&shared.requests).push(req.clone());
        match respond(&shared, &mut *conn, &req) {
            Ok(true) if !shared.stopping() => {}
            _ => return,
        }
    }
}

fn timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads one request (its body, if any, is read and dropped). `None` at the end of the
/// connection, on garbage, or when the server stops.
fn read_request(shared: &Shared, conn: &mut dyn Conn, pending: &mut Vec<u8>) -> Option<Request> {
    const MAX_HEAD: usize = 64 << 10;
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if pending.len() > MAX_HEAD || shared.stopping() {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if timeout(&e) => continue,
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let req = Request {
        method,
        target,
        headers,
        at: Instant::now(),
    };
    // A body (a push, which this registry does not take) is read and dropped.
    let mut body: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let from_pending = (body as usize).min(pending.len());
    pending.drain(..from_pending);
    body -= from_pending as u64;
    while body > 0 {
        if shared.stopping() {
            return None;
        }
        let want = buf.len().min(usize::try_from(body).unwrap_or(usize::MAX));
        match conn.read(&mut buf[..want]) {
            Ok(0) => return None,
            Ok(n) => body -= n as u64,
            Err(e) if timeout(&e) => continue,
            Err(_) => return None,
        }
    }
    Some(req)
}

/// Writes all of `data`, riding out the socket's short timeouts until the server stops.
fn send(shared: &Shared, conn: &mut dyn Conn, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match conn.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if timeout(&e) && !shared.stopping() => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        match conn.flush() {
            Ok(()) => return Ok(()),
            Err(e) if timeout(&e) && !shared.stopping() => {}
            Err(e) => return Err(e),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn head_of(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    out.push_str("Docker-Distribution-API-Version: registry/2.0\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete answer with a Content-Length; the connection stays open.
fn answer(
    shared: &Shared,
    conn: &mut dyn Conn,
    req: &Request,
    status: u16,
    mut headers: Vec<(String, String)>,
    body: &[u8],
) -> io::Result<bool> {
    headers.push(("Content-Length".into(), body.len().to_string()));
    let mut out = head_of(status, &headers);
    if req.method != "HEAD" {
        out.extend_from_slice(body);
    }
    send(shared, conn, &out)?;
    Ok(true)
}

fn error_json(code: &str, message: &str) -> Vec<u8> {
    format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"{message}\"}}]}}").into_bytes()
}

fn json_type() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

/// Answers one request; whether the connection may carry another.
fn respond(shared: &Shared, conn: &mut dyn Conn, req: &Request) -> io::Result<bool> {
    let path = req.path();
    let (route, realm) = {
        let c = lock(&shared.content);
        (c.routes.get(path).cloned(), c.realm.clone())
    };
    if let Some(b) = route {
        return behave(shared, conn, req, b);
    }
    if let Some(realm) = realm {
        let bearer = format!("Bearer {TOKEN}");
        if path.starts_with("/v2") && req.header("authorization") != Some(bearer.as_str()) {
            return behave(shared, conn, req, Behaviour::Challenge { realm });
        }
    }
    let (status, headers, body) = content(shared, req);
    answer(shared, conn, req, status, headers, &body)
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the registry's content says to `req`.
fn content(shared: &Shared, req: &Request) -> Answer {
    let json = |status, body: Vec<u8>| (status, json_type(), body);
    let missing = |code, message| json(404, error_json(code, message));
    let found = |media_type: &str, digest: &str, bytes| {
        let headers = vec![
            ("Content-Type".into(), media_type.to_string()),
            ("Docker-Content-Digest".into(), digest.to_string()),
        ];
        (200, headers, bytes)
    };
    if req.method != "GET" && req.method != "HEAD" {
        return json(405, error_json("UNSUPPORTED", "this registry is read-only"));
    }
    let path = req.path();
    if path == "/v2/" || path == "/v2" {
        return json(200, b"{}".to_vec());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return missing("NOT_FOUND", "no such path");
    };
    let mut c = lock(&shared.content);
    if rest == "_catalog" {
        let all: BTreeSet<String> = c.tags.keys().map(|(r, _)| r.clone()).collect();
        let repos = c
            .catalog
            .clone()
            .unwrap_or_else(|| all.into_iter().collect());
        return json(
            200,
            format!("{{\"repositories\":[{}]}}", json_list(&repos)).into_bytes(),
        );
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let (repo, reference) = (&rest[..i], &rest[i + "/manifests/".len()..]);
        let digest = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            let key = (repo.to_string(), reference.to_string());
            c.tags.get_mut(&key).and_then(|q| {
                let d = q.front().cloned();
                if req.method == "GET" && q.len() > 1 {
                    q.pop_front();
                }
                d
            })
        };
        return match digest.and_then(|d| c.manifests.get(&d).map(|m| (d, m.clone()))) {
            Some((digest, (media_type, bytes))) => found(&media_type, &digest, bytes),
            None => missing("MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = &rest[i + "/blobs/".len()..];
        return match c.blobs.get(digest) {
            Some(bytes) => found("application/octet-stream", digest, bytes.clone()),
            None => missing("BLOB_UNKNOWN", "blob unknown to registry"),
        };
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let tags: BTreeSet<&String> = c
            .tags
            .keys()
            .filter(|k| k.0 == repo)
            .map(|k| &k.1)
            .collect();
        if tags.is_empty() {
            return missing("NAME_UNKNOWN", "repository name not known to registry");
        }
        let tags: Vec<&String> = tags.into_iter().collect();
        let body = format!(
            "{{\"name\":{},\"tags\":[{}]}}",
            json_string(repo),
            json_list(&tags)
        );
        return json(200, body.into_bytes());
    }
    missing("NOT_FOUND", "no such path")
}

fn behave(shared: &Shared, conn: &mut dyn Conn, req: &Request, b: Behaviour) -> io::Result<bool> {
    let head = req.method == "HEAD";
    let stream_head = |content_type: &str, length: Option<u64>| {
        let mut h = vec![
            ("Content-Type".to_string(), content_type.to_string()),
            ("Connection".to_string(), "close".to_string()),
        ];
        match length {
            Some(n) => h.push(("Content-Length".into(), n.to_string())),
            None => h.push(("Transfer-Encoding".into(), "chunked".into())),
        }
        head_of(200, &h)
    };
    match b {
        Behaviour::Endless {
            content_type,
            prefix,
            repeat,
        } => {
            send(shared, conn, &stream_head(&content_type, None))?;
            if head {
                return Ok(false);
            }
            let chunk = |data: &[u8]| {
                let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                c.extend_from_slice(data);
                c.extend_from_slice(b"\r\n");
                c
            };
            if !prefix.is_empty() {
                send(shared, conn, &chunk(&prefix))?;
            }
            let mut block = Vec::with_capacity(64 << 10);
            while block.len() < (64 << 10) && !repeat.is_empty() {
                block.extend_from_slice(&repeat);
            }
            if block.is_empty() {
                block = vec![b' '; 64 << 10];
            }
            let block = chunk(&block);
            while !shared.stopping() {
                send(shared, conn, &block)?;
            }
            Ok(false)
        }
        Behaviour::Slow {
            content_type,
            body,
            every,
        } => {
            send(
                shared,
                conn,
                &stream_head(&content_type, Some(body.len() as u64)),
            )?;
            if head {
                return Ok(false);
            }
            for byte in body {
                let start = Instant::now();
                while start.elapsed() < every {
                    if shared.stopping() {
                        return Ok(false);
                    }
                    std::thread::sleep((every - start.elapsed()).min(Duration::from_millis(50)));
                }
                send(shared, conn, &[byte])?;
            }
            Ok(false)
        }
        Behaviour::Oversized {
            content_type,
            prefix,
            len,
            fill,
        } => {
            send(shared, conn, &stream_head(&content_type, Some(len)))?;
            if head {
                return Ok(false);
            }
            let first = &prefix[..prefix.len().min(len as usize)];
            send(shared, conn, first)?;
            let mut left = len - first.len() as u64;
            let block = vec![fill; 64 << 10];
            while left > 0 && !shared.stopping() {
                let n = block.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                send(shared, conn, &block[..n])?;
                left -= n as u64;
            }
            Ok(false)
        }
        Behaviour::Fixed {
            status,
            headers,
            body,
        } => answer(shared, conn, req, status, headers, &body),
        Behaviour::Challenge { realm } => {
            let mut h = json_type();
            h.push((
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"{realm}\",service=\"x\""),
            ));
            answer(
                shared,
                conn,
                req,
                401,
                h,
                &error_json("UNAUTHORIZED", "authentication required"),
            )
        }
        Behaviour::Token => {
            let body = format!(
                "{{\"token\":\"{TOKEN}\",\"access_token\":\"{TOKEN}\",\"expires_in\":300}}"
            );
            answer(shared, conn, req, 200, json_type(), body.as_bytes())
        }
    }
}

// ---- content: digests, JSON ----

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[impl AsRef<str>]) -> String {
    items
        .iter()
        .map(|s| json_string(s.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

// ---- content: streams, tar, compression ----

/// A part of a byte stream: bytes, or one byte repeated (kept small however long it is).
#[derive(Clone, Debug)]
pub enum Segment {
    Bytes(Vec<u8>),
    Repeat(u8, u64),
}

/// A byte stream (a layer's uncompressed tar, say) that may be gigabytes long yet cheap to
/// hold, hash and compress, because its long runs are [`Segment::Repeat`].
#[derive(Clone, Debug, Default)]
pub struct Stream {
    segments: Vec<Segment>,
    len: u64,
}

impl Stream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if !b.is_empty() {
            self.len += b.len() as u64;
            self.segments.push(Segment::Bytes(b.to_vec()));
        }
        self
    }

    pub fn repeat(&mut self, byte: u8, n: u64) -> &mut Self {
        if n > 0 {
            self.len += n;
            self.segments.push(Segment::Repeat(byte, n));
        }
        self
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with the stream's bytes, in pieces of at most 1 MiB.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) {
        const PIECE: u64 = 1 << 20;
        let mut run = Vec::new();
        for s in &self.segments {
            match s {
                Segment::Bytes(b) => b.chunks(PIECE as usize).for_each(&mut f),
                Segment::Repeat(byte, n) => {
                    run.clear();
                    run.resize(PIECE.min(*n) as usize, *byte);
                    let mut left = *n;
                    while left > 0 {
                        let k = PIECE.min(left) as usize;
                        f(&run[..k]);
                        left -= k as u64;
                    }
                }
            }
        }
    }

    /// The whole stream in memory (for small ones).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.for_each_chunk(|c| out.extend_from_slice(c));
        out
    }

    /// `sha256:<hex>` of the stream (a layer's diff ID), computed as it is walked.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        self.for_each_chunk(|c| h.update(c));
        format!("sha256:{}", hex(&h.finalize()))
    }

    /// gzip (flate2).
    pub fn gzip(&self) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        self.for_each_chunk(|c| enc.write_all(c).expect("gzip into memory"));
        enc.finish().expect("gzip into memory")
    }

    /// A zstd frame written by hand (RFC 8878): raw blocks for bytes, RLE blocks (4 bytes per
    /// 128 KiB) for repeated bytes; no content size, no checksum, a 128 KiB window.
    pub fn zstd(&self) -> Vec<u8> {
        const MAX_BLOCK: u64 = 128 << 10;
        // (type, regenerated size, payload): type 0 raw, 1 RLE.
        let mut blocks: Vec<(u32, u32, Vec<u8>)> = Vec::new();
        for s in &self.segments {
            match s {
                Segment::Bytes(b) => {
                    for c in b.chunks(MAX_BLOCK as usize) {
                        blocks.push((0, c.len() as u32, c.to_vec()));
                    }
                }
                Segment::Repeat(byte, n) => {
                    let mut left = *n;
                    while left > 0 {
                        let k = MAX_BLOCK.min(left);
                        blocks.push((1, k as u32, vec![*byte]));
                        left -= k;
                    }
                }
            }
        }
        if blocks.is_empty() {
            blocks.push((0, 0, Vec::new()));
        }
        // Magic, frame header descriptor (nothing optional), window descriptor (2^17 bytes).
        let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        let last = blocks.len() - 1;
        for (i, (kind, size, payload)) in blocks.into_iter().enumerate() {
            let header = u32::from(i == last) | (kind << 1) | (size << 3);
            out.extend_from_slice(&header.to_le_bytes()[..3]);
            out.extend_from_slice(&payload);
        }
        out
    }
}

/// How [`Tar`] writes names and link targets too long for the ustar fields (100 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongNames {
    /// GNU `L` (name) and `K` (link) headers.
    Gnu,
    /// A PAX `x` header with `path` / `linkpath` records.
    Pax,
}

/// A tar stream written header by header: ordinary entries, and raw headers whose fields may
/// lie (a long-name header claiming 512 MiB, say). Owner 0:0, mtime fixed.
#[derive(Clone, Debug)]
pub struct Tar {
    stream: Stream,
    long: LongNames,
}

impl Default for Tar {
    fn default() -> Self {
        Tar {
            stream: Stream::new(),
            long: LongNames::Gnu,
        }
    }
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Long names and links from now on are written as `long` says.
    pub fn long_names(mut self, long: LongNames) -> Self {
        self.long = long;
        self
    }

    pub fn dir(self, path: &str) -> Self {
        let path = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        self.entry(b'5', &path, "", 0o755, 0)
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self = self.entry(b'0', path, "", mode, data.len() as u64);
        self.stream.bytes(data);
        self.pad()
    }

    /// A regular file of `size` bytes, each `byte` (costs nothing to hold, whatever its size).
    pub fn file_repeat(mut self, path: &str, byte: u8, size: u64) -> Self {
        self = self.entry(b'0', path, "", 0o644, size);
        self.stream.repeat(byte, size);
        self.pad()
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(b'2', path, target, 0o777, 0)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(b'1', path, target, 0o644, 0)
    }

    /// One header block exactly as given (its size field says `size`, whatever follows): the
    /// caller adds the data, or not, with [`Tar::bytes`] / [`Tar::repeat`] and [`Tar::pad`].
    pub fn raw_header(mut self, typeflag: u8, name: &[u8], link: &[u8], size: u64) -> Self {
        let block = header(
            typeflag,
            name,
            link,
            0o644,
            size,
            self.long == LongNames::Gnu,
        );
        self.stream.bytes(&block);
        self
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.stream.bytes(b);
        self
    }

    pub fn repeat(mut self, byte: u8, n: u64) -> Self {
        self.stream.repeat(byte, n);
        self
    }

    /// Zeros up to the next 512-byte boundary.
    pub fn pad(mut self) -> Self {
        let rem = self.stream.len() % 512;
        if rem != 0 {
            self.stream.repeat(0, 512 - rem);
        }
        self
    }

    /// The archive with its end marker (two zero blocks).
    pub fn finish(self) -> Stream {
        let mut s = self.pad().stream;
        s.repeat(0, 1024);
        s
    }

    /// The stream so far, without an end marker (to append one's own ending or trailing data).
    pub fn into_stream(self) -> Stream {
        self.pad().stream
    }

    fn entry(mut self, typeflag: u8, path: &str, link: &str, mode: u32, size: u64) -> Self {
        let gnu = self.long == LongNames::Gnu;
        let (long_path, long_link) = (path.len() > 100, link.len() > 100);
        match self.long {
            LongNames::Gnu => {
                for (kind, value, long) in [(b'L', path, long_path), (b'K', link, long_link)] {
                    if long {
                        let mut data = value.as_bytes().to_vec();
                        data.push(0);
                        let h = header(kind, b"././@LongLink", b"", 0o644, data.len() as u64, true);
                        self.stream.bytes(&h).bytes(&data);
                        self = self.pad();
                    }
                }
            }
            LongNames::Pax => {
                let mut records = Vec::new();
                if long_path {
                    records.extend(pax_record("path", path.as_bytes()));
                }
                if long_link {
                    records.extend(pax_record("linkpath", link.as_bytes()));
                }
                if !records.is_empty() {
                    let h = header(
                        b'x',
                        b"PaxHeaders/entry",
                        b"",
                        0o644,
                        records.len() as u64,
                        false,
                    );
                    self.stream.bytes(&h).bytes(&records);
                    self = self.pad();
                }
            }
        }
        let cut = |s: &str| s.as_bytes()[..s.len().min(100)].to_vec();
        let h = header(typeflag, &cut(path), &cut(link), mode, size, gnu);
        self.stream.bytes(&h);
        self
    }
}

/// A PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// One 512-byte header block (ustar, or GNU's magic), with its checksum.
fn header(typeflag: u8, name: &[u8], link: &[u8], mode: u32, size: u64, gnu: bool) -> [u8; 512] {
    fn octal(field: &mut [u8], v: u64) {
        let digits = field.len() - 1;
        let s = format!("{v:0digits$o}");
        assert!(s.len() <= digits, "{v} does not fit an octal field");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    }
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 8u64.pow(11) {
        octal(&mut h[124..136], size);
    } else {
        // GNU base-256: the high bit set, the number big-endian in the rest.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    if gnu {
        h[257..265].copy_from_slice(b"ustar  \0");
    } else {
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

// ---- content: images and sidecars ----

/// A layer blob as stored on a registry, and the digest of its uncompressed stream.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

impl Layer {
    fn of(media_type: &str, blob: Vec<u8>, tar: &Stream) -> Self {
        Layer {
            media_type: media_type.into(),
            digest: sha256_digest(&blob),
            blob,
            diff_id: tar.digest(),
        }
    }

    /// An uncompressed layer.
    pub fn plain(tar: &Stream) -> Self {
        Self::of(LAYER_TAR, tar.to_vec(), tar)
    }

    pub fn gzip(tar: &Stream) -> Self {
        Self::of(LAYER_GZIP, tar.gzip(), tar)
    }

    pub fn zstd(tar: &Stream) -> Self {
        Self::of(LAYER_ZSTD, tar.zstd(), tar)
    }
}

/// A manifest with its blobs (config first), ready for [`HostileRegistry::push`].
#[derive(Clone, Debug)]
pub struct Image {
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// Every blob the manifest names: the config, then the layers.
    pub blobs: Vec<Vec<u8>>,
}

fn descriptor(media_type: &str, digest: &str, size: usize, annotations: &str) -> String {
    format!(
        "{{\"mediaType\":{},\"digest\":{},\"size\":{size}{annotations}}}",
        json_string(media_type),
        json_string(digest)
    )
}

fn manifest(config: &str, layers: &[String], annotations: &str) -> Vec<u8> {
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{config},\"layers\":[{}]{annotations}}}",
        layers.join(",")
    )
    .into_bytes()
}

/// A linux/amd64 container image of `layers` (bottom first), running `entrypoint` + `cmd`.
pub fn container_image(layers: &[Layer], entrypoint: &[&str], cmd: &[&str]) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Entrypoint\":[{}],\"Cmd\":[{}],\
         \"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"WorkingDir\":\"/\"}},\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
        json_list(entrypoint),
        json_list(cmd),
        json_list(&diff_ids)
    )
    .into_bytes();
    let config_digest = sha256_digest(&config);
    let layer_descriptors: Vec<String> = layers
        .iter()
        .map(|l| descriptor(&l.media_type, &l.digest, l.blob.len(), ""))
        .collect();
    let manifest = manifest(
        &descriptor(OCI_CONFIG, &config_digest, config.len(), ""),
        &layer_descriptors,
        "",
    );
    let mut blobs = vec![config.clone()];
    blobs.extend(layers.iter().map(|l| l.blob.clone()));
    Image {
        media_type: OCI_MANIFEST.into(),
        digest: sha256_digest(&manifest),
        manifest,
        config,
        config_digest,
        blobs,
    }
}

/// A Wasm sidecar in wpod's layout (the CNCF TAG-Runtime one `wpod push` writes): config
/// `application/vnd.wasm.config.v0+json` (`architecture: wasm`, `os: wasip2`, `layerDigests`;
/// no `component` section, so nothing declared can disagree with the bytes), one
/// `application/wasm` layer, the version annotation.
pub fn sidecar_image(component: &[u8], version: &str) -> Image {
    let layer_digest = sha256_digest(component);
    let config = format!(
        "{{\"architecture\":\"wasm\",\"os\":\"wasip2\",\"layerDigests\":[{}]}}",
        json_string(&layer_digest)
    )
    .into_bytes();
    let config_digest = sha256_digest(&config);
    let manifest = manifest(
        &descriptor(WASM_CONFIG, &config_digest, config.len(), ""),
        &[descriptor(
            WASM_LAYER,
            &layer_digest,
            component.len(),
            ",\"annotations\":{\"org.opencontainers.image.title\":\"component.wasm\"}",
        )],
        &format!(
            ",\"annotations\":{{\"org.opencontainers.image.version\":{},\"org.opencontainers.image.created\":\"2026-01-01T00:00:00Z\"}}",
            json_string(version)
        ),
    );
    Image {
        media_type: OCI_MANIFEST.into(),
        digest: sha256_digest(&manifest),
        manifest,
        config: config.clone(),
        config_digest,
        blobs: vec![config, component.to_vec()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("path", b"abc");
        assert_eq!(r, b"12 path=abc\n");
        let long = pax_record("linkpath", &[b'a'; 300]);
        let n: usize = std::str::from_utf8(&long[..long.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, long.len());
    }

    #[test]
    fn headers_carry_a_valid_checksum_and_streams_keep_their_length() {
        let tar = Tar::new().file("a", b"hello").finish();
        assert_eq!(tar.len(), 512 * 2 + 1024);
        let bytes = tar.to_vec();
        let stored = std::str::from_utf8(&bytes[148..154]).unwrap();
        let mut h = bytes[..512].to_vec();
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        let bomb = Tar::new().file_repeat("z", 0, 1 << 30).finish();
        assert!(bomb.zstd().len() < 40_000, "{}", bomb.zstd().len());
    }
}
