//! Precompiled components on disk (`$WPOD_ROOT/cache`), so a sidecar starts without compiling.
//!
//! An entry is named by the sha256 of the component and of the engine's compilation settings
//! (and wpod's version), so a component compiled for another configuration is never loaded.
//! An entry is native code that wasmtime maps and runs without checking it (its deserialize is
//! `unsafe` for that reason), so each entry carries a MAC: keyed BLAKE3 over its name and its
//! bytes, with a key only wpod reads (`cache/mac.key`, 0600, made on first use), checked before
//! wasmtime sees the file. A damaged entry, an entry written by anything else, or two entries
//! swapped under each other's names are recompiled, never executed. (A checksum was not
//! enough: a sidecar that could write the cache once swapped two entries with their checksums,
//! and the next pod ran the other component's code. BLAKE3 runs at several GB/s; a software
//! sha256 of a ~0.6 MiB entry took longer than the rest of a warm start.) Entries are written
//! to a temporary file and renamed into place.
//!
//! The component itself is hashed once, with sha256: its digest names the entry, and for a
//! pulled sidecar it must equal the digest that was reviewed.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::oci::store::Digest;
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The message includes the OS error: no source, so the chain says it once.
    #[error("cannot read Wasm component: {0}")]
    Read(crate::files::ReadError),
    #[error("cannot compile Wasm component {}: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error(
        "Wasm component {} is {actual}, not the {expected} that was pulled and reviewed: the \
         store was altered; pull the sidecar again",
        path.display()
    )]
    Altered {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "Wasm component {} changed while wpod was loading it; run or apply the pod again",
        path.display()
    )]
    Changed { path: PathBuf },
}

/// Where compiled components are kept.
pub fn dir() -> PathBuf {
    crate::files::cache_dir()
}

/// Compiles `path` (or takes it from the cache) into `dir`, an empty directory, as an entry
/// of its own under a new MAC key (the cache's key is this host's secret and never leaves
/// it): what a runner image ships as its precompiled code.
pub fn precompile_into(engine: &Engine, path: &Path, dir: &Path) -> Result<(), CacheError> {
    let located = locate(engine, path, None)?;
    let (component, _) = located.load(engine)?;
    let name = located
        .entry
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("component.cwasm"));
    store_entry(&component, &dir.join(name)).map_err(|e| CacheError::Compile {
        path: path.to_path_buf(),
        message: format!("cannot write its compiled code into {}: {e}", dir.display()),
    })
}

/// Where entries compiled ahead of time may be found, read-only, before the cache: a runner
/// image's (`wpod sidecar run --precompiled`), built with its component so that the container
/// starts without compiling. Set once, by that command alone.
static PRECOMPILED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Look for entries in `dir` first, for the rest of the process.
pub fn use_precompiled(dir: &Path) {
    let _ = PRECOMPILED.set(dir.to_path_buf());
}

/// `name`'s entry among the precompiled ones, if it is there. Its MAC is checked as any
/// entry's, under the key beside it; one that does not load (another CPU's code) is compiled
/// again into the cache.
fn precompiled(name: &str) -> Option<PathBuf> {
    let entry = PRECOMPILED.get()?.join(name);
    (entry.is_file() && mac_path(&entry).is_file()).then_some(entry)
}

/// How a component was obtained, for benchmarks and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

/// A component hashed, with the cache entry its digest names.
pub struct Located {
    path: PathBuf,
    /// The identity the file had when it was hashed (or when its known digest was found), and
    /// a time taken before it (see `files::Remembered::put`).
    pub identity: (crate::files::FileId, std::time::SystemTime),
    /// Its bytes, when they were read to hash them (else read only to compile them).
    wasm: Option<Vec<u8>>,
    size: u64,
    /// `sha256:<hex>` of the component's bytes: what `wpod apply` compares to tell a rebuilt
    /// component.
    pub digest: String,
    /// The digest it was pulled and reviewed at, if it was.
    expected: Option<String>,
    entry: PathBuf,
}

/// Hashes `path`, or finds its digest known (the file unchanged since this process, or one
/// before it, read it: see `component::read_file`); its bytes are then read only if they must
/// be compiled. A component pulled and reviewed at `expected` must still be those bytes:
/// checked here, before anything is compiled or loaded.
pub fn locate(
    engine: &Engine,
    path: &Path,
    expected: Option<&Digest>,
) -> Result<Located, CacheError> {
    let seen = std::time::SystemTime::now();
    let (identity, wasm, sha, size) = match crate::component::known(path) {
        Some((id, file)) => ((id, seen), None, file.sha256, file.size),
        None => {
            let (wasm, id, seen) =
                crate::files::read_regular_identified(path, crate::files::MAX_COMPONENT_BYTES)?;
            let (size, sha) = (wasm.len() as u64, crate::component::sha256(&wasm));
            ((id, seen), Some(wasm), sha, size)
        }
    };
    let digest = format!("sha256:{}", hex::encode(sha));
    if let Some(expected) = expected {
        if digest != expected.as_str() {
            return Err(CacheError::Altered {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }
    let name = format!("{}.cwasm", key(engine, &sha));
    let entry = precompiled(&name).unwrap_or_else(|| dir().join(&name));
    Ok(Located {
        path: path.to_path_buf(),
        identity,
        wasm,
        size,
        digest,
        expected: expected.map(|d| d.to_string()),
        entry,
    })
}

impl Located {
    /// The component's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether a compiled entry exists (loading it may still find it damaged and recompile).
    pub fn is_cached(&self) -> bool {
        self.entry.is_file() && mac_path(&self.entry).is_file()
    }

    /// The compiled component from its cache entry, if the entry is there and sound; nothing
    /// is compiled.
    pub fn load_cached(&self, engine: &Engine) -> Option<Component> {
        load_entry(engine, &self.entry)
    }

    /// The compiled component: from the cache when its entry is sound, else compiled now and
    /// cached.
    pub fn load(&self, engine: &Engine) -> Result<(Component, Source), CacheError> {
        if let Some(component) = load_entry(engine, &self.entry) {
            return Ok((component, Source::Cache));
        }
        let read;
        let wasm = match &self.wasm {
            Some(wasm) => wasm,
            None => {
                read = crate::files::read_regular(&self.path, crate::files::MAX_COMPONENT_BYTES)?;
                // What is compiled must be what the entry's name says (and, for a pulled
                // sidecar, what was reviewed).
                let digest = crate::component::sha256_digest(&read);
                if digest != self.digest {
                    return Err(match &self.expected {
                        Some(expected) => CacheError::Altered {
                            path: self.path.clone(),
                            expected: expected.clone(),
                            actual: digest,
                        },
                        None => CacheError::Changed {
                            path: self.path.clone(),
                        },
                    });
                }
                &read
            }
        };
        let component = Component::new(engine, wasm).map_err(|e| CacheError::Compile {
            path: self.path.clone(),
            message: format!("{e:#}"),
        })?;
        // Into the cache, even when the entry that did not load was a precompiled one.
        let entry = match self.entry.file_name() {
            Some(name) if !self.entry.starts_with(dir()) => dir().join(name),
            _ => self.entry.clone(),
        };
        if let Err(e) = store_entry(&component, &entry) {
            tracing::warn!(entry = %entry.display(), error = %e, "cannot cache the compiled component");
        }
        Ok((component, Source::Compiled))
    }
}

/// The entry's name: sha256 over the component's sha256 (for a pulled sidecar, its layer
/// digest), the engine's compatibility hash and wpod's version.
fn key(engine: &Engine, wasm_sha256: &[u8]) -> String {
    let mut sha = ShaHasher(Sha256::new());
    sha.0.update(wasm_sha256);
    // Fed into sha256 itself, not through `DefaultHasher`, whose output Rust may change.
    engine.precompile_compatibility_hash().hash(&mut sha);
    sha.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(sha.0.finalize())
}

/// A `Hasher` that feeds sha256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// The file beside an entry holding its length and MAC.
fn mac_path(entry: &Path) -> PathBuf {
    entry.with_extension("mac")
}

/// `LENGTH MAC` of an entry: keyed BLAKE3 over the entry's file name and its bytes, so an
/// entry is only ever valid under its own name.
fn mac(key: &[u8; 32], entry: &Path, bytes: &[u8]) -> String {
    let name = entry
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name);
    hasher.update(bytes);
    format!("{} {}", bytes.len(), hasher.finalize().to_hex())
}

/// The entries whose MAC this process checked: by name and identity (a renamed or rewritten
/// file is checked again), so a pod's supervisor reads and hashes an entry once, not at every
/// `wpod apply` that starts its component again.
static CHECKED: crate::files::Remembered<PathBuf> = crate::files::Remembered::new();

fn load_entry(engine: &Engine, entry: &Path) -> Option<Component> {
    // One open file for the check (or the identity of the file checked before under this
    // name) and the mapping, so what is mapped is what was checked.
    let seen = std::time::SystemTime::now();
    let (file, meta) = match crate::files::open_own(entry) {
        Ok(opened) => opened,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cache entry refused; recompiling");
            return None;
        }
    };
    let id = crate::files::FileId::of(&meta);
    if CHECKED.get(id).as_deref() != Some(entry) {
        let records = crate::records::Records::in_dir(entry.parent()?).ok()?;
        if records.recall(ENTRY_CHECKED, entry, id).is_none() {
            check_mac(records.key(), &file, id.size(), entry)?;
            records.record(ENTRY_CHECKED, entry, id, seen, "");
        }
        CHECKED.put(id, seen, entry.to_path_buf());
    }
    let checked = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ));
    // Mapped from the file rather than copied: the compiled code and the initial memory images
    // are then pages of the page cache, shared by every wpod process that runs this component
    // (not a private copy per process), and the first instantiation need not build a memfd.
    // SAFETY: the file holds exactly what `store_entry` wrote from `Component::serialize` of
    // an engine with this configuration: its MAC, under wpod's key and this entry's name, says
    // so (checked when this process first opened this file under this name), and the key says
    // this name is for this component and configuration; wasmtime checks its own header and
    // settings again. Entries are only ever replaced by rename, never rewritten in place, so
    // the mapped file does not change under the mapping (the directory is root's alone).
    match unsafe { Component::deserialize_file(engine, &checked) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                entry = %entry.display(),
                error = %e,
                "cannot load cache entry; recompiling"
            );
            None
        }
    }
}

/// Whether `file`, opened from `entry`, carries wpod's MAC under the entry's name (logged when
/// it does not).
fn check_mac(key: &[u8; 32], file: &std::fs::File, size: u64, entry: &Path) -> Option<()> {
    let expected = crate::files::read_regular(&mac_path(entry), MAX_MAC_FILE).ok()?;
    let expected = String::from_utf8(expected).ok()?;
    let mapped = Mapped::of(file, size).ok()?;
    // Compared as BLAKE3 hashes compare: in constant time.
    let sound = match (
        mac(key, entry, mapped.bytes()).split_once(' '),
        expected.trim().split_once(' '),
    ) {
        (Some((len, ours)), Some((their_len, theirs))) => {
            let parse = |h: &str| blake3::Hash::from_hex(h).ok();
            len == their_len && parse(ours).is_some() && parse(ours) == parse(theirs)
        }
        _ => false,
    };
    if !sound {
        tracing::warn!(entry = %entry.display(), "cache entry does not carry wpod's MAC; recompiling");
        return None;
    }
    Some(())
}

/// The kind of record (`records`) that says an entry carried its MAC: the next wpod process
/// maps the same file under the same name without hashing it. Each pod has a supervisor of
/// its own: hashing a Python sidecar's 36 MB entry took 13 ms of every start.
const ENTRY_CHECKED: &str = "entry-checked";

/// A file's bytes, mapped read-only. An entry is hashed from its pages in the page cache, the
/// pages `deserialize_file` then maps: a copy on the heap (the entry's size in fresh pages,
/// 0.7 MB for a small component) cost each pod's start its page faults and left malloc's
/// thresholds raised for the pod's life.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// The first `size` bytes of `file` (its size when it was opened: what its identity says).
    fn of(file: &std::fs::File, size: u64) -> std::io::Result<Mapped> {
        let len = usize::try_from(size).map_err(std::io::Error::other)?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: a new private read-only mapping of an open file; nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` readable bytes are mapped at `ptr` until `drop`. The file is a cache
        // entry that only wpod or root can write (`files::open_own`), only ever replaced by
        // rename, never rewritten or truncated in place (what `deserialize_file` relies on too),
        // so the bytes do not change under us.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmaps exactly the mapping made in `of`; `bytes` borrows end before this.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

fn store_entry(component: &Component, entry: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = entry.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let key = crate::records::key(dir)?;
    // Each a new file renamed into place (never written through a symlink or into a file
    // someone made there first), the MAC first.
    crate::files::replace_with_new(&mac_path(entry), mac(&key, entry, &bytes).as_bytes(), 0o644)?;
    crate::files::replace_with_new(entry, &bytes, 0o644)
}

/// The largest MAC file read: `LENGTH MAC` is under 90 bytes.
const MAX_MAC_FILE: u64 = 256;

impl From<crate::files::ReadError> for CacheError {
    fn from(e: crate::files::ReadError) -> Self {
        CacheError::Read(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries swapped under each other's names: each refused.
    fn assert_neither_loads(engine: &Engine, a: &Path, b: &Path, what: &str) {
        assert!(load_entry(engine, a).is_none(), "b's {what} under a's name");
        assert!(load_entry(engine, b).is_none(), "a's {what} under b's name");
    }

    /// Two sound entries, `a.cwasm` and `b.cwasm` in `dir`, of two components whose compiled
    /// code differs (a custom section alone compiles to the same entry bytes).
    fn two_entries(engine: &Engine, dir: &Path) -> (Component, PathBuf, PathBuf) {
        let one = Component::new(engine, wasm_encoder::Component::new().finish()).unwrap();
        let mut two = wasm_encoder::Component::new();
        two.section(&wasm_encoder::ModuleSection(&wasm_encoder::Module::new()));
        let two = Component::new(engine, two.finish()).unwrap();
        let (a, b) = (dir.join("a.cwasm"), dir.join("b.cwasm"));
        store_entry(&one, &a).unwrap();
        store_entry(&two, &b).unwrap();
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        (one, a, b)
    }

    /// Swaps the two entries' files, each with its MAC file.
    fn swap(a: &Path, b: &Path) {
        for ext in ["cwasm", "mac"] {
            let (pa, pb) = (a.with_extension(ext), b.with_extension(ext));
            let tmp = pa.with_extension("swap");
            std::fs::rename(&pa, &tmp).unwrap();
            std::fs::rename(&pb, &pa).unwrap();
            std::fs::rename(&tmp, &pb).unwrap();
        }
    }

    #[test]
    fn keys_differ_by_content_and_engine_settings() {
        let a = Engine::default();
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let b = Engine::new(&cfg).unwrap();
        assert_ne!(key(&a, b"one"), key(&a, b"two"));
        assert_ne!(key(&a, b"one"), key(&b, b"one"));
        assert_eq!(key(&a, b"one"), key(&a, b"one"));
    }

    #[test]
    fn loading_from_the_cache_alone_compiles_nothing() {
        let dir = wpod_test_support::TempDir::new("cache-only");
        let engine = Engine::default();
        let bytes = wasm_encoder::Component::new().finish();
        let path = dir.join("c.wasm");
        std::fs::write(&path, &bytes).unwrap();
        let entry = dir.join("e.cwasm");
        let located = Located {
            identity: (
                crate::files::FileId::of_path(&path).unwrap(),
                std::time::SystemTime::now(),
            ),
            size: bytes.len() as u64,
            digest: crate::component::sha256_digest(&bytes),
            wasm: Some(bytes),
            path,
            expected: None,
            entry: entry.clone(),
        };
        assert!(located.load_cached(&engine).is_none(), "no entry");
        assert!(!entry.exists(), "compiled and stored");
        let component = Component::new(&engine, located.wasm.as_deref().unwrap()).unwrap();
        store_entry(&component, &entry).unwrap();
        assert!(located.load_cached(&engine).is_some(), "a sound entry");
        // A damaged entry is refused, and left as it is (`load` would compile and replace it).
        let mut damaged = std::fs::read(&entry).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&entry, &damaged).unwrap();
        assert!(located.load_cached(&engine).is_none(), "a damaged entry");
        assert_eq!(std::fs::read(&entry).unwrap(), damaged);
        drop(component);
    }

    #[test]
    fn a_damaged_entry_is_not_loaded() {
        let dir = wpod_test_support::TempDir::new("cache-test");
        let engine = Engine::default();
        let component = Component::new(&engine, wasm_encoder::Component::new().finish()).unwrap();
        let entry = dir.join("e.cwasm");
        store_entry(&component, &entry).unwrap();
        assert!(load_entry(&engine, &entry).is_some());
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(load_entry(&engine, &entry).is_none(), "a flipped bit");
        bytes.truncate(last);
        std::fs::write(&entry, &bytes).unwrap();
        assert!(load_entry(&engine, &entry).is_none(), "a truncated entry");
    }

    /// An entry anyone but wpod could write, or could have, is not loaded (a check would not
    /// hold past it); an entry is stored as new files, never through a symlink.
    #[test]
    fn entries_are_wpods_own_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = wpod_test_support::TempDir::new("cache-own");
        let engine = Engine::default();
        let (one, a, _) = two_entries(&engine, &dir);
        assert!(load_entry(&engine, &a).is_some());
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(load_entry(&engine, &a).is_none(), "writable by anyone");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other = dir.join("elsewhere");
        std::fs::hard_link(&a, &other).unwrap();
        assert!(load_entry(&engine, &a).is_none(), "linked elsewhere too");
        std::fs::remove_file(&other).unwrap();
        assert!(load_entry(&engine, &a).is_some());
        // Written as a new file: a symlink in its place is not followed.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let aside = dir.join("c.cwasm.tmp");
        std::os::unix::fs::symlink(&victim, &aside).unwrap();
        assert!(crate::files::write_new(&aside, b"x", 0o644).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // And stored under a name of its own each time (none to plant ahead).
        store_entry(&one, &dir.join("c.cwasm")).unwrap();
        assert!(load_entry(&engine, &dir.join("c.cwasm")).is_some());
    }

    /// A settled entry's check is recorded for the next process by the load (`records`), and
    /// the record says nothing of the entry rewritten in place: damaged, it is refused.
    #[test]
    fn a_load_records_its_check_for_that_file_alone() {
        let dir = wpod_test_support::TempDir::new("cache-record");
        let engine = Engine::default();
        let (_, a, _) = two_entries(&engine, &dir);
        let records = crate::records::Records::in_dir(&dir).unwrap();
        let id = |p: &Path| crate::files::FileId::of_path(p).unwrap();
        assert!(load_entry(&engine, &a).is_some());
        assert_eq!(
            records.recall(ENTRY_CHECKED, &a, id(&a)),
            None,
            "recorded before it settled"
        );
        std::thread::sleep(crate::files::SETTLE + std::time::Duration::from_millis(100));
        assert!(load_entry(&engine, &a).is_some());
        assert!(
            records.recall(ENTRY_CHECKED, &a, id(&a)).is_some(),
            "not recorded by the load"
        );
        let mut bytes = std::fs::read(&a).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&a, &bytes).unwrap();
        assert_eq!(records.recall(ENTRY_CHECKED, &a, id(&a)), None);
        assert!(
            load_entry(&engine, &a).is_none(),
            "a damaged recorded entry"
        );
    }

    /// Two sound entries swapped, each with its MAC file (what a sidecar that could write the
    /// cache did): neither loads under the other's name.
    #[test]
    fn swapped_entries_are_not_loaded() {
        let dir = wpod_test_support::TempDir::new("cache-swap");
        let engine = Engine::default();
        let (one, a, b) = two_entries(&engine, &dir);
        assert!(load_entry(&engine, &a).is_some() && load_entry(&engine, &b).is_some());
        swap(&a, &b);
        assert_neither_loads(&engine, &a, &b, "entry");
        // An entry whose MAC was computed with another key (written by anything but wpod).
        store_entry(&one, &a).unwrap();
        std::fs::write(
            a.with_extension("mac"),
            mac(&[7; 32], &a, &std::fs::read(&a).unwrap()),
        )
        .unwrap();
        assert!(load_entry(&engine, &a).is_none(), "a MAC under another key");
    }

    /// An entry whose MAC this process checked is not checked again while it is the same file
    /// under the same name; swapped or rewritten, it is, and refused.
    #[test]
    fn a_checked_entry_is_checked_again_once_swapped_or_rewritten() {
        let dir = wpod_test_support::TempDir::new("cache-checked");
        let engine = Engine::default();
        let (one, a, b) = two_entries(&engine, &dir);
        // Only settled files are remembered.
        std::thread::sleep(crate::files::SETTLE + std::time::Duration::from_millis(200));
        let id = |p: &Path| crate::files::FileId::of_path(p).unwrap();
        assert!(load_entry(&engine, &a).is_some() && load_entry(&engine, &b).is_some());
        assert_eq!(CHECKED.get(id(&a)), Some(a.clone()), "a's check remembered");
        // b's checked file reached under a's name through a symlink (b's times unchanged), a's
        // MAC file kept: remembered is b's check under b's name, so a's is made, and fails.
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        assert_eq!(
            CHECKED.get(id(&a)),
            Some(b.clone()),
            "b's file, checked as b"
        );
        assert!(
            load_entry(&engine, &a).is_none(),
            "b's checked entry through a's name"
        );
        std::fs::remove_file(&a).unwrap();
        store_entry(&one, &a).unwrap();
        swap(&a, &b);
        assert_neither_loads(&engine, &a, &b, "checked entry");
        // Back under their own names, then one damaged in place.
        store_entry(&one, &a).unwrap();
        std::thread::sleep(crate::files::SETTLE + std::time::Duration::from_millis(200));
        assert!(load_entry(&engine, &a).is_some());
        let mut bytes = std::fs::read(&a).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&a, &bytes).unwrap();
        assert!(
            load_entry(&engine, &a).is_none(),
            "a flipped bit in a checked entry"
        );
    }
}
