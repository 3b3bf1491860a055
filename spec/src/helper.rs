//! Helper processes: the namespace holder, the container shims and `__exec` run as fresh
//! single-threaded processes, so that namespace setup never happens in the runtime. They run
//! the `wpod-helper` binary installed beside `wpod`: the same library's helper code without the
//! rest (Wasm, registries, the CLI), so each helper process relocates and keeps a small
//! fraction of what `wpod` would cost it (about 1.1 MiB of relocated data less per process,
//! and ~1.3 ms less per start). Both binaries carry their build ID in an ELF section
//! ([`BUILD_ID_SECTION`]), which `wpod` reads from the helper binary without running it. A
//! `wpod-helper` of another build, or none at all: `wpod` runs its helpers from itself, as
//! before, and says so once. They start through `posix_spawn` ([`spawn_helper`]), which does
//! not copy the runtime's page tables as a `fork` would.
//!
//! Helpers run from a sealed view of the wpod binary, as runc does since CVE-2019-5736: a helper
//! is briefly (a shim's child before exec, an exec probe's child) or always (the pod's PID 1)
//! visible inside a container's PID namespace, and `/proc/PID/exe` of a process there must not
//! lead to the host's wpod binary, which a container could otherwise open and overwrite.
//!
//! The view is runc's: a read-only overlayfs over the binary's directory that exists only as a
//! descriptor (`fsopen`/`fsmount`, never attached to any mount tree), so there is no path to
//! remount it writable and no copy to make. Where the kernel cannot (no overlayfs, no new mount
//! API) the fallback is a sealed in-memory copy, which cannot be written, grown or shrunk, but
//! costs a copy of the whole binary (tens of MiB, ~100 ms with debug line tables) per `wpod run`
//! and its memory for the pod's life. Either is made once per wpod process.

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// File descriptor number at which every helper inherits the lifeline's read end.
pub const LIFELINE_FD: i32 = 3;

/// The helpers' binary, installed in the same directory as `wpod`.
pub const HELPER_BINARY: &str = "wpod-helper";

/// The argument that asks a helper binary to print its build ID (for people; `wpod` reads the
/// section).
pub const BUILD_ID_ARG: &str = "--build-id";

/// The ELF section in which `wpod` and `wpod-helper` carry their build ID.
pub const BUILD_ID_SECTION: &str = ".wpod_build";

/// What a helper process is started to do: the arguments `wpod` writes and the helper reads
/// back, in one type so the two never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperCall {
    /// The pod's namespace holder (`__holder`). With `pod_proc`, the pod shares one PID
    /// namespace, its procfs mounted there; `host_network` stays in the host's network and
    /// UTS namespaces; `userns` makes a user namespace of the pod's own (the holder says
    /// `userns` and waits for `mapped` on stdin while the runtime writes its ID maps).
    Holder {
        hostname: String,
        pod_proc: Option<PathBuf>,
        host_network: bool,
        userns: bool,
    },
    /// A native container's shim (`__container LAUNCH.json`).
    Container { launch_spec: PathBuf },
    /// A command inside a running container, for probes and hooks
    /// (`__exec LAUNCH.json PID -- COMMAND...`).
    Exec {
        launch_spec: PathBuf,
        pid: i32,
        argv: Vec<String>,
    },
}

impl HelperCall {
    /// The name the helper's process goes by (`comm`: what `ps`, `top` and `/proc/PID/stat`
    /// show), set by [`set_process_name`]. Helpers are run through `/proc/self/fd/N` (a sealed
    /// view of the binary), and the kernel names a process after the last part of the path it
    /// executed: every holder and shim was called `64`.
    pub fn process_name(&self) -> &'static std::ffi::CStr {
        match self {
            HelperCall::Holder { .. } => c"wpod-holder",
            HelperCall::Container { .. } => c"wpod-shim",
            HelperCall::Exec { .. } => c"wpod-exec",
        }
    }

    /// Whether `arg` (a binary's first argument) names a helper's job.
    pub fn is_helper_subcommand(arg: &OsStr) -> bool {
        matches!(arg.to_str(), Some("__holder" | "__container" | "__exec"))
    }

    /// The helper's arguments, its subcommand first.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        match self {
            HelperCall::Holder {
                hostname,
                pod_proc,
                host_network,
                userns,
            } => {
                args.extend(["__holder".into(), "--hostname".into(), hostname.into()]);
                if let Some(dir) = pod_proc {
                    args.extend(["--pod-proc".into(), dir.into()]);
                }
                if *host_network {
                    args.push("--host-network".into());
                }
                if *userns {
                    args.push("--userns".into());
                }
            }
            HelperCall::Container { launch_spec } => {
                args.extend(["__container".into(), launch_spec.into()]);
            }
            HelperCall::Exec {
                launch_spec,
                pid,
                argv,
            } => {
                args.extend([
                    "__exec".into(),
                    launch_spec.into(),
                    pid.to_string().into(),
                    "--".into(),
                ]);
                args.extend(argv.iter().map(OsString::from));
            }
        }
        args
    }

    /// Reads back what [`HelperCall::args`] wrote (the subcommand first).
    pub fn parse(args: &[OsString]) -> Result<Self, String> {
        let text = |a: &OsString| {
            a.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{} is not UTF-8", a.to_string_lossy()))
        };
        let Some((sub, rest)) = args.split_first() else {
            return Err("no helper subcommand".into());
        };
        match sub.to_str() {
            Some("__holder") => {
                let mut hostname = None;
                let mut pod_proc = None;
                let (mut host_network, mut userns) = (false, false);
                let mut it = rest.iter();
                while let Some(arg) = it.next() {
                    match arg.to_str() {
                        Some("--hostname") => {
                            hostname = Some(text(it.next().ok_or("--hostname needs a value")?)?)
                        }
                        Some("--pod-proc") => {
                            pod_proc =
                                Some(PathBuf::from(it.next().ok_or("--pod-proc needs a value")?))
                        }
                        Some("--host-network") => host_network = true,
                        Some("--userns") => userns = true,
                        _ => return Err(format!("__holder: unknown argument {arg:?}")),
                    }
                }
                Ok(HelperCall::Holder {
                    hostname: hostname.ok_or("__holder needs --hostname")?,
                    pod_proc,
                    host_network,
                    userns,
                })
            }
            Some("__container") => match rest {
                [spec] => Ok(HelperCall::Container {
                    launch_spec: spec.into(),
                }),
                _ => Err("usage: __container LAUNCH.json".into()),
            },
            Some("__exec") => match rest {
                [spec, pid, dashes, argv @ ..] if dashes == "--" => Ok(HelperCall::Exec {
                    launch_spec: spec.into(),
                    pid: text(pid)?
                        .parse()
                        .map_err(|_| format!("__exec: bad pid {pid:?}"))?,
                    argv: argv.iter().map(text).collect::<Result<_, _>>()?,
                }),
                _ => Err("usage: __exec LAUNCH.json PID -- COMMAND...".into()),
            },
            _ => Err(format!("unknown helper subcommand {sub:?}")),
        }
    }
}

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

/// What a spawned helper's standard descriptor is ([`spawn_helper`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperIo {
    /// `/dev/null`.
    Null,
    /// A pipe whose other end the [`HelperChild`] holds.
    Piped,
    /// wpod's own.
    Inherit,
}

/// Starts a helper ([`HelperCall`]) from this build's helper binary (`build_id` is the ID it
/// must carry; see the module's comment), with its `stdio` (stdin, stdout, stderr) and `fds`
/// (source, target: each target below [`FIRST_UNINHERITED_FD`]). What else it inherits is
/// what wpod opened without close-on-exec (std and nix open with it; a `dup` does not): each
/// helper's child closes everything above its stdio before it execs a container's command.
///
/// - **Through `posix_spawn`**: the child shares wpod's memory until it execs (glibc's
///   `CLONE_VM | CLONE_VFORK`), where a `fork` (what `std::process::Command` does once it is
///   given a `pre_exec`) copies the page tables of the whole runtime (wasmtime's too) for
///   `exec` to throw away: 0.8 ms of each helper's start on the suite's machine.
/// - **In a process group of its own**: a Ctrl-C at the terminal (or any signal to wpod's
///   group) reaches `wpod run` alone, which then stops the pod in order. Were the holder
///   signalled with it, a shared PID namespace would lose its PID 1, and the kernel would
///   SIGKILL every container in it.
/// - **No environment**: a helper's is readable through /proc/PID/environ by a container
///   granted SYS_PTRACE (the pod's PID 1 is a helper, and the others are briefly in the pod's
///   PID namespace), and the `wpod run` caller's may hold registry tokens or signing
///   passwords. Helpers take everything they need as arguments and launch specs.
/// - Signals unblocked and at their defaults (Rust ignores SIGPIPE), as `Command` leaves them.
pub fn spawn_helper(
    call: &HelperCall,
    build_id: &str,
    stdio: [HelperIo; 3],
    fds: &[(RawFd, RawFd)],
) -> std::io::Result<HelperChild> {
    spawn_sealed(sealed_helper(build_id)?, &call.args(), stdio, fds)
}

/// [`spawn_helper`] of the executable `helper`, with `args`.
fn spawn_sealed(
    helper: &SealedHelper,
    args: &[OsString],
    stdio: [HelperIo; 3],
    fds: &[(RawFd, RawFd)],
) -> std::io::Result<HelperChild> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    debug_assert!(fds.iter().all(|(_, t)| *t < FIRST_UNINHERITED_FD));
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| std::io::Error::other("a helper argument holds a NUL"))
    };
    // The view is close-on-exec: the kernel opens it before the exec closes it, so the helper
    // runs it without inheriting the descriptor.
    let path = cstring(format!("/proc/self/fd/{}", helper.fd.as_raw_fd()).as_bytes())?;
    let mut argv = vec![cstring(helper.name.as_bytes())?];
    for arg in args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let env: [CString; 0] = [];

    // Every source goes to a temporary first, above every source and the helper's own
    // descriptor (which the exec opens through /proc/self/fd), so that no placement clobbers
    // another's source or the executable; then each temporary to its target, then closed.
    let mut placed: Vec<(RawFd, RawFd)> = fds.to_vec();
    let mut ends: [Option<OwnedFd>; 3] = [None, None, None];
    let mut child_ends = Vec::new();
    for (target, io) in stdio.iter().enumerate() {
        if *io == HelperIo::Null {
            let null = File::options().read(true).write(true).open("/dev/null")?;
            placed.push((null.as_raw_fd(), target as RawFd));
            child_ends.push(OwnedFd::from(null));
        }
        if *io == HelperIo::Piped {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (child, parent) = match target {
                0 => (read, write),
                _ => (write, read),
            };
            placed.push((child.as_raw_fd(), target as RawFd));
            child_ends.push(child);
            ends[target] = Some(parent);
        }
    }
    let above = placed
        .iter()
        .map(|(src, _)| *src)
        .chain([helper.fd.as_raw_fd()])
        .max()
        .unwrap_or(0)
        + 1;
    let mut actions = PosixSpawnFileActions::init()?;
    for (i, (src, _)) in placed.iter().enumerate() {
        actions.add_dup2(*src, above + i as RawFd)?;
    }
    for (i, (_, target)) in placed.iter().enumerate() {
        actions.add_dup2(above + i as RawFd, *target)?;
    }
    for i in 0..placed.len() {
        actions.add_close(above + i as RawFd)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    // As `Command` does: signals unblocked, and SIGPIPE (which Rust ignores) back to its
    // default, with every other signal.
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attr.set_sigmask(&nix::sys::signal::SigSet::empty())?;
    attr.set_sigdefault(&nix::sys::signal::SigSet::all())?;
    let pid = nix::spawn::posix_spawn(path.as_c_str(), &actions, &attr, &argv, &env)?;
    drop(child_ends);
    Ok(HelperChild::new(pid, ends.map(|e| e.map(File::from))))
}

/// A helper process [`spawn_helper`] started. Until it is reaped, its PID is its own (a child's
/// PID is not reused before its parent reaps it). Dropped, it is not killed (the lifeline ends
/// it with wpod) unless asked ([`HelperChild::kill_on_drop`]), and it is reaped once it ends,
/// as tokio's `Child` is.
pub struct HelperChild {
    pid: nix::unistd::Pid,
    /// How it ended, once reaped.
    status: Option<std::process::ExitStatus>,
    /// Its pidfd, readable once it has ended ([`HelperChild::exited`]), made on first use.
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
    /// Reaped by someone else (`waitpid` said ECHILD): never signalled again.
    gone: bool,
    /// Killed if dropped before it ended ([`HelperChild::kill_on_drop`]).
    kill_on_drop: bool,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl HelperChild {
    fn new(pid: nix::unistd::Pid, [stdin, stdout, stderr]: [Option<File>; 3]) -> Self {
        HelperChild {
            pid,
            status: None,
            pidfd: None,
            gone: false,
            kill_on_drop: false,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Its PID on the host.
    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends it `signal` (once reaped: nothing, its PID may be another's).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
        match self.status.is_some() || self.gone {
            true => Ok(()),
            false => Ok(nix::sys::signal::kill(self.pid, signal)?),
        }
    }

    /// Makes dropping it before it ended kill it (a command whose caller stopped waiting, as
    /// at a probe's timeout), as tokio's `kill_on_drop` does.
    pub fn kill_on_drop(&mut self) {
        self.kill_on_drop = true;
    }

    /// SIGKILLs it (once reaped: nothing).
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for it to end, blocking the thread, and reaps it.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        // As std's and tokio's: a helper reading its stdin to the end would wait forever.
        drop(self.stdin.take());
        loop {
            if let Some(status) = self.reap(false)? {
                return Ok(status);
            }
        }
    }

    /// Waits for it to end without holding a thread (its pidfd turns readable then), and reaps
    /// it. Cancel-safe: it may be dropped and called again, as in `select!`.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.reap(true)? {
                return Ok(status);
            }
            let pidfd = match &mut self.pidfd {
                Some(pidfd) => pidfd,
                none => {
                    let pid = self.pid.as_raw();
                    let fd = syscall_fd("pidfd_open of a helper", || {
                        // SAFETY: pidfd_open of our own unreaped child; syscall_fd owns it.
                        unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }
                    })?;
                    // SAFETY: the AsyncFd owns the pidfd, which nothing replaces or closes
                    // while it is registered.
                    none.insert(unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            fd,
                            tokio::io::Interest::READABLE,
                        )?
                    })
                }
            };
            // Readable stays set once it has ended: the reap above then finds it.
            pidfd.readable().await?.clear_ready();
        }
    }

    /// One `waitpid`: its status if it has ended (kept: asked again, it says the same).
    /// The raw status is kept whole (any signal, the core flag): decoding it first could fail
    /// after the kernel had reaped the child, and lose it.
    fn reap(&mut self, nohang: bool) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        if self.gone {
            return Err(std::io::Error::from_raw_os_error(libc::ECHILD));
        }
        let mut raw = 0;
        let flags = if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: waitpid of our own child, its status into a local.
        let r = unsafe { libc::waitpid(self.pid.as_raw(), &mut raw, flags) };
        if r == self.pid.as_raw() {
            let status = std::process::ExitStatus::from_raw(raw);
            self.status = Some(status);
            return Ok(Some(status));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => Ok(None),
            Some(libc::ECHILD) => {
                // Not ours to wait for any more: never signalled again either.
                self.gone = true;
                Err(e)
            }
            _ => Err(e),
        }
    }
}

impl Drop for HelperChild {
    fn drop(&mut self) {
        if let Ok(None) = self.reap(true) {
            if self.kill_on_drop {
                let _ = self.kill();
            }
            // Still running (the lifeline ends it with wpod): reaped when it ends, by a thread
            // of its own (with or without an async runtime, even one shutting down).
            let pid = self.pid.as_raw();
            let _ = std::thread::Builder::new()
                .name("wpod-reaper".into())
                .spawn(move || {
                    let mut raw = 0;
                    // SAFETY: waitpid of a child no one else waits for, into a local.
                    while unsafe { libc::waitpid(pid, &mut raw, 0) } < 0
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                    {
                    }
                });
        }
    }
}

/// The executable helpers run from, sealed, and the name they run under.
struct SealedHelper {
    fd: OwnedFd,
    name: &'static str,
}

/// The sealed helper binary, chosen on first use: `wpod-helper` beside `wpod` if it is this
/// build's, else this process's own executable.
fn sealed_helper(build_id: &str) -> std::io::Result<&'static SealedHelper> {
    static SEALED: OnceLock<SealedHelper> = OnceLock::new();
    // Sealed once per process, though [`seal_helper_early`]'s thread and a first spawn may
    // both ask: the second waits for the first.
    static SEALING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(helper) = SEALED.get() {
        return Ok(helper);
    }
    let _sealing = SEALING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(helper) = SEALED.get() {
        return Ok(helper);
    }
    let helper = match helper_binary(build_id) {
        Ok(fd) => SealedHelper {
            fd,
            name: HELPER_BINARY,
        },
        Err(why) => {
            tracing::warn!(
                "running pod helpers from wpod itself ({why}): each holder and shim then costs \
                 about 1 MiB more; install {HELPER_BINARY} beside wpod (cargo install --path \
                 host installs both)"
            );
            SealedHelper {
                fd: sealed_self()?,
                name: "wpod",
            }
        }
    };
    let helper = SealedHelper {
        fd: above_inherited(helper.fd)?,
        ..helper
    };
    Ok(SEALED.get_or_init(|| helper))
}

/// Seals the helper executable on a thread of its own, ahead of the first [`spawn_helper`]: its
/// read-only view (an overlay mount) and the check of its build ID take about half a
/// millisecond, which a pod's start would otherwise wait for before its first helper. A
/// failure here is only logged: the spawn tries again, and reports it.
pub fn seal_helper_early(build_id: &'static str) {
    let spawned = std::thread::Builder::new()
        .name("wpod-seal".into())
        .spawn(move || {
            if let Err(e) = sealed_helper(build_id) {
                tracing::debug!(error = %e, "cannot seal the helper ahead of its first use");
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the thread that seals the helper");
    }
}

/// Descriptors from this number up are never a target of [`spawn_helper`]'s placements (whose
/// targets are 3 and 4).
const FIRST_UNINHERITED_FD: RawFd = 64;

/// The descriptors [`grow_descriptor_table`] makes room for.
pub const GROWN_DESCRIPTOR_TABLE: RawFd = 512;

/// Grows this process's descriptor table to [`GROWN_DESCRIPTOR_TABLE`] entries; to be called
/// while the process has one thread. The kernel grows the table as higher descriptors are
/// taken, and while threads share it, each growth waits for an RCU grace period first
/// (`expand_files` calls `synchronize_rcu`). The first descriptor at or above 64 was the sealed
/// helper's ([`FIRST_UNINHERITED_FD`]), taken on a thread at each pod's start, and the holder's
/// spawn waited for that grace period: 0.1 to 20 ms (`perf`, kernel stacks of the sealing
/// thread). One high descriptor taken and closed while single-threaded grows the table at no
/// such cost, and a table never shrinks. 512 entries: a pod of a hundred sidecars does not
/// outgrow it; 4 KiB of kernel memory. Failures are ignored (an open-files limit below 512):
/// growing later only costs that wait.
pub fn grow_descriptor_table() {
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    // SAFETY: fcntl on a descriptor we own; the duplicate, if any, is owned (and closed) below.
    let high = unsafe {
        libc::fcntl(
            null.as_raw_fd(),
            libc::F_DUPFD_CLOEXEC,
            GROWN_DESCRIPTOR_TABLE - 1,
        )
    };
    if high >= 0 {
        // SAFETY: `high` is the new descriptor fcntl just returned, owned by nothing else.
        drop(unsafe { OwnedFd::from_raw_fd(high) });
    }
}

/// `fd`, moved to [`FIRST_UNINHERITED_FD`] or above. A helper is executed through
/// `/proc/self/fd/N` after the child placed its inherited descriptors: were N one of their
/// numbers, the child would execute the pipe it just put there. (It did: "start the namespace
/// holder: Permission denied" once in a full test run, when the view had been opened as
/// descriptor 3, the lifeline's.)
fn above_inherited(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // The original closes when `fd` drops.
    syscall_fd(
        "move the helper's descriptor above the inherited ones",
        || {
            // SAFETY: fcntl on a descriptor we own; the duplicate is owned by syscall_fd.
            libc::c_long::from(unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_UNINHERITED_FD)
            })
        },
    )
}

/// `wpod-helper` from this binary's directory, sealed (a read-only view, else a sealed copy),
/// if its [`BUILD_ID_SECTION`] holds this build's ID. The ID is read from the sealed file
/// itself, so what was checked is what runs.
fn helper_binary(build_id: &str) -> Result<OwnedFd, String> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let path = dir.join(HELPER_BINARY);
    if !path.exists() {
        return Err(format!("no {}", path.display()));
    }
    let fd = match read_only_overlay_of(dir, OsStr::new(HELPER_BINARY)) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "no read-only overlay of {HELPER_BINARY}; a sealed copy");
            seal_copy_of(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let theirs = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.to_string())
        .and_then(|file| build_id_of(&file))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if theirs != build_id {
        return Err(format!(
            "{} is from another build ({:?}, this wpod is {build_id})",
            path.display(),
            theirs.chars().take(80).collect::<String>(),
        ));
    }
    Ok(fd)
}

/// The build ID an executable carries in its [`BUILD_ID_SECTION`] (a few small reads: the ELF
/// header, the section headers and their names).
///
/// Through the ELF header's section table alone: `object::File::parse` also reads the symbol
/// table, 850 KB of `wpod-helper`'s, copied into memory at every pod's start.
fn build_id_of(file: &File) -> Result<String, String> {
    use object::elf::{FileHeader32, FileHeader64};
    let cache = object::ReadCache::new(file);
    match object::FileKind::parse(&cache) {
        Ok(object::FileKind::Elf64) => build_id_in::<FileHeader64<object::Endianness>, _>(&cache),
        Ok(object::FileKind::Elf32) => build_id_in::<FileHeader32<object::Endianness>, _>(&cache),
        Ok(kind) => Err(format!("not an ELF executable ({kind:?})")),
        Err(e) => Err(format!("not an ELF executable ({e})")),
    }
}

fn build_id_in<'data, Elf, R>(data: R) -> Result<String, String>
where
    Elf: object::read::elf::FileHeader<Endian = object::Endianness>,
    R: object::ReadRef<'data>,
{
    use object::read::elf::SectionHeader;
    let not_elf = |e: object::read::Error| format!("not an ELF executable ({e})");
    let header = Elf::parse(data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let sections = header.sections(endian, data).map_err(not_elf)?;
    let (_, section) = sections
        .section_by_name(endian, BUILD_ID_SECTION.as_bytes())
        .ok_or_else(|| format!("no {BUILD_ID_SECTION} section (not a wpod-helper?)"))?;
    let bytes = section.data(endian, data).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Makes the calling helper non-dumpable: no core file of it, and `/proc/PID/{mem,environ,fd}`
/// and ptrace need CAP_SYS_PTRACE. (What it holds must still never be visible from a pod's PID
/// namespace: a container may be granted that capability.)
pub fn set_undumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Names the calling thread (its `comm`, 15 bytes at most; longer names are cut by the
/// kernel): the process's name when called, as helpers do, from its main thread before any
/// other. Threads and children made after keep the name until they `exec`.
pub fn set_process_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string from the pointer, which outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// A sealed view of this process's executable.
fn sealed_self() -> std::io::Result<OwnedFd> {
    match read_only_overlay_of_self() {
        Ok(fd) => Ok(fd),
        Err(e) => {
            tracing::debug!(error = %e, "no read-only overlay of wpod's binary; running helpers from a sealed copy");
            seal_copy_of(Path::new("/proc/self/exe"))
        }
    }
}

/// This binary through [`read_only_overlay_of`] its directory, checked to be the very file
/// this process runs.
fn read_only_overlay_of_self() -> std::io::Result<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} has no directory",
            exe.display()
        )));
    };
    let view = read_only_overlay_of(dir, name)?;
    // The name may lead to another binary than the one running (wpod upgraded since it
    // started): helpers must be this same wpod. Overlayfs shows the file's own size and times.
    let seen = nix::sys::stat::fstat(&view).map_err(std::io::Error::from)?;
    let running = nix::sys::stat::stat("/proc/self/exe").map_err(std::io::Error::from)?;
    let same = |s: &libc::stat| {
        (
            s.st_size,
            s.st_mtime,
            s.st_mtime_nsec,
            s.st_ctime,
            s.st_ctime_nsec,
        )
    };
    if same(&seen) != same(&running) {
        return Err(std::io::Error::other(format!(
            "{} is no longer the binary this process runs",
            exe.display()
        )));
    }
    Ok(view)
}

/// The file `name` of `dir` opened (`O_PATH`) through a read-only overlayfs of `dir` that is
/// mounted nowhere: writes to it fail with EROFS whoever tries, and nothing can remount it.
/// Overlayfs runs lower-only (read-only) with two lower layers: `dir` first, so its entries
/// win, then an empty one that can hide nothing (see [`overlay_with_empty`]).
fn read_only_overlay_of(dir: &Path, name: &OsStr) -> std::io::Result<OwnedFd> {
    let empty = crate::files::private_state_dir("empty").map_err(std::io::Error::other);
    overlay_with_empty(dir, name, empty)
}

/// The view with `empty` (a directory of wpod's state) as the second layer, else with an
/// empty tmpfs mounted nowhere. Overlayfs refuses layers that lie inside one another (ELOOP):
/// wpod's state inside the binary's directory (`/tmp/wpod` with `WPOD_ROOT=/tmp/x`) would
/// otherwise leave only the sealed copy, a copy of the whole binary per pod (50 ms more per
/// start here). Overlayfs takes a layer mounted nowhere from Linux 6.15 on; before, that fails
/// too and the sealed copy remains.
fn overlay_with_empty(
    dir: &Path,
    name: &OsStr,
    empty: std::io::Result<PathBuf>,
) -> std::io::Result<OwnedFd> {
    let first = match empty.and_then(|empty| view_over_empty_dir(dir, name, &empty)) {
        Ok(view) => return Ok(view),
        Err(e) => e,
    };
    let then = |e: std::io::Error| std::io::Error::other(format!("{first}; then {e}"));
    let tmpfs = empty_tmpfs().map_err(then)?;
    overlay_view(dir, name, &format!("/proc/self/fd/{}", tmpfs.as_raw_fd())).map_err(then)
}

/// The view with the directory `empty` as the second layer, if it is empty.
fn view_over_empty_dir(dir: &Path, name: &OsStr, empty: &Path) -> std::io::Result<OwnedFd> {
    if std::fs::read_dir(empty)?.next().is_some() {
        return Err(std::io::Error::other(format!(
            "{} is not empty",
            empty.display()
        )));
    }
    overlay_view(dir, name, &overlay_escape(empty))
}

/// An empty tmpfs, read-only, mounted nowhere (its descriptor is its only way in).
fn empty_tmpfs() -> std::io::Result<OwnedFd> {
    let context = syscall_fd("fsopen tmpfs", || {
        // SAFETY: fsopen with a valid C string and flags; the result is owned below.
        unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) }
    })?;
    // Read-only as a filesystem too, not only as this mount.
    syscall_ok("fsconfig tmpfs ro", || {
        // SAFETY: fsconfig on the context we own, with a valid C string and no value.
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_SET_FLAG,
                c"ro".as_ptr(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        }
    })?;
    fs_create(&context, "fsconfig create tmpfs")?;
    syscall_fd("fsmount tmpfs", || {
        // SAFETY: fsmount on the context we own; the result is owned below.
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NOEXEC,
            )
        }
    })
}

/// `FSCONFIG_CMD_CREATE` on a filesystem context we own.
fn fs_create(context: &OwnedFd, step: &str) -> std::io::Result<()> {
    syscall_ok(step, || {
        // SAFETY: fsconfig on the context we own, with no key or value.
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        }
    })
}

/// `name` of `dir` through a read-only overlay of `dir` and `second` (a lowerdir entry,
/// escaped).
fn overlay_view(dir: &Path, name: &OsStr, second: &str) -> std::io::Result<OwnedFd> {
    let lower = format!("{}:{second}", overlay_escape(dir));
    let context = syscall_fd("fsopen overlay", || {
        // SAFETY: fsopen with a valid C string and flags; the result is owned below.
        unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) }
    })?;
    fsconfig_string(&context, "lowerdir", &lower)?;
    // Only to keep the kernel from logging about inode numbers across filesystems.
    let _ = fsconfig_string(&context, "xino", "off");
    fs_create(&context, "fsconfig create overlay")?;
    let mount = syscall_fd("fsmount overlay", || {
        // SAFETY: fsmount on the context we own; the result is owned below.
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID,
            )
        }
    })?;
    let name = std::ffi::CString::new(name.as_encoded_bytes())
        .map_err(|_| std::io::Error::other("the binary's file name holds a NUL"))?;
    let view = syscall_fd("open the binary through the overlay", || {
        // SAFETY: openat relative to the mount we own, with a valid C string.
        unsafe {
            libc::openat(
                mount.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
            .into()
        }
    })?;
    Ok(view)
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// A path as overlayfs's `lowerdir` list wants it: `\` and `:` escaped.
fn overlay_escape(path: &Path) -> String {
    path.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

fn fsconfig_string(context: &OwnedFd, key: &str, value: &str) -> std::io::Result<()> {
    let (key_c, value_c) = match (std::ffi::CString::new(key), std::ffi::CString::new(value)) {
        (Ok(k), Ok(v)) => (k, v),
        _ => return Err(std::io::Error::other(format!("{key}: a NUL in the value"))),
    };
    // SAFETY: fsconfig on the context we own, with valid C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key_c.as_ptr(),
            value_c.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::other(format!(
            "fsconfig overlay {key}={value}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs a syscall that returns a status, naming the step in its error.
fn syscall_ok(step: &str, call: impl FnOnce() -> libc::c_long) -> std::io::Result<()> {
    if call() < 0 {
        return Err(std::io::Error::other(format!(
            "{step}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs a syscall that returns a new descriptor, naming the step in its error.
fn syscall_fd(step: &str, call: impl FnOnce() -> libc::c_long) -> std::io::Result<OwnedFd> {
    let r = call();
    if r < 0 {
        return Err(std::io::Error::other(format!(
            "{step}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let fd = RawFd::try_from(r).map_err(|_| std::io::Error::other(format!("{step}: bad fd")))?;
    // SAFETY: the syscall returned this new descriptor, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies `path` into a memfd and seals it against every change.
fn seal_copy_of(path: &Path) -> std::io::Result<OwnedFd> {
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
            "seal the copy of the binary: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(OwnedFd::from(copy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The table the kernel gives this process (`FDSize` in /proc/self/status).
    fn descriptor_table_size() -> usize {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("FDSize")
    }

    #[test]
    fn the_descriptor_table_is_grown_and_no_descriptor_is_left_open() {
        grow_descriptor_table();
        assert!(
            descriptor_table_size() >= GROWN_DESCRIPTOR_TABLE as usize,
            "FDSize {}",
            descriptor_table_size()
        );
        // The descriptor that grew it is closed again.
        let high = format!("/proc/self/fd/{}", GROWN_DESCRIPTOR_TABLE - 1);
        assert!(std::fs::symlink_metadata(&high).is_err(), "{high} is open");
    }

    #[test]
    fn a_build_id_is_read_from_an_elf_executables_sections_only() {
        // This test binary is an ELF executable without the section (wpod-helper's own is
        // read end to end by the helpers tests).
        let exe = File::open("/proc/self/exe").unwrap();
        let err = build_id_of(&exe).unwrap_err();
        assert!(err.contains("no .wpod_build section"), "{err}");
        let mut text = tempfile_in_tmp();
        text.write_all(b"#!/bin/sh\necho not elf\n").unwrap();
        let err = build_id_of(&text).unwrap_err();
        assert!(err.starts_with("not an ELF executable"), "{err}");
    }

    /// The sealed `/bin/sh`, as a helper is run.
    fn sealed_sh() -> SealedHelper {
        SealedHelper {
            fd: above_inherited(OwnedFd::from(File::open("/bin/sh").unwrap())).unwrap(),
            name: "sh",
        }
    }

    #[test]
    fn a_spawned_helper_gets_the_descriptors_asked_at_their_numbers_and_no_other() {
        use std::io::Read;
        // fd 3 reads what the test wrote; fd 4 gets the helper's answer; stdout lists every
        // descriptor the helper (the shell) holds.
        let (three_read, three_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (four_read, four_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        File::from(three_write).write_all(b"three\n").unwrap();
        let script = "read line <&3; echo \"got $line\" >&4; ls /proc/$$/fd";
        let mut child = spawn_sealed(
            &sealed_sh(),
            &["-c".into(), script.into()],
            [HelperIo::Null, HelperIo::Piped, HelperIo::Inherit],
            // In the order that would clobber were each placed directly: fd 4's source first.
            &[(four_write.as_raw_fd(), 4), (three_read.as_raw_fd(), 3)],
        )
        .unwrap();
        drop(four_write);
        let mut listed = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut listed)
            .unwrap();
        let mut answer = String::new();
        File::from(four_read).read_to_string(&mut answer).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(answer, "got three\n");
        // Besides these, only what this process itself lets every child inherit (a test
        // runner's descriptors without close-on-exec) and dash's own 10: none of the sources,
        // the temporaries or the executable's descriptor.
        let inherited = |fd: RawFd| {
            // SAFETY: F_GETFD on a number, open or not.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        };
        let held: Vec<RawFd> = listed
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        for fd in [0, 1, 2, 3, 4] {
            assert!(held.contains(&fd), "fd {fd} missing: {listed}");
        }
        let strays: Vec<_> = held
            .iter()
            .filter(|fd| **fd > 4 && **fd != 10 && !inherited(**fd))
            .collect();
        assert!(strays.is_empty(), "the helper held {strays:?}: {listed}");
    }

    /// `sh -c script`, spawned as a helper is, with no standard descriptors.
    fn sh(script: &str) -> HelperChild {
        let io = [HelperIo::Null, HelperIo::Null, HelperIo::Null];
        spawn_sealed(&sealed_sh(), &["-c".into(), script.into()], io, &[]).unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Waits until `pid` is no child of this process any more: reaped (by the dropped
    /// helper's reaper; this check reaps nothing itself: `WNOWAIT`). False after 10 s.
    async fn reaped_soon(pid: nix::unistd::Pid) -> bool {
        for _ in 0..1000 {
            // SAFETY: waitid into a zeroed siginfo of ours.
            let r = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid.as_raw() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn a_spawned_helper_is_reaped_once_and_says_how_it_ended() {
        use std::os::unix::process::ExitStatusExt;
        let runtime = runtime();
        let mut exits = sh("exit 7");
        let status = runtime.block_on(exits.exited()).unwrap();
        assert_eq!(status.code(), Some(7));
        // Asked again, the same (the PID is not waited for twice).
        assert_eq!(exits.wait().unwrap().code(), Some(7));
        let mut sleeps = sh("sleep 60");
        sleeps.kill().unwrap();
        let status = runtime.block_on(sleeps.exited()).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: a signal now goes nowhere (the PID may be another process's).
        sleeps.kill().unwrap();
    }

    #[test]
    fn a_dropped_helper_is_reaped_when_it_ends() {
        runtime().block_on(async {
            // Ends once the test has dropped it: the shell waits for a line on a pipe.
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let child = spawn_sealed(
                &sealed_sh(),
                &["-c".into(), "read line <&3".into()],
                [HelperIo::Null, HelperIo::Null, HelperIo::Null],
                &[(read.as_raw_fd(), 3)],
            )
            .unwrap();
            let pid = child.pid;
            drop(child);
            // Still running when dropped: neither reaped nor killed.
            assert_eq!(
                nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            );
            File::from(write).write_all(b"end\n").unwrap();
            assert!(reaped_soon(pid).await, "a zombie was left");
        });
    }

    #[test]
    fn a_helper_killed_on_drop_does_not_outlive_its_caller() {
        runtime().block_on(async {
            let mut child = sh("sleep 60");
            child.kill_on_drop();
            let pid = child.pid;
            // A caller that gave up waiting (a probe's timeout).
            let waited = tokio::time::timeout(std::time::Duration::from_millis(50), child.exited());
            assert!(waited.await.is_err());
            drop(child);
            assert!(reaped_soon(pid).await, "not killed, or not reaped");
        });
    }

    fn tempfile_in_tmp() -> File {
        let path = std::env::temp_dir().join(format!("wpod-buildid-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn helpers_run_from_a_descriptor_no_inherited_one_is_placed_on() {
        // SAFETY: geteuid cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (fsopen of overlayfs): run the tests as root, as CI does"
        );
        let fd = sealed_helper("not this build")
            .expect("a sealed helper")
            .fd
            .as_raw_fd();
        assert!(
            fd >= FIRST_UNINHERITED_FD,
            "/proc/self/fd/{fd}: a placed descriptor may land there"
        );
    }

    #[test]
    fn the_overlay_view_is_this_binary_and_cannot_be_written() {
        // SAFETY: geteuid cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (fsopen of overlayfs): run the tests as root, as CI does"
        );
        let fd = read_only_overlay_of_self().expect("a read-only overlay of wpod's binary");
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let original = std::fs::read("/proc/self/exe").unwrap();
        assert!(
            std::fs::read(&path).unwrap() == original,
            "the view is not this binary"
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }

    /// wpod's state inside the binary's directory: the state's empty directory cannot be the
    /// overlay's second layer (ELOOP), an empty tmpfs is, and the view is as read-only.
    #[test]
    fn a_view_whose_empty_layer_nests_in_the_binarys_directory_is_still_made() {
        // SAFETY: geteuid cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (fsopen of overlayfs): run the tests as root, as CI does"
        );
        let dir = std::env::temp_dir().join(format!("wpod-helper-nest-{}", std::process::id()));
        let empty = dir.join("state/empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(dir.join("wpod"), b"the binary").unwrap();
        let nested = view_over_empty_dir(&dir, OsStr::new("wpod"), &empty).map(|_| ());
        let nested = nested
            .expect_err("overlayfs took nested layers")
            .to_string();
        assert!(nested.contains("os error 40"), "not ELOOP: {nested}");
        let view = overlay_with_empty(&dir, OsStr::new("wpod"), Ok(empty));
        // A layer mounted nowhere is taken from Linux 6.15 on; before, wpod copies the binary.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut version = release
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
        if (major, minor) < (6, 15) {
            assert!(view.is_err(), "Linux {release} took a detached layer");
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        let fd = view.expect("a view over an empty tmpfs");
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(std::fs::read(&path).unwrap(), b"the binary");
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        drop(fd);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_helper_reads_back_the_call_it_was_given() {
        let calls = [
            HelperCall::Holder {
                hostname: "web".into(),
                pod_proc: None,
                host_network: false,
                userns: false,
            },
            HelperCall::Holder {
                hostname: "web-0".into(),
                pod_proc: Some("/run/wpod/pods/web/proc dir".into()),
                host_network: true,
                userns: true,
            },
            HelperCall::Container {
                launch_spec: "/run/wpod/pods/web/launch/main.json".into(),
            },
            HelperCall::Exec {
                launch_spec: "/run/wpod/pods/web/launch/main.json".into(),
                pid: 4242,
                // A command whose own arguments look like the helper's.
                argv: vec!["sh".into(), "-c".into(), "--".into(), "--userns".into()],
            },
            HelperCall::Exec {
                launch_spec: "l.json".into(),
                pid: 1,
                argv: vec![],
            },
        ];
        for call in calls {
            let args = call.args();
            assert!(HelperCall::is_helper_subcommand(&args[0]), "{args:?}");
            assert_eq!(HelperCall::parse(&args), Ok(call));
        }
    }

    #[test]
    fn a_helper_refuses_arguments_wpod_never_writes() {
        let parse = |args: &[&str]| {
            HelperCall::parse(&args.iter().map(OsString::from).collect::<Vec<_>>()).unwrap_err()
        };
        assert_eq!(parse(&[]), "no helper subcommand");
        assert!(parse(&["run", "pod.yaml"]).contains("unknown helper subcommand"));
        assert_eq!(parse(&["__holder"]), "__holder needs --hostname");
        assert!(parse(&["__holder", "--hostname"]).contains("needs a value"));
        assert!(parse(&["__holder", "--hostname", "a", "--pid"]).contains("unknown argument"));
        assert!(parse(&["__container"]).starts_with("usage"));
        assert!(parse(&["__container", "a", "b"]).starts_with("usage"));
        assert!(parse(&["__exec", "l.json", "12", "sh"]).starts_with("usage"));
        assert!(parse(&["__exec", "l.json", "x", "--", "sh"]).contains("bad pid"));
        assert!(!HelperCall::is_helper_subcommand(OsStr::new("run")));
    }

    #[test]
    fn the_copy_cannot_be_changed() {
        let fd = seal_copy_of(Path::new("/proc/self/exe")).unwrap();
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
