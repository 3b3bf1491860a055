//! The pod's directory on the host (`/var/lib/wpod/pods/<pod>`, or under `$WPOD_ROOT`): launch
//! specs, container scratch space, emptyDir volumes and logs. A lock file beside it keeps two
//! runs of the same pod apart; a directory found without its lock held is what a killed runtime
//! left, and is cleared before the pod starts again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::{cgroups, SandboxError};

pub struct StateDir {
    pub path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

/// Where wpod keeps its pods' state.
pub fn root() -> PathBuf {
    std::env::var_os("WPOD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/wpod"))
}

impl StateDir {
    pub fn acquire(pod: &str) -> Result<Self, SandboxError> {
        let pods = root().join("pods");
        std::fs::create_dir_all(&pods)
            .map_err(|e| SandboxError::io("create the state directory", &pods, e))?;
        let path = pods.join(pod);
        let lock_path = pods.join(format!("{pod}.lock"));
        let lock = File::create(&lock_path)
            .map_err(|e| SandboxError::io("create the pod lock", &lock_path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SandboxError::AlreadyRunning {
                pod: pod.to_string(),
            });
        }
        if path.exists() {
            tracing::warn!(pod, "clearing what an earlier run of this pod left behind");
            clear(&path);
            cgroups::remove_stale(pod);
        }
        for sub in ["volumes", "containers", "logs"] {
            let d = path.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| SandboxError::io("create the state directory", &d, e))?;
        }
        Ok(StateDir {
            path,
            lock_path,
            _lock: lock,
        })
    }
}

/// Unmounts whatever is mounted under `dir` (deepest first), then removes it.
fn clear(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's state directory");
        }
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for StateDir {
    fn drop(&mut self) {
        clear(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}
