//! The actions probes and lifecycle hooks perform (`httpGet`, `tcpSocket`, `exec`, `sleep`, and
//! for probes `grpc`), each bounded by a timeout. Network actions connect from inside the pod's network namespace
//! to the pod's loopback (wpod's pod has no other address), as the kubelet connects to the pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containers::ExecTarget;
use crate::error::chain;
use crate::sandbox::namespaces::Dialer;
use crate::spec::{ContainerPort, GrpcAction, Handler, HttpGetAction, IntOrString};

/// Why an action failed; shown to the user as its whole chain ([`chain`]), as the kubelet
/// words probe failures.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("invalid port {0}")]
    InvalidPort(i64),
    #[error("no port named {0}")]
    NoSuchPort(String),
    #[error("host {0} is not an IP address (the pod has no DNS)")]
    NotAnAddress(String),
    #[error("scheme {0} is not supported")]
    Scheme(String),
    #[error("dial {addr}")]
    Dial {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("send to {addr}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("read from {addr}")]
    Read {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} did not answer HTTP")]
    NotHttp(SocketAddr),
    #[error("HTTP probe failed with statuscode: {0}")]
    HttpStatus(u16),
    #[error("gRPC exchange with {addr}")]
    Grpc { addr: SocketAddr, source: h2::Error },
    #[error("{addr} did not answer gRPC: {why}")]
    NotGrpc { addr: SocketAddr, why: String },
    // The kubelet's words for the health protocol's outcomes (pkg/probe/grpc).
    #[error(
        "this server does not implement the grpc health protocol (grpc.health.v1.Health): {0}"
    )]
    GrpcUnimplemented(String),
    #[error("health rpc probe failed: grpc-status {code}: {message}")]
    GrpcStatus { code: u32, message: String },
    #[error("service unhealthy (responded with \"{0}\")")]
    Unhealthy(&'static str),
    #[error("exec needs a process (a native container)")]
    ExecNeedsProcess,
    #[error("exec {argv:?}")]
    Exec {
        argv: Vec<String>,
        source: std::io::Error,
    },
    #[error("command {argv:?} exited with {code}: {output}")]
    ExitCode {
        argv: Vec<String>,
        code: i32,
        output: String,
    },
    #[error("command {argv:?} was killed")]
    Killed { argv: Vec<String> },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl ActionError {
    /// What the user reads: the error and its cause.
    pub fn message(&self) -> String {
        chain(self)
    }
}

/// Where an action reaches its container.
#[derive(Clone)]
pub struct ActionTarget {
    /// Makes sockets inside the pod's network namespace.
    pub dialer: Dialer,
    /// The container's ports, for ports given by name.
    pub ports: Vec<ContainerPort>,
    /// A native container's exec entry; `None` for a Wasm sidecar.
    pub exec: Option<ExecTarget>,
}

impl ActionTarget {
    fn port(&self, port: &IntOrString) -> Result<u16, ActionError> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ActionError::InvalidPort(*n)),
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .ok_or_else(|| ActionError::NoSuchPort(name.clone())),
        }
    }

    fn addr(&self, host: Option<&str>, port: &IntOrString) -> Result<SocketAddr, ActionError> {
        let ip = match host {
            None | Some("") | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(h) => h
                .parse()
                .map_err(|_| ActionError::NotAnAddress(h.to_string()))?,
        };
        Ok(SocketAddr::new(ip, self.port(port)?))
    }
}

/// Runs `action`; `Ok` with a short note on success, `Err` with why it failed.
pub async fn run(
    action: &Handler,
    target: &ActionTarget,
    timeout: Duration,
) -> Result<String, ActionError> {
    let work = async {
        match action {
            Handler::HttpGet(get) => http_get(get, target, timeout).await,
            Handler::TcpSocket(t) => {
                let addr = target.addr(t.host.as_deref(), &t.port)?;
                target
                    .dialer
                    .connect(addr, timeout)
                    .await
                    .map(|_| format!("connected to {addr}"))
                    .map_err(|source| ActionError::Dial { addr, source })
            }
            Handler::Exec(e) => exec(&e.command, target).await,
            Handler::Grpc(g) => grpc_health(g, target, timeout).await,
            Handler::Sleep(s) => {
                tokio::time::sleep(Duration::from_secs(s.seconds.into())).await;
                Ok(format!("slept {}s", s.seconds))
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ActionError::Timeout(timeout)),
    }
}

async fn http_get(
    get: &HttpGetAction,
    target: &ActionTarget,
    timeout: Duration,
) -> Result<String, ActionError> {
    let tls = match get.scheme.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => return Err(ActionError::Scheme(other.to_string())),
    };
    let addr = target.addr(get.host.as_deref(), &get.port)?;
    let stream = target
        .dialer
        .connect(addr, timeout)
        .await
        .map_err(|source| ActionError::Dial { addr, source })?;
    if !tls {
        return exchange(stream, get, addr).await;
    }
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tls::connector()
        .connect(name, stream)
        .await
        .map_err(|source| ActionError::Tls { addr, source })?;
    exchange(stream, get, addr).await
}

/// The request and its answer, over TCP or TLS.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    get: &HttpGetAction,
    addr: SocketAddr,
) -> Result<String, ActionError> {
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wpod-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n", get.path);
    for h in &get.http_headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|source| ActionError::Send { addr, source })?;
    // The response may come in several segments (a server writing it piece by piece): read
    // the whole head, then a short body to its end (the kubelet reads up to 10 KiB), so the
    // server is not cut off mid-write.
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify (many do, and Go's client, the
            // kubelet's, accepts it): the response ends there.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(source) => return Err(ActionError::Read { addr, source }),
        };
        head.extend_from_slice(&chunk[..n]);
        if n == 0 || head.len() >= 10 * 1024 || response_complete(&head) {
            break;
        }
    }
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(status_line);
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(ActionError::NotHttp(addr))?;
    // Kubernetes: 200 <= code < 400 is success.
    if (200..400).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        Err(ActionError::HttpStatus(code))
    }
}

/// Whether `bytes` hold a whole HTTP response head and the body its Content-Length announces
/// (a response without one ends when the server closes).
fn response_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| bytes.len() >= end + 4 + n)
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`) over plaintext HTTP/2, as
/// the kubelet's `grpc` probe makes it: healthy only when the server answers `SERVING`.
async fn grpc_health(
    g: &GrpcAction,
    target: &ActionTarget,
    timeout: Duration,
) -> Result<String, ActionError> {
    let addr = target.addr(None, &IntOrString::Int(g.port))?;
    let stream = target
        .dialer
        .connect(addr, timeout)
        .await
        .map_err(|source| ActionError::Dial { addr, source })?;
    let h2 = |source| ActionError::Grpc { addr, source };
    let not_grpc = |why: &str| ActionError::NotGrpc {
        addr,
        why: why.to_string(),
    };
    // A health answer is a few bytes: the server's headers are held to 16 KiB.
    let (client, connection) = h2::client::Builder::new()
        .max_header_list_size(16 * 1024)
        .handshake(stream)
        .await
        .map_err(h2)?;
    // The connection is driven beside the call and ends with it (the guard aborts it even
    // when the caller's timeout drops this future).
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut client = client.ready().await.map_err(h2)?;
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "wpod-probe/1.0")
        .body(())
        .map_err(|e| not_grpc(&e.to_string()))?;
    let (response, mut send) = client.send_request(request, false).map_err(h2)?;
    send.send_data(grpc::frame(&grpc::check_request(&g.service)), true)
        .map_err(h2)?;
    let (head, mut body) = response.await.map_err(h2)?.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(not_grpc(&format!("HTTP status {}", head.status)));
    }
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
        if message.len() > grpc::MAX_RESPONSE {
            return Err(not_grpc("the health response is too long"));
        }
    }
    // The status is in the trailers, or in the headers of a trailers-only answer (an error).
    let trailers = body.trailers().await.map_err(h2)?;
    let status = trailers
        .as_ref()
        .and_then(grpc::Status::from_headers)
        .or_else(|| grpc::Status::from_headers(&head.headers))
        .ok_or_else(|| not_grpc("no grpc-status"))?;
    drop(connection);
    match status.code {
        0 => {}
        grpc::UNIMPLEMENTED => return Err(ActionError::GrpcUnimplemented(status.message)),
        code => {
            return Err(ActionError::GrpcStatus {
                code,
                message: status.message,
            })
        }
    }
    match grpc::serving_status(&message).map_err(not_grpc)? {
        "SERVING" => Ok("service healthy".to_string()),
        other => Err(ActionError::Unhealthy(other)),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The two messages of the gRPC health protocol and their framing, encoded by hand: a string
/// field out, an enum field back (a protobuf library would be the larger part of the probe).
mod grpc {
    /// Far above any health response (a 2-byte message in a 5-byte frame).
    pub const MAX_RESPONSE: usize = 64 * 1024;
    /// gRPC's status code for a method the server does not have.
    pub const UNIMPLEMENTED: u32 = 12;

    /// `HealthCheckRequest { string service = 1; }`.
    pub fn check_request(service: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if !service.is_empty() {
            out.push(0x0a); // field 1, length-delimited
            varint(service.len() as u64, &mut out);
            out.extend_from_slice(service.as_bytes());
        }
        out
    }

    /// A length-prefixed gRPC message, uncompressed.
    pub fn frame(message: &[u8]) -> bytes::Bytes {
        let mut out = Vec::with_capacity(5 + message.len());
        out.push(0);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out.into()
    }

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// The `status` of a framed `HealthCheckResponse`, by its name in the protocol.
    pub fn serving_status(framed: &[u8]) -> Result<&'static str, &'static str> {
        let (head, mut message) = framed
            .split_at_checked(5)
            .ok_or("the health response is not a gRPC message")?;
        if head[0] != 0 {
            return Err("the health response is compressed");
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len != message.len() {
            return Err("the health response's length does not match its frame");
        }
        // proto3: a field left out has its default, UNKNOWN.
        let mut status = 0;
        while !message.is_empty() {
            let key = read_varint(&mut message).ok_or("a malformed health response")?;
            let skip = match key & 7 {
                0 => {
                    let v = read_varint(&mut message).ok_or("a malformed health response")?;
                    if key >> 3 == 1 {
                        status = v;
                    }
                    0
                }
                1 => 8,
                2 => read_varint(&mut message).ok_or("a malformed health response")? as usize,
                5 => 4,
                _ => return Err("a malformed health response"),
            };
            message = message.get(skip..).ok_or("a malformed health response")?;
        }
        Ok(match status {
            0 => "UNKNOWN",
            1 => "SERVING",
            2 => "NOT_SERVING",
            3 => "SERVICE_UNKNOWN",
            _ => "an unknown status",
        })
    }

    /// `grpc-status` and `grpc-message` of an answer.
    pub struct Status {
        pub code: u32,
        pub message: String,
    }

    impl Status {
        pub fn from_headers(headers: &http::HeaderMap) -> Option<Status> {
            let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
            let message = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .map(percent_decoded)
                .unwrap_or_default();
            Some(Status { code, message })
        }
    }

    /// `grpc-message` is percent-encoded (gRPC over HTTP/2); decoded as the kubelet shows
    /// it, and cut at 200 characters (it goes into every probe-failure event).
    fn percent_decoded(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).chars().take(200).collect()
    }
}

async fn exec(argv: &[String], target: &ActionTarget) -> Result<String, ActionError> {
    let Some(exec) = &target.exec else {
        return Err(ActionError::ExecNeedsProcess);
    };
    let out = exec
        .output(argv)
        .await
        .map_err(|source| ActionError::Exec {
            argv: argv.to_vec(),
            source,
        })?;
    let output = String::from_utf8_lossy(&out.stdout)
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    let errors = String::from_utf8_lossy(&out.stderr)
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    match out.status.code() {
        Some(0) => Ok(output),
        Some(code) => Err(ActionError::ExitCode {
            argv: argv.to_vec(),
            code,
            output: if errors.is_empty() { output } else { errors },
        }),
        None => Err(ActionError::Killed {
            argv: argv.to_vec(),
        }),
    }
}

/// HTTPS for probes and hooks as the kubelet does it: the server's certificate is not verified
/// (`InsecureSkipVerify`: a pod's certificate is rarely one the host trusts, and the connection
/// never leaves the pod), but the handshake's signatures are.
mod tls {
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// One client configuration for every probe of the process.
    pub fn connector() -> tokio_rustls::TlsConnector {
        static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        let config = CONFIG.get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                        .with_no_client_auth()
                });
            // Not input: ring supports the default protocol versions.
            Arc::new(config.expect("ring supports TLS 1.2 and 1.3"))
        });
        tokio_rustls::TlsConnector::from(config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{grpc, response_complete};

    #[test]
    fn encodes_and_decodes_the_health_protocol() {
        assert_eq!(grpc::check_request(""), b"");
        assert_eq!(grpc::check_request("db"), b"\x0a\x02db");
        assert_eq!(&grpc::frame(b"\x0a\x02db")[..], b"\0\0\0\0\x04\x0a\x02db");
        assert_eq!(grpc::serving_status(b"\0\0\0\0\x02\x08\x01"), Ok("SERVING"));
        assert_eq!(
            grpc::serving_status(b"\0\0\0\0\x02\x08\x02"),
            Ok("NOT_SERVING")
        );
        // No field: proto3's default; an unknown field before the status is skipped.
        assert_eq!(grpc::serving_status(b"\0\0\0\0\0"), Ok("UNKNOWN"));
        assert_eq!(
            grpc::serving_status(b"\0\0\0\0\x05\x12\x01x\x08\x01"),
            Ok("SERVING")
        );
        assert!(grpc::serving_status(b"\0\0\0\0\x03\x08\x01").is_err());
        assert!(grpc::serving_status(b"\0\0\0\0\x02\x12\x09").is_err());
        assert!(grpc::serving_status(b"\x01\0\0\0\x02\x08\x01").is_err());
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("12"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("unknown%20service%3A%20x%ZZ"),
        );
        let status = grpc::Status::from_headers(&headers).expect("a status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (12, "unknown service: x%ZZ")
        );
    }

    #[test]
    fn knows_when_a_response_is_whole() {
        assert!(!response_complete(b"HTTP/1.1 "));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"
        ));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd"
        ));
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n\r\nno length"));
    }
}
