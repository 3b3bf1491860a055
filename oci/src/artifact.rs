//! Wasm sidecars as OCI artifacts, in the CNCF TAG-Runtime layout that `wkg oci push` writes: an
//! OCI image manifest whose config is `application/vnd.wasm.config.v0+json` (architecture
//! `wasm`, os `wasip2`, the layer digests, the component's imports and exports) and whose one
//! layer is the component itself, `application/wasm`.
//!
//! The config is only for showing what a sidecar needs before it is downloaded: once the bytes
//! are here, the imports are recomputed from them, and a config that disagrees is refused.

use std::collections::{BTreeMap, BTreeSet};

use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use serde::{Deserialize, Serialize};

use super::store::Digest;
use crate::component::{self, Interface};

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The manifest annotation naming the wpod WIT packages the sidecar imports
/// (`wpod:sidecar@0.1.0`), for `wpod search` and for hosts deciding whether they can run it.
pub const WIT_ANNOTATION: &str = "dev.wpod.sidecar.wit";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const CREATED: &str = "org.opencontainers.image.created";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a Wasm component: {0}")]
    NotComponent(#[from] component::InterfaceError),
    #[error(
        "the layer is precompiled native code (a .cwasm), not a Wasm component: wpod runs only \
         components it compiles itself"
    )]
    Precompiled,
    #[error("a Wasm sidecar has exactly one layer of type {LAYER_MEDIA_TYPE}; this one has {0}")]
    Layers(String),
    #[error("its config is not a Wasm config ({0})")]
    Config(String),
    #[error(
        "its config does not say what the component imports: the config lists {declared}, \
         the component's bytes import {actual}; refusing an artifact whose metadata hides its \
         permissions"
    )]
    ImportsDisagree { declared: String, actual: String },
    #[error("the layer is {size} bytes, more than the {cap} bytes wpod accepts for a component")]
    TooLarge { size: u64, cap: u64 },
}

/// The config of a Wasm artifact.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComponentInfo {
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An artifact ready to push: its three blobs and their digests.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layer_digest: Digest,
    pub interface: Interface,
}

/// The artifact of `component`, with `annotations` (the user's win over wpod's defaults) and
/// `created` (RFC 3339) in both the config and the manifest: the same inputs give the same digest.
pub fn build(
    component: &[u8],
    mut annotations: BTreeMap<String, String>,
    created: &str,
) -> Result<Artifact, ArtifactError> {
    let interface = check_component(component)?;
    let layer_digest = Digest::of(component);
    let config = WasmConfig {
        created: Some(created.to_string()),
        author: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![layer_digest.to_string()],
        component: Some(ComponentInfo {
            exports: interface.exports.clone(),
            imports: interface.imports.clone(),
            target: None,
        }),
    };
    // Serialising these plain structs cannot fail.
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = Digest::of(&config_bytes);
    annotations
        .entry(CREATED.into())
        .or_insert_with(|| created.to_string());
    let wit = wpod_packages(&interface.imports);
    if !wit.is_empty() {
        annotations.entry(WIT_ANNOTATION.into()).or_insert(wit);
    }
    // A file name on the layer, as oras names pulled files by it (and skips layers without).
    let file = match annotations.get(TITLE) {
        Some(t) if t.ends_with(".wasm") => t.clone(),
        Some(t) => format!("{t}.wasm"),
        None => "component.wasm".to_string(),
    };
    let mut layer = descriptor(LAYER_MEDIA_TYPE, &layer_digest, component.len());
    layer.annotations = Some([(TITLE.to_string(), file)].into());
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor(CONFIG_MEDIA_TYPE, &config_digest, config_bytes.len()),
        layers: vec![layer],
        subject: None,
        artifact_type: None,
        annotations: Some(annotations),
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Ok(Artifact {
        digest: Digest::of(&manifest),
        manifest,
        config: config_bytes,
        config_digest,
        layer_digest,
        interface,
    })
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size: size as i64,
        ..Default::default()
    }
}

/// `wpod:sidecar@0.1.0` for a component importing `wpod:sidecar/lifecycle@0.1.0`, ... (sorted,
/// comma-separated; empty when it imports none).
fn wpod_packages(imports: &[String]) -> String {
    let packages: BTreeSet<String> = imports
        .iter()
        .filter(|i| i.starts_with("wpod:"))
        .map(|i| {
            let (name, version) = i.split_once('@').unwrap_or((i, ""));
            let package = name.split_once('/').map_or(name, |(p, _)| p);
            match version {
                "" => package.to_string(),
                v => format!("{package}@{v}"),
            }
        })
        .collect();
    packages.into_iter().collect::<Vec<_>>().join(",")
}

/// `created` for a new artifact: `$SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn created_now() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let time = match secs {
        Some(s) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        None => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Whether `manifest` is a Wasm sidecar rather than a container image: its config or its
/// layer says so.
pub fn is_wasm(manifest: &OciImageManifest) -> bool {
    manifest.config.media_type == CONFIG_MEDIA_TYPE
        || manifest
            .layers
            .iter()
            .any(|l| l.media_type == LAYER_MEDIA_TYPE)
}

/// The one layer of a Wasm artifact, and its config parsed; checked before anything is
/// downloaded.
pub fn layer_and_config<'m>(
    manifest: &'m OciImageManifest,
    config: &[u8],
    cap: u64,
) -> Result<(&'m OciDescriptor, WasmConfig), ArtifactError> {
    let layer = match manifest.layers.as_slice() {
        [one] if one.media_type == LAYER_MEDIA_TYPE => one,
        layers => {
            let kinds: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(ArtifactError::Layers(if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            }));
        }
    };
    let size = u64::try_from(layer.size)
        .map_err(|_| ArtifactError::Layers(format!("a layer of size {}", layer.size)))?;
    if size > cap {
        return Err(ArtifactError::TooLarge { size, cap });
    }
    let config: WasmConfig =
        serde_json::from_slice(config).map_err(|e| ArtifactError::Config(e.to_string()))?;
    if config.architecture != "wasm" {
        return Err(ArtifactError::Config(format!(
            "architecture is \"{}\", not \"wasm\"",
            config.architecture
        )));
    }
    Ok((layer, config))
}

/// What a downloaded component imports and exports, from its own bytes: refuses precompiled
/// native code and anything that is not a component.
pub fn check_component(bytes: &[u8]) -> Result<Interface, ArtifactError> {
    if wasmtime::Engine::detect_precompiled(bytes).is_some() {
        return Err(ArtifactError::Precompiled);
    }
    Ok(component::interface(bytes)?)
}

/// Refuses a config whose import list is not the component's.
pub fn check_declared(config: &WasmConfig, actual: &Interface) -> Result<(), ArtifactError> {
    let Some(declared) = &config.component else {
        // Nothing declared, nothing hidden: the review shows what the bytes import.
        return Ok(());
    };
    let d: BTreeSet<&String> = declared.imports.iter().collect();
    let a: BTreeSet<&String> = actual.imports.iter().collect();
    if d == a {
        return Ok(());
    }
    let list = |s: BTreeSet<&String>| {
        if s.is_empty() {
            "nothing".to_string()
        } else {
            s.into_iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    Err(ArtifactError::ImportsDisagree {
        declared: list(d),
        actual: list(a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component() -> Vec<u8> {
        // The smallest component: its preamble. It imports and exports nothing.
        crate::component::COMPONENT_PREAMBLE.to_vec()
    }

    #[test]
    fn the_same_component_gives_the_same_digest() {
        let a = build(&component(), BTreeMap::new(), "2026-01-01T00:00:00Z").unwrap();
        let b = build(&component(), BTreeMap::new(), "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(Digest::of(&a.manifest), a.digest);
        let c = build(&component(), BTreeMap::new(), "2026-01-02T00:00:00Z").unwrap();
        assert_ne!(a.digest, c.digest, "created is part of the artifact");
        let m: OciImageManifest = serde_json::from_slice(&a.manifest).unwrap();
        assert!(is_wasm(&m));
        let (layer, config) = layer_and_config(&m, &a.config, 1 << 20).unwrap();
        assert_eq!(layer.digest, a.layer_digest.to_string());
        assert_eq!(config.os, "wasip2");
        assert!(matches!(
            layer_and_config(&m, &a.config, 4),
            Err(ArtifactError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_config_that_hides_an_import_is_refused() {
        let actual = Interface {
            imports: vec!["wpod:sidecar/main-process@0.1.0".into()],
            exports: vec![],
        };
        let mut config = WasmConfig::default();
        assert!(check_declared(&config, &actual).is_ok());
        config.component = Some(ComponentInfo::default());
        let err = check_declared(&config, &actual).unwrap_err().to_string();
        assert!(err.contains("main-process"), "{err}");
        assert_eq!(
            wpod_packages(&[
                "wpod:sidecar/lifecycle@0.1.0".into(),
                "wasi:io/streams@0.2.0".into(),
                "wpod:sidecar/main-process@0.1.0".into()
            ]),
            "wpod:sidecar@0.1.0"
        );
    }

    #[test]
    fn precompiled_code_and_modules_are_refused() {
        assert!(matches!(
            check_component(&crate::component::MODULE_PREAMBLE),
            Err(ArtifactError::NotComponent(_))
        ));
        let engine = wasmtime::Engine::default();
        let cwasm = engine
            .precompile_component(&component())
            .expect("precompile");
        assert!(matches!(
            check_component(&cwasm),
            Err(ArtifactError::Precompiled)
        ));
    }
}
