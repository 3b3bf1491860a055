//! One way to read from a registry, shared by pull, push, sign and search: the client for a
//! source (TLS or plain HTTP as registries.conf says), the credentials podman and docker keep,
//! and an `Origin` that reads manifests and blobs from a registry (`http.rs`: every read capped
//! and under a deadline) or an OCI layout directory alike, with digests checked.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::registries::Source;
use super::store::Digest;

/// The oci-client client for `source`: pushes only (reads go through `http::Registry`).
pub fn client(source: &Source) -> Client {
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
pub fn auth_for(registry: &str) -> RegistryAuth {
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

/// Why a read from an origin failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry (or layout) has no such manifest or blob.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Registry(String),
    #[error("blob {digest} is larger than the {cap} bytes wpod reads for it")]
    TooLarge { digest: String, cap: u64 },
    #[error("blob {expected} has the content of {actual}: the registry served other bytes")]
    Mismatch { expected: String, actual: String },
}

impl From<oci_client::errors::OciDistributionError> for FetchError {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
        if is_not_found(&e) {
            FetchError::NotFound(crate::error::chain(&e))
        } else {
            FetchError::Registry(crate::error::chain(&e))
        }
    }
}

/// A registry's "no such manifest".
fn is_not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
            )
        }),
        E::ServerError { code: 404, .. } => true,
        _ => false,
    }
}

/// A blob's bytes as they arrive.
pub type BlobStream = futures_util::stream::BoxStream<'static, std::io::Result<Vec<u8>>>;

/// Where manifests and blobs are read from: a registry, or an OCI image layout directory
/// (`wpod load`). A pull reads both the same way, so what it checks (trust policy, digests,
/// sizes, a sidecar's bytes) holds whichever it is.
// One per pull: boxing the larger variant would save nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Origin {
    Registry(super::http::Registry),
    Layout(super::layout::Layout),
}

/// The biggest config or signature payload wpod reads into memory (manifests: 4 MiB too,
/// `http::MAX_MANIFEST_BYTES`).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

/// The manifest media types wpod reads.
pub const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

impl Origin {
    /// The registry at `source`, with the credentials kept for that host (never another's: a
    /// mirror does not get the upstream registry's password).
    pub fn registry(source: &Source) -> Result<Self, FetchError> {
        super::http::Registry::new(source, auth_for(source.host())).map(Origin::Registry)
    }

    /// The manifest `reference` names (by tag or digest), as served, with its digest checked
    /// when the reference pins one.
    pub async fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, Digest), FetchError> {
        let (bytes, digest) = match self {
            Origin::Registry(registry) => registry.manifest(reference, MANIFEST_TYPES).await?,
            Origin::Layout(layout) => layout.manifest(reference)?,
        };
        let digest = Digest::parse(&digest).map_err(|e| FetchError::Registry(e.to_string()))?;
        if Digest::of(&bytes) != digest {
            return Err(FetchError::Mismatch {
                expected: digest.to_string(),
                actual: Digest::of(&bytes).to_string(),
            });
        }
        Ok((bytes, digest))
    }

    /// The blob `digest` of `reference`'s repository, as it streams; `size` is what its
    /// descriptor declares (its download's deadline grows with it; the caller caps the bytes).
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobStream, FetchError> {
        match self {
            Origin::Registry(registry) => registry.blob(reference, digest.as_str(), size).await,
            Origin::Layout(layout) => layout.blob(digest),
        }
    }

    /// A blob of at most `cap` bytes (a config, a signature payload) read into memory and
    /// checked against its digest. The cap holds while the bytes arrive, whatever the origin
    /// claims.
    pub async fn small_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        cap: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let mut stream = self.blob(reference, digest, cap).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Registry(e.to_string()))?;
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(FetchError::TooLarge {
                    digest: digest.to_string(),
                    cap,
                });
            }
            out.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&out);
        if &actual != digest {
            return Err(FetchError::Mismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(out)
    }
}
