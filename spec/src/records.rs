//! What a wpod process learnt of a settled file, kept for the wpod processes after it: a
//! component file's digest and interface, that a compiled entry carries its MAC. Each pod has a
//! supervisor of its own, so what `files::Remembered` keeps within one process was learnt again
//! at every pod's start: hashing a Python sidecar's 20 MB component and its 36 MB compiled
//! entry took most of that start.
//!
//! A record is a file in `DIR/records/`, named for its kind and the path it is about, holding
//! the fact and a MAC (keyed BLAKE3; the key is `DIR/mac.key`, which only wpod reads) of the
//! kind, the path, the file's identity when the fact was learnt (`files::FileId`: device,
//! inode, size, modification and change times) and the fact. It is believed only for a file of
//! that very identity under that path: a file replaced, rewritten, renamed or linked since has
//! another change time (the kernel sets it, and only setting the clock sets it back), and a
//! record written by anything without the key, or copied from another path or kind, fails its
//! MAC. Only files that had settled (`files::SETTLE`) are recorded, as within a process.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::files::FileId;

/// The records of one directory, with its key.
pub struct Records {
    dir: PathBuf,
    key: [u8; 32],
}

impl Records {
    /// The records kept for `dir` (in `dir/records/`, under `dir/mac.key`, made on first use).
    pub fn in_dir(dir: &Path) -> io::Result<Records> {
        Ok(Records {
            dir: dir.join("records"),
            key: key(dir)?,
        })
    }

    /// The directory's key (what its compiled entries' MACs are made with, too).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The fact of `kind` recorded for the file at `path`, if it was learnt of this very file
    /// (identity `id`).
    pub fn recall(&self, kind: &str, path: &Path, id: FileId) -> Option<String> {
        // A regular file of bounded size (not a FIFO that blocks, nor `/dev/zero`); what it
        // says is believed only under its MAC.
        let bytes = crate::files::read_regular(&self.path_of(kind, path), MAX_RECORD).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (mac, fact) = text.split_once('\n')?;
        // Compared as BLAKE3 hashes compare: in constant time.
        let sound = blake3::Hash::from_hex(mac).ok()? == self.mac(kind, path, id, fact);
        sound.then(|| fact.to_string())
    }

    /// Records `fact` of `kind` for the file at `path`, of identity `id`, if the file had
    /// settled at `seen` (a time taken before the identity was). Written aside and renamed into
    /// place; a record that cannot be written only costs the next process the work.
    pub fn record(&self, kind: &str, path: &Path, id: FileId, seen: SystemTime, fact: &str) {
        if !id.settled_at(seen) {
            return;
        }
        let text = format!("{}\n{fact}", self.mac(kind, path, id, fact).to_hex());
        let written = self.own_dir().and_then(|dir| {
            // Through the directory's descriptor: a `records` swapped for a symlink after the
            // check does not lead root's writes elsewhere.
            use std::os::fd::AsRawFd;
            let at =
                |name: &str| PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()));
            crate::files::replace_with_new(&at(&self.name_of(kind, path)), text.as_bytes(), 0o600)
        });
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), kind, error = %e, "cannot keep a record");
        }
    }

    /// The records' directory (made if absent), opened if it is wpod's own: a directory, not a
    /// symlink, owned by root or wpod's user, writable by no one else.
    fn own_dir(&self) -> io::Result<std::fs::File> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        make_private_dir(&self.dir)?;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.dir)?;
        let meta = dir.metadata()?;
        let uid = nix::unistd::geteuid().as_raw();
        if (meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "{} is not wpod's own directory (owner {}, mode {:o}): remove it",
                self.dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        Ok(dir)
    }

    /// One file per kind and path (so a path's records do not pile up as its file changes).
    fn name_of(&self, kind: &str, path: &Path) -> String {
        let name = blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex();
        format!("{kind}-{}", &name[..32])
    }

    fn path_of(&self, kind: &str, path: &Path) -> PathBuf {
        self.dir.join(self.name_of(kind, path))
    }

    fn mac(&self, kind: &str, path: &Path, id: FileId, fact: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        // Apart from a compiled entry's own MAC (its name's length first) by this prefix.
        hasher.update(b"wpod record\0");
        let id = id.to_bytes();
        let parts: [&[u8]; 4] = [
            kind.as_bytes(),
            path.as_os_str().as_encoded_bytes(),
            &id,
            fact.as_bytes(),
        ];
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize()
    }
}

/// The largest record read: a component's imports and exports are a few KiB.
const MAX_RECORD: u64 = 256 << 10;

fn make_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `dir`'s key: 32 random bytes in `dir/mac.key`, made on first use, readable by wpod alone.
/// Read once per process.
pub fn key(dir: &Path) -> io::Result<[u8; 32]> {
    static KEY: std::sync::Mutex<Option<(PathBuf, [u8; 32])>> = std::sync::Mutex::new(None);
    let mut held = KEY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, key)) = held.as_ref().filter(|(d, _)| d == dir) {
        return Ok(*key);
    }
    let path = dir.join("mac.key");
    let key = match read_key(&path) {
        Err(crate::files::ReadError::Io { error, .. })
            if error.kind() == io::ErrorKind::NotFound =>
        {
            new_key(dir, &path)?
        }
        read => read.map_err(io::Error::other)?,
    };
    *held = Some((dir.to_path_buf(), key));
    Ok(key)
}

/// The key in `path`: wpod's own file (see `files::open_own`: a key anyone else could have
/// written is one they know), of 32 bytes.
fn read_key(path: &Path) -> Result<[u8; 32], crate::files::ReadError> {
    use std::io::Read;
    let (file, _) = crate::files::open_own(path)?;
    let mut bytes = Vec::with_capacity(33);
    file.take(33)
        .read_to_end(&mut bytes)
        .map_err(|error| crate::files::ReadError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    bytes
        .try_into()
        .map_err(|_| crate::files::ReadError::NotOwn {
            path: path.to_path_buf(),
            why: "is not 32 bytes".into(),
        })
}

/// Writes a fresh key, unless another wpod process won the race (then reads theirs).
fn new_key(dir: &Path, path: &Path) -> io::Result<[u8; 32]> {
    make_private_dir(dir)?;
    let mut key = [0u8; 32];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut key)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp.{}", crate::files::random_hex(8)));
    let placed = crate::files::write_new(&tmp, &key, 0o600)
        .and_then(|file| file.sync_all())
        .and_then(|()| place_key(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(path).map_err(io::Error::other)
        }
        Err(e) => Err(e),
    }
}

/// Moves the new key `tmp` to `path` unless a key is there (the first writer's key is
/// everyone's): `RENAME_NOREPLACE`, not a hard link and an unlink, between which the key has two
/// links and `read_key` refuses it; a link where the filesystem lacks that flag (NFS, 9p).
fn place_key(tmp: &Path, path: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => std::fs::hard_link(tmp, path),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use wpod_test_support::TempDir;

    /// A record is believed for its kind, path, file and key alone, and only a settled file
    /// is recorded.
    #[test]
    fn a_record_holds_for_its_kind_path_and_file_alone() {
        let dir = TempDir::new("records");
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"one").unwrap();
        let id = |p: &Path| FileId::of_path(p).unwrap();
        let records = Records::in_dir(&dir).unwrap();
        records.record("k", &a, id(&a), SystemTime::now(), "fact");
        assert_eq!(
            records.recall("k", &a, id(&a)),
            None,
            "recorded before it settled"
        );
        // As if the work began after the file had settled.
        let later = SystemTime::now() + crate::files::SETTLE + Duration::from_secs(1);
        records.record("k", &a, id(&a), later, "fact\nof two lines");
        assert_eq!(
            records.recall("k", &a, id(&a)).as_deref(),
            Some("fact\nof two lines")
        );
        assert_eq!(records.recall("other", &a, id(&a)), None, "another kind");
        assert_eq!(
            records.recall("k", &a, id(&b)),
            None,
            "another file's identity"
        );
        // a's record where b's would be: a's MAC is of a's path.
        std::fs::copy(records.path_of("k", &a), records.path_of("k", &b)).unwrap();
        assert_eq!(records.recall("k", &b, id(&b)), None, "a's record as b's");
        // The fact changed without the key.
        let path = records.path_of("k", &a);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("two", "three")).unwrap();
        assert_eq!(records.recall("k", &a, id(&a)), None, "a changed fact");
        // Another key (another directory's) knows nothing of it.
        records.record("k", &a, id(&a), later, "fact");
        let other = Records {
            dir: records.dir.clone(),
            key: [7; 32],
        };
        assert_eq!(other.recall("k", &a, id(&a)), None, "under another key");
        // a replaced by a copy of itself: another inode, so another identity.
        let copy = dir.join("copy");
        std::fs::copy(&a, &copy).unwrap();
        std::fs::rename(&copy, &a).unwrap();
        assert_eq!(records.recall("k", &a, id(&a)), None, "a replaced");
    }

    /// Records are written only into a directory of wpod's own: `records` swapped for a
    /// symlink to another directory gets nothing written there, and nothing is recorded.
    #[test]
    fn records_are_never_written_through_a_symlinked_directory() {
        let dir = TempDir::new("records-ln");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let records = Records::in_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &records.dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, b"one").unwrap();
        let id = FileId::of_path(&a).unwrap();
        let later = SystemTime::now() + crate::files::SETTLE * 2;
        records.record("k", &a, id, later, "fact");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(records.recall("k", &a, id), None);
        // Its own directory again: recorded.
        std::fs::remove_file(&records.dir).unwrap();
        records.record("k", &a, id, later, "fact");
        assert_eq!(records.recall("k", &a, id).as_deref(), Some("fact"));
        // A file planted under a temporary name is never written through: new files only.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = records.dir.join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(crate::files::write_new(&planted, b"x", 0o600).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    /// A key that another user, or anyone, could have written is not used: it may be known.
    #[test]
    fn a_key_others_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("records-key");
        let path = dir.join("mac.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = key(&dir).expect_err("a key anyone can write");
        assert!(err.to_string().contains("mode 666"), "{err}");
        assert!(Records::in_dir(&dir).is_err());
        // Made by wpod (absent), it is its own, and read back the same.
        // (Inside `dir`, which goes with it.)
        let fresh = dir.join("fresh");
        let made = key(&fresh).unwrap();
        assert_eq!(read_key(&fresh.join("mac.key")).unwrap(), made);
    }
}
