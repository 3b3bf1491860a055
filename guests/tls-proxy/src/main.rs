//! tls-proxy: terminates TLS on a port the sidecar declares and passes the plaintext to a
//! legacy service that listens only on the pod's localhost; the certificate and key come from
//! a volume (a Secret-like hostPath, or an init container that writes them).
//!
//! Two TLS engines (`TLS_ENGINE`):
//! - `host` (the default): the host runs the handshakes and records at native speed through
//!   `wpod:sidecar/tls`; the sidecar only relays bytes both ways between the client's plaintext
//!   and a backend connection, each direction a transfer the host runs (`wpod:sidecar/relay`:
//!   no copy through Wasm memory, no call into the sidecar per chunk). Like stunnel or a TCP-mode proxy: HTTP keep-alive and anything else the backend
//!   speaks pass through. A connection idle for 60 s ends (the host's session timeout).
//! - `guest`: rustls with a pure-Rust (RustCrypto) provider inside Wasm, one HTTP request per
//!   connection (sent upstream with `Connection: close`), each connection 60 s in all: a
//!   sidecar that brings its own TLS, as any component may.
//!
//! Each connection is a task on wstd's reactor (sockets polled together, no threads), so many
//! are served at once and a slow client holds up nobody.
//! On the pod's `stopping` event it stops accepting and gives the open connections until its
//! deadline to finish, as nginx's graceful quit does, then exits 0.
//!
//! Configuration (env): `LISTEN` (default 0.0.0.0:8443), `BACKEND` (default 127.0.0.1:8000),
//! `CERT` (PEM chain, default /tls/tls.crt), `KEY` (PEM key, default /tls/tls.key),
//! `TLS_ENGINE` (`host` or `guest`), `MAX_CONNECTIONS` (default 64; each takes about 10 of the
//! sidecar's handles: past 64, raise `wpod.dev/sidecar-max-handles`).

mod event_loop;

use std::io::{BufReader, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use wstd::future::FutureExt as _;
use wstd::io::{AsyncInputStream, AsyncOutputStream, AsyncWrite as _};
use wstd::runtime::AsyncPollable;
use wstd::wasip2::io::streams::{InputStream, OutputStream};
use wstd::wasip2::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wstd::wasip2::sockets::tcp::TcpSocket;
use wstd::wasip2::sockets::{instance_network, tcp_create_socket};

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// The guest engine's rustls configuration.
fn load_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(&read(cert)?[..]))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert}: no certificate"));
    }
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut BufReader::new(&read(key)?[..]))
            .map_err(|e| format!("{key}: {e}"))?
            .ok_or_else(|| format!("{key}: no private key"))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// The request with `Connection: close` (the backend's end of response is its EOF).
fn rewrite_connection(head: &[u8], body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A TLS session in Wasm over a client connection: rustls does the protocol, this moves its
/// records.
struct Tls {
    tcp: Connection,
    conn: ServerConnection,
}

impl Tls {
    /// Sends whatever TLS records rustls has ready.
    async fn flush(&mut self) -> Result<(), String> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out).map_err(|e| e.to_string())?;
            self.tcp
                .output
                .write_all(&out)
                .await
                .map_err(|e| format!("write to client: {e}"))?;
        }
        Ok(())
    }

    /// Reads more records from the client into rustls; false at the client's EOF.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 16384];
        let n = self
            .tcp
            .input
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from client: {e}"))?;
        if n == 0 {
            return Ok(false);
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            self.conn.read_tls(&mut data).map_err(|e| e.to_string())?;
            self.conn
                .process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(true)
    }

    /// Plaintext from the client, waiting for it; 0 at its end.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.flush().await?;
                    if !self.fill().await? {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Plaintext to the client.
    async fn write_all(&mut self, data: &[u8]) -> Result<(), String> {
        self.conn
            .writer()
            .write_all(data)
            .map_err(|e| e.to_string())?;
        self.flush().await
    }
}

/// One HTTP request (head, and a body of `Content-Length`) from the client.
async fn read_request_async(tls: &mut Tls) -> Result<Vec<u8>, String> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if req.len() > 64 * 1024 {
            return Err("request head too large".into());
        }
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err("client closed before a full request".into());
        }
        req.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    while req.len() < head_end + length {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    Ok(rewrite_connection(&req[..head_end], &req[head_end..]))
}

/// A TCP connection as wasip2 gives it: streams first, so they are dropped before their
/// socket (wstd 0.5 has no client sockets, and its server sockets hide their streams).
struct Raw {
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
}

/// A connection with wstd's async streams (the guest engine reads and writes through them).
struct Connection {
    input: AsyncInputStream,
    output: AsyncOutputStream,
    _socket: TcpSocket,
}

impl From<Raw> for Connection {
    fn from(raw: Raw) -> Self {
        Connection {
            input: AsyncInputStream::new(raw.input),
            output: AsyncOutputStream::new(raw.output),
            _socket: raw.socket,
        }
    }
}

fn socket_address(addr: &str) -> Result<(IpAddressFamily, IpSocketAddress), String> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an IP address and port"))?;
    Ok(match parsed {
        std::net::SocketAddr::V4(a) => {
            let [x, y, z, w] = a.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (x, y, z, w),
                }),
            )
        }
        std::net::SocketAddr::V6(a) => {
            let s = a.ip().segments();
            (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    flow_info: 0,
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    scope_id: 0,
                }),
            )
        }
    })
}

/// Connects to `addr` (an IP address and port: the pod's loopback) without blocking the others.
async fn connect(addr: &str) -> Result<Raw, String> {
    let (family, target) = socket_address(addr)?;
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(|e| format!("{e:?}"))?;
    socket
        .start_connect(&instance_network::instance_network(), target)
        .map_err(|e| format!("{e:?}"))?;
    let ready = AsyncPollable::new(socket.subscribe());
    loop {
        match socket.finish_connect() {
            Ok((input, output)) => {
                drop(ready);
                return Ok(Raw {
                    input,
                    output,
                    socket,
                });
            }
            Err(ErrorCode::WouldBlock) => ready.wait_for().await,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// Listens on `addr` (the port must be among the sidecar's declared ports).
fn listen(addr: &str) -> Result<TcpSocket, String> {
    let (family, local) = socket_address(addr)?;
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(|e| format!("{e:?}"))?;
    let network = instance_network::instance_network();
    socket
        .start_bind(&network, local)
        .map_err(|e| format!("bind: {e:?}"))?;
    socket.subscribe().block();
    socket.finish_bind().map_err(|e| format!("bind: {e:?}"))?;
    // Room for a burst of clients, as nginx's default backlog gives.
    let _ = socket.set_listen_backlog_size(511);
    socket
        .start_listen()
        .map_err(|e| format!("listen: {e:?}"))?;
    socket.subscribe().block();
    socket
        .finish_listen()
        .map_err(|e| format!("listen: {e:?}"))?;
    Ok(socket)
}

/// One connection: the request read through TLS, forwarded, the answer streamed back.
async fn serve(
    tcp: Connection,
    config: Arc<ServerConfig>,
    backend: Rc<String>,
) -> Result<(), String> {
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = Tls { tcp, conn };
    let request = read_request_async(&mut tls).await?;
    let mut upstream: Connection = connect(&backend)
        .await
        .map_err(|e| format!("backend {backend}: {e}"))?
        .into();
    upstream
        .output
        .write_all(&request)
        .await
        .map_err(|e| format!("backend {backend}: {e}"))?;
    upstream
        .output
        .flush()
        .await
        .map_err(|e| format!("backend {backend}: {e}"))?;
    let mut buf = [0u8; 16384];
    loop {
        let n = upstream
            .input
            .read(&mut buf)
            .await
            .map_err(|e| format!("backend {backend}: {e}"))?;
        if n == 0 {
            break;
        }
        tls.write_all(&buf[..n]).await?;
    }
    tls.conn.send_close_notify();
    tls.flush().await
}

/// How long one connection may take in all (handshake, request, the backend's answer).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections served at once (`MAX_CONNECTIONS`, default 64). Each takes about 10 of the
/// sidecar's handles (sockets, streams, pollables): past 64, raise the pod's
/// `wpod.dev/sidecar-max-handles` annotation (1024) by 16 per connection.
fn max_connections() -> Result<usize, String> {
    let value = env("MAX_CONNECTIONS", "64");
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "MAX_CONNECTIONS={value:?}: set the sidecar's env MAX_CONNECTIONS to a whole number above 0"
        )),
    }
}

/// Which TLS engine serves the connections.
enum Engine {
    Host(wpod_sidecar::tls::ServerIdentity),
    Guest(Arc<ServerConfig>),
}

fn engine(cert: &str, key: &str) -> Result<Engine, String> {
    match env("TLS_ENGINE", "host").as_str() {
        "host" => wpod_sidecar::tls::identity(&read(cert)?, &read(key)?)
            .map(Engine::Host)
            .map_err(|e| format!("CERT={cert} KEY={key}: {e}")),
        "guest" => load_config(cert, key).map(Engine::Guest),
        other => Err(format!("TLS_ENGINE={other}: use host or guest")),
    }
}

fn main() {
    let listen_on = env("LISTEN", "0.0.0.0:8443");
    let backend = env("BACKEND", "127.0.0.1:8000");
    let engine = match engine(&env("CERT", "/tls/tls.crt"), &env("KEY", "/tls/tls.key")) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot load TLS configuration: {e}");
            std::process::exit(1);
        }
    };
    let max = match max_connections() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let (family, address) = match socket_address(&backend) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("BACKEND: {e}");
            std::process::exit(1);
        }
    };
    let listener = match listen(&listen_on) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cannot listen on {listen_on}: {e} (declare the port in the sidecar's ports)"
            );
            std::process::exit(1);
        }
    };
    let which = match engine {
        Engine::Host(_) => "in the host",
        Engine::Guest(_) => "in Wasm",
    };
    println!("terminating TLS ({which}) on {listen_on}, forwarding to {backend}");
    let config = match engine {
        Engine::Host(identity) => {
            let backend = event_loop::Backend {
                name: backend,
                family,
                address,
            };
            event_loop::run(listener, identity, backend, max)
        }
        Engine::Guest(config) => config,
    };
    let backend = Rc::new(backend);
    let active = Rc::new(std::cell::Cell::new(0usize));
    wstd::runtime::block_on(async move {
        let accepting =
            wstd::runtime::spawn(serve_all(listener, config, backend, max, active.clone()));
        // Stopping, as nginx's graceful quit: no new connections, the open ones finish.
        let left = stopping().await;
        drop(accepting);
        println!(
            "stopping: {} connection(s) to finish within {left:?}",
            active.get()
        );
        let deadline = std::time::Instant::now() + left;
        while active.get() > 0 && std::time::Instant::now() < deadline {
            wstd::task::sleep(wstd::time::Duration::from_millis(20)).await;
        }
    });
    // block_on would wait for connections still open (idle keep-alive clients): they end now.
    std::process::exit(0)
}

/// Waits for the pod's `stopping` event: the time left before the sidecar is stopped.
async fn stopping() -> Duration {
    let mut events = wpod_sidecar::events();
    loop {
        if let wpod_sidecar::Event::Stopping(ms) = events.next().await {
            // A little margin: the host stops the sidecar at the deadline itself.
            return Duration::from_millis(ms).saturating_sub(Duration::from_millis(100));
        }
    }
}

/// Counts a connection while it is served.
struct Active(Rc<std::cell::Cell<usize>>);

impl Active {
    fn new(count: &Rc<std::cell::Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        Active(count.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Accepts connections for ever, each served by a task of its own.
async fn serve_all(
    listener: TcpSocket,
    config: Arc<ServerConfig>,
    backend: Rc<String>,
    max: usize,
    active: Rc<std::cell::Cell<usize>>,
) {
    let incoming = AsyncPollable::new(listener.subscribe());
    loop {
        // At the limit, new clients wait in the listen backlog, as with nginx's
        // worker_connections.
        while active.get() >= max {
            wstd::task::sleep(wstd::time::Duration::from_millis(5)).await;
        }
        let (socket, input, output) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(ErrorCode::WouldBlock) => {
                incoming.wait_for().await;
                continue;
            }
            Err(e) => {
                eprintln!("accept: {e:?}");
                // Out of descriptors, say: let the open connections finish some first.
                wstd::task::sleep(wstd::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let client = Raw {
            input,
            output,
            socket,
        };
        let (config, backend) = (config.clone(), backend.clone());
        let counted = Active::new(&active);
        // A task per connection: a slow client holds up nobody else.
        wstd::runtime::spawn(async move {
            let _counted = counted;
            let served = serve(client.into(), config, backend)
                .timeout(wstd::time::Duration::from(CONNECTION_TIMEOUT))
                .await
                .unwrap_or_else(|_| {
                    Err(format!("no end within {}s", CONNECTION_TIMEOUT.as_secs()))
                });
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        })
        .detach();
    }
}
