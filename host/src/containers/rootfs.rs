//! The container's root filesystem, built by the shim inside the container's own mount
//! namespace: an overlay whose lower layer is the host's `/` (no image) or the image directory,
//! and whose upper layer lives on a private tmpfs, so a container never writes to the host or to
//! its image except through its volumes. Then `/dev` basics, `/sys`, `/tmp`, the volumes, and
//! (in the container process, inside its PID namespace) a fresh `/proc` and `pivot_root`.
//!
//! Every path inside the new root is resolved with `openat2(RESOLVE_IN_ROOT)`: a symlink in an
//! image or a volume cannot redirect a mount to a place outside the container's root.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{mkdirat, Mode};

use super::launch::{BindMount, RootfsSpec, DEVICES, MASKED_PATHS, READ_ONLY_PATHS};
use crate::helper::StepError;
use crate::sandbox::userns::IdMap;
use crate::sys::{
    Syscall, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW,
    MOUNT_ATTR_RDONLY,
};

/// The assembled root, open so that paths inside it can be resolved safely.
pub(super) struct Rootfs {
    sys: Arc<dyn Syscall>,
    pub path: PathBuf,
    fd: OwnedFd,
    /// The pod's own user namespace's IDs: its root owns the filesystems made for it.
    ids: Option<IdMap>,
}

/// The pod's own user namespace, as the root is built for it.
pub(super) struct UserNs<'a> {
    pub fd: BorrowedFd<'a>,
    pub ids: IdMap,
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
    sys: &dyn Syscall,
    step: &str,
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), StepError> {
    sys.mount(source.map(Path::new), target, fstype, flags, data)
        .map_err(|e| StepError::sys(step, target, e))
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

/// open_tree(2) flags (linux/mount.h).
const OPEN_TREE_CLONE: u32 = 1;

/// Builds the root with `sys`'s mounts (the host's, or a test's recording fake). With
/// `userns` (the pod's own user namespace), the image's layers are ID-mapped through it, so the
/// image's root is the pod's root without a file of the image changing owner.
pub(super) fn prepare(
    sys: Arc<dyn Syscall>,
    spec: &RootfsSpec,
    mounts: &[BindMount],
    trees: Vec<VolumeTree>,
    userns: Option<UserNs<'_>>,
) -> Result<Rootfs, StepError> {
    // Nothing mounted from here on may propagate back to the host.
    do_mount(
        &*sys,
        "make / private",
        none(),
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;

    let scratch = &spec.scratch;
    do_mount(
        &*sys,
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
    let ids = userns.as_ref().map(|u| u.ids);
    let lowers = match &userns {
        Some(userns) => {
            // The root of the overlay is its upper directory: the pod's root's.
            sys.chown(&upper, userns.ids.host_uid, userns.ids.host_gid)
                .map_err(|e| {
                    StepError::io("give the writable layer to the pod's root", &upper, e)
                })?;
            idmapped_lowers(&*sys, &spec.lowers, &scratch.join("lower"), userns)?
        }
        None => spec.lowers.clone(),
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir(&*sys, &lowers)?,
        escape_overlay(&upper),
        escape_overlay(&work)
    );
    // nodev: a container may hold CAP_MKNOD (as with every container runtime), but a device
    // node it makes must not open. wpod has no device cgroup; no filesystem a container can write
    // to honours device nodes instead (the root, /dev, /tmp, /dev/shm and every volume).
    let mounted = sys.mount(
        Some(Path::new("overlay")),
        &root,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&options),
    );
    match mounted {
        Ok(()) => {}
        // The host's root, where the kernel will not overlay it: in a user namespace (a
        // rootless wpod) the host's mounts are locked to it, and an overlay would show what
        // they cover.
        Err(Errno::EINVAL) if lowers == [Path::new("/")] => host_view(&*sys, scratch, &root)?,
        Err(e) => return Err(StepError::sys("mount overlay root", &root, e)),
    }

    let fd = nix::fcntl::open(
        &root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StepError::sys("open root", &root, e))?;
    let rootfs = Rootfs {
        sys: sys.clone(),
        path: root,
        fd,
        ids,
    };
    rootfs.mount_dev()?;
    rootfs.mount_sys()?;
    if !spec.read_only {
        let tmp = rootfs.mountpoint("/tmp", Kind::Dir)?;
        do_mount(
            &*sys,
            "mount /tmp",
            Some("tmpfs"),
            &fd_path(&tmp),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&rootfs.tmpfs_options("mode=1777")),
        )?;
    }
    for (m, tree) in mounts.iter().zip(trees) {
        rootfs.attach_volume(m, tree)?;
    }
    if spec.read_only {
        // Only the root itself: /dev and the volumes keep their own modes.
        do_mount(
            &*sys,
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

/// Top-level directories of the host's root a container's view leaves empty: wpod mounts its
/// own there (`/dev`, `/sys`, `/tmp`; the container's `/proc`).
const OWN_MOUNTS: [&str; 4] = ["dev", "proc", "sys", "tmp"];

/// The host's root for a container, built where `/` cannot be one overlay: `root` (on the
/// scratch tmpfs, so its top level is the container's to write) holds the host's top-level
/// symlinks, and an overlay of each top-level directory, writes going to the scratch space as
/// with the whole root's overlay. A directory that is a mount of its own is left empty, as the
/// root's overlay shows it; one whose submounts the kernel will not let an overlay cover is
/// bound read-only instead.
fn host_view(sys: &dyn Syscall, scratch: &Path, root: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let host = Path::new("/");
    let root_dev = std::fs::metadata(host)
        .map_err(|e| StepError::io("stat", host, e))?
        .dev();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| StepError::io("open up the container's root", root, e))?;
    // pivot_root wants a mount point.
    do_mount(
        sys,
        "bind the container's root onto itself",
        root.to_str(),
        root,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    let entries = std::fs::read_dir(host).map_err(|e| StepError::io("list", host, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StepError::io("list", host, e))?;
        let name = entry.file_name();
        let (from, at) = (host.join(&name), root.join(&name));
        let meta = std::fs::symlink_metadata(&from).map_err(|e| StepError::io("stat", &from, e))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from).map_err(|e| StepError::io("read", &from, e))?;
            std::os::unix::fs::symlink(&target, &at)
                .map_err(|e| StepError::io("create symlink", &at, e))?;
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        std::fs::create_dir(&at).map_err(|e| StepError::io("create", &at, e))?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| StepError::io("chmod", &at, e))?;
        let own = OWN_MOUNTS.iter().any(|m| name == *m);
        if own || meta.dev() != root_dev {
            continue;
        }
        // Apart from the failed whole-root overlay's directories (it leaves `work/work`).
        let layers = scratch.join("host").join(&name);
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        for dir in [&upper, &work] {
            std::fs::create_dir_all(dir)
                .map_err(|e| StepError::io("create overlay directories", dir, e))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            escape_overlay(&from),
            escape_overlay(&upper),
            escape_overlay(&work)
        );
        let overlay = sys.mount(
            Some(Path::new("overlay")),
            &at,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(&options),
        );
        if overlay.is_err() {
            do_mount(
                sys,
                "bind the host's directory",
                from.to_str(),
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            do_mount(
                sys,
                "make the host's directory read-only",
                none(),
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }
    Ok(())
}

/// Each lower layer, ID-mapped through the pod's user namespace and attached on `dir/N`
/// (topmost first, as given): the layers to build the overlay of.
fn idmapped_lowers(
    sys: &dyn Syscall,
    lowers: &[PathBuf],
    dir: &Path,
    userns: &UserNs<'_>,
) -> Result<Vec<PathBuf>, StepError> {
    lowers
        .iter()
        .enumerate()
        .map(|(i, lower)| {
            let at = dir.join(i.to_string());
            crate::sandbox::userns::idmap_onto(sys, lower, &at, userns.fd)
                .map_err(|e| StepError::msg(e.step, e.why))?;
            Ok(at)
        })
        .collect()
}

/// overlayfs splits options at `,` and layers at `:`; escape them in paths.
/// overlayfs' `lowerdir`, topmost first. Mount options must fit in one page, so layers that
/// share a directory (the image store's) are named relative to it after a chdir there, as
/// containerd does: an image of ~60 layers then still fits.
fn lowerdir(sys: &dyn Syscall, lowers: &[PathBuf]) -> Result<String, StepError> {
    let parent = lowers.first().and_then(|l| l.parent());
    let shared = lowers.len() > 1 && lowers.iter().all(|l| l.parent() == parent);
    match parent {
        Some(dir) if shared => {
            sys.chdir(dir)
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
    /// A tmpfs's mount options: `base`, and in the pod's own user namespace its root as the
    /// owner (the host's root would show as `nobody` there, and its root could not write).
    fn tmpfs_options(&self, base: &str) -> String {
        match self.ids {
            Some(ids) => format!("{base},uid={},gid={}", ids.host_uid, ids.host_gid),
            None => base.to_string(),
        }
    }

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
            &*self.sys,
            "mount /dev",
            Some("tmpfs"),
            &fd_path(&dev),
            Some("tmpfs"),
            // The device nodes below are binds of the host's, with the host's mount flags.
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            Some(&self.tmpfs_options("mode=755,size=65536k")),
        )?;
        drop(dev);
        for name in DEVICES {
            let target = self.mountpoint(&format!("/dev/{name}"), Kind::File)?;
            let source = format!("/dev/{name}");
            do_mount(
                &*self.sys,
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
            &*self.sys,
            "mount /dev/pts",
            Some("devpts"),
            &fd_path(&pts),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        let shm = self.mountpoint("/dev/shm", Kind::Dir)?;
        do_mount(
            &*self.sys,
            "mount /dev/shm",
            Some("shm"),
            &fd_path(&shm),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(&self.tmpfs_options("mode=1777,size=65536k")),
        )?;
        let mq = self.mountpoint("/dev/mqueue", Kind::Dir)?;
        // POSIX message queues of the pod's IPC namespace; not every kernel has them.
        let _ = self.sys.mount(
            Some(Path::new("mqueue")),
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
        for path in MASKED_PATHS.iter().filter(|p| p.starts_with("/sys/")) {
            self.mask(path)?;
        }
        Ok(())
    }

    fn mount_sysfs(&self) -> Result<(), StepError> {
        let sys = self.mountpoint("/sys", Kind::Dir)?;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if self
            .sys
            .mount(
                Some(Path::new("sysfs")),
                &fd_path(&sys),
                Some("sysfs"),
                flags,
                none(),
            )
            .is_ok()
        {
            return Ok(());
        }
        // Some kernels refuse a new sysfs here; fall back to the host's, read-only.
        do_mount(
            &*self.sys,
            "bind /sys",
            Some("/sys"),
            &fd_path(&sys),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let mounted = self.mountpoint("/sys", Kind::Dir)?;
        do_mount(
            &*self.sys,
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
        self.sys
            .move_mount(tree.fd.as_fd(), target.as_fd())
            .map_err(|e| StepError::sys(&step, &m.source, e))?;
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
            self.sys
                .mount_setattr(mounted.as_fd(), attrs)
                .map_err(|e| {
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
            &*self.sys,
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
        self.sys
            .mount(Some(pod_proc), &target, none(), MsFlags::MS_BIND, none())
            .map_err(|e| StepError::sys("bind the pod's /proc", pod_proc, e))?;
        drop(proc_fd);
        let mounted = self.mountpoint("/proc", Kind::Dir)?;
        self.sys
            .mount_setattr(
                mounted.as_fd(),
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            )
            .map_err(|e| StepError::sys("set mount flags of /proc (mount_setattr)", pod_proc, e))?;
        drop(mounted);
        self.mask_proc()
    }

    /// `pivot_root` into the new root, the old one detached: from here on the calling process
    /// sees only the container's files.
    pub(super) fn pivot(&self) -> Result<(), StepError> {
        self.sys
            .chdir(&self.path)
            .map_err(|e| StepError::io("chdir to the new root", &self.path, e))?;
        // pivot_root(".", ".") stacks the old root on top of the new one; unmounting it leaves
        // only the new root, with no directory needed for the old one.
        self.sys
            .pivot_root_here()
            .map_err(|e| StepError::sys("pivot_root", &self.path, e))?;
        self.sys
            .umount2(Path::new("."), MntFlags::MNT_DETACH)
            .map_err(|e| StepError::sys("detach the old root", Path::new("/"), e))?;
        self.sys
            .chdir(Path::new("/"))
            .map_err(|e| StepError::io("chdir /", Path::new("/"), e))?;
        Ok(())
    }

    /// Hides the kernel interfaces container runtimes hide (runc's and containerd's defaults):
    /// masked paths get an empty read-only tmpfs (directories) or `/dev/null` (files), the
    /// read-only ones a read-only bind of themselves. A path this kernel lacks is skipped; any
    /// other failure stops the container.
    fn mask_proc(&self) -> Result<(), StepError> {
        for path in MASKED_PATHS.iter().filter(|p| p.starts_with("/proc/")) {
            self.mask(path)?;
        }
        for path in READ_ONLY_PATHS {
            self.read_only(path)?;
        }
        Ok(())
    }

    fn mask(&self, path: &str) -> Result<(), StepError> {
        let target = self.path.join(path.trim_start_matches('/'));
        let result = match std::fs::symlink_metadata(&target) {
            Err(_) => return Ok(()),
            Ok(meta) if meta.is_dir() => self.sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=0555"),
            ),
            Ok(_) => self.sys.mount(
                Some(Path::new("/dev/null")),
                &target,
                none(),
                MsFlags::MS_BIND,
                none(),
            ),
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
        match self.sys.mount(
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
        self.sys
            .mount(None, &target, none(), flags, none())
            .map_err(|e| StepError::sys(&step, &target, e))
    }
}

/// The root built against the recording fake (`sys::fake`) in a temporary directory: which
/// mounts, with which flags, in which order; no root needed (the paths inside are real
/// directories, the mounts are only recorded).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscall};

    fn spec(fake: &RecordingSyscall, read_only: bool) -> RootfsSpec {
        let layers = fake.path("layers");
        for l in ["a", "b"] {
            std::fs::create_dir_all(layers.join(l)).unwrap();
        }
        let scratch = fake.path("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        RootfsSpec {
            lowers: vec![layers.join("a"), layers.join("b")],
            scratch,
            read_only,
        }
    }

    fn mount(
        source: Option<&str>,
        target: PathBuf,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount {
            source: source.map(PathBuf::from),
            target,
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        }
    }

    fn targets(calls: &[Call]) -> Vec<PathBuf> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_read_only_root_is_built_in_order_and_sealed_last() {
        let fake = Arc::new(RecordingSyscall::new("rootfs", &[]));
        let spec = spec(&fake, true);
        let rootfs = prepare(fake.clone(), &spec, &[], Vec::new(), None).unwrap();
        let calls = fake.calls();
        let scratch = &spec.scratch;
        let root = scratch.join("root");
        assert_eq!(rootfs.path, root);
        // Private first, then the scratch tmpfs, then the overlay with the layers named from
        // their shared directory (the option must fit in a page).
        assert_eq!(
            calls[..4],
            [
                mount(
                    None,
                    "/".into(),
                    None,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None
                ),
                mount(
                    Some("tmpfs"),
                    scratch.clone(),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID,
                    Some("mode=700")
                ),
                Call::Chdir(fake.path("layers")),
                mount(
                    Some("overlay"),
                    root.clone(),
                    Some("overlay"),
                    MsFlags::MS_NODEV,
                    Some(&format!(
                        "lowerdir=a:b,upperdir={},workdir={}",
                        scratch.join("upper").display(),
                        scratch.join("work").display()
                    ))
                ),
            ]
        );
        let mounted = targets(&calls);
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let bind = mount(
                Some(&format!("/dev/{dev}")),
                root.join("dev").join(dev),
                None,
                MsFlags::MS_BIND,
                None,
            );
            assert!(calls.contains(&bind), "no bind of /dev/{dev}: {calls:#?}");
        }
        assert!(calls.contains(&mount(
            Some("sysfs"),
            root.join("sys"),
            Some("sysfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None
        )));
        assert!(
            !mounted.contains(&root.join("tmp")),
            "a read-only root gets no /tmp"
        );
        assert_eq!(
            calls.last(),
            Some(&mount(
                None,
                root.clone(),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None
            )),
            "the root is made read-only last"
        );
        // /dev's links are plain files of the fresh /dev, made by wpod.
        assert_eq!(
            std::fs::read_link(root.join("dev/ptmx")).unwrap(),
            Path::new("pts/ptmx")
        );
    }

    /// In the pod's own user namespace: each layer is an ID-mapped copy through it, attached
    /// under the scratch space, and the overlay is made of those; the writable layer and the
    /// container's tmpfs belong to the pod's root.
    #[test]
    fn in_a_user_namespace_the_layers_are_id_mapped_and_the_pods_root_owns_the_rest() {
        let fake = Arc::new(RecordingSyscall::new("rootfs-userns", &[]));
        let spec = spec(&fake, false);
        let userns_file = fake.path("userns");
        std::fs::write(&userns_file, "").unwrap();
        let userns_fd = std::fs::File::open(&userns_file).unwrap();
        let ids = IdMap {
            host_uid: 1 << 30,
            host_gid: (1 << 30) + 7,
            size: 65536,
        };
        let userns = UserNs {
            fd: userns_fd.as_fd(),
            ids,
        };
        prepare(fake.clone(), &spec, &[], Vec::new(), Some(userns)).unwrap();
        let calls = fake.calls();
        let scratch = &spec.scratch;
        let lower = scratch.join("lower");
        let layers = fake.path("layers");
        assert_eq!(
            calls[2..9],
            [
                Call::Chown {
                    path: scratch.join("upper"),
                    uid: 1 << 30,
                    gid: (1 << 30) + 7
                },
                Call::IdmapTree {
                    source: layers.join("a"),
                    userns: userns_file.clone()
                },
                Call::MoveMount {
                    from: layers.join("a"),
                    to: lower.join("0")
                },
                Call::IdmapTree {
                    source: layers.join("b"),
                    userns: userns_file.clone()
                },
                Call::MoveMount {
                    from: layers.join("b"),
                    to: lower.join("1")
                },
                Call::Chdir(lower.clone()),
                mount(
                    Some("overlay"),
                    scratch.join("root"),
                    Some("overlay"),
                    MsFlags::MS_NODEV,
                    Some(&format!(
                        "lowerdir=0:1,upperdir={},workdir={}",
                        scratch.join("upper").display(),
                        scratch.join("work").display()
                    ))
                ),
            ]
        );
        let owned = format!(",uid={},gid={}", 1u32 << 30, (1u32 << 30) + 7);
        for (target, base) in [
            ("dev", "mode=755,size=65536k"),
            ("dev/shm", "mode=1777,size=65536k"),
            ("tmp", "mode=1777"),
        ] {
            let data = calls.iter().find_map(|c| match c {
                Call::Mount {
                    target: t, data, ..
                } if *t == scratch.join("root").join(target) => data.clone(),
                _ => None,
            });
            assert_eq!(data, Some(format!("{base}{owned}")), "/{target}");
        }
    }

    /// A layer on a filesystem that cannot be ID-mapped is named, with the way out.
    #[test]
    fn a_layer_that_cannot_be_id_mapped_is_named_with_the_way_out() {
        let refused = Arc::new(RecordingSyscall::new("rootfs-userns-refused", &[]));
        refused.fail_when(|c| matches!(c, Call::IdmapTree { .. }), Errno::EINVAL);
        let spec = spec(&refused, false);
        let userns_file = refused.path("userns");
        std::fs::write(&userns_file, "").unwrap();
        let userns_fd = std::fs::File::open(&userns_file).unwrap();
        let userns = UserNs {
            fd: userns_fd.as_fd(),
            ids: IdMap {
                host_uid: 1 << 30,
                host_gid: 1 << 30,
                size: 65536,
            },
        };
        let e = match prepare(refused.clone(), &spec, &[], Vec::new(), Some(userns)) {
            Ok(_) => panic!("an unmappable layer was used"),
            Err(e) => e,
        };
        assert!(
            e.step
                .contains(&refused.path("layers/a").display().to_string()),
            "{e}"
        );
        assert!(e.error.contains("does not support ID-mapped mounts"), "{e}");
        assert!(e.error.contains("hostUsers: true"), "{e}");
    }

    #[test]
    fn sysfs_falls_back_to_a_read_only_bind_and_tmp_is_writable() {
        let fake = Arc::new(RecordingSyscall::new("rootfs-sysfs", &[]));
        fake.fail_when(
            |c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "sysfs"),
            Errno::EPERM,
        );
        let spec = spec(&fake, false);
        prepare(fake.clone(), &spec, &[], Vec::new(), None).unwrap();
        let calls = fake.calls();
        let sys = spec.scratch.join("root/sys");
        let bind = calls
            .iter()
            .position(|c| {
                *c == mount(
                    Some("/sys"),
                    sys.clone(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            })
            .expect("the host's /sys bound");
        assert_eq!(
            calls[bind + 1],
            mount(
                None,
                sys,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None
            )
        );
        assert!(calls.contains(&mount(
            Some("tmpfs"),
            spec.scratch.join("root/tmp"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777")
        )));
    }

    /// A volume is moved onto its mount point inside the root and sealed recursively; then
    /// the container's /proc is masked and the root pivoted into.
    #[test]
    fn volumes_proc_masks_and_the_pivot() {
        let fake = Arc::new(RecordingSyscall::new("rootfs-volume", &[]));
        let spec = spec(&fake, false);
        let volume = fake.path("volume");
        std::fs::create_dir(&volume).unwrap();
        let tree = VolumeTree {
            fd: nix::fcntl::open(
                &volume,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            is_dir: true,
        };
        let m = BindMount {
            source: volume.clone(),
            target: "/data".into(),
            read_only: true,
            no_follow_symlinks: true,
            device: false,
        };
        let rootfs = prepare(fake.clone(), &spec, &[m], vec![tree], None).unwrap();
        let root = spec.scratch.join("root");
        let calls = fake.calls();
        let moved = calls
            .iter()
            .position(|c| {
                *c == Call::MoveMount {
                    from: volume.clone(),
                    to: root.join("data"),
                }
            })
            .expect("the volume moved into the root");
        assert_eq!(
            calls[moved + 1],
            Call::MountSetattr {
                target: root.join("data"),
                attrs: MOUNT_ATTR_NOSUID
                    | MOUNT_ATTR_NODEV
                    | MOUNT_ATTR_RDONLY
                    | MOUNT_ATTR_NOSYMFOLLOW,
            }
        );

        // What a fresh procfs would show, for the masks to find.
        std::fs::create_dir_all(root.join("proc/acpi")).unwrap();
        std::fs::create_dir_all(root.join("proc/sys")).unwrap();
        std::fs::write(root.join("proc/kcore"), "").unwrap();
        let before = fake.calls().len();
        rootfs.mount_own_proc().unwrap();
        rootfs.pivot().unwrap();
        let calls = fake.calls()[before..].to_vec();
        let proc = root.join("proc");
        let read_only = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        assert_eq!(
            calls,
            [
                mount(
                    Some("proc"),
                    proc.clone(),
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None
                ),
                mount(
                    Some("tmpfs"),
                    proc.join("acpi"),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=4k,mode=0555")
                ),
                mount(
                    Some("/dev/null"),
                    proc.join("kcore"),
                    None,
                    MsFlags::MS_BIND,
                    None
                ),
                mount(
                    Some(&proc.join("sys").to_string_lossy()),
                    proc.join("sys"),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None
                ),
                mount(None, proc.join("sys"), None, read_only, None),
                Call::Chdir(root.clone()),
                Call::PivotRootHere,
                Call::Umount2 {
                    target: ".".into(),
                    flags: MntFlags::MNT_DETACH
                },
                Call::Chdir("/".into()),
            ]
        );
    }

    /// The launch config lists the standard mounts (`launch::standard_mounts`): each is one the
    /// shim makes, at that place, of that type, in that order.
    #[test]
    fn the_config_lists_the_mounts_the_shim_makes() {
        for read_only in [false, true] {
            let fake = Arc::new(RecordingSyscall::new("rootfs-standard", &[]));
            let spec = spec(&fake, read_only);
            let rootfs = prepare(fake.clone(), &spec, &[], Vec::new(), None).unwrap();
            rootfs.mount_own_proc().unwrap();
            let calls = fake.calls();
            let root = spec.scratch.join("root");
            let mut last = 0;
            // /proc is mounted last, in the container's own PID namespace.
            let mut standard = super::super::launch::standard_mounts(read_only, None);
            standard.rotate_left(1);
            for m in &standard {
                let target = root.join(m.destination().strip_prefix("/").unwrap());
                let typ = m.typ().as_deref().unwrap();
                let source = m.source().clone().unwrap();
                let at = calls
                    .iter()
                    .position(|c| match c {
                        Call::Mount {
                            source: s,
                            target: t,
                            fstype,
                            ..
                        } => {
                            *t == target
                                && match typ {
                                    "bind" => fstype.is_none() && s.as_ref() == Some(&source),
                                    _ => fstype.as_deref() == Some(typ),
                                }
                        }
                        _ => false,
                    })
                    .unwrap_or_else(|| panic!("{} ({typ}) is not mounted", target.display()));
                assert!(at > last, "{} mounted out of order", target.display());
                last = at;
            }
            let tmp = root.join("tmp");
            let has_tmp = calls
                .iter()
                .any(|c| matches!(c, Call::Mount { target, .. } if *target == tmp));
            assert_eq!(has_tmp, !read_only);
        }
    }
}
