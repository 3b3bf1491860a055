//! Helper processes: `wpod` re-executes itself as the namespace holder and the container shims,
//! so that namespace setup happens in fresh single-threaded processes, never in the runtime.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

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
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(subcommand).process_group(0);
    Ok(cmd)
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
