//! The trust policy, in podman's containers-policy.json(5) form, and the check it asks for
//! before an image or sidecar is pulled.
//!
//! ```json
//! {"default": [{"type": "insecureAcceptAnything"}],
//!  "transports": {"docker": {
//!     "registry.example:5000/sidecars": [{"type": "sigstoreSigned", "keyPath": "/etc/wpod/team.pub"}],
//!     "registry.example:5000/untrusted": [{"type": "reject"}]}}}
//! ```
//!
//! The most specific `docker` scope wins (the repository, then each shorter namespace, the
//! registry, `*.domain` wildcards, then the transport's `""` entry, then `default`), and every
//! requirement of it must hold. `sigstoreSigned` accepts an image when one of its cosign
//! signatures (the `sha256-<hex>.sig` tag) verifies with one of the keys for exactly the digest
//! that was resolved and will be pulled. The reference inside the signature is not checked: a
//! mirror re-homes an image, its digest stays. With no policy file every image is accepted, as
//! podman's shipped default does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::manifest::OciImageManifest;
use oci_client::Reference;
use serde::Deserialize;

use super::client::{FetchError, Origin};
use super::reference::ImageName;
use super::signature::{self, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use super::store::Digest;

pub const DEFAULT_PATH: &str = "/etc/wpod/policy.json";
/// The biggest signature payload wpod reads (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
/// The most signatures wpod tries for one image.
const MAX_SIGNATURES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the trust policy {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "the trust policy {policy} rejects {image} (scope \"{scope}\" says reject); change the \
         policy to pull it"
    )]
    Rejected {
        image: String,
        policy: String,
        scope: String,
    },
    #[error(
        "{image} is not signed, and the trust policy {policy} requires a signature for scope \
         \"{scope}\" (no signature at tag {tag}); sign it with `wpod sign {image} --key KEY` or \
         pull another image"
    )]
    Unsigned {
        image: String,
        policy: String,
        scope: String,
        tag: String,
    },
    #[error(
        "no signature of {image} verifies for {digest} with the keys the trust policy {policy} \
         names for scope \"{scope}\": {}",
        reasons.join("; ")
    )]
    NotVerified {
        image: String,
        digest: String,
        policy: String,
        scope: String,
        reasons: Vec<String>,
    },
    #[error("{image}: cannot read its signatures: {message}")]
    Registry { image: String, message: String },
}

/// One requirement of a scope.
#[derive(Clone, Debug)]
pub enum Requirement {
    AcceptAnything,
    Reject,
    /// One of these public keys (PEM), each with where it came from.
    Sigstore {
        keys: Vec<(String, String)>,
    },
}

/// The requirements that apply to one image, and where they come from.
#[derive(Clone, Debug)]
pub struct Scope<'p> {
    pub name: String,
    pub policy: String,
    pub requirements: &'p [Requirement],
}

impl Scope<'_> {
    pub fn needs_signature(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::Sigstore { .. }))
    }
}

#[derive(Debug)]
pub struct Policy {
    path: String,
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            path: "(no policy file: every image is accepted)".into(),
            default: vec![Requirement::AcceptAnything],
            docker: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawRequirement>>>,
}

// Parsed once per command and dropped: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum RawRequirement {
    InsecureAcceptAnything,
    Reject,
    #[serde(rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<PathBuf>,
        #[serde(default)]
        key_paths: Vec<PathBuf>,
        key_data: Option<String>,
        /// Accepted and not checked: the digest is what is trusted (see the module comment).
        #[allow(dead_code)]
        signed_identity: Option<serde_json::Value>,
        fulcio: Option<serde_json::Value>,
        /// Rekor and PKI checks wpod does not make: refused rather than ignored, so a policy
        /// never means less in wpod than in podman.
        rekor_public_key_path: Option<serde_json::Value>,
        rekor_public_key_data: Option<serde_json::Value>,
        pki: Option<serde_json::Value>,
    },
    SignedBy {},
}

impl Policy {
    /// `$WPOD_POLICY`, else `/etc/wpod/policy.json`; no file at the default path accepts every
    /// image (a named file must exist).
    pub fn load() -> Result<Self, PolicyError> {
        match crate::files::read_config("WPOD_POLICY", DEFAULT_PATH) {
            Ok(Some((path, text))) => Self::parse(&path, &text),
            Ok(None) => Ok(Self::default()),
            Err((path, error)) => Err(PolicyError::Read { path, error }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let file: File = serde_json::from_str(text).map_err(|e| {
            err(format!(
                "{e}; write the containers-policy.json(5) form: {{\"default\": [{{\"type\": \"insecureAcceptAnything\"}}], \"transports\": {{\"docker\": {{...}}}}}}"
            ))
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let default = requirements(&file.default, "default", dir).map_err(&err)?;
        let mut docker = BTreeMap::new();
        for (transport, scopes) in file.transports {
            if transport != "docker" {
                // Other transports (containers-storage, dir, ...) are podman's; wpod pulls only
                // from registries.
                continue;
            }
            for (scope, raw) in scopes {
                let reqs = requirements(&raw, &format!("transports.docker.\"{scope}\""), dir)
                    .map_err(&err)?;
                docker.insert(scope, reqs);
            }
        }
        Ok(Policy {
            path: path.display().to_string(),
            default,
            docker,
        })
    }

    fn scope<'a>(&'a self, name: &str, requirements: &'a [Requirement]) -> Scope<'a> {
        Scope {
            name: name.to_string(),
            policy: self.path.clone(),
            requirements,
        }
    }

    /// The scope that applies to the image `name`: its full reference with tag or digest,
    /// then its repository (`registry.example:5000/team/app`), and so on out.
    pub fn scope_for(&self, name: &ImageName) -> Scope<'_> {
        let scope = |name: &str, requirements| self.scope(name, requirements);
        let repository = name.repository_name();
        let exact = [
            name.tag.as_ref().map(|t| format!("{repository}:{t}")),
            name.digest.as_ref().map(|d| format!("{repository}@{d}")),
        ];
        for candidate in exact.iter().flatten() {
            if let Some(r) = self.docker.get(candidate) {
                return scope(candidate, r);
            }
        }
        let repository = repository.as_str();
        let mut candidate = repository;
        loop {
            if let Some(r) = self.docker.get(candidate) {
                return scope(candidate, r);
            }
            match candidate.rsplit_once('/') {
                Some((shorter, _)) => candidate = shorter,
                None => break,
            }
        }
        // `*.example.com` matches the subdomains of example.com (not example.com itself).
        let host = repository.split('/').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or(host);
        let mut domain = host;
        while let Some((_, rest)) = domain.split_once('.') {
            let wildcard = format!("*.{rest}");
            if let Some(r) = self.docker.get(&wildcard) {
                return scope(&wildcard, r);
            }
            domain = rest;
        }
        if let Some(r) = self.docker.get("") {
            return scope("", r);
        }
        scope("default", &self.default)
    }
}

fn requirements(raw: &[RawRequirement], at: &str, dir: &Path) -> Result<Vec<Requirement>, String> {
    if raw.is_empty() {
        return Err(format!(
            "{at}: an empty list of requirements; write [{{\"type\": \"reject\"}}] or a requirement"
        ));
    }
    raw.iter()
        .map(|r| match r {
            RawRequirement::InsecureAcceptAnything => Ok(Requirement::AcceptAnything),
            RawRequirement::Reject => Ok(Requirement::Reject),
            RawRequirement::SignedBy {} => Err(format!(
                "{at}: signedBy (GPG signatures) is not supported by wpod; use sigstoreSigned with keyPath"
            )),
            RawRequirement::SigstoreSigned {
                fulcio: Some(_), ..
            } => Err(format!(
                "{at}: sigstoreSigned with fulcio (keyless) needs Fulcio and Rekor online; wpod verifies keyed signatures offline: use keyPath"
            )),
            RawRequirement::SigstoreSigned {
                rekor_public_key_path,
                rekor_public_key_data,
                pki,
                ..
            } if rekor_public_key_path.is_some() || rekor_public_key_data.is_some() || pki.is_some() => Err(format!(
                "{at}: sigstoreSigned with rekorPublicKeyPath, rekorPublicKeyData or pki is not supported by wpod (it checks keyed signatures offline); remove them to require the keyed signature alone"
            )),
            RawRequirement::SigstoreSigned {
                key_path,
                key_paths,
                key_data,
                ..
            } => {
                let mut keys = Vec::new();
                for p in key_path.iter().chain(key_paths) {
                    let p = dir.join(p);
                    let pem = std::fs::read_to_string(&p)
                        .map_err(|e| format!("{at}: keyPath {}: {e}", p.display()))?;
                    keys.push((p.display().to_string(), pem));
                }
                if let Some(data) = key_data {
                    let pem = base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| format!("{at}: keyData is not base64 of a PEM public key"))?;
                    keys.push((format!("{at}.keyData"), pem));
                }
                if keys.is_empty() {
                    return Err(format!(
                        "{at}: sigstoreSigned needs keyPath, keyPaths or keyData"
                    ));
                }
                for (name, pem) in &keys {
                    signature::check_public_key(pem)
                        .map_err(|e| format!("{at}: {name}: {e}"))?;
                }
                Ok(Requirement::Sigstore { keys })
            }
        })
        .collect()
}

/// How an image passed the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// No requirement asked for a signature.
    NotRequired,
    /// A signature verified with this key.
    SignedBy(String),
}

/// Checks `scope` for the image `image` whose manifest resolved to `digest` at `reference`
/// (its repository at the source it is pulled from).
pub async fn check(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    image: &str,
    scope: &Scope<'_>,
) -> Result<Verified, TrustError> {
    let mut verified = Verified::NotRequired;
    for req in scope.requirements {
        match req {
            Requirement::AcceptAnything => {}
            Requirement::Reject => {
                return Err(TrustError::Rejected {
                    image: image.into(),
                    policy: scope.policy.clone(),
                    scope: scope.name.clone(),
                })
            }
            Requirement::Sigstore { keys } => {
                let key = verify_signatures(origin, reference, digest, image, scope, keys).await?;
                verified = Verified::SignedBy(key);
            }
        }
    }
    Ok(verified)
}

async fn verify_signatures(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    image: &str,
    scope: &Scope<'_>,
    keys: &[(String, String)],
) -> Result<String, TrustError> {
    let signatures = signatures(origin, reference, digest, image)
        .await?
        .ok_or_else(|| TrustError::Unsigned {
            image: image.into(),
            policy: scope.policy.clone(),
            scope: scope.name.clone(),
            tag: signature::signature_tag(digest),
        })?;
    let mut reasons = Vec::new();
    for (i, (payload, sig)) in signatures.iter().enumerate() {
        for (name, pem) in keys {
            match signature::verify(pem, payload, sig, digest) {
                Ok(()) => return Ok(name.clone()),
                Err(e) => reasons.push(format!("signature {} with {name}: {e}", i + 1)),
            }
        }
    }
    if signatures.is_empty() {
        reasons.push("the signature tag holds no cosign signature".into());
    }
    Err(TrustError::NotVerified {
        image: image.into(),
        digest: digest.to_string(),
        policy: scope.policy.clone(),
        scope: scope.name.clone(),
        reasons,
    })
}

/// Who signed a digest, as far as a scope's keys can tell (for `wpod search` and `inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    Unsigned,
    /// A signature verifies with this key of the policy.
    Key(String),
    /// Signatures are stored, and none verifies with a key the policy names for this image.
    Unverified,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Unsigned => f.write_str("unsigned"),
            Signer::Key(k) => f.write_str(k),
            Signer::Unverified => f.write_str("signed (by no key of the trust policy)"),
        }
    }
}

/// Whether `digest` is signed, and by which key of `scope`.
pub async fn signer(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    image: &str,
    scope: &Scope<'_>,
) -> Result<Signer, TrustError> {
    let signatures = match signatures(origin, reference, digest, image).await? {
        Some(s) if !s.is_empty() => s,
        _ => return Ok(Signer::Unsigned),
    };
    for req in scope.requirements {
        let Requirement::Sigstore { keys } = req else {
            continue;
        };
        for (payload, sig) in &signatures {
            for (name, pem) in keys {
                if signature::verify(pem, payload, sig, digest).is_ok() {
                    return Ok(Signer::Key(name.clone()));
                }
            }
        }
    }
    Ok(Signer::Unverified)
}

/// The cosign signatures stored for `digest`: (payload, base64 signature) pairs; `None` when
/// there is no signature tag at all.
pub async fn signatures(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    image: &str,
) -> Result<Option<Vec<(Vec<u8>, String)>>, TrustError> {
    let registry_err = |message: String| TrustError::Registry {
        image: image.into(),
        message,
    };
    let tag = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        signature::signature_tag(digest),
    );
    let manifest = match origin.manifest(&tag).await {
        Ok((bytes, _)) => bytes,
        Err(FetchError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(registry_err(e.to_string())),
    };
    let manifest: OciImageManifest = serde_json::from_slice(&manifest).map_err(|e| {
        registry_err(format!(
            "the signature manifest is not an OCI manifest: {e}"
        ))
    })?;
    let mut out = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_SIGNATURES)
    {
        let Some(sig) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let blob = Digest::parse(&layer.digest).map_err(|e| registry_err(e.to_string()))?;
        let payload = origin
            .small_blob(&tag, &blob, MAX_PAYLOAD_BYTES)
            .await
            .map_err(|e| registry_err(e.to_string()))?;
        out.push((payload, sig.clone()));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/wpod/policy.json"), text)
    }

    #[test]
    fn the_most_specific_scope_wins() {
        let (_, public) = signature::generate_key(b"").unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(&public);
        let p = policy(&format!(
            r#"{{"default": [{{"type": "reject"}}],
                "transports": {{"docker": {{
                  "reg:5000/team": [{{"type": "sigstoreSigned", "keyData": "{data}"}}],
                  "reg:5000/team/open": [{{"type": "insecureAcceptAnything"}}],
                  "reg:5000/team/open:bad": [{{"type": "reject"}}],
                  "*.example.com": [{{"type": "insecureAcceptAnything"}}]
                }}}}}}"#
        ))
        .unwrap();
        let scope = |n: &str| p.scope_for(&ImageName::parse(n).unwrap());
        assert!(scope("reg:5000/team/app").needs_signature());
        assert_eq!(scope("reg:5000/team/app").name, "reg:5000/team");
        assert_eq!(scope("reg:5000/team/open").name, "reg:5000/team/open");
        assert_eq!(
            scope("reg:5000/team/open:bad").name,
            "reg:5000/team/open:bad"
        );
        assert!(matches!(
            scope("reg:5000/team/open:bad").requirements,
            [Requirement::Reject]
        ));
        assert_eq!(scope("registry.example.com/x").name, "*.example.com");
        assert_eq!(scope("example.com/x").name, "default");
        assert_eq!(scope("docker.io/library/nginx").name, "default");
        assert!(matches!(
            scope("docker.io/library/nginx").requirements,
            [Requirement::Reject]
        ));
    }

    #[test]
    fn unsupported_or_broken_requirements_are_errors() {
        let e = policy(r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("signedBy") && e.contains("sigstoreSigned"),
            "{e}"
        );
        let e = policy(r#"{"default": [{"type": "sigstoreSigned"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs keyPath"), "{e}");
        let e =
            policy(r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/nonexistent.pub"}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("/nonexistent.pub"), "{e}");
        let e = policy(
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "eA==", "rekorPublicKeyPath": "/r.pub"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rekorPublicKeyPath"), "{e}");
        let e = policy(r#"{"default": []}"#).unwrap_err().to_string();
        assert!(e.contains("empty list"), "{e}");
        let e = policy(r#"{"defaults": []}"#).unwrap_err().to_string();
        assert!(e.contains("/etc/wpod/policy.json"), "{e}");
    }
}
