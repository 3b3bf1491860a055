//! The pod's namespaces, held by the holder process for the pod's whole life, and the pod's
//! dialer: one thread that joined the pod's network namespace and makes sockets there for
//! hostPort forwarding and network probes (sockets keep the namespace they were made in, so the
//! connecting itself is asynchronous, on any thread).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::SandboxError;
use crate::helper::LIFELINE_FD;
use crate::helper::{spawn_helper, HelperCall, HelperChild, HelperIo, Lifeline};

/// The pod's namespaces, as /proc paths of processes that hold them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePaths {
    pub net: PathBuf,
    pub uts: PathBuf,
    pub ipc: PathBuf,
    /// The pod's shared PID namespace (`shareProcessNamespace: true`) and the procfs of it that
    /// the pod's PID 1 mounted; otherwise the container gets a PID namespace of its own.
    pub pid: Option<SharedPid>,
    /// The pod's own user namespace (`hostUsers: false`), which owns its network, UTS and IPC
    /// namespaces; `None`: the host's.
    pub user: Option<PodUserNs>,
}

/// The pod's user namespace, as a shim joins it, and the host IDs it maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUserNs {
    /// `/proc/<holder>/ns/user`.
    pub ns: PathBuf,
    pub ids: super::userns::IdMap,
}

/// The pod's shared PID namespace, as a shim joins it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedPid {
    /// `/proc/<PID 1>/ns/pid`.
    pub ns: PathBuf,
    /// Where the pod's procfs is mounted (in the pod's state directory, on the host): a shim
    /// binds it as the container's `/proc` from outside the PID namespace.
    pub proc: PathBuf,
}

pub struct PodNamespaces {
    holder: HelperChild,
    /// Host PID of the pod's PID 1 with `shareProcessNamespace: true`, and where it mounted
    /// the pod's procfs.
    init: Option<(i32, PathBuf)>,
    net: Arc<OwnedFd>,
    /// The host IDs of the pod's own user namespace.
    ids: Option<super::userns::IdMap>,
}

/// The holder, started and making the pod's namespaces ([`PodNamespaces::start`]): wpod does
/// what needs no namespace meanwhile, then waits for them ([`StartingNamespaces::ready`]).
/// Dropped unready (a step between failed), the holder is killed and waited for, as a ready
/// one is: its PID 1 may be mounting the pod's procfs in the state directory, which goes next.
pub struct StartingNamespaces {
    /// `None` once [`StartingNamespaces::ready`] took it.
    holder: Option<HelperChild>,
    pod_proc: Option<PathBuf>,
    ids: Option<super::userns::IdMap>,
}

impl Drop for StartingNamespaces {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

impl PodNamespaces {
    /// Starts the holder, which makes the namespaces while the caller goes on. With `pod_proc`
    /// (an empty directory), the pod's containers share one PID namespace whose procfs is
    /// mounted there. With `ids`, they belong to a user namespace of the pod's own that maps
    /// its IDs so.
    pub fn start(
        hostname: &str,
        pod_proc: Option<&Path>,
        host_network: bool,
        ids: Option<super::userns::IdMap>,
        lifeline: &Lifeline,
    ) -> Result<StartingNamespaces, SandboxError> {
        let fail = |e: std::io::Error| SandboxError::step("start the namespace holder", e);
        let call = HelperCall::Holder {
            hostname: hostname.to_string(),
            pod_proc: pod_proc.map(Path::to_path_buf),
            host_network,
            userns: ids.is_some(),
        };
        let stdin = match ids {
            Some(_) => HelperIo::Piped,
            None => HelperIo::Null,
        };
        let holder = spawn_helper(
            &call,
            super::build_id(),
            [stdin, HelperIo::Piped, HelperIo::Inherit],
            &[(lifeline.read_fd(), LIFELINE_FD)],
        )
        .map_err(fail)?;
        Ok(StartingNamespaces {
            holder: Some(holder),
            pod_proc: pod_proc.map(Path::to_path_buf),
            ids,
        })
    }
}

impl StartingNamespaces {
    /// Waits until the holder has made the namespaces (and, with a user namespace of the
    /// pod's own, maps its IDs). A holder that fails is ended here.
    pub fn ready(mut self) -> Result<PodNamespaces, SandboxError> {
        let (pod_proc, ids) = (self.pod_proc.take(), self.ids);
        let Some(mut holder) = self.holder.take() else {
            return Err(SandboxError::step(
                "create the pod namespaces",
                "the holder is gone",
            ));
        };
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let mut out = BufReader::new(out);
            let _ = out.read_line(&mut line);
            if let (Some(ids), "userns") = (ids, line.trim()) {
                line = match map_ids(&mut holder, ids) {
                    Ok(()) => {
                        line.clear();
                        let _ = out.read_line(&mut line);
                        line
                    }
                    Err(e) => format!("error {e}"),
                };
            }
        }
        let init_pid = match line.trim().split_once(' ') {
            Some(("ready", pid)) => pid.parse::<i32>().ok().filter(|p| *p > 0),
            other => {
                let _ = holder.kill();
                let _ = holder.wait();
                let error = match other {
                    Some(("error", msg)) => msg.to_string(),
                    _ => "the holder exited without a word".to_string(),
                };
                return Err(SandboxError::step("create the pod namespaces", error));
            }
        };
        let net_path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let net = match std::fs::File::open(&net_path) {
            Ok(net) => net,
            Err(e) => {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(SandboxError::io(
                    "open the pod's network namespace",
                    &net_path,
                    e,
                ));
            }
        };
        let net = Arc::new(OwnedFd::from(net));
        let init = match (init_pid, pod_proc) {
            (Some(pid), Some(dir)) => Some((pid, dir)),
            _ => None,
        };
        Ok(PodNamespaces {
            holder,
            init,
            net,
            ids,
        })
    }
}

impl PodNamespaces {
    /// Where the shims find the namespaces to join.
    pub fn paths(&self) -> NamespacePaths {
        let ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", self.holder.id()));
        NamespacePaths {
            net: ns("net"),
            uts: ns("uts"),
            ipc: ns("ipc"),
            pid: self.init.as_ref().map(|(pid, proc)| SharedPid {
                ns: PathBuf::from(format!("/proc/{pid}/ns/pid")),
                proc: proc.clone(),
            }),
            user: self.ids.map(|ids| PodUserNs {
                ns: ns("user"),
                ids,
            }),
        }
    }

    /// The host IDs of the pod's own user namespace; `None`: the host's.
    pub fn ids(&self) -> Option<super::userns::IdMap> {
        self.ids
    }

    /// A shared handle on the pod's network namespace, for threads that must join it later.
    pub fn net_handle(&self) -> Arc<OwnedFd> {
        self.net.clone()
    }

    /// The pod's network namespace as a path (the holder's).
    pub fn net_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }
}

/// Writes the holder's new user namespace's ID maps (as only a process of the parent user
/// namespace may), then lets it go on.
fn map_ids(holder: &mut HelperChild, ids: super::userns::IdMap) -> Result<(), String> {
    let proc = PathBuf::from(format!("/proc/{}", holder.id()));
    for (file, line) in [("uid_map", ids.uid_map()), ("gid_map", ids.gid_map())] {
        std::fs::write(proc.join(file), &line)
            .map_err(|e| format!("write {}/{file} ({}): {e}", proc.display(), line.trim()))?;
    }
    let stdin = holder.stdin.as_mut().ok_or("the holder has no stdin")?;
    std::io::Write::write_all(stdin, b"mapped\n").map_err(|e| format!("tell the holder: {e}"))?;
    // Nothing more to say: the holder reads no further.
    drop(holder.stdin.take());
    Ok(())
}

type SocketRequest = (
    libc::c_int,
    tokio::sync::oneshot::Sender<std::io::Result<OwnedFd>>,
);

/// Makes TCP sockets inside the pod's network namespace. One thread per pod, whatever the number
/// of connections: it only creates sockets (which never blocks); connecting is async. Cloning
/// shares the thread; it ends when the last clone is dropped.
#[derive(Clone)]
pub struct Dialer {
    requests: mpsc::Sender<SocketRequest>,
}

impl Dialer {
    pub fn new(net: Arc<OwnedFd>) -> std::io::Result<Self> {
        Self::spawn(Some(net))
    }

    /// A dialer in wpod's own network namespace: the supervisor's tests, which have no pod.
    #[cfg(test)]
    pub fn here() -> std::io::Result<Self> {
        Self::spawn(None)
    }

    /// The dialer's thread, in `net` (`None`: where wpod is).
    fn spawn(net: Option<Arc<OwnedFd>>) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("wpod-dialer".into())
            .spawn(move || {
                let joined = match &net {
                    Some(net) => join_net(net.as_fd()).map_err(std::io::Error::from),
                    None => Ok(()),
                };
                let failed = joined.as_ref().err().map(|e| e.to_string());
                let _ = ready_tx.send(joined);
                for (domain, reply) in rx {
                    let result = match &failed {
                        Some(e) => Err(std::io::Error::other(e.clone())),
                        None => tcp_socket(domain),
                    };
                    let _ = reply.send(result);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the dialer thread vanished"))??;
        Ok(Dialer { requests })
    }

    /// Connects to `addr` from inside the pod, giving up after `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send((domain, tx))
            .map_err(|_| std::io::Error::other("the pod's dialer has stopped"))?;
        let fd = rx
            .await
            .map_err(|_| std::io::Error::other("the pod's dialer has stopped"))??;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )),
        }
    }
}

/// A non-blocking TCP socket of `domain` in the calling thread's network namespace.
fn tcp_socket(domain: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: socket() with constant arguments; the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace `net`. Only for threads that belong to
/// the pod from then on (a pod runtime's workers, a one-shot connect thread): never the
/// runtime's main thread.
pub fn join_net(net: BorrowedFd<'_>) -> nix::Result<()> {
    setns(net, CloneFlags::CLONE_NEWNET)
}

impl Drop for PodNamespaces {
    fn drop(&mut self) {
        // The namespaces go when their last process and descriptor do.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
