//! One way to talk to a registry, shared by pull, push, sign and search: the client for a
//! source (TLS or plain HTTP as registries.conf says), the credentials podman and docker keep,
//! and small reads with a size cap.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::registries::Source;
use super::store::Digest;

/// The client for `source`.
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

/// Why a small read failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Registry(String),
    #[error("blob {digest} is larger than the {cap} bytes wpod reads for it")]
    TooLarge { digest: String, cap: u64 },
    #[error("blob {expected} has the content of {actual}: the registry served other bytes")]
    Mismatch { expected: String, actual: String },
}

/// A blob of at most `cap` bytes (a config, a signature payload) read into memory and checked
/// against its digest. The cap holds while the bytes arrive, whatever the registry claims.
pub async fn small_blob(
    client: &Client,
    reference: &Reference,
    digest: &Digest,
    cap: u64,
) -> Result<Vec<u8>, FetchError> {
    let descriptor = oci_client::manifest::OciDescriptor {
        digest: digest.to_string(),
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(reference, &descriptor)
        .await
        .map_err(|e| FetchError::Registry(crate::error::chain(&e)))?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.stream.next().await {
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
