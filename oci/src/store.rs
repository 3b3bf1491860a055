//! The content store under `$WPOD_ROOT/images/` (containerd's layout, by digest):
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs, compressed layers: verified, immutable
//! ingest/                downloads in progress: unnamed files (O_TMPFILE) linked into blobs/
//!                        only once verified, so a killed download leaves nothing
//! layers/<chain-id>/     each layer unpacked once, in overlayfs' format, shared by every image,
//!                        container and pod that uses it (keyed by ChainID: a layer's content
//!                        depends on the layers below it)
//! pins/<pid>-<random>    what a pull in progress uses (blobs, layers), kept from prune while
//!                        its owner holds the file's lock
//! images.json            image name -> manifest digest, config, layers, size, last use
//! lock                   held while the store is changed (unpacking, recording, removals)
//! ```
//!
//! No lock is held across the network: a pull downloads and verifies its blobs unlocked (a
//! verified blob is content-addressed: linking it in twice is harmless), pinned so that no
//! prune removes them meanwhile, and takes the lock only to unpack and record. A slow registry
//! once held the lock for as long as it liked, and every other pull, `rmi` and `prune` waited.
//! A pull that is killed leaves at most a `layers/.tmp-*` directory, which nothing trusts and
//! the next pull clears.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a sha256 digest (sha256:<64 hex digits>)")]
    BadDigest(String),
    #[error("content of {expected} does not match its digest (got {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("{}: {source}", path.display())]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Root(#[from] crate::files::StateRootError),
}

fn io<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// A checked `sha256:<hex>` digest: safe to use in a path (the CVE-2024-3727 class).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| StoreError::BadDigest(s.to_string()))?;
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(StoreError::BadDigest(s.to_string()))
        }
    }

    pub fn of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ChainID of a layer over `parent`: `sha256(parent + " " + diff_id)` (OCI image spec).
    pub fn chain(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{} {}", p.0, diff_id.0).as_bytes()),
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store knows about one image name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// `docker.io/library/nginx:latest` (or `...@sha256:...`).
    pub name: String,
    /// The manifest's digest at the registry (what a tag resolved to: for a multi-platform
    /// image, its index), the digest signatures and approvals name.
    pub digest: Digest,
    /// The (platform) manifest blob, stored as the registry served it (by which prune finds
    /// the layer blobs).
    pub manifest: Digest,
    pub config: Digest,
    /// ChainIDs of its layers, bottom first.
    pub layers: Vec<Digest>,
    /// Compressed bytes of its layers.
    pub size: u64,
    /// Seconds since the epoch.
    pub last_used: u64,
    /// A Wasm sidecar rather than a container image (`layers` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarRecord>,
    /// The key whose signature the trust policy accepted, when it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// What the store knows about a Wasm sidecar: its component's blob and what the component's
/// own bytes import and export (recomputed at pull, never taken from the config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarRecord {
    pub component: Digest,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// The file in a pod's state directory that lists the layers its containers run on.
pub const PINNED_LAYERS: &str = "image-layers";

/// Records in `pod_state` the layers of `images`, so that no prune removes them while the pod
/// runs (the state directory goes with the pod).
pub fn pin_layers<'a>(
    pod_state: &Path,
    images: impl IntoIterator<Item = &'a ImageRecord>,
) -> Result<(), StoreError> {
    let lines: Vec<String> = images
        .into_iter()
        .flat_map(|i| {
            i.layers
                .iter()
                .chain(i.sidecar.as_ref().map(|s| &s.component))
                .map(|d| d.to_string())
        })
        .collect();
    let path = pod_state.join(PINNED_LAYERS);
    std::fs::write(&path, lines.join("\n")).map_err(io("write", &path))
}

/// Adds the layers of `images` to what `pin_layers` recorded (a sidecar added to a running
/// pod).
pub fn pin_more_layers<'a>(
    pod_state: &Path,
    images: impl IntoIterator<Item = &'a ImageRecord>,
) -> Result<(), StoreError> {
    use std::io::Write;
    let path = pod_state.join(PINNED_LAYERS);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io("open", &path))?;
    for image in images {
        for d in image
            .layers
            .iter()
            .chain(image.sidecar.as_ref().map(|s| &s.component))
        {
            writeln!(file)
                .and_then(|()| write!(file, "{d}"))
                .map_err(io("write", &path))?;
        }
    }
    Ok(())
}

pub struct Store {
    root: PathBuf,
}

/// The store, locked for changes; unlocked when dropped.
pub struct Locked<'a> {
    pub store: &'a Store,
    _lock: File,
}

impl Store {
    /// The store of this wpod root (`$WPOD_ROOT/images`), created if missing.
    pub fn open() -> Result<Self, StoreError> {
        Self::at(crate::files::private_state_dir("images")?)
    }

    /// The store at `root`: it and everything in it root's alone (0700), so no local user
    /// reads an image or runs a setuid binary of one straight from its layers.
    pub fn at(root: PathBuf) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for d in ["", "blobs", "blobs/sha256", "ingest", "layers", "pins"] {
            let dir = root.join(d);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(io("create", &dir))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store's lock (waits for another pull or removal to finish).
    pub fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let path = self.root.join("lock");
        let file = crate::files::open_lock(&path).map_err(io("create", &path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Locked {
            store: self,
            _lock: file,
        })
    }

    /// A new download, hashed as it is written; no lock needed (see the module's comment).
    pub fn ingest(&self) -> Result<Ingest<'_>, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.root.join("ingest");
        // Unnamed: the kernel frees it with the process, however the process ends.
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let (file, path) = match unnamed {
            Ok(file) => (file, None),
            // A filesystem without O_TMPFILE: a named file, cleared by the next pull.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let path = dir.join(format!(
                    "{}-{}",
                    std::process::id(),
                    crate::files::random_hex(8)
                ));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("create", &path))?;
                // Held while the download lasts: `clear_leftovers` leaves it alone.
                // SAFETY: flock on a descriptor we own.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
                (file, Some(path))
            }
            Err(e) => return Err(io("create a file in", &dir)(e)),
        };
        Ok(Ingest {
            store: self,
            path,
            file,
            hash: Sha256::new(),
            size: 0,
        })
    }

    /// A pin for what one pull in progress uses: no prune removes it while the pin is held.
    pub fn pin(&self) -> Result<Pin, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.root.join("pins");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join(format!(
            "{}-{}",
            std::process::id(),
            crate::files::random_hex(8)
        ));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create", &path))?;
        // SAFETY: flock on a descriptor we own; held until the pin is dropped.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io("lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Pin { path, file })
    }

    /// What live pulls pin (a pin whose owner is gone is removed).
    fn pulls_pinned(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root.join("pins"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(file) = std::fs::File::open(e.path()) else {
                continue;
            };
            // SAFETY: flock on a descriptor we own; released when `file` closes.
            let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
            if free {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                out.extend(text.lines().map(str::to_string));
            }
        }
        out
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(io("read", &path))
    }

    pub fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_path(chain_id).is_dir()
    }

    /// Layers the pods of this wpod root run on (each pod's state directory lists them while
    /// it exists): never pruned under a running container.
    fn pinned_layers(&self) -> Vec<String> {
        let Some(pods) = self.root.parent().map(|r| r.join("pods")) else {
            return Vec::new();
        };
        std::fs::read_dir(pods)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pod| std::fs::read_to_string(pod.path().join(PINNED_LAYERS)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| Digest::parse(l.trim()).ok())
                    .map(|d| d.hex().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Index { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// The images stored, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.read_index()?.images.into_values().collect())
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self.read_index()?.images.remove(name))
    }
}

impl Locked<'_> {
    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.store.index_path();
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Index {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))
    }

    /// Records (or replaces) an image.
    pub fn record(&self, image: ImageRecord) -> Result<(), StoreError> {
        let mut index = self.store.read_index()?;
        index.images.insert(image.name.clone(), image);
        self.write_index(&index)
    }

    /// Removes an image's name; its content stays until [`Locked::prune`].
    pub fn forget(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let mut index = self.store.read_index()?;
        let gone = index.images.remove(name);
        self.write_index(&index)?;
        Ok(gone)
    }

    /// Removes what killed pulls left: named partial downloads of dead processes (on a
    /// filesystem without O_TMPFILE) and half-unpacked layers (unpacking holds the lock).
    pub fn clear_leftovers(&self) {
        for e in std::fs::read_dir(self.store.root.join("ingest"))
            .into_iter()
            .flatten()
            .flatten()
        {
            // A download in progress holds its file's lock; one nobody holds is a dead one's.
            let Ok(file) = std::fs::File::open(e.path()) else {
                continue;
            };
            // SAFETY: flock on a descriptor we own; released when `file` closes.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let layers = self.store.root.join("layers");
        for e in std::fs::read_dir(&layers).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                if let Err(err) = remove_tree(&e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove what a killed pull left");
                }
            }
        }
    }

    /// Stores `bytes` as the blob `digest` after checking them.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let mut ingest = self.store.ingest()?;
        ingest.write(bytes)?;
        ingest.commit(digest)
    }

    /// A staging directory for unpacking a layer; renamed into place by [`Locked::commit_layer`].
    pub fn layer_staging(&self) -> Result<PathBuf, StoreError> {
        let path = self.store.root.join("layers").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::files::random_hex(8)
        ));
        std::fs::create_dir(&path).map_err(io("create", &path))?;
        Ok(path)
    }

    pub fn commit_layer(&self, staging: &Path, chain_id: &Digest) -> Result<PathBuf, StoreError> {
        let dest = self.store.layer_path(chain_id);
        std::fs::rename(staging, &dest).map_err(io("store layer", &dest))?;
        Ok(dest)
    }

    /// Clears what killed pulls left, and removes blobs and layers no stored image uses (and
    /// that `keep` does not name: layers of running pods).
    pub fn prune(&self, keep: &[Digest]) -> Result<PruneReport, StoreError> {
        let index = self.store.read_index()?;
        let mut used: std::collections::BTreeSet<String> =
            keep.iter().map(|d| d.hex().to_string()).collect();
        used.extend(self.store.pinned_layers());
        used.extend(self.store.pulls_pinned());
        for image in index.images.values() {
            used.insert(image.manifest.hex().to_string());
            used.insert(image.config.hex().to_string());
            used.extend(image.layers.iter().map(|d| d.hex().to_string()));
            // The compressed layer blobs are named in the manifest.
            if let Ok(bytes) = self.store.read_blob(&image.manifest) {
                if let Ok(m) =
                    serde_json::from_slice::<oci_client::manifest::OciImageManifest>(&bytes)
                {
                    used.extend(
                        m.layers
                            .iter()
                            .filter_map(|l| Digest::parse(&l.digest).ok())
                            .map(|d| d.hex().to_string()),
                    );
                }
            }
        }
        let mut report = PruneReport::default();
        self.clear_leftovers();
        for (dir, is_layer) in [("blobs/sha256", false), ("layers", true)] {
            let dir = self.store.root.join(dir);
            for e in std::fs::read_dir(&dir).map_err(io("read", &dir))?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if used.contains(&name) {
                    continue;
                }
                let path = e.path();
                let bytes = du(&path);
                let removed = match is_layer {
                    true => remove_tree(&path),
                    false => std::fs::remove_file(&path),
                };
                match removed {
                    Ok(()) if is_layer => report.layers += 1,
                    Ok(()) => report.blobs += 1,
                    Err(e) => {
                        report.failed.push(format!("{}: {e}", path.display()));
                        continue;
                    }
                }
                report.bytes += bytes;
            }
        }
        Ok(report)
    }
}

/// What a prune removed, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: u64,
    pub layers: u64,
    pub bytes: u64,
    /// Each blob or layer that could not be removed, with why.
    pub failed: Vec<String>,
}

/// What one pull in progress uses, kept from prune (see [`Store::pin`]); dropped when the
/// pull ends, and worthless once its owner is gone (its lock then is free).
pub struct Pin {
    path: PathBuf,
    file: File,
}

impl Pin {
    /// Keeps `digest` (a blob's or a layer's ChainID) from prune.
    pub fn add(&mut self, digest: &Digest) -> Result<(), StoreError> {
        writeln!(self.file, "{}", digest.hex()).map_err(io("write", &self.path))
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A download in progress.
pub struct Ingest<'a> {
    store: &'a Store,
    /// Only on a filesystem without O_TMPFILE: the file's name.
    path: Option<PathBuf>,
    file: File,
    hash: Sha256,
    pub size: u64,
}

impl Ingest<'_> {
    fn where_(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| self.store.root.join("ingest"))
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        let at = self.where_();
        self.file.write_all(bytes).map_err(io("write", &at))
    }

    /// A reader of what was written so far (for checks before it is committed).
    pub fn reader(&self) -> Result<File, StoreError> {
        use std::io::Seek;
        let at = self.where_();
        let mut file = self.file.try_clone().map_err(io("read", &at))?;
        file.rewind().map_err(io("read", &at))?;
        Ok(file)
    }

    /// Checks the content against `digest` and puts it into the store under that name. Another
    /// pull that stored the same digest first wins: the content is the same.
    pub fn commit(mut self, digest: &Digest) -> Result<(), StoreError> {
        let actual = format!("sha256:{}", hex::encode(self.hash.clone().finalize()));
        if actual != digest.as_str() {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let at = self.where_();
        self.file.sync_all().map_err(io("sync", &at))?;
        let dest = self.store.blob_path(digest);
        let linked = match self.path.take() {
            Some(path) => std::fs::rename(&path, &dest),
            None => {
                // An unnamed file gets its name through /proc (AT_EMPTY_PATH would need
                // CAP_DAC_READ_SEARCH).
                let from =
                    std::ffi::CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
                        .map_err(|e| io("store blob", &dest)(std::io::Error::other(e)))?;
                let to = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
                    .map_err(|e| io("store blob", &dest)(std::io::Error::other(e)))?;
                // SAFETY: linkat with valid C strings.
                let rc = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        from.as_ptr(),
                        libc::AT_FDCWD,
                        to.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        };
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io("store blob", &dest)(e)),
        }
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        // Committed or unnamed: nothing to remove. A named file abandoned: nothing keeps half
        // a blob.
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bytes under `path`, not following symlinks (a walk by path, without recursion: a layer may be
/// thousands of directories deep).
pub fn du(path: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            total += meta.len();
        }
    }
    total
}

/// Removes a layer directory, however deep, never following a symlink. Layers may hold
/// read-only directories; as root wpod removes them anyway.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    crate::files::remove_tree(path, crate::files::OtherRoots::Remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(d.hex().len(), 64);
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(Digest::chain(None, &a), a);
        let ab = Digest::chain(Some(&a), &b);
        assert_eq!(ab, Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn blobs_are_verified_and_abandoned_downloads_leave_nothing() {
        let root = std::env::temp_dir().join(format!("wpod-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::at(root.clone()).unwrap();
        let locked = store.lock().unwrap();
        let good = Digest::of(b"content");
        locked.put_blob(&good, b"content").unwrap();
        assert!(store.has_blob(&good));
        assert!(matches!(
            locked.put_blob(&Digest::of(b"other"), b"content"),
            Err(StoreError::DigestMismatch { .. })
        ));
        {
            let mut half = store.ingest().unwrap();
            half.write(b"half a blo").unwrap();
        }
        assert_eq!(std::fs::read_dir(root.join("ingest")).unwrap().count(), 0);
        // A pin keeps a blob from prune while it is held.
        let mut pin = store.pin().unwrap();
        pin.add(&good).unwrap();
        assert_eq!(locked.prune(&[]).unwrap().blobs, 0, "a pinned blob is kept");
        drop(pin);
        let report = locked.prune(&[]).unwrap();
        assert_eq!(report.blobs, 1, "an unused blob is pruned");
        assert!(!store.has_blob(&good));
        drop(locked);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
