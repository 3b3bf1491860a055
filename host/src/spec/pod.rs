//! The Pod, its metadata, spec and volumes, with the Kubernetes field names and meanings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::container::Container;
use super::decode::{loc_of, Decode, Decoder, Node};
use super::diag::SourceMap;
use super::quantity;

/// wpod's own annotation: the pids limit of each container of the pod.
pub const PIDS_LIMIT_ANNOTATION: &str = "wpod.dev/pids-limit";

/// A validated `v1 Pod`, with where each of its fields was written.
#[derive(Clone, Debug, Serialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    #[serde(skip)]
    pub source: SourceMap,
}

impl Pod {
    /// The pod's hostname: `spec.hostname`, else `metadata.name` (as in Kubernetes).
    pub fn hostname(&self) -> &str {
        self.spec.hostname.as_deref().unwrap_or(&self.metadata.name)
    }

    /// Processes per container, from the `wpod.dev/pids-limit` annotation (validated to be a
    /// positive integer).
    pub fn pids_limit(&self) -> Option<u64> {
        self.metadata
            .annotations
            .get(PIDS_LIMIT_ANNOTATION)
            .and_then(|v| v.parse().ok())
    }

    /// Every container with the field path that defines it, init containers first.
    pub fn all_containers(&self) -> impl Iterator<Item = (String, &Container)> {
        let init = self.spec.init_containers.iter().enumerate();
        let regular = self.spec.containers.iter().enumerate();
        init.map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
            .chain(regular.map(|(i, c)| (format!("spec.containers[{i}]"), c)))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Decode for ObjectMeta {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&[
                "creationTimestamp",
                "deletionGracePeriodSeconds",
                "deletionTimestamp",
                "finalizers",
                "generateName",
                "generation",
                "managedFields",
                "ownerReferences",
                "resourceVersion",
                "selfLink",
                "uid",
            ]);
            ObjectMeta {
                name: f.req("name").unwrap_or_default(),
                namespace: f.opt("namespace"),
                labels: f.opt("labels").unwrap_or_default(),
                annotations: f.opt("annotations").unwrap_or_default(),
            }
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    /// Always (default), OnFailure or Never.
    pub restart_policy: String,
    pub termination_grace_period_seconds: i64,
    pub share_process_namespace: bool,
    pub hostname: Option<String>,
}

impl Decode for PodSpec {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&[
                "activeDeadlineSeconds",
                "affinity",
                "automountServiceAccountToken",
                "dnsConfig",
                "dnsPolicy",
                "enableServiceLinks",
                "ephemeralContainers",
                "hostAliases",
                "hostIPC",
                "hostNetwork",
                "hostPID",
                "hostUsers",
                "hostnameOverride",
                "imagePullSecrets",
                "nodeName",
                "nodeSelector",
                "os",
                "overhead",
                "preemptionPolicy",
                "priority",
                "priorityClassName",
                "readinessGates",
                "resourceClaims",
                "resources",
                "runtimeClassName",
                "schedulerName",
                "schedulingGates",
                "securityContext",
                "serviceAccount",
                "serviceAccountName",
                "setHostnameAsFQDN",
                "subdomain",
                "tolerations",
                "topologySpreadConstraints",
            ]);
            PodSpec {
                containers: f.req("containers").unwrap_or_default(),
                init_containers: f.list("initContainers"),
                volumes: f.list("volumes"),
                restart_policy: f
                    .opt("restartPolicy")
                    .unwrap_or_else(|| "Always".to_string()),
                termination_grace_period_seconds: f
                    .opt("terminationGracePeriodSeconds")
                    .unwrap_or(30),
                share_process_namespace: f.opt("shareProcessNamespace").unwrap_or(false),
                hostname: f.opt("hostname"),
            }
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    EmptyDir(EmptyDir),
    HostPath(HostPath),
}

/// Kubernetes volume types wpod does not implement; naming one says so.
const UNSUPPORTED_VOLUME_TYPES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

impl Decode for Volume {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let (name, mut sources) = d.object(node, path, |f| {
            f.unsupported(UNSUPPORTED_VOLUME_TYPES);
            let mut sources = Vec::new();
            if let Some(e) = f.opt("emptyDir") {
                sources.push(VolumeSource::EmptyDir(e));
            }
            if let Some(h) = f.opt("hostPath") {
                sources.push(VolumeSource::HostPath(h));
            }
            (f.req::<String>("name").unwrap_or_default(), sources)
        })?;
        if sources.len() != 1 {
            let what = if sources.is_empty() {
                "no volume type"
            } else {
                "more than one volume type"
            };
            d.error_at(
                loc,
                path,
                format!("has {what}; give exactly one of emptyDir or hostPath"),
            );
            return None;
        }
        sources.pop().map(|source| Volume { name, source })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDir {
    /// "" (node disk) or "Memory" (tmpfs).
    pub medium: String,
    pub size_limit_bytes: Option<u64>,
}

impl Decode for EmptyDir {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        // `emptyDir: {}` is the common spelling; an empty mapping decodes to the defaults.
        d.object(node, path, |f| {
            let medium = f.opt("medium").unwrap_or_default();
            let limit: Option<String> = f.opt("sizeLimit");
            let limit_path = f.child("sizeLimit");
            let size_limit_bytes = limit.and_then(|text| match quantity::bytes(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    let loc = f.d.map.locate(&limit_path);
                    f.d.error_at(loc, &limit_path, e);
                    None
                }
            });
            EmptyDir {
                medium,
                size_limit_bytes,
            }
        })
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    pub path: String,
    /// "", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice or BlockDevice.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Decode for HostPath {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| HostPath {
            path: f.req("path").unwrap_or_default(),
            kind: f.opt("type").unwrap_or_default(),
        })
    }
}
