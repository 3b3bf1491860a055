//! A repository on its registry, for everything but pulls: publishing a Wasm sidecar
//! (`wpod push`) and cosign signatures (`wpod sign`), describing a sidecar from its config
//! before download (`wpod inspect REF`), and finding sidecars (`wpod search`). These go to the
//! registry the reference names (registries.conf decides only whether it speaks plain HTTP),
//! never to a mirror.

use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::{Client, Reference, RegistryOperation};

use super::artifact::{self, Artifact, WasmConfig};
use super::client::{client, FetchError, Origin, MAX_METADATA_BYTES};
use super::reference::ImageName;
use super::registries::{Registries, RegistriesError, Source};
use super::signature::{self, SignatureError, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use super::store::Digest;
use super::trust::{Policy, Signer};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error(transparent)]
    Blocked(#[from] super::registries::Blocked),
    #[error("{image}: {message}")]
    Registry { image: String, message: String },
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A connection to the repository of one image name: reads through `http::Registry` (capped,
/// under deadlines), pushes through oci-client with a token made by it.
pub struct Remote {
    pub name: ImageName,
    pub reference: Reference,
    client: Client,
    origin: Origin,
}

/// How long a push's call to the registry may take (a component is at most 256 MiB).
const PUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Remote {
    /// The registry `name` lives at (its own location; registries.conf may make it plain HTTP).
    pub fn new(name: &ImageName) -> Result<Self, RemoteError> {
        let registries = Registries::load()?;
        let sources = registries.sources(&name.repository_name())?;
        let source = sources
            .into_iter()
            .find(|s| !s.mirror)
            .unwrap_or_else(|| Source {
                name: name.repository_name(),
                insecure: false,
                mirror: false,
            });
        let origin = Origin::registry(&source).map_err(|e| RemoteError::Registry {
            image: name.canonical(),
            message: e.to_string(),
        })?;
        Ok(Remote {
            reference: name.at(&source.name),
            client: client(&source),
            origin,
            name: name.clone(),
        })
    }

    /// Reads from this registry as a pull does.
    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn registry(&self) -> Option<&super::http::Registry> {
        match &self.origin {
            Origin::Registry(r) => Some(r),
            Origin::Layout(_) => None,
        }
    }

    fn err(&self, e: oci_client::errors::OciDistributionError) -> RemoteError {
        RemoteError::Registry {
            image: self.name.canonical(),
            message: crate::error::chain(&e),
        }
    }

    /// Gives oci-client what it needs for `op`: a bearer token made by `http::Registry` (so
    /// oci-client never talks to a token service itself), or the registry's own Basic
    /// credentials when it asks for Basic. Reads need nothing here: they authenticate
    /// themselves.
    async fn login(&self, op: RegistryOperation) -> Result<(), RemoteError> {
        let Some(registry) = self.registry() else {
            return Ok(());
        };
        if op == RegistryOperation::Pull {
            return Ok(());
        }
        let auth = registry
            .oci_auth(&self.reference, true)
            .await
            .map_err(|e| self.invalid(e.to_string()))?;
        self.within(self.client.auth(&self.reference, &auth, op))
            .await
            .map(|_| ())
    }

    /// An oci-client call, within [`PUSH_DEADLINE`].
    async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    ) -> Result<T, RemoteError> {
        match tokio::time::timeout(PUSH_DEADLINE, call).await {
            Ok(result) => result.map_err(|e| self.err(e)),
            Err(_) => Err(self.invalid(format!(
                "the registry did not answer within {} minutes",
                PUSH_DEADLINE.as_secs() / 60
            ))),
        }
    }

    async fn put_blob(&self, bytes: Vec<u8>, digest: &Digest) -> Result<(), RemoteError> {
        let present = self
            .within(self.client.blob_exists(&self.reference, digest.as_str()))
            .await
            .unwrap_or(false);
        if !present {
            self.within(
                self.client
                    .push_blob(&self.reference, bytes, digest.as_str()),
            )
            .await?;
        }
        Ok(())
    }

    async fn put_manifest(&self, at: &Reference, manifest: Vec<u8>) -> Result<(), RemoteError> {
        // A constant that is a valid header value; the error cannot happen.
        let content_type = OCI_IMAGE_MEDIA_TYPE
            .parse()
            .map_err(|_| self.invalid(format!("{OCI_IMAGE_MEDIA_TYPE} is not a header value")))?;
        self.within(self.client.push_manifest_raw(at, manifest, content_type))
            .await
            .map(|_| ())
    }

    /// Publishes `artifact` (built from `component`) under the name's tag (or digest).
    pub async fn push_artifact(
        &self,
        artifact: &Artifact,
        component: Vec<u8>,
    ) -> Result<(), RemoteError> {
        self.push_image(
            vec![
                (component, artifact.layer_digest.clone()),
                (artifact.config.clone(), artifact.config_digest.clone()),
            ],
            artifact.manifest.clone(),
        )
        .await
    }

    /// Publishes an OCI image manifest and its blobs (each with its digest; those the
    /// registry has already are not sent again) under the name's tag (or digest).
    pub async fn push_image(
        &self,
        blobs: Vec<(Vec<u8>, Digest)>,
        manifest: Vec<u8>,
    ) -> Result<(), RemoteError> {
        self.login(RegistryOperation::Push).await?;
        for (bytes, digest) in blobs {
            self.put_blob(bytes, &digest).await?;
        }
        self.put_manifest(&self.reference, manifest).await
    }

    /// What the name's tag points to now (or its digest, when it has one).
    /// The manifest is read and hashed, not only asked for its digest: what is signed is the
    /// digest of the content the registry serves.
    pub async fn resolve(&self) -> Result<Digest, RemoteError> {
        self.login(RegistryOperation::Pull).await?;
        let (_, digest) = self
            .origin()
            .manifest(&self.reference)
            .await
            .map_err(|e| self.invalid(e.to_string()))?;
        if let Some(pinned) = &self.name.digest {
            if pinned != digest.as_str() {
                return Err(RemoteError::Registry {
                    image: self.name.canonical(),
                    message: format!("the registry serves {digest} for this digest"),
                });
            }
        }
        Ok(digest)
    }

    /// Signs the manifest `digest` with the private key `private_pem` (opened with `password`
    /// when encrypted) and stores the signature
    /// where cosign and containers/image look: a layer of the manifest at tag
    /// `sha256-<hex>.sig`, added beside the signatures already there.
    pub async fn sign(
        &self,
        digest: &Digest,
        private_pem: &str,
        password: &[u8],
    ) -> Result<String, RemoteError> {
        let payload = signature::payload(&self.name.signed_reference(), digest);
        let sig = signature::sign(private_pem, password, &payload)?;
        self.login(RegistryOperation::Push).await?;
        let tag = signature::signature_tag(digest);
        let at = Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag.clone(),
        );
        let mut layers = match self.origin().manifest(&at).await {
            Ok((bytes, _)) => serde_json::from_slice::<OciImageManifest>(&bytes)
                .map(|m| m.layers)
                .map_err(|e| {
                    self.invalid(format!(
                        "tag {tag} holds something that is not a signature manifest ({e}); \
                         wpod will not replace it: remove the tag first"
                    ))
                })?,
            Err(FetchError::NotFound(_)) => Vec::new(),
            Err(e) => {
                return Err(RemoteError::Registry {
                    image: self.name.canonical(),
                    message: e.to_string(),
                })
            }
        };
        let payload_digest = Digest::of(&payload);
        layers.retain(|l| {
            // The same payload signed again (by this key or another) replaces nothing else.
            l.annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                != Some(&sig)
        });
        layers.push(OciDescriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
            digest: payload_digest.to_string(),
            size: payload.len() as i64,
            annotations: Some([(SIGNATURE_ANNOTATION.to_string(), sig)].into()),
            ..Default::default()
        });
        self.put_blob(payload, &payload_digest).await?;
        // cosign's config for a signature image: one diff_id per signature layer.
        let config = serde_json::json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = Digest::of(&config);
        let config_size = config.len();
        self.put_blob(config, &config_digest).await?;
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.into(),
                digest: config_digest.to_string(),
                size: config_size as i64,
                ..Default::default()
            },
            layers,
            ..Default::default()
        };
        self.put_manifest(&at, serde_json::to_vec(&manifest).unwrap_or_default())
            .await?;
        Ok(tag)
    }
}

/// What a registry says about a Wasm sidecar before it is downloaded.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    pub image: String,
    pub digest: Digest,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// From the artifact's config: what its author says it imports (checked at pull).
    pub config: WasmConfig,
    /// Who signed it, checked with the keys the trust policy names for it.
    #[serde(serialize_with = "display")]
    pub signer: Signer,
}

impl Remote {
    /// The sidecar the name points to now, from its manifest and config alone.
    pub async fn describe(&self) -> Result<Option<Described>, RemoteError> {
        self.login(RegistryOperation::Pull).await?;
        let origin = self.origin();
        let (bytes, digest) = origin
            .manifest(&self.reference)
            .await
            .map_err(|e| self.invalid(e.to_string()))?;
        let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(&bytes) else {
            return Ok(None);
        };
        if !artifact::is_wasm(&manifest) {
            return Ok(None);
        }
        let pinned = self.reference.clone_with_digest(digest.to_string());
        let config_digest =
            Digest::parse(&manifest.config.digest).map_err(|e| self.invalid(e.to_string()))?;
        let config = origin
            .small_blob(&pinned, &config_digest, MAX_METADATA_BYTES)
            .await
            .map_err(|e| self.invalid(e.to_string()))?;
        let (_, config) = artifact::layer_and_config(&manifest, &config, u64::MAX)
            .map_err(|e| self.invalid(e.to_string()))?;
        let policy = Policy::load().map_err(|e| self.invalid(e.to_string()))?;
        let signer = super::trust::signer(
            origin,
            &self.reference,
            &digest,
            &self.name,
            &policy.scope_for(&self.name),
        )
        .await
        .map_err(|e| self.invalid(e.to_string()))?;
        Ok(Some(Described {
            image: self.name.canonical(),
            digest,
            annotations: manifest.annotations.unwrap_or_default(),
            config,
            signer,
        }))
    }

    /// The repository's tags (signature tags left out).
    pub async fn tags(&self) -> Result<Vec<String>, RemoteError> {
        self.login(RegistryOperation::Pull).await?;
        let registry = self
            .registry()
            .ok_or_else(|| self.invalid("not a registry".into()))?;
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        // A bounded number of pages, whatever the registry keeps answering.
        for _ in 0..MAX_LISTED / PAGE {
            let page = registry
                .tags_page(&self.reference, last.as_deref())
                .await
                .map_err(|e| self.invalid(e.to_string()))?;
            let n = page.len();
            let next = page.last().cloned();
            tags.extend(page.into_iter().filter(|t| !t.starts_with("sha256-")));
            if n < PAGE || next == last {
                break;
            }
            last = next;
        }
        Ok(tags)
    }

    fn invalid(&self, message: String) -> RemoteError {
        RemoteError::Registry {
            image: self.name.canonical(),
            message,
        }
    }
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Entries asked for per page of a catalog or tag list.
const PAGE: usize = super::http::PAGE;
/// The most repositories or tags wpod lists.
const MAX_LISTED: usize = 1000;

/// The repositories of `registry`, from its catalog API (at most a thousand). A registry without
/// one (most public registries) says so: then only a named repository can be inspected.
pub async fn catalog(registry: &str) -> Result<Vec<String>, RemoteError> {
    let name = ImageName::parse(&format!("{registry}/catalog-probe")).map_err(|e| {
        RemoteError::Registry {
            image: registry.to_string(),
            message: e.to_string(),
        }
    })?;
    let remote = Remote::new(&name)?;
    let reader = remote.registry().ok_or_else(|| RemoteError::Registry {
        image: registry.to_string(),
        message: "not a registry".into(),
    })?;
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..MAX_LISTED / PAGE {
        let page = reader
            .catalog_page(&remote.reference, last.as_deref())
            .await
            .map_err(|e| RemoteError::Registry {
                image: registry.to_string(),
                message: format!(
                    "its catalog API answered: {e}. Registries without a catalog (most public \
                     ones) cannot be searched; inspect a repository you know by name: wpod \
                     inspect {registry}/REPOSITORY:TAG"
                ),
            })?;
        let n = page.len();
        let next = page.last().cloned();
        out.extend(page);
        if n < PAGE || next == last {
            break;
        }
        last = next;
    }
    Ok(out)
}
