//! Pulling an image into the store: resolve the name through registries.conf (mirrors first),
//! fetch the manifest (an index resolves to linux/amd64) and config, download each missing layer
//! blob hashing it as it streams, and unpack each missing layer once (its uncompressed digest
//! checked against the config's `diff_ids`). The whole pull holds the store's lock, so two pulls
//! of one image never write the same content at once.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::config::ConfigFile;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use sha2::{Digest as _, Sha256};

use super::process::ImageProcess;
use super::reference::ImageName;
use super::registries::{Registries, RegistriesError, Source};
use super::store::{Digest, ImageRecord, Locked, Store, StoreError};
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
    #[error("layer {layer}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
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

/// An image ready to run: its record, its process settings, its layers.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub record: ImageRecord,
    pub process: ImageProcess,
    /// Unpacked layer directories, topmost first (overlayfs' `lowerdir` order).
    pub layers: Vec<PathBuf>,
}

pub struct Puller {
    store: Arc<Store>,
    registries: Registries,
}

impl Puller {
    pub fn new(store: Arc<Store>) -> Result<Self, PullError> {
        Ok(Puller {
            store,
            registries: Registries::load()?,
        })
    }

    /// The image `name` per `policy`: the stored one when it may be used, else pulled.
    pub async fn ensure(
        &self,
        name: &ImageName,
        policy: PullPolicy,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<StoredImage, PullError> {
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
    ) -> Result<StoredImage, PullError> {
        let canonical = name.canonical();
        let sources = self.registries.sources(&name.repository_name())?;
        let store = self.store.clone();
        let locked = tokio::task::block_in_place(|| store.lock())?;
        locked.clear_leftovers();
        let mut last = None;
        for source in &sources {
            match self.pull_from(name, source, &locked, events).await {
                Ok(image) => return Ok(image),
                Err(e @ PullError::Registry { .. }) if source.mirror => {
                    events(PullEvent::MirrorFailed {
                        mirror: source.name.clone(),
                        message: e.to_string(),
                    });
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PullError::Registry {
            image: canonical,
            message: "no registry to pull from".into(),
        }))
    }

    async fn pull_from(
        &self,
        name: &ImageName,
        source: &Source,
        locked: &Locked<'_>,
        events: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<StoredImage, PullError> {
        let started = std::time::Instant::now();
        let canonical = name.canonical();
        let reference = name.at(&source.name);
        events(PullEvent::Pulling {
            image: canonical.clone(),
            from: source.name.clone(),
        });
        let registry_err = |e: oci_client::errors::OciDistributionError| PullError::Registry {
            image: canonical.clone(),
            message: crate::error::chain(&e),
        };
        let client = client(source);
        let auth = auth_for(reference.registry());
        let (manifest, manifest_digest, config_text) = client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(registry_err)?;
        let invalid = |what: String| PullError::Invalid {
            image: canonical.clone(),
            what,
        };
        let manifest_digest = Digest::parse(&manifest_digest)?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        locked.put_blob(&config_digest, config_text.as_bytes())?;
        // Stored as wpod re-serialised it (oci-client gives no raw bytes); the record keeps the
        // registry's digest beside it.
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
        let stored_manifest = Digest::of(&manifest_bytes);
        if !self.store.has_blob(&stored_manifest) {
            locked.put_blob(&stored_manifest, &manifest_bytes)?;
        }
        let config: ConfigFile =
            serde_json::from_str(&config_text).map_err(|e| invalid(format!("config: {e}")))?;
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
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let blob = Digest::parse(&layer.digest)?;
            size += layer.size.max(0) as u64;
            let chain_id = Digest::chain(chain.last(), diff_id);
            let cached = self.store.has_layer(&chain_id);
            if !cached {
                if !self.store.has_blob(&blob) {
                    download(
                        &client, &reference, layer, &blob, locked, &canonical, events,
                    )
                    .await?;
                }
                let lowers: Vec<PathBuf> = chain
                    .iter()
                    .rev()
                    .map(|c| self.store.layer_path(c))
                    .collect();
                tokio::task::block_in_place(|| {
                    unpack_layer(
                        locked,
                        &blob,
                        &layer.media_type,
                        diff_id,
                        &chain_id,
                        &lowers,
                    )
                })?;
            }
            events(PullEvent::Layer {
                digest: blob.to_string(),
                size: layer.size.max(0) as u64,
                cached,
            });
            chain.push(chain_id);
        }
        let record = ImageRecord {
            name: canonical.clone(),
            digest: manifest_digest,
            manifest: stored_manifest,
            config: config_digest,
            layers: chain,
            size,
            last_used: now(),
        };
        locked.record(record.clone())?;
        events(PullEvent::Pulled {
            image: canonical,
            digest: record.digest.to_string(),
            size,
            took: started.elapsed(),
        });
        Ok(StoredImage {
            process: process_of(&config),
            layers: self.layer_paths(&record),
            record,
        })
    }

    /// A stored image, as recorded.
    fn load(&self, record: ImageRecord) -> Result<StoredImage, PullError> {
        let config_text = self.store.read_blob(&record.config)?;
        let config: ConfigFile =
            serde_json::from_slice(&config_text).map_err(|e| PullError::Invalid {
                image: record.name.clone(),
                what: format!("config: {e}"),
            })?;
        for l in &record.layers {
            if !self.store.has_layer(l) {
                return Err(PullError::Invalid {
                    image: record.name.clone(),
                    what: format!("layer {l} is missing from the store; pull the image again"),
                });
            }
        }
        Ok(StoredImage {
            process: process_of(&config),
            layers: self.layer_paths(&record),
            record,
        })
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

fn client(source: &Source) -> Client {
    // rustls without aws-lc: ring is the provider (installed once per process).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if source.insecure {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: source.insecure,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    })
}

/// Credentials for `registry` as podman and docker keep them: `$REGISTRY_AUTH_FILE`, then
/// `$XDG_RUNTIME_DIR/containers/auth.json`, then `~/.docker/config.json`; anonymous otherwise.
fn auth_for(registry: &str) -> RegistryAuth {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(p).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            tracing::warn!(file = %f.display(), "cannot parse registry credentials; ignoring them");
            continue;
        };
        let Some(entry) = json.get("auths").and_then(|a| a.get(registry)) else {
            continue;
        };
        let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
            continue;
        };
        use base64::Engine as _;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        if let Some((user, pass)) = String::from_utf8_lossy(&decoded).split_once(':') {
            return RegistryAuth::Basic(user.to_string(), pass.to_string());
        }
    }
    RegistryAuth::Anonymous
}

/// Downloads one blob into the store, hashing it as it streams.
async fn download(
    client: &Client,
    reference: &oci_client::Reference,
    layer: &oci_client::manifest::OciDescriptor,
    digest: &Digest,
    locked: &Locked<'_>,
    image: &str,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(), PullError> {
    let registry_err = |message: String| PullError::Registry {
        image: image.to_string(),
        message,
    };
    let mut stream = client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(|e| registry_err(crate::error::chain(&e)))?;
    let mut ingest = locked.ingest()?;
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| registry_err(format!("download {digest}: {e}")))?;
        ingest.write(&chunk)?;
        events(PullEvent::Progress {
            digest: digest.to_string(),
            done: ingest.size,
            total: layer.size.max(0) as u64,
        });
        if layer.size >= 0 && ingest.size > layer.size as u64 {
            return Err(registry_err(format!(
                "blob {digest} is larger than the {} bytes its manifest says",
                layer.size
            )));
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
    let result = unpack::unpack(&mut hashed, &staging, lowers, Limits::default());
    // Whatever the tar parser left unread (padding, a trailer) is part of the diff.
    let drained = std::io::copy(&mut hashed, &mut std::io::sink());
    let layer = chain_id.to_string();
    let outcome = result
        .map_err(|source| PullError::Unpack {
            layer: layer.clone(),
            source,
        })
        .and_then(|_| {
            drained.map_err(|e| PullError::Unpack {
                layer: layer.clone(),
                source: UnpackError::Read(e),
            })
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
