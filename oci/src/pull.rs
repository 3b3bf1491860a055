//! Pulling an image or a Wasm sidecar into the store: resolve the name through registries.conf
//! (mirrors first), resolve the tag to a digest once, check the trust policy for exactly that
//! digest, then fetch by digest only (an index resolves to linux/amd64).
//!
//! A container image's missing layer blobs are downloaded, hashed as they stream, and unpacked
//! once (their uncompressed digest checked against the config's `diff_ids`). A Wasm sidecar's
//! one layer is downloaded within a size cap, refused if it is precompiled native code, and its
//! imports are recomputed from its bytes (a config that says otherwise is refused).
//!
//! Everything from the network is fetched without the store's lock (blobs are verified and
//! content-addressed, and pinned so that no prune removes them meanwhile); the lock is taken
//! only to unpack and record, which is local work. An image is recorded only once all of it is
//! stored.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use oci_client::client::linux_amd64_resolver;
use oci_client::config::ConfigFile;
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use sha2::{Digest as _, Sha256};

use super::artifact::{self, ArtifactError};
use super::client::{FetchError, Origin, MAX_METADATA_BYTES};
use super::process::ImageProcess;
use super::reference::ImageName;
use super::registries::{Registries, RegistriesError, Source};
use super::store::{Digest, ImageRecord, Locked, Pin, SidecarRecord, Store, StoreError};
use super::trust::{self, Policy, PolicyError, TrustError, Verified};
use super::unpack::{self, Limits, UnpackError};
use crate::spec::PullPolicy;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error(transparent)]
    Blocked(#[from] super::registries::Blocked),
    /// What the registry (or the connection to it) said, as the kubelet shows it.
    #[error("{image}: {message}")]
    Registry { image: String, message: String },
    #[error(
        "image {0} is not present on this host and imagePullPolicy is Never (ErrImageNeverPull)"
    )]
    NeverPull(String),
    #[error("image {image}: {what}")]
    Invalid { image: String, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{image}: {source}")]
    Sidecar {
        image: String,
        #[source]
        source: ArtifactError,
    },
    #[error("layer {layer}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
}

impl PullError {
    /// The image whose pull may succeed if tried again later (the registry or the way to it
    /// failed: the kubelet's `ErrImagePull`, retried with back-off); `None` for a refusal
    /// that needs a person (policy, trust, configuration, a bad image, `Never`).
    pub fn retryable_image(&self) -> Option<&str> {
        match self {
            PullError::Registry { image, .. } => Some(image),
            _ => None,
        }
    }
}

/// Progress of a pull, for the pod's events and `wpod pull`'s output.
#[derive(Clone, Debug)]
pub enum PullEvent {
    Pulling {
        image: String,
        from: String,
    },
    /// Bytes of a layer downloaded so far.
    Progress {
        digest: String,
        done: u64,
        total: u64,
    },
    Layer {
        digest: String,
        size: u64,
        cached: bool,
    },
    Pulled {
        image: String,
        digest: String,
        size: u64,
        took: Duration,
    },
    AlreadyPresent {
        image: String,
    },
    MirrorFailed {
        mirror: String,
        message: String,
    },
}

/// A container image ready to run: its record, its process settings, its layers.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub record: ImageRecord,
    pub process: ImageProcess,
    /// Unpacked layer directories, topmost first (overlayfs' `lowerdir` order).
    pub layers: Vec<PathBuf>,
}

/// A Wasm sidecar in the store: its record and where its component is.
#[derive(Clone, Debug)]
pub struct StoredSidecar {
    pub record: ImageRecord,
    pub sidecar: SidecarRecord,
    /// The component's blob in the store.
    pub component: PathBuf,
    /// The manifest's annotations (title, description, version, ...).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What a pull stored: the media types of the manifest decide.
#[derive(Clone, Debug)]
pub enum Pulled {
    Container(StoredImage),
    Sidecar(StoredSidecar),
}

impl Pulled {
    pub fn record(&self) -> &ImageRecord {
        match self {
            Pulled::Container(i) => &i.record,
            Pulled::Sidecar(s) => &s.record,
        }
    }
}

pub struct Puller {
    store: Arc<Store>,
    registries: Registries,
    policy: Policy,
}

impl Puller {
    pub fn new(store: Arc<Store>) -> Result<Self, PullError> {
        Ok(Puller {
            store,
            registries: Registries::load()?,
            policy: Policy::load()?,
        })
    }

    /// The image `name` per `policy`: the stored one when it may be used, else pulled.
    pub async fn ensure(
        &self,
        name: &ImageName,
        policy: PullPolicy,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<Pulled, PullError> {
        let canonical = name.canonical();
        let stored = self.store.image(&canonical)?;
        match (policy, stored) {
            (PullPolicy::Never, None) => Err(PullError::NeverPull(canonical)),
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(record)) => {
                events(PullEvent::AlreadyPresent { image: canonical });
                self.load(record)
            }
            _ => self.pull(name, events).await,
        }
    }

    /// Pulls `name` (always asking the registry what its tag points to now).
    pub async fn pull(
        &self,
        name: &ImageName,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<Pulled, PullError> {
        let canonical = name.canonical();
        if let Some(d) = &name.digest {
            // The reference grammar allows sha384 and sha512; the store keeps sha256.
            Digest::parse(d).map_err(|_| PullError::Invalid {
                image: canonical.clone(),
                what: "wpod pins images by sha256 digests only".into(),
            })?;
        }
        let sources = self.registries.sources(&name.repository_name())?;
        let pin = std::sync::Mutex::new(self.store.pin()?);
        let mut last = None;
        for source in &sources {
            match self.pull_from(name, source, &pin, events).await {
                Ok(image) => return Ok(image),
                // A mirror that fails, or serves what the policy or the checks refuse (an
                // unsigned copy: mirrors often drop signatures), is passed over: the next source
                // is held to the same checks.
                Err(
                    e @ (PullError::Registry { .. }
                    | PullError::Trust(_)
                    | PullError::Sidecar { .. }
                    | PullError::Invalid { .. }
                    | PullError::Unpack { .. }
                    | PullError::Store(
                        StoreError::DigestMismatch { .. } | StoreError::BadDigest(_),
                    )),
                ) if source.mirror => {
                    events(PullEvent::MirrorFailed {
                        mirror: source.name.clone(),
                        message: e.to_string(),
                    });
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PullError::Invalid {
            image: canonical,
            what: "no registry to pull from (registries.conf lists none for it)".into(),
        }))
    }

    /// Reads every image and sidecar of an OCI layout directory into the store, each checked
    /// exactly as a pull from a registry (`wpod load`).
    pub async fn load_layout(
        &self,
        layout: super::layout::Layout,
        from: &str,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<Vec<(ImageName, Pulled)>, PullError> {
        let names = layout.names();
        let origin = Origin::Layout(layout);
        let pin = std::sync::Mutex::new(self.store.pin()?);
        let mut out = Vec::new();
        for n in names {
            let name = ImageName::parse(&n).map_err(|e| PullError::Invalid {
                image: n.clone(),
                what: e.to_string(),
            })?;
            let reference = name.at(&name.repository_name());
            let pulled = self
                .fetch(&name, &origin, &reference, from, &pin, events)
                .await?;
            out.push((name, pulled));
        }
        Ok(out)
    }

    async fn pull_from(
        &self,
        name: &ImageName,
        source: &Source,
        pin: &std::sync::Mutex<Pin>,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<Pulled, PullError> {
        // A registry wpod cannot even address is its configuration's fault: no retry helps.
        let origin = Origin::registry(source).map_err(|e| PullError::Invalid {
            image: name.canonical(),
            what: e.to_string(),
        })?;
        let reference = name.at(&source.name);
        self.fetch(name, &origin, &reference, &source.name, pin, events)
            .await
    }

    /// Reads `name` (at `reference`) from `origin` into the store: the one resolution of its
    /// tag, the trust policy for that digest, then its content by digest.
    async fn fetch(
        &self,
        name: &ImageName,
        origin: &Origin,
        reference: &oci_client::Reference,
        from: &str,
        pin: &std::sync::Mutex<Pin>,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<Pulled, PullError> {
        let started = std::time::Instant::now();
        let canonical = name.canonical();
        events(PullEvent::Pulling {
            image: canonical.clone(),
            from: from.to_string(),
        });
        let host = from.split('/').next().unwrap_or(from).to_string();
        let fetch_err = |e: FetchError| fetch_err(&canonical, &host, e);
        let invalid = |what: String| PullError::Invalid {
            image: canonical.clone(),
            what,
        };
        // The one resolution of the tag: everything after is fetched by this digest.
        let (top, top_digest) = origin.manifest(reference).await.map_err(fetch_err)?;
        let pinned = reference.clone_with_digest(top_digest.to_string());
        let scope = self.policy.scope_for(name);
        let verified = trust::check(origin, &pinned, &top_digest, name, &scope).await?;
        let (manifest_bytes, manifest_digest) =
            match platform_manifest(&top).map_err(|e| invalid(crate::error::chain(&e)))? {
                None => (top, top_digest.clone()),
                Some(platform) => origin
                    .manifest(&pinned.clone_with_digest(platform))
                    .await
                    .map_err(fetch_err)?,
            };
        let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| invalid(format!("manifest: {e}")))?;
        let config_digest =
            Digest::parse(&manifest.config.digest).map_err(|e| invalid(e.to_string()))?;
        let config = origin
            .small_blob(&pinned, &config_digest, MAX_METADATA_BYTES)
            .await
            .map_err(fetch_err)?;
        let fetched = Fetched {
            origin,
            reference: &pinned,
            canonical: &canonical,
            store: &self.store,
            pin,
            events,
        };
        for d in [&top_digest, &manifest_digest, &config_digest] {
            fetched.pin(d)?;
        }
        let (content, layers, size, sidecar, to_unpack) = if artifact::is_wasm(&manifest) {
            let (sidecar, size) = self.fetch_sidecar(&fetched, &manifest, &config).await?;
            (None, Vec::new(), size, Some(sidecar), Vec::new())
        } else {
            let (config_file, chain, size, to_unpack) =
                self.fetch_layers(&fetched, &manifest, &config).await?;
            (Some(config_file), chain, size, None, to_unpack)
        };
        // Local work from here: under the lock, briefly.
        let store = self.store.clone();
        let locked = tokio::task::block_in_place(|| store.lock())?;
        tokio::task::block_in_place(|| {
            locked.clear_leftovers();
            for u in &to_unpack {
                if self.store.has_layer(&u.chain_id) {
                    continue; // another pull unpacked it meanwhile
                }
                unpack_layer(
                    &locked,
                    &u.blob,
                    &u.media_type,
                    &u.diff_id,
                    &u.chain_id,
                    &u.lowers,
                )?;
            }
            Ok::<_, PullError>(())
        })?;
        locked.put_blob(&config_digest, &config)?;
        locked.put_blob(&manifest_digest, &manifest_bytes)?;
        let record = ImageRecord {
            name: canonical.clone(),
            digest: top_digest,
            manifest: manifest_digest,
            config: config_digest,
            layers,
            size,
            last_used: now(),
            sidecar,
            signed_by: match verified {
                Verified::SignedBy(key) => Some(key),
                Verified::NotRequired => None,
            },
        };
        locked.record(record.clone())?;
        events(PullEvent::Pulled {
            image: canonical,
            digest: record.digest.to_string(),
            size,
            took: started.elapsed(),
        });
        match content {
            Some(config) => Ok(Pulled::Container(StoredImage {
                process: process_of(&config),
                layers: self.layer_paths(&record),
                record,
            })),
            None => self.load(record),
        }
    }

    /// A container image's layers: each missing one's blob downloaded (and pinned). Returns
    /// the config, the layers' ChainIDs (bottom first), their compressed size, and the layers
    /// to unpack (under the lock, by the caller).
    async fn fetch_layers(
        &self,
        f: &Fetched<'_>,
        manifest: &OciImageManifest,
        config_bytes: &[u8],
    ) -> Result<(ConfigFile, Vec<Digest>, u64, Vec<ToUnpack>), PullError> {
        let invalid = |what: String| PullError::Invalid {
            image: f.canonical.to_string(),
            what,
        };
        let config: ConfigFile =
            serde_json::from_slice(config_bytes).map_err(|e| invalid(format!("config: {e}")))?;
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(format!(
                "the manifest has {} layers and the config {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let mut size = 0u64;
        let mut chain: Vec<Digest> = Vec::new();
        let mut to_unpack = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let blob = Digest::parse(&layer.digest).map_err(|e| invalid(e.to_string()))?;
            size += layer.size.max(0) as u64;
            let chain_id = Digest::chain(chain.last(), diff_id);
            // Pinned before it is looked at: a prune cannot take it between the look and the
            // use.
            f.pin(&chain_id)?;
            f.pin(&blob)?;
            let cached = self.store.has_layer(&chain_id);
            if !cached {
                if !self.store.has_blob(&blob) {
                    download(f, layer, &blob).await?;
                }
                to_unpack.push(ToUnpack {
                    blob: blob.clone(),
                    media_type: layer.media_type.clone(),
                    diff_id: diff_id.clone(),
                    chain_id: chain_id.clone(),
                    lowers: chain
                        .iter()
                        .rev()
                        .map(|c| self.store.layer_path(c))
                        .collect(),
                });
            }
            (f.events)(PullEvent::Layer {
                digest: blob.to_string(),
                size: layer.size.max(0) as u64,
                cached,
            });
            chain.push(chain_id);
        }
        Ok((config, chain, size, to_unpack))
    }

    /// A Wasm sidecar's one layer: its size checked before and while it downloads, then its
    /// bytes checked (a component, not precompiled code) and its imports recomputed from them.
    async fn fetch_sidecar(
        &self,
        f: &Fetched<'_>,
        manifest: &OciImageManifest,
        config_bytes: &[u8],
    ) -> Result<(SidecarRecord, u64), PullError> {
        let sidecar_err = |source: ArtifactError| PullError::Sidecar {
            image: f.canonical.to_string(),
            source,
        };
        let (layer, config) =
            artifact::layer_and_config(manifest, config_bytes, crate::files::MAX_COMPONENT_BYTES)
                .map_err(sidecar_err)?;
        let blob = Digest::parse(&layer.digest).map_err(|e| PullError::Invalid {
            image: f.canonical.to_string(),
            what: e.to_string(),
        })?;
        f.pin(&blob)?;
        let cached = self.store.has_blob(&blob);
        if !cached {
            download(f, layer, &blob).await?;
        }
        let check = || -> Result<SidecarRecord, PullError> {
            let bytes = self.store.read_blob(&blob)?;
            let interface = artifact::check_component(&bytes).map_err(sidecar_err)?;
            artifact::check_declared(&config, &interface).map_err(sidecar_err)?;
            Ok(SidecarRecord {
                component: blob.clone(),
                imports: interface.imports,
                exports: interface.exports,
            })
        };
        let sidecar = match tokio::task::block_in_place(check) {
            Ok(s) => s,
            Err(e) => {
                // Refused bytes just downloaded are not kept. A blob that was here already
                // belongs to a sidecar stored before, whose checks it passed: this manifest is
                // what is wrong (its config, say), and the blob stays.
                if !cached {
                    let _ = std::fs::remove_file(self.store.blob_path(&blob));
                }
                return Err(e);
            }
        };
        (f.events)(PullEvent::Layer {
            digest: blob.to_string(),
            size: layer.size.max(0) as u64,
            cached,
        });
        Ok((sidecar, layer.size.max(0) as u64))
    }

    /// A stored image, as recorded.
    fn load(&self, record: ImageRecord) -> Result<Pulled, PullError> {
        let invalid = |what: String| PullError::Invalid {
            image: record.name.clone(),
            what,
        };
        if let Some(sidecar) = &record.sidecar {
            // Its bytes are checked against `sidecar.component` where they are loaded
            // (`sidecars::cache::load`, with the hash it takes anyway): what runs is what was
            // verified and reviewed, whatever happened to the store since.
            let component = self.store.blob_path(&sidecar.component);
            if !component.is_file() {
                return Err(invalid(format!(
                    "its component {} is missing from the store; pull it again",
                    sidecar.component
                )));
            }
            let annotations = self
                .store
                .read_blob(&record.manifest)
                .ok()
                .and_then(|m| serde_json::from_slice::<OciImageManifest>(&m).ok())
                .and_then(|m| m.annotations)
                .unwrap_or_default();
            return Ok(Pulled::Sidecar(StoredSidecar {
                sidecar: sidecar.clone(),
                component,
                annotations,
                record,
            }));
        }
        let config_text = self.store.read_blob(&record.config)?;
        let config: ConfigFile =
            serde_json::from_slice(&config_text).map_err(|e| invalid(format!("config: {e}")))?;
        for l in &record.layers {
            if !self.store.has_layer(l) {
                return Err(invalid(format!(
                    "layer {l} is missing from the store; pull the image again"
                )));
            }
        }
        Ok(Pulled::Container(StoredImage {
            process: process_of(&config),
            layers: self.layer_paths(&record),
            record,
        }))
    }

    fn layer_paths(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record
            .layers
            .iter()
            .rev()
            .map(|c| self.store.layer_path(c))
            .collect()
    }
}

/// For an index (or a Docker manifest list), the digest of its linux/amd64 manifest; `None`
/// for an image manifest.
fn platform_manifest(bytes: &[u8]) -> Result<Option<String>, IndexError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(IndexError::Manifest)?;
    if probe.manifests.is_none() {
        return Ok(None);
    }
    let index: OciImageIndex = serde_json::from_slice(bytes).map_err(IndexError::Index)?;
    linux_amd64_resolver(&index.manifests)
        .map(Some)
        .ok_or(IndexError::NoPlatform)
}

/// Why a manifest (or index) does not lead to an image.
#[derive(Debug, thiserror::Error)]
enum IndexError {
    #[error("manifest")]
    Manifest(#[source] serde_json::Error),
    #[error("index")]
    Index(#[source] serde_json::Error),
    #[error("the index has no linux/amd64 image")]
    NoPlatform,
}

/// What the registry said (`Registry`: it may say otherwise later), or what is wrong with
/// what it served (`Invalid`: served again, it would be refused again). `registry`: the host it
/// was asked of. The registry's own words stay, after what they mean and what to do.
fn fetch_err(image: &str, registry: &str, e: FetchError) -> PullError {
    match e {
        FetchError::NotFound(raw) => PullError::Registry {
            image: image.to_string(),
            message: format!(
                "image not found on {registry}: it has no such tag or digest (check the name and \
                 the tag; the registry said: {raw})"
            ),
        },
        FetchError::Registry(raw) => {
            let lower = raw.to_lowercase();
            let message = if [
                "connection refused",
                "(connect)",
                "dns error",
                "timed out",
                "no route to host",
            ]
            .iter()
            .any(|w| lower.contains(w))
            {
                format!(
                    "registry unreachable: {registry} (check that it runs and that registries.conf \
                     names it rightly; {raw})"
                )
            } else if [
                "invalidcontenttype",
                "corrupt message",
                "wrong version number",
                "http/0.9",
            ]
            .iter()
            .any(|w| lower.contains(w))
            {
                format!(
                    "{raw} (if {registry} speaks plain HTTP, mark it `insecure = true` in \
                     registries.conf)"
                )
            } else if lower.contains("unauthorized") || lower.contains("denied") {
                format!(
                    "{registry} refused access: {raw} (log in to it: an auth.json as podman \
                     writes it, or ~/.docker/config.json)"
                )
            } else {
                raw
            };
            PullError::Registry {
                image: image.to_string(),
                message,
            }
        }
        FetchError::TooLarge { .. } | FetchError::Mismatch { .. } => PullError::Invalid {
            image: image.to_string(),
            what: e.to_string(),
        },
    }
}

/// What one pull's downloads share.
struct Fetched<'a> {
    origin: &'a Origin,
    reference: &'a oci_client::Reference,
    canonical: &'a str,
    store: &'a Store,
    pin: &'a std::sync::Mutex<Pin>,
    events: &'a (dyn Fn(PullEvent) + Sync),
}

impl Fetched<'_> {
    /// Keeps `digest` from prune until the pull ends.
    fn pin(&self, digest: &Digest) -> Result<(), PullError> {
        let mut pin = self.pin.lock().unwrap_or_else(|p| p.into_inner());
        Ok(pin.add(digest)?)
    }
}

/// A layer to unpack once its blob is stored.
struct ToUnpack {
    blob: Digest,
    media_type: String,
    diff_id: Digest,
    chain_id: Digest,
    /// The unpacked layers below it, topmost first.
    lowers: Vec<PathBuf>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn process_of(config: &ConfigFile) -> ImageProcess {
    let c = config.config.clone().unwrap_or_default();
    ImageProcess {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir,
        user: c.user.filter(|u| !u.is_empty()),
        stop_signal: c.stop_signal,
    }
}

/// Downloads one blob into the store, hashing it as it streams; never more bytes than its
/// manifest declares (a negative size is refused, not taken as "unknown").
async fn download(
    f: &Fetched<'_>,
    layer: &oci_client::manifest::OciDescriptor,
    digest: &Digest,
) -> Result<(), PullError> {
    let registry_err = |message: String| PullError::Registry {
        image: f.canonical.to_string(),
        message,
    };
    let declared = u64::try_from(layer.size).map_err(|_| PullError::Invalid {
        image: f.canonical.to_string(),
        what: format!("blob {digest} has the size {} in its manifest", layer.size),
    })?;
    let mut stream = f
        .origin
        .blob(f.reference, digest, declared)
        .await
        .map_err(|e| fetch_err(f.canonical, f.reference.registry(), e))?;
    let mut ingest = f.store.ingest()?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| registry_err(format!("download {digest}: {e}")))?;
        ingest.write(&chunk)?;
        (f.events)(PullEvent::Progress {
            digest: digest.to_string(),
            done: ingest.size,
            total: declared,
        });
        if ingest.size > declared {
            return Err(PullError::Invalid {
                image: f.canonical.to_string(),
                what: format!(
                    "blob {digest} is larger than the {declared} bytes its manifest says"
                ),
            });
        }
    }
    ingest.commit(digest)?;
    Ok(())
}

/// Decompresses and unpacks one stored blob as the layer `chain_id`.
fn unpack_layer(
    locked: &Locked<'_>,
    blob: &Digest,
    media_type: &str,
    diff_id: &Digest,
    chain_id: &Digest,
    lowers: &[PathBuf],
) -> Result<(), PullError> {
    let path = locked.store.blob_path(blob);
    let file = std::fs::File::open(&path).map_err(|source| StoreError::Io {
        step: "open",
        path: path.clone(),
        source,
    })?;
    // The blob was verified against its digest: its length is exact, and bounds what its
    // stream may expand to.
    let compressed = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let reader: Box<dyn Read> = if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Box::new(
            zstd::stream::read::Decoder::new(file).map_err(|source| StoreError::Io {
                step: "decompress",
                path: path.clone(),
                source,
            })?,
        )
    } else if media_type.ends_with("gzip") || media_type.ends_with("tar.gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut hashed = HashingReader {
        inner: reader,
        hash: Sha256::new(),
    };
    let staging = locked.layer_staging()?;
    // `unpack` reads the stream to its end (bounded zero padding after the archive), so the
    // hash covers all of it, as the layer's diff ID does.
    let result = unpack::unpack(&mut hashed, &staging, lowers, Limits::for_blob(compressed));
    let layer = chain_id.to_string();
    let outcome = result
        .map_err(|source| PullError::Unpack {
            layer: layer.clone(),
            source,
        })
        .and_then(|_| {
            let actual = format!("sha256:{}", hex::encode(hashed.hash.clone().finalize()));
            if actual == diff_id.as_str() {
                Ok(())
            } else {
                Err(PullError::Store(StoreError::DigestMismatch {
                    expected: diff_id.to_string(),
                    actual,
                }))
            }
        });
    match outcome {
        Ok(()) => {
            locked.commit_layer(&staging, chain_id)?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
