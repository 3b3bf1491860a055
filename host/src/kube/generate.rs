//! `wpod kube generate`: the pod as plain Kubernetes YAML, each Wasm sidecar a runner container
//! (`wpod sidecar run` hosting that one component in the real pod, with the grants of the
//! manifest), nothing installed on the nodes.
//!
//! The pod is planned as `wpod run` plans it, for a node of a cluster (this host's capacity,
//! kernel and hostPath policy are not the node's). The Pod is then rewritten through Kubernetes'
//! own types (k8s-openapi): native containers as they are; each Wasm sidecar becomes a
//! container of its runner image (digest-pinned) whose command runs `wpod sidecar run` on the
//! pod's manifest (an immutable ConfigMap named by its content) and whose args are the
//! sidecar's argv, so that the kubelet expands `$(VAR)` and resolves its environment as for
//! any container. The runner is least-privileged: not root, read-only root filesystem, no
//! capabilities, RuntimeDefault seccomp, no ServiceAccount token (a sidecar granted signals to
//! the main containers runs as user 0 with `KILL` alone; its main-process view reads /proc of
//! the pod's shared PID namespace, never the Kubernetes API). What cannot map is refused by
//! name. The output is checked by a strict round-trip through the same types before it is
//! written (the Pod it starts from was read by wpod's strict parser).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::yaml;
use crate::oci::approvals::{Approval, Approvals};
use crate::plan::{ContainerPlan, Image, ManifestFiles, PodPlan, Target};
use crate::sidecars::{PreparedSidecar, SidecarError};
use crate::spec::SpecError;

/// Where the runner image holds wpod, and the component.
pub const RUNNER_BIN: &str = "/usr/local/bin/wpod";
pub const COMPONENT_PATH: &str = "/wpod/component.wasm";
/// Where the runner container finds the pod's manifest (the ConfigMap), and its state.
pub const MANIFEST_DIR: &str = "/etc/wpod";
pub const STATE_DIR: &str = "/var/run/wpod";
/// Where a runner of a sidecar from a registry finds the approvals it checks.
pub const APPROVALS_DIR: &str = "/etc/wpod-approvals";
const APPROVALS_VOLUME: &str = "wpod-approvals";
/// Where the kubelet mounts a ServiceAccount token; a runner mounts an empty directory there.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const NO_TOKEN_VOLUME: &str = "wpod-no-token";
/// Paths of the runner's own (and the kubelet's) that no volumeMount of a sidecar may be at,
/// above or under: the guest would reach them through its volume.
const RUNNER_PATHS: &[&str] = &[
    MANIFEST_DIR,
    STATE_DIR,
    APPROVALS_DIR,
    "/wpod",
    "/usr/local/bin",
    "/var/run/secrets",
    "/dev/termination-log",
    // The runner's dynamic loader and libraries.
    "/lib",
    "/lib64",
    "/usr/lib",
];
/// A ConfigMap holds at most 1 MiB.
const MAX_CONFIG_MAP_BYTES: usize = 1 << 20;
/// Variables the dynamic loader and libc read as the runner starts: a sidecar's would be the
/// runner's own, before wpod runs.
const LOADER_VARIABLES: &[&str] = &["LD_", "GLIBC_TUNABLES", "MALLOC_", "GCONV_PATH", "LOCPATH"];
/// The runner's own memory beside its guest's: its runtime, the engine and the loaded code of
/// one component (measured idle at 9 to 12 MiB; see BENCHMARKS.md), with headroom.
pub const RUNNER_MEMORY: u64 = 32 << 20;
/// The runner's user: not root, and not any image's usual user.
pub const RUNNER_UID: i64 = 65532;
/// A runner's startupProbe: every second for up to five minutes (a component compiled at
/// start may take a while), until the guest has called `ready()`.
const STARTUP_PERIOD_SECONDS: i32 = 1;
const STARTUP_FAILURES: i32 = 300;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Manifest(#[from] SpecError),
    #[error("{file}: {source}")]
    Yaml {
        file: PathBuf,
        #[source]
        source: yaml::YamlError,
    },
    #[error("{file}: {what} does not read as a Kubernetes {kind}: {message}")]
    Types {
        file: PathBuf,
        what: String,
        kind: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unmappable(String),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(
        "the generated YAML does not survive a strict round-trip through Kubernetes' types \
         ({0}); this is a bug of wpod's, please report it"
    )]
    RoundTrip(String),
}

/// What `wpod kube generate` is told.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub files: ManifestFiles,
    /// The runner image of each Wasm sidecar, by container name (`REF@sha256:...`: the image
    /// `wpod kube build` makes of the runner and the component).
    pub images: BTreeMap<String, String>,
    /// A trust policy (containers-policy.json) to write as sigstore policy-controller
    /// `ClusterImagePolicy` documents for the pod's images.
    pub policy: Option<PathBuf>,
    /// The approvals file a sidecar from a registry must be approved in (else wpod's own):
    /// checked here, and written as the ConfigMap its runner checks at each start.
    pub approvals: Option<PathBuf>,
}

/// The pod's YAML for a cluster.
pub fn generate(options: &GenerateOptions) -> Result<String, GenerateError> {
    let files = &options.files;
    let mut plans = crate::plan::load_for(files, Target::Cluster)?;
    if plans.len() != 1 {
        return Err(GenerateError::Unmappable(format!(
            "{}: wpod kube generate writes one pod, but the file holds {} Pod documents; put \
             each pod in a file of its own",
            files.manifest.display(),
            plans.len()
        )));
    }
    let (plan, approved) = with_stored_sidecars(plans.remove(0), options.approvals.as_deref())?;
    if plan.settings.network_none {
        return Err(located(
            &plan,
            format!("metadata.annotations.{}", crate::spec::NETWORK_ANNOTATION),
            "the annotation wpod.dev/network: none keeps a pod off the network on one host; on \
             Kubernetes every pod is on the cluster's network (a NetworkPolicy isolates one): \
             remove the annotation"
                .into(),
        ));
    }
    let (pod_value, mut passed) = read_documents(&files.manifest)?;
    for path in &files.objects {
        passed.extend(read_documents(path)?.1);
    }
    let pod_value = pod_value.ok_or_else(|| {
        GenerateError::Unmappable(format!("{}: no Pod document", files.manifest.display()))
    })?;
    let original: core::Pod = typed(&files.manifest, "the Pod", pod_value)?;
    for name in options.images.keys() {
        let wasm = plan
            .containers
            .iter()
            .any(|c| c.name() == name && c.image.is_wasm());
        if !wasm {
            return Err(GenerateError::Unmappable(format!(
                "--image {name}=...: the pod has no Wasm sidecar named {name}; a native \
                 container keeps the image its manifest names"
            )));
        }
    }
    let mut pod = original.clone();
    // The runners' copy of the manifest: what they plan from. Every container's command line
    // and environment are the kubelet's to give (a sidecar's to its runner), so none is in it:
    // no value of a variable (a Secret's, a password written in the manifest) lands in a
    // ConfigMap. A sidecar keeps its variables' names, which say what the runner passes on.
    let mut for_runners = original.clone();
    // kubectl's copy of a whole earlier manifest, values and all.
    if let Some(a) = for_runners.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    for c in containers_mut(pod_spec(&mut for_runners)?) {
        let sidecar = plan
            .containers
            .iter()
            .any(|p| p.name() == c.name && p.image.is_wasm());
        c.env = match sidecar {
            true => c.env.take().map(|env| {
                env.into_iter()
                    .map(|v| core::EnvVar {
                        name: v.name,
                        ..Default::default()
                    })
                    .collect()
            }),
            false => None,
        };
        c.env_from = None;
        c.command = None;
        c.args = None;
        c.lifecycle = None;
        // An exec probe's command line may hold a password (`redis-cli -a ...`).
        if !sidecar {
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
        }
    }
    let manifest =
        yaml::write(&[to_value(&for_runners)?]).map_err(|source| GenerateError::Yaml {
            file: files.manifest.clone(),
            source,
        })?;
    // Pinned in each runner's command: a ConfigMap of that name made by someone else (its name
    // can be computed) is refused, not obeyed.
    let manifest_digest = crate::oci::store::Digest::of(manifest.as_bytes()).to_string();
    let mut states = Vec::new();
    for c in &plan.containers {
        refuse_native_unmappable(&plan, c)?;
        let Image::Wasm(w) = &c.image else { continue };
        let artifact = w.reference.clone();
        let image = options.images.get(c.name()).ok_or_else(|| {
            located(
                &plan,
                format!("{}.image", c.path),
                format!(
                    "container {}: a Wasm sidecar runs on Kubernetes from an image of the \
                     runner and its component; give it with --image {}=REGISTRY/NAME@sha256:... \
                     (the image `wpod kube build` makes and pushes)",
                    c.name(),
                    c.name()
                ),
            )
        })?;
        check_pinned(c.name(), image)?;
        refuse_sidecar_unmappable(&plan, c)?;
        refuse_loader_prefixes(&plan, c, find_container(pod_spec(&mut pod)?, c.name())?)?;
        let prepared = PreparedSidecar::prepare(c)?;
        let state = format!("wpod-state-{}", states.len());
        let spec = pod_spec(&mut pod)?;
        let container = find_container(spec, c.name())?;
        *container = runner_container(
            container.clone(),
            Runner {
                image,
                component_digest: prepared.digest(),
                manifest_digest: &manifest_digest,
                state_volume: &state,
                role: c.role,
                signals_readiness: prepared.component.signals_readiness,
                view: MainView::of(&plan, c),
                artifact: artifact.as_deref(),
            },
        );
        states.push(state);
    }
    if states.is_empty() {
        let policies = image_policies(options, plan.name.as_ref(), &pod)?;
        return write_checked(&[policies, passed, vec![to_value(&pod)?]].concat());
    }

    let config_map = manifest_config_map(plan.name.as_ref(), &manifest, &pod)?;
    let config_name = config_map.metadata.name.clone().unwrap_or_default();
    let approvals_map = match approved.is_empty() {
        true => None,
        false => Some(approvals_config_map(
            plan.name.as_ref(),
            &Approvals::file_of(approved.into_values().collect()),
            &pod,
        )),
    };
    add_runner_volumes(
        &mut pod,
        &config_name,
        &states,
        approvals_map
            .as_ref()
            .and_then(|m| m.metadata.name.as_deref()),
    )?;
    let mut docs = vec![to_value(&config_map)?];
    if let Some(m) = &approvals_map {
        docs.push(to_value(m)?);
    }
    docs.extend(image_policies(options, plan.name.as_ref(), &pod)?);
    docs.extend(passed);
    docs.push(to_value(&pod)?);
    write_checked(&docs)
}

/// The plan with each registry image that is a Wasm sidecar in wpod's store, and approved
/// (in `approvals`, else wpod's own file), planned as the sidecar it is: its grants checked
/// against the component's imports as `wpod run` checks them; and the exact approval of each,
/// by its pinned reference, for the ConfigMap its runner checks. A registry image not in the
/// store is taken for a container image, as the node's runtime will take it. (No store yet:
/// nothing pulled, nothing made, no approvals read.)
fn with_stored_sidecars(
    plan: crate::plan::PodPlan,
    approvals: Option<&std::path::Path>,
) -> Result<(crate::plan::PodPlan, BTreeMap<String, Approval>), GenerateError> {
    let registry: Vec<&ContainerPlan> = plan
        .containers
        .iter()
        .filter(|c| matches!(c.image, Image::Registry { .. }))
        .collect();
    if registry.is_empty() || !crate::files::state_root().join("images").exists() {
        return Ok((plan, BTreeMap::new()));
    }
    let approvals = match approvals {
        Some(file) => Approvals::load_from(file.to_path_buf()),
        None => Approvals::load(),
    }
    .map_err(|e| GenerateError::Unmappable(e.to_string()))?;
    let store = crate::oci::store::Store::open()
        .map_err(|e| GenerateError::Unmappable(format!("cannot read wpod's image store: {e}")))?;
    let mut sidecars = BTreeMap::new();
    let mut approved = BTreeMap::new();
    for c in registry {
        let Image::Registry { name, .. } = &c.image else {
            continue;
        };
        if let Some(stored) =
            stored_sidecar(&store, name, &approvals).map_err(GenerateError::Unmappable)?
        {
            if let Some(reference) = &stored.component.reference {
                approved.insert(reference.clone(), stored.approval);
            }
            sidecars.insert(c.path.clone(), stored.component);
        }
    }
    let plan = plan
        .with_pulled_sidecars(&sidecars)
        .map_err(|d| GenerateError::Manifest(SpecError::Invalid(d)))?;
    Ok((plan, approved))
}

/// A Wasm sidecar in wpod's store, approved.
pub struct StoredSidecar {
    /// Its component, to plan and run (`reference`: the artifact, pinned).
    pub component: crate::plan::WasmComponent,
    /// The approval of its very digest: the one recorded, or, for a moved tag that imports
    /// nothing more than the approval it is compared with, that approval carried over to it.
    pub approval: Approval,
}

/// The stored Wasm sidecar of the image `name`, as a component to plan and run, once its
/// digest is approved as `wpod run` requires (approved, or a moved tag that imports nothing
/// more); `None` when the store has no such sidecar.
pub fn stored_sidecar(
    store: &crate::oci::store::Store,
    name: &crate::oci::reference::ImageName,
    approvals: &Approvals,
) -> Result<Option<StoredSidecar>, String> {
    use crate::oci::approvals::{ArtifactKind, Decision};
    let Some(record) = store.image(&name.canonical()).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let Some(sidecar) = record.sidecar.as_ref() else {
        return Ok(None);
    };
    let decision = approvals.decide(
        &name.repository_name(),
        name.tag.as_deref(),
        &record.digest,
        &sidecar.imports,
        crate::grants::always_granted,
    );
    let approval = match decision {
        Decision::Approved(a) if a.kind == ArtifactKind::Sidecar => a.clone(),
        Decision::Upgrade {
            increases: false,
            from,
            ..
        } if from.kind == ArtifactKind::Sidecar => Approval {
            repository: name.repository_name(),
            digest: record.digest.clone(),
            kind: ArtifactKind::Sidecar,
            tag: name.tag.clone(),
            imports: sidecar.imports.clone(),
            approved_at: from.approved_at.clone(),
        },
        Decision::Approved(a) | Decision::Upgrade { from: a, .. }
            if a.kind != ArtifactKind::Sidecar =>
        {
            return Err(format!(
                "the sidecar {} ({}) was approved in {} as {}, not as a Wasm sidecar: review \
                 it with `wpod pull {}` first",
                name.canonical(),
                record.digest,
                approvals.path.display(),
                a.kind,
                name.canonical()
            ))
        }
        Decision::Approved(_) | Decision::New | Decision::Upgrade { .. } => {
            return Err(format!(
                "the sidecar {} ({}) in wpod's store is not approved at this digest in {}: \
                 review it with `wpod pull {}` first",
                name.canonical(),
                record.digest,
                approvals.path.display(),
                name.canonical()
            ))
        }
    };
    Ok(Some(StoredSidecar {
        component: crate::plan::WasmComponent {
            path: store.blob_path(&sidecar.component),
            digest: Some(sidecar.component.clone()),
            reference: Some(crate::plan::image::pinned(
                &record.name,
                record.digest.as_str(),
            )),
        },
        approval,
    }))
}

/// Every container of the pod, init containers first.
fn containers_mut(spec: &mut core::PodSpec) -> impl Iterator<Item = &mut core::Container> {
    spec.init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
}

/// sigstore policy-controller's admission policy for images (`policy.sigstore.dev/v1beta1`):
/// the fields wpod writes, read back strictly.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterImagePolicy {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ImagePolicySpec,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ImagePolicySpec {
    images: Vec<ImageGlob>,
    authorities: Vec<Authority>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ImageGlob {
    glob: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Authority {
    name: String,
    key: KeyAuthority,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyAuthority {
    data: String,
    hash_algorithm: String,
}

/// The trust policy's requirements for the pod's images, as `ClusterImagePolicy` documents.
///
/// policy-controller applies every policy whose glob matches an image (all must pass), where
/// containers-policy.json applies the most specific scope alone; so the policies cover the
/// pod's own repositories, each with the requirements of the scope that applies to it, never a
/// scope's whole namespace. A repository is globbed as `REPOSITORY*` (its tags and digests; a
/// glob may not hold `@`, and `*` also reaches sibling repositories named with the same
/// prefix: they then need the same signature), Docker Hub's as policy-controller names them
/// (`index.docker.io/...`). `sigstoreSigned` becomes one key authority per key (any one
/// verifies, as "one of the keys" does). Refused by name: an image of the pod the policy
/// rejects (the pod could never be admitted), two signature requirements that must all hold, a
/// `signedIdentity` other than the default (policy-controller checks the key, not the
/// signature's docker-reference), a repository two scopes govern differently.
fn image_policies(
    options: &GenerateOptions,
    pod: &str,
    generated: &core::Pod,
) -> Result<Vec<Value>, GenerateError> {
    use crate::oci::trust::{Identity, Policy, Requirement};
    let Some(path) = &options.policy else {
        return Ok(Vec::new());
    };
    let text = crate::files::read_regular(path, crate::files::MAX_MANIFEST_BYTES)
        .map_err(SpecError::from)?;
    let policy = Policy::parse(path, &String::from_utf8_lossy(&text))
        .map_err(|e| GenerateError::Unmappable(e.to_string()))?;
    let refuse = |why: String| GenerateError::Unmappable(format!("{}: {why}", path.display()));
    let images = generated
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| c.image.clone());
    // By repository (as policy-controller names it): the scope and its authorities.
    let mut repositories: BTreeMap<String, (String, Vec<Authority>)> = BTreeMap::new();
    for image in images {
        let name = crate::oci::reference::ImageName::parse(&image)
            .map_err(|e| GenerateError::Unmappable(format!("image {image}: {e}")))?;
        let scope = policy.scope_for(&name);
        let signatures = scope
            .requirements
            .iter()
            .filter(|r| matches!(r, Requirement::Sigstore { .. }))
            .count();
        if signatures > 1 {
            return Err(refuse(format!(
                "scope {:?} asks for {signatures} signatures that must all verify; an \
                 admission policy admits an image that any one of its authorities verifies: \
                 give the scope one sigstoreSigned requirement (with keyPaths for several keys)",
                scope.name
            )));
        }
        let mut authorities = Vec::new();
        if scope
            .requirements
            .iter()
            .any(|r| matches!(r, Requirement::Reject))
        {
            return Err(refuse(format!(
                "the policy rejects {image} (scope {:?}), an image of this pod: the pod could \
                 never be admitted; change the image or the policy",
                scope.name
            )));
        }
        for r in scope.requirements {
            if let Requirement::Sigstore { keys, identity } = r {
                if *identity != Identity::MatchRepoDigestOrExact {
                    return Err(refuse(format!(
                        "scope {:?} sets signedIdentity, which an admission policy with \
                             keys does not check (it checks the key, not the signature's \
                             docker-reference): remove it, or keep this image off Kubernetes",
                        scope.name
                    )));
                }
                for (i, (_, pem)) in keys.iter().enumerate() {
                    authorities.push(Authority {
                        name: format!("key-{i}"),
                        key: KeyAuthority {
                            data: pem.clone(),
                            hash_algorithm: "sha256".into(),
                        },
                    });
                }
            }
        }
        if authorities.is_empty() {
            continue;
        }
        let repository = match name.repository_name() {
            r if r.starts_with("docker.io/") => format!("index.{r}"),
            r => r,
        };
        match repositories.get(&repository) {
            Some((other, _)) if *other != scope.name => {
                return Err(refuse(format!(
                    "images of {repository} fall under two scopes ({other:?} and {:?}); an \
                     admission policy governs a repository as a whole: make one scope govern it",
                    scope.name
                )))
            }
            _ => {
                repositories.insert(repository, (scope.name.clone(), authorities));
            }
        }
    }
    let namespace = generated.metadata.namespace.as_deref().unwrap_or("default");
    let mut docs = Vec::new();
    for (repository, (_, authorities)) in repositories {
        // Cluster-wide objects: named by the pod's namespace, name and the repository.
        let hash =
            crate::oci::store::Digest::of(format!("{namespace}/{pod}/{repository}").as_bytes());
        let doc = ClusterImagePolicy {
            api_version: "policy.sigstore.dev/v1beta1".into(),
            kind: "ClusterImagePolicy".into(),
            metadata: ObjectMeta {
                name: Some(format!("{pod}-wpod-{}", &hash.hex()[..10])),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "wpod".to_string(),
                )])),
                ..Default::default()
            },
            spec: ImagePolicySpec {
                images: vec![ImageGlob {
                    glob: format!("{repository}*"),
                }],
                authorities,
            },
        };
        docs.push(to_value(&doc)?);
    }
    Ok(docs)
}

/// The Pod document of a file (if any) and its other documents, as values.
fn read_documents(path: &std::path::Path) -> Result<(Option<Value>, Vec<Value>), GenerateError> {
    let bytes = crate::files::read_regular(path, crate::files::MAX_MANIFEST_BYTES)
        .map_err(SpecError::from)?;
    let text = String::from_utf8_lossy(&bytes);
    let docs = yaml::documents(&text).map_err(|source| GenerateError::Yaml {
        file: path.to_path_buf(),
        source,
    })?;
    let mut pod = None;
    let mut others = Vec::new();
    for doc in docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // Written out as they are: each must read as its Kubernetes type (a ConfigMap value
        // must be a string, as the API server says too).
        let check = |what: String| -> Result<(), GenerateError> {
            round_trip_one(&doc).map_err(|message| GenerateError::Types {
                file: path.to_path_buf(),
                what,
                kind: "object",
                message,
            })
        };
        match kind {
            "Pod" if pod.is_none() => pod = Some(normalize(doc)),
            _ => {
                check(format!("the {kind} {name}"))?;
                others.push(doc);
            }
        }
    }
    Ok((pod, others))
}

/// Quantities written as YAML numbers (`cpu: 1`, `memory: 1000`) as the strings Kubernetes'
/// types hold them in (the API server accepts either).
fn normalize(mut value: Value) -> Value {
    fn walk(v: &mut Value, quantities: bool) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    let q = matches!(k.as_str(), "limits" | "requests" | "overhead");
                    if k == "sizeLimit" {
                        if let Value::Number(n) = child {
                            *child = Value::String(n.to_string());
                        }
                    }
                    walk(child, q);
                }
                if quantities {
                    for child in map.values_mut() {
                        if let Value::Number(n) = child {
                            *child = Value::String(n.to_string());
                        }
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, false)),
            _ => {}
        }
    }
    walk(&mut value, false);
    value
}

fn typed<T: serde::de::DeserializeOwned>(
    file: &std::path::Path,
    what: &str,
    value: Value,
) -> Result<T, GenerateError> {
    serde_json::from_value(value).map_err(|e| GenerateError::Types {
        file: file.to_path_buf(),
        what: what.to_string(),
        kind: std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("object"),
        message: e.to_string(),
    })
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, GenerateError> {
    serde_json::to_value(object).map_err(|e| GenerateError::RoundTrip(e.to_string()))
}

fn pod_spec(pod: &mut core::Pod) -> Result<&mut core::PodSpec, GenerateError> {
    pod.spec
        .as_mut()
        .ok_or_else(|| GenerateError::Unmappable("the Pod has no spec".into()))
}

fn find_container<'a>(
    spec: &'a mut core::PodSpec,
    name: &str,
) -> Result<&'a mut core::Container, GenerateError> {
    spec.init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
        .find(|c| c.name == name)
        .ok_or_else(|| GenerateError::Unmappable(format!("no container named {name}")))
}

/// A native container whose image is of this machine (a directory, the host's own root) has
/// nothing a node could pull.
/// A problem of the manifest, located at `field` (`spec.containers[1].image`) as `wpod
/// validate` prints it: file, line and column, field, message.
fn located(plan: &PodPlan, field: String, message: String) -> GenerateError {
    GenerateError::Manifest(SpecError::Invalid(crate::spec::Diagnostics(vec![
        plan.diag(field, message)
    ])))
}

fn refuse_native_unmappable(plan: &PodPlan, c: &ContainerPlan) -> Result<(), GenerateError> {
    let what = match &c.image {
        Image::Host => "none (it runs from the host's own root)",
        Image::Rootfs(_) => "a directory of this machine",
        _ => return Ok(()),
    };
    Err(located(
        plan,
        format!("{}.image", c.path),
        format!(
            "container {}: its image is {what}, which no node of a cluster can pull; push it \
             to a registry and name it by reference",
            c.name()
        ),
    ))
}

/// What a Wasm sidecar asks for that a runner container cannot give (yet) or must not.
fn refuse_sidecar_unmappable(plan: &PodPlan, c: &ContainerPlan) -> Result<(), GenerateError> {
    let Some(grants) = &c.grants else {
        return Ok(());
    };
    if grants.process.read && plan.main_containers().is_empty() {
        return Err(located(
            plan,
            "spec.shareProcessNamespace".into(),
            format!(
                "container {}: its main-process view shows the pod's native main containers, \
                 and this pod has none (every regular container is a Wasm sidecar); give the \
                 pod its main container, or build the sidecar without the view",
                c.name()
            ),
        ));
    }
    // Signals make the runner user 0: over a host directory it could write, that would be
    // root's files of the node.
    if grants.process.signal {
        let host_path = grants.fs.mounts.iter().find(|m| {
            !m.read_only
                && plan.volumes.iter().any(|v| {
                    v.name == m.volume && matches!(v.kind, crate::plan::VolumeKind::HostPath(_))
                })
        });
        if let Some(m) = host_path {
            return Err(located(
                plan,
                format!("{}.volumeMounts", c.path),
                format!(
                    "container {}: granted signals (KILL), its runner runs as user 0, and it \
                     mounts the hostPath volume {} writable at {}: the node's files as root; \
                     mount it readOnly, or drop KILL",
                    c.name(),
                    m.volume,
                    m.guest
                ),
            ));
        }
    }
    for (k, _) in &grants.wasi.env {
        let env = || format!("{}.env", c.path);
        if k.starts_with(crate::plan::in_container::RUNNER_PREFIX) {
            return Err(located(
                plan,
                env(),
                format!(
                    "container {}: its variable {k} is named like the runner's own settings \
                     ({}*), which its guest never sees; rename it",
                    c.name(),
                    crate::plan::in_container::RUNNER_PREFIX
                ),
            ));
        }
        if LOADER_VARIABLES.iter().any(|p| k.starts_with(p)) {
            return Err(located(
                plan,
                env(),
                format!(
                    "container {}: its variable {k} would be read by the runner's dynamic \
                     loader or libc as the container starts, before wpod runs (the guest's \
                     environment is the runner container's); rename it",
                    c.name()
                ),
            ));
        }
    }
    for (i, m) in grants.fs.mounts.iter().enumerate() {
        let at = std::path::Path::new(&m.guest);
        if let Some(own) = RUNNER_PATHS
            .iter()
            .find(|p| at.starts_with(p) || std::path::Path::new(p).starts_with(at))
        {
            return Err(located(
                plan,
                format!("{}.volumeMounts[{i}].mountPath", c.path),
                format!(
                    "container {}: volumeMount {} is at, above or under {own}, the runner \
                     container's own, which its guest must not reach; mount the volume elsewhere",
                    c.name(),
                    m.guest
                ),
            ));
        }
    }
    Ok(())
}

/// An `envFrom` prefix that makes loader variables of whatever keys its source has.
fn refuse_loader_prefixes(
    plan: &PodPlan,
    sidecar: &ContainerPlan,
    c: &core::Container,
) -> Result<(), GenerateError> {
    let name = sidecar.name();
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if !prefix.is_empty()
            && LOADER_VARIABLES
                .iter()
                .any(|p| p.starts_with(prefix) || prefix.starts_with(p))
        {
            return Err(located(
                plan,
                format!("{}.envFrom[{i}].prefix", sidecar.path),
                format!(
                    "container {name}: its envFrom prefix {prefix:?} could make variables the \
                     runner's dynamic loader or libc reads as the container starts; use another \
                     prefix"
                ),
            ));
        }
    }
    Ok(())
}

/// A reference pinned to a digest (`REF@sha256:<64 hex>`): what runs is what was reviewed.
fn check_pinned(container: &str, image: &str) -> Result<(), GenerateError> {
    let pinned = image.rsplit_once("@sha256:").is_some_and(|(name, hex)| {
        !name.is_empty() && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    match pinned {
        true => Ok(()),
        false => Err(GenerateError::Unmappable(format!(
            "--image {container}={image}: name the runner image by its digest \
             (REGISTRY/NAME@sha256:<64 hex digits>, as `wpod kube build` prints it), so that \
             the node runs the image that was built"
        ))),
    }
}

/// The Wasm sidecar's container `c` as its runner's.
/// What a runner container is made of, besides the sidecar's own container.
struct Runner<'a> {
    image: &'a str,
    component_digest: &'a str,
    manifest_digest: &'a str,
    state_volume: &'a str,
    role: crate::plan::Role,
    signals_readiness: bool,
    view: MainView,
    /// The registry artifact of a sidecar pulled into the store: its runner checks the
    /// approvals ConfigMap at each start.
    artifact: Option<&'a str>,
}

/// The sidecar's main-process view, as its runner gives it.
#[derive(Default)]
struct MainView {
    /// The main containers it shows (none without the grant).
    mains: Vec<String>,
    /// Whether it may signal them: the runner then needs CAP_KILL, which Kubernetes gives only
    /// to a container running as user 0.
    signals: bool,
}

impl MainView {
    fn of(plan: &PodPlan, c: &ContainerPlan) -> MainView {
        match &c.grants {
            Some(g) if g.process.read => MainView {
                mains: plan.main_containers(),
                signals: g.process.signal,
            },
            _ => MainView::default(),
        }
    }
}

fn runner_container(mut c: core::Container, runner: Runner<'_>) -> core::Container {
    let Runner {
        image,
        component_digest: digest,
        manifest_digest,
        state_volume,
        role,
        signals_readiness,
        view,
        artifact,
    } = runner;
    // wpod's argv: `command` + `args`, the container's name standing as argv[0] without one.
    let mut argv = c.command.take().unwrap_or_else(|| vec![c.name.clone()]);
    argv.extend(c.args.take().unwrap_or_default());
    let command = [
        RUNNER_BIN,
        "sidecar",
        "run",
        "--manifest",
        &format!("{MANIFEST_DIR}/pod.yaml"),
        "--manifest-digest",
        manifest_digest,
        "--container",
        &c.name,
        "--component",
        COMPONENT_PATH,
        "--component-digest",
        digest,
        "--state-dir",
        STATE_DIR,
    ]
    .map(String::from)
    .to_vec();
    let mut command = command;
    // Its termination message where the manifest asked for it.
    if let Some(path) = &c.termination_message_path {
        command.extend(["--termination-log".to_string(), path.clone()]);
    }
    for main in &view.mains {
        command.extend(["--main".to_string(), main.clone()]);
    }
    if let Some(artifact) = artifact {
        command.extend([
            "--artifact".to_string(),
            artifact.to_string(),
            "--approvals".to_string(),
            format!("{APPROVALS_DIR}/approvals.json"),
        ]);
    }
    command.push("--".into());
    let mut env = c.env.take().unwrap_or_default();
    for (name, path) in [
        ("WPOD_HOST_IP", "status.hostIP"),
        ("WPOD_POD_UID", "metadata.uid"),
    ] {
        env.push(core::EnvVar {
            name: name.into(),
            value_from: Some(core::EnvVarSource {
                field_ref: Some(core::ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut mounts = c.volume_mounts.take().unwrap_or_default();
    mounts.push(core::VolumeMount {
        name: "wpod-pod".into(),
        mount_path: MANIFEST_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    mounts.push(core::VolumeMount {
        name: state_volume.into(),
        mount_path: STATE_DIR.into(),
        ..Default::default()
    });
    if artifact.is_some() {
        mounts.push(core::VolumeMount {
            name: APPROVALS_VOLUME.into(),
            mount_path: APPROVALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // Over the ServiceAccount token's path, so the kubelet mounts no token in the runner,
    // whatever the pod's other containers need.
    mounts.push(core::VolumeMount {
        name: NO_TOKEN_VOLUME.into(),
        mount_path: TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    // Kubernetes allows a startupProbe on regular containers and native sidecars only.
    let probed = matches!(
        role,
        crate::plan::Role::Regular | crate::plan::Role::NativeSidecar
    );
    let startup_probe = c.startup_probe.take().or_else(|| {
        (signals_readiness && probed).then(|| core::Probe {
            exec: Some(core::ExecAction {
                command: Some(
                    [RUNNER_BIN, "sidecar", "probe", "--state-dir", STATE_DIR]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            period_seconds: Some(STARTUP_PERIOD_SECONDS),
            failure_threshold: Some(STARTUP_FAILURES),
            ..Default::default()
        })
    });
    core::Container {
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        args: Some(argv),
        env: Some(env),
        volume_mounts: Some(mounts),
        startup_probe,
        // The guest's working directory is its plan's; the runner's is its image's.
        working_dir: None,
        resources: c.resources.take().map(with_runner_memory),
        security_context: Some(runner_security_context(view.signals)),
        ..c
    }
}

/// The sidecar's memory limit and request, plus the runner's own.
fn with_runner_memory(mut r: core::ResourceRequirements) -> core::ResourceRequirements {
    add_memory(&mut r, RUNNER_MEMORY);
    r
}

/// `extra` bytes added to the memory limit and request that `r` sets.
fn add_memory(r: &mut core::ResourceRequirements, extra: u64) {
    for list in [r.limits.as_mut(), r.requests.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Some(q) = list.get_mut("memory") {
            if let Ok(bytes) = crate::spec::quantity::bytes(&q.0) {
                *q = Quantity(mebibytes(bytes.saturating_add(extra)));
            }
        }
    }
}

/// `n` bytes as a quantity: in Mi when whole, else in bytes.
fn mebibytes(n: u64) -> String {
    match n % (1 << 20) {
        0 => format!("{}Mi", n >> 20),
        _ => n.to_string(),
    }
}

/// Least privilege for the runner: what a broken-out guest would have is one unprivileged
/// process with nothing to write but its state directory. With the signals grant, user 0 with
/// `KILL` as its one capability: Kubernetes gives no added capability to a non-root container
/// (no ambient capabilities), and the main containers' processes may be anyone's.
fn runner_security_context(signals: bool) -> core::SecurityContext {
    let (uid, add) = match signals {
        true => (0, Some(vec!["KILL".to_string()])),
        false => (RUNNER_UID, None),
    };
    core::SecurityContext {
        run_as_non_root: Some(!signals),
        run_as_user: Some(uid),
        // Group 65532 even for user 0: ptrace's access check (and so another process's /proc
        // files beyond stat) wants the group to match as well, so a user 0 runner with only
        // KILL still cannot read or trace a root main container's process.
        run_as_group: Some(RUNNER_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(core::Capabilities {
            drop: Some(vec!["ALL".into()]),
            add,
        }),
        seccomp_profile: Some(core::SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The immutable ConfigMap of the runners' manifest, named by its content (a changed pod gets
/// a new one, as kustomize's generators name theirs).
fn manifest_config_map(
    pod: &str,
    manifest: &str,
    for_pod: &core::Pod,
) -> Result<core::ConfigMap, GenerateError> {
    if manifest.len() > MAX_CONFIG_MAP_BYTES {
        return Err(GenerateError::Unmappable(format!(
            "the pod's manifest is {} bytes, more than a ConfigMap holds (1 MiB); move long \
             values out of the Pod (into ConfigMaps its containers mount)",
            manifest.len()
        )));
    }
    let hash = crate::oci::store::Digest::of(manifest.as_bytes());
    let name = format!("{pod}-wpod-{}", &hash.hex()[..10]);
    if name.len() > 253 {
        return Err(GenerateError::Unmappable(format!(
            "the pod's name is too long for its manifest's ConfigMap ({name}: more than 253 \
             characters)"
        )));
    }
    Ok(core::ConfigMap {
        immutable: Some(true),
        ..runner_config_map(name, for_pod, "pod.yaml", manifest)
    })
}

/// A ConfigMap of the runners' (`managed-by: wpod`) in the pod's namespace, holding `text` as
/// its one key `key`.
fn runner_config_map(name: String, for_pod: &core::Pod, key: &str, text: &str) -> core::ConfigMap {
    core::ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: for_pod.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "wpod".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.to_string(), text.to_string())])),
        ..Default::default()
    }
}

/// The approvals of the pod's sidecars from registries, as the ConfigMap their runners check
/// at each start: named after the pod, and not immutable, so that whoever keeps the cluster's
/// approvals can withdraw one (the runner then refuses to start that sidecar again).
fn approvals_config_map(pod: &str, approvals: &str, for_pod: &core::Pod) -> core::ConfigMap {
    runner_config_map(
        format!("{pod}-wpod-approvals"),
        for_pod,
        "approvals.json",
        approvals,
    )
}

/// The runners' volumes (the manifest, a state directory each), and no ServiceAccount token
/// unless the manifest asks for one.
fn add_runner_volumes(
    pod: &mut core::Pod,
    config_map: &str,
    states: &[String],
    approvals: Option<&str>,
) -> Result<(), GenerateError> {
    let spec = pod_spec(pod)?;
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    let ours: Vec<&str> = ["wpod-pod", NO_TOKEN_VOLUME, APPROVALS_VOLUME]
        .into_iter()
        .chain(states.iter().map(String::as_str))
        .collect();
    if let Some(v) = volumes.iter().find(|v| ours.contains(&v.name.as_str())) {
        return Err(GenerateError::Unmappable(format!(
            "volume {}: the name is the runners' own; rename the volume",
            v.name
        )));
    }
    volumes.push(core::Volume {
        name: "wpod-pod".into(),
        config_map: Some(core::ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(name) = approvals {
        volumes.push(core::Volume {
            name: APPROVALS_VOLUME.into(),
            config_map: Some(core::ConfigMapVolumeSource {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for state in states {
        volumes.push(core::Volume {
            name: state.clone(),
            empty_dir: Some(core::EmptyDirVolumeSource {
                size_limit: Some(Quantity("256Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes.push(core::Volume {
        name: NO_TOKEN_VOLUME.into(),
        empty_dir: Some(core::EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Ki".into())),
        }),
        ..Default::default()
    });
    // The runners' memory is the pod's too (pod-level resources, KEP-2837).
    if let Some(r) = spec.resources.as_mut() {
        add_memory(r, RUNNER_MEMORY.saturating_mul(states.len() as u64));
    }
    Ok(())
}

/// The documents as YAML, once they have read back through Kubernetes' types unchanged.
fn write_checked(docs: &[Value]) -> Result<String, GenerateError> {
    let text = yaml::write(docs).map_err(|e| GenerateError::RoundTrip(e.to_string()))?;
    let read = yaml::documents(&text).map_err(|e| GenerateError::RoundTrip(e.to_string()))?;
    if read != docs {
        return Err(GenerateError::RoundTrip(
            "the YAML written does not read back as the values it was written from".into(),
        ));
    }
    round_trip(&text).map_err(GenerateError::RoundTrip)?;
    Ok(text)
}

/// Reads `text` back: each document through its Kubernetes type and out again must be the same
/// value (a field the type does not know, a value of the wrong type, would differ). What wpod
/// writes is checked so; the Pod it starts from was read by wpod's own strict parser first.
pub fn round_trip(text: &str) -> Result<(), String> {
    let docs = yaml::documents(text).map_err(|e| e.to_string())?;
    docs.iter().try_for_each(round_trip_one)
}

fn round_trip_one(doc: &Value) -> Result<(), String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let back = match kind {
        "Pod" => through::<core::Pod>(doc),
        "ConfigMap" => through::<core::ConfigMap>(doc),
        "Secret" => through::<core::Secret>(doc),
        "PersistentVolumeClaim" => through::<core::PersistentVolumeClaim>(doc),
        "ClusterImagePolicy" => through::<ClusterImagePolicy>(doc),
        other => return Err(format!("a document of kind {other:?}")),
    }?;
    if &back != doc {
        return Err(format!(
            "the {kind} differs once read through its type:\n{doc}\nread back as\n{back}"
        ));
    }
    Ok(())
}

fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx\n";

    /// A field Kubernetes' types do not know, or a value of the wrong type, does not survive
    /// the round-trip: the check refuses it instead of writing YAML that loses it.
    #[test]
    fn the_round_trip_refuses_what_kubernetes_types_would_lose() {
        round_trip(POD).expect("a plain pod");
        let unknown = POD.replace(
            "      image: nginx\n",
            "      image: nginx\n      imageSize: 3\n",
        );
        assert!(round_trip(&unknown).unwrap_err().contains("differs"));
        let wrong = POD.replace(
            "      image: nginx\n",
            "      image: nginx\n      tty: \"yes\"\n",
        );
        assert!(round_trip(&wrong).is_err());
        let kind = POD.replace("kind: Pod", "kind: Service");
        assert!(round_trip(&kind).unwrap_err().contains("Service"));
    }

    /// The runner's memory is added to the sidecar's limit and request, in Mi when whole.
    #[test]
    fn the_runner_memory_is_added_to_the_sidecars() {
        let r = with_runner_memory(core::ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            requests: Some(BTreeMap::from([
                ("memory".into(), Quantity("1000".into())),
                ("cpu".into(), Quantity("100m".into())),
            ])),
            ..Default::default()
        });
        let limits = r.limits.expect("limits");
        let requests = r.requests.expect("requests");
        assert_eq!(limits["memory"].0, "96Mi");
        assert_eq!(requests["memory"].0, (1000 + RUNNER_MEMORY).to_string());
        assert_eq!(requests["cpu"].0, "100m");
    }
}
