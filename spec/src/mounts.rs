//! The host's mount table (`/proc/self/mountinfo`), for two questions: what is mounted under a
//! pod's directory (to unmount what a killed run left), and whether a host directory is, or
//! holds, a kernel interface filesystem (procfs, sysfs, cgroupfs, …) that must never be handed
//! to a Wasm sidecar: `/proc/self` there is the wpod process that runs every sidecar.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Filesystems through which the kernel, the host's processes or its devices are reached.
pub const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "pstore",
    "efivarfs",
    "fusectl",
    "binfmt_misc",
    "selinuxfs",
    "hugetlbfs",
    "nsfs",
];

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// It receives mounts made elsewhere (a `shared:` or `master:` peer group): what is
    /// mounted under it later, outside, appears in it.
    pub receives_mounts: bool,
}

/// The calling process's mounts, in mount order.
pub fn table() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            // ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                id: fields.first()?.parse().ok()?,
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fstype: fields.get(sep + 1)?.to_string(),
                receives_mounts: fields
                    .get(6..sep)
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.starts_with("shared:") || f.starts_with("master:")),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|c| u8::from_str_radix(c, 8).ok())
        });
        match (bytes[i], code) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = table()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Kernel filesystems a sidecar would reach through the directory `dir` (an absolute path
/// without symlinks): the one `dir` lies on, if it is one, and any mounted below it.
pub fn kernel_filesystems(table: &[Mount], dir: &Path, dir_mount: Option<u64>) -> Vec<Mount> {
    // The mount `dir` lies on: known by ID when the caller opened it, else the last-mounted
    // (topmost) of those whose mount point is the longest prefix of `dir`.
    let containing = match dir_mount {
        Some(id) => table.iter().find(|m| m.id == id),
        None => table
            .iter()
            .filter(|m| dir.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count()),
    };
    let below = table
        .iter()
        .filter(|m| m.mount_point.starts_with(dir) && m.mount_point != dir);
    containing
        .into_iter()
        .chain(below)
        .filter(|m| KERNEL_FILESYSTEMS.contains(&m.fstype.as_str()))
        .cloned()
        .collect()
}

/// The ID of the mount an open file lies on (`statx` with `STATX_MNT_ID`).
pub fn mount_id(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: statx with AT_EMPTY_PATH on a descriptor we borrow, writing into a zeroed struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(std::io::Error::other(
            "the kernel did not report the mount ID",
        ));
    }
    Ok(stx.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:22 / /proc rw,nosuid - proc proc rw
24 22 0:23 / /sys rw - sysfs sysfs rw
25 24 0:24 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 22 0:25 / /var/log rw - ext4 /dev/vdb rw
27 22 0:26 / /srv/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_kernel_filesystems_at_and_below_a_directory() {
        let t = parse(SAMPLE);
        assert!(t[0].receives_mounts, "shared:1");
        assert!(!t[4].receives_mounts);
        let slave = parse("30 22 0:27 / /mnt rw master:4 - tmpfs tmpfs rw\n");
        assert!(slave[0].receives_mounts);
        assert_eq!(t[5].mount_point, Path::new("/srv/with space"));
        let kinds = |dir: &str| -> Vec<String> {
            kernel_filesystems(&t, Path::new(dir), None)
                .into_iter()
                .map(|m| m.fstype)
                .collect()
        };
        assert_eq!(kinds("/"), ["proc", "sysfs"]);
        assert_eq!(kinds("/proc/self"), ["proc"]);
        assert_eq!(kinds("/sys/fs"), ["sysfs"]);
        assert!(kinds("/var/log").is_empty());
        assert!(kinds("/var").is_empty());
        assert_eq!(
            kernel_filesystems(&t, Path::new("/anything"), Some(23))[0].fstype,
            "proc"
        );
    }

    #[test]
    fn reads_this_process_mounts() {
        let t = table().unwrap();
        let proc = std::fs::File::open("/proc/self").unwrap();
        let id = mount_id(std::os::fd::AsFd::as_fd(&proc)).unwrap();
        assert!(t.iter().any(|m| m.id == id && m.fstype == "proc"));
    }
}
