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
//! that was resolved and will be pulled, and names an identity (the payload's
//! `docker-reference`) its `signedIdentity` accepts, as containers-policy.json(5) defines them:
//! by default (`matchRepoDigestOrExact`) the very `repo:tag` the user asked for, or any
//! reference of the repository when the user pinned a digest. The identity compared is the name
//! the user asked for, never a registries.conf mirror's, so a mirror still verifies; cosign's
//! repository-only identities need `matchRepository`. With no policy file every image is
//! accepted, as podman's shipped default does.
//!
//! Scopes match image *names*, as in podman, not addresses: `localhost` and `127.0.0.1`, or a
//! DNS alias of a registry, are different names for one server. Image names and scopes must
//! spell a registry as the HTTP client does (oci/reference.rs), which closes the spellings the
//! parser itself would alias (`127.1`, `LOCALHOST`, `:05000`), but a policy that must keep
//! images out should still be `default: reject` with allowed scopes, not a list of rejects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::manifest::OciImageManifest;
use oci_client::Reference;
use serde::Deserialize;

use super::client::{FetchError, Origin};
use super::reference::{check_path, check_registry_name, ImageName, Named};
use super::signature::{self, SignatureError, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
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
    #[error(
        "{}: {error}; write the containers-policy.json(5) form: {{\"default\": [{{\"type\": \"insecureAcceptAnything\"}}], \"transports\": {{\"docker\": {{...}}}}}}",
        path.display()
    )]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    /// The file parses, but a requirement or a scope in it is one wpod refuses. (The fault is
    /// part of the message, as every consumer prints it whole.)
    #[error("{}: {fault}", path.display())]
    Invalid {
        path: PathBuf,
        fault: Box<PolicyFault>,
    },
}

/// What is wrong in a policy file, at `at` (the JSON path of the requirement: `default`,
/// `transports.docker."SCOPE"`). Messages follow containers/image's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFault {
    #[error(
        "{at} is null (containers/image reads it as the unknown match type \"\"); omit it for \
         the default matchRepoDigestOrExact, or write {{\"type\": \"...\"}} with one of \
         {IDENTITY_TYPES}"
    )]
    IdentityNull { at: String },
    #[error("{at}: Duplicate key \"{key}\"")]
    DuplicateKey { at: String, key: String },
    #[error("{at}: Key \"{key}\" missing in a JSON object")]
    MissingKey { at: String, key: String },
    #[error("{at}.{key} is {value}, not a string")]
    NotAString {
        at: String,
        key: String,
        value: String,
    },
    #[error("{at}: Unknown policy reference match type \"{kind}\"; write one of {IDENTITY_TYPES}")]
    UnknownMatchType { at: String, kind: String },
    #[error("{at}: Unknown key \"{key}\" ({kind} has only {expected})")]
    UnknownKey {
        at: String,
        key: String,
        kind: String,
        expected: String,
    },
    #[error("{at}: Invalid format of {key} \"{value}\": {reason}")]
    InvalidReference {
        at: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{at}.{key}: {source}")]
    ReferenceRegistry {
        at: String,
        key: String,
        source: super::reference::RegistryNameError,
    },
    #[error(
        "{at}: dockerReference \"{value}\" contains neither a tag nor digest; write \
         REPOSITORY:TAG or REPOSITORY@DIGEST, or use exactRepository"
    )]
    NameOnly { at: String, value: String },
    #[error("{at}: {key} \"{value}\" is not valid: {source}")]
    RemapPrefix {
        at: String,
        key: &'static str,
        value: String,
        source: PrefixError,
    },
    #[error(
        "{at}: a scope is a registry, a repository under it (reg.example:5000/team/app, with \
         :TAG or @DIGEST for one image), *.DOMAIN or \"\"; {source}"
    )]
    Scope {
        at: String,
        source: super::reference::RegistryNameError,
    },
    #[error(
        "{at}: an empty list of requirements; write [{{\"type\": \"reject\"}}] or a requirement"
    )]
    NoRequirements { at: String },
    #[error(
        "{at}: signedBy (GPG signatures) is not supported by wpod; use sigstoreSigned with keyPath"
    )]
    SignedBy { at: String },
    #[error(
        "{at}: sigstoreSigned with fulcio (keyless) needs Fulcio and Rekor online; wpod verifies \
         keyed signatures offline: use keyPath"
    )]
    Fulcio { at: String },
    #[error(
        "{at}: sigstoreSigned with rekorPublicKeyPath(s), rekorPublicKeyData(s) or pki is not \
         supported by wpod (it checks keyed signatures offline); remove them to require the \
         keyed signature alone"
    )]
    Rekor { at: String },
    #[error(
        "{at}: sigstoreSigned needs exactly one of keyPath, keyPaths, keyData and keyDatas \
         (several are refused, as containers/image refuses them: put every key in keyPaths or \
         keyDatas)"
    )]
    KeySources { at: String },
    #[error("{at}: \"{list}\" contains no entries")]
    NoKeys { at: String, list: &'static str },
    #[error("{at}: keyPath {}: {source}", path.display())]
    KeyPath {
        at: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {field} is not base64 of a PEM public key")]
    KeyData { at: String, field: String },
    #[error("{at}: {key}: {source}")]
    PublicKey {
        at: String,
        key: String,
        source: super::signature::SignatureError,
    },
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
    /// One of these public keys (PEM), each with where it came from, for an identity that
    /// `identity` accepts.
    Sigstore {
        keys: Vec<(String, String)>,
        identity: Identity,
    },
}

/// `signedIdentity`: which `docker-reference` in a signature is accepted for the image the user
/// asked for (the *intended* identity, `ImageName::identity`), as containers/image's
/// signature/policy_reference_match.go decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The signature names exactly the intended `repo:tag` or `repo@digest`.
    MatchExact,
    /// The default: as `MatchExact` for a tag; for a pinned digest, any tag or digest of the
    /// same repository (the digest itself is checked against the manifest either way).
    MatchRepoDigestOrExact,
    /// Any reference of the intended repository, a repository-only one (cosign's) included.
    MatchRepository,
    /// Exactly this reference (tagged or digested), whatever the user asked for.
    ExactReference(Named),
    /// Any reference of this repository, whatever the user asked for.
    ExactRepository(Named),
    /// `MatchRepoDigestOrExact` once an intended name under `prefix` is rewritten to start with
    /// `signed_prefix` (images copied from elsewhere keep their signer's names).
    Remap {
        prefix: String,
        signed_prefix: String,
    },
}

impl Identity {
    /// Whether a signature whose payload names `signed` is accepted for `intended`. A `signed`
    /// that does not parse is not accepted (no error: another signature may still verify).
    pub fn accepts(&self, intended: &Named, signed: &str) -> bool {
        let Ok(signed) = Named::parse(signed) else {
            return false;
        };
        match self {
            Identity::MatchExact => {
                !signed.is_name_only() && signed.to_string() == intended.to_string()
            }
            Identity::MatchRepoDigestOrExact => repo_digest_or_exact(intended, &signed),
            Identity::MatchRepository => signed.name() == intended.name(),
            Identity::ExactReference(r) => {
                !signed.is_name_only() && signed.to_string() == r.to_string()
            }
            Identity::ExactRepository(r) => signed.name() == r.name(),
            Identity::Remap {
                prefix,
                signed_prefix,
            } => match remap(intended, prefix, signed_prefix) {
                Some(remapped) => repo_digest_or_exact(&remapped, &signed),
                None => false,
            },
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::MatchExact => f.write_str("matchExact"),
            Identity::MatchRepoDigestOrExact => f.write_str("matchRepoDigestOrExact (the default)"),
            Identity::MatchRepository => f.write_str("matchRepository"),
            Identity::ExactReference(r) => write!(f, "exactReference \"{r}\""),
            Identity::ExactRepository(r) => write!(f, "exactRepository \"{}\"", r.name()),
            Identity::Remap {
                prefix,
                signed_prefix,
            } => write!(f, "remapIdentity \"{prefix}\" -> \"{signed_prefix}\""),
        }
    }
}

/// `matchRepoDigestOrExact`: the signature must name a tag or digest; a tagged intended
/// identity needs the same reference, a pinned one only the same repository (the signature's
/// digest has been checked against the manifest, and so has the intended one).
fn repo_digest_or_exact(intended: &Named, signed: &Named) -> bool {
    if signed.is_name_only() {
        return false;
    }
    if intended.tag.is_some() {
        signed.to_string() == intended.to_string()
    } else if intended.digest.is_some() {
        signed.name() == intended.name()
    } else {
        false
    }
}

/// `remapIdentity`'s rewrite of `intended`: unchanged unless its repository is `prefix` or
/// under it (at a `/`: `example.com` does not cover `example.com:5000`); then the prefix is
/// replaced and the result must parse back to itself (containers/image's `ParseNamed`), else
/// `None`, which matches nothing.
fn remap(intended: &Named, prefix: &str, signed_prefix: &str) -> Option<Named> {
    let name = intended.name();
    let under = match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    };
    if !under {
        return Some(intended.clone());
    }
    let rewritten = format!("{signed_prefix}{}", &intended.to_string()[prefix.len()..]);
    Named::parse(&rewritten)
        .ok()
        .filter(|n| n.to_string() == rewritten)
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

// Parsed once per command and dropped: its size does not matter. Unknown keys are refused, as
// containers/image refuses them: a misspelt `signedIdentty` ignored would quietly mean the
// default. The unit-like variants are `{}` structs because serde ignores extra keys beside the
// tag of a unit variant.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum RawRequirement {
    InsecureAcceptAnything {},
    Reject {},
    #[serde(rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<PathBuf>,
        key_paths: Option<Vec<PathBuf>>,
        key_data: Option<String>,
        key_datas: Option<Vec<String>>,
        #[serde(default)]
        signed_identity: RawIdentity,
        fulcio: Option<serde_json::Value>,
        /// Rekor and PKI checks wpod does not make: refused rather than ignored, so a policy
        /// never means less in wpod than in podman.
        rekor_public_key_path: Option<serde_json::Value>,
        rekor_public_key_paths: Option<serde_json::Value>,
        rekor_public_key_data: Option<serde_json::Value>,
        rekor_public_key_datas: Option<serde_json::Value>,
        pki: Option<serde_json::Value>,
    },
    /// Refused with a message of its own, whatever its keys.
    SignedBy(serde::de::IgnoredAny),
}

/// `signedIdentity` as written: absent, `null` (which containers/image refuses, and serde's
/// `Option` would silently read as absent), or an object's entries in order, a repeated key
/// kept so that it can be refused as containers/image refuses it.
#[derive(Default)]
enum RawIdentity {
    #[default]
    Absent,
    Null,
    Object(Vec<(String, serde_json::Value)>),
}

impl<'de> Deserialize<'de> for RawIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawIdentity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a signedIdentity object such as {\"type\": \"matchRepository\"}")
            }
            fn visit_unit<E>(self) -> Result<RawIdentity, E> {
                Ok(RawIdentity::Null)
            }
            fn visit_none<E>(self) -> Result<RawIdentity, E> {
                Ok(RawIdentity::Null)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawIdentity, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(RawIdentity::Object(entries))
            }
        }
        d.deserialize_any(Entries)
    }
}

/// The match types of containers-policy.json(5), for messages.
const IDENTITY_TYPES: &str =
    "matchExact, matchRepoDigestOrExact, matchRepository, exactReference, exactRepository or remapIdentity";

/// Validates `signedIdentity` as containers/image does (signature/policy_config.go): exactly
/// the fields of its type, each a string, references that parse, and (wpod's own rule) their
/// registries spelled as image names spell them, since they are compared as written.
fn identity(raw: &RawIdentity, at: &str) -> Result<Identity, PolicyFault> {
    let at = format!("{at}.signedIdentity");
    let entries = match raw {
        RawIdentity::Absent => return Ok(Identity::MatchRepoDigestOrExact),
        RawIdentity::Null => return Err(PolicyFault::IdentityNull { at }),
        RawIdentity::Object(entries) => entries,
    };
    let mut fields = BTreeMap::new();
    for (key, value) in entries {
        if fields.insert(key.as_str(), value).is_some() {
            return Err(PolicyFault::DuplicateKey {
                at,
                key: key.clone(),
            });
        }
    }
    let text = |key: &str| -> Result<String, PolicyFault> {
        match fields.get(key) {
            None => Err(PolicyFault::MissingKey {
                at: at.clone(),
                key: key.to_string(),
            }),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(PolicyFault::NotAString {
                at: at.clone(),
                key: key.to_string(),
                value: other.to_string(),
            }),
        }
    };
    let kind = text("type")?;
    let expected: &[&str] = match kind.as_str() {
        "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => &["type"],
        "exactReference" => &["type", "dockerReference"],
        "exactRepository" => &["type", "dockerRepository"],
        "remapIdentity" => &["type", "prefix", "signedPrefix"],
        _ => return Err(PolicyFault::UnknownMatchType { at, kind }),
    };
    if let Some(unknown) = fields.keys().find(|k| !expected.contains(k)) {
        return Err(PolicyFault::UnknownKey {
            at,
            key: unknown.to_string(),
            kind,
            expected: expected.join(", "),
        });
    }
    let reference = |key: &str| -> Result<Named, PolicyFault> {
        let value = text(key)?;
        let named = Named::parse(&value).map_err(|e| PolicyFault::InvalidReference {
            at: at.clone(),
            key: key.to_string(),
            value: value.clone(),
            reason: e.reason.to_string(),
        })?;
        check_registry_name(&named.domain).map_err(|source| PolicyFault::ReferenceRegistry {
            at: at.clone(),
            key: key.to_string(),
            source,
        })?;
        Ok(named)
    };
    Ok(match kind.as_str() {
        "matchExact" => Identity::MatchExact,
        "matchRepoDigestOrExact" => Identity::MatchRepoDigestOrExact,
        "matchRepository" => Identity::MatchRepository,
        "exactReference" => {
            let r = reference("dockerReference")?;
            if r.is_name_only() {
                return Err(PolicyFault::NameOnly {
                    value: text("dockerReference")?,
                    at,
                });
            }
            Identity::ExactReference(r)
        }
        // A tag or digest in it is accepted and ignored, as containers/image does.
        "exactRepository" => Identity::ExactRepository(reference("dockerRepository")?),
        _ => {
            let prefix = text("prefix")?;
            let signed_prefix = text("signedPrefix")?;
            for (key, value) in [("prefix", &prefix), ("signedPrefix", &signed_prefix)] {
                check_remap_prefix(value).map_err(|source| PolicyFault::RemapPrefix {
                    at: at.clone(),
                    key,
                    value: value.clone(),
                    source,
                })?;
            }
            Identity::Remap {
                prefix,
                signed_prefix,
            }
        }
    })
}

/// A `remapIdentity` prefix: a registry (`reg.example`, `reg.example:5000`), optionally followed
/// by repository path components (`docker.io/library`), without tag or digest. containers/image
/// also accepts a first component that is not a registry (`busybox`), which can never match a
/// normalised name; wpod refuses it rather than let the rule silently do nothing.
fn check_remap_prefix(prefix: &str) -> Result<(), PrefixError> {
    let (registry, path) = match prefix.split_once('/') {
        Some((r, p)) => (r, Some(p)),
        None => (prefix, None),
    };
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return Err(PrefixError::NoRegistry);
    }
    if let Some(path) = path {
        check_path(path).map_err(PrefixError::Path)?;
    }
    Ok(check_registry_name(registry)?)
}

/// Why a `remapIdentity` prefix is refused.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "it does not start with a registry; write a registry (reg.example, reg.example:5000) or \
         a registry and namespace (docker.io/library), without tag or digest"
    )]
    NoRegistry,
    #[error(
        "{0}; write a registry (reg.example, reg.example:5000) or a registry and namespace \
         (docker.io/library), without tag or digest"
    )]
    Path(&'static str),
    #[error(transparent)]
    Registry(#[from] super::reference::RegistryNameError),
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
        let err = |fault: PolicyFault| PolicyError::Invalid {
            path: path.to_path_buf(),
            fault: Box::new(fault),
        };
        let file: File = serde_json::from_str(text).map_err(|error| PolicyError::Json {
            path: path.to_path_buf(),
            error,
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
                let at = format!("transports.docker.\"{scope}\"");
                check_scope(&scope).map_err(|source| {
                    err(PolicyFault::Scope {
                        at: at.clone(),
                        source,
                    })
                })?;
                let reqs = requirements(&raw, &at, dir).map_err(&err)?;
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

/// A scope's registry must be spelled as image names spell it: `scope_for` looks scopes up by
/// the image's name, literally, so a `reject` under `127.1:5000` would never apply (and
/// `127.1:5000/x` is refused as an image name).
fn check_scope(scope: &str) -> Result<(), super::reference::RegistryNameError> {
    if scope.is_empty() {
        return Ok(());
    }
    let registry = match scope.strip_prefix("*.") {
        Some(domain) => domain,
        None => scope.split('/').next().unwrap_or(scope),
    };
    check_registry_name(registry)
}

fn requirements(
    raw: &[RawRequirement],
    at: &str,
    dir: &Path,
) -> Result<Vec<Requirement>, PolicyFault> {
    let at_ = || at.to_string();
    if raw.is_empty() {
        return Err(PolicyFault::NoRequirements { at: at_() });
    }
    raw.iter()
        .map(|r| match r {
            RawRequirement::InsecureAcceptAnything {} => Ok(Requirement::AcceptAnything),
            RawRequirement::Reject {} => Ok(Requirement::Reject),
            RawRequirement::SignedBy(_) => Err(PolicyFault::SignedBy { at: at_() }),
            RawRequirement::SigstoreSigned {
                fulcio: Some(_), ..
            } => Err(PolicyFault::Fulcio { at: at_() }),
            RawRequirement::SigstoreSigned {
                rekor_public_key_path,
                rekor_public_key_paths,
                rekor_public_key_data,
                rekor_public_key_datas,
                pki,
                ..
            } if rekor_public_key_path.is_some()
                || rekor_public_key_paths.is_some()
                || rekor_public_key_data.is_some()
                || rekor_public_key_datas.is_some()
                || pki.is_some() =>
            {
                Err(PolicyFault::Rekor { at: at_() })
            }
            RawRequirement::SigstoreSigned {
                key_path,
                key_paths,
                key_data,
                key_datas,
                signed_identity,
                ..
            } => {
                // containers/image takes exactly one source of keys.
                let sources = [
                    key_path.is_some(),
                    key_paths.is_some(),
                    key_data.is_some(),
                    key_datas.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return Err(PolicyFault::KeySources { at: at_() });
                }
                for (list, name) in [
                    (key_paths.as_ref().map(Vec::len), "keyPaths"),
                    (key_datas.as_ref().map(Vec::len), "keyDatas"),
                ] {
                    if list == Some(0) {
                        return Err(PolicyFault::NoKeys {
                            at: at_(),
                            list: name,
                        });
                    }
                }
                let mut keys = Vec::new();
                for p in key_path.iter().chain(key_paths.iter().flatten()) {
                    let p = dir.join(p);
                    let pem =
                        std::fs::read_to_string(&p).map_err(|source| PolicyFault::KeyPath {
                            at: at_(),
                            path: p.clone(),
                            source,
                        })?;
                    keys.push((p.display().to_string(), pem));
                }
                let datas = key_data.iter().map(|d| (d, "keyData".to_string())).chain(
                    key_datas
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, d)| (d, format!("keyDatas[{i}]"))),
                );
                for (data, field) in datas {
                    let pem = base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| PolicyFault::KeyData {
                            at: at_(),
                            field: field.clone(),
                        })?;
                    keys.push((format!("{at}.{field}"), pem));
                }
                for (name, pem) in &keys {
                    signature::check_public_key(pem).map_err(|source| PolicyFault::PublicKey {
                        at: at_(),
                        key: name.clone(),
                        source,
                    })?;
                }
                let identity = identity(signed_identity, at)?;
                Ok(Requirement::Sigstore { keys, identity })
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

/// Checks `scope` for the image `name` (as the user asked for it: its identity for
/// `signedIdentity`, never a mirror's name) whose manifest resolved to `digest` at `reference`
/// (its repository at the source it is pulled from, where its signatures are read).
pub async fn check(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    name: &ImageName,
    scope: &Scope<'_>,
) -> Result<Verified, TrustError> {
    let image = name.canonical();
    let image = image.as_str();
    let intended = name.identity();
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
            Requirement::Sigstore { keys, identity } => {
                let wanted = Wanted {
                    digest,
                    intended: &intended,
                    identity,
                };
                let key = verify_signatures(origin, reference, &wanted, image, scope, keys).await?;
                verified = Verified::SignedBy(key);
            }
        }
    }
    Ok(verified)
}

/// What a signature must sign: the digest, and an identity `identity` accepts for `intended`.
struct Wanted<'a> {
    digest: &'a Digest,
    intended: &'a Named,
    identity: &'a Identity,
}

impl Wanted<'_> {
    fn verify(&self, pem: &str, payload: &[u8], sig: &str) -> Result<(), SignatureError> {
        let accept = |signed: &str| self.identity.accepts(self.intended, signed);
        signature::verify(pem, payload, sig, self.digest, &accept)
    }

    /// Why a signature failed, the identity's failure told with the rule and the intended name.
    fn reason(&self, e: &SignatureError) -> String {
        let SignatureError::Identity { signed } = e else {
            return e.to_string();
        };
        let mut reason = format!(
            "it is for \"{signed}\", which signedIdentity {} does not accept for {}",
            self.identity, self.intended
        );
        let default = matches!(
            self.identity,
            Identity::MatchRepoDigestOrExact | Identity::MatchExact
        );
        if default && Named::parse(signed).is_ok_and(|s| s.is_name_only()) {
            reason.push_str(
                " (a repository-only identity is cosign's: accept it with \
                 \"signedIdentity\": {\"type\": \"matchRepository\"}, or sign with `wpod sign`)",
            );
        }
        reason
    }
}

async fn verify_signatures(
    origin: &Origin,
    reference: &Reference,
    wanted: &Wanted<'_>,
    image: &str,
    scope: &Scope<'_>,
    keys: &[(String, String)],
) -> Result<String, TrustError> {
    let digest = wanted.digest;
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
            match wanted.verify(pem, payload, sig) {
                Ok(()) => return Ok(name.clone()),
                Err(e) => reasons.push(format!(
                    "signature {} with {name}: {}",
                    i + 1,
                    wanted.reason(&e)
                )),
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
    /// Signatures are stored, and none verifies with a key the policy names for this image, for
    /// an identity it accepts.
    Unverified,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Unsigned => f.write_str("unsigned"),
            Signer::Key(k) => f.write_str(k),
            Signer::Unverified => {
                f.write_str("signed (by no key of the trust policy, or for another identity)")
            }
        }
    }
}

/// Whether `digest` is signed, and by which key of `scope`, for `name` (as `check` reads it).
pub async fn signer(
    origin: &Origin,
    reference: &Reference,
    digest: &Digest,
    name: &ImageName,
    scope: &Scope<'_>,
) -> Result<Signer, TrustError> {
    let signatures = match signatures(origin, reference, digest, &name.canonical()).await? {
        Some(s) if !s.is_empty() => s,
        _ => return Ok(Signer::Unsigned),
    };
    let intended = name.identity();
    for req in scope.requirements {
        let Requirement::Sigstore { keys, identity } = req else {
            continue;
        };
        let wanted = Wanted {
            digest,
            intended: &intended,
            identity,
        };
        for (payload, sig) in &signatures {
            for (key, pem) in keys {
                if wanted.verify(pem, payload, sig).is_ok() {
                    return Ok(Signer::Key(key.clone()));
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
        assert!(e.contains("needs exactly one of keyPath"), "{e}");
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

    fn key_data() -> String {
        let (_, public) = signature::generate_key(b"").unwrap();
        base64::engine::general_purpose::STANDARD.encode(&public)
    }

    /// The policy error for a `sigstoreSigned` requirement with these extra fields (JSON text).
    fn sigstore_error(extra: &str) -> String {
        let data = key_data();
        policy(&format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{data}"{extra}}}]}}"#
        ))
        .unwrap_err()
        .to_string()
    }

    /// The identity a policy with `signedIdentity: identity` (JSON text) parses to.
    fn parsed_identity(identity: &str) -> Result<Identity, String> {
        let data = key_data();
        let p = policy(&format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{data}", "signedIdentity": {identity}}}]}}"#
        ))
        .map_err(|e| e.to_string())?;
        match &p.default[..] {
            [Requirement::Sigstore { identity, .. }] => Ok(identity.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signed_identity_matches_as_containers_image_matches() {
        let d = format!("@sha256:{}", "0123456789abcdef".repeat(4));
        let d2 = format!("@sha256:{}", "a".repeat(64));
        let rhel = "registry.access.redhat.com/rhel7/rhel";
        let exact_ref = r#"{"type": "exactReference", "dockerReference": "busybox:latest"}"#;
        let exact_repo =
            |r: &str| format!(r#"{{"type": "exactRepository", "dockerRepository": "{r}"}}"#);
        let remap = |p: &str, sp: &str| {
            format!(r#"{{"type": "remapIdentity", "prefix": "{p}", "signedPrefix": "{sp}"}}"#)
        };
        let default = r#"{"type": "matchRepoDigestOrExact"}"#.to_string();
        let exact = r#"{"type": "matchExact"}"#.to_string();
        let repository = r#"{"type": "matchRepository"}"#.to_string();
        // (identity, image the user names, the signature's docker-reference, accepted)
        let vectors: Vec<(String, String, String, bool)> = vec![
            (
                default.clone(),
                "busybox:latest".into(),
                "busybox:latest".into(),
                true,
            ),
            (
                default.clone(),
                "docker.io/library/busybox:latest".into(),
                "busybox:latest".into(),
                true,
            ),
            (
                default.clone(),
                "busybox:latest".into(),
                "busybox:notlatest".into(),
                false,
            ),
            (
                default.clone(),
                "busybox:latest".into(),
                "busybox".into(),
                false,
            ),
            (
                default.clone(),
                format!("busybox{d}"),
                "busybox".into(),
                false,
            ),
            (
                default.clone(),
                format!("busybox{d}"),
                "busybox:latest".into(),
                true,
            ),
            (
                default.clone(),
                format!("busybox{d}"),
                format!("busybox{d2}"),
                true,
            ),
            (
                default.clone(),
                "busybox:latest".into(),
                format!("busybox{d}"),
                false,
            ),
            (
                default.clone(),
                "busybox:latest".into(),
                format!("busybox:latest{d}"),
                false,
            ),
            (default.clone(), format!("{rhel}:7.2.3"), rhel.into(), false),
            (
                default.clone(),
                "hostname/library/busybox:latest".into(),
                "busybox:notlatest".into(),
                false,
            ),
            (
                default.clone(),
                "busybox:latest".into(),
                "UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES".into(),
                false,
            ),
            (
                exact.clone(),
                "busybox:latest".into(),
                "busybox:latest".into(),
                true,
            ),
            (
                exact.clone(),
                format!("library/busybox{d}"),
                format!("busybox{d}"),
                true,
            ),
            (
                exact.clone(),
                format!("busybox{d}"),
                "busybox:latest".into(),
                false,
            ),
            (
                exact.clone(),
                format!("busybox{d}"),
                format!("busybox{d2}"),
                false,
            ),
            (
                exact.clone(),
                "busybox:latest".into(),
                "busybox".into(),
                false,
            ),
            (
                repository.clone(),
                "busybox:latest".into(),
                "busybox:notlatest".into(),
                true,
            ),
            (
                repository.clone(),
                format!("{rhel}:7.2.3"),
                rhel.into(),
                true,
            ),
            (
                repository.clone(),
                "busybox:latest".into(),
                format!("busybox{d}"),
                true,
            ),
            (
                repository.clone(),
                "busybox:latest".into(),
                "notbusybox:latest".into(),
                false,
            ),
            (
                repository.clone(),
                "busybox:latest".into(),
                format!("{rhel}:7.2.3"),
                false,
            ),
            (
                exact_ref.into(),
                "other:1".into(),
                "docker.io/library/busybox:latest".into(),
                true,
            ),
            (
                exact_ref.into(),
                "busybox:latest".into(),
                "busybox:notlatest".into(),
                false,
            ),
            (
                exact_ref.into(),
                "busybox:latest".into(),
                "busybox".into(),
                false,
            ),
            (
                exact_repo("busybox"),
                "other:1".into(),
                "busybox:notlatest".into(),
                true,
            ),
            (
                exact_repo("library/busybox"),
                "other:1".into(),
                "busybox".into(),
                true,
            ),
            (
                exact_repo("busybox:latest"),
                "busybox:latest".into(),
                "hostname/library/busybox:notlatest".into(),
                false,
            ),
            (
                remap("mirror.example", "public.com"),
                "mirror.example/busybox:1".into(),
                "public.com/busybox:1".into(),
                true,
            ),
            (
                remap("mirror.example", "public.com"),
                "mirror.example/busybox:1".into(),
                "public.com/busybox:not1".into(),
                false,
            ),
            (
                remap("mirror.example", "docker.io/library"),
                "mirror.example/busybox:latest".into(),
                "busybox:latest".into(),
                true,
            ),
            (
                remap("docker.io/library", "original.com"),
                "copied:latest".into(),
                "original.com/copied:latest".into(),
                true,
            ),
            (
                remap("docker.io/library", "original.com"),
                "copied:latest".into(),
                "original.com/ns/copied:latest".into(),
                false,
            ),
            (
                remap("does-not-match.com", "x.rewritten"),
                "busybox:latest".into(),
                "busybox:latest".into(),
                true,
            ),
            (
                remap("mirror.example/ns/image", "vendor.example:5000"),
                format!("mirror.example/ns/image{d}"),
                format!("vendor.example:5000{d}"),
                false,
            ),
            (
                remap("example.com:5000", "x.example"),
                "example.com:50000/image:t".into(),
                "x.example/image:t".into(),
                false,
            ),
        ];
        assert_eq!(vectors.len(), 36);
        for (n, (identity, image, signed, want)) in vectors.iter().enumerate() {
            let rule = parsed_identity(identity).unwrap_or_else(|e| panic!("#{}: {e}", n + 1));
            let intended = ImageName::parse(image).unwrap().identity();
            assert_eq!(
                rule.accepts(&intended, signed),
                *want,
                "#{}: {identity} for {image}, signed {signed}",
                n + 1
            );
        }
        // No signedIdentity is the default.
        let data = key_data();
        let p = policy(&format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{data}"}}]}}"#
        ))
        .unwrap();
        assert!(matches!(
            &p.default[..],
            [Requirement::Sigstore {
                identity: Identity::MatchRepoDigestOrExact,
                ..
            }]
        ));
    }

    #[test]
    fn the_identity_is_the_name_asked_for_not_the_mirrors() {
        // registries.conf sends docker.io to a mirror at 127.0.0.1:5000; the user pulls
        // busybox:1.36 from it. The intended identity is the user's name.
        let intended = ImageName::parse("busybox:1.36").unwrap().identity();
        let default = Identity::MatchRepoDigestOrExact;
        assert!(default.accepts(&intended, "docker.io/library/busybox:1.36"));
        assert!(!default.accepts(&intended, "127.0.0.1:5000/library/busybox:1.36"));
        let remap = parsed_identity(
            r#"{"type": "remapIdentity", "prefix": "docker.io", "signedPrefix": "127.0.0.1:5000"}"#,
        )
        .unwrap();
        assert!(remap.accepts(&intended, "127.0.0.1:5000/library/busybox:1.36"));
        assert!(!remap.accepts(&intended, "docker.io/library/busybox:1.36"));
        // What `wpod sign` writes verifies under the default, for a tag and for a digest.
        let d = format!("sha256:{}", "b".repeat(64));
        for image in [
            "reg.example:5000/team/app:1.0".to_string(),
            format!("app@{d}"),
        ] {
            let name = ImageName::parse(&image).unwrap();
            assert!(
                default.accepts(&name.identity(), &name.signed_reference()),
                "{image}"
            );
        }
    }

    #[test]
    fn signed_identity_is_validated_as_containers_image_validates_it() {
        let refused = |identity: &str, want: &str| {
            let e = parsed_identity(identity).unwrap_err();
            assert!(
                e.contains(want) && e.contains("default.signedIdentity"),
                "{identity}: {e}"
            );
        };
        refused(
            r#"{"type": "exactReference", "dockerReference": "busybox"}"#,
            r#"dockerReference "busybox" contains neither a tag nor digest"#,
        );
        refused(
            r#"{"type": "exactReference"}"#,
            r#"Key "dockerReference" missing in a JSON object"#,
        );
        refused(
            r#"{"type": "matchRepository", "x": 1}"#,
            r#"Unknown key "x""#,
        );
        refused(
            r#"{"type": "matchExact", "dockerReference": "x"}"#,
            r#"Unknown key "dockerReference""#,
        );
        refused(
            r#"{"type": "remapIdentity", "prefix": "busybox", "signedPrefix": "docker.io"}"#,
            r#"prefix "busybox" is not valid"#,
        );
        refused(
            r#"{"type": "remapIdentity", "prefix": "docker.io", "signedPrefix": ""}"#,
            r#"signedPrefix "" is not valid"#,
        );
        refused(
            r#"{"type": "remapIdentity", "prefix": "example.com/ns:tag", "signedPrefix": "docker.io"}"#,
            r#"prefix "example.com/ns:tag" is not valid"#,
        );
        refused(
            r#"{"type": "remapIdentity", "prefix": "docker.io"}"#,
            r#"Key "signedPrefix" missing"#,
        );
        refused(
            r#"{"type": "exactRepository", "dockerRepository": "UPPER/x"}"#,
            r#"Invalid format of dockerRepository "UPPER/x""#,
        );
        refused(
            r#"{"type": "exactReference", "dockerReference": "NOT VALID"}"#,
            r#"Invalid format of dockerReference "NOT VALID""#,
        );
        refused(
            r#"{"type": "foo"}"#,
            r#"Unknown policy reference match type "foo""#,
        );
        refused(r#"{}"#, r#"Key "type" missing in a JSON object"#);
        refused(r#"{"type": 1}"#, "not a string");
        refused("null", "is null");
        refused(
            r#"{"type": "matchExact", "type": "matchRepository"}"#,
            r#"Duplicate key "type""#,
        );
        // The registries of identity fields are spelled as image names spell them.
        refused(
            r#"{"type": "exactReference", "dockerReference": "127.1:5000/x:1"}"#,
            r#"is spelled "127.0.0.1:5000""#,
        );
        refused(
            r#"{"type": "exactRepository", "dockerRepository": "LOCALHOST:5000/x"}"#,
            r#""localhost:5000""#,
        );
        refused(
            r#"{"type": "remapIdentity", "prefix": "docker.io", "signedPrefix": "reg.example:0443"}"#,
            "default port",
        );
        // Valid forms.
        for ok in [
            r#"{"type": "matchExact"}"#,
            r#"{"type": "matchRepoDigestOrExact"}"#,
            r#"{"type": "exactRepository", "dockerRepository": "busybox:latest"}"#,
            r#"{"type": "remapIdentity", "prefix": "docker.io", "signedPrefix": "docker.io/library"}"#,
            r#"{"type": "remapIdentity", "prefix": "example.com:5000/ns/repo", "signedPrefix": "localhost"}"#,
        ] {
            parsed_identity(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let both = format!(
            r#"{{"type": "exactReference", "dockerReference": "busybox:1@sha256:{}"}}"#,
            "c".repeat(64)
        );
        parsed_identity(&both).unwrap();
    }

    #[test]
    fn requirements_refuse_unknown_keys_and_take_exactly_one_key_source() {
        assert!(sigstore_error(r#", "bogus": 1"#).contains("unknown field `bogus`"));
        assert!(
            sigstore_error(r#", "signedIdentty": {"type": "matchRepository"}"#)
                .contains("unknown field `signedIdentty`")
        );
        let e = policy(r#"{"default": [{"type": "reject", "x": 1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = policy(r#"{"default": [{"type": "insecureAcceptAnything", "x": 1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = sigstore_error(r#", "keyPath": "/etc/wpod/team.pub""#);
        assert!(
            e.contains("exactly one of keyPath, keyPaths, keyData and keyDatas"),
            "{e}"
        );
        let e = policy(r#"{"default": [{"type": "sigstoreSigned", "keyPaths": []}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#""keyPaths" contains no entries"#), "{e}");
        let e = sigstore_error(r#", "rekorPublicKeyDatas": ["eA=="]"#);
        assert!(e.contains("rekorPublicKeyData"), "{e}");
        // keyDatas: several keys inline.
        let (a, b) = (key_data(), key_data());
        let p = policy(&format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyDatas": ["{a}", "{b}"]}}]}}"#
        ))
        .unwrap();
        match &p.default[..] {
            [Requirement::Sigstore { keys, .. }] => {
                assert_eq!(keys.len(), 2);
                assert_eq!(keys[1].0, "default.keyDatas[1]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scopes_spell_registries_as_image_names_do() {
        let scoped = |scope: &str| {
            policy(&format!(
                r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
                    "transports": {{"docker": {{"{scope}": [{{"type": "reject"}}]}}}}}}"#
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        for ok in [
            "",
            "127.0.0.1:5000",
            "127.0.0.1:5000/team/app:1",
            "docker.io/library/busybox",
            "*.example.com",
            "localhost:5000/x",
        ] {
            scoped(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (scope, canonical) in [
            ("127.1:5000", "127.0.0.1:5000"),
            ("2130706433:5000/x", "127.0.0.1:5000"),
            ("LOCALHOST:5000/x", "localhost:5000"),
            ("localhost:029204", "localhost:29204"),
            ("*.Example.com", "example.com"),
            ("quay.io:443/org", "quay.io"),
        ] {
            let e = scoped(scope).unwrap_err();
            assert!(
                e.contains(&format!("transports.docker.\"{scope}\""))
                    && e.contains(&format!("\"{canonical}\"")),
                "{scope}: {e}"
            );
        }
        assert!(scoped("0.0.0.0:5000").unwrap_err().contains("unspecified"));
    }

    #[test]
    fn an_identity_failure_says_what_was_signed_and_what_would_accept_it() {
        let intended = ImageName::parse("reg.example/x:1.0").unwrap().identity();
        let digest = Digest::of(b"m");
        let wanted = Wanted {
            digest: &digest,
            intended: &intended,
            identity: &Identity::MatchRepoDigestOrExact,
        };
        let e = SignatureError::Identity {
            signed: "reg.example/x".into(),
        };
        let reason = wanted.reason(&e);
        assert!(
            reason.contains("it is for \"reg.example/x\", which signedIdentity matchRepoDigestOrExact (the default) does not accept for reg.example/x:1.0")
                && reason.contains("matchRepository"),
            "{reason}"
        );
        let reason = wanted.reason(&SignatureError::Identity {
            signed: "reg.example/x:2.0".into(),
        });
        assert!(!reason.contains("cosign"), "{reason}");
    }
}
