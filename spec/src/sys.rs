//! The system calls the sandbox and the container setup make, behind one trait (as youki's
//! `Syscall`): mounts, namespaces (`unshare`, `setns`, the hostname), cgroup directories and
//! control files, signals. The real one
//! ([`LinuxSyscall`]) makes them; the recording fake (`fake::RecordingSyscall`, tests only)
//! writes down each call in order and acts on a temporary directory, so the decisions around
//! the calls (which limits, which files, which order, what is torn down) are unit-tested
//! without root.
//!
//! [`Host`] carries the syscalls and the cgroup root together: tests pass a fake and a
//! directory of fixture files where the real host passes `/sys/fs/cgroup`.
//!
//! The helper processes (the holder, the container shim) make their calls through it too, up
//! to their own forks; what runs in a forked child (the holder's PID 1, the container process
//! before `exec`) stays direct, as a fake's record there would stay in the child.

use std::fmt::Debug;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

/// The system calls of the sandbox's setup and teardown.
pub trait Syscall: Send + Sync + Debug {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// move_mount(2): attaches the detached mount tree `from` on `to` (descriptors, empty paths).
    fn move_mount(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()>;
    /// mount_setattr(2): sets `attrs` (`MOUNT_ATTR_*`) on the mount `fd` is the root of and on
    /// every mount below it, atomically (Linux 5.12).
    fn mount_setattr(&self, fd: BorrowedFd<'_>, attrs: u64) -> nix::Result<()>;
    /// A detached copy of the mount at `path` (not what is mounted below it), ID-mapped
    /// through the user namespace `userns`: a file of the host's ID N shows as that namespace's
    /// N, and one it writes as N is the host's N (open_tree(2), then mount_setattr(2) with
    /// `MOUNT_ATTR_IDMAP`; Linux 5.12, and a filesystem that supports it).
    fn idmap_tree(&self, path: &Path, userns: BorrowedFd<'_>) -> nix::Result<OwnedFd>;
    /// lchown(2): gives `path` to the host's `uid` and `gid`.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()>;
    /// chdir(2): the calling process's working directory (every thread's).
    fn chdir(&self, dir: &Path) -> std::io::Result<()>;
    /// pivot_root(".", "."): the working directory becomes the root, the old root stacked on
    /// top of it (then detached with `umount2(".")`).
    fn pivot_root_here(&self) -> nix::Result<()>;
    /// Creates a directory and its missing parents (a cgroup and the levels above it).
    fn mkdir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// Creates one directory (a cgroup), failing if it exists.
    fn mkdir(&self, dir: &Path) -> std::io::Result<()>;
    /// Removes an empty directory (a cgroup: the kernel refuses while processes are in it).
    fn rmdir(&self, dir: &Path) -> std::io::Result<()>;
    /// Writes a control file (`memory.max`, `cgroup.procs`, `cgroup.subtree_control`).
    fn write(&self, file: &Path, value: &str) -> std::io::Result<()>;
    fn kill(&self, pid: i32, signal: Signal) -> nix::Result<()>;
    /// unshare(2): new namespaces of `flags` for the calling process.
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// setns(2): joins the namespaces `fd` refers to (a `/proc/PID/ns/*` file, or a pidfd
    /// with several `kinds`).
    fn setns(&self, fd: BorrowedFd<'_>, kinds: CloneFlags) -> nix::Result<()>;
    /// sethostname(2), in the calling process's UTS namespace.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
}

/// The host's own system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }
    fn move_mount(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()> {
        // SAFETY: move_mount between two open descriptors, with empty paths.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                from.as_raw_fd(),
                c"".as_ptr(),
                to.as_raw_fd(),
                c"".as_ptr(),
                (MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) as libc::c_uint,
            )
        };
        nix::errno::Errno::result(rc).map(drop)
    }
    fn mount_setattr(&self, fd: BorrowedFd<'_>, attrs: u64) -> nix::Result<()> {
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr on an open descriptor, with an empty path (AT_EMPTY_PATH) and
        // a struct of the size passed.
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
        nix::errno::Errno::result(rc).map(drop)
    }
    fn idmap_tree(&self, path: &Path, userns: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| nix::errno::Errno::EINVAL)?;
        // SAFETY: open_tree with a valid C string; the descriptor is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c_path.as_ptr(),
                (OPEN_TREE_CLONE | libc::O_CLOEXEC as u32) as libc::c_uint,
            )
        };
        let fd = nix::errno::Errno::result(fd)?;
        // SAFETY: a descriptor open_tree just returned, owned by nothing else.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr on the descriptor just opened, with an empty path and a struct
        // of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        nix::errno::Errno::result(rc)?;
        Ok(tree)
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }
    fn chdir(&self, dir: &Path) -> std::io::Result<()> {
        std::env::set_current_dir(dir)
    }
    fn pivot_root_here(&self) -> nix::Result<()> {
        nix::unistd::pivot_root(".", ".")
    }
    fn mkdir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn mkdir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir(dir)
    }
    fn rmdir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(dir)
    }
    fn write(&self, file: &Path, value: &str) -> std::io::Result<()> {
        std::fs::write(file, value)
    }
    fn kill(&self, pid: i32, signal: Signal) -> nix::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
    }
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }
    fn setns(&self, fd: BorrowedFd<'_>, kinds: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(fd, kinds)
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }
}

/// open_tree(2) flags (linux/mount.h).
const OPEN_TREE_CLONE: u32 = 1;

/// move_mount(2) flags (linux/mount.h).
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// mount_setattr(2) attributes (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The cgroup filesystem's mount point on a host.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What the sandbox acts on: the system calls, and where the cgroup hierarchies are.
#[derive(Debug, Clone)]
pub struct Host {
    pub sys: Arc<dyn Syscall>,
    pub cgroup_root: PathBuf,
}

impl Host {
    /// This machine.
    pub fn real() -> Self {
        Host {
            sys: Arc::new(LinuxSyscall),
            cgroup_root: PathBuf::from(CGROUP_ROOT),
        }
    }
}

#[cfg(any(test, feature = "fake"))]
pub mod fake {
    //! A `Syscall` that records every call in order and acts on a temporary directory.

    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use nix::errno::Errno;
    use nix::mount::{MntFlags, MsFlags};
    use nix::sched::CloneFlags;
    use nix::sys::signal::Signal;

    /// Picks the calls that fail.
    type Matcher = fn(&Call) -> bool;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount2 {
            target: PathBuf,
            flags: MntFlags,
        },
        MoveMount {
            from: PathBuf,
            to: PathBuf,
        },
        MountSetattr {
            target: PathBuf,
            attrs: u64,
        },
        /// An ID-mapped copy of the mount at `source`, through the user namespace `userns`.
        IdmapTree {
            source: PathBuf,
            userns: PathBuf,
        },
        Chown {
            path: PathBuf,
            uid: u32,
            gid: u32,
        },
        Chdir(PathBuf),
        PivotRootHere,
        Mkdir(PathBuf),
        Rmdir(PathBuf),
        Write(PathBuf, String),
        Kill(i32, Signal),
        Unshare(CloneFlags),
        /// The namespace file joined, as its descriptor names it.
        Setns {
            ns: PathBuf,
            kinds: CloneFlags,
        },
        Sethostname(String),
    }

    /// Records calls; directories it makes get `control_files` (as the kernel gives a new
    /// cgroup its files), written with their contents; a killed PID leaves every
    /// `cgroup.procs` under `root`.
    #[derive(Debug)]
    pub struct RecordingSyscall {
        pub root: PathBuf,
        control_files: Vec<(&'static str, &'static str)>,
        calls: Mutex<Vec<Call>>,
        /// Calls that fail, with the error they get.
        failing: Mutex<Vec<(Matcher, Errno)>>,
    }

    impl RecordingSyscall {
        /// A fake acting under a new empty directory, its name unique to this process and `tag`.
        pub fn new(tag: &str, control_files: &[(&'static str, &'static str)]) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root =
                std::env::temp_dir().join(format!("wpod-sys-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("a temporary directory");
            RecordingSyscall {
                root,
                control_files: control_files.to_vec(),
                calls: Mutex::new(Vec::new()),
                failing: Mutex::new(Vec::new()),
            }
        }

        /// Makes the calls `matches` picks fail with `errno` (recorded all the same).
        pub fn fail_when(&self, matches: Matcher, errno: Errno) {
            self.failing.lock().unwrap().push((matches, errno));
        }

        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// The path `relative` under the fake's root.
        pub fn path(&self, relative: &str) -> PathBuf {
            self.root.join(relative)
        }

        fn record(&self, call: Call) -> Result<(), Errno> {
            let failing = self.failing.lock().unwrap();
            let result = match failing.iter().find(|(m, _)| m(&call)) {
                Some((_, errno)) => Err(*errno),
                None => Ok(()),
            };
            self.calls.lock().unwrap().push(call);
            result
        }

        fn populate(&self, dir: &Path) -> std::io::Result<()> {
            for (file, content) in &self.control_files {
                std::fs::write(dir.join(file), content)?;
            }
            Ok(())
        }
    }

    impl Drop for RecordingSyscall {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// What a `/proc/self/fd/N` path (or a descriptor) names: recorded as the path, so that a
    /// test compares paths, not descriptor numbers.
    fn resolved(path: &Path) -> PathBuf {
        match path.starts_with("/proc/self/fd") {
            true => std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf()),
            false => path.to_path_buf(),
        }
    }

    fn of_fd(fd: BorrowedFd<'_>) -> PathBuf {
        resolved(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))
    }

    impl super::Syscall for RecordingSyscall {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> nix::Result<()> {
            self.record(Call::Mount {
                source: source.map(Path::to_path_buf),
                target: resolved(target),
                fstype: fstype.map(str::to_string),
                flags,
                data: data.map(str::to_string),
            })
        }
        fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
            self.record(Call::Umount2 {
                target: resolved(target),
                flags,
            })
        }
        fn move_mount(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()> {
            self.record(Call::MoveMount {
                from: of_fd(from),
                to: of_fd(to),
            })
        }
        fn mount_setattr(&self, fd: BorrowedFd<'_>, attrs: u64) -> nix::Result<()> {
            self.record(Call::MountSetattr {
                target: of_fd(fd),
                attrs,
            })
        }
        fn idmap_tree(&self, path: &Path, userns: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
            self.record(Call::IdmapTree {
                source: path.to_path_buf(),
                userns: of_fd(userns),
            })?;
            // The directory itself stands for its copy: a move_mount of it records its path.
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
            Ok(self.record(Call::Chown {
                path: path.to_path_buf(),
                uid,
                gid,
            })?)
        }
        fn chdir(&self, dir: &Path) -> std::io::Result<()> {
            // Recorded only: the test process's working directory is every test's.
            Ok(self.record(Call::Chdir(dir.to_path_buf()))?)
        }
        fn pivot_root_here(&self) -> nix::Result<()> {
            self.record(Call::PivotRootHere)
        }
        fn mkdir_all(&self, dir: &Path) -> std::io::Result<()> {
            // Each level made is a cgroup with its files.
            let mut missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
            missing.reverse();
            for d in missing {
                self.mkdir(d)?;
            }
            Ok(())
        }
        fn mkdir(&self, dir: &Path) -> std::io::Result<()> {
            self.record(Call::Mkdir(dir.to_path_buf()))?;
            std::fs::create_dir(dir)?;
            self.populate(dir)
        }
        fn rmdir(&self, dir: &Path) -> std::io::Result<()> {
            self.record(Call::Rmdir(dir.to_path_buf()))?;
            // A cgroup's control files go with it; a sub-cgroup does not.
            let has_subdirs = std::fs::read_dir(dir)?.flatten().any(|e| e.path().is_dir());
            if has_subdirs {
                return Err(Errno::EBUSY.into());
            }
            std::fs::remove_dir_all(dir)
        }
        fn write(&self, file: &Path, value: &str) -> std::io::Result<()> {
            self.record(Call::Write(file.to_path_buf(), value.to_string()))?;
            std::fs::write(file, value)
        }
        fn kill(&self, pid: i32, signal: Signal) -> nix::Result<()> {
            self.record(Call::Kill(pid, signal))?;
            // The process is gone from every cgroup.
            let mut dirs = vec![self.root.clone()];
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if e.file_name() == "cgroup.procs" {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        let kept: Vec<&str> = text
                            .lines()
                            .filter(|l| l.trim().parse::<i32>().ok() != Some(pid))
                            .collect();
                        let _ = std::fs::write(&path, kept.join("\n"));
                    }
                }
            }
            Ok(())
        }
        fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
            self.record(Call::Unshare(flags))
        }
        fn setns(&self, fd: BorrowedFd<'_>, kinds: CloneFlags) -> nix::Result<()> {
            self.record(Call::Setns {
                ns: of_fd(fd),
                kinds,
            })
        }
        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.record(Call::Sethostname(name.to_string()))
        }
    }
}
