//! The pod's directory on the host: `$WPOD_ROOT/pods/<pod>/` (default root `/var/lib/wpod`)
//! holds launch configs (OCI runtime configs), container scratch space, emptyDir volumes and logs. A lock file in
//! `$WPOD_ROOT/locks/` keeps two runs of the same pod apart (in its own directory, so no pod's
//! state can collide with another pod's lock: pod names may contain dots); a state directory
//! found without its lock held is what a killed runtime left, and is cleared before the pod
//! starts again.
//!
//! Only a checked [`PodName`] becomes a path here: an empty name or one with `/` or `..` can
//! never make wpod clear anything but that one pod's directory.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};
use sha2::{Digest, Sha256};

use super::{cgroups, SandboxError};
use crate::spec::PodName;

pub struct StateDir {
    pub path: PathBuf,
    /// The pod's logs and event journal: kept after the pod ends (for `wpod logs` and `wpod ps
    /// -a`) until `wpod rm` or the pod's next run.
    pub logs: PathBuf,
    _lock: File,
}

/// The file in a pod's state directory that names the `wpod run` holding it (`wpod stop`
/// signals it).
pub const PID_FILE: &str = "wpod.pid";

/// Where the logs and event journal of `pod` are kept.
pub fn log_dir(pod: &str) -> PathBuf {
    root().join("logs").join(pod)
}

/// The pods that have kept logs (ended or running).
pub fn logged_pods() -> Vec<String> {
    list(&root().join("logs"))
}

/// Where wpod keeps its pods' state (always an absolute path).
pub fn root() -> PathBuf {
    crate::files::state_root()
}

/// A short name for the state root, so that pods of two roots never share a cgroup: two wpod
/// installations (or a test and a real pod) may run pods of the same name side by side.
pub fn root_id() -> String {
    let digest = Sha256::digest(root().as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}

impl StateDir {
    pub fn acquire(pod: &PodName) -> Result<Self, SandboxError> {
        // Root's alone: pods hold their containers' environment (launch specs), their logs and
        // their volumes, where a container may leave a setuid binary or a device node.
        let private = |sub| {
            crate::files::private_state_dir(sub)
                .map_err(|e| SandboxError::step("create the state directory", e))
        };
        let (pods, locks) = (private("pods")?, private("locks")?);
        private("logs")?;
        let path = pods.join(pod.as_str());
        let lock_path = locks.join(format!("{pod}.lock"));
        let lock = crate::files::open_lock(&lock_path)
            .map_err(|e| SandboxError::io("create the pod lock", &lock_path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SandboxError::AlreadyRunning {
                pod: pod.to_string(),
            });
        }
        // A killed run's network goes first (its record names the pinned namespace and what
        // its plugins made), then its state.
        match super::network::recover(pod.as_str()) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pod = %pod, error = %e, "cannot delete the network a killed run of this pod left")
            }
        }
        if path.exists() {
            tracing::warn!(pod = %pod, "clearing what an earlier run of this pod left behind");
            clear(&path);
        }
        cgroups::remove_stale(pod);
        for sub in ["volumes", "containers"] {
            let d = path.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| SandboxError::io("create the state directory", &d, e))?;
        }
        // A new run of the pod replaces what the last one kept.
        let logs = log_dir(pod.as_str());
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)
            .map_err(|e| SandboxError::io("create the log directory", &logs, e))?;
        Ok(StateDir {
            path,
            logs,
            _lock: lock,
        })
    }
}

impl StateDir {
    /// An empty directory for the procfs of the pod's shared PID namespace (unmounted with the
    /// state directory, as every mount under it).
    pub fn pod_proc_dir(&self) -> Result<PathBuf, SandboxError> {
        let dir = self.path.join("proc");
        std::fs::create_dir(&dir)
            .map_err(|e| SandboxError::io("create the pod's /proc directory", &dir, e))?;
        Ok(dir)
    }
}

/// Whether a `wpod run` holds `pod` now (its lock is taken). Probed with a shared lock, taken
/// and dropped at once, so a run starting meanwhile never finds it held by the probe.
pub fn in_use(pod: &str) -> bool {
    let lock_path = root().join("locks").join(format!("{pod}.lock"));
    let Ok(lock) = File::open(&lock_path) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; closing it releases a lock we got.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// The pods that have a state directory now: running, or left by a killed run.
pub fn pods() -> Vec<String> {
    list(&root().join("pods"))
}

fn list(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Unmounts whatever is mounted under `dir` (deepest first), then removes it.
fn clear(dir: &Path) {
    for m in crate::mounts::mounts_under(dir) {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    // Another wpod root inside a pod's directory (roots nested on purpose or by mistake) is
    // kept: clearing a pod never removes another root's state.
    if let Err(e) = crate::files::remove_tree(dir, crate::files::OtherRoots::Spare) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's state directory");
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        clear(&self.path);
        // The lock file stays (removing it while another run waits on it would let two runs
        // hold "the" lock at once); it is empty, and releasing the flock is what matters.
    }
}
