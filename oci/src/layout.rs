//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/`), for moving
//! images and sidecars with their signatures where no registry reaches: `wpod save` writes one
//! from registries, `wpod load` pulls from one into the store with every check a registry pull
//! makes (trust policy, digests, a sidecar's bytes). Each manifest is named in `index.json` by
//! `org.opencontainers.image.ref.name` = its full reference (`registry/repository:tag`), its
//! signatures by `registry/repository:sha256-<hex>.sig`, as the registry would hold them.
//!
//! A layout to load is untrusted input: every file of it is opened beneath its directory
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), must be a regular file (a FIFO would
//! hang the load, `/dev/zero` through a symlink fill memory), and is read within a cap:
//! `index.json` and manifests 4 MiB, blobs their declared size (by the caller).

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use oci_client::manifest::{OciImageIndex, OciImageManifest, OCI_IMAGE_INDEX_MEDIA_TYPE};
use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::client::{BlobStream, FetchError, Origin};
use super::reference::ImageName;
use super::registries::{Registries, RegistriesError};
use super::signature::signature_tag;
use super::store::Digest;
use super::trust::{self, Policy, PolicyError};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("cannot {step} {}: {error}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error(transparent)]
    Blocked(#[from] super::registries::Blocked),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{image}: {message}")]
    Fetch { image: String, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u8,
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<Entry>,
}

/// One layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
    /// The directory, open: its files are opened beneath it.
    fd: std::sync::Arc<std::os::fd::OwnedFd>,
    index: Index,
}

/// The largest `index.json` or manifest read from a layout.
const MAX_LAYOUT_JSON: u64 = super::http::MAX_MANIFEST_BYTES as u64;

/// Opens `rel` beneath the directory `dir`: no symlink, no `..` out of it, a regular file only
/// (opened without blocking, so a FIFO is refused rather than waited on).
fn open_beneath(dir: &std::os::fd::OwnedFd, rel: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = nix::fcntl::openat2(dir, rel, how).map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::EXDEV => std::io::Error::other(format!(
            "{} is a symlink or leaves the layout: a layout's files are its own",
            rel.display()
        )),
        other => std::io::Error::from(other),
    })?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            rel.display()
        )));
    }
    Ok(file)
}

/// Reads `rel` beneath `dir`, at most `cap` bytes.
fn read_beneath(dir: &std::os::fd::OwnedFd, rel: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let file = open_beneath(dir, rel)?;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "{} is larger than {} KiB",
            rel.display(),
            cap >> 10
        )));
    }
    Ok(bytes)
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |error| LayoutError::Io { step, path, error }
}

impl Layout {
    /// The layout at `dir`, which must have `oci-layout` and `index.json`.
    pub fn open(dir: &Path) -> Result<Self, LayoutError> {
        let invalid = |message: String| LayoutError::Invalid {
            path: dir.to_path_buf(),
            message,
        };
        let fd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io("open", dir)(e.into()))?;
        if open_beneath(&fd, Path::new("oci-layout")).is_err() {
            return Err(invalid(
                "not an OCI image layout (no oci-layout file); write one with `wpod save`".into(),
            ));
        }
        let path = dir.join("index.json");
        let text = read_beneath(&fd, Path::new("index.json"), MAX_LAYOUT_JSON)
            .map_err(io("read", &path))?;
        let index: Index =
            serde_json::from_slice(&text).map_err(|e| invalid(format!("index.json: {e}")))?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            fd: std::sync::Arc::new(fd),
            index,
        })
    }

    /// A new, empty layout at `dir` (created; it must not hold anything yet).
    pub fn create(dir: &Path) -> Result<Self, LayoutError> {
        if dir.exists()
            && std::fs::read_dir(dir)
                .map_err(io("read", dir))?
                .next()
                .is_some()
        {
            return Err(LayoutError::Invalid {
                path: dir.to_path_buf(),
                message: "exists and is not empty; save into a new directory".into(),
            });
        }
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
        let marker = dir.join("oci-layout");
        std::fs::write(&marker, r#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io("write", &marker))?;
        let fd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io("open", dir)(e.into()))?;
        let layout = Layout {
            dir: dir.to_path_buf(),
            fd: std::sync::Arc::new(fd),
            index: Index {
                schema_version: 2,
                media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.into()),
                manifests: Vec::new(),
            },
        };
        layout.save_index()?;
        Ok(layout)
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// A blob's path inside the layout, for [`open_beneath`].
    fn blob_rel(digest: &Digest) -> PathBuf {
        Path::new("blobs/sha256").join(digest.hex())
    }

    /// The images and sidecars the layout holds (their full references), signatures aside.
    pub fn names(&self) -> Vec<String> {
        self.index
            .manifests
            .iter()
            .filter_map(|e| e.annotations.get(REF_NAME))
            .filter(|n| !n.ends_with(".sig"))
            .cloned()
            .collect()
    }

    fn entry_for(&self, name: &str) -> Option<&Entry> {
        self.index
            .manifests
            .iter()
            .find(|e| e.annotations.get(REF_NAME).map(String::as_str) == Some(name))
    }

    /// The manifest `reference` names: by digest, or by the full reference in `index.json`.
    pub fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), FetchError> {
        let digest = match reference.digest() {
            Some(d) => d.to_string(),
            None => {
                let name = format!(
                    "{}/{}:{}",
                    reference.registry(),
                    reference.repository(),
                    reference.tag().unwrap_or("latest")
                );
                self.entry_for(&name)
                    .map(|e| e.digest.clone())
                    .ok_or_else(|| FetchError::NotFound(format!("{name} is not in the layout")))?
            }
        };
        let parsed = Digest::parse(&digest).map_err(|e| FetchError::Registry(e.to_string()))?;
        let path = self.blob_path(&parsed);
        let bytes = read_beneath(&self.fd, &Self::blob_rel(&parsed), MAX_LAYOUT_JSON)
            .map_err(|e| FetchError::NotFound(format!("{}: {e}", path.display())))?;
        Ok((bytes, digest))
    }

    /// The blob `digest`, read in chunks (the caller caps how many).
    pub fn blob(&self, digest: &Digest) -> Result<BlobStream, FetchError> {
        let path = self.blob_path(digest);
        let file = open_beneath(&self.fd, &Self::blob_rel(digest))
            .map_err(|e| FetchError::NotFound(format!("{}: {e}", path.display())))?;
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; 256 << 10];
            match file.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(chunks))
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Copies the blob `digest` from `origin`: checked against its digest as it arrives, and
    /// never more than the `declared` size its manifest gives.
    async fn copy_blob(
        &self,
        origin: &Origin,
        reference: &Reference,
        digest: &Digest,
        declared: i64,
    ) -> Result<(), FetchError> {
        let declared = u64::try_from(declared)
            .map_err(|_| FetchError::Registry(format!("blob {digest} has the size {declared}")))?;
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut stream = origin.blob(reference, digest, declared).await?;
        let dest = self.blob_path(digest);
        let tmp = dest.with_extension("partial");
        let write = |e: std::io::Error| FetchError::Registry(format!("{}: {e}", tmp.display()));
        let mut file = std::fs::File::create(&tmp).map_err(write)?;
        let mut hash = <sha2::Sha256 as sha2::Digest>::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Registry(e.to_string()))?;
            size += chunk.len() as u64;
            if size > declared {
                let _ = std::fs::remove_file(&tmp);
                return Err(FetchError::TooLarge {
                    digest: digest.to_string(),
                    cap: declared,
                });
            }
            sha2::Digest::update(&mut hash, &chunk);
            std::io::Write::write_all(&mut file, &chunk).map_err(write)?;
        }
        let actual = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hash)));
        if actual != digest.as_str() {
            let _ = std::fs::remove_file(&tmp);
            return Err(FetchError::Mismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        std::fs::rename(&tmp, &dest).map_err(write)
    }

    fn put(&self, bytes: &[u8]) -> Result<Digest, LayoutError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
        Ok(digest)
    }

    fn name(&mut self, name: &str, media_type: &str, digest: &Digest, size: usize) {
        self.index
            .manifests
            .retain(|e| e.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        self.index.manifests.push(Entry {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            annotations: [(REF_NAME.to_string(), name.to_string())].into(),
        });
    }

    fn save_index(&self) -> Result<(), LayoutError> {
        let path = self.dir.join("index.json");
        let text = serde_json::to_vec_pretty(&self.index).unwrap_or_default();
        std::fs::write(&path, text).map_err(io("write", &path))
    }
}

/// What `save` wrote for one image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub image: String,
    pub digest: String,
    pub signatures: usize,
}

/// Copies each of `names` from its registry (registries.conf applies: mirrors first) into a
/// new layout at `dir`, with its signatures, once the trust policy accepts it (as `skopeo copy`
/// checks it). An index keeps only its linux/amd64 image.
pub async fn save(names: &[ImageName], dir: &Path) -> Result<Vec<Saved>, LayoutError> {
    let registries = Registries::load()?;
    let policy = Policy::load()?;
    let mut layout = Layout::create(dir)?;
    let mut out = Vec::new();
    for name in names {
        let canonical = name.canonical();
        let fetch_err = |e: FetchError| LayoutError::Fetch {
            image: canonical.clone(),
            message: e.to_string(),
        };
        let sources = registries.sources(&name.repository_name())?;
        let mut last = None;
        let mut done = None;
        for source in &sources {
            let origin = Origin::registry(source).map_err(|e| LayoutError::Fetch {
                image: source.name.clone(),
                message: e.to_string(),
            })?;
            let reference = name.at(&source.name);
            match save_one(&mut layout, &origin, name, &reference, &policy).await {
                Ok(saved) => {
                    done = Some(saved);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match done {
            Some(saved) => out.push(saved),
            None => {
                return Err(fetch_err(last.unwrap_or(FetchError::NotFound(
                    "no registry to save from".into(),
                ))))
            }
        }
    }
    layout.save_index()?;
    Ok(out)
}

async fn save_one(
    layout: &mut Layout,
    origin: &Origin,
    name: &ImageName,
    reference: &Reference,
    policy: &Policy,
) -> Result<Saved, FetchError> {
    let (top, digest) = origin.manifest(reference).await?;
    let pinned = reference.clone_with_digest(digest.to_string());
    trust::check(origin, &pinned, &digest, name, &policy.scope_for(name))
        .await
        .map_err(|e| FetchError::Registry(e.to_string()))?;
    let media_type = media_type_of(&top);
    let put = |layout: &Layout, bytes: &[u8]| {
        layout
            .put(bytes)
            .map_err(|e| FetchError::Registry(e.to_string()))
    };
    put(layout, &top)?;
    let manifest_bytes = match serde_json::from_slice::<OciImageIndex>(&top) {
        Ok(index) if !index.manifests.is_empty() => {
            let platform = oci_client::client::linux_amd64_resolver(&index.manifests)
                .ok_or_else(|| FetchError::NotFound("the index has no linux/amd64 image".into()))?;
            let (bytes, _) = origin.manifest(&pinned.clone_with_digest(platform)).await?;
            put(layout, &bytes)?;
            bytes
        }
        _ => top.clone(),
    };
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| FetchError::Registry(format!("manifest: {e}")))?;
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let blob = Digest::parse(&d.digest).map_err(|e| FetchError::Registry(e.to_string()))?;
        layout.copy_blob(origin, &pinned, &blob, d.size).await?;
    }
    let repository = name.repository_name();
    // Named as it was asked for: `repo:tag`, or `repo@digest` for a pinned reference.
    let tag_name = match (&name.tag, &name.digest) {
        (Some(t), _) => format!("{repository}:{t}"),
        (None, Some(d)) => format!("{repository}@{d}"),
        (None, None) => format!("{repository}:latest"),
    };
    layout.name(&tag_name, &media_type, &digest, top.len());
    // Its signatures, as the registry holds them.
    let sig_tag = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        signature_tag(&digest),
    );
    let mut signatures = 0;
    match origin.manifest(&sig_tag).await {
        Ok((bytes, sig_digest)) => {
            put(layout, &bytes)?;
            let sig: OciImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| FetchError::Registry(format!("signature manifest: {e}")))?;
            for d in std::iter::once(&sig.config).chain(&sig.layers) {
                let blob =
                    Digest::parse(&d.digest).map_err(|e| FetchError::Registry(e.to_string()))?;
                layout.copy_blob(origin, &sig_tag, &blob, d.size).await?;
            }
            signatures = sig.layers.len();
            layout.name(
                &format!("{repository}:{}", signature_tag(&digest)),
                &media_type_of(&bytes),
                &sig_digest,
                bytes.len(),
            );
        }
        Err(FetchError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(Saved {
        image: name.canonical(),
        digest: digest.to_string(),
        signatures,
    })
}

fn media_type_of(manifest: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string())
}
