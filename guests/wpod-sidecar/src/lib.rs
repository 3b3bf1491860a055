//! wpod-sidecar: write wpod sidecars in Rust.
//!
//! Typed wrappers over wpod's own interfaces (`wit/sidecar.wit`, `wpod:sidecar@0.2.2`):
//!
//! - [`ready`]: tell the pod this sidecar is ready (a native sidecar counts as started then);
//! - [`containers`], [`stats`], [`wait_running`]: the main containers and their live statistics (the pod grants
//!   them with `shareProcessNamespace: true`);
//! - [`main_logs`]: follow a main container's output;
//! - [`signal`]: signal a main container (also needs `capabilities.add: [KILL]`);
//! - [`next_event`], [`try_next_event`]: the pod's events, `stopping` among them.
//! - [`tls`]: TLS run by the host at native speed, as a server on a connection the sidecar
//!   accepted or as a client ([`tls::connect`]) to a server its outbound rules allow.
//! - [`relay`]: bytes moved by the host from one stream to another until the first ends (a
//!   proxy's two directions), with no call into the sidecar per chunk.
//!
//! With the `async` feature, on [wstd](https://docs.rs/wstd)'s reactor, [`events`] and
//! [`MainLogs::next`] wait in the same poll as wstd's sockets and timers, so one sidecar serves
//! many connections while it follows the pod (see `guests/log-peek`).
//!
//! The raw bindings stay available as [`lifecycle`] and [`main_process`]. A component imports
//! only the functions its guest calls; a guest that uses only std (WASI) needs none of this.

// The `imports` world has only wpod's interfaces; std brings WASI and `run`. Pollables are
// wasip2's, the crate wstd is built on.
wit_bindgen::generate!({
    path: "../../wit",
    world: "wpod:sidecar/imports",
    with: {
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:io/error@0.2.12": wasip2::io::error,
    },
});

pub use wpod::sidecar::{lifecycle, main_process};

pub use lifecycle::Event;
pub use main_process::{Error, Info, LogLine, LogStart, ProcessStats, State, StreamKind};

/// An I/O error as WASI names it (`connection-refused`), for messages. Rust's own text for an
/// error from WASI ends in `(os error 14)`: wasi-libc's number for it, which reads as `EFAULT` to
/// anyone who knows Linux's numbers. Errors that are not WASI's keep their text.
pub fn io_error(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else { return e.to_string() };
    // wasi-libc's errno values (WASI preview 1's), as WASI 0.2 names the error behind each.
    let name = match code {
        2 => "access-denied",
        3 => "address-in-use",
        4 => "address-not-bindable",
        6 => "would-block",
        7 => "concurrency-conflict",
        13 => "connection-aborted",
        14 => "connection-refused",
        15 => "connection-reset",
        20 => "exist",
        23 => "remote-unreachable",
        28 => "invalid-argument",
        29 => "io",
        31 => "is-directory",
        33 => "new-socket-limit",
        35 => "datagram-too-large",
        40 => "remote-unreachable",
        44 => "no-entry",
        48 => "out-of-memory",
        51 => "insufficient-space",
        53 => "invalid-state",
        54 => "not-directory",
        58 => "not-supported",
        63 | 76 => "not-permitted",
        64 => "pipe",
        69 => "read-only",
        73 => "timeout",
        _ => return format!("{} (WASI errno {code})", e.kind()),
    };
    name.to_string()
}

/// Tells the pod this sidecar is ready: containers ordered after it may start.
pub fn ready() {
    lifecycle::ready()
}

/// The pod's main containers, in manifest order.
pub fn containers() -> Vec<Info> {
    main_process::containers()
}

/// Waits up to `timeout` until main container `name` runs (its output can come a moment before
/// the pod records it as running). Whether it does. Consumes the pod events that come
/// meanwhile (`stopping` stays: every later call returns it again).
pub fn wait_running(name: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if main_process::get(name).is_ok_and(|c| c.state == State::Running) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        // Wakes up on the pod's next event (MainStarted), or in 100 ms at most.
        let _ = lifecycle::next_event(
            left.min(std::time::Duration::from_millis(100)).as_millis() as u64
        );
    }
}

/// Live statistics of main container `name`'s process.
pub fn stats(name: &str) -> Result<ProcessStats, Error> {
    main_process::stats(name)
}

/// Sends signal `signal` (a Linux signal number, 1 for SIGHUP) to main container `name`.
pub fn signal(name: &str, signal: u32) -> Result<(), Error> {
    main_process::signal(name, signal)
}

/// Waits up to `timeout` for the pod's next event.
pub fn next_event(timeout: std::time::Duration) -> Option<Event> {
    lifecycle::next_event(timeout.as_millis().min(u64::MAX as u128) as u64)
}

/// The pod's next event if one has happened, without waiting.
pub fn try_next_event() -> Option<Event> {
    lifecycle::try_next_event()
}

/// A main container's output, line by line.
pub struct MainLogs {
    stream: main_process::LogStream,
}

/// Follows main container `name`'s stdout and stderr, from its first line (`LogStart::Beginning`)
/// or from now on.
pub fn main_logs(name: &str, from: LogStart) -> Result<MainLogs, Error> {
    main_process::logs(name, from).map(|stream| MainLogs { stream })
}

impl MainLogs {
    /// The next lines (at most `max`), waiting for them; none once the container has exited and
    /// every line was delivered.
    pub fn next_blocking(&self, max: u32) -> Vec<LogLine> {
        self.stream.next(max)
    }

    /// The lines waiting now (at most `max`), possibly none.
    pub fn try_next(&self, max: u32) -> Vec<LogLine> {
        self.stream.try_next(max)
    }

    /// A pollable ready when [`MainLogs::try_next`] has lines, or the output has ended. It is
    /// the stream's child: drop it before this `MainLogs` (dropping the stream first traps).
    pub fn subscribe(&self) -> wasip2::io::poll::Pollable {
        self.stream.subscribe()
    }

    /// The next lines (at most `max`), waiting on wstd's reactor; none once the container has
    /// exited and every line was delivered.
    #[cfg(feature = "async")]
    pub async fn next(&self, max: u32) -> Vec<LogLine> {
        let lines = self.stream.try_next(max);
        if !lines.is_empty() {
            return lines;
        }
        wstd::runtime::AsyncPollable::new(self.stream.subscribe())
            .wait_for()
            .await;
        self.stream.try_next(max)
    }
}

/// A pollable ready when [`try_next_event`] has an event (once the pod stops, always).
pub fn subscribe_events() -> wasip2::io::poll::Pollable {
    lifecycle::subscribe()
}

/// The pod's events, awaited on wstd's reactor.
#[cfg(feature = "async")]
pub struct Events {
    ready: wstd::runtime::AsyncPollable,
}

/// The pod's events, from now on.
#[cfg(feature = "async")]
pub fn events() -> Events {
    Events {
        ready: wstd::runtime::AsyncPollable::new(lifecycle::subscribe()),
    }
}

#[cfg(feature = "async")]
impl Events {
    /// Waits for the pod's next event.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = lifecycle::try_next_event() {
                return e;
            }
            self.ready.wait_for().await;
        }
    }
}

/// Transfers the host runs between the sidecar's own streams (`wpod:sidecar/relay`).
pub mod relay {
    pub use crate::wpod::sidecar::relay::Transfer;
    use wasip2::io::streams::{InputStream, OutputStream};

    /// Starts moving everything `from` gives to `to` until `from` ends (then `to` is
    /// flushed) or either fails; the host takes both streams. Wait on
    /// [`Transfer::subscribe`], then [`Transfer::get`] says how many bytes moved or why it
    /// stopped. Dropping the transfer stops it. Fails when the sidecar already has as many
    /// transfers as its memory limit allows.
    pub fn start(from: InputStream, to: OutputStream) -> Result<Transfer, String> {
        crate::wpod::sidecar::relay::start(from, to)
    }
}

/// TLS run by the host at native speed (ring, AES-NI) on a connection the sidecar accepted:
/// the sidecar hands over its certificate and key (read from its own volume) and the
/// connection's streams, and gets plaintext streams back. Always granted; it reaches nothing
/// new. A sidecar may equally bring its own TLS library.
pub mod tls {
    pub use crate::wpod::sidecar::tls::{
        accept as start, connect as start_connect, ClientConfig, FutureClientStreams,
        FutureServerStreams, ServerIdentity, Trust,
    };
    use wasip2::io::streams::{InputStream, OutputStream, StreamError};
    use wasip2::sockets::network::{ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress};
    use wasip2::sockets::tcp::TcpSocket;
    use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

    /// A server identity from a PEM certificate chain (leaf first) and a PEM private key.
    pub fn identity(
        certificate_chain: &[u8],
        private_key: &[u8],
    ) -> Result<ServerIdentity, String> {
        ServerIdentity::from_pem(certificate_chain, private_key)
    }

    /// The server side of a TLS handshake on a connection's streams (the host takes them
    /// over): the plaintext streams from and to the client, once the handshake is done. The
    /// host gives a client 10 s for it, and ends the session after `idle` with nothing moved
    /// either way (`None`: never). Blocks the whole component; see [`accept`] for async.
    pub fn accept_blocking(
        identity: &ServerIdentity,
        input: InputStream,
        output: OutputStream,
        idle: Option<std::time::Duration>,
    ) -> Result<(InputStream, OutputStream), String> {
        let future = start(identity, input, output, idle_ms(idle));
        future.subscribe().block();
        outcome(&future)
    }

    /// As [`accept_blocking`], waiting on wstd's reactor: other connections go on meanwhile.
    #[cfg(feature = "async")]
    pub async fn accept(
        identity: &ServerIdentity,
        input: InputStream,
        output: OutputStream,
        idle: Option<std::time::Duration>,
    ) -> Result<(InputStream, OutputStream), String> {
        let future = start(identity, input, output, idle_ms(idle));
        wstd::runtime::AsyncPollable::new(future.subscribe())
            .wait_for()
            .await;
        outcome(&future)
    }

    /// How this client connects: whom it trusts (the host's roots, or a PEM CA bundle read
    /// from the sidecar's volume, or both), with no client certificate and no ALPN. See
    /// [`ClientConfig::create`] for those.
    pub fn client_config(trust: Trust) -> Result<ClientConfig, String> {
        ClientConfig::create(&trust, None, None, &[])
    }

    /// A TLS connection whose crypto the host runs: plaintext `Read` and `Write`.
    pub struct TlsStream {
        input: InputStream,
        output: OutputStream,
        // The TCP connection under it, closed after the TLS session's streams.
        _socket: TcpSocket,
    }

    /// Connects over TCP to `host:port` (a name is looked up through the pod: the sidecar's
    /// outbound rules must allow it) and runs the client side of TLS there, verifying the
    /// server's certificate for `server_name` (`None`: `host`). Blocks the whole component.
    pub fn connect(
        addr: &str,
        server_name: Option<&str>,
        config: &ClientConfig,
        idle: Option<std::time::Duration>,
    ) -> Result<TlsStream, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr}: expected HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("{addr}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (socket, input, output) = tcp_connect(host, port)?;
        let future = start_connect(config, server_name.unwrap_or(host), input, output, idle_ms(idle));
        future.subscribe().block();
        let (input, output) = future
            .get()
            .unwrap_or_else(|| Err("the TLS handshake is still running".into()))?;
        Ok(TlsStream { input, output, _socket: socket })
    }

    /// A TCP connection to the first address of `host` that answers.
    fn tcp_connect(host: &str, port: u16) -> Result<(TcpSocket, InputStream, OutputStream), String> {
        let network = instance_network::instance_network();
        let lookup = ip_name_lookup::resolve_addresses(&network, host)
            .map_err(|e| format!("look up {host}: {e:?}"))?;
        let mut addrs = Vec::new();
        loop {
            match lookup.resolve_next_address() {
                Ok(Some(a)) => addrs.push(a),
                Ok(None) => break,
                Err(ErrorCode::WouldBlock) => lookup.subscribe().block(),
                Err(e) => return Err(format!("look up {host}: {e:?}")),
            }
        }
        let mut last = format!("{host}: no address");
        for ip in addrs {
            let (family, target) = match ip {
                IpAddress::Ipv4(a) => (
                    IpAddressFamily::Ipv4,
                    IpSocketAddress::Ipv4(wasip2::sockets::network::Ipv4SocketAddress { port, address: a }),
                ),
                IpAddress::Ipv6(a) => (
                    IpAddressFamily::Ipv6,
                    IpSocketAddress::Ipv6(wasip2::sockets::network::Ipv6SocketAddress {
                        port,
                        address: a,
                        flow_info: 0,
                        scope_id: 0,
                    }),
                ),
            };
            let socket = tcp_create_socket::create_tcp_socket(family).map_err(|e| format!("{e:?}"))?;
            if let Err(e) = socket.start_connect(&network, target) {
                last = format!("connect to {host}:{port}: {e:?}");
                continue;
            }
            loop {
                match socket.finish_connect() {
                    Ok((input, output)) => return Ok((socket, input, output)),
                    Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
                    Err(e) => {
                        last = format!("connect to {host}:{port}: {e:?}");
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    impl std::io::Read for TlsStream {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.input.blocking_read(buf.len() as u64) {
                Ok(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Err(StreamError::Closed) => Ok(0),
                Err(StreamError::LastOperationFailed(e)) => Err(std::io::Error::other(e.to_debug_string())),
            }
        }
    }

    impl std::io::Write for TlsStream {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // WASI's blocking write takes at most 4096 bytes at once.
            let n = buf.len().min(4096);
            match self.output.blocking_write_and_flush(&buf[..n]) {
                Ok(()) => Ok(n),
                Err(StreamError::Closed) => Err(std::io::ErrorKind::BrokenPipe.into()),
                Err(StreamError::LastOperationFailed(e)) => Err(std::io::Error::other(e.to_debug_string())),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            match self.output.blocking_flush() {
                Ok(()) => Ok(()),
                Err(StreamError::Closed) => Err(std::io::ErrorKind::BrokenPipe.into()),
                Err(StreamError::LastOperationFailed(e)) => Err(std::io::Error::other(e.to_debug_string())),
            }
        }
    }

    fn idle_ms(idle: Option<std::time::Duration>) -> u64 {
        idle.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64)
    }

    fn outcome(future: &FutureServerStreams) -> Result<(InputStream, OutputStream), String> {
        future
            .get()
            .unwrap_or_else(|| Err("the TLS handshake is still running".into()))
    }
}
