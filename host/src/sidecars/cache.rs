//! Precompiled components on disk (`$WPOD_ROOT/cache`), so a sidecar starts without compiling.
//!
//! An entry is named by the sha256 of the component and of the engine's compilation settings
//! (and wpod's version), so a component compiled for another configuration is never loaded.
//! Each entry carries its length and CRC-32, checked before wasmtime deserializes it: a
//! truncated or corrupted entry is recompiled, never executed. (A checksum, not a digest: the
//! cache directory is root's alone, and whoever could rewrite an entry could rewrite a digest
//! beside it too. CRC-32 runs at memory speed; a software sha256 of a ~0.6 MiB entry took
//! longer than the rest of a warm start.) Entries are written to a temporary file and renamed
//! into place.
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
}

/// Where compiled components are kept.
pub fn dir() -> PathBuf {
    crate::files::state_root().join("cache")
}

/// How a component was obtained, for benchmarks and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

/// A component read and hashed, with the cache entry its digest names.
pub struct Located {
    path: PathBuf,
    wasm: Vec<u8>,
    /// `sha256:<hex>` of the component's bytes: what `wpod apply` compares to tell a rebuilt
    /// component.
    pub digest: String,
    entry: PathBuf,
}

/// Reads and hashes `path`. A component pulled and reviewed at `expected` must still be those
/// bytes: checked here, before anything is compiled or loaded.
pub fn locate(
    engine: &Engine,
    path: &Path,
    expected: Option<&Digest>,
) -> Result<Located, CacheError> {
    let wasm = crate::files::read_regular(path, crate::files::MAX_COMPONENT_BYTES)?;
    let sha = Sha256::digest(&wasm);
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
    let entry = dir().join(format!("{}.cwasm", key(engine, &sha)));
    Ok(Located {
        path: path.to_path_buf(),
        wasm,
        digest,
        entry,
    })
}

impl Located {
    /// Whether a compiled entry exists (loading it may still find it damaged and recompile).
    pub fn is_cached(&self) -> bool {
        self.entry.is_file() && checksum_path(&self.entry).is_file()
    }

    /// The compiled component: from the cache when its entry is sound, else compiled now and
    /// cached.
    pub fn load(&self, engine: &Engine) -> Result<(Component, Source), CacheError> {
        if let Some(component) = load_entry(engine, &self.entry) {
            return Ok((component, Source::Cache));
        }
        let component = Component::new(engine, &self.wasm).map_err(|e| CacheError::Compile {
            path: self.path.clone(),
            message: format!("{e:#}"),
        })?;
        if let Err(e) = store_entry(&component, &self.entry) {
            tracing::warn!(entry = %self.entry.display(), error = %e, "cannot cache the compiled component");
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

/// The file beside an entry holding its length and CRC-32.
fn checksum_path(entry: &Path) -> PathBuf {
    entry.with_extension("crc32")
}

/// `LENGTH CRC32` of an entry's bytes, as its checksum file holds it.
fn checksum(bytes: &[u8]) -> String {
    format!("{} {:08x}", bytes.len(), crc32fast::hash(bytes))
}

fn load_entry(engine: &Engine, entry: &Path) -> Option<Component> {
    // One open file for the check and the mapping, so what is mapped is what was checked.
    let mut file = std::fs::File::open(entry).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
    let expected = std::fs::read_to_string(checksum_path(entry)).ok()?;
    if checksum(&bytes) != expected.trim() {
        tracing::warn!(entry = %entry.display(), "cache entry does not match its checksum; recompiling");
        return None;
    }
    drop(bytes);
    let checked = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ));
    // Mapped from the file rather than copied: the compiled code and the initial memory images
    // are then pages of the page cache, shared by every wpod process that runs this component
    // (not a private copy per process), and the first instantiation need not build a memfd.
    // SAFETY: the file holds exactly what `store_entry` wrote from `Component::serialize` of
    // an engine with this configuration (the checksum and the key say so); wasmtime checks its
    // own header and settings again. Entries are only ever replaced by rename, never rewritten
    // in place, so the mapped file does not change under the mapping (the directory is
    // root's alone).
    match unsafe { Component::deserialize_file(engine, &checked) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(entry = %entry.display(), error = %e, "cannot load cache entry; recompiling");
            None
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
    let tmp = entry.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::write(checksum_path(entry), checksum(&bytes))?;
    std::fs::rename(&tmp, entry)
}

impl From<crate::files::ReadError> for CacheError {
    fn from(e: crate::files::ReadError) -> Self {
        CacheError::Read(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_damaged_entry_is_not_loaded() {
        let dir = std::env::temp_dir().join(format!("wpod-cache-test-{}", std::process::id()));
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
