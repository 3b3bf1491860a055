//! Precompiled components on disk (`$WPOD_ROOT/cache`), so a sidecar starts without compiling.
//!
//! An entry is named by the sha256 of the component and of the engine's compilation settings
//! (and wpod's version), so a component compiled for another configuration is never loaded.
//! Each entry carries the sha256 of its own bytes, checked before wasmtime deserializes them:
//! a truncated or tampered entry is recompiled, never executed. Entries are written to a
//! temporary file and renamed into place.

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

/// Loads `path` as a component, from the cache when a valid entry exists. A component pulled
/// and reviewed at `expected` must still be those bytes: checked with the hash the cache key
/// takes anyway, before anything is compiled or loaded. Also returns that hash
/// (`sha256:<hex>`): what `wpod apply` compares to tell a rebuilt component.
pub fn load(
    engine: &Engine,
    path: &Path,
    expected: Option<&Digest>,
) -> Result<(Component, Source, String), CacheError> {
    let wasm = crate::files::read_regular(path, crate::files::MAX_COMPONENT_BYTES)?;
    let digest = Sha256::digest(&wasm);
    let actual = format!("sha256:{}", hex::encode(digest));
    if let Some(expected) = expected {
        if actual != expected.as_str() {
            return Err(CacheError::Altered {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual: actual.clone(),
            });
        }
    }
    let entry = dir().join(format!("{}.cwasm", key(engine, &digest)));
    if let Some(component) = load_entry(engine, &entry) {
        return Ok((component, Source::Cache, actual));
    }
    let component = Component::new(engine, &wasm).map_err(|e| CacheError::Compile {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    if let Err(e) = store_entry(&component, &entry) {
        tracing::warn!(entry = %entry.display(), error = %e, "cannot cache the compiled component");
    }
    Ok((component, Source::Compiled, actual))
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

fn digest_path(entry: &Path) -> PathBuf {
    entry.with_extension("sha256")
}

fn load_entry(engine: &Engine, entry: &Path) -> Option<Component> {
    let bytes = std::fs::read(entry).ok()?;
    let expected = std::fs::read_to_string(digest_path(entry)).ok()?;
    if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
        tracing::warn!(entry = %entry.display(), "cache entry does not match its digest; recompiling");
        return None;
    }
    // SAFETY: the bytes are exactly what `store_entry` wrote from `Component::serialize` of an
    // engine with this configuration (the digest and the key prove it); wasmtime checks its
    // own header and settings again.
    match unsafe { Component::deserialize(engine, &bytes) } {
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
    std::fs::write(digest_path(entry), hex::encode(Sha256::digest(&bytes)))?;
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
}
