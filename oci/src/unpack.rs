//! Unpacking one image layer (an uncompressed tar stream) into an empty directory in overlayfs'
//! format, without ever writing outside it.
//!
//! A layer is untrusted input. The `tar` crate only parses here; every file is created by wpod
//! with `*at` calls relative to a descriptor of the layer directory, and every parent is
//! resolved with `openat2(RESOLVE_IN_ROOT)`, so that an absolute path, a `..`, or a symlink an
//! earlier entry planted (the CVE-2018-15664 / CVE-2021-30465 class) resolves inside the layer,
//! never out of it. Nothing is ever followed when setting metadata (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`); ownership comes before the mode (so a setuid bit survives), and
//! directory times last. Whiteouts become overlayfs whiteouts (a `0:0` character device for
//! `.wh.NAME`, `trusted.overlay.opaque=y` for `.wh..wh..opq`). Device nodes from images are
//! skipped (a container gets its `/dev` from wpod). Entries, bytes and path lengths are capped.
//!
//! The tar framing is read by `tar_stream.rs` (extension headers capped before they are read,
//! full link names, PAX sizes and owners applied). The whole decompressed stream is bounded
//! (`Limits::max_stream`, which the puller derives from the compressed size: no 67 KB blob
//! becomes a 2 GiB file), and past the archive's end only zero padding may follow, at most
//! `Limits::max_trailing` bytes: the layer's digest covers the whole stream, so wpod reads it
//! to its end, but never gigabytes of hidden data.
//!
//! Implicit parent directories (a layer that writes `tmp/x` without a `tmp/` entry) take their
//! owner and mode from the layers below, so that `/tmp`'s 1777 is not masked by a 0755 directory
//! in the upper layer.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::tar_stream::{Member, Record, TarStream};

/// What a layer may hold at most.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: u64,
    /// Bytes of file content, all files together.
    pub max_bytes: u64,
    pub max_path: usize,
    /// Bytes of the whole (decompressed) stream: headers, data, padding and trailing bytes.
    pub max_stream: u64,
    /// Bytes after the end-of-archive marker (zeros only).
    pub max_trailing: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_bytes: 64 << 30,
            max_path: 4096,
            max_stream: (64 << 30) + (1 << 30),
            max_trailing: 1 << 20,
        }
    }
}

impl Limits {
    /// The limits for a layer whose compressed blob is `compressed` bytes: its stream may
    /// expand to at most `MAX_RATIO` times that, or 1 GiB, whichever is more (deflate cannot
    /// pass ~1032:1, so no gzip layer is ever refused; a zstd layer of mostly zeros past 1 GiB
    /// is), and never past the absolute caps.
    pub fn for_blob(compressed: u64) -> Self {
        let d = Limits::default();
        Limits {
            max_stream: compressed
                .saturating_mul(MAX_RATIO)
                .max(EXPANSION_FLOOR)
                .min(d.max_stream),
            ..d
        }
    }
}

/// How much a layer's stream may expand over its compressed blob (above 1 GiB).
pub const MAX_RATIO: u64 = 1100;
/// What any layer may expand to, whatever its compressed size.
pub const EXPANSION_FLOOR: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("read the layer")]
    Read(#[source] std::io::Error),
    #[error("entry {0:?} leaves the layer (`..`)")]
    Escapes(PathBuf),
    #[error("entry {path:?}: {what}")]
    Entry { path: PathBuf, what: String },
    #[error("{step} {path:?}")]
    Sys {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the layer has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the layer holds more than {0} bytes")]
    TooLarge(u64),
    #[error("entry path longer than {0} bytes")]
    PathTooLong(usize),
    #[error(
        "the layer decompresses to more than {0} bytes (at most {MAX_RATIO} times its \
         compressed size, and at least 1 GiB, are allowed)"
    )]
    Expands(u64),
    #[error("after the archive's end the layer holds data, or more than {0} bytes of padding")]
    Trailing(u64),
}

/// A reader that fails once more than its budget was read (the stream expands too much).
struct Budget<R> {
    r: R,
    left: u64,
}

#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("over the layer's expansion budget")
    }
}

impl std::error::Error for OverBudget {}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the budget is asked for, so a stream ending exactly at it passes.
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        let n = self.r.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(OverBudget));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A read error, or the budget's.
fn read_error(e: std::io::Error, max: u64) -> UnpackError {
    if e.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) {
        UnpackError::Expands(max)
    } else {
        UnpackError::Read(e)
    }
}

/// What an unpacked layer held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes left out.
    pub skipped_devices: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks the tar stream `layer` into the empty directory `dest`. `lowers` are the unpacked
/// layers below it, topmost first (for the attributes of implicit parent directories).
pub fn unpack(
    layer: impl Read,
    dest: &Path,
    lowers: &[PathBuf],
    limits: Limits,
) -> Result<Unpacked, UnpackError> {
    let root = open_dir(dest).map_err(|source| UnpackError::Sys {
        step: "open",
        path: dest.to_path_buf(),
        source,
    })?;
    let lowers: Vec<OwnedFd> = lowers.iter().filter_map(|l| open_dir(l).ok()).collect();
    let budget = Budget {
        r: layer,
        left: limits.max_stream,
    };
    let mut tar = TarStream::new(budget);
    let read = |e| read_error(e, limits.max_stream);
    let mut done = Unpacked::default();
    // Directory times are set last: creating entries inside would change them again.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let layer = Layer {
        root: root.as_fd(),
        lowers: &lowers,
    };
    while let Some(member) = tar.next().map_err(read)? {
        done.entries += 1;
        if done.entries + tar.extension_headers > limits.max_entries {
            return Err(UnpackError::TooManyEntries(limits.max_entries));
        }
        let too_long = |b: &[u8]| b.len() > limits.max_path;
        if too_long(&member.path) || member.link.as_deref().is_some_and(too_long) {
            return Err(UnpackError::PathTooLong(limits.max_path));
        }
        if member.path.contains(&0) || member.link.as_ref().is_some_and(|l| l.contains(&0)) {
            return Err(UnpackError::Entry {
                path: PathBuf::from(OsStr::from_bytes(&member.path)),
                what: "a NUL byte in its path or link".into(),
            });
        }
        let raw = PathBuf::from(OsStr::from_bytes(&member.path));
        done.bytes += member.size;
        if done.bytes > limits.max_bytes {
            return Err(UnpackError::TooLarge(limits.max_bytes));
        }
        let Some(path) = inside(&raw)? else {
            continue; // the layer's root itself: its metadata is the lower layers' business
        };
        let kind = member.kind;
        let name = path.file_name().unwrap_or_default().to_owned();
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let sys = |step: &'static str| {
            let path = path.clone();
            move |source| UnpackError::Sys { step, path, source }
        };
        let parent = layer
            .parent_dir(&parent_path)
            .map_err(sys("open the parent of"))?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE {
            set_xattr(parent.as_fd(), "trusted.overlay.opaque", b"y")
                .map_err(sys("mark opaque"))?;
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            remove_existing(parent.as_fd(), OsStr::new(hidden)).map_err(sys("replace"))?;
            mknodat(parent.as_fd(), hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(sys("create the whiteout of"))?;
            continue;
        }
        let mode = Mode::from_bits_truncate(member.mode & 0o7777);
        let (uid, gid, mtime) = (member.uid, member.gid, member.mtime);
        match kind {
            tar::EntryType::Directory => {
                let exists = fstatat(
                    parent.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ok()
                .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
                if exists != Some(SFlag::S_IFDIR) {
                    remove_existing(parent.as_fd(), &name).map_err(sys("replace"))?;
                    mkdirat(
                        parent.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(sys("create directory"))?;
                }
                let dir = open_at(parent.as_fd(), &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(sys("open directory"))?;
                own_and_mode(dir.as_fd(), uid, gid, mode).map_err(sys("set the owner of"))?;
                set_xattrs(&member.records, dir.as_fd()).map_err(sys("set the xattrs of"))?;
                dir_times.push((path.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(parent.as_fd(), &name).map_err(sys("replace"))?;
                let file = openat2(
                    parent.as_fd(),
                    name.as_os_str(),
                    OpenHow::new()
                        .flags(
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                        )
                        .mode(Mode::from_bits_truncate(0o600))
                        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
                )
                .map_err(sys("create file"))?;
                let mut out = File::from(file);
                std::io::copy(&mut tar.data(), &mut out).map_err(read)?;
                own_and_mode(out.as_fd(), uid, gid, mode).map_err(sys("set the owner of"))?;
                set_xattrs(&member.records, out.as_fd()).map_err(sys("set the xattrs of"))?;
                set_mtime(out.as_fd(), mtime);
            }
            tar::EntryType::Symlink => {
                let target = link_target(&member, &path, "a symlink without a target")?;
                remove_existing(parent.as_fd(), &name).map_err(sys("replace"))?;
                // Verbatim, never followed: it points wherever it points inside the container.
                symlinkat(target.as_os_str(), parent.as_fd(), name.as_os_str())
                    .map_err(sys("create symlink"))?;
                chown_entry(parent.as_fd(), &name, uid, gid).map_err(sys("set the owner of"))?;
            }
            tar::EntryType::Link => {
                let target = link_target(&member, &path, "a hard link without a target")?;
                let Some(target) = inside(&target)? else {
                    return Err(UnpackError::Entry {
                        path,
                        what: "a hard link to the layer's root".into(),
                    });
                };
                let target_parent = layer
                    .parent_dir(target.parent().unwrap_or(Path::new("")))
                    .map_err(sys("open the target of"))?;
                let target_name = target.file_name().unwrap_or_default();
                let st = fstatat(
                    target_parent.as_fd(),
                    target_name,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys("find the target of"))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    return Err(UnpackError::Entry {
                        path,
                        what: "a hard link to a directory".into(),
                    });
                }
                remove_existing(parent.as_fd(), &name).map_err(sys("replace"))?;
                linkat(
                    target_parent.as_fd(),
                    target_name,
                    parent.as_fd(),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(sys("create hard link"))?;
            }
            tar::EntryType::Fifo => {
                remove_existing(parent.as_fd(), &name).map_err(sys("replace"))?;
                mknodat(parent.as_fd(), name.as_os_str(), SFlag::S_IFIFO, mode, 0)
                    .map_err(sys("create fifo"))?;
                chown_entry(parent.as_fd(), &name, uid, gid).map_err(sys("set the owner of"))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                done.skipped_devices += 1;
            }
            // GNU and PAX extension headers are consumed by the reader, which refuses sparse
            // files; anything else (a volume label) is not something a container image needs.
            other => {
                return Err(UnpackError::Entry {
                    path,
                    what: format!("unsupported entry type {other:?}"),
                })
            }
        }
    }
    for (path, mtime) in dir_times.iter().rev() {
        if let Ok(dir) = layer.open_in_root(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            set_mtime(dir.as_fd(), *mtime);
        }
    }
    trailing(tar.into_inner(), limits)?;
    Ok(done)
}

/// Reads what follows the archive's end to the end of the stream (the layer's digest covers
/// it): zero padding only, at most `max_trailing` bytes (Go's writer pads 1 KiB, GNU tar to
/// 10 KiB). Anything else is refused, as Go refuses a zero block followed by a header.
fn trailing(mut r: impl Read, limits: Limits) -> Result<(), UnpackError> {
    let mut buf = [0u8; 8192];
    let mut seen = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, limits.max_stream)),
        };
        if n == 0 {
            return Ok(());
        }
        seen += n as u64;
        if seen > limits.max_trailing || buf[..n].iter().any(|&b| b != 0) {
            return Err(UnpackError::Trailing(limits.max_trailing));
        }
    }
}

/// A layer being unpacked: its directory and the layers below.
struct Layer<'a> {
    root: BorrowedFd<'a>,
    lowers: &'a [OwnedFd],
}

impl Layer<'_> {
    fn open_in_root(&self, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        openat2(
            self.root,
            path,
            OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
                ResolveFlag::RESOLVE_IN_ROOT
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            ),
        )
    }

    /// The directory `path` of the layer, resolved inside it, created (with the attributes the
    /// layers below give it) where missing.
    fn parent_dir(&self, path: &Path) -> Result<OwnedFd, Errno> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match self.open_in_root(path, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut current = PathBuf::new();
        for part in path.components() {
            let Component::Normal(name) = part else {
                continue;
            };
            let here = self.open_in_root(&current, flags)?;
            current.push(name);
            match mkdirat(here.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => self.copy_lower_attributes(&current),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        self.open_in_root(path, flags)
    }

    /// Gives the implicit directory `path` the owner and mode it has in the topmost layer below
    /// that has it.
    fn copy_lower_attributes(&self, path: &Path) {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let Some(st) = self.lowers.iter().find_map(|lower| {
            let fd = openat2(lower.as_fd(), path, how).ok()?;
            nix::sys::stat::fstat(fd.as_fd()).ok()
        }) else {
            return;
        };
        if let Ok(dir) = self.open_in_root(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
            let _ = own_and_mode(dir.as_fd(), st.st_uid, st.st_gid, mode);
        }
    }
}

/// Sets the owner of the entry `name` itself, never what it points to.
fn chown_entry(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> Result<(), Errno> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// The full target of a link entry; `missing` says what the entry is without one.
fn link_target(member: &Member, path: &Path, missing: &str) -> Result<PathBuf, UnpackError> {
    member
        .link
        .as_ref()
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(OsStr::from_bytes(l)))
        .ok_or_else(|| UnpackError::Entry {
            path: path.to_path_buf(),
            what: missing.to_string(),
        })
}

/// The entry's path as a relative path inside the layer: leading `/` and `.` dropped, `..`
/// refused; `None` for the root itself.
fn inside(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::Escapes(raw.to_path_buf()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    openat2(
        dir,
        name,
        OpenHow::new()
            .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
    )
}

/// Removes what is at `name` (a later entry replaces it), a directory with all it holds.
fn remove_existing(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            let sub = open_at(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            remove_all_in(sub.as_fd())?;
            unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        }
        Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
    }
}

/// Empties the directory `dir` (never following a symlink out of it).
fn remove_all_in(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    let dup = nix::unistd::dup(dir)?;
    let mut listing = nix::dir::Dir::from_fd(dup)?;
    let names: Vec<CString> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        remove_existing(dir, OsStr::from_bytes(name.as_bytes()))?;
    }
    Ok(())
}

/// Owner first, then the mode: changing the owner clears setuid/setgid bits.
fn own_and_mode(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: Mode) -> Result<(), Errno> {
    nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    fchmod(fd, mode)
}

fn set_mtime(fd: BorrowedFd<'_>, mtime: u64) {
    let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
    let _ = nix::sys::stat::futimens(fd, &t, &t);
}

fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> Result<(), Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // An O_PATH descriptor cannot carry xattrs: reopen it for reading through /proc.
    let real = nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: fsetxattr on a descriptor we own, with a NUL-terminated name and a byte slice.
    let rc = unsafe {
        libc::fsetxattr(
            real.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// The entry's PAX extended attributes that a container may keep: `user.*` and file
/// capabilities. `trusted.*` (overlayfs' own, among others) never comes from an image; a
/// filesystem without xattrs just loses them.
fn set_xattrs(records: &[Record], fd: BorrowedFd<'_>) -> Result<(), Errno> {
    for (key, value) in records {
        let Some(name) = key.strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if !(name.starts_with(b"user.") || name == b"security.capability") {
            continue;
        }
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: fsetxattr on a descriptor we hold open, with a NUL-terminated name.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    /// Unpacking sets owners and makes device nodes: it needs root, as `wpod` does.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the unpack tests need root (they chown and mknod, as wpod does): run them as root"
        );
    }

    struct Dirs {
        base: PathBuf,
    }

    impl Dirs {
        fn new(name: &str) -> Self {
            let base =
                std::env::temp_dir().join(format!("wpod-unpack-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            for d in ["layer", "lower", "outside"] {
                std::fs::create_dir_all(base.join(d)).unwrap();
            }
            Dirs { base }
        }
        fn layer(&self) -> PathBuf {
            self.base.join("layer")
        }
        fn outside(&self) -> PathBuf {
            self.base.join("outside")
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// A tar entry; `path` is written into the header as is (`..` included).
    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            let ln = &mut h.as_old_mut().linkname;
            ln.fill(0);
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn files_directories_links_owners_and_modes() {
        require_root();
        let d = Dirs::new("basic");
        let layer = tar(|b| {
            entry(b, D, "usr/", 0o755, b"", None);
            entry(b, D, "usr/bin/", 0o755, b"", None);
            entry(b, F, "usr/bin/tool", 0o4755, b"#!/bin/sh\n", None);
            entry(b, S, "bin", 0o777, b"", Some("usr/bin"));
            entry(b, H, "usr/bin/same", 0o755, b"", Some("usr/bin/tool"));
            entry(b, F, "./etc/motd", 0o644, b"hello", None);
        });
        let n = unpack(&layer[..], &d.layer(), &[], Limits::default()).unwrap();
        assert_eq!(n.entries, 6);
        let tool = std::fs::metadata(d.layer().join("usr/bin/tool")).unwrap();
        assert_eq!(
            tool.permissions().mode() & 0o7777,
            0o4755,
            "setuid survives the chown"
        );
        assert_eq!((tool.uid(), tool.gid()), (1000, 1000));
        let same = std::fs::metadata(d.layer().join("usr/bin/same")).unwrap();
        assert_eq!(same.ino(), tool.ino());
        assert_eq!(
            std::fs::read_link(d.layer().join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(std::fs::read(d.layer().join("etc/motd")).unwrap(), b"hello");
        let usr = std::fs::metadata(d.layer().join("usr")).unwrap();
        assert_eq!(usr.mtime(), 1_700_000_000, "directory times are set last");
    }

    #[test]
    fn a_dotdot_entry_is_refused() {
        require_root();
        let d = Dirs::new("dotdot");
        let layer = tar(|b| entry(b, F, "../outside/pwned", 0o644, b"x", None));
        let e = unpack(&layer[..], &d.layer(), &[], Limits::default()).unwrap_err();
        assert!(matches!(e, UnpackError::Escapes(_)), "{e}");
        assert_eq!(std::fs::read_dir(d.outside()).unwrap().count(), 0);
    }

    #[test]
    fn a_planted_symlink_leads_nowhere_outside_the_layer() {
        require_root();
        let d = Dirs::new("symlink");
        let layer = tar(|b| {
            // An absolute link and a relative one, both aiming above the layer...
            entry(b, S, "abs", 0o777, b"", Some("/"));
            entry(b, S, "rel", 0o777, b"", Some("../../.."));
            // ...then entries through them, and a file replacing a link.
            entry(b, F, "abs/p1", 0o644, b"x", None);
            entry(b, F, "rel/p2", 0o644, b"x", None);
            entry(b, S, "swap", 0o777, b"", Some("../outside/swapped"));
            entry(b, F, "swap", 0o644, b"replaced", None);
        });
        unpack(&layer[..], &d.layer(), &[], Limits::default()).unwrap();
        assert_eq!(std::fs::read_dir(d.outside()).unwrap().count(), 0);
        // Resolved inside the layer, as the container will see them.
        assert!(d.layer().join("p1").is_file());
        assert!(d.layer().join("p2").is_file());
        assert_eq!(std::fs::read(d.layer().join("swap")).unwrap(), b"replaced");
    }

    #[test]
    fn an_entry_through_a_link_to_a_host_directory_fails_without_writing_there() {
        require_root();
        let d = Dirs::new("hostlink");
        let outside = d.outside();
        let layer = tar(|b| {
            entry(b, S, "link", 0o777, b"", Some(outside.to_str().unwrap()));
            entry(b, F, "link/pwned", 0o644, b"x", None);
        });
        assert!(unpack(&layer[..], &d.layer(), &[], Limits::default()).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn hard_links_stay_inside_and_never_to_directories() {
        require_root();
        let d = Dirs::new("hardlink");
        let layer = tar(|b| entry(b, H, "passwd", 0o644, b"", Some("../../../../etc/passwd")));
        assert!(matches!(
            unpack(&layer[..], &d.layer(), &[], Limits::default()),
            Err(UnpackError::Escapes(_))
        ));
        let d = Dirs::new("hardlink-dir");
        let layer = tar(|b| {
            entry(b, D, "dir/", 0o755, b"", None);
            entry(b, H, "link", 0o644, b"", Some("dir"));
        });
        assert!(matches!(
            unpack(&layer[..], &d.layer(), &[], Limits::default()),
            Err(UnpackError::Entry { .. })
        ));
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        require_root();
        let d = Dirs::new("whiteout");
        let layer = tar(|b| {
            entry(b, D, "etc/", 0o755, b"", None);
            entry(b, F, "etc/.wh.old.conf", 0o644, b"", None);
            entry(b, D, "var/cache/", 0o755, b"", None);
            entry(b, F, "var/cache/.wh..wh..opq", 0o644, b"", None);
        });
        unpack(&layer[..], &d.layer(), &[], Limits::default()).unwrap();
        let w = std::fs::symlink_metadata(d.layer().join("etc/old.conf")).unwrap();
        assert!(
            w.file_type().is_char_device() && w.rdev() == 0,
            "a 0:0 character device"
        );
        assert!(
            !d.layer().join("etc/.wh.old.conf").exists(),
            ".wh. files never materialise"
        );
        let mut value = [0u8; 4];
        let path = CString::new(d.layer().join("var/cache").as_os_str().as_bytes()).unwrap();
        let name = CString::new("trusted.overlay.opaque").unwrap();
        // SAFETY: getxattr into a local buffer.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(value[0], b'y');
    }

    #[test]
    fn implicit_parents_take_the_lower_layers_attributes() {
        require_root();
        let d = Dirs::new("implicit");
        let lower = d.base.join("lower");
        std::fs::create_dir(lower.join("tmp")).unwrap();
        std::fs::set_permissions(lower.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let layer = tar(|b| entry(b, F, "tmp/x", 0o644, b"x", None));
        unpack(&layer[..], &d.layer(), &[lower], Limits::default()).unwrap();
        let tmp = std::fs::metadata(d.layer().join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn limits_are_enforced() {
        require_root();
        let d = Dirs::new("limits");
        let layer = tar(|b| {
            for i in 0..5 {
                entry(b, F, &format!("f{i}"), 0o644, b"0123456789", None);
            }
        });
        let few = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        assert!(matches!(
            unpack(&layer[..], &d.layer(), &[], few),
            Err(UnpackError::TooManyEntries(3))
        ));
        let small = Limits {
            max_bytes: 25,
            ..Limits::default()
        };
        let d = Dirs::new("limits-bytes");
        assert!(matches!(
            unpack(&layer[..], &d.layer(), &[], small),
            Err(UnpackError::TooLarge(25))
        ));
        let tight = Limits {
            max_stream: 2048,
            ..Limits::default()
        };
        let d = Dirs::new("limits-stream");
        assert!(matches!(
            unpack(&layer[..], &d.layer(), &[], tight),
            Err(UnpackError::Expands(2048))
        ));
        // Exactly the stream's length passes.
        let exact = Limits {
            max_stream: layer.len() as u64,
            ..Limits::default()
        };
        let d = Dirs::new("limits-exact");
        unpack(&layer[..], &d.layer(), &[], exact).unwrap();
    }

    #[test]
    fn only_bounded_zero_padding_may_follow_the_end() {
        require_root();
        let layer = tar(|b| entry(b, F, "f", 0o644, b"x", None));
        let mut padded = layer.clone();
        padded.extend(vec![0u8; 10 << 10]);
        let d = Dirs::new("tail-ok");
        unpack(&padded[..], &d.layer(), &[], Limits::default()).unwrap();
        let mut hidden = layer.clone();
        hidden.extend(b"a second archive");
        let d = Dirs::new("tail-data");
        assert!(matches!(
            unpack(&hidden[..], &d.layer(), &[], Limits::default()),
            Err(UnpackError::Trailing(_))
        ));
        let mut long = layer;
        long.extend(vec![0u8; 2 << 20]);
        let d = Dirs::new("tail-long");
        assert!(matches!(
            unpack(&long[..], &d.layer(), &[], Limits::default()),
            Err(UnpackError::Trailing(_))
        ));
    }

    #[test]
    fn long_link_targets_are_kept_whole() {
        require_root();
        let d = Dirs::new("longlink");
        let dir = "d/".repeat(80);
        let target = format!("{dir}file");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(F);
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, &target, &b"hi"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(S);
        b.append_link(&mut h, "sym", &target).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(H);
        b.append_link(&mut h, "hard", &target).unwrap();
        let layer = b.into_inner().unwrap();
        unpack(&layer[..], &d.layer(), &[], Limits::default()).unwrap();
        assert_eq!(
            std::fs::read_link(d.layer().join("sym")).unwrap(),
            Path::new(&target)
        );
        assert_eq!(std::fs::read(d.layer().join("hard")).unwrap(), b"hi");
    }
}
