//! hostPort publishing for a pod off the network (`wpod.dev/network: none`): the host listens on
//! each `hostPort` and forwards every connection to the container port on the pod's loopback.
//! The container sees an ordinary local client. (A pod on a CNI network gets its hostPorts in
//! the kernel, from the portmap plugin's DNAT: here each is only reserved, bound and never
//! listened on, so a port in use still fails the pod before it starts, and no other process
//! takes it while the pod runs.)
//!
//! The forwarders run on a runtime of their own whose threads joined the pod's network
//! namespace ([`PodRuntime`]): a listener bound on the host before keeps accepting host
//! connections, and a connect from those threads is already inside the pod. Bytes move with
//! `splice(2)` through a pipe, never through userspace; both sockets have Nagle's delay off, as
//! a proxy's must (a relay that holds back a response's last segment waits out the client's
//! delayed ACK).
//!
//! Forwarding is bounded: all of it is async (no thread per connection), the pod's ports
//! together serve at most the connections the plan's descriptor budget left them
//! (`FdBudget::forwarded_connections`; more wait in the kernel's backlog), so clients holding
//! connections never take the descriptors wpod needs for the pod itself; and if the process
//! still runs out of descriptors, the accept loop backs off instead of spinning, saying so once
//! per interval.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::runtime::PodRuntime;
use super::SandboxError;
use crate::plan::PortMapping;

/// How long a connection to the container port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads that forward: one keeps a connection's both directions on one core, without
/// handing work across cores for every small message.
const FORWARDER_THREADS: usize = 1;
/// Each direction's pipe capacity, and so the most one splice moves: fewer, larger splices
/// for bulk transfers. A pipe holds pages only while bytes are in flight.
const PIPE_BYTES: usize = 256 * 1024;

/// The forwarders. [`PortForwards::close`] stops listening and closes every forwarded
/// connection, and returns once their descriptors are closed; dropping does the same without
/// waiting.
pub struct PortForwards {
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Ports only reserved (bound, not listening): the kernel forwards them.
    _reserved: Vec<OwnedFd>,
    /// Dropped last: the forwarders' tasks run on it.
    runtime: Option<PodRuntime>,
}

impl PortForwards {
    /// Binds every host port now (so a port in use fails the pod before it starts) and serves
    /// them from inside the pod's network namespace `net`.
    pub fn publish(
        pod: &str,
        mappings: &[PortMapping],
        max_connections: u64,
        net: Arc<OwnedFd>,
    ) -> Result<Self, SandboxError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if mappings.is_empty() {
            return Ok(PortForwards {
                tasks: Default::default(),
                stop,
                _reserved: Vec::new(),
                runtime: None,
            });
        }
        let mut listeners = Vec::new();
        for m in mappings {
            let addr = SocketAddr::new(m.host_ip, m.host_port);
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    SandboxError::step(
                        format!(
                            "publish hostPort {} of container {}: bind {addr}",
                            m.host_port, m.container
                        ),
                        e,
                    )
                })?;
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), m.container_port);
            listeners.push((listener, target));
        }
        let forwarders = |e| SandboxError::step("start the hostPort forwarders", e);
        let runtime = PodRuntime::new(pod, net, FORWARDER_THREADS, &[]).map_err(forwarders)?;
        let handle = runtime.handle().map_err(forwarders)?;
        // One budget for all the pod's ports.
        let slots = Arc::new(Semaphore::new(
            usize::try_from(max_connections)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        ));
        let tasks = listeners
            .into_iter()
            .map(|(listener, target)| {
                let stopped = stopped.clone();
                let slots = slots.clone();
                handle.spawn(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, target, slots, stopped).await,
                        Err(e) => tracing::error!(%target, error = %e, "cannot serve a hostPort"),
                    }
                })
            })
            .collect();
        Ok(PortForwards {
            tasks: std::sync::Mutex::new(tasks),
            stop,
            _reserved: Vec::new(),
            runtime: Some(runtime),
        })
    }

    /// Reserves each host port (a socket bound to it that never listens), for a pod whose
    /// hostPorts the kernel forwards: a port in use fails the pod now, and no process can take
    /// one while the pod runs (DNAT happens before a socket could see the connection).
    pub fn reserve(mappings: &[PortMapping]) -> Result<Self, SandboxError> {
        use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
        let mut reserved = Vec::new();
        for m in mappings {
            let addr = SocketAddr::new(m.host_ip, m.host_port);
            let family = match m.host_ip {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            let fail = |e: nix::Error| {
                SandboxError::step(
                    format!(
                        "publish hostPort {} of container {}: bind {addr}",
                        m.host_port, m.container
                    ),
                    std::io::Error::from(e),
                )
            };
            let fd =
                socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
            bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &SockaddrStorage::from(addr),
            )
            .map_err(fail)?;
            reserved.push(fd);
        }
        Ok(PortForwards {
            tasks: Default::default(),
            stop: tokio::sync::watch::channel(false).0,
            _reserved: reserved,
            runtime: None,
        })
    }

    /// Stops every forwarder and waits until its listener and connections are closed.
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The delay after a failed accept: EMFILE/ENFILE last until descriptors are freed, so retrying
/// at once would only spin (the standard library servers back off the same way).
fn accept_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => Duration::from_millis(5),
        Some(d) => (d * 2).min(Duration::from_secs(1)),
    }
}

/// How often a failing accept is reported (it may fail every few milliseconds).
const ACCEPT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    slots: Arc<Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Owned here, so stopping the forwarder ends every connection too.
    let mut connections = JoinSet::new();
    let mut backoff = None;
    let mut failures = 0u64;
    let mut reported: Option<tokio::time::Instant> = None;
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let next = async {
            let slot = slots.clone().acquire_owned().await;
            (slot, listener.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            next = next => next,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slot else {
            break;
        };
        let (client, peer) = match accepted {
            Ok(accepted) => {
                backoff = None;
                accepted
            }
            Err(e) => {
                let delay = accept_backoff(backoff);
                backoff = Some(delay);
                failures += 1;
                let due = reported.is_none_or(|at| at.elapsed() >= ACCEPT_REPORT_INTERVAL);
                if due {
                    tracing::warn!(%target, error = %e, failures, "hostPort accept failed; backing off (said at most every {ACCEPT_REPORT_INTERVAL:?})");
                    reported = Some(tokio::time::Instant::now());
                    failures = 0;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        connections.spawn(async move {
            let _slot = slot;
            // This thread is in the pod's network namespace: the connect reaches its loopback.
            let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
                .await
            {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %target, error = %e, "hostPort connection refused in the pod");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, %target, "hostPort connection timed out in the pod");
                    return;
                }
            };
            if let Err(e) = relay(&client, &upstream).await {
                tracing::debug!(%peer, %target, error = %e, "hostPort connection ended");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Forwards both ways until both sides have ended (each end's close is passed on as a
/// shutdown of the other's write side, so half-closed protocols work), or either fails.
async fn relay(client: &TcpStream, upstream: &TcpStream) -> io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    tokio::try_join!(
        splice_one_way(client, upstream),
        splice_one_way(upstream, client)
    )?;
    Ok(())
}

/// Moves what `from` receives to `to` through a pipe, until `from` ends; then shuts `to`'s
/// write side.
async fn splice_one_way(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // Best effort: a smaller pipe (the system's pipe-max-size) only means more splices.
    let chunk = nix::fcntl::fcntl(
        &pipe_in,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32),
    )
    .ok()
    .and_then(|n| usize::try_from(n).ok())
    .unwrap_or(64 * 1024);
    loop {
        let received = splice_when_ready(from, Interest::READABLE, || {
            splice_step(from.as_fd(), &pipe_in, chunk)
        })
        .await?;
        if received == 0 {
            return nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(to),
                nix::sys::socket::Shutdown::Write,
            )
            .or_else(|e| match e {
                // The other side is gone already: nothing left to tell it.
                nix::errno::Errno::ENOTCONN => Ok(()),
                e => Err(e),
            })
            .map_err(io::Error::from);
        }
        // Everything in the pipe goes out before more comes in: the pipe never fills.
        let mut left = received;
        while left > 0 {
            left -= splice_when_ready(to, Interest::WRITABLE, || {
                splice_step(&pipe_out, to.as_fd(), left)
            })
            .await?;
        }
    }
}

/// One non-blocking `splice` of at most `len` bytes.
fn splice_step(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// Runs `op` once `socket` is ready for `interest`, until it does not find the socket empty
/// (read) or full (write); tokio's readiness is cleared when it does.
async fn splice_when_ready(
    socket: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        socket.ready(interest).await?;
        match socket.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

impl Drop for PortForwards {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
        // Its threads end in the background; the connections' sockets close with their tasks.
        drop(self.runtime.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_to_a_second() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let next = accept_backoff(d);
            seen.push(next);
            d = Some(next);
        }
        assert_eq!(seen[0], Duration::from_millis(5));
        assert_eq!(seen[1], Duration::from_millis(10));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(1));
    }
}
