//! The container shim (`wpod __container LAUNCH.json`), one per native container, like conmon.
//!
//! It is a fresh single-threaded process (the runtime is multi-threaded, where forking into
//! namespace setup is unsafe). It joins the container's cgroups and the pod's namespaces, builds
//! the root filesystem in a private mount namespace, forks the container process, reports the
//! result on fd 4, forwards signals, and exits the way the container exited. If the runtime
//! dies, the lifeline (fd 3) reaches EOF and the shim kills the container.
//!
//! The container process is in the container's PID namespace from the moment it is forked, so
//! what it holds before exec is what another process of that namespace can reach (`ptrace`,
//! `/proc/N/root`, `/proc/N/mem`) if it was granted `SYS_PTRACE`, which no dumpable flag stops.
//! Hence two orders:
//! - **the pod's shared PID namespace** (other containers are there): the shim does every
//!   privileged step itself, outside that namespace (the pod's `/proc` bound from the procfs the
//!   pod's PID 1 mounted, `pivot_root`, seccomp, capabilities, user, `no_new_privs`), then forks
//!   a child that only execs. It is born holding no more than the container will.
//! - **a PID namespace of its own**: the child is that namespace's only process until it execs,
//!   so it mounts a fresh `/proc`, pivots and confines itself there, as runc's init does.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, raise, signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

use super::launch::{self, LaunchSpec, Report, EXIT_SETUP_FAILED, REPORT_FD};
use super::{rootfs, security};
use crate::helper::{StepError, LIFELINE_FD};
use crate::sandbox::namespaces::NamespacePaths;
use crate::sys::{LinuxSyscall, Syscall};

/// Signals the shim passes on to the container.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Entry point of `wpod __container`; never returns.
pub fn main(spec_path: &Path) -> ! {
    crate::helper::set_undumpable();
    let start_up = crate::memory::StartUp::begin();
    // SAFETY: the runtime passes these descriptors to every shim; nothing else owns them.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    let lifeline = unsafe { OwnedFd::from_raw_fd(LIFELINE_FD) };
    let outcome = LaunchSpec::read(spec_path).and_then(|spec| setup_and_fork(&spec, start_up));
    let child = match outcome {
        Ok(child) => child,
        Err(e) => {
            send(
                &mut report,
                &Report::Failed {
                    step: e.step.clone(),
                    error: e.error.clone(),
                },
            );
            eprintln!("wpod: cannot start container: {e}");
            std::process::exit(EXIT_SETUP_FAILED);
        }
    };
    send(
        &mut report,
        &Report::Started {
            pid: child.pid.as_raw(),
        },
    );
    drop(report);
    // The launch config and the root filesystem's setup are behind: the shim now only waits,
    // for as long as the container runs.
    if let Some(start_up) = child.start_up {
        start_up.done();
    }
    let status = supervise(child.pid, &child.signals, lifeline.as_fd());
    exit_like(status)
}

fn send(report: &mut File, r: &Report) {
    if let Ok(line) = serde_json::to_string(r) {
        let _ = writeln!(report, "{line}");
    }
}

struct Child {
    pid: Pid,
    signals: SignalFd,
    /// Start-up's memory, still to give back (the shim did not confine itself).
    start_up: Option<crate::memory::StartUp>,
}

/// Who confines the container process: see the module's comment.
enum Confinement {
    /// The shim did, before forking (the pod's shared PID namespace).
    Done,
    /// The child does, alone in its PID namespace: /proc, pivot_root, then privileges (in the
    /// pod's user namespace, if it has one).
    InChild(rootfs::Rootfs, Option<OwnedFd>),
}

fn join_namespace(
    sys: &dyn Syscall,
    path: &Path,
    kind: CloneFlags,
    what: &str,
) -> Result<(), StepError> {
    let file =
        File::open(path).map_err(|e| StepError::io(format!("open {what} namespace"), path, e))?;
    sys.setns(file.as_fd(), kind)
        .map_err(|e| StepError::sys(format!("setns({what})"), path, e))
}

/// Joins the pod's network, UTS and IPC namespaces, and its shared PID namespace or a new one
/// (which the container process, forked next, is PID 1 of).
fn enter_namespaces(sys: &dyn Syscall, ns: &NamespacePaths) -> Result<(), StepError> {
    join_namespace(sys, &ns.net, CloneFlags::CLONE_NEWNET, "network")?;
    join_namespace(sys, &ns.uts, CloneFlags::CLONE_NEWUTS, "uts")?;
    join_namespace(sys, &ns.ipc, CloneFlags::CLONE_NEWIPC, "ipc")?;
    match &ns.pid {
        Some(shared) => join_namespace(sys, &shared.ns, CloneFlags::CLONE_NEWPID, "pid"),
        None => sys
            .unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| StepError::sys("unshare(CLONE_NEWPID)", Path::new("-"), e)),
    }
}

fn setup_and_fork(spec: &LaunchSpec, start_up: crate::memory::StartUp) -> Result<Child, StepError> {
    let sys: Arc<dyn Syscall> = Arc::new(LinuxSyscall);
    spec.join_cgroups()?;
    let ns = &spec.namespaces;
    // The pod's user namespace is joined last, just before the container's privileges are
    // taken: everything before (the mounts, the pivot) is done as the host's root, in a mount
    // namespace the pod's root has no power over. Opened now, while /proc is the host's.
    let userns = ns
        .user
        .as_ref()
        .map(|u| {
            File::open(&u.ns)
                .map(OwnedFd::from)
                .map_err(|e| StepError::io("open user namespace", &u.ns, e))
        })
        .transpose()?;
    enter_namespaces(&*sys, ns)?;
    let volumes = rootfs::clone_volumes(&spec.mounts)?;
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| StepError::sys("unshare(CLONE_NEWNS)", Path::new("-"), e))?;
    let pod_users = match (&userns, &ns.user) {
        (Some(fd), Some(user)) => Some(rootfs::UserNs {
            fd: fd.as_fd(),
            ids: user.ids,
        }),
        _ => None,
    };
    let root = rootfs::prepare(sys.clone(), &spec.rootfs, &spec.mounts, volumes, pod_users)?;
    let seccomp = security::seccomp_program(&spec.security)?;
    // What start-up used goes back once the shim only waits (with its container's report),
    // or, when the shim confines itself, before the container's seccomp filter applies to it,
    // which may not allow the calls that give memory back.
    let (confinement, start_up) = match &ns.pid {
        Some(shared) => {
            root.bind_pod_proc(&shared.proc)?;
            root.pivot()?;
            drop(root);
            start_up.done();
            if let Some(fd) = &userns {
                security::join_user_namespace(fd.as_fd())?;
            }
            security::confine(&spec.security, seccomp.as_ref())?;
            // A change of user makes the shim non-dumpable again; dropping capabilities alone
            // would not.
            crate::helper::set_undumpable();
            (Confinement::Done, None)
        }
        None => (Confinement::InChild(root, userns), Some(start_up)),
    };

    // Signals are blocked from here and read through a signalfd; the child unblocks them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    FORWARDED.iter().for_each(|s| mask.add(*s));
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| StepError::msg("block signals", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| StepError::msg("signalfd", e))?;

    // Reports a failure between fork and exec; closed (empty) by a successful exec.
    let (err_read, err_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| StepError::msg("pipe", e))?;
    // SAFETY: the shim is single-threaded, so the child may run ordinary code before exec.
    match unsafe { fork() }.map_err(|e| StepError::msg("fork", e))? {
        ForkResult::Child => {
            drop(err_read);
            let e = container_main(spec, &confinement, seccomp.as_ref());
            let mut w = File::from(err_write);
            let _ = write!(w, "{}\n{}\n{}", e.0, e.1.step, e.1.error);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(e.0) }
        }
        ForkResult::Parent { child } => {
            drop(err_write);
            let mut msg = String::new();
            let _ = File::from(err_read).read_to_string(&mut msg);
            if msg.is_empty() {
                return Ok(Child {
                    pid: child,
                    signals,
                    start_up,
                });
            }
            let _ = waitpid(child, None);
            let mut parts = msg.splitn(3, '\n');
            let _code = parts.next();
            let step = parts.next().unwrap_or("start container").to_string();
            let error = parts.next().unwrap_or_default().to_string();
            Err(StepError { step, error })
        }
    }
}

/// In the forked container process: returns only on failure, with the exit code to use.
fn container_main(
    spec: &LaunchSpec,
    confinement: &Confinement,
    seccomp: Option<&seccompiler::BpfProgram>,
) -> (i32, StepError) {
    let setup = || -> Result<(), StepError> {
        // The shim's report pipe and lifeline are the shim's alone: closed before anything
        // else, so no process that reaches this one before exec finds them.
        // SAFETY: closing descriptors this process inherited and never uses.
        unsafe {
            libc::close(REPORT_FD);
            libc::close(LIFELINE_FD);
        }
        // SAFETY: prctl with integer arguments. The container dies with its shim.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        setsid().map_err(|e| StepError::msg("setsid", e))?;
        if let Confinement::InChild(root, userns) = confinement {
            root.mount_own_proc()?;
            root.pivot()?;
            if let Some(fd) = userns {
                security::join_user_namespace(fd.as_fd())?;
            }
            security::confine(&spec.security, seccomp)?;
        }
        let cwd = spec.cwd.as_deref().unwrap_or("/");
        std::env::set_current_dir(cwd)
            .map_err(|e| StepError::io("chdir to workingDir", Path::new(cwd), e))?;
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(|e| StepError::msg("unblock signals", e))?;
        Ok(())
    };
    if let Err(e) = setup() {
        return (EXIT_SETUP_FAILED, e);
    }
    launch::exec(&spec.argv, &spec.env)
}

/// Waits for the container, forwarding signals; kills it if the runtime goes away.
fn supervise(child: Pid, signals: &SignalFd, lifeline: BorrowedFd<'_>) -> WaitStatus {
    let mut lifeline_open = true;
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if lifeline_open {
            fds.push(PollFd::new(lifeline, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue; // EINTR
        }
        let lifeline_event = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if lifeline_event {
            // The runtime never writes: readable or hung up means it is gone.
            lifeline_open = false;
            let _ = kill(child, Signal::SIGKILL);
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let sig = Signal::try_from(info.ssi_signo as i32);
            match sig {
                Ok(Signal::SIGCHLD) => {}
                Ok(s) => {
                    let _ = kill(child, s);
                }
                Err(_) => {}
            }
            if sig == Ok(Signal::SIGCHLD) {
                break;
            }
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
            Ok(_) => {}
            Err(_) => return WaitStatus::Exited(child, EXIT_SETUP_FAILED),
        }
    }
}

/// Ends the shim the way the container ended, so the runtime sees the container's status.
fn exit_like(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Signaled(_, sig, _) => {
            // No core file of the shim itself.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            // SAFETY: restoring the default disposition of a signal.
            unsafe {
                let _ = signal(sig, SigHandler::SigDfl);
            }
            let mut set = SigSet::empty();
            set.add(sig);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = raise(sig);
            std::process::exit(128 + sig as i32)
        }
        WaitStatus::Exited(_, code) => std::process::exit(code),
        _ => std::process::exit(EXIT_SETUP_FAILED),
    }
}

/// The shim's namespace steps against the recording fake: no root needed.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::namespaces::SharedPid;
    use crate::sys::fake::{Call, RecordingSyscall};

    fn paths(fake: &RecordingSyscall, shared_pid: bool) -> NamespacePaths {
        // Stand-ins for /proc/PID/ns/*: the fake records which file was joined.
        for name in ["net", "uts", "ipc", "pid"] {
            std::fs::write(fake.path(name), "").unwrap();
        }
        NamespacePaths {
            net: fake.path("net"),
            uts: fake.path("uts"),
            ipc: fake.path("ipc"),
            pid: shared_pid.then(|| SharedPid {
                ns: fake.path("pid"),
                proc: fake.path("proc"),
            }),
            user: None,
        }
    }

    #[test]
    fn a_container_joins_the_pods_namespaces_in_order() {
        let setns = |fake: &RecordingSyscall, name: &str, kinds| Call::Setns {
            ns: fake.path(name),
            kinds,
        };
        let fake = RecordingSyscall::new("shim-ns", &[]);
        enter_namespaces(&fake, &paths(&fake, true)).unwrap();
        assert_eq!(
            fake.calls(),
            [
                setns(&fake, "net", CloneFlags::CLONE_NEWNET),
                setns(&fake, "uts", CloneFlags::CLONE_NEWUTS),
                setns(&fake, "ipc", CloneFlags::CLONE_NEWIPC),
                setns(&fake, "pid", CloneFlags::CLONE_NEWPID),
            ]
        );
        // Without shareProcessNamespace: a PID namespace of its own.
        let fake = RecordingSyscall::new("shim-ns-own-pid", &[]);
        enter_namespaces(&fake, &paths(&fake, false)).unwrap();
        assert_eq!(
            fake.calls().last(),
            Some(&Call::Unshare(CloneFlags::CLONE_NEWPID))
        );
    }

    /// A namespace that is gone (the pod's holder died) stops the container before anything
    /// else is joined, naming the step.
    #[test]
    fn a_missing_namespace_is_a_named_step() {
        let fake = RecordingSyscall::new("shim-ns-gone", &[]);
        let mut ns = paths(&fake, false);
        ns.uts = fake.path("gone");
        let e = enter_namespaces(&fake, &ns).unwrap_err();
        assert_eq!(e.step, "open uts namespace");
        assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());

        let fake = RecordingSyscall::new("shim-ns-refused", &[]);
        fake.fail_when(
            |c| matches!(c, Call::Setns { kinds, .. } if *kinds == CloneFlags::CLONE_NEWIPC),
            nix::errno::Errno::EPERM,
        );
        let e = enter_namespaces(&fake, &paths(&fake, false)).unwrap_err();
        assert_eq!(e.step, "setns(ipc)");
    }
}
