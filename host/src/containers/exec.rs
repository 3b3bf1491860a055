//! `wpod __exec LAUNCH.json PID -- COMMAND...`: runs a command inside a running native container
//! (for exec probes and lifecycle hooks), as `kubectl exec` would: in the container's cgroup and
//! namespaces (its mount namespace gives its root), with its environment and privileges.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::launch::{self, LaunchSpec, EXIT_SETUP_FAILED};
use super::security;
use crate::helper::StepError;

/// Entry point of `wpod __exec`; never returns.
pub fn main(spec_path: &Path, pid: i32, argv: &[String]) -> ! {
    match enter(spec_path, pid) {
        Ok(spec) => run(&spec, argv),
        Err(e) => {
            eprintln!("wpod exec: {e}");
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}

fn enter(spec_path: &Path, pid: i32) -> Result<LaunchSpec, StepError> {
    let spec = LaunchSpec::read(spec_path)?;
    spec.join_cgroups()?;
    // Open every namespace first: after joining the mount namespace, /proc is the container's.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut files = Vec::new();
    for (name, flag) in kinds {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let file = File::open(&path).map_err(|e| {
            StepError::io("open the container's namespace (is it running?)", &path, e)
        })?;
        files.push((file, flag, path));
    }
    for (file, flag, path) in &files {
        setns(file.as_fd(), *flag).map_err(|e| StepError::sys("setns", path, e))?;
    }
    Ok(spec)
}

fn run(spec: &LaunchSpec, argv: &[String]) -> ! {
    let seccomp = match security::seccomp_program(&spec.security) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wpod exec: {e}");
            std::process::exit(EXIT_SETUP_FAILED)
        }
    };
    // SAFETY: this helper is single-threaded; the child only sets itself up and execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            if let Err(e) = security::confine(&spec.security, seccomp.as_ref()) {
                eprintln!("wpod exec: {e}");
                std::process::exit(EXIT_SETUP_FAILED);
            }
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
