//! hostPort publishing: the host listens on each `hostPort` and forwards every connection to the
//! container port on the pod's loopback, through a socket created inside the pod's network
//! namespace. The container sees an ordinary local client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::namespaces::join_net;
use super::SandboxError;

/// One published port.
#[derive(Clone, Debug)]
pub struct PortMapping {
    pub container: String,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// The forwarders; dropping them stops listening.
pub struct PortForwards {
    tasks: Vec<JoinHandle<()>>,
}

impl PortForwards {
    /// Binds every host port now (so a port in use fails the pod before it starts) and serves
    /// them on the current tokio runtime.
    pub fn publish(mappings: &[PortMapping], net: Arc<OwnedFd>) -> Result<Self, SandboxError> {
        let mut tasks = Vec::new();
        for m in mappings {
            let addr = SocketAddr::new(
                m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                m.host_port,
            );
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
            let net = net.clone();
            tasks.push(tokio::spawn(serve(listener, target, net)));
        }
        Ok(PortForwards { tasks })
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, net: Arc<OwnedFd>) {
    loop {
        let Ok((mut client, peer)) = listener.accept().await else {
            continue;
        };
        let net = net.clone();
        tokio::spawn(async move {
            match connect_in_netns(net, target).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => {
                    tracing::debug!(%peer, %target, error = %e, "hostPort connection refused in the pod")
                }
            }
        });
    }
}

/// Connects to `addr` from inside the pod's network namespace. The socket is created on a
/// short-lived thread that joined the namespace (setns is per thread); a socket keeps its
/// namespace wherever it is used afterwards.
pub async fn connect_in_netns(net: Arc<OwnedFd>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wpod-netns-connect".into())
        .spawn(move || {
            let result = join_net(net.as_fd())
                .map_err(std::io::Error::from)
                .and_then(|()| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                });
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread vanished"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

impl Drop for PortForwards {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
