//! `wpod __exec LAUNCH.json PID -- COMMAND...`: runs a command inside a running native container
//! (for exec probes and lifecycle hooks), as `kubectl exec` would: in the container's cgroup and
//! namespaces (its mount namespace gives its root), with its environment and privileges.
//!
//! The container is named by a pidfd the runtime passes as fd 3 (opened when the container
//! started, so a PID reused since can never send the command into another process's
//! namespaces); PID is for messages only. The command's process is forked into the container's
//! PID namespace, where the container can reach it: this helper confines itself first (seccomp,
//! capabilities, user, `no_new_privs`), outside that namespace, so the child is born holding no
//! more than the container does, and only execs.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::launch::{self, LaunchSpec, EXIT_SETUP_FAILED};
use super::security;
use crate::helper::StepError;
use crate::sys::{LinuxSyscall, Syscall};

/// The descriptor number at which `__exec` inherits the container's pidfd.
pub const PIDFD_FD: i32 = 3;

/// Entry point of `wpod __exec`; never returns.
pub fn main(spec_path: &Path, pid: i32, argv: &[String]) -> ! {
    crate::helper::set_undumpable();
    // SAFETY: the runtime passes the container's pidfd at this number; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(PIDFD_FD) };
    match enter(spec_path, pid, pidfd).and_then(|spec| confine(&spec).map(|()| spec)) {
        Ok(spec) => run(&spec, argv),
        Err(e) => {
            eprintln!("wpod exec: {e}");
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}

fn enter(spec_path: &Path, pid: i32, pidfd: OwnedFd) -> Result<LaunchSpec, StepError> {
    let spec = LaunchSpec::read(spec_path)?;
    spec.join_cgroups()?;
    // All five at once, from the process itself (Linux 5.8): after the mount namespace, /proc
    // would be the container's.
    let mut kinds = CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS;
    // The pod's own user namespace too (the kernel joins it first, and checks the others with
    // the host root's capabilities this helper still has).
    let userns = spec.namespaces.user.is_some();
    if userns {
        kinds |= CloneFlags::CLONE_NEWUSER;
    }
    LinuxSyscall.setns(pidfd.as_fd(), kinds).map_err(|e| {
        StepError::msg(
            format!("join the container's namespaces (pid {pid}; is it running?)"),
            e.desc(),
        )
    })?;
    if userns {
        security::become_root_of_user_namespace()?;
    }
    Ok(spec)
}

/// This helper takes the container's privileges before it forks into its PID namespace.
fn confine(spec: &LaunchSpec) -> Result<(), StepError> {
    let seccomp = security::seccomp_program(&spec.security)?;
    security::confine(&spec.security, seccomp.as_ref())?;
    crate::helper::set_undumpable();
    Ok(())
}

fn run(spec: &LaunchSpec, argv: &[String]) -> ! {
    // SAFETY: this helper is single-threaded; the child only sets itself up and execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let _ = std::env::set_current_dir(spec.cwd.as_deref().unwrap_or("/"));
            let (code, err) = launch::exec(argv, &spec.env);
            eprintln!("wpod exec: {err}");
            std::process::exit(code)
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
            _ => std::process::exit(EXIT_SETUP_FAILED),
        },
        Err(e) => {
            eprintln!("wpod exec: fork: {e}");
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}
