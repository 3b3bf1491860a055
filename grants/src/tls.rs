//! TLS (always granted): the host runs the handshake and the record layer at native speed on
//! streams the sidecar already holds, so a TLS-terminating sidecar does no crypto in Wasm.
//!
//! It reaches nothing new: the sidecar hands over its certificate and key as bytes (read from
//! its own volume) and the streams of a connection it accepted; the host opens no file and no
//! socket for it. What it can cost the host is bounded:
//! - memory: PEM input size, a certificate chain of at most [`MAX_CHAIN`] bytes (a handshake
//!   sends it whole: a 1 MiB chain once answered each 517-byte ClientHello with 714 KB),
//!   identities per instance ([`MAX_IDENTITIES`]); sessions open at once, [`SESSION_COST`] of
//!   three quarters of the sidecar's memory limit each (at most [`MAX_SESSIONS`]), and
//!   handshakes under way, [`HANDSHAKE_COST`] of the last quarter each, so the pod's runtime
//!   cgroup budget (which adds the sidecars' limits) covers both. Handshakes have their own,
//!   smaller slots and must hear from the client within [`SILENCE_TIMEOUT`]: silent clients
//!   cannot hold the slots of established sessions.
//! - CPU: the host's time in a sidecar's handshakes is metered ([`HandshakeCpu`]) against the
//!   sidecar's CPU limit (one core without one): a sidecar replaying ClientHellos with an
//!   RSA-4096 key once cost 17 CPU-seconds for 4,000 of them; now its handshakes wait.
//!
//! Sessions end with the instance that opened them.
//!
//! One session: the guest's two streams become a tokio transport ([`GuestTransport`]),
//! tokio-rustls accepts on it, and a task relays between the TLS stream and the guest's
//! plaintext streams: its input is the other end of an in-memory pipe ([`PlainInput`]), its
//! output a channel to the relay with a byte budget ([`PlainOutput`]); both are read and
//! written in the guest's own calls, with no task of their own. When the guest drops both, the
//! relay sends close_notify and ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

use super::bindings::tls;
use super::outcome::TaskOutcome;
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::Diagnostic;

/// Sessions one instance may have open at once, whatever its memory limit.
pub const MAX_SESSIONS: usize = 4096;
/// What a session may hold in the host at most (buffers each way, rustls' state), counted
/// against the sidecar's memory limit to cap its sessions.
pub const SESSION_COST: u64 = 128 * 1024;
/// What a handshake under way may hold (rustls' state, one flight of records).
pub const HANDSHAKE_COST: u64 = 64 * 1024;
/// How long a client may stay silent before its first bytes.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest certificate chain an identity may have, in DER bytes (real ones are 2-10 KB).
pub const MAX_CHAIN: usize = 64 * 1024;
/// Server identities one instance may hold at once (each up to 2 MiB of PEM).
pub const MAX_IDENTITIES: usize = 16;
/// How long the close_notify of an ending session may take to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest certificate chain or key `from-pem` reads.
const MAX_PEM: usize = 1 << 20;
/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Buffer of the plaintext pipe each way, and the largest chunk moved at once (a TLS record).
const PIPE: usize = 16 * 1024;

pub struct Tls;

/// One instance's TLS state: how many more sessions and handshakes it may have, its handshake
/// CPU budget, and the signal that ends them with the instance (dropped with its store).
pub struct TlsCtx {
    sessions: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    grant: TlsGrant,
    cpu: Arc<HandshakeCpu>,
    /// Server identities and client configurations held.
    identities: usize,
    ended: watch::Sender<()>,
    /// Where `--audit` records the servers it connects to.
    reports: Arc<crate::report::Reporter>,
    container: String,
}

/// What one sidecar's TLS may hold, decided from its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsGrant {
    /// Sessions open at once.
    pub sessions: usize,
    /// Handshakes under way at once.
    pub handshakes: usize,
    /// Host CPU its handshakes may use, in millicores (its `limits.cpu`, else one core).
    pub cpu_millis: u64,
}

/// The host CPU time one instance's handshakes use, as a token bucket that refills at the
/// sidecar's CPU limit and holds at most one second of it: a handshake in debt waits.
pub struct HandshakeCpu {
    /// Nanoseconds of CPU available (negative: owed), and when it was last refilled.
    state: std::sync::Mutex<(f64, tokio::time::Instant)>,
    /// Nanoseconds of CPU per second of time.
    rate: f64,
}

impl HandshakeCpu {
    pub fn new(cpu_millis: u64) -> Self {
        let rate = cpu_millis.max(1) as f64 * 1e6;
        HandshakeCpu {
            state: std::sync::Mutex::new((rate, tokio::time::Instant::now())),
            rate,
        }
    }

    fn refill(&self) -> std::sync::MutexGuard<'_, (f64, tokio::time::Instant)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.rate).min(self.rate);
        state.1 = now;
        state
    }

    /// Charges `nanos` of CPU spent.
    pub fn charge(&self, nanos: u64) {
        self.refill().0 -= nanos as f64;
    }

    /// How long until the bucket is out of debt (`None`: it is not in debt).
    pub fn wait(&self) -> Option<Duration> {
        let tokens = self.refill().0;
        (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / self.rate))
    }
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// A handshake future whose polls are charged to its instance's [`HandshakeCpu`], and which
/// waits while that is in debt.
struct Metered<F> {
    inner: Pin<Box<F>>,
    cpu: Arc<HandshakeCpu>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match self.cpu.wait() {
                Some(d) => self.pause = Some(Box::pin(tokio::time::sleep(d))),
                None => break,
            }
        }
        let start = thread_cpu_nanos();
        let out = self.inner.as_mut().poll(cx);
        self.cpu.charge(thread_cpu_nanos().saturating_sub(start));
        out
    }
}

impl Capability for Tls {
    type Grant = TlsGrant;
    type State = TlsCtx;

    const IMPORTS: &'static [Import] = &[Import {
        interface: "wpod:sidecar/tls",
        rule: ImportRule::Always {
            what: "TLS done by the host on the sidecar's own streams (server and client), with the keys and roots it passes",
        },
    }];

    fn resolve(sidecar: &Sidecar<'_>, _diags: &mut Vec<Diagnostic>) -> TlsGrant {
        let limits = &sidecar.container.resources.limits;
        let (sessions, handshakes) = match limits.memory_bytes {
            Some(limit) => (
                ((limit / 4 * 3 / SESSION_COST) as usize).clamp(16, MAX_SESSIONS),
                ((limit / 4 / HANDSHAKE_COST) as usize).clamp(4, MAX_SESSIONS),
            ),
            None => (MAX_SESSIONS, MAX_SESSIONS / 4),
        };
        TlsGrant {
            sessions,
            handshakes,
            cpu_millis: limits.cpu_millis.unwrap_or(1000).max(1),
        }
    }

    fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: GrantHost>(t: &mut T) -> TlsView<'_> {
            let (states, table) = t.grant_states();
            TlsView {
                ctx: &mut states.tls,
                table,
            }
        }
        tls::add_to_linker::<T, HasTls>(linker, view)
    }

    fn prepare(grant: &TlsGrant, setup: &mut InstanceSetup<'_>) -> Result<TlsCtx, GrantError> {
        Ok(TlsCtx {
            sessions: Arc::new(Semaphore::new(grant.sessions)),
            handshakes: Arc::new(Semaphore::new(grant.handshakes)),
            grant: *grant,
            cpu: Arc::new(HandshakeCpu::new(grant.cpu_millis)),
            identities: 0,
            ended: watch::channel(()).0,
            reports: setup.reports.clone(),
            container: setup.name.to_string(),
        })
    }
}

/// Why an identity, a client configuration or a session could not be had. The guest gets it
/// in words (WIT's `result<_, string>`), with its causes: [`TlsError::for_guest`].
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} over {} KiB", MAX_PEM / 1024)]
    TooLarge { what: &'static str },
    #[error("{what}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}: no PEM certificate")]
    NoCertificate { what: &'static str },
    #[error(
        "certificate chain: {bytes} bytes of certificates, over {} KiB (every handshake sends \
         the chain whole; real ones are a few KiB)",
        MAX_CHAIN / 1024
    )]
    ChainTooLong { bytes: usize },
    #[error(
        "private key: no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoPrivateKey,
    #[error("{what}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("ALPN: at most {MAX_ALPN} protocols of 1 to 255 bytes each")]
    Alpn,
    #[error("the host has no trust roots ({0}): pass a CA bundle (trust bundle)")]
    NoRoots(String),
    #[error("a client certificate needs both its chain and its private key")]
    HalfIdentity,
    #[error("\"{0}\" is neither a DNS name nor an IP address")]
    ServerName(String),
    #[error("TLS handshake")]
    Handshake(#[source] std::io::Error),
    #[error("TLS handshake: the client said nothing within {}s", SILENCE_TIMEOUT.as_secs())]
    Silent,
    #[error("TLS handshake: not done within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout,
    #[error(
        "{limit} TLS sessions are open already (three quarters of the sidecar's memory limit \
         allows that many: one per {} KiB)",
        SESSION_COST / 1024
    )]
    Sessions { limit: usize },
    #[error(
        "no TLS handshake slot within {}s: {most} are under way (a quarter of the sidecar's \
         memory limit allows that many: one per {} KiB)",
        HANDSHAKE_TIMEOUT.as_secs(),
        HANDSHAKE_COST / 1024
    )]
    NoSlot { most: usize },
    #[error("the handshake's result was taken already")]
    Taken,
}

impl TlsError {
    /// The words the guest gets.
    fn for_guest(&self) -> String {
        crate::error::chain(self)
    }
}

/// A parsed certificate chain and key, ready to accept with.
pub struct ServerIdentity(Arc<ServerConfig>);

impl ServerIdentity {
    fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let (certs, key) = parse_identity(chain, key)?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(server_provider(cpu_has_aes())))
                .with_safe_default_protocol_versions()
                .map_err(|source| TlsError::Rustls {
                    what: "protocol versions",
                    source,
                })?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::Rustls {
                    what: "certificate and key",
                    source,
                })?;
        config.ignore_client_order = true;
        Ok(ServerIdentity(Arc::new(config)))
    }
}

/// The host's cipher suites as a server, in its own order, which it follows rather than the
/// client's (as Go's crypto/tls does): on a CPU with AES instructions AES-128-GCM first (the
/// cheapest there, and its SHA-256 has instructions too, where SHA-384's handshake hashing took
/// 7% of a new connection's CPU), else ChaCha20-Poly1305 first. OpenSSL clients list AES-256
/// first; the security of either AES is far past what an attacker can reach.
fn server_provider(aes: bool) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    let order: [rustls::CipherSuite; 3] = match aes {
        true => [
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        false => [
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ],
    };
    // Stable: the TLS 1.2 suites keep ring's order, after these.
    provider.cipher_suites.sort_by_key(|s| {
        order
            .iter()
            .position(|o| *o == s.suite())
            .unwrap_or(order.len())
    });
    provider
}

/// Whether this CPU has the AES and carry-less multiply instructions AES-GCM runs on.
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// A PEM certificate chain (leaf first, at most [`MAX_CHAIN`] bytes of DER) and private key.
fn parse_identity(
    chain: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    if chain.len() > MAX_PEM || key.len() > MAX_PEM {
        return Err(TlsError::TooLarge {
            what: "certificate chain or key",
        });
    }
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate chain",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "certificate chain",
        });
    }
    let bytes: usize = certs.iter().map(|c| c.len()).sum();
    if bytes > MAX_CHAIN {
        return Err(TlsError::ChainTooLong { bytes });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        source => TlsError::Pem {
            what: "private key",
            source,
        },
    })?;
    Ok((certs, key))
}

/// A handshake under way, then its outcome until the guest takes it.
type FutureStreams = TaskOutcome<Result<GuestEnds, TlsError>>;

/// `get`'s answer: the plaintext streams (input from the peer, output to it), or why not.
type PlaintextStreams =
    Option<Result<(Resource<DynInputStream>, Resource<DynOutputStream>), String>>;

/// What `get` answers for a handshake's outcome, taken ([`TaskOutcome::take`]): the plaintext
/// streams, put in the instance's table, once the handshake is done (`None` before), once.
fn plaintext_streams(
    taken: Option<Option<Result<GuestEnds, TlsError>>>,
    table: &mut ResourceTable,
) -> wasmtime::Result<PlaintextStreams> {
    let ends = match taken {
        None => return Ok(None),
        Some(Some(Ok(ends))) => ends,
        Some(Some(Err(e))) => return Ok(Some(Err(e.for_guest()))),
        Some(None) => return Ok(Some(Err(TlsError::Taken.for_guest()))),
    };
    let input: DynInputStream = Box::new(PlainInput {
        pipe: ends.input,
        held: BytesMut::new(),
        closed: false,
    });
    let output: DynOutputStream = Box::new(ends.output);
    Ok(Some(Ok((table.push(input)?, table.push(output)?))))
}

/// A server handshake (`accept`) and its outcome.
pub struct FutureServerStreams(FutureStreams);

/// A client handshake (`connect`) and its outcome.
pub struct FutureClientStreams(FutureStreams);

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for FutureServerStreams {
    async fn ready(&mut self) {
        self.0.ready().await
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for FutureClientStreams {
    async fn ready(&mut self) {
        self.0.ready().await
    }
}

/// Runs the handshake on the guest's streams (holding a handshake slot, metered against the
/// instance's CPU budget) and, once done, takes a session slot and relays between TLS and a
/// pipe whose other end it returns.
async fn handshake(
    config: Arc<ServerConfig>,
    mut transport: GuestTransport,
    idle: Option<Duration>,
    start: Handshake,
) -> Result<GuestEnds, TlsError> {
    let Handshake {
        slot,
        sessions,
        limit,
        cpu,
        ended,
    } = start;
    // The client's first bytes must come soon: a silent client holds a handshake slot only
    // briefly.
    match tokio::time::timeout(SILENCE_TIMEOUT, transport.first_bytes()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(TlsError::Handshake(e)),
        Err(_) => return Err(TlsError::Silent),
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accept = Metered {
        inner: Box::pin(acceptor.accept(transport)),
        cpu,
        pause: None,
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(TlsError::Handshake(e)),
        Err(_) => return Err(TlsError::HandshakeTimeout),
    };
    drop(slot);
    open_session(tls, &sessions, limit, idle, ended)
}

/// Takes a session slot and relays between the TLS stream and the guest's ends, which it
/// returns.
fn open_session<S>(
    tls: S,
    sessions: &Arc<Semaphore>,
    limit: usize,
    idle: Option<Duration>,
    ended: watch::Receiver<()>,
) -> Result<GuestEnds, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = sessions.clone().try_acquire_owned() else {
        return Err(TlsError::Sessions { limit });
    };
    let (input, host) = tokio::io::duplex(PIPE);
    let (sent, from_guest) = tokio::sync::mpsc::unbounded_channel();
    let budget = Arc::new(OutputBudget::default());
    let session = Session {
        _permit: permit,
        ended,
    };
    // Detached: it ends when the guest drops its ends, or the peer goes away.
    tokio::spawn(relay(tls, host, from_guest, budget.clone(), idle, session));
    Ok(GuestEnds {
        input,
        output: PlainOutput { sent, budget },
    })
}

/// The client side: the handshake (holding a handshake slot, metered against the instance's
/// CPU budget: verifying a server's chain costs too), then a session as for a server.
async fn client_handshake(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    transport: GuestTransport,
    idle: Option<Duration>,
    start: Handshake,
) -> Result<GuestEnds, TlsError> {
    let Handshake {
        slot,
        sessions,
        limit,
        cpu,
        ended,
    } = start;
    let connector = tokio_rustls::TlsConnector::from(config);
    let connect = Metered {
        inner: Box::pin(connector.connect(name, transport)),
        cpu,
        pause: None,
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(TlsError::Handshake(e)),
        Err(_) => return Err(TlsError::HandshakeTimeout),
    };
    drop(slot);
    open_session(tls, &sessions, limit, idle, ended)
}

/// A client configuration: roots to trust, an optional client certificate, ALPN.
pub struct ClientConfig(Arc<rustls::ClientConfig>);

/// ALPN protocols a client may offer, and their longest name (the protocol's limit).
const MAX_ALPN: usize = 16;

impl ClientConfig {
    fn create(
        trust: tls::Trust,
        chain: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
        alpn: Vec<String>,
    ) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        let (system, bundle) = match trust {
            tls::Trust::System => (true, None),
            tls::Trust::Bundle(b) => (false, Some(b)),
            tls::Trust::SystemAndBundle(b) => (true, Some(b)),
        };
        if system {
            let (certs, error) = system_roots();
            roots.add_parsable_certificates(certs.iter().cloned());
            if roots.is_empty() {
                return Err(TlsError::NoRoots(error.clone()));
            }
        }
        if let Some(bundle) = bundle {
            if bundle.len() > MAX_PEM {
                return Err(TlsError::TooLarge { what: "CA bundle" });
            }
            let certs = CertificateDer::pem_slice_iter(&bundle)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Pem {
                    what: "CA bundle",
                    source,
                })?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate { what: "CA bundle" });
            }
            for c in certs {
                roots.add(c).map_err(|source| TlsError::Rustls {
                    what: "CA bundle: a certificate that is not a CA",
                    source,
                })?;
            }
        }
        if alpn.len() > MAX_ALPN || alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(TlsError::Alpn);
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "protocol versions",
            source,
        })?
        .with_root_certificates(roots);
        let mut config = match (chain, key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(chain), Some(key)) => {
                let (certs, key) = parse_identity(&chain, &key)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|source| TlsError::Rustls {
                        what: "client certificate and key",
                        source,
                    })?
            }
            _ => return Err(TlsError::HalfIdentity),
        };
        config.alpn_protocols = alpn.into_iter().map(String::into_bytes).collect();
        Ok(ClientConfig(Arc::new(config)))
    }
}

/// The host's trust roots, read once per process (the system bundle, as openssl finds it:
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`, else Debian's /etc/ssl/certs), and what went wrong reading.
fn system_roots() -> &'static (Vec<CertificateDer<'static>>, String) {
    static ROOTS: std::sync::OnceLock<(Vec<CertificateDer<'static>>, String)> =
        std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        let summary = match errors.is_empty() {
            true => "none found".to_string(),
            false => errors.join("; "),
        };
        (found.certs, summary)
    })
}

/// What a handshake holds of its instance: its handshake slot, the session slots it will take
/// one of, the CPU budget it is charged to, and the signal that the instance has ended.
struct Handshake {
    slot: OwnedSemaphorePermit,
    sessions: Arc<Semaphore>,
    limit: usize,
    cpu: Arc<HandshakeCpu>,
    ended: watch::Receiver<()>,
}

/// What a session holds of its instance: its place among the sessions, and the signal that
/// the instance has ended.
struct Session {
    _permit: OwnedSemaphorePermit,
    ended: watch::Receiver<()>,
}

/// Moves plaintext between the TLS session and the guest's pipe. The client's end of input
/// shows up as the guest's; the guest dropping its streams ends the session with close_notify.
/// `idle` with nothing moved either way, or the end of the instance, ends it at once.
async fn relay<S>(
    tls: S,
    pipe: DuplexStream,
    from_guest: UnboundedReceiver<Bytes>,
    budget: Arc<OutputBudget>,
    idle: Option<Duration>,
    mut session: Session,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // A guest waiting for room learns that the session is gone.
    let _wake = WakeOnDrop(budget.clone());
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut pipe_read, mut pipe_write) = tokio::io::split(pipe);
    let start = tokio::time::Instant::now();
    // When something last moved, in ms since `start` (both directions run in this task).
    let moved = AtomicU64::new(0);
    let touch = || moved.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let to_guest = async {
        let mut buf = vec![0u8; PIPE];
        loop {
            match tls_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    touch();
                    if pipe_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = pipe_write.shutdown().await;
        // The guest may still be answering: the session lasts until it is done.
        std::future::pending::<()>().await
    };
    let to_client = async {
        // Moved in, so it goes with this future, before `_wake` wakes a guest waiting for room
        // (which then finds its output closed).
        let mut from_guest = from_guest;
        while let Some(first) = from_guest.recv().await {
            touch();
            let mut cost = OutputBudget::cost(first.len());
            let mut sent = tls_write.write_all(&first).await.is_ok();
            // What the guest wrote meanwhile goes with it, in one flush.
            while sent {
                let Ok(more) = from_guest.try_recv() else {
                    break;
                };
                cost += OutputBudget::cost(more.len());
                sent = tls_write.write_all(&more).await.is_ok();
            }
            // The guest's writes are a message to the client now, not when more comes.
            let flushed = sent && tls_write.flush().await.is_ok();
            budget.sent(cost);
            if !flushed {
                return;
            }
            // A client still taking a large answer in is not idle.
            touch();
        }
        // The guest dropped its output; the session lasts until it drops its input too (the
        // pipe's end: the guest never writes to it).
        let _ = pipe_read.read(&mut [0u8; 1]).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, tls_write.shutdown()).await;
    };
    let idle_out = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let deadline = start + Duration::from_millis(moved.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        () = to_guest => {}
        () = to_client => {}
        () = idle_out => {}
        // Only errs: the instance's store, and with it the sender, is gone.
        _ = session.ended.changed() => {}
    }
}

/// The guest's input and output streams (the ciphertext side: usually a TCP connection) as one
/// tokio transport for tokio-rustls.
struct GuestTransport {
    input: Waiting<DynInputStream>,
    output: Waiting<DynOutputStream>,
    /// A flush was asked of the output and has not completed yet.
    flushing: bool,
    /// Bytes read ahead by [`GuestTransport::first_bytes`], given out first.
    peeked: Option<Bytes>,
}

impl GuestTransport {
    /// Waits for the client's first bytes (kept for the handshake to read), or its end.
    async fn first_bytes(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| loop {
            let stream = ready!(idle(&mut self.input, cx));
            match stream.read(PIPE) {
                Ok(bytes) if bytes.is_empty() => wait_ready(&mut self.input),
                Ok(bytes) => {
                    self.peeked = Some(bytes);
                    return Poll::Ready(Ok(()));
                }
                Err(StreamError::Closed) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before its hello",
                    )))
                }
                Err(e) => return Poll::Ready(Err(stream_error(e))),
            }
        })
        .await
    }
}

/// A stream, or the future that waits for it to become ready and gives it back.
enum Waiting<S> {
    Idle(S),
    Waiting(Pin<Box<dyn Future<Output = S> + Send>>),
}

/// Polls until `slot` holds the stream, ready or not: a pending readiness wait first.
fn idle<'a, S>(slot: &'a mut Waiting<Box<S>>, cx: &mut Context<'_>) -> Poll<&'a mut Box<S>>
where
    S: wasmtime_wasi_io::poll::Pollable + ?Sized + Send + 'static,
{
    if let Waiting::Waiting(wait) = slot {
        let stream = ready!(wait.as_mut().poll(cx));
        *slot = Waiting::Idle(stream);
    }
    match slot {
        Waiting::Idle(stream) => Poll::Ready(stream),
        Waiting::Waiting(_) => unreachable!("set just above"),
    }
}

/// Starts waiting for the stream in `slot` to become ready.
fn wait_ready<S>(slot: &mut Waiting<Box<S>>)
where
    S: wasmtime_wasi_io::poll::Pollable + ?Sized + Send + 'static,
{
    let placeholder = Waiting::Waiting(Box::pin(std::future::pending()));
    if let Waiting::Idle(mut stream) = std::mem::replace(slot, placeholder) {
        *slot = Waiting::Waiting(Box::pin(async move {
            stream.ready().await;
            stream
        }));
    }
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other.to_string()),
    }
}

impl AsyncRead for GuestTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut peeked) = self.peeked.take() {
            let n = peeked.len().min(buf.remaining());
            buf.put_slice(&peeked.split_to(n));
            if !peeked.is_empty() {
                self.peeked = Some(peeked);
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            let stream = ready!(idle(&mut self.input, cx));
            match stream.read(buf.remaining()) {
                Ok(bytes) if bytes.is_empty() => wait_ready(&mut self.input),
                Ok(bytes) => {
                    buf.put_slice(&bytes);
                    return Poll::Ready(Ok(()));
                }
                // End of input: a read of nothing.
                Err(StreamError::Closed) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(stream_error(e))),
            }
        }
    }
}

impl AsyncWrite for GuestTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let stream = ready!(idle(&mut self.output, cx));
            match stream.check_write() {
                Ok(0) => wait_ready(&mut self.output),
                Ok(permit) => {
                    let n = permit.min(buf.len());
                    return Poll::Ready(
                        stream
                            .write(Bytes::copy_from_slice(&buf[..n]))
                            .map(|()| n)
                            .map_err(stream_error),
                    );
                }
                Err(e) => return Poll::Ready(Err(stream_error(e))),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // WASI's contract: `flush`, then the flush is done once `check-write` is ready again.
        loop {
            let flushing = self.flushing;
            let stream = ready!(idle(&mut self.output, cx));
            if !flushing {
                if let Err(e) = stream.flush() {
                    return Poll::Ready(Err(stream_error(e)));
                }
                self.flushing = true;
            }
            let stream = ready!(idle(&mut self.output, cx));
            match stream.check_write() {
                Ok(0) => wait_ready(&mut self.output),
                Ok(_) => {
                    self.flushing = false;
                    return Poll::Ready(Ok(()));
                }
                Err(e) => {
                    self.flushing = false;
                    return Poll::Ready(Err(stream_error(e)));
                }
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The guest's plaintext input: the session's pipe, read when the guest asks (no task of its
/// own), holding at most one chunk.
struct PlainInput {
    pipe: DuplexStream,
    held: BytesMut,
    closed: bool,
}

impl PlainInput {
    /// Reads what the pipe has into `held` (empty: nothing held, not closed).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.held.is_empty() || self.closed {
            return Poll::Ready(());
        }
        // Not zeroed: this runs on every poll of the guest's pollable (16 KiB of memset was 7%
        // of the proxy's CPU at 100 connections).
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); PIPE];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut self.pipe).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => self.closed = true,
            Poll::Ready(Ok(())) => self.held.extend_from_slice(buf.filled()),
            Poll::Ready(Err(_)) => self.closed = true,
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(())
    }
}

#[wasmtime_wasi_io::async_trait]
impl InputStream for PlainInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        // Whatever the pipe holds now, without waiting.
        let _ = self.poll_fill(&mut Context::from_waker(std::task::Waker::noop()));
        if !self.held.is_empty() {
            let n = size.min(self.held.len());
            return Ok(self.held.split_to(n).freeze());
        }
        if self.closed {
            return Err(StreamError::Closed);
        }
        Ok(Bytes::new())
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for PlainInput {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// What a session gives the guest: the pipe its plaintext input comes through, and where its
/// output goes.
struct GuestEnds {
    input: DuplexStream,
    output: PlainOutput,
}

/// What the guest's output the relay has not sent to the client yet holds in the host (at most
/// [`PIPE`]: its bytes, and [`WRITE_OVERHEAD`] for each write, so that many small writes cost
/// what they hold), and the guest's wait for room.
#[derive(Default)]
struct OutputBudget {
    in_flight: AtomicUsize,
    room: tokio::sync::Notify,
}

/// What a queued write holds beside its bytes: its place in the channel, its allocation.
const WRITE_OVERHEAD: usize = 128;

impl OutputBudget {
    /// The largest write that fits now.
    fn room(&self) -> usize {
        PIPE.saturating_sub(self.in_flight.load(Ordering::Acquire))
            .saturating_sub(WRITE_OVERHEAD)
    }

    fn cost(len: usize) -> usize {
        len + WRITE_OVERHEAD
    }

    /// The guest has queued a write of this cost.
    fn queued(&self, cost: usize) {
        self.in_flight.fetch_add(cost, Ordering::AcqRel);
    }

    /// The relay has sent writes of this cost on (or a queued one never left).
    fn sent(&self, cost: usize) {
        self.in_flight.fetch_sub(cost, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

/// Wakes a guest waiting for room once the relay is gone.
struct WakeOnDrop(Arc<OutputBudget>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.room.notify_waiters();
    }
}

/// The guest's plaintext output: each write goes to the relay whole, at once, in the guest's own
/// call (no worker task as wasmtime-wasi's `AsyncWriteStream` has, one more wake-up per
/// answer; and nothing held back for a later call, which a guest that writes its last bytes
/// and then waits on something else would never make). `check-write` grants what the relay
/// has room for, [`PIPE`] bytes not yet sent, and a write past it traps, as WASI says.
struct PlainOutput {
    sent: UnboundedSender<Bytes>,
    budget: Arc<OutputBudget>,
}

#[wasmtime_wasi_io::async_trait]
impl OutputStream for PlainOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.sent.is_closed() {
            return Err(StreamError::Closed);
        }
        if bytes.len() > self.budget.room() {
            // Past what `check-write` granted: a trap, as wasmtime-wasi's streams make it.
            return Err(StreamError::trap(
                "write exceeded the budget check-write gave",
            ));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let cost = OutputBudget::cost(bytes.len());
        self.budget.queued(cost);
        if self.sent.send(bytes).is_err() {
            self.budget.sent(cost);
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // The relay sends each write on as it comes. A flush is said to be done once there is
        // room again, not once all is sent: as before, where it meant the pipe had the bytes.
        match self.sent.is_closed() {
            true => Err(StreamError::Closed),
            false => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.sent.is_closed() {
            true => Err(StreamError::Closed),
            false => Ok(self.budget.room()),
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for PlainOutput {
    async fn ready(&mut self) {
        loop {
            // Registered before the check, so a `sent` in between is not missed.
            let room = self.budget.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            if self.sent.is_closed() || self.budget.room() > 0 {
                return;
            }
            room.await;
        }
    }
}

/// The `tls` host: this capability's state and the instance's resource table.
pub struct TlsView<'a> {
    ctx: &'a mut TlsCtx,
    table: &'a mut ResourceTable,
}

struct HasTls;

impl HasData for HasTls {
    type Data<'a> = TlsView<'a>;
}

impl tls::Host for TlsView<'_> {
    async fn accept(
        &mut self,
        identity: Resource<ServerIdentity>,
        input: Resource<DynInputStream>,
        output: Resource<DynOutputStream>,
        idle_timeout_ms: u64,
    ) -> wasmtime::Result<Resource<FutureServerStreams>> {
        let idle = (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms));
        let config = self.table.get(&identity)?.0.clone();
        let input = self.table.delete(input)?;
        let output = self.table.delete(output)?;
        let transport = GuestTransport {
            input: Waiting::Idle(input),
            output: Waiting::Idle(output),
            flushing: false,
            peeked: None,
        };
        let slots = self.ctx.handshakes.clone();
        let most = self.ctx.grant.handshakes;
        let sessions = self.ctx.sessions.clone();
        let limit = self.ctx.grant.sessions;
        let cpu = self.ctx.cpu.clone();
        let ended = self.ctx.ended.subscribe();
        // A handshake waits for a slot (the ones under way end within seconds: silent clients
        // after SILENCE_TIMEOUT), holding nothing but the connection's streams meanwhile.
        let outcome = TaskOutcome::spawn(async move {
            let slot = handshake_slot(slots, most).await?;
            let start = Handshake {
                slot,
                sessions,
                limit,
                cpu,
                ended,
            };
            handshake(config, transport, idle, start).await
        });
        Ok(self.table.push(FutureServerStreams(outcome))?)
    }

    async fn connect(
        &mut self,
        config: Resource<ClientConfig>,
        server_name: String,
        input: Resource<DynInputStream>,
        output: Resource<DynOutputStream>,
        idle_timeout_ms: u64,
    ) -> wasmtime::Result<Resource<FutureClientStreams>> {
        let idle = (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms));
        let config = self.table.get(&config)?.0.clone();
        let input = self.table.delete(input)?;
        let output = self.table.delete(output)?;
        let name = match rustls::pki_types::ServerName::try_from(server_name.clone()) {
            Ok(name) => name,
            Err(_) => {
                let failed = TaskOutcome::Done(Err(TlsError::ServerName(server_name)));
                return Ok(self.table.push(FutureClientStreams(failed))?);
            }
        };
        self.ctx.reports.used(
            &self.ctx.container,
            crate::report::Use {
                class: "tls-connect".into(),
                target: server_name,
                via: None,
            },
        );
        let transport = GuestTransport {
            input: Waiting::Idle(input),
            output: Waiting::Idle(output),
            flushing: false,
            peeked: None,
        };
        let slots = self.ctx.handshakes.clone();
        let most = self.ctx.grant.handshakes;
        let sessions = self.ctx.sessions.clone();
        let limit = self.ctx.grant.sessions;
        let cpu = self.ctx.cpu.clone();
        let ended = self.ctx.ended.subscribe();
        let outcome = TaskOutcome::spawn(async move {
            let slot = handshake_slot(slots, most).await?;
            let start = Handshake {
                slot,
                sessions,
                limit,
                cpu,
                ended,
            };
            client_handshake(config, name, transport, idle, start).await
        });
        Ok(self.table.push(FutureClientStreams(outcome))?)
    }
}

/// A handshake waits for a slot (the ones under way end within seconds: silent clients after
/// SILENCE_TIMEOUT), holding nothing but the connection's streams meanwhile.
async fn handshake_slot(
    slots: Arc<Semaphore>,
    most: usize,
) -> Result<OwnedSemaphorePermit, TlsError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, slots.acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(TlsError::NoSlot { most }),
    }
}

impl tls::HostClientConfig for TlsView<'_> {
    async fn create(
        &mut self,
        trust: tls::Trust,
        client_certificate_chain: Option<Vec<u8>>,
        client_private_key: Option<Vec<u8>>,
        alpn: Vec<String>,
    ) -> wasmtime::Result<Result<Resource<ClientConfig>, String>> {
        if self.ctx.identities >= MAX_IDENTITIES {
            return Ok(Err(format!(
                "{MAX_IDENTITIES} server identities and client configurations are held already: drop one first"
            )));
        }
        Ok(
            match ClientConfig::create(trust, client_certificate_chain, client_private_key, alpn) {
                Ok(config) => {
                    self.ctx.identities += 1;
                    Ok(self.table.push(config)?)
                }
                Err(e) => Err(e.for_guest()),
            },
        )
    }

    async fn drop(&mut self, config: Resource<ClientConfig>) -> wasmtime::Result<()> {
        self.table.delete(config)?;
        self.ctx.identities -= 1;
        Ok(())
    }
}

impl tls::HostFutureClientStreams for TlsView<'_> {
    async fn subscribe(
        &mut self,
        this: Resource<FutureClientStreams>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi_io::poll::DynPollable>> {
        wasmtime_wasi_io::poll::subscribe(self.table, this)
    }

    async fn get(
        &mut self,
        this: Resource<FutureClientStreams>,
    ) -> wasmtime::Result<PlaintextStreams> {
        let taken = self.table.get_mut(&this)?.0.take().await;
        plaintext_streams(taken, self.table)
    }

    async fn drop(&mut self, this: Resource<FutureClientStreams>) -> wasmtime::Result<()> {
        // A handshake still running is aborted with its task.
        self.table.delete(this)?;
        Ok(())
    }
}

impl tls::HostServerIdentity for TlsView<'_> {
    async fn from_pem(
        &mut self,
        certificate_chain: Vec<u8>,
        private_key: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<ServerIdentity>, String>> {
        if self.ctx.identities >= MAX_IDENTITIES {
            return Ok(Err(format!(
                "{MAX_IDENTITIES} server identities are held already: drop one first"
            )));
        }
        Ok(
            match ServerIdentity::from_pem(&certificate_chain, &private_key) {
                Ok(identity) => {
                    self.ctx.identities += 1;
                    Ok(self.table.push(identity)?)
                }
                Err(e) => Err(e.for_guest()),
            },
        )
    }

    async fn drop(&mut self, identity: Resource<ServerIdentity>) -> wasmtime::Result<()> {
        self.table.delete(identity)?;
        self.ctx.identities -= 1;
        Ok(())
    }
}

impl tls::HostFutureServerStreams for TlsView<'_> {
    async fn subscribe(
        &mut self,
        this: Resource<FutureServerStreams>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi_io::poll::DynPollable>> {
        wasmtime_wasi_io::poll::subscribe(self.table, this)
    }

    async fn get(
        &mut self,
        this: Resource<FutureServerStreams>,
    ) -> wasmtime::Result<PlaintextStreams> {
        let taken = self.table.get_mut(&this)?.0.take().await;
        plaintext_streams(taken, self.table)
    }

    async fn drop(&mut self, this: Resource<FutureServerStreams>) -> wasmtime::Result<()> {
        // A handshake still running is aborted with its task.
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// A PEM block of `n` bytes of DER (not a real certificate: the size is checked first).
    fn pem(kind: &str, n: usize) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(vec![0x30u8; n]);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
            lines.join("\n")
        )
    }

    /// The server's order, whatever the client's: AES-128-GCM first with AES instructions,
    /// ChaCha20 first without; TLS 1.2 suites after the TLS 1.3 ones, in ring's order.
    #[test]
    fn the_server_picks_its_suite_by_the_cpu() {
        use rustls::CipherSuite::*;
        let names = |aes| -> Vec<rustls::CipherSuite> {
            server_provider(aes)
                .cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect()
        };
        let with = names(true);
        assert_eq!(
            with[..3],
            [
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(names(false)[0], TLS13_CHACHA20_POLY1305_SHA256);
        let ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let tls12 = |v: &[rustls::CipherSuite]| -> Vec<rustls::CipherSuite> {
            v.iter()
                .copied()
                .filter(|s| !format!("{s:?}").starts_with("TLS13"))
                .collect()
        };
        assert_eq!(tls12(&with), tls12(&ring));
        assert_eq!(with.len(), ring.len());
    }

    #[test]
    fn a_chain_over_64_kib_is_refused() {
        // A handshake sends the chain whole: a 1 MiB one once answered each 517-byte hello with
        // 714 KB.
        let chain = pem("CERTIFICATE", 40 << 10) + &pem("CERTIFICATE", 40 << 10);
        let Err(e) = ServerIdentity::from_pem(chain.as_bytes(), b"") else {
            panic!("an 80 KiB chain was accepted");
        };
        assert!(matches!(e, TlsError::ChainTooLong { .. }), "{e:?}");
        assert!(e.for_guest().contains("over 64 KiB"), "{e}");
    }

    /// A runtime on one thread whose clock moves only when everything waits.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn handshake_cpu_is_a_bucket_of_the_cpu_limit() {
        paused_runtime().block_on(async {
            // 100m: 100 ms of CPU per second, at most one second's worth held.
            let cpu = HandshakeCpu::new(100);
            assert_eq!(cpu.wait(), None, "a full bucket");
            cpu.charge(300_000_000);
            let wait = cpu.wait().expect("in debt after 300 ms of CPU");
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(3)).contains(&wait),
                "{wait:?}"
            );
            tokio::time::advance(wait).await;
            assert_eq!(cpu.wait(), None, "paid back by waiting");
        });
    }

    #[test]
    fn the_plaintext_output_hands_each_write_on_at_once_within_its_budget() {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                use wasmtime_wasi_io::poll::Pollable;
                let (sent, mut relay) = tokio::sync::mpsc::unbounded_channel();
                let budget = Arc::new(OutputBudget::default());
                let mut out = PlainOutput {
                    sent,
                    budget: budget.clone(),
                };
                // Each write costs its bytes and WRITE_OVERHEAD.
                let each = WRITE_OVERHEAD;
                assert_eq!(out.check_write().unwrap(), PIPE - each);
                out.write(Bytes::from(vec![1u8; PIPE - 100 - 2 * each]))
                    .unwrap();
                assert_eq!(out.check_write().unwrap(), 100);
                assert!(
                    out.write(Bytes::from(vec![2u8; 101])).is_err(),
                    "a write past check-write's budget traps"
                );
                out.write(Bytes::from(vec![2u8; 100])).unwrap();
                assert_eq!(
                    out.check_write().unwrap(),
                    0,
                    "the relay holds a pipe's worth"
                );
                let pending = std::pin::pin!(out.ready())
                    .as_mut()
                    .poll(&mut Context::from_waker(std::task::Waker::noop()))
                    .is_pending();
                assert!(pending, "not ready while the relay has no room");
                // Both writes reached the relay at once: none waits for another call of the
                // guest's (a guest that wrote its last bytes may wait on something else).
                let first = relay.try_recv().unwrap();
                let second = relay.try_recv().unwrap();
                assert_eq!((first.len(), second.len()), (PIPE - 100 - 2 * each, 100));
                budget.sent(OutputBudget::cost(first.len()));
                out.ready().await;
                assert_eq!(out.check_write().unwrap(), PIPE - 100 - 2 * each);
                // The relay gone: the guest sees its output closed, and a wait ends.
                drop(relay);
                assert!(matches!(out.check_write(), Err(StreamError::Closed)));
                assert!(matches!(
                    out.write(Bytes::from_static(b"late")),
                    Err(StreamError::Closed)
                ));
                assert!(matches!(out.flush(), Err(StreamError::Closed)));
                out.ready().await;
            });
    }

    #[test]
    fn a_guest_waiting_for_room_is_woken_when_its_session_ends() {
        paused_runtime().block_on(async {
            use wasmtime_wasi_io::poll::Pollable;
            // A client that never reads: the relay blocks sending to it.
            let (tls, _client) = tokio::io::duplex(1024);
            let (_input, host) = tokio::io::duplex(PIPE);
            let (sent, from_guest) = tokio::sync::mpsc::unbounded_channel();
            let budget = Arc::new(OutputBudget::default());
            let sessions = Arc::new(Semaphore::new(1));
            let (_instance, ended) = watch::channel(());
            let session = Session {
                _permit: sessions.clone().try_acquire_owned().unwrap(),
                ended,
            };
            let idle = Some(Duration::from_secs(60));
            tokio::spawn(relay(tls, host, from_guest, budget.clone(), idle, session));
            let mut out = PlainOutput { sent, budget };
            out.write(Bytes::from(vec![0u8; PIPE - WRITE_OVERHEAD]))
                .unwrap();
            assert_eq!(out.check_write().unwrap(), 0);
            // Nothing moves for 60 s: the session ends, and the guest waiting for room is
            // woken to find its output closed.
            tokio::time::timeout(Duration::from_secs(600), out.ready())
                .await
                .expect("the waiting guest was not woken");
            assert!(matches!(out.check_write(), Err(StreamError::Closed)));
            assert_eq!(sessions.available_permits(), 1, "its place is given back");
        });
    }
}
