//! The host engine's event loop: every connection is a small state machine, and one
//! `wasi:io/poll.poll` per turn waits on all of them, as an epoll loop does.
//!
//! Why not a task per connection on wstd: WASI 0.2's `poll` takes the whole list of pollables
//! each call, and wstd 0.5 calls it, non-blocking, after every task it runs, so n busy
//! connections cost O(n^2) host work per round (measured: 7,500 req/s at 10 connections, 370 at
//! 50). Here one `poll` returns every ready pollable and each is handled before the next.
//!
//! A connection: the TLS handshake in the host (`wpod:sidecar/tls`), a connection to the
//! backend, then two pipes (client -> backend, backend -> client), each a transfer the host
//! runs on its own (`wpod:sidecar/relay`): the sidecar wakes only when one ends.
//! The client's end of input becomes a half-close to the backend, which then has `IDLE` to
//! finish; the backend's end of output ends the connection (close_notify to the client). An
//! idle session is ended by the host after `IDLE`.

use std::time::{Duration, Instant};

use wstd::wasip2::clocks::monotonic_clock;
use wstd::wasip2::io::poll::{poll, Pollable};
use wstd::wasip2::io::streams::{InputStream, OutputStream};
use wstd::wasip2::sockets::instance_network::instance_network;
use wstd::wasip2::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use wstd::wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wstd::wasip2::sockets::tcp_create_socket::create_tcp_socket;

use wpod_sidecar::relay::{self, Transfer};
use wpod_sidecar::tls::{FutureServerStreams, ServerIdentity};

/// How long a connection may idle (the host's session timeout), and how long a backend has to
/// finish once the client has sent all it will.
pub const IDLE: Duration = Duration::from_secs(60);

/// Where the backend is.
pub struct Backend {
    pub name: String,
    pub family: IpAddressFamily,
    pub address: IpSocketAddress,
}

/// One direction of a relayed connection: a transfer the host runs (`wpod:sidecar/relay`),
/// bytes moved with no call into the sidecar until it ends.
struct Pipe {
    // The pollable first: a pollable must be dropped before the resource it watches.
    ended: Pollable,
    transfer: Transfer,
}

impl Pipe {
    fn start(from: InputStream, to: OutputStream) -> Result<Self, String> {
        let transfer = relay::start(from, to)?;
        Ok(Pipe {
            ended: transfer.subscribe(),
            transfer,
        })
    }

    /// Whether it has ended, either way (a client or backend that resets its connection is
    /// part of a proxy's day, not worth a line each).
    fn ended(&self) -> bool {
        self.transfer.get().is_some()
    }
}

/// Where a connection is.
enum Stage {
    Handshake {
        ready: Pollable,
        future: FutureServerStreams,
    },
    Connect {
        ready: Pollable,
        plain_in: InputStream,
        plain_out: OutputStream,
        socket: TcpSocket,
    },
    Relay {
        /// Client to backend, until the client has sent all it will.
        up: Option<Pipe>,
        /// Backend to client: the connection ends with it.
        down: Pipe,
        upstream: TcpSocket,
    },
    Closed,
}

struct Conn {
    stage: Stage,
    /// The client's socket: its streams are the host's now, but it stays open until the end.
    _client: TcpSocket,
    /// When it is given up (set once the client's input has ended).
    deadline: Option<Instant>,
}

impl Conn {
    /// Its pollables now, each with which part of it waits (0 or 1).
    fn pollables(&self) -> Vec<(&Pollable, u8)> {
        match &self.stage {
            Stage::Handshake { ready, .. } | Stage::Connect { ready, .. } => vec![(ready, 0)],
            Stage::Relay { up, down, .. } => {
                let mut out = Vec::with_capacity(2);
                out.extend(up.as_ref().map(|p| (&p.ended, 0)));
                out.push((&down.ended, 1));
                out
            }
            Stage::Closed => Vec::new(),
        }
    }

    /// Moves on after pollable `part` was ready.
    fn step(&mut self, part: u8, backend: &Backend) {
        match &mut self.stage {
            Stage::Handshake { future, .. } => match future.get() {
                None => {}
                Some(Ok((plain_in, plain_out))) => {
                    // A backend that does not answer the connect is given up too.
                    self.deadline = Some(Instant::now() + IDLE);
                    self.stage = match connect(backend) {
                        Ok(socket) => Stage::Connect {
                            ready: socket.subscribe(),
                            plain_in,
                            plain_out,
                            socket,
                        },
                        Err(e) => {
                            eprintln!("connection: backend {}: {e}", backend.name);
                            Stage::Closed
                        }
                    };
                }
                Some(Err(e)) => {
                    eprintln!("connection: {e}");
                    self.stage = Stage::Closed;
                }
            },
            Stage::Connect { socket, .. } => match socket.finish_connect() {
                Err(ErrorCode::WouldBlock) => {}
                Ok((input, output)) => {
                    let Stage::Connect {
                        ready,
                        plain_in,
                        plain_out,
                        socket,
                    } = std::mem::replace(&mut self.stage, Stage::Closed)
                    else {
                        unreachable!("matched above")
                    };
                    drop(ready);
                    self.deadline = None;
                    let pipes = Pipe::start(plain_in, output)
                        .and_then(|up| Ok((up, Pipe::start(input, plain_out)?)));
                    self.stage = match pipes {
                        Ok((up, down)) => Stage::Relay {
                            up: Some(up),
                            down,
                            upstream: socket,
                        },
                        Err(e) => {
                            eprintln!("connection: relay: {e}");
                            Stage::Closed
                        }
                    };
                }
                Err(e) => {
                    eprintln!("connection: backend {}: {e:?}", backend.name);
                    self.stage = Stage::Closed;
                }
            },
            Stage::Relay { up, down, upstream } => {
                if part == 0 {
                    if up.as_ref().is_some_and(|p| p.ended()) {
                        // The client is done: so is the request; the backend gets IDLE to answer.
                        *up = None;
                        let _ = upstream.shutdown(ShutdownType::Send);
                        self.deadline = Some(Instant::now() + IDLE);
                    }
                } else if down.ended() {
                    self.stage = Stage::Closed;
                }
            }
            Stage::Closed => {}
        }
    }

    fn closed(&self) -> bool {
        matches!(self.stage, Stage::Closed)
    }
}

/// Starts connecting to the backend.
fn connect(backend: &Backend) -> Result<TcpSocket, String> {
    let socket = create_tcp_socket(backend.family).map_err(|e| format!("{e:?}"))?;
    socket
        .start_connect(&instance_network(), backend.address)
        .map_err(|e| format!("{e:?}"))?;
    Ok(socket)
}

/// Who waits on a pollable of one turn's list.
#[derive(Clone, Copy)]
enum Waiter {
    Listener,
    Events,
    Timer,
    Conn(usize, u8),
}

/// Serves `listener` until the pod stops; then lets open connections finish until the
/// deadline, and exits 0.
pub fn run(listener: TcpSocket, identity: ServerIdentity, backend: Backend, max: usize) -> ! {
    let incoming = listener.subscribe();
    let events = wpod_sidecar::subscribe_events();
    let idle_ms = IDLE.as_millis() as u64;
    let mut conns: Vec<Conn> = Vec::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let now = Instant::now();
        conns.retain(|c| !c.closed() && c.deadline.is_none_or(|d| d > now));
        if let Some(deadline) = stopping {
            if conns.is_empty() || now >= deadline {
                std::process::exit(0);
            }
        }
        let next = conns
            .iter()
            .filter_map(|c| c.deadline)
            .chain(stopping)
            .min();
        let timer = next.map(|d| {
            monotonic_clock::subscribe_duration(d.saturating_duration_since(now).as_nanos() as u64)
        });

        let mut targets: Vec<&Pollable> = Vec::with_capacity(2 * conns.len() + 3);
        let mut waiters: Vec<Waiter> = Vec::with_capacity(targets.capacity());
        // At the limit, new clients wait in the listen backlog (nginx's worker_connections).
        if stopping.is_none() && conns.len() < max {
            targets.push(&incoming);
            waiters.push(Waiter::Listener);
        }
        if stopping.is_none() {
            targets.push(&events);
            waiters.push(Waiter::Events);
        }
        if let Some(t) = &timer {
            targets.push(t);
            waiters.push(Waiter::Timer);
        }
        for (i, c) in conns.iter().enumerate() {
            for (p, part) in c.pollables() {
                targets.push(p);
                waiters.push(Waiter::Conn(i, part));
            }
        }
        let ready = poll(&targets);
        drop(targets);

        let mut accept = false;
        for index in ready {
            match waiters[index as usize] {
                Waiter::Listener => accept = true,
                Waiter::Timer => {}
                Waiter::Events => {
                    // Once the pod stops, every call returns `stopping`: stop asking then.
                    while let Some(event) = wpod_sidecar::try_next_event() {
                        if let wpod_sidecar::Event::Stopping(ms) = event {
                            // A little margin: the host stops the sidecar at the deadline itself.
                            let left = Duration::from_millis(ms)
                                .saturating_sub(Duration::from_millis(100));
                            println!(
                                "stopping: {} connection(s) to finish within {left:?}",
                                conns.len()
                            );
                            stopping = Some(Instant::now() + left);
                            break;
                        }
                    }
                }
                Waiter::Conn(i, part) => conns[i].step(part, &backend),
            }
        }
        // New connections last: the indices above stay valid.
        while accept && stopping.is_none() && conns.len() < max {
            match listener.accept() {
                Ok((client, input, output)) => {
                    let future = wpod_sidecar::tls::start(&identity, input, output, idle_ms);
                    conns.push(Conn {
                        stage: Stage::Handshake {
                            ready: future.subscribe(),
                            future,
                        },
                        _client: client,
                        deadline: None,
                    });
                }
                Err(ErrorCode::WouldBlock) => break,
                Err(e) => {
                    eprintln!("accept: {e:?}");
                    // Out of descriptors, say: give the open connections a moment to end.
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
        drop(timer);
    }
}
