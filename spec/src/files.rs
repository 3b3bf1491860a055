//! Reading files a manifest names (the manifest itself, Wasm components): only regular files,
//! never more than a cap, never blocking. A FIFO, a device or `/dev/zero` named as a manifest or a
//! `.wasm` image is refused at once instead of hanging `wpod validate` or filling its memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where wpod keeps its state (`$WPOD_ROOT`), always absolute. Default: `/var/lib/wpod` for
/// root; for an ordinary user (rootless), `$XDG_DATA_HOME/wpod`, else `~/.local/share/wpod`, as
/// podman keeps a user's storage, so no user ever sees another's pods (or root's).
pub fn state_root() -> PathBuf {
    let root = std::env::var_os("WPOD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(default_state_root);
    std::path::absolute(&root).unwrap_or(root)
}

/// Where compiled components, their MACs' key and the records of what wpod learnt of files
/// are kept (`records`).
pub fn cache_dir() -> PathBuf {
    state_root().join("cache")
}

fn default_state_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/wpod");
    }
    match (env_dir("XDG_DATA_HOME"), env_dir("HOME")) {
        (Some(data), _) => data.join("wpod"),
        (None, Some(home)) => home.join(".local/share/wpod"),
        // No home: a directory of this user's own name (private_state_dir refuses one that
        // another user made first).
        (None, None) => PathBuf::from(format!("/tmp/wpod-{}", nix::unistd::geteuid())),
    }
}

/// The directory `$VAR` names, if absolute (the XDG rule: a relative one is ignored).
fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Set (to the user's host UID) in a rootless wpod once it runs in its own user namespace
/// (`wpod::sandbox::rootless`), and inherited by what it starts: its pods then take their
/// network from pasta and run without cgroups unless delegated.
pub const ROOTLESS_ENV: &str = "WPOD_ROOTLESS_UID";

/// The host UID of the ordinary user whose rootless wpod this is; `None`: wpod runs as root.
/// The variable counts only inside a user namespace: a root wpod that inherited it (`sudo
/// -E`) is root's, and takes none of the rootless paths.
pub fn rootless_uid() -> Option<u32> {
    let uid = std::env::var(ROOTLESS_ENV).ok()?.parse().ok()?;
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    (!is_initial_uid_map(&map)).then_some(uid)
}

/// Whether `map` (a `/proc/PID/uid_map`) is the initial user namespace's: all IDs to
/// themselves.
fn is_initial_uid_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// The file that marks a directory as a wpod state root (see [`private_state_dir`]).
pub const ROOT_MARKER: &str = ".wpod-root";

/// Why wpod will not keep its state somewhere.
#[derive(Debug, thiserror::Error)]
pub enum StateRootError {
    #[error("cannot create {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "wpod's state root {} is owned by uid {owner}, not by this user (uid {me}): whoever owns \
         it controls what wpod runs; use a directory this user owns (WPOD_ROOT)",
        path.display()
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "wpod's state root {} lies inside another one, {}: a pod of that root named like a \
         directory here would remove this root with its state; use a directory outside it \
         (WPOD_ROOT)",
        root.display(),
        outer.display()
    )]
    Nested { root: PathBuf, outer: PathBuf },
}

/// `$WPOD_ROOT/sub` (the root itself for `""`), created if missing, readable and writable by
/// wpod alone: the state root and every directory in it are 0700 whatever they were, so no
/// local user reads a pulled image, runs its setuid binaries, lists pods or takes a lock that
/// blocks wpod (the class of moby's CVE-2021-41091). The root must be this user's, and must not
/// lie inside another root (whose pods could then clear it).
pub fn private_state_dir(sub: &str) -> Result<PathBuf, StateRootError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let root = state_root();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateRootError::Io { path, source }
    };
    let fresh = !root.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(io(&root))?;
    let meta = std::fs::metadata(&root).map_err(io(&root))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StateRootError::Owner {
            path: root,
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&root))?;
    }
    let real = std::fs::canonicalize(&root).map_err(io(&root))?;
    if let Some(outer) = real
        .ancestors()
        .skip(1)
        .find(|a| a.join(ROOT_MARKER).exists())
    {
        return Err(StateRootError::Nested {
            root: real.clone(),
            outer: outer.to_path_buf(),
        });
    }
    let marker = root.join(ROOT_MARKER);
    if fresh || !marker.exists() {
        std::fs::write(&marker, b"").map_err(io(&marker))?;
    }
    if sub.is_empty() {
        return Ok(root);
    }
    let dir = root.join(sub);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let meta = std::fs::metadata(&dir).map_err(io(&dir))?;
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    }
    Ok(dir)
}

/// Opens (creating it 0600) a lock file in one of wpod's private directories.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Where CNI configuration is read (and the default written): `$WPOD_CNI_CONF_DIR`, else
/// `/etc/wpod/net.d`. (Here, beside wpod's other configuration, because the plan keeps
/// hostPaths away from it.)
pub fn cni_conf_dir() -> PathBuf {
    std::env::var_os("WPOD_CNI_CONF_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/wpod/net.d"))
}

/// Where CNI plugins are looked for: `$WPOD_CNI_PATH` (colon-separated), else Debian's
/// `/usr/lib/cni` and the reference `/opt/cni/bin`. wpod runs them as root.
pub fn cni_plugin_dirs() -> Vec<PathBuf> {
    match std::env::var_os("WPOD_CNI_PATH").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v).collect(),
        None => ["/usr/lib/cni", "/opt/cni/bin"]
            .iter()
            .map(PathBuf::from)
            .collect(),
    }
}

/// `bytes` random bytes in hex: names no other process picks (temporary files, container ids).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// Where wpod's host-wide configuration lives by default (`registries.conf`, `policy.json`).
pub const CONFIG_DIR: &str = "/etc/wpod";

/// An ordinary user's own configuration directory (a rootless wpod's): `$XDG_CONFIG_HOME/wpod`,
/// else `~/.config/wpod`, read before [`CONFIG_DIR`] as podman reads `~/.config/containers`
/// first. `None` for root's wpod.
pub fn user_config_dir() -> Option<PathBuf> {
    if rootless_uid().is_none() && nix::unistd::geteuid().is_root() {
        return None;
    }
    env_dir("XDG_CONFIG_HOME")
        .or_else(|| env_dir("HOME").map(|home| home.join(".config")))
        .map(|dir| dir.join("wpod"))
}

/// A configuration file as podman's are found: the file `$VAR` names (which must exist), else
/// the user's own of the same name (rootless: [`user_config_dir`]) if there is one, else
/// `default`, whose absence means "no configuration" (`Ok(None)`). The path comes back with
/// the text, for messages.
pub fn read_config(
    var: &str,
    default: &str,
) -> Result<Option<(PathBuf, String)>, (PathBuf, std::io::Error)> {
    let users = || {
        let name = Path::new(default).file_name()?;
        Some(user_config_dir()?.join(name)).filter(|p| p.exists())
    };
    let (path, explicit) = match std::env::var_os(var) {
        Some(p) => (PathBuf::from(p), true),
        None => match users() {
            Some(p) => (p, true),
            None => (PathBuf::from(default), false),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(error) => Err((path, error)),
    }
}

/// The largest manifest wpod reads (the Kubernetes API server refuses objects over ~1.5 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest Wasm component wpod reads (a Python sidecar is ~20-40 MiB).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Its message says the OS error, so the error is not also given as the source (printing
    /// the chain would repeat it).
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// A file of wpod's own state that anything but wpod (or root) could have written.
    #[error("{} {why}: only wpod's own files are trusted; remove it (wpod makes it again)", path.display())]
    NotOwn { path: PathBuf, why: String },
}

impl ReadError {
    /// Whether the file does not exist (callers say where they looked).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Writes `bytes` to a new file `path` with `mode` (`O_EXCL`: never through a symlink or into
/// a file someone made there first, who could write it after), and gives the file back.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// Replaces `path` with `bytes` at once: written as a new file ([`write_new`]) under a random
/// name beside it, then renamed over it (removed again if that fails).
pub fn replace_with_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", random_hex(8)));
    let tmp = PathBuf::from(tmp);
    let written = write_new(&tmp, bytes, mode).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Opens one of wpod's own state files that wpod trusts (a compiled entry it maps and runs, a
/// MAC key), with its metadata, if nothing but wpod or root could have written it or can write
/// it now: not a symlink, a regular file with one link, owned by root or by wpod's user, and
/// writable by no one else. (A key another user could have put in place is one they know; an
/// entry checked once must not be writable by anyone who could change it after.)
pub fn open_own(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    use std::os::unix::fs::MetadataExt;
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let not_own = |why: String| ReadError::NotOwn {
        path: path.to_path_buf(),
        why,
    };
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        return Err(not_own("is not a regular file".into()));
    }
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(not_own(format!("belongs to user {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(not_own(format!("has mode {:o}", meta.mode() & 0o7777)));
    }
    if meta.nlink() != 1 {
        return Err(not_own(format!("has {} links", meta.nlink())));
    }
    Ok((file, meta))
}

/// Opens `path` for reading if it is a regular file. `O_NONBLOCK` makes opening a FIFO return at
/// once (it has no effect on a regular file), so the type check below can refuse it.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let ft = file.metadata().map_err(io)?.file_type();
    let kind = if ft.is_file() {
        return Ok(file);
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Err(ReadError::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

/// Reads a regular file of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    read_regular_identified(path, max).map(|(bytes, ..)| bytes)
}

/// [`read_regular`], with the identity the file had when it was opened (before it was read)
/// and a time taken before that, for [`Remembered::put`].
pub fn read_regular_identified(
    path: &Path,
    max: u64,
) -> Result<(Vec<u8>, FileId, std::time::SystemTime), ReadError> {
    let seen = std::time::SystemTime::now();
    let file = open_regular(path)?;
    let meta = file.metadata().map_err(|error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let id = FileId::of(&meta);
    // Sized at once: `Take` gives `read_to_end` no size hint, and growing from 32 bytes took a
    // dozen reads and reallocations for a 200 KB component.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(max) + 1).unwrap_or(0));
    // One byte more than allowed tells a file that is too large (or still growing).
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| ReadError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok((bytes, id, seen))
}

/// How long a file must have been unchanged before its identity stands for its content.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What tells one file from another, and a changed file from what it was: device, inode, size,
/// and modification and change times. A rebuilt or replaced file is another file.
///
/// A file changed within the clock tick it was read in could keep the same times (the kernel's
/// file timestamps are coarse). As git does with its index, only a file unchanged for
/// [`SETTLE`] is [`settled`](FileId::settled): only then may its identity stand for what it
/// holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The identity of the file `path` names now (following symlinks), if it can be had.
    pub fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every part of the identity, as bytes: what a MAC that must change with it covers.
    pub fn to_bytes(&self) -> [u8; 56] {
        let mut out = [0u8; 56];
        let parts = [
            self.dev.to_le_bytes(),
            self.ino.to_le_bytes(),
            self.size.to_le_bytes(),
            self.mtime.0.to_le_bytes(),
            self.mtime.1.to_le_bytes(),
            self.ctime.0.to_le_bytes(),
            self.ctime.1.to_le_bytes(),
        ];
        for (chunk, part) in out.chunks_exact_mut(8).zip(parts) {
            chunk.copy_from_slice(&part);
        }
        out
    }

    /// Whether the file was last changed long enough ago that a later change gets other times.
    pub fn settled(&self) -> bool {
        self.settled_at(std::time::SystemTime::now())
    }

    /// Whether it had settled at `when` (a time taken before this identity was).
    pub fn settled_at(&self, when: std::time::SystemTime) -> bool {
        use std::time::{Duration, SystemTime};
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(self.ctime.0).unwrap_or(0),
                u32::try_from(self.ctime.1).unwrap_or(0),
            );
        when.duration_since(changed).is_ok_and(|age| age >= SETTLE)
    }
}

/// What a long-lived wpod process learnt from reading files (a component's digest and
/// interface, that a cache entry carries wpod's MAC), remembered by the files' identities so
/// that the next start or `wpod apply` need not read them again. Only settled files are
/// remembered, and at most [`Remembered::CAP`] of them (the oldest forgotten first).
pub struct Remembered<V> {
    entries: std::sync::Mutex<std::collections::VecDeque<(FileId, V)>>,
}

impl<V: Clone> Remembered<V> {
    pub const CAP: usize = 64;

    pub const fn new() -> Self {
        Remembered {
            entries: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// What was remembered of the file with this very identity.
    pub fn get(&self, id: FileId) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.clone())
    }

    /// Remembers `value` of the file `id`, if the file had settled at `seen`: a time taken
    /// before the identity was (after, a change made in the tick it was taken in could go
    /// unseen, however long the file then took to read).
    pub fn put(&self, id: FileId, seen: std::time::SystemTime, value: V) {
        if !id.settled_at(seen) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(i, _)| *i != id);
        if entries.len() >= Self::CAP {
            entries.pop_front();
        }
        entries.push_back((id, value));
    }
}

impl<V: Clone> Default for Remembered<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`remove_tree`] does on meeting another wpod state root inside the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherRoots {
    /// Remove it too (an image layer may hold any file name).
    Remove,
    /// Keep it and fail: a pod's state never holds another root, unless roots nest.
    Spare,
}

/// Removes the tree at `path` without following a symlink, however deep: it holds one
/// directory descriptor at a time (a parent is reached again through `..`), so a layer 2,442
/// directories deep goes at `ulimit -n 1024`, where `remove_dir_all` (a descriptor per level)
/// stopped half-way. Names still to visit are kept per level, so each directory is listed once.
pub fn remove_tree(path: &Path, roots: OtherRoots) -> std::io::Result<()> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStrExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let list = |dir: &std::os::fd::OwnedFd| -> std::io::Result<Vec<(OsString, bool)>> {
        // A duplicate with close-on-exec (`dup` would drop it, and a helper spawned meanwhile
        // would inherit the directory).
        let mut listing = nix::dir::Dir::from_fd(dir.try_clone()?)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if roots == OtherRoots::Spare && name == ROOT_MARKER.as_bytes() {
                return Err(std::io::Error::other(format!(
                    "a directory under {} holds another wpod state root; it was kept",
                    path.display()
                )));
            }
            let is_dir = match entry.file_type() {
                Some(t) => t == nix::dir::Type::Directory,
                None => nix::sys::stat::fstatat(
                    dir,
                    entry.file_name(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
            };
            names.push((std::ffi::OsStr::from_bytes(name).to_os_string(), is_dir));
        }
        Ok(names)
    };
    let mut dir = nix::fcntl::open(path, flags, Mode::empty())?;
    // Per level from the top: the directory's name in its parent, and what is left to visit.
    let mut stack: Vec<(OsString, Vec<(OsString, bool)>)> = vec![(OsString::new(), list(&dir)?)];
    loop {
        let next = stack.last_mut().and_then(|(_, left)| left.pop());
        match next {
            Some((name, true)) => {
                let child = openat(&dir, name.as_os_str(), flags, Mode::empty())?;
                let children = list(&child)?;
                dir = child;
                stack.push((name, children));
            }
            Some((name, false)) => unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?,
            None => {
                let Some((name, _)) = stack.pop() else { break };
                if stack.is_empty() {
                    break;
                }
                let parent = openat(&dir, "..", flags, Mode::empty())?;
                dir = parent;
                unlinkat(&dir, name.as_os_str(), UnlinkatFlags::RemoveDir)?;
            }
        }
    }
    drop(dir);
    std::fs::remove_dir(path)
}

/// `path` with symlinks resolved as far as it exists (a `DirectoryOrCreate` path may not yet).
pub fn resolve_existing(path: &Path) -> std::path::PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Opens `sub` (a relative path, checked: no `..`, no `/` at the start) beneath the directory
/// `dir`, as the kubelet opens a `subPath`: never above `dir` (`openat2` with
/// `RESOLVE_BENEATH`), and never through a symlink unless `links_are_ours` (a volume wpod
/// writes, whose every key is a link into `..data`, and which no container can write). A
/// missing directory on the way, or at the end, is made, with its parent's group and mode
/// (setuid never), so a subdirectory of a world-writable emptyDir stays writable. Returns an
/// `O_PATH` descriptor; an error says what it means for a subPath.
pub fn open_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    sub: &str,
    links_are_ours: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    open_beneath_raw(dir, sub, links_are_ours).map_err(|e| {
        let why = match e {
            nix::Error::ELOOP => {
                "a symlink is on its way, and a subPath follows none: name the real directory"
            }
            nix::Error::EXDEV => "it leads out of the volume: a subPath stays inside it",
            nix::Error::ENOTDIR => "a file is on its way where a directory should be",
            _ => return std::io::Error::from(e),
        };
        std::io::Error::other(format!("{why} ({e})"))
    })
}

/// [`open_beneath`], with the system's errors.
fn open_beneath_raw(
    dir: std::os::fd::BorrowedFd<'_>,
    sub: &str,
    links_are_ours: bool,
) -> Result<std::os::fd::OwnedFd, nix::Error> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use nix::sys::stat::{fstat, Mode};
    use std::os::fd::AsFd;
    let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if !links_are_ours {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
    }
    let how = |flags: OFlag| {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve)
    };
    let path = || how(OFlag::O_PATH);
    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
        return Err(nix::Error::EXDEV);
    }
    match openat2(dir, sub, path()) {
        Err(nix::Error::ENOENT) => {}
        other => return other,
    }
    // Made one directory at a time, each beneath the one before, through descriptors only.
    let directory = || how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW);
    let mut at: std::os::fd::OwnedFd = openat2(dir, ".", directory())?;
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let made = match nix::sys::stat::mkdirat(at.as_fd(), part, Mode::from_bits_truncate(0o700))
        {
            Ok(()) => true,
            Err(nix::Error::EEXIST) => false,
            Err(e) => return Err(e),
        };
        let next = openat2(at.as_fd(), part, directory())?;
        if made {
            // What root just made, and only that (a name a container put there meanwhile is
            // not root's, or not a directory): the parent's group and mode, no setuid.
            let (parent, st) = (fstat(at.as_fd())?, fstat(next.as_fd())?);
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR
                && st.st_uid == nix::unistd::geteuid().as_raw()
            {
                nix::unistd::fchown(
                    next.as_fd(),
                    None,
                    Some(nix::unistd::Gid::from_raw(parent.st_gid)),
                )?;
                nix::sys::stat::fchmod(
                    next.as_fd(),
                    Mode::from_bits_truncate(parent.st_mode & 0o3777),
                )?;
            }
        }
        at = next;
    }
    // The end, as an O_PATH descriptor like the one an existing path gives.
    openat2(at.as_fd(), ".", path())
}

#[cfg(test)]
mod tests {
    /// wpod's own files are opened only as themselves: not through a symlink, not with a
    /// second link, not writable by others, not a FIFO.
    #[test]
    fn own_files_are_regular_single_and_written_by_wpod_alone() {
        use super::*;
        use std::os::unix::fs::PermissionsExt;
        let dir = wpod_test_support::TempDir::new("own");
        let own = dir.join("own");
        std::fs::write(&own, b"x").unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_own(&own).is_ok());
        let refused = |path: &Path, why: &str| match open_own(path) {
            Err(ReadError::NotOwn { why: w, .. }) => assert!(w.contains(why), "{w}"),
            Err(ReadError::Io { error, .. }) => assert!(why == "symlink", "{error}"),
            other => panic!("{} opened: {:?}", path.display(), other.map(|_| ())),
        };
        let link = dir.join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        refused(&link, "symlink");
        let hard = dir.join("hard");
        std::fs::hard_link(&own, &hard).unwrap();
        refused(&own, "2 links");
        std::fs::remove_file(&hard).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o664)).unwrap();
        refused(&own, "mode 664");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        refused(&fifo, "not a regular file");
    }

    #[test]
    fn only_a_user_namespace_of_its_own_makes_wpod_rootless() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map(
            "         0       1000          1\n         1     100000      65536\n"
        ));
        assert!(!is_initial_uid_map(""));
    }

    use super::*;

    fn id(ino: u64, ctime: i64) -> FileId {
        FileId {
            dev: 1,
            ino,
            size: 10,
            mtime: (ctime, 0),
            ctime: (ctime, 0),
        }
    }

    #[test]
    fn remembered_keeps_only_settled_files_and_forgets_the_oldest() {
        let seen = std::time::SystemTime::now();
        let now = seen
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let memo = Remembered::new();
        memo.put(id(1, now), seen, "fresh");
        assert_eq!(memo.get(id(1, now)), None, "a file changed just now");
        // Judged at the time the caller gives (when it took the identity), not now.
        memo.put(id(1, now), seen + SETTLE * 2, "read late");
        assert_eq!(memo.get(id(1, now)), Some("read late"));
        memo.put(id(1, now - 60), seen, "old");
        assert_eq!(memo.get(id(1, now - 60)), Some("old"));
        assert_eq!(
            memo.get(id(1, now - 59)),
            None,
            "the same inode, changed since"
        );
        for ino in 2..=Remembered::<&str>::CAP as u64 + 1 {
            memo.put(id(ino, 1), seen, "many");
        }
        assert_eq!(memo.get(id(1, now - 60)), None, "the oldest forgotten");
        assert_eq!(memo.get(id(2, 1)), Some("many"));
    }

    #[test]
    fn a_read_file_is_identified_as_it_was_opened() {
        let dir = wpod_test_support::TempDir::new("files-id");
        let path = dir.join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let (bytes, id, _) = read_regular_identified(&path, 100).unwrap();
        assert_eq!(bytes, b"0123456789");
        assert_eq!(Some(id), FileId::of_path(&path));
        assert_eq!(id.size(), 10);
        std::fs::write(&path, b"01234").unwrap();
        assert_ne!(Some(id), FileId::of_path(&path), "rewritten shorter");
    }

    #[test]
    fn a_tree_deeper_than_the_descriptor_limit_is_removed() {
        let base = std::env::temp_dir().join(format!("wpod-deep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        // 3,000 levels, built through descriptors (the path would pass PATH_MAX).
        let mut dir = std::fs::File::open(&base).unwrap();
        for i in 0..3000 {
            let fd = std::os::fd::AsFd::as_fd(&dir);
            nix::sys::stat::mkdirat(fd, "d", nix::sys::stat::Mode::from_bits_truncate(0o755))
                .unwrap();
            if i % 500 == 0 {
                let f = nix::fcntl::openat(
                    fd,
                    "f",
                    nix::fcntl::OFlag::O_CREAT
                        | nix::fcntl::OFlag::O_WRONLY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .unwrap();
                drop(f);
            }
            let next = nix::fcntl::openat(
                fd,
                "d",
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
            dir = std::fs::File::from(next);
        }
        drop(dir);
        // (At `ulimit -n 1024` too: the e2e test `image prune` of such a layer checks that.)
        remove_tree(&base, OtherRoots::Remove).unwrap();
        assert!(!base.exists());
        // Another root inside a tree that spares them is kept, and said.
        let base = std::env::temp_dir().join(format!("wpod-spare-{}", std::process::id()));
        std::fs::create_dir_all(base.join("pods/x/inner")).unwrap();
        std::fs::write(base.join("pods/x/inner").join(ROOT_MARKER), b"").unwrap();
        assert!(remove_tree(&base, OtherRoots::Spare).is_err());
        assert!(base.join("pods/x/inner").join(ROOT_MARKER).exists());
        remove_tree(&base, OtherRoots::Remove).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = wpod_test_support::TempDir::new("files");
        let fifo = dir.join("fifo.wasm");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_regular(&fifo, 100),
            Err(ReadError::NotRegular { kind: "a FIFO", .. })
        ));
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 100),
            Err(ReadError::NotRegular { .. })
        ));
        let big = dir.join("big");
        std::fs::write(&big, [0u8; 101]).unwrap();
        assert!(matches!(
            read_regular(&big, 100),
            Err(ReadError::TooLarge { .. })
        ));
        assert_eq!(read_regular(&big, 101).unwrap().len(), 101);
        assert!(read_regular(&dir.join("gone"), 1)
            .unwrap_err()
            .is_not_found());
    }
}
