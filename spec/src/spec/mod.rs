//! Pod manifests: Kubernetes `v1 Pod` YAML read into typed values, with every problem located.
//!
//! `load` is the single entry point: it parses, decodes and validates a file and returns either
//! its pods or all of its problems as `file:line:col: field.path: message` diagnostics.

mod container;
mod decode;
mod diag;
mod enums;
pub mod env;
pub mod names;
pub mod objects;
mod pod;
pub mod quantity;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

pub use container::{
    AppArmorProfile, Capabilities, Container, ContainerPort, EnvVar, ExecAction, GrpcAction,
    Handler, HttpGetAction, HttpHeader, Lifecycle, PodSecurityContext, Probe, ResourceList,
    Resources, SecurityContext, SleepAction, TcpSocketAction, VolumeMount, SAFE_SYSCTLS,
};
pub use decode::did_you_mean;
pub use decode::IntOrString;
pub use diag::{Diagnostic, Diagnostics, Loc, SourceMap};
pub use enums::{
    Capability, DnsPolicy, HostPathType, Protocol, PullPolicy, RestartPolicy, Role, SeccompProfile,
    StorageMedium, CAPABILITIES,
};
pub use names::PodName;
pub use objects::{Claim, ConfigMap, Objects, Secret};
pub use pod::{
    Annotations, ClaimRef, DownwardFile, EmptyDir, HostAlias, HostPath, Ignored, ImageVolume,
    KeyToPath, NodeRequirement, NodeSelectorTerm, ObjectMeta, ObjectProjection, Pod, PodDnsConfig,
    PodDnsOption, PodSpec, Projected, Projection, Volume, VolumeSource, MAX_HANDLES_ANNOTATION,
    MIN_SIDECAR_HANDLES, NETWORK_ANNOTATION, OUTBOUND_PREFIX,
};

use decode::{loc_of, Decoder};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}", read_message(.0))]
    /// The message includes the OS error: no source, so the chain says it once.
    Read(crate::files::ReadError),
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<crate::files::ReadError> for SpecError {
    fn from(e: crate::files::ReadError) -> Self {
        SpecError::Read(e)
    }
}

fn read_message(e: &crate::files::ReadError) -> String {
    use crate::files::ReadError;
    match e {
        ReadError::Io { path, error } => {
            format!("cannot read manifest {}: {error}", path.display())
        }
        other => format!("cannot read the manifest: {other}"),
    }
}

/// Like [`load`], for manifest text that claims to come from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Pod>, SpecError> {
    let (pods, diags) = parse_all(path, text);
    if diags.is_empty() {
        Ok(pods)
    } else {
        Err(SpecError::Invalid(Diagnostics(diags)))
    }
}

/// Every Pod document that could be decoded (even with problems, so later checks such as image
/// resolution can still run and report theirs) and every problem found, in file order.
pub fn parse_all(path: &Path, text: &str) -> (Vec<Pod>, Vec<Diagnostic>) {
    parse_with_objects(path, text, &[])
}

/// Like [`parse_all`], with more ConfigMaps, Secrets and claims from files of their own (what
/// `podman kube play --configmap FILE` reads): every pod sees the objects of every file, and a
/// name is unique across them. Such a file holds no Pod.
pub fn parse_with_objects(
    path: &Path,
    text: &str,
    object_files: &[(PathBuf, String)],
) -> (Vec<Pod>, Vec<Diagnostic>) {
    let mut objects = Objects::default();
    let mut diags = Vec::new();
    let mut pods = read_documents(path, text, FileRole::Manifest, &mut objects, &mut diags);
    for (file, text) in object_files {
        read_documents(file, text, FileRole::Objects, &mut objects, &mut diags);
    }
    // Every pod sees every object (a ConfigMap may serve several pods).
    let objects = Arc::new(objects);
    for pod in &mut pods {
        pod.objects = objects.clone();
        pod.mount_read_only_volumes();
        pod.merge_security_context();
    }
    sort_diagnostics(&mut diags);
    (pods, diags)
}

/// What a file given to [`parse_with_objects`] may hold.
#[derive(Clone, Copy, PartialEq)]
enum FileRole {
    /// Pods, and the objects they use.
    Manifest,
    /// Objects only (`--configmap`).
    Objects,
}

/// Decodes the documents of one file: its pods are returned, its objects added to `objects`.
fn read_documents(
    path: &Path,
    text: &str,
    role: FileRole,
    objects: &mut Objects,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Pod> {
    let at_start = |message: String| Diagnostic {
        file: path.to_path_buf(),
        loc: Loc { line: 1, col: 1 },
        path: String::new(),
        message,
    };
    if let Some(diag) = too_deep(path, text) {
        diags.push(diag);
        return Vec::new();
    }
    let docs = match MarkedYaml::load_from_str(text) {
        Ok(docs) => docs,
        Err(e) => {
            let m = e.marker();
            diags.push(Diagnostic {
                loc: Loc {
                    line: m.line(),
                    col: m.col() + 1,
                },
                ..at_start(format!("invalid YAML: {}", e.info()))
            });
            return Vec::new();
        }
    };
    let text: Arc<str> = Arc::from(text);
    let mut pods = Vec::new();
    let is_empty = |d: &MarkedYaml| matches!(d.data, YamlData::Value(Scalar::Null));
    for doc in docs.iter().filter(|d| !is_empty(d)) {
        let mut d = Decoder::with_text(SourceMap::new(path, loc_of(doc)), text.clone());
        match decode_document(&mut d, doc) {
            Some(Document::Pod(_)) if role == FileRole::Objects => d.error_at(
                loc_of(doc),
                "kind",
                format!(
                    "a Pod in a --configmap file, which holds only the objects pods use ({}); \
                     give the pod's file as the manifest",
                    objects::KINDS.join(", ")
                ),
            ),
            Some(Document::Pod(pod)) => {
                validate::check(&pod, &mut d.diags);
                pods.push(*pod);
            }
            Some(Document::Object(object)) => objects.add(object, &mut d),
            None => {}
        }
        diags.append(&mut d.diags);
    }
    if docs.iter().all(is_empty) {
        diags.push(at_start(match role {
            FileRole::Manifest => {
                "the file holds no manifest; write a `kind: Pod` document".to_string()
            }
            FileRole::Objects => format!(
                "the file holds no document; a --configmap file holds {}",
                objects::KINDS.join(", ")
            ),
        }));
    }
    pods
}

/// How deeply collections may nest. A Pod nests about ten levels; the YAML tree is built and
/// dropped recursively, so thousands of levels (`- - - - ...`) would overflow the stack.
const MAX_DEPTH: usize = 64;

/// Checks nesting with the event parser (which keeps its own stack on the heap) before the tree
/// is built: the first collection nested too deeply is the error.
fn too_deep(path: &Path, text: &str) -> Option<Diagnostic> {
    use saphyr_parser::{Event, Parser};
    let mut depth = 0usize;
    for item in Parser::new_from_str(text) {
        // Syntax errors are left to the loader, which reports them with the same words.
        let Ok((event, span)) = item else {
            return None;
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Diagnostic {
                        file: path.to_path_buf(),
                        loc: Loc {
                            line: span.start.line(),
                            col: span.start.col() + 1,
                        },
                        path: String::new(),
                        message: format!(
                            "collections nest more than {MAX_DEPTH} levels deep here; a Pod \
                             manifest needs far fewer: check the indentation"
                        ),
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// File order; the same problem found twice is reported once.
pub fn sort_diagnostics(diags: &mut Vec<Diagnostic>) {
    diags.sort_by_key(|d| d.loc);
    diags.dedup();
}

/// One document of a manifest file.
enum Document {
    Pod(Box<Pod>),
    Object(objects::Object),
}

/// Decodes one YAML document: a `v1` Pod, or an object pods refer to ([`objects::KINDS`]).
fn decode_document(d: &mut Decoder, doc: &MarkedYaml) -> Option<Document> {
    let decoded = d.object(doc, "", |f| {
        f.unsupported(&["status"]);
        let api_version: Option<String> = f.req("apiVersion");
        let kind: Option<String> = f.req("kind");
        let kind = kind.unwrap_or_default();
        if kind != "Pod" && !objects::KINDS.contains(&kind.as_str()) {
            let loc = f.d.map.locate("kind");
            f.d.error_at(
                loc,
                "kind",
                format!(
                    "kind \"{kind}\" is not supported: wpod runs `kind: Pod` documents, with the \
                     {} they use",
                    objects::KINDS.join(", ")
                ),
            );
            f.skip_rest();
            return None;
        }
        if let Some(v) = api_version.filter(|v| v != "v1") {
            let loc = f.d.map.locate("apiVersion");
            f.d.error_at(
                loc,
                "apiVersion",
                format!("\"{v}\" is not the API version of a {kind}; write apiVersion: v1"),
            );
        }
        if kind != "Pod" {
            return objects::decode(f, &kind).map(Err);
        }
        let metadata = f.req("metadata");
        let spec = f.req("spec");
        Some(Ok((metadata?, spec?)))
    })??;
    match decoded {
        Ok((metadata, spec)) => Some(Document::Pod(Box::new(Pod {
            metadata,
            spec,
            source: d.map.clone(),
            objects: Arc::default(),
        }))),
        Err(object) => Some(Document::Object(object)),
    }
}

impl Pod {
    /// Volumes whose files wpod writes (ConfigMaps, Secrets, the downward API) are mounted
    /// read-only whatever a mount says, as the kubelet mounts them (their contents are the
    /// pod's objects); so are claims the pod takes `readOnly` or that are `ReadOnlyMany`.
    fn mount_read_only_volumes(&mut self) {
        let objects = self.objects.clone();
        let read_only = |source: &VolumeSource| match source {
            VolumeSource::Projected(_) | VolumeSource::Image(_) => true,
            VolumeSource::Claim(c) => {
                c.read_only
                    || objects
                        .claims
                        .get(&c.claim_name)
                        .is_some_and(|o| o.read_only)
            }
            _ => false,
        };
        let projected: Vec<String> = self
            .spec
            .volumes
            .iter()
            .filter(|v| read_only(&v.source))
            .map(|v| v.name.clone())
            .collect();
        let spec = &mut self.spec;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut())
        {
            for m in c.volume_mounts.iter_mut() {
                if projected.contains(&m.name) {
                    m.read_only = true;
                }
            }
        }
    }

    /// The pod's `securityContext` under each container's, as the kubelet merges them: a
    /// container's `runAsUser`, `runAsGroup`, `runAsNonRoot` and `seccompProfile` win over the
    /// pod's.
    fn merge_security_context(&mut self) {
        let pod = self.spec.security_context.clone();
        let spec = &mut self.spec;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut())
        {
            let any = pod.run_as_user.is_some()
                || pod.run_as_group.is_some()
                || pod.run_as_non_root.is_some()
                || pod.seccomp_profile.is_some()
                || pod.app_armor.is_some();
            if !any {
                continue;
            }
            let sc = c.security_context.get_or_insert_with(Default::default);
            sc.run_as_user = sc.run_as_user.or(pod.run_as_user);
            sc.run_as_group = sc.run_as_group.or(pod.run_as_group);
            sc.run_as_non_root = sc.run_as_non_root.or(pod.run_as_non_root);
            if sc.app_armor.is_none() {
                sc.app_armor = pod.app_armor.clone();
            }
            if sc.seccomp_profile.is_none() {
                sc.seccomp_profile = pod.seccomp_profile;
                sc.seccomp_localhost_profile = pod.seccomp_localhost_profile.clone();
            }
        }
    }

    /// The manifest's directory, against which relative image paths resolve.
    pub fn manifest_dir(&self) -> &Path {
        self.source.file.parent().unwrap_or(Path::new("."))
    }
}

#[cfg(test)]
mod tests;
