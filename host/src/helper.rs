//! Helper processes: `wpod` re-executes itself as the namespace holder and the container shims,
//! so that namespace setup happens in fresh single-threaded processes, never in the runtime.
//!
//! Helpers run from a sealed in-memory copy of the wpod binary, as runc does since
//! CVE-2019-5736: a helper is briefly (a shim's child before exec, an exec probe's child) or
//! always (the pod's PID 1) visible inside a container's PID namespace, and `/proc/PID/exe` of a
//! process there must not lead to the host's wpod binary, which a container could otherwise open
//! and overwrite. The copy is made once per wpod process and cannot be written, grown or shrunk.

use std::fmt::Display;
use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// File descriptor number at which every helper inherits the lifeline's read end.
pub const LIFELINE_FD: i32 = 3;

/// A setup step of a helper that failed, with the OS error: what `wpod run` reports for a pod
/// that fails to start (`step: error`). The holder and the container shims both report these.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct StepError {
    pub step: String,
    pub error: String,
}

impl StepError {
    /// A system call that failed on `path`.
    pub fn sys(step: impl Display, path: &Path, e: nix::Error) -> Self {
        StepError {
            step: step.to_string(),
            error: format!("{} ({})", e.desc(), path.display()),
        }
    }
    pub fn io(step: impl Display, path: &Path, e: std::io::Error) -> Self {
        StepError {
            step: step.to_string(),
            error: format!("{e} ({})", path.display()),
        }
    }
    /// A system call that failed, where no path tells more.
    pub fn errno(step: impl Display, e: nix::Error) -> Self {
        StepError {
            step: step.to_string(),
            error: e.desc().to_string(),
        }
    }
    pub fn msg(step: impl Display, error: impl Display) -> Self {
        StepError {
            step: step.to_string(),
            error: error.to_string(),
        }
    }
}

/// A pipe whose write end only the runtime holds. Every helper gets the read end: when the
/// runtime dies, even by SIGKILL, the helpers see EOF and take their processes down.
pub struct Lifeline {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Lifeline {
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Lifeline {
            read,
            _write: write,
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// A command that runs this same `wpod` binary with a hidden subcommand, in a process group of
/// its own: a Ctrl-C at the terminal (or any signal to wpod's group) reaches `wpod run` alone,
/// which then stops the pod in order. Were the holder signalled with it, a shared PID
/// namespace would lose its PID 1, and the kernel would SIGKILL every container in it.
pub fn helper_command(subcommand: &str) -> std::io::Result<Command> {
    let exe = sealed_self()?;
    // The copy is close-on-exec: the kernel opens it before the exec closes it, so the helper
    // runs it without inheriting the descriptor.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("wpod").arg(subcommand).process_group(0);
    Ok(cmd)
}

/// The sealed copy of this process's executable, made on first use.
fn sealed_self() -> std::io::Result<&'static OwnedFd> {
    static COPY: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = COPY.get() {
        return Ok(fd);
    }
    let fd = seal_copy_of("/proc/self/exe")?;
    Ok(COPY.get_or_init(|| fd))
}

/// Copies `path` into a memfd and seals it against every change.
fn seal_copy_of(path: &str) -> std::io::Result<OwnedFd> {
    let name = c"wpod";
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid C string; the result is owned below. MFD_EXEC asks for
    // an executable memfd where the kernel's vm.memfd_noexec would otherwise refuse one; older
    // kernels do not know the flag (EINVAL) and make it executable anyway.
    let mut raw = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_EXEC) };
    if raw < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        raw = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if raw < 0 {
        return Err(std::io::Error::other(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a descriptor memfd_create just returned.
    let mut copy = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let mut source = File::open(path)?;
    std::io::copy(&mut source, &mut copy)?;
    copy.rewind()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::other(format!(
            "seal the copy of wpod: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(OwnedFd::from(copy))
}

/// Makes the child inherit `fds` at the given numbers (everything else the runtime opens is
/// close-on-exec).
pub fn inherit_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) {
    let fds = fds.to_vec();
    // SAFETY: between fork and exec this only calls fcntl and dup2, which are async-signal-safe,
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the targets, so one dup2 cannot clobber another's
            // source; the temporaries are close-on-exec.
            let mut temps = [0 as RawFd; 8];
            for (i, (src, _)) in fds.iter().enumerate().take(8) {
                let t = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                temps[i] = t;
            }
            for (i, (_, target)) in fds.iter().enumerate().take(8) {
                if libc::dup2(temps[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_copy_cannot_be_changed() {
        let fd = seal_copy_of("/proc/self/exe").unwrap();
        let original = std::fs::metadata("/proc/self/exe").unwrap().len();
        let mut file = File::from(fd);
        assert_eq!(file.metadata().unwrap().len(), original);
        assert!(
            file.write_all(b"x").is_err(),
            "a sealed copy must refuse writes"
        );
        assert!(
            file.set_len(1).is_err(),
            "a sealed copy must refuse truncation"
        );
        // Reopened through /proc for writing (what an attacker would do): still no writes.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        if let Ok(mut reopened) = std::fs::OpenOptions::new().write(true).open(path) {
            assert!(
                reopened.write_all(b"x").is_err(),
                "writes through /proc must fail"
            );
        }
    }
}
