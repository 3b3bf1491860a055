//! A pod's `fsGroup` on its volumes, as the kubelet's `SetVolumeOwnership`: every directory and
//! regular file of the volume belongs to the group, files `g+rw` (`g+r` on a read-only
//! volume), directories also `g+x` and setgid, so what the pod's processes create there
//! belongs to the group too.
//!
//! A claim's directory holds what containers wrote, and root walks it: nothing is ever
//! followed. Each entry is opened `O_PATH | O_NOFOLLOW` relative to its parent's descriptor,
//! checked on that descriptor (a symlink, a device node or a FIFO is skipped, never opened for
//! real), and changed through it (`fchownat(AT_EMPTY_PATH)`, `chmod` of `/proc/self/fd/N`),
//! so a container that swaps an entry for a symlink meanwhile changes nothing outside.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{fchownat, Gid};

/// How deep a volume's tree is walked, and how many entries at most: past either, the rest is
/// left as it is (a warning says so), so a claim a co-tenant filled cannot hold a pod's
/// start for long.
const MAX_DEPTH: usize = 128;
const MAX_ENTRIES: usize = 1_000_000;

/// Gives the volume at `root` to group `gid`. With `on_root_mismatch`, a root that already has
/// the group and the setgid bit is taken as done (Kubernetes' `OnRootMismatch`).
/// Returns whether the walk stopped at [`MAX_DEPTH`].
pub fn give_group(
    root: &Path,
    gid: u32,
    read_only: bool,
    on_root_mismatch: bool,
) -> io::Result<bool> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if on_root_mismatch {
        let st = fstat(fd.as_fd())?;
        if st.st_gid == gid && st.st_mode & libc::S_ISGID != 0 {
            return Ok(false);
        }
    }
    let mut walk_state = Walk {
        left: MAX_ENTRIES,
        cut: false,
    };
    walk(fd, gid, mask(read_only), 0, &mut walk_state)?;
    Ok(walk_state.cut)
}

/// The bits the group gets: rw on a writable volume, r on a read-only one.
fn mask(read_only: bool) -> u32 {
    if read_only {
        0o440
    } else {
        0o660
    }
}

/// How far a walk may still go.
struct Walk {
    left: usize,
    /// It stopped at a bound.
    cut: bool,
}

/// Changes the directory `dir` (open for reading) and everything below it.
fn walk(dir: OwnedFd, gid: u32, mask: u32, depth: usize, state: &mut Walk) -> io::Result<()> {
    change(&dir, gid, mask | 0o110 | libc::S_ISGID)?;
    if depth >= MAX_DEPTH || state.left == 0 {
        state.cut = true;
        return Ok(());
    }
    // A duplicate with close-on-exec (`dup` drops it: a helper spawned meanwhile would inherit
    // the volume's directory).
    let mut listing = nix::dir::Dir::from_fd(dir.try_clone()?)?;
    let names: Vec<std::ffi::CString> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        if state.left == 0 {
            state.cut = true;
            return Ok(());
        }
        state.left -= 1;
        let Ok(entry) = openat(
            dir.as_fd(),
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue; // gone meanwhile
        };
        let st = fstat(entry.as_fd())?;
        match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
            SFlag::S_IFREG => change(&entry, gid, mask)?,
            SFlag::S_IFDIR => {
                // Opened again to be listed, never through a link: a directory swapped for a
                // symlink since is not followed.
                if let Ok(sub) = openat(
                    dir.as_fd(),
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    walk(sub, gid, mask, depth + 1, state)?;
                }
            }
            // Symlinks, devices, FIFOs, sockets: left alone.
            _ => {}
        }
    }
    Ok(())
}

/// The group and `| bits` of the file `fd` refers to.
fn change(fd: &OwnedFd, gid: u32, bits: u32) -> io::Result<()> {
    fchownat(
        fd.as_fd(),
        c"",
        None,
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )?;
    // Read after the chown (which cleared any setuid bit): only bits the group lacks are
    // added, and a mode that has them is not written (a container's own chmod meanwhile is
    // not undone).
    let st = fstat(fd.as_fd())?;
    let mode = (st.st_mode & 0o7777) | bits;
    if mode == st.st_mode & 0o7777 {
        return Ok(());
    }
    // chmod has no AT_EMPTY_PATH before fchmodat2: through the descriptor's /proc link, which
    // names this very file (an O_PATH descriptor cannot fchmod).
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Giving a file to another group needs root.
    #[test]
    fn gives_files_and_directories_the_group_and_follows_no_link() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test gives files to another group (chown): run it as root, as `bash .ci/test` does"
        );
        let root =
            std::env::temp_dir().join(format!("wpod-ownership-{}", crate::files::random_hex(8)));
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(
            root.join("sub/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(&outside, "not yours").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        give_group(&root, 4242, false, false).unwrap();
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(meta(&root.join("sub/file")).gid(), 4242);
        assert_eq!(meta(&root.join("sub/file")).mode() & 0o777, 0o660);
        assert_eq!(meta(&root.join("sub")).gid(), 4242);
        assert_ne!(meta(&root.join("sub")).mode() & libc::S_ISGID, 0);
        // The link's target, outside the volume, is untouched.
        assert_ne!(meta(&outside).gid(), 4242);
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(&outside);
    }
}
