//! Helper processes: `wpod` re-executes itself as the namespace holder and the container shims,
//! so that namespace setup happens in fresh single-threaded processes, never in the runtime.
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
    // No environment: a helper's is readable through /proc/PID/environ by a container granted
    // SYS_PTRACE (the pod's PID 1 is a helper, and the others are briefly in the pod's PID
    // namespace), and the `wpod run` caller's may hold registry tokens or signing passwords.
    // Helpers take everything they need as arguments and launch specs.
    cmd.arg0("wpod")
        .arg(subcommand)
        .env_clear()
        .process_group(0);
    Ok(cmd)
}

/// Makes the calling helper non-dumpable: no core file of it, and `/proc/PID/{mem,environ,fd}`
/// and ptrace need CAP_SYS_PTRACE. (What it holds must still never be visible from a pod's PID
/// namespace: a container may be granted that capability.)
pub fn set_undumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// The sealed view of this process's executable, made on first use.
fn sealed_self() -> std::io::Result<&'static OwnedFd> {
    static SEALED: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = SEALED.get() {
        return Ok(fd);
    }
    let fd = match read_only_overlay_of_self() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "no read-only overlay of wpod's binary; running helpers from a sealed copy");
            seal_copy_of("/proc/self/exe")?
        }
    };
    Ok(SEALED.get_or_init(|| fd))
}

/// This binary opened (`O_PATH`) through a read-only overlayfs of its directory that is mounted
/// nowhere: writes to it fail with EROFS whoever tries, and nothing can remount it. Overlayfs
/// runs lower-only (read-only) with two lower layers; the second is an empty directory of
/// wpod's state, below the binary's directory so it can hide nothing.
fn read_only_overlay_of_self() -> std::io::Result<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} has no directory",
            exe.display()
        )));
    };
    let empty = crate::files::private_state_dir("empty").map_err(std::io::Error::other)?;
    if std::fs::read_dir(&empty)?.next().is_some() {
        return Err(std::io::Error::other(format!(
            "{} is not empty",
            empty.display()
        )));
    }
    let lower = format!("{}:{}", overlay_escape(dir), overlay_escape(&empty));
    let context = syscall_fd("fsopen overlay", || {
        // SAFETY: fsopen with a valid C string and flags; the result is owned below.
        unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) }
    })?;
    fsconfig_string(&context, "lowerdir", &lower)?;
    // Only to keep the kernel from logging about inode numbers across filesystems.
    let _ = fsconfig_string(&context, "xino", "off");
    syscall_ok("fsconfig create overlay", || {
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
    })?;
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
        .map_err(|_| std::io::Error::other("wpod's file name holds a NUL"))?;
    let view = syscall_fd("open wpod through the overlay", || {
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

const FSOPEN_CLOEXEC: libc::c_uint = 1;
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
