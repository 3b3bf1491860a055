//! The container's root filesystem, built by the shim inside the container's own mount
//! namespace: an overlay whose lower layer is the host's `/` (no image) or the image directory,
//! and whose upper layer lives on a private tmpfs, so a container never writes to the host or to
//! its image except through its volumes. Then `/dev` basics, `/sys`, `/tmp`, the volumes, and
//! (in the container process, inside its PID namespace) a fresh `/proc` and `pivot_root`.
//!
//! Every path inside the new root is resolved with `openat2(RESOLVE_IN_ROOT)`: a symlink in an
//! image or a volume cannot redirect a mount to a place outside the container's root.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mkdirat, Mode};

use super::launch::{BindMount, RootfsSpec};
use crate::helper::StepError;

/// The assembled root, open so that paths inside it can be resolved safely.
pub(super) struct Rootfs {
    pub path: PathBuf,
    fd: OwnedFd,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

fn none() -> Option<&'static str> {
    None
}

fn do_mount(
    step: &str,
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), StepError> {
    mount(source, target, fstype, flags, data).map_err(|e| StepError::sys(step, target, e))
}

/// Builds the root filesystem under `spec.scratch`; the shim must already be in a new mount
/// namespace.
/// A volume cloned from the host's mount namespace, ready to be attached in the container's.
pub(super) struct VolumeTree {
    fd: OwnedFd,
    is_dir: bool,
}

/// Clones each volume's mount tree, from the directory (or file) wpod opened when the pod
/// started, through `/proc/<wpod>/fd/N`. Called in the host's mount namespace: a bind from a
/// mount of another namespace is refused, a detached clone can be attached anywhere.
pub(super) fn clone_volumes(mounts: &[BindMount]) -> Result<Vec<VolumeTree>, StepError> {
    mounts
        .iter()
        .map(|m| {
            let step = format!("open volume for {}", m.target);
            let is_dir = m.source.is_dir();
            let path = std::ffi::CString::new(m.source.as_os_str().as_encoded_bytes())
                .map_err(|e| StepError::msg(&step, e))?;
            // SAFETY: open_tree with a valid C string; the descriptor is owned below.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    (OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_RECURSIVE as u32)
                        as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(StepError::sys(
                    format!("{step} (open_tree)"),
                    &m.source,
                    Errno::last(),
                ));
            }
            // SAFETY: a descriptor open_tree just returned.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            Ok(VolumeTree { fd, is_dir })
        })
        .collect()
}

/// open_tree(2) and move_mount(2) flags (linux/mount.h).
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

pub(super) fn prepare(
    spec: &RootfsSpec,
    mounts: &[BindMount],
    trees: Vec<VolumeTree>,
) -> Result<Rootfs, StepError> {
    // Nothing mounted from here on may propagate back to the host.
    do_mount(
        "make / private",
        none(),
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;

    let scratch = &spec.scratch;
    do_mount(
        "mount scratch tmpfs",
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=700"),
    )?;
    let (upper, work, root) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("root"),
    );
    for dir in [&upper, &work, &root] {
        std::fs::create_dir(dir)
            .map_err(|e| StepError::io("create overlay directories", dir, e))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir(&spec.lowers)?,
        escape_overlay(&upper),
        escape_overlay(&work)
    );
    // nodev: a container may hold CAP_MKNOD (as with every container runtime), but a device
    // node it makes must not open. wpod has no device cgroup; no filesystem a container can write
    // to honours device nodes instead (the root, /dev, /tmp, /dev/shm and every volume).
    do_mount(
        "mount overlay root",
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&options),
    )?;

    let fd = nix::fcntl::open(
        &root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StepError::sys("open root", &root, e))?;
    let rootfs = Rootfs { path: root, fd };
    rootfs.mount_dev()?;
    rootfs.mount_sys()?;
    if !spec.read_only {
        let tmp = rootfs.mountpoint("/tmp", Kind::Dir)?;
        do_mount(
            "mount /tmp",
            Some("tmpfs"),
            &fd_path(&tmp),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )?;
    }
    for (m, tree) in mounts.iter().zip(trees) {
        rootfs.attach_volume(m, tree)?;
    }
    if spec.read_only {
        // Only the root itself: /dev and the volumes keep their own modes.
        do_mount(
            "make the root filesystem read-only",
            none(),
            &rootfs.path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(rootfs)
}

// mount_setattr(2) attributes (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` on the mount `fd` is the root of and on every mount below it, atomically
/// (Linux 5.12). Without the call the container does not start: wpod never falls back to a
/// read-only flag that covers only the top mount.
fn set_attrs_recursively(fd: &OwnedFd, attrs: u64) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on a descriptor we own, with an empty path (AT_EMPTY_PATH) and a
    // struct of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// overlayfs splits options at `,` and layers at `:`; escape them in paths.
/// overlayfs' `lowerdir`, topmost first. Mount options must fit in one page, so layers that
/// share a directory (the image store's) are named relative to it after a chdir there, as
/// containerd does: an image of ~60 layers then still fits.
fn lowerdir(lowers: &[PathBuf]) -> Result<String, StepError> {
    let parent = lowers.first().and_then(|l| l.parent());
    let shared = lowers.len() > 1 && lowers.iter().all(|l| l.parent() == parent);
    match parent {
        Some(dir) if shared => {
            std::env::set_current_dir(dir)
                .map_err(|e| StepError::io("chdir to the image layers", dir, e))?;
            let names: Vec<String> = lowers
                .iter()
                .map(|l| escape_overlay(Path::new(l.file_name().unwrap_or_default())))
                .collect();
            Ok(names.join(":"))
        }
        _ => Ok(lowers
            .iter()
            .map(|l| escape_overlay(l))
            .collect::<Vec<_>>()
            .join(":")),
    }
}

fn escape_overlay(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// A path through which the kernel reaches exactly the file `fd` refers to.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Rootfs {
    /// Opens `path` (absolute, inside the container) without leaving the root, creating it and
    /// its missing parents as directories (or the last one as a file).
    fn mountpoint(&self, path: &str, kind: Kind) -> Result<OwnedFd, StepError> {
        let step = format!("create mount point {path}");
        let rel: Vec<_> = Path::new(path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                _ => None,
            })
            .collect();
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut current = PathBuf::from(".");
        let mut fd = None;
        for (i, name) in rel.iter().enumerate() {
            let parent = current.clone();
            current.push(name);
            match openat2(&self.fd, &current, how) {
                Ok(opened) => fd = Some(opened),
                Err(Errno::ENOENT) => {
                    let parent_fd = openat2(&self.fd, &parent, how)
                        .map_err(|e| StepError::sys(&step, &parent, e))?;
                    let last = i + 1 == rel.len();
                    if last && kind == Kind::File {
                        let flags =
                            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
                        openat(
                            &parent_fd,
                            name.as_os_str(),
                            flags,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map_err(|e| StepError::sys(&step, &current, e))?;
                    } else {
                        match mkdirat(
                            &parent_fd,
                            name.as_os_str(),
                            Mode::from_bits_truncate(0o755),
                        ) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(StepError::sys(&step, &current, e)),
                        }
                    }
                    fd = Some(
                        openat2(&self.fd, &current, how)
                            .map_err(|e| StepError::sys(&step, &current, e))?,
                    );
                }
                Err(e) => return Err(StepError::sys(&step, &current, e)),
            }
        }
        match fd {
            Some(fd) => Ok(fd),
            None => Err(StepError::msg(
                step,
                "the root itself cannot be a mount point",
            )),
        }
    }

    fn mount_dev(&self) -> Result<(), StepError> {
        let dev = self.mountpoint("/dev", Kind::Dir)?;
        do_mount(
            "mount /dev",
            Some("tmpfs"),
            &fd_path(&dev),
            Some("tmpfs"),
            // The device nodes below are binds of the host's, with the host's mount flags.
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?;
        drop(dev);
        for name in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = self.mountpoint(&format!("/dev/{name}"), Kind::File)?;
            let source = format!("/dev/{name}");
            do_mount(
                &format!("bind {source}"),
                Some(&source),
                &fd_path(&target),
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
        let dev_dir = self.path.join("dev");
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            // /dev is our fresh tmpfs, so plain paths under it cannot be redirected.
            std::os::unix::fs::symlink(to, dev_dir.join(link))
                .map_err(|e| StepError::io("create /dev links", &dev_dir.join(link), e))?;
        }
        let pts = self.mountpoint("/dev/pts", Kind::Dir)?;
        do_mount(
            "mount /dev/pts",
            Some("devpts"),
            &fd_path(&pts),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        let shm = self.mountpoint("/dev/shm", Kind::Dir)?;
        do_mount(
            "mount /dev/shm",
            Some("shm"),
            &fd_path(&shm),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )?;
        let mq = self.mountpoint("/dev/mqueue", Kind::Dir)?;
        // POSIX message queues of the pod's IPC namespace; not every kernel has them.
        let _ = mount(
            Some("mqueue"),
            &fd_path(&mq),
            Some("mqueue"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none(),
        );
        Ok(())
    }

    /// A sysfs of the pod's network namespace, read-only, with the firmware and power-capping
    /// interfaces masked.
    fn mount_sys(&self) -> Result<(), StepError> {
        self.mount_sysfs()?;
        for path in MASKED_SYS_PATHS {
            self.mask(path)?;
        }
        Ok(())
    }

    fn mount_sysfs(&self) -> Result<(), StepError> {
        let sys = self.mountpoint("/sys", Kind::Dir)?;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if mount(Some("sysfs"), &fd_path(&sys), Some("sysfs"), flags, none()).is_ok() {
            return Ok(());
        }
        // Some kernels refuse a new sysfs here; fall back to the host's, read-only.
        do_mount(
            "bind /sys",
            Some("/sys"),
            &fd_path(&sys),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let mounted = self.mountpoint("/sys", Kind::Dir)?;
        do_mount(
            "make /sys read-only",
            none(),
            &fd_path(&mounted),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
    }

    fn attach_volume(&self, m: &BindMount, tree: VolumeTree) -> Result<(), StepError> {
        let kind = if tree.is_dir { Kind::Dir } else { Kind::File };
        let target = self.mountpoint(&m.target, kind)?;
        let step = format!("mount volume at {} (move_mount)", m.target);
        // SAFETY: move_mount between two descriptors we own, with empty paths.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.fd.as_raw_fd(),
                c"".as_ptr(),
                target.as_raw_fd(),
                c"".as_ptr(),
                (MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(StepError::sys(&step, &m.source, Errno::last()));
        }
        // The flags go on the bind and on every mount below it (Kubernetes' recursiveReadOnly:
        // a read-only hostPath `/` must not leave the host's /proc, /sys or cgroupfs writable
        // underneath). nosuid and nodev always, unless the volume is a device the pod asked for.
        // They are set through a fresh open of the mount (the old descriptor still names the
        // directory underneath).
        drop(target);
        let mounted = self.mountpoint(&m.target, kind)?;
        let mut attrs = 0;
        if !m.device {
            attrs |= MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        }
        if m.read_only {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        if m.no_follow_symlinks {
            attrs |= MOUNT_ATTR_NOSYMFOLLOW;
        }
        if attrs != 0 {
            set_attrs_recursively(&mounted, attrs).map_err(|e| {
                StepError::sys(
                    format!("set mount flags of {} (mount_setattr)", m.target),
                    &m.source,
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// In the container process, alone in a PID namespace of its own: a fresh `/proc` showing
    /// only the container's processes, with runc's masks.
    pub(super) fn mount_own_proc(&self) -> Result<(), StepError> {
        let proc_fd = self.mountpoint("/proc", Kind::Dir)?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        do_mount(
            "mount /proc",
            Some("proc"),
            &fd_path(&proc_fd),
            Some("proc"),
            flags,
            None,
        )?;
        drop(proc_fd);
        self.mask_proc()
    }

    /// In the shim, outside the pod's shared PID namespace: the pod's procfs (mounted by the
    /// pod's PID 1 on `pod_proc`) as `/proc`, with runc's masks. A procfs shows the PID
    /// namespace of whoever mounted it, so nothing privileged needs to enter the pod's.
    pub(super) fn bind_pod_proc(&self, pod_proc: &Path) -> Result<(), StepError> {
        let proc_fd = self.mountpoint("/proc", Kind::Dir)?;
        // Not recursive: the masks of other containers are not under the pod's procfs (they
        // live in their own mount namespaces), and nothing else is.
        let target = fd_path(&proc_fd);
        mount(Some(pod_proc), &target, none(), MsFlags::MS_BIND, none())
            .map_err(|e| StepError::sys("bind the pod's /proc", pod_proc, e))?;
        drop(proc_fd);
        let mounted = self.mountpoint("/proc", Kind::Dir)?;
        set_attrs_recursively(
            &mounted,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
        .map_err(|e| StepError::sys("set mount flags of /proc (mount_setattr)", pod_proc, e))?;
        drop(mounted);
        self.mask_proc()
    }

    /// `pivot_root` into the new root, the old one detached: from here on the calling process
    /// sees only the container's files.
    pub(super) fn pivot(&self) -> Result<(), StepError> {
        std::env::set_current_dir(&self.path)
            .map_err(|e| StepError::io("chdir to the new root", &self.path, e))?;
        // pivot_root(".", ".") stacks the old root on top of the new one; unmounting it leaves
        // only the new root, with no directory needed for the old one.
        nix::unistd::pivot_root(".", ".")
            .map_err(|e| StepError::sys("pivot_root", &self.path, e))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| StepError::sys("detach the old root", Path::new("/"), e))?;
        std::env::set_current_dir("/").map_err(|e| StepError::io("chdir /", Path::new("/"), e))?;
        Ok(())
    }

    /// Hides the kernel interfaces container runtimes hide (runc's and containerd's defaults):
    /// masked paths get an empty read-only tmpfs (directories) or `/dev/null` (files), the
    /// read-only ones a read-only bind of themselves. A path this kernel lacks is skipped; any
    /// other failure stops the container.
    fn mask_proc(&self) -> Result<(), StepError> {
        for path in MASKED_PROC_PATHS {
            self.mask(path)?;
        }
        for path in READ_ONLY_PROC_PATHS {
            self.read_only(path)?;
        }
        Ok(())
    }

    fn mask(&self, path: &str) -> Result<(), StepError> {
        let target = self.path.join(path.trim_start_matches('/'));
        let result = match std::fs::symlink_metadata(&target) {
            Err(_) => return Ok(()),
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=0555"),
            ),
            Ok(_) => mount(Some("/dev/null"), &target, none(), MsFlags::MS_BIND, none()),
        };
        match result {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(StepError::sys(format!("mask {path}"), &target, e)),
        }
    }

    fn read_only(&self, path: &str) -> Result<(), StepError> {
        let target = self.path.join(path.trim_start_matches('/'));
        if std::fs::symlink_metadata(&target).is_err() {
            return Ok(());
        }
        let step = format!("make {path} read-only");
        match mount(
            Some(&target),
            &target,
            none(),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none(),
        ) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(StepError::sys(&step, &target, e)),
        }
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(none(), &target, none(), flags, none()).map_err(|e| StepError::sys(&step, &target, e))
    }
}

/// Paths of /proc and /sys a container never sees (runc's and containerd's masked paths).
const MASKED_PROC_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
];

/// The same for /sys (masked when /sys is mounted, in the shim).
const MASKED_SYS_PATHS: &[&str] = &["/sys/firmware", "/sys/devices/virtual/powercap"];

/// Paths of /proc a container sees read-only.
const READ_ONLY_PROC_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
