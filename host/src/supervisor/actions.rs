//! The actions probes and lifecycle hooks perform (`httpGet`, `tcpSocket`, `exec`, `sleep`),
//! each bounded by a timeout. Network actions connect from inside the pod's network namespace
//! to the pod's loopback (wpod's pod has no other address), as the kubelet connects to the pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containers::ExecTarget;
use crate::error::chain;
use crate::sandbox::namespaces::Dialer;
use crate::spec::{ContainerPort, Handler, HttpGetAction, IntOrString};

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
    #[error("exec needs a process (a native container)")]
    ExecNeedsProcess,
    /// The exec helper could not be prepared.
    #[error(transparent)]
    Helper(std::io::Error),
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

async fn exec(argv: &[String], target: &ActionTarget) -> Result<String, ActionError> {
    let Some(exec) = &target.exec else {
        return Err(ActionError::ExecNeedsProcess);
    };
    let mut cmd = exec.command(argv).map_err(ActionError::Helper)?;
    let out = cmd.output().await.map_err(|source| ActionError::Exec {
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
    use super::response_complete;

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
