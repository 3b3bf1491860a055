//! tls-proxy: terminates TLS (rustls, pure-Rust RustCrypto provider) on a port the sidecar
//! declares, and forwards each HTTP request to a legacy service that listens only on the pod's
//! localhost; the certificate and key come from a volume (a Secret-like hostPath, or an init
//! container that writes them).
//!
//! One request per connection (the upstream request gets `Connection: close`). Each connection
//! is a task on wstd's reactor (sockets polled together, no threads), so many are served at once
//! and a slow client holds up nobody; each has 60 s in all.
//!
//! Configuration (env): `LISTEN` (default 0.0.0.0:8443), `BACKEND` (default 127.0.0.1:8000),
//! `CERT` (PEM chain, default /tls/tls.crt), `KEY` (PEM key, default /tls/tls.key).

use std::io::{BufReader, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use wstd::future::FutureExt as _;
use wstd::io::{AsyncRead as _, AsyncWrite as _};
use wstd::iter::AsyncIterator as _;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn load_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(std::fs::File::open(cert).map_err(|e| format!("{cert}: {e}"))?))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert}: no certificate"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(std::fs::File::open(key).map_err(|e| format!("{key}: {e}"))?))
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

/// A TLS session over a wstd socket: rustls does the protocol, this moves its records.
struct Tls {
    tcp: wstd::net::TcpStream,
    conn: ServerConnection,
}

impl Tls {
    /// Sends whatever TLS records rustls has ready.
    async fn flush(&mut self) -> Result<(), String> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out).map_err(|e| e.to_string())?;
            self.tcp.write_all(&out).await.map_err(|e| format!("write to client: {e}"))?;
        }
        Ok(())
    }

    /// Reads more records from the client into rustls; false at the client's EOF.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 16384];
        let n = self.tcp.read(&mut buf).await.map_err(|e| format!("read from client: {e}"))?;
        if n == 0 {
            return Ok(false);
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            self.conn.read_tls(&mut data).map_err(|e| e.to_string())?;
            self.conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
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
        self.conn.writer().write_all(data).map_err(|e| e.to_string())?;
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
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok())).unwrap_or(0);
    while req.len() < head_end + length {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    Ok(rewrite_connection(&req[..head_end], &req[head_end..]))
}

/// A connection to the backend (wstd 0.5 has no client sockets): streams first, so they are
/// dropped before their socket.
struct Upstream {
    input: wstd::io::AsyncInputStream,
    output: wstd::io::AsyncOutputStream,
    _socket: wstd::wasip2::sockets::tcp::TcpSocket,
}

/// Connects to `addr` (an IP address and port: the pod's loopback) without blocking the others.
async fn connect(addr: &str) -> Result<Upstream, String> {
    use wstd::wasip2::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    use wstd::wasip2::sockets::{instance_network, tcp_create_socket};
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an IP address and port"))?;
    let (family, target) = match parsed {
        std::net::SocketAddr::V4(a) => {
            let [x, y, z, w] = a.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress { port: a.port(), address: (x, y, z, w) }),
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
    };
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(|e| format!("{e:?}"))?;
    socket
        .start_connect(&instance_network::instance_network(), target)
        .map_err(|e| format!("{e:?}"))?;
    let ready = wstd::runtime::AsyncPollable::new(socket.subscribe());
    loop {
        match socket.finish_connect() {
            Ok((input, output)) => {
                return Ok(Upstream {
                    input: wstd::io::AsyncInputStream::new(input),
                    output: wstd::io::AsyncOutputStream::new(output),
                    _socket: socket,
                })
            }
            Err(ErrorCode::WouldBlock) => ready.wait_for().await,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// One connection: the request read through TLS, forwarded, the answer streamed back.
async fn serve(tcp: wstd::net::TcpStream, config: Arc<ServerConfig>, backend: Rc<String>) -> Result<(), String> {
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = Tls { tcp, conn };
    let request = read_request_async(&mut tls).await?;
    let mut upstream = connect(&backend)
        .await
        .map_err(|e| format!("backend {backend}: {e}"))?;
    upstream
        .output
        .write_all(&request)
        .await
        .map_err(|e| format!("backend {backend}: {e}"))?;
    upstream.output.flush().await.map_err(|e| format!("backend {backend}: {e}"))?;
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

fn main() {
    let listen = env("LISTEN", "0.0.0.0:8443");
    let backend = Rc::new(env("BACKEND", "127.0.0.1:8000"));
    let config = match load_config(&env("CERT", "/tls/tls.crt"), &env("KEY", "/tls/tls.key")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot load TLS configuration: {e}");
            std::process::exit(1);
        }
    };
    wstd::runtime::block_on(async move {
        let listener = match wstd::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e} (declare the port in the sidecar's ports)");
                std::process::exit(1);
            }
        };
        println!("terminating TLS on {listen}, forwarding to http://{backend}");
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            match conn {
                Ok(tcp) => {
                    let (config, backend) = (config.clone(), backend.clone());
                    // A task per connection: a slow client holds up nobody else.
                    wstd::runtime::spawn(async move {
                        let served = serve(tcp, config, backend)
                            .timeout(wstd::time::Duration::from(CONNECTION_TIMEOUT))
                            .await;
                        match served {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => eprintln!("connection: {e}"),
                            Err(_) => eprintln!("connection: no end within {}s", CONNECTION_TIMEOUT.as_secs()),
                        }
                    })
                    .detach();
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    })
}
