//! Each distinct component is loaded once per process: the containers that run the same file,
//! and every restart of them, share its compiled code and its pre-instantiation. The compiled
//! code is most of an idle sidecar's memory (each deserialized copy is ~0.6 MiB for a small
//! Rust guest), and loading it (read, hash, deserialize, link) is most of a warm start.
//!
//! A file is known by its identity: device, inode, size, and modification and change times. A
//! rebuilt or replaced file is another file and is loaded again, so `wpod apply` sees it. The
//! map holds its components weakly: one that no container uses any more is freed.
//!
//! A file changed within the clock tick it was read in could keep the same times (the kernel's
//! file timestamps are coarse). As git does with its index, a file that has not settled (see
//! `files::FileId::settled`) is loaded but not remembered.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::{cache, linker, SidecarError, SidecarState};
use crate::files::FileId;
use crate::grants;
use crate::oci::store::Digest;

/// A component compiled, linked and pre-instantiated, shared by every container that runs it.
pub struct LoadedComponent {
    pub(super) pre: CommandPre<SidecarState>,
    /// The sha256 of the component's bytes (`sha256:<hex>`).
    pub digest: String,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
    /// It imports `lifecycle.ready`: as a native sidecar it counts as started only once it
    /// calls it.
    pub signals_readiness: bool,
    /// It imports `lifecycle.next-event`: it can hear `stopping` (see
    /// `grants::lifecycle::hears_stopping`).
    pub hears_stopping: bool,
}

type Loaded = Mutex<HashMap<FileId, Weak<LoadedComponent>>>;

fn loaded() -> &'static Loaded {
    static LOADED: std::sync::OnceLock<Loaded> = std::sync::OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The component already loaded from this very file, if any.
fn remembered(id: FileId) -> Option<Arc<LoadedComponent>> {
    let map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&id).and_then(Weak::upgrade)
}

/// `id` is `None` unless the file had settled when it was read.
fn remember(id: Option<FileId>, component: &Arc<LoadedComponent>) {
    let Some(id) = id else {
        return;
    };
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, c| c.strong_count() > 0);
    map.insert(id, Arc::downgrade(component));
}

/// Where loading a component stands: done (this process had it already), or hashed (or its
/// digest known) with its compiled code still to load.
pub enum Loading {
    Done(Arc<LoadedComponent>),
    Located {
        id: Option<FileId>,
        located: Box<cache::Located>,
    },
}

impl Loading {
    /// The component's size in bytes; `None` when it was loaded already.
    pub fn size(&self) -> Option<u64> {
        match self {
            Loading::Done(_) => None,
            Loading::Located { located, .. } => Some(located.size()),
        }
    }

    /// Whether finishing needs no compilation (an entry of the cache, or already loaded).
    pub fn is_cached(&self) -> bool {
        match self {
            Loading::Done(_) => true,
            Loading::Located { located, .. } => located.is_cached(),
        }
    }

    /// Loads the compiled code, links and pre-instantiates it, and remembers the result.
    /// `container` is named in errors.
    pub fn finish(
        self,
        engine: &Engine,
        container: &str,
    ) -> Result<Arc<LoadedComponent>, SidecarError> {
        let (id, located) = match self {
            Loading::Done(c) => return Ok(c),
            Loading::Located { id, located } => (id, located),
        };
        let (component, source) = located.load(engine)?;
        link(id, &located, component, source, engine, container)
    }

    /// [`Loading::finish`] from the compiled cache alone: `None` when its entry is missing or
    /// does not load (nothing is compiled), or the component does not link.
    pub fn finish_from_cache(
        self,
        engine: &Engine,
        container: &str,
    ) -> Option<Arc<LoadedComponent>> {
        let (id, located) = match self {
            Loading::Done(c) => return Some(c),
            Loading::Located { id, located } => (id, located),
        };
        let component = located.load_cached(engine)?;
        link(
            id,
            &located,
            component,
            cache::Source::Cache,
            engine,
            container,
        )
        .ok()
    }
}

/// The compiled `component` of `located` linked, pre-instantiated and remembered (by `id`).
fn link(
    id: Option<FileId>,
    located: &cache::Located,
    component: wasmtime::component::Component,
    source: cache::Source,
    engine: &Engine,
    container: &str,
) -> Result<Arc<LoadedComponent>, SidecarError> {
    // The initial memory images now, not at the first start: this runs before the pod (or
    // beside the sandbox's creation), a start is what the pod waits for.
    if let Err(e) = component.initialize_copy_on_write_image() {
        tracing::debug!(container, error = %e, "no copy-on-write memory image");
    }
    let link_err = |message: String| SidecarError::Link {
        container: container.to_string(),
        message,
    };
    let linker = linker(engine).map_err(|e| link_err(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| link_err(format!("cannot link the component: {e:#}")))?;
    let pre = CommandPre::new(pre).map_err(|e| {
        link_err(format!(
            "not a command component (no wasi:cli/run export): {e:#}"
        ))
    })?;
    let loaded = Arc::new(LoadedComponent {
        pre,
        digest: located.digest.clone(),
        cached: source == cache::Source::Cache,
        signals_readiness: grants::lifecycle::signals_readiness(engine, &component),
        hears_stopping: grants::lifecycle::hears_stopping(engine, &component),
    });
    remember(id, &loaded);
    Ok(loaded)
}

/// The digest of the component this process loaded or read from this very file (same
/// identity), if any: what hashing the file again would give, without reading it.
pub fn known_digest(path: &Path) -> Option<String> {
    let id = FileId::of_path(path)?;
    remembered(id)
        .map(|c| c.digest.clone())
        .or_else(|| crate::component::known_by(id).map(|f| f.digest))
}

/// Starts loading `path`: nothing to do when this process has it already; else the file is
/// hashed, or its digest found known (and checked against `expected`, the digest a pulled
/// sidecar was reviewed at).
pub fn locate(
    engine: &Engine,
    path: &Path,
    expected: Option<&Digest>,
) -> Result<Loading, SidecarError> {
    if let Some(component) = FileId::of_path(path).and_then(remembered) {
        if let Some(expected) = expected {
            if component.digest != expected.as_str() {
                return Err(cache::CacheError::Altered {
                    path: path.to_path_buf(),
                    expected: expected.to_string(),
                    actual: component.digest.clone(),
                }
                .into());
            }
        }
        return Ok(Loading::Done(component));
    }
    let located = cache::locate(engine, path, expected)?;
    // The identity the digest was found under (taken before reading), kept only if the file
    // had settled by then: a change made while or after reading gives the file new times.
    let (id, seen) = located.identity;
    Ok(Loading::Located {
        id: Some(id).filter(|id| id.settled_at(seen)),
        located: Box::new(located),
    })
}

/// Loads `path` for `container` (see [`locate`] and [`Loading::finish`]).
pub fn load(
    engine: &Engine,
    path: &Path,
    expected: Option<&Digest>,
    container: &str,
) -> Result<Arc<LoadedComponent>, SidecarError> {
    locate(engine, path, expected)?.finish(engine, container)
}
