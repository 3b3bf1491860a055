//! hostPort publishing: the host listens on each `hostPort` and forwards every connection to the
//! container port on the pod's loopback, through a socket the pod's [`Dialer`] made inside the
//! pod's network namespace. The container sees an ordinary local client.
//!
//! Forwarding is bounded: all of it runs on the async runtime (no thread per connection), each
//! port serves at most [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), and when
//! the process runs out of descriptors the accept loop backs off instead of spinning.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::namespaces::Dialer;
use super::SandboxError;
use crate::plan::PortMapping;

/// Connections forwarded at once per published port.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a connection to the container port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The forwarders. [`PortForwards::close`] stops listening and closes every forwarded
/// connection, and returns once their descriptors are closed; dropping does the same without
/// waiting.
pub struct PortForwards {
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl PortForwards {
    /// Binds every host port now (so a port in use fails the pod before it starts) and serves
    /// them on the current tokio runtime.
    pub fn publish(mappings: &[PortMapping], dialer: &Dialer) -> Result<Self, SandboxError> {
        let mut tasks = Vec::new();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for m in mappings {
            let addr = SocketAddr::new(m.host_ip, m.host_port);
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(TcpListener::from_std)
                .map_err(|e| SandboxError::Step {
                    step: format!(
                        "publish hostPort {} of container {}",
                        m.host_port, m.container
                    ),
                    error: format!("bind {addr}: {e}"),
                })?;
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), m.container_port);
            tasks.push(tokio::spawn(serve(
                listener,
                target,
                dialer.clone(),
                stopped.clone(),
            )));
        }
        Ok(PortForwards {
            tasks: std::sync::Mutex::new(tasks),
            stop,
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

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    dialer: Dialer,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here, so stopping the forwarder ends every connection too.
    let mut connections = JoinSet::new();
    let mut backoff = None;
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
        let (mut client, peer) = match accepted {
            Ok(accepted) => {
                backoff = None;
                accepted
            }
            Err(e) => {
                let delay = accept_backoff(backoff);
                backoff = Some(delay);
                tracing::warn!(%target, error = %e, "hostPort accept failed; retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let dialer = dialer.clone();
        connections.spawn(async move {
            let _slot = slot;
            match dialer.connect(target, CONNECT_TIMEOUT).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => {
                    tracing::debug!(%peer, %target, error = %e, "hostPort connection refused in the pod")
                }
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

impl Drop for PortForwards {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
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
