//! tls-proxy: terminates TLS (rustls, pure-Rust RustCrypto provider) on a port the sidecar
//! declares, and forwards each HTTP request to a legacy service that listens only on the pod's
//! localhost; the certificate and key come from a volume (a Secret-like hostPath, or an init
//! container that writes them).
//!
//! One request per connection (the upstream request gets `Connection: close`), connections
//! served one at a time with timeouts: std on wasm32-wasip2 has no threads, and a sidecar in
//! front of a legacy service rarely needs more.
//!
//! Configuration (env): `LISTEN` (default 0.0.0.0:8443), `BACKEND` (default 127.0.0.1:8000),
//! `CERT` (PEM chain, default /tls/tls.crt), `KEY` (PEM key, default /tls/tls.key).

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

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

/// Reads one HTTP request (head, and a body of `Content-Length`) from the client.
fn read_request(client: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if req.len() > 64 * 1024 {
            return Err("request head too large".into());
        }
        let n = client.read(&mut buf).map_err(|e| format!("read request: {e}"))?;
        if n == 0 {
            return Err("client closed before a full request".into());
        }
        req.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok())).unwrap_or(0);
    while req.len() < head_end + length {
        let n = client.read(&mut buf).map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    Ok(rewrite_connection(&req[..head_end], &req[head_end..]))
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

fn serve(tcp: TcpStream, config: &Arc<ServerConfig>, backend: &str) -> Result<(), String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let conn = ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let request = read_request(&mut tls)?;
    let mut upstream = TcpStream::connect(backend).map_err(|e| format!("backend {backend}: {e}"))?;
    upstream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    upstream.write_all(&request).map_err(|e| format!("backend {backend}: {e}"))?;
    let mut buf = [0u8; 16384];
    loop {
        let n = upstream.read(&mut buf).map_err(|e| format!("backend {backend}: {e}"))?;
        if n == 0 {
            break;
        }
        tls.write_all(&buf[..n]).map_err(|e| format!("write to client: {e}"))?;
    }
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| e.to_string())
}

fn main() {
    let listen = env("LISTEN", "0.0.0.0:8443");
    let backend = env("BACKEND", "127.0.0.1:8000");
    let config = match load_config(&env("CERT", "/tls/tls.crt"), &env("KEY", "/tls/tls.key")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot load TLS configuration: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e} (declare the port in the sidecar's ports)");
            std::process::exit(1);
        }
    };
    println!("terminating TLS on {listen}, forwarding to http://{backend}");
    for conn in listener.incoming() {
        match conn {
            Ok(tcp) => {
                if let Err(e) = serve(tcp, &config, &backend) {
                    eprintln!("connection: {e}");
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}
