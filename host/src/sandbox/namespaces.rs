//! The pod's namespaces, held by the holder process for the pod's whole life.

use std::io::{BufRead, BufReader};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};

use super::SandboxError;
use crate::containers::launch::{NamespacePaths, LIFELINE_FD};
use crate::helper::{helper_command, inherit_fds, Lifeline};

pub struct PodNamespaces {
    holder: Child,
    /// Host PID of the pod's PID 1 with `shareProcessNamespace: true`.
    init_pid: Option<i32>,
    net: Arc<OwnedFd>,
}

impl PodNamespaces {
    /// Starts the holder and waits until the namespaces exist.
    pub fn create(
        hostname: &str,
        share_pid: bool,
        lifeline: &Lifeline,
    ) -> Result<Self, SandboxError> {
        let fail = |e: std::io::Error| SandboxError::Step {
            step: "start the namespace holder".into(),
            error: e.to_string(),
        };
        let mut cmd = helper_command("__holder").map_err(fail)?;
        cmd.args(["--hostname", hostname]);
        if share_pid {
            cmd.arg("--share-pid");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        inherit_fds(&mut cmd, &[(lifeline.read_fd(), LIFELINE_FD)]);
        let mut holder = cmd.spawn().map_err(fail)?;

        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
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
                return Err(SandboxError::Step {
                    step: "create the pod namespaces".into(),
                    error,
                });
            }
        };
        let net_path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let net = std::fs::File::open(&net_path).map_err(|e| SandboxError::Step {
            step: format!("open {}", net_path.display()),
            error: e.to_string(),
        })?;
        let net = Arc::new(OwnedFd::from(net));
        Ok(PodNamespaces {
            holder,
            init_pid,
            net,
        })
    }

    /// Where the shims find the namespaces to join.
    pub fn paths(&self) -> NamespacePaths {
        let ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", self.holder.id()));
        NamespacePaths {
            net: ns("net"),
            uts: ns("uts"),
            ipc: ns("ipc"),
            pid: self
                .init_pid
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
        }
    }

    /// A shared handle on the pod's network namespace, for threads that must join it later.
    pub fn net_handle(&self) -> Arc<OwnedFd> {
        self.net.clone()
    }
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
