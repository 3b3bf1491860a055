//! Writes a projected volume's files (ConfigMaps, Secrets, the downward API) as the kubelet's
//! `AtomicWriter` does, so a reader sees the old set of files or the new one, never a mix:
//!
//! ```text
//! VOLUME/..2026_12_05_13_50_00.123456789/   the files, with their directories
//! VOLUME/..data -> ..2026_12_05_13_50_00.123456789
//! VOLUME/KEY -> ..data/KEY                  one link per top-level name
//! ```
//!
//! An update writes a new timestamped directory, swaps `..data` in one `rename`, then fixes the
//! top-level links and removes the old directory. A config-reloader that watches `..data` (or
//! re-reads the files) sees each change whole. The links are relative, so they resolve inside a
//! container's bind mount and inside a Wasm sidecar's preopened directory alike.

use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::plan::files::Files;
use crate::spec::env::RuntimeFacts;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Who a projected volume's files and directories belong to, as host IDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Their user: the pod's root in a user namespace of its own; `None`: the host's root.
    pub uid: Option<u32>,
    /// Their group: the fsGroup, or the pod's root group in its own user namespace.
    pub gid: Option<u32>,
    /// The group is the pod's fsGroup: files `g+r`, directories `g+x` and setgid (the
    /// kubelet's ownership of a read-only volume).
    pub fs_group: bool,
}

impl Owner {
    /// The owner of a pod's files: its `fs_group` (a pod ID), mapped to the host's IDs by the
    /// pod's own user namespace, if it has one.
    pub fn of(fs_group: Option<u32>, ids: Option<super::userns::IdMap>) -> Owner {
        let gid = match (fs_group, ids) {
            (Some(g), Some(ids)) => ids.gid(g),
            (Some(g), None) => Some(g),
            (None, ids) => ids.map(|ids| ids.host_gid),
        };
        Owner {
            uid: ids.map(|ids| ids.host_uid),
            gid,
            fs_group: fs_group.is_some(),
        }
    }

    fn is_root(&self) -> bool {
        self.uid.is_none() && self.gid.is_none()
    }

    /// Gives the directory `path` to the owner.
    fn dir(&self, path: &Path) -> io::Result<()> {
        if !self.is_root() {
            std::os::unix::fs::lchown(path, self.uid, self.gid)?;
        }
        set_mode(path, if self.fs_group { 0o755 | 0o2550 } else { 0o755 })
    }
}

/// Writes `files` into `dir` (which exists), replacing what an earlier write put there, owned
/// by `owner`.
pub fn write(dir: &Path, files: &Files, facts: &RuntimeFacts, owner: Owner) -> io::Result<()> {
    let stamp = timestamp_dir();
    let new = dir.join(&stamp);
    // Closed (0700) while it fills: a reader in the pod sees it only whole, each file already
    // with its mode (a Secret's 0400 is never 0644 for a moment).
    std::fs::DirBuilder::new().mode(0o700).create(&new)?;
    let written = fill(&new, files, facts, owner).and_then(|()| owner.dir(&new));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&new);
        return Err(e);
    }
    swap(dir, &stamp, files)
}

/// Writes the files into the new directory `new`.
fn fill(new: &Path, files: &Files, facts: &RuntimeFacts, owner: Owner) -> io::Result<()> {
    for (path, file) in &files.files {
        let target = new.join(path);
        if let Some(parent) = target.parent() {
            if parent != new {
                std::fs::create_dir_all(parent)?;
                // Every directory between the new one and the file.
                let mut d = parent;
                while d != new {
                    owner.dir(d)?;
                    d = d.parent().unwrap_or(new);
                }
            }
        }
        // The downward API's values the sandbox knows (the pod's UID) are filled in here.
        let data = match std::str::from_utf8(&file.data) {
            Ok(text) if text.contains('\0') => facts.fill(text).into_bytes(),
            _ => file.data.clone(),
        };
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&target)?;
        out.write_all(&data)?;
        if !owner.is_root() {
            std::os::unix::fs::fchown(&out, owner.uid, owner.gid)?;
        }
        // The umask may have narrowed it.
        match owner.fs_group {
            true => set_mode(&target, file.mode | 0o440)?,
            false => set_mode(&target, file.mode)?,
        }
    }
    Ok(())
}

/// Points `..data` at the new directory `stamp` in one rename, then fixes the top-level links
/// and removes the old directory.
fn swap(dir: &Path, stamp: &str, files: &Files) -> io::Result<()> {
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    // Top-level names: a link for each new one, none for a name that is gone.
    let wanted: std::collections::BTreeSet<String> = files
        .files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp) {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `..2026_12_05_13_50_00.123456789`, as the kubelet names them.
fn timestamp_dir() -> String {
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let stamp: String = now
        .trim_end_matches('Z')
        .chars()
        .map(|c| match c {
            '-' | 'T' | ':' => '_',
            c => c,
        })
        .collect();
    format!("..{stamp}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::files::File;
    use std::collections::BTreeMap;

    fn files(list: &[(&str, &str)]) -> Files {
        Files {
            files: list
                .iter()
                .map(|(p, d)| {
                    (
                        p.to_string(),
                        File {
                            data: d.as_bytes().to_vec(),
                            mode: 0o640,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            secret: false,
        }
    }

    #[test]
    fn writes_the_kubelet_layout_and_swaps_it_whole() {
        let dir = tempfile_dir();
        let facts = RuntimeFacts {
            uid: "the-uid".into(),
            ..RuntimeFacts::default()
        };
        let uid = crate::spec::env::RuntimeField::Uid.marker();
        write(
            &dir,
            &files(&[("a", "1"), ("conf/b", "2"), ("uid", uid)]),
            &facts,
            Owner::default(),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("conf/b")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(dir.join("uid")).unwrap(), "the-uid");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(dir.join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        let first = std::fs::read_link(dir.join(DATA)).unwrap();

        // An update: `a` changes, `conf` goes, `c` comes; the old directory is removed.
        write(
            &dir,
            &files(&[("a", "one"), ("c", "3")]),
            &facts,
            Owner::default(),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(dir.join("conf")).is_err());
        assert!(!dir.join(&first).exists());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2"))
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "a", "c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wpod-projected-{}", crate::files::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// In a pod's own user namespace, the files belong to the pod's root (or its fsGroup) as
    /// the host numbers them: a Secret's 0400 file is then readable by the pod's root.
    #[test]
    fn a_pod_with_its_own_users_owns_its_files_as_the_host_numbers_them() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root: it gives files to other users; run the tests as root"
        );
        use std::os::unix::fs::MetadataExt;
        let ids = crate::sandbox::userns::IdMap {
            host_uid: 300_000,
            host_gid: 400_000,
            size: 65536,
        };
        let facts = RuntimeFacts::default();
        for (fs_group, gid, mode) in [(None, 400_000, 0o400), (Some(7), 400_007, 0o440)] {
            let dir = tempfile_dir();
            let mut f = files(&[("conf/key", "secret")]);
            if let Some(file) = f.files.get_mut("conf/key") {
                file.mode = 0o400;
            }
            write(&dir, &f, &facts, Owner::of(fs_group, Some(ids))).unwrap();
            for path in ["conf/key", "conf", "..data/"] {
                let meta = std::fs::metadata(dir.join(path)).unwrap();
                assert_eq!((meta.uid(), meta.gid()), (300_000, gid), "{path}");
            }
            let meta = std::fs::metadata(dir.join("conf/key")).unwrap();
            assert_eq!(meta.mode() & 0o777, mode);
            let _ = std::fs::remove_dir_all(&dir);
        }
        // Without a user namespace nothing changes hands but the fsGroup.
        assert_eq!(Owner::of(None, None), Owner::default());
        assert_eq!(
            Owner::of(Some(7), None),
            Owner {
                uid: None,
                gid: Some(7),
                fs_group: true
            }
        );
    }
}
