//! The objects a Pod refers to, written in the same file as separate documents (as
//! `podman kube play` accepts them): `v1 ConfigMap`, `v1 Secret` and `v1 PersistentVolumeClaim`.
//! A pod's `env[].valueFrom`, `envFrom` and `configMap`/`secret`/`projected`/
//! `persistentVolumeClaim` volumes name them; the plan resolves those names.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

use super::decode::{Decode, Decoder, Node};
use super::diag::SourceMap;
use super::names;
use super::quantity;

/// Every object of one manifest file besides its pods, by name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Objects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    pub claims: BTreeMap<String, Claim>,
}

/// A `v1 ConfigMap`: `data` (text) and `binaryData` (base64) as one map of bytes.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigMap {
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
    #[serde(skip)]
    pub source: SourceMap,
}

/// A `v1 Secret`: `data` (base64) and `stringData` (text, which wins, as the API server merges
/// it) as one map of bytes.
#[derive(Clone, Serialize)]
pub struct Secret {
    pub name: String,
    #[serde(skip)]
    pub data: BTreeMap<String, Vec<u8>>,
    #[serde(skip)]
    pub source: SourceMap,
}

impl std::fmt::Debug for Secret {
    /// A secret's values never reach a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A `v1 PersistentVolumeClaim`: a named volume kept under wpod's state, which outlives the
/// pods that mount it (as podman's named volumes).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub name: String,
    /// `spec.resources.requests.storage`, in bytes (recorded; a directory volume is not sized).
    pub storage_bytes: Option<u64>,
    /// `ReadOnlyMany` alone: every mount of it is read-only.
    pub read_only: bool,
    #[serde(skip)]
    pub source: SourceMap,
}

/// The metadata wpod reads from an object: its name (a DNS subdomain, as Kubernetes names
/// ConfigMaps and Secrets). Labels and annotations are accepted and not used.
struct Meta {
    name: String,
}

impl Decode for Meta {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let name_path = format!("{path}.name");
        let meta = d.object(node, path, |f| {
            let name: Option<String> = f.req("name");
            let _: Option<String> = f.opt("namespace");
            let _: Option<BTreeMap<String, String>> = f.opt("labels");
            let _: Option<BTreeMap<String, String>> = f.opt("annotations");
            name
        })??;
        if let Err(e) = names::dns1123_subdomain(&meta) {
            let loc = d.map.locate(&name_path);
            d.error_at(loc, &name_path, e);
            return None;
        }
        Some(Meta { name: meta })
    }
}

/// Checks a key of `data` as the API server does: letters, digits, `-`, `_` and `.`, not `.`
/// or `..`, at most 253 characters (it becomes a file name in a volume).
fn check_key(d: &mut Decoder, path: &str, key: &str) -> bool {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && !key.starts_with("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        let field = format!("{path}.{key}");
        let loc = d.map.locate(&field);
        d.error_at(
            loc,
            &field,
            "a key must consist of letters, digits, '-', '_' or '.', at most 253, and not be \".\" or start with \"..\"",
        );
    }
    ok
}

/// The base64 values of `data`/`binaryData`, decoded; a bad one is a located error.
fn decode_base64(
    d: &mut Decoder,
    path: &str,
    values: BTreeMap<String, String>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (key, text) in values {
        if !check_key(d, path, &key) {
            continue;
        }
        // Kubernetes' base64 is the standard alphabet with padding; YAML folding may leave
        // whitespace inside.
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => {
                out.insert(key, bytes);
            }
            Err(e) => {
                let field = format!("{path}.{key}");
                let loc = d.map.locate(&field);
                d.error_at(
                    loc,
                    &field,
                    format!("not base64 ({e}); write the value base64-encoded, or put it in stringData as text"),
                );
            }
        }
    }
    out
}

fn text_data(
    d: &mut Decoder,
    path: &str,
    values: BTreeMap<String, String>,
) -> BTreeMap<String, Vec<u8>> {
    values
        .into_iter()
        .filter(|(k, _)| check_key(d, path, k))
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

impl Objects {
    /// Adds a decoded document; a second object of one kind and name is an error at it.
    pub(super) fn add(&mut self, object: Object, d: &mut Decoder) {
        let (kind, name, taken) = match object {
            Object::ConfigMap(c) => {
                let name = c.name.clone();
                (
                    "ConfigMap",
                    name.clone(),
                    self.config_maps.insert(name, c).is_some(),
                )
            }
            Object::Secret(s) => {
                let name = s.name.clone();
                (
                    "Secret",
                    name.clone(),
                    self.secrets.insert(name, s).is_some(),
                )
            }
            Object::Claim(c) => {
                let name = c.name.clone();
                (
                    "PersistentVolumeClaim",
                    name.clone(),
                    self.claims.insert(name, c).is_some(),
                )
            }
        };
        if taken {
            let loc = d.map.locate("metadata.name");
            d.error_at(
                loc,
                "metadata.name",
                format!("a second {kind} named \"{name}\"; names of one kind are unique among the objects pods see (this file and any --configmap file)"),
            );
        }
    }
}

/// One non-Pod document of a manifest.
pub enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
    Claim(Claim),
}

/// The kinds of document wpod reads besides `Pod`.
pub const KINDS: &[&str] = &["ConfigMap", "Secret", "PersistentVolumeClaim"];

/// Decodes a document of one of [`KINDS`] (its `apiVersion` and `kind` already read by the
/// caller's `fields`).
pub fn decode(f: &mut super::decode::Fields<'_, '_>, kind: &str) -> Option<Object> {
    let meta: Option<Meta> = f.req("metadata");
    match kind {
        "ConfigMap" => {
            let data: BTreeMap<String, String> = f.opt("data").unwrap_or_default();
            let binary: BTreeMap<String, String> = f.opt("binaryData").unwrap_or_default();
            let _: Option<bool> = f.opt("immutable");
            let mut all = text_data(f.d, "data", data);
            for (k, v) in decode_base64(f.d, "binaryData", binary) {
                if all.insert(k.clone(), v).is_some() {
                    let field = format!("binaryData.{k}");
                    let loc = f.d.map.locate(&field);
                    f.d.error_at(
                        loc,
                        &field,
                        "the key is in data too; keep it in one of them",
                    );
                }
            }
            Some(Object::ConfigMap(ConfigMap {
                name: meta?.name,
                data: all,
                source: f.d.map.clone(),
            }))
        }
        "Secret" => {
            let data: BTreeMap<String, String> = f.opt("data").unwrap_or_default();
            let string_data: BTreeMap<String, String> = f.opt("stringData").unwrap_or_default();
            let _: Option<String> = f.opt("type");
            let _: Option<bool> = f.opt("immutable");
            let mut all = decode_base64(f.d, "data", data);
            all.extend(text_data(f.d, "stringData", string_data));
            Some(Object::Secret(Secret {
                name: meta?.name,
                data: all,
                source: f.d.map.clone(),
            }))
        }
        _ => {
            let spec: Option<ClaimSpec> = f.opt("spec");
            let spec = spec.unwrap_or_default();
            Some(Object::Claim(Claim {
                name: meta?.name,
                storage_bytes: spec.storage_bytes,
                read_only: spec.access_modes.iter().all(|m| m == "ReadOnlyMany")
                    && !spec.access_modes.is_empty(),
                source: f.d.map.clone(),
            }))
        }
    }
}

#[derive(Default)]
struct ClaimSpec {
    access_modes: Vec<String>,
    storage_bytes: Option<u64>,
}

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

impl Decode for ClaimSpec {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&[
                "dataSource",
                "dataSourceRef",
                "selector",
                "volumeAttributesClassName",
                "volumeName",
            ]);
            let modes_path = f.child("accessModes");
            let access_modes: Vec<String> = f.list("accessModes");
            for (i, m) in access_modes.iter().enumerate() {
                if !ACCESS_MODES.contains(&m.as_str()) {
                    let field = format!("{modes_path}[{i}]");
                    let loc = f.d.map.locate(&field);
                    f.d.error_at(
                        loc,
                        &field,
                        format!(
                            "unknown access mode \"{m}\"; write one of {}",
                            ACCESS_MODES.join(", ")
                        ),
                    );
                }
            }
            // Accepted for manifests written for a cluster: on one host the claim is a
            // directory whatever its class or mode.
            let _: Option<String> = f.opt("storageClassName");
            let _: Option<String> = f.opt("volumeMode");
            let resources: Option<ClaimResources> = f.opt("resources");
            ClaimSpec {
                access_modes,
                storage_bytes: resources.and_then(|r| r.storage_bytes),
            }
        })
    }
}

struct ClaimResources {
    storage_bytes: Option<u64>,
}

impl Decode for ClaimResources {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let requests_path = format!("{path}.requests");
        let requests = d.object(node, path, |f| {
            let _: Option<BTreeMap<String, String>> = f.opt("limits");
            f.opt::<BTreeMap<String, String>>("requests")
        })?;
        let storage = requests.and_then(|r| r.get("storage").cloned());
        let storage_bytes = match storage.map(|s| quantity::bytes(&s)) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                let field = format!("{requests_path}.storage");
                let loc = d.map.locate(&field);
                d.error_at(loc, &field, e.to_string());
                None
            }
            None => None,
        };
        Some(ClaimResources { storage_bytes })
    }
}
