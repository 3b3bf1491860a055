//! The namespace holder (`wpod __holder`), the pod's "pause container": a fresh single-threaded
//! process that creates the pod's network, UTS and IPC namespaces, sets the hostname, brings
//! `lo` up and then just waits, keeping the namespaces alive. With a shared PID namespace it
//! forks the pod's PID 1, which reaps orphans. It exits when the runtime's lifeline (fd 3)
//! closes, and its PID 1 dies with it (taking every process of the PID namespace along).
//!
//! With `shareProcessNamespace: true` the pod's containers see PID 1, and one granted
//! `SYS_PTRACE` can reach it through `/proc/1/root`, `/proc/1/cwd`, `/proc/1/fd` or by attaching
//! to it. So, as Kubernetes' pause container does, the holder and its PID 1 keep nothing worth
//! reaching once the namespaces exist: their own mount namespace whose root is an empty
//! read-only tmpfs, no open descriptor but the lifeline, the unprivileged pause user, no
//! capabilities at all, `no_new_privs`, and not dumpable. Their executable is wpod's sealed
//! copy (`helper.rs`), so even `/proc/1/exe` leads to nothing writable.
//!
//! PID 1 also mounts the pod's `/proc` (a procfs of the shared PID namespace) on a directory of
//! the pod's state, before any container exists. Containers of the pod get a bind of it, made by
//! their shim outside the PID namespace: no process of wpod's ever has to be privileged inside
//! a PID namespace where another container could reach it (CVE-2016-9962's class: a container
//! granted `SYS_PTRACE` attaching to, or opening `/proc/N/root` of, a helper still setting up).

use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use caps::CapSet;
use nix::mount::{mount, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

use crate::helper::{StepError, LIFELINE_FD};
use crate::sys::{LinuxSyscall, Syscall};

/// The user the holder and its PID 1 become, as Kubernetes' pause image runs (65535:65535).
pub const PAUSE_ID: u32 = 65535;

/// Entry point of `wpod __holder`. Prints `ready <pid-1 host pid or 0>` or `error <message>`.
/// With `pod_proc`, the pod shares one PID namespace, whose procfs is mounted there. With
/// `userns`, the pod's namespaces belong to a user namespace of its own (see [`await_map`]).
pub fn main(hostname: &str, pod_proc: Option<&Path>, host_network: bool, userns: bool) -> ! {
    crate::helper::set_undumpable();
    // SAFETY: the runtime passes the lifeline as fd 3 to every holder.
    let lifeline = unsafe { OwnedFd::from_raw_fd(LIFELINE_FD) };
    let made = match userns {
        true => create_namespaces_in_userns(hostname, pod_proc),
        false => create_namespaces(hostname, pod_proc, host_network),
    };
    let init = match made {
        Ok(init) => init,
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = drop_everything() {
        println!("error {e}");
        std::process::exit(1);
    }
    println!("ready {}", init.map_or(0, |p| p.as_raw()));
    let _ = std::io::stdout().flush();
    // Nothing more to say: stdin and stdout go (stderr stays for a panic message).
    // SAFETY: closing our own standard descriptors; nothing uses them after this.
    unsafe {
        libc::close(0);
        libc::close(1);
    }
    // Wait for the runtime to go away (it never writes to the lifeline).
    loop {
        let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    // PID 1 has the holder as parent-death signal source: it is SIGKILLed as the holder exits.
    std::process::exit(0)
}

fn create_namespaces(
    hostname: &str,
    pod_proc: Option<&Path>,
    host_network: bool,
) -> Result<Option<Pid>, StepError> {
    let sys = LinuxSyscall;
    unshare_pod(&sys, hostname, host_network)?;
    if !host_network {
        loopback_up().map_err(|e| StepError::msg("bring up lo", e))?;
    }
    // PID 1 first, while the holder is still in the host's mount namespace: PID 1 mounts the
    // pod's /proc there before it leaves.
    let init = pod_proc.map(|p| start_pid1(&sys, p)).transpose()?;
    enter_empty_root(&sys)?;
    Ok(init)
}

/// The pod's namespaces owned by a user namespace of its own (`hostUsers: false`), so that the
/// capabilities its containers hold count in the pod's namespaces only.
///
/// The PID namespace is made first, by the holder still root on the host: the pod's procfs is
/// mounted in the host's mount namespace, which only the host's root may do. So PID 1 is born
/// there, mounts it, and waits; the holder then makes the user namespace together with the
/// network, UTS and IPC ones it owns, and once the runtime has written its ID maps, PID 1 joins
/// them all before it gives everything up. The PID namespace itself stays owned by the host's
/// user namespace: a container's root cannot mount another procfs of it.
fn create_namespaces_in_userns(
    hostname: &str,
    pod_proc: Option<&Path>,
) -> Result<Option<Pid>, StepError> {
    let sys = LinuxSyscall;
    let init = pod_proc.map(|p| fork_pid1(&sys, p, true)).transpose()?;
    sys.unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| {
        StepError::errno(
            "unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC)",
            e,
        )
    })?;
    await_map()?;
    sys.sethostname(hostname)
        .map_err(|e| StepError::errno(format!("sethostname({hostname})"), e))?;
    loopback_up().map_err(|e| StepError::msg("bring up lo", e))?;
    let init = init.map(Pid1::finish).transpose()?;
    enter_empty_root(&sys)?;
    Ok(init)
}

/// Says `userns` on stdout and waits for the runtime's `mapped` on stdin: only a process of
/// the parent user namespace may write the new one's ID maps.
fn await_map() -> Result<(), StepError> {
    println!("userns");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    match line.trim() {
        "mapped" => Ok(()),
        other => Err(StepError::msg(
            "wait for the user namespace's ID maps",
            format!("the runtime said {other:?}"),
        )),
    }
}

/// The pod's network, UTS (with its hostname) and IPC namespaces; a hostNetwork pod keeps the
/// host's network and UTS namespaces (its hostname), as the kubelet gives it, and gets an IPC
/// namespace of its own.
fn unshare_pod(sys: &dyn Syscall, hostname: &str, host_network: bool) -> Result<(), StepError> {
    if host_network {
        return sys
            .unshare(CloneFlags::CLONE_NEWIPC)
            .map_err(|e| StepError::errno("unshare(CLONE_NEWIPC)", e));
    }
    sys.unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| StepError::errno("unshare(CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC)", e))?;
    sys.sethostname(hostname)
        .map_err(|e| StepError::errno(format!("sethostname({hostname})"), e))
}

/// Creates the pod's PID namespace and its PID 1, and returns once PID 1 has mounted the pod's
/// procfs on `pod_proc` and given up everything (or with the step that failed).
fn start_pid1(sys: &dyn Syscall, pod_proc: &Path) -> Result<Pid, StepError> {
    fork_pid1(sys, pod_proc, false)?.finish()
}

/// The pod's PID 1, forked; [`Pid1::finish`] waits until it is set up. Dropped unfinished (the
/// holder failed on the way), it is killed: it must not outlive a holder it could not join.
struct Pid1 {
    pid: Pid,
    /// `None` once finished.
    report: Option<OwnedFd>,
    /// Written to let PID 1 join the holder's namespaces (`join_later`); closed unwritten, it
    /// gives up.
    go: Option<OwnedFd>,
}

/// Forks the pod's PID 1 in a new PID namespace. With `join_later`, it waits after mounting the
/// pod's procfs until [`Pid1::finish`], then joins the holder's user, network, UTS and IPC
/// namespaces.
fn fork_pid1(sys: &dyn Syscall, pod_proc: &Path, join_later: bool) -> Result<Pid1, StepError> {
    sys.unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| StepError::errno("unshare(CLONE_NEWPID)", e))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| StepError::errno("pipe", e))
    };
    let (report_read, report_write) = pipe()?;
    let (go_read, go_write) = match join_later {
        true => {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        }
        false => (None, None),
    };
    // As PID 1 finds it in the host's /proc (its own getppid() says 0: the holder is outside
    // its PID namespace).
    let holder = std::process::id();
    // SAFETY: the holder is single-threaded.
    match unsafe { fork() }.map_err(|e| StepError::errno("fork the pod's PID 1", e))? {
        ForkResult::Child => {
            drop(report_read);
            drop(go_write);
            pid1(pod_proc, report_write, go_read.map(|go| (go, holder)))
        }
        ForkResult::Parent { child } => Ok(Pid1 {
            pid: child,
            report: Some(report_read),
            go: go_write,
        }),
    }
}

impl Pid1 {
    /// Lets PID 1 go on (if it waits), and returns once it has given up everything.
    fn finish(mut self) -> Result<Pid, StepError> {
        if let Some(go) = self.go.take() {
            let _ = nix::unistd::write(&go, b"g");
        }
        let mut failure = String::new();
        if let Some(report) = self.report.take() {
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(report), &mut failure);
        }
        if failure.is_empty() {
            return Ok(self.pid);
        }
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
        let (step, error) = failure
            .split_once('\n')
            .unwrap_or(("start the pod's PID 1", ""));
        Err(StepError::msg(step, error))
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if self.report.is_some() {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// PID 1 joins the namespaces of its parent, the holder, once they exist (`hostUsers: false`):
/// the network, UTS and IPC ones first, while it is still root on the host, the user one last.
fn join_holders_namespaces(go: OwnedFd, holder: u32) -> Result<(), StepError> {
    let mut byte = [0u8; 1];
    // The holder's word that its namespaces exist; an end without it: the holder gave up.
    if !matches!(nix::unistd::read(go.as_fd(), &mut byte), Ok(1)) {
        return Err(StepError::msg(
            "wait for the pod's namespaces",
            "the holder gave up before making them",
        ));
    }
    for (kind, flag) in [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("user", CloneFlags::CLONE_NEWUSER),
    ] {
        let path = format!("/proc/{holder}/ns/{kind}");
        let ns = std::fs::File::open(&path)
            .map_err(|e| StepError::msg(format!("open the pod's {kind} namespace ({path})"), e))?;
        nix::sched::setns(ns.as_fd(), flag)
            .map_err(|e| StepError::errno(format!("setns({path})"), e))?;
    }
    Ok(())
}

/// A private mount namespace whose root is an empty, read-only tmpfs: `/proc/1/root` of the pod
/// then shows nothing of the host.
fn enter_empty_root(sys: &dyn Syscall) -> Result<(), StepError> {
    let failed = |step: &'static str| move |e: nix::Error| StepError::errno(step, e);
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(failed("unshare(CLONE_NEWNS)"))?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(failed("make / private"))?;
    // Any directory that surely exists will do as the mount point: /proc is one, and this
    // private namespace needs no /proc of its own.
    let empty = Path::new("/proc");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("tmpfs")),
        empty,
        Some("tmpfs"),
        flags,
        Some("size=4k,mode=0555"),
    )
    .map_err(failed("mount the empty root"))?;
    sys.chdir(empty)
        .map_err(|e| StepError::msg("chdir to the empty root", e))?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the new.
    sys.pivot_root_here()
        .map_err(failed("pivot_root to the empty root"))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(failed("detach the host's root"))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| StepError::msg("chdir /", e))?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
        None,
    )
    .map_err(failed("make the empty root read-only"))
}

/// The pause user, no capability in any set, `no_new_privs`, not dumpable.
fn drop_everything() -> Result<(), StepError> {
    let cap = |step: &'static str| move |e: caps::errors::CapsError| StepError::msg(step, e);
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes last.
    for c in caps::all() {
        caps::drop(None, CapSet::Bounding, c).map_err(cap("drop the bounding set"))?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(cap("clear inheritable capabilities"))?;
    let _ = caps::clear(None, CapSet::Ambient); // absent on old kernels
    let id = |e: nix::Error| StepError::errno(format!("become the pause user {PAUSE_ID}"), e);
    nix::unistd::setgroups(&[]).map_err(id)?;
    nix::unistd::setresgid(
        Gid::from_raw(PAUSE_ID),
        Gid::from_raw(PAUSE_ID),
        Gid::from_raw(PAUSE_ID),
    )
    .map_err(id)?;
    // For a non-root user the kernel clears the permitted and effective sets here.
    nix::unistd::setresuid(
        Uid::from_raw(PAUSE_ID),
        Uid::from_raw(PAUSE_ID),
        Uid::from_raw(PAUSE_ID),
    )
    .map_err(id)?;
    caps::clear(None, CapSet::Permitted).map_err(cap("clear permitted capabilities"))?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(StepError::msg(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                std::io::Error::last_os_error(),
            ));
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(StepError::msg(
                "prctl(PR_SET_DUMPABLE)",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Mounts the procfs of the calling process's PID namespace on `dir` (in the host's mount
/// namespace, where the calling process still is).
fn mount_pod_proc(dir: &Path) -> Result<(), StepError> {
    mount(
        Some("proc"),
        dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| StepError::sys("mount the pod's /proc", dir, e))
}

/// The pod's PID 1: mounts the pod's procfs, gives up everything, then reaps every orphan of
/// the shared PID namespace until the holder dies. `report` gets the failed step, or closes.
fn pid1(pod_proc: &Path, report: OwnedFd, join: Option<(OwnedFd, u32)>) -> ! {
    let setup = || -> Result<(), StepError> {
        mount_pod_proc(pod_proc)?;
        if let Some((go, holder)) = join {
            join_holders_namespaces(go, holder)?;
        }
        enter_empty_root(&LinuxSyscall)?;
        drop_everything()
    };
    if let Err(e) = setup() {
        // Never run as PID 1 with more than nothing.
        let _ = write!(std::fs::File::from(report), "{}\n{}", e.step, e.error);
        std::process::exit(1);
    }
    drop(report);
    // It holds no descriptor at all: nothing of the host through /proc/1/fd.
    // SAFETY: close_range on our own descriptor table; nothing below uses them.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    // After the change of user (which clears it): die with the holder.
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

/// The holder's namespace and root steps against the recording fake: no root needed.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscall};

    #[test]
    fn a_pod_gets_its_namespaces_and_hostname_and_a_host_network_pod_only_ipc() {
        let fake = RecordingSyscall::new("holder-ns", &[]);
        unshare_pod(&fake, "front", false).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::Unshare(
                    CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC
                ),
                Call::Sethostname("front".into()),
            ]
        );
        let fake = RecordingSyscall::new("holder-hostnet", &[]);
        unshare_pod(&fake, "front", true).unwrap();
        assert_eq!(fake.calls(), [Call::Unshare(CloneFlags::CLONE_NEWIPC)]);
    }

    /// The holder keeps nothing of the host's files: a private mount namespace whose root is
    /// an empty tmpfs, the host's root detached, then sealed read-only.
    #[test]
    fn the_holder_pivots_into_an_empty_read_only_root() {
        let fake = RecordingSyscall::new("holder-root", &[]);
        enter_empty_root(&fake).unwrap();
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let mount = |source: Option<&str>,
                     target: &str,
                     fstype: Option<&str>,
                     flags,
                     data: Option<&str>| {
            Call::Mount {
                source: source.map(Into::into),
                target: target.into(),
                fstype: fstype.map(Into::into),
                flags,
                data: data.map(Into::into),
            }
        };
        assert_eq!(
            fake.calls(),
            [
                Call::Unshare(CloneFlags::CLONE_NEWNS),
                mount(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
                mount(
                    Some("tmpfs"),
                    "/proc",
                    Some("tmpfs"),
                    flags,
                    Some("size=4k,mode=0555")
                ),
                Call::Chdir("/proc".into()),
                Call::PivotRootHere,
                Call::Umount2 {
                    target: ".".into(),
                    flags: MntFlags::MNT_DETACH
                },
                Call::Chdir("/".into()),
                mount(
                    None,
                    "/",
                    None,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
                    None
                ),
            ]
        );
        // A refused pivot stops there, named.
        let fake = RecordingSyscall::new("holder-root-refused", &[]);
        fake.fail_when(|c| *c == Call::PivotRootHere, nix::errno::Errno::EINVAL);
        let e = enter_empty_root(&fake).unwrap_err();
        assert_eq!(e.step, "pivot_root to the empty root");
        assert_eq!(fake.calls().last(), Some(&Call::PivotRootHere));
    }
}
