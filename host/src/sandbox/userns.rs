//! A pod's own user namespace (`hostUsers: false`): the range of host IDs it maps, and the
//! lease that keeps two running pods from ever sharing one.
//!
//! Ranges of [`IDS_PER_POD`] come from the subordinate IDs of the user `wpod` in
//! `/etc/subuid` and `/etc/subgid` (as the kubelet takes the `kubelet` user's), or, when that
//! user has none, from wpod's default pool: 4,096 ranges from host ID 1,073,741,824
//! (`0x40000000`), above what `useradd` hands out (up to 600,100,000) and below the IDs
//! some tools read as negative (2^31 and up). A pod maps its IDs 0-65535 onto its range, for
//! users and groups alike.
//!
//! A lease is an exclusive `flock` on `/run/wpod/userns/<first host ID>.lock`, host-wide
//! (every state root's pods share the host's IDs), held by the `wpod run` of the pod: it goes
//! when that process does, however it ends, so a killed run never keeps a range.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::sys::Syscall;

use serde::{Deserialize, Serialize};

pub use crate::plan::users::IDS_PER_POD;

/// The user whose subordinate IDs are wpod's pods'.
pub const SUBID_USER: &str = "wpod";
/// wpod's default pool, when [`SUBID_USER`] has no subordinate IDs.
pub const DEFAULT_POOL_START: u32 = 0x4000_0000;
pub const DEFAULT_POOL_RANGES: u32 = 4096;
/// Where leases are taken.
const LEASE_DIR: &str = "/run/wpod/userns";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "user namespaces are disabled on this host (/proc/sys/user/max_user_namespaces is 0): \
         raise it (sysctl user.max_user_namespaces), or run the pod with hostUsers: true"
    )]
    Disabled,
    #[error(
        "hostUsers: false needs Linux 5.19 or later (overlayfs over ID-mapped image layers); \
         this host runs {release}: upgrade the kernel, or run the pod with hostUsers: true"
    )]
    KernelTooOld { release: String },
    #[error(
        "{source_} gives no whole range of {IDS_PER_POD} IDs for users and groups alike: give \
         the user {SUBID_USER} one (e.g. `usermod --add-subuids 1073741824-1074003967 \
         --add-subgids 1073741824-1074003967 {SUBID_USER}`)"
    )]
    NoRanges { source_: String },
    #[error(
        "all {ranges} ID ranges of {source_} are leased by running pods: stop one, or give the \
         user {SUBID_USER} more subordinate IDs"
    )]
    Exhausted { ranges: usize, source_: String },
    #[error("{what} ({}): {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a pod's IDs 0..size are the host's: `host_uid + n` and `host_gid + n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMap {
    pub host_uid: u32,
    pub host_gid: u32,
    pub size: u32,
}

impl IdMap {
    /// The host's user ID of the pod's `uid`, if the pod maps it.
    pub fn uid(&self, uid: u32) -> Option<u32> {
        (uid < self.size).then(|| self.host_uid + uid)
    }

    /// The host's group ID of the pod's `gid`, if the pod maps it.
    pub fn gid(&self, gid: u32) -> Option<u32> {
        (gid < self.size).then(|| self.host_gid + gid)
    }

    /// `/proc/PID/uid_map`'s line.
    pub fn uid_map(&self) -> String {
        format!("0 {} {}\n", self.host_uid, self.size)
    }

    /// `/proc/PID/gid_map`'s line.
    pub fn gid_map(&self) -> String {
        format!("0 {} {}\n", self.host_gid, self.size)
    }
}

/// Where the pods' ranges come from, in the order they are offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub ranges: Vec<IdMap>,
    /// For messages: `/etc/subuid and /etc/subgid (user wpod)` or wpod's default pool.
    pub source: String,
}

impl Pool {
    /// This host's pool.
    pub fn here() -> Result<Pool, UsernsError> {
        let read = |path: &'static str| match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(UsernsError::Io {
                what: "read the subordinate IDs",
                path: path.into(),
                source,
            }),
        };
        let uid = nix::unistd::User::from_name(SUBID_USER)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        Pool::from_files(&read("/etc/subuid")?, &read("/etc/subgid")?, uid)
    }

    /// The pool `subuid` and `subgid` give [`SUBID_USER`] (named, or by its `uid`), or wpod's
    /// default pool when they give it nothing.
    pub fn from_files(subuid: &str, subgid: &str, uid: Option<u32>) -> Result<Pool, UsernsError> {
        let (uids, gids) = match (blocks(subuid, uid), blocks(subgid, uid)) {
            (None, None) => (None, None),
            (u, g) => (Some(u.unwrap_or_default()), Some(g.unwrap_or_default())),
        };
        let (Some(uids), Some(gids)) = (uids, gids) else {
            return Ok(Pool {
                ranges: (0..DEFAULT_POOL_RANGES)
                    .map(|i| {
                        let first = DEFAULT_POOL_START + i * IDS_PER_POD;
                        IdMap {
                            host_uid: first,
                            host_gid: first,
                            size: IDS_PER_POD,
                        }
                    })
                    .collect(),
                source: format!(
                    "wpod's default pool (host IDs {DEFAULT_POOL_START}-{})",
                    DEFAULT_POOL_START + DEFAULT_POOL_RANGES * IDS_PER_POD - 1
                ),
            });
        };
        let source = format!("/etc/subuid and /etc/subgid (user {SUBID_USER})");
        let ranges: Vec<IdMap> = uids
            .into_iter()
            .zip(gids)
            .map(|(host_uid, host_gid)| IdMap {
                host_uid,
                host_gid,
                size: IDS_PER_POD,
            })
            .collect();
        if ranges.is_empty() {
            return Err(UsernsError::NoRanges { source_: source });
        }
        Ok(Pool { ranges, source })
    }
}

/// The first IDs of the whole ranges of [`IDS_PER_POD`] a subordinate-ID file gives the user
/// (`NAME:FIRST:COUNT` lines; the user by name or by number); `None` when it names the user
/// nowhere.
fn blocks(text: &str, uid: Option<u32>) -> Option<Vec<u32>> {
    let uid = uid.map(|u| u.to_string());
    let mut out = None;
    for line in text.lines().map(str::trim) {
        let mut fields = line.split(':');
        let (Some(who), Some(first), Some(count), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if who != SUBID_USER && Some(who) != uid.as_deref() {
            continue;
        }
        let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        let out = out.get_or_insert_with(Vec::new);
        let per = u64::from(IDS_PER_POD);
        let mut start = first;
        // Whole ranges only, and never past the last valid ID (u32::MAX is "no ID").
        while start + per <= first + count && start + per <= u64::from(u32::MAX) {
            out.push(start as u32);
            start += per;
        }
    }
    out
}

/// Why a layer could not be ID-mapped: the step, naming the layer or its mount point, and why
/// (with the way out when the filesystem is what cannot).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {why}")]
pub struct IdmapError {
    pub step: String,
    pub why: String,
}

/// Attaches an ID-mapped copy of the mount at `layer` (an image layer) on `at` (created if
/// missing), mapped through `userns`: the image's root is then the pod's root, and no file of
/// the layer changes owner. The layers of a container's root and of an image volume alike.
pub fn idmap_onto(
    sys: &dyn Syscall,
    layer: &Path,
    at: &Path,
    userns: BorrowedFd<'_>,
) -> Result<(), IdmapError> {
    let failed = |step: &str, path: &Path, why: String| IdmapError {
        step: format!("{step} ({})", path.display()),
        why,
    };
    std::fs::create_dir_all(at)
        .map_err(|e| failed("create a layer's mount point", at, e.to_string()))?;
    let tree = sys.idmap_tree(layer, userns).map_err(|e| match e {
        // The kernel's answer when the filesystem (or the kernel) cannot ID-map.
        Errno::EINVAL | Errno::ENOSYS => IdmapError {
            step: format!(
                "ID-map the image layer {} (hostUsers: false)",
                layer.display()
            ),
            why: format!(
                "{e}: its filesystem does not support ID-mapped mounts (Linux 5.12 or later, \
                 and ext4, xfs, btrfs or tmpfs among others): keep wpod's state ($WPOD_ROOT) \
                 on one that does, or run the pod with hostUsers: true"
            ),
        },
        e => failed(
            "ID-map an image layer (open_tree, mount_setattr)",
            layer,
            e.to_string(),
        ),
    })?;
    let target = nix::fcntl::open(
        at,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed("open a layer's mount point", at, e.to_string()))?;
    sys.move_mount(tree.as_fd(), target.as_fd())
        .map_err(|e| failed("attach an ID-mapped layer (move_mount)", at, e.to_string()))
}

/// A range held for one running pod; dropping it gives the range back.
#[derive(Debug)]
pub struct IdLease {
    pub map: IdMap,
    _lock: nix::fcntl::Flock<File>,
}

/// Checks that this kernel can run a pod in its own user namespace, then leases the first
/// free range of this host's pool for `pod`.
pub fn lease(pod: &str) -> Result<IdLease, UsernsError> {
    check_kernel()?;
    lease_from(&Pool::here()?, Path::new(LEASE_DIR), pod)
}

/// Leases the first range of `pool` no other process holds, under `dir`.
pub fn lease_from(pool: &Pool, dir: &Path, pod: &str) -> Result<IdLease, UsernsError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| UsernsError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create the lease directory", dir))?;
    for map in &pool.ranges {
        let path = dir.join(format!("{}.lock", map.host_uid));
        let file = crate::files::open_lock(&path).map_err(io("open the lease", &path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // Who holds it, for a person looking (the lock is what counts).
                let _ = lock.set_len(0);
                let _ = writeln!(&*lock, "{pod} {}", std::process::id());
                return Ok(IdLease {
                    map: *map,
                    _lock: lock,
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(io("lock the lease", &path)(e.into())),
        }
    }
    Err(UsernsError::Exhausted {
        ranges: pool.ranges.len(),
        source_: pool.source.clone(),
    })
}

/// What `hostUsers: false` needs of the kernel: user namespaces, and overlayfs over ID-mapped
/// layers (Linux 5.19). ID-mapped mounts of the filesystem holding the image layers are
/// checked where they are made, by the container's shim, whose error names the directory.
pub fn check_kernel() -> Result<(), UsernsError> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err(UsernsError::Disabled);
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if !at_least(&release, (5, 19)) {
        return Err(UsernsError::KernelTooOld { release });
    }
    Ok(())
}

/// Whether a kernel release (`6.1.0-18-amd64`) is at least `want`.
fn at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wpod_users_subordinate_ids_are_cut_into_whole_ranges() {
        let subuid = "alice:100000:65536\nwpod:200000:140000\n";
        let subgid = "wpod:300000:131072\n";
        let pool = Pool::from_files(subuid, subgid, None).unwrap();
        assert_eq!(
            pool.ranges,
            [
                IdMap {
                    host_uid: 200000,
                    host_gid: 300000,
                    size: 65536
                },
                IdMap {
                    host_uid: 265536,
                    host_gid: 365536,
                    size: 65536
                },
            ]
        );
        // By number too, as shadow's tools accept.
        let by_uid = Pool::from_files("999:200000:65536\n", "999:200000:65536\n", Some(999));
        assert_eq!(by_uid.unwrap().ranges.len(), 1);
        // A user given fewer than 65,536 IDs has no range: said, with the fix.
        let e = Pool::from_files("wpod:200000:1000\n", "wpod:200000:1000\n", None).unwrap_err();
        assert!(e.to_string().contains("usermod --add-subuids"), "{e}");
        // Nobody named: wpod's default pool.
        let default = Pool::from_files("alice:100000:65536\n", "", None).unwrap();
        assert_eq!(default.ranges.len(), DEFAULT_POOL_RANGES as usize);
        assert_eq!(default.ranges[1].host_uid, DEFAULT_POOL_START + 65536);
    }

    #[test]
    fn two_leases_never_share_a_range_and_a_dropped_one_is_free_again() {
        let dir = std::env::temp_dir().join(format!("wpod-userns-lease-{}", std::process::id()));
        let pool = Pool::from_files("wpod:200000:131072\n", "wpod:200000:131072\n", None).unwrap();
        let a = lease_from(&pool, &dir, "a").unwrap();
        let b = lease_from(&pool, &dir, "b").unwrap();
        assert_ne!(a.map, b.map);
        let e = lease_from(&pool, &dir, "c").unwrap_err();
        assert!(matches!(e, UsernsError::Exhausted { ranges: 2, .. }), "{e}");
        let first = a.map;
        drop(a);
        assert_eq!(lease_from(&pool, &dir, "c").unwrap().map, first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(at_least("6.1.0-18-amd64", (5, 19)));
        assert!(at_least("5.19.0", (5, 19)));
        assert!(!at_least("5.15.0-91-generic", (5, 19)));
        assert!(!at_least("garbage", (5, 19)));
    }

    #[test]
    fn a_map_gives_the_hosts_ids_of_the_pods() {
        let m = IdMap {
            host_uid: 1000,
            host_gid: 2000,
            size: 10,
        };
        assert_eq!(
            (m.uid(0), m.uid(9), m.uid(10)),
            (Some(1000), Some(1009), None)
        );
        assert_eq!(m.gid(5), Some(2005));
        assert_eq!(m.uid_map(), "0 1000 10\n");
    }
}
