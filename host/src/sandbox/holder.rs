//! The namespace holder (`wpod __holder`), the pod's "pause container": a fresh single-threaded
//! process that creates the pod's network, UTS and IPC namespaces, sets the hostname, brings
//! `lo` up and then just waits, keeping the namespaces alive. With a shared PID namespace it
//! forks the pod's PID 1, which reaps orphans. It exits when the runtime's lifeline (fd 3)
//! closes, and its PID 1 dies with it (taking every process of the PID namespace along).

use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, sethostname, ForkResult, Pid};

use crate::containers::launch::LIFELINE_FD;

/// Entry point of `wpod __holder`. Prints `ready <pid-1 host pid or 0>` or `error <message>`.
pub fn main(hostname: &str, share_pid: bool) -> ! {
    // SAFETY: the runtime passes the lifeline as fd 3 to every holder.
    let lifeline = unsafe { OwnedFd::from_raw_fd(LIFELINE_FD) };
    let init = match create_namespaces(hostname, share_pid) {
        Ok(init) => init,
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    };
    println!("ready {}", init.map_or(0, |p| p.as_raw()));
    let _ = std::io::stdout().flush();
    // Wait for the runtime to go away (it never writes to the lifeline).
    loop {
        let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if let Some(init) = init {
        let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
    }
    std::process::exit(0)
}

fn create_namespaces(hostname: &str, share_pid: bool) -> Result<Option<Pid>, String> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| {
            format!(
                "unshare(CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC): {}",
                e.desc()
            )
        })?;
    sethostname(hostname).map_err(|e| format!("sethostname({hostname}): {}", e.desc()))?;
    loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    if !share_pid {
        return Ok(None);
    }
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare(CLONE_NEWPID): {}", e.desc()))?;
    // SAFETY: the holder is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork the pod's PID 1: {}", e.desc()))? {
        ForkResult::Child => pid1(),
        ForkResult::Parent { child } => Ok(Some(child)),
    }
}

/// The pod's PID 1: reaps every orphan of the shared PID namespace until the holder dies.
fn pid1() -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        let _ = set.wait();
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// `ip link set lo up`: the kernel then gives it 127.0.0.1 and ::1.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo"; the fd is closed below.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
