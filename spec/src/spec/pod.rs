//! The Pod, its metadata, spec and volumes, with the Kubernetes field names and meanings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::container::Container;
use super::decode::{loc_of, Decode, Decoder, Node};
use super::diag::SourceMap;
use super::enums::{DnsPolicy, HostPathType, RestartPolicy, Role, StorageMedium};
use super::quantity;

/// wpod's own settings, written as pod annotations (a Kubernetes Pod has no field for them),
/// each with its default. Every `wpod.dev/` annotation is checked: a typo is an error, not a
/// silently ignored setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// `wpod.dev/pids-limit`: processes per native container (its cgroup's pids.max).
    pub pids_limit: u64,
    /// `wpod.dev/sidecar-max-handles`: open handles per Wasm sidecar (sockets, files, streams,
    /// pollables: its resource table), like a process's `ulimit -n`.
    pub sidecar_max_handles: u64,
    /// `wpod.dev/log-max-size`: a container's log file is rotated past this size (kubelet's
    /// containerLogMaxSize).
    pub log_max_bytes: u64,
    /// `wpod.dev/log-max-files`: log files kept per container, the current one included
    /// (kubelet's containerLogMaxFiles).
    pub log_max_files: u64,
    /// `wpod.dev/log-rate-limit`: bytes per second a container may write to stdout/stderr;
    /// a faster writer waits.
    pub log_rate_bytes: u64,
    /// `wpod.dev/network: none`: the pod's network namespace holds only `lo` (no CNI).
    pub network_none: bool,
}

/// The annotation that keeps a pod off the network (loopback only).
pub const NETWORK_ANNOTATION: &str = "wpod.dev/network";
/// The prefix of the per-sidecar outbound rules, `wpod.dev/allowed-outbound.<container>`.
pub const OUTBOUND_PREFIX: &str = "wpod.dev/allowed-outbound.";

impl Default for Annotations {
    fn default() -> Self {
        Annotations {
            pids_limit: 4096,
            sidecar_max_handles: 1024,
            log_max_bytes: 10 << 20,
            log_max_files: 5,
            log_rate_bytes: 16 << 20,
            network_none: false,
        }
    }
}

/// How one annotation is read: its key, its parser (with the smallest value that makes sense)
/// and where the value goes.
struct Setting {
    key: &'static str,
    parse: fn(&str) -> Result<u64, String>,
    set: fn(&mut Annotations, u64),
}

fn count_between(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |v: &str| match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "\"{v}\" is not a count from {min} to {max}: write an integer such as \"512\""
        )),
    }
}

fn bytes_at_least(min: u64, shown: &'static str) -> impl Fn(&str) -> Result<u64, String> {
    move |v: &str| match quantity::bytes(v) {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!("\"{v}\" is too small: use at least {shown}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The fewest handles a Wasm sidecar may be given (`wpod.dev/sidecar-max-handles`).
pub const MIN_SIDECAR_HANDLES: u64 = 32;

const SETTINGS: &[Setting] = &[
    Setting {
        key: "wpod.dev/pids-limit",
        // The kernel's own bound on PIDs.
        parse: |v| count_between(1, 4_194_304)(v),
        set: |a, n| a.pids_limit = n,
    },
    Setting {
        key: "wpod.dev/sidecar-max-handles",
        // A std guest needs a few handles for its stdio and preopens before doing anything;
        // wasmtime's own bound on a resource table is a million.
        parse: |v| count_between(MIN_SIDECAR_HANDLES, 1_000_000)(v),
        set: |a, n| a.sidecar_max_handles = n,
    },
    Setting {
        key: "wpod.dev/log-max-size",
        parse: |v| bytes_at_least(64 << 10, "64Ki")(v),
        set: |a, n| a.log_max_bytes = n,
    },
    Setting {
        key: "wpod.dev/log-max-files",
        // As the kubelet: the current file and at least one rotated one; each rotation renames
        // every file, so a bound keeps it cheap.
        parse: |v| count_between(2, 100)(v),
        set: |a, n| a.log_max_files = n,
    },
    Setting {
        key: "wpod.dev/log-rate-limit",
        // Bytes per second.
        parse: |v| bytes_at_least(4 << 10, "4Ki")(v),
        set: |a, n| a.log_rate_bytes = n,
    },
];

impl Annotations {
    /// The settings of `annotations` with defaults for the absent ones, and a problem (key,
    /// message) for each `wpod.dev/` annotation that is unknown or has a bad value.
    pub fn read(annotations: &BTreeMap<String, String>) -> (Self, Vec<(String, String)>) {
        let mut out = Annotations::default();
        let mut problems = Vec::new();
        for (key, value) in annotations {
            if !key.starts_with("wpod.dev/") {
                continue;
            }
            if key == NETWORK_ANNOTATION {
                match value.as_str() {
                    "none" => out.network_none = true,
                    other => problems.push((
                        key.clone(),
                        format!(
                            "\"{other}\" is not a network setting: write \"none\" to keep the pod \
                             on its loopback, or leave the annotation out to give it the network"
                        ),
                    )),
                }
                continue;
            }
            // Read by the network capability, which checks them (plan).
            if key.starts_with(OUTBOUND_PREFIX) {
                continue;
            }
            match SETTINGS.iter().find(|s| s.key == key) {
                Some(s) => match (s.parse)(value) {
                    Ok(n) => (s.set)(&mut out, n),
                    Err(e) => problems.push((key.clone(), e)),
                },
                None => {
                    let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
                    keys.push(NETWORK_ANNOTATION);
                    let hint = match super::decode::did_you_mean(key, &keys) {
                        Some(k) => format!("did you mean \"{k}\"?"),
                        None => format!("wpod reads {}", keys.join(", ")),
                    };
                    problems.push((key.clone(), format!("unknown wpod annotation; {hint}")));
                }
            }
        }
        (out, problems)
    }
}

/// A validated `v1 Pod`, with where each of its fields was written.
#[derive(Clone, Debug, Serialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    #[serde(skip)]
    pub source: SourceMap,
    /// The ConfigMaps, Secrets and PersistentVolumeClaims of the pod's file.
    #[serde(skip)]
    pub objects: std::sync::Arc<super::objects::Objects>,
}

impl Pod {
    /// The pod's hostname: `spec.hostname`, else `metadata.name` (as in Kubernetes).
    pub fn hostname(&self) -> &str {
        self.spec.hostname.as_deref().unwrap_or(&self.metadata.name)
    }

    /// wpod's settings from the pod's annotations (validated), defaults for the rest.
    pub fn annotations(&self) -> Annotations {
        Annotations::read(&self.metadata.annotations).0
    }

    /// Every container with the field path that defines it, init containers first.
    pub fn all_containers(&self) -> impl Iterator<Item = (String, &Container)> {
        self.containers_in_order().map(|(path, _, c)| (path, c))
    }

    /// Every container with its field path and its role, in start order. The one place that
    /// decides what a container is: an init container with `restartPolicy: Always` is a
    /// native sidecar.
    pub fn containers_in_order(&self) -> impl Iterator<Item = (String, Role, &Container)> {
        let init = self.spec.init_containers.iter().enumerate();
        let regular = self.spec.containers.iter().enumerate();
        init.map(|(i, c)| {
            let role = match c.restart_policy {
                Some(RestartPolicy::Always) => Role::NativeSidecar,
                _ => Role::Init,
            };
            (format!("spec.initContainers[{i}]"), role, c)
        })
        .chain(regular.map(|(i, c)| (format!("spec.containers[{i}]"), Role::Regular, c)))
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
    /// `serviceAccountName` (or the deprecated `serviceAccount`): given to the downward API;
    /// a host has no API server to authenticate to, so no token is mounted.
    pub service_account_name: Option<String>,
    /// Fields that mean nothing on one host, present in the manifest: reported once as
    /// ignored (as `podman kube play` tolerates them).
    pub ignored: Vec<Ignored>,
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    /// Always by default.
    pub restart_policy: RestartPolicy,
    pub termination_grace_period_seconds: i64,
    pub share_process_namespace: bool,
    pub hostname: Option<String>,
    /// The host's network (and UTS) namespace instead of the pod's own.
    pub host_network: bool,
    pub dns_policy: DnsPolicy,
    pub dns_config: Option<PodDnsConfig>,
    pub host_aliases: Vec<HostAlias>,
}

/// A field of the manifest wpod accepts and ignores, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Ignored {
    pub path: String,
    pub why: &'static str,
}

/// Scheduling fields: on one host there is no node to choose.
const IGNORED_ON_ONE_HOST: &[(&str, &str)] = &[
    ("affinity", "there is one host: no node to choose"),
    ("nodeSelector", "there is one host: no node to choose"),
    ("nodeName", "the pod runs on this host"),
    ("tolerations", "a host has no taints to tolerate"),
    (
        "topologySpreadConstraints",
        "there is one host: nothing to spread across",
    ),
    ("schedulerName", "wpod places the pod itself, on this host"),
    ("schedulingGates", "wpod places the pod at once"),
    (
        "priorityClassName",
        "there is no scheduler queue or preemption on one host",
    ),
    (
        "priority",
        "there is no scheduler queue or preemption on one host",
    ),
    (
        "preemptionPolicy",
        "there is no scheduler queue or preemption on one host",
    ),
    (
        "automountServiceAccountToken",
        "there is no API server, so no token is mounted",
    ),
];

/// `spec.dnsConfig`: added to (or, with `dnsPolicy: None`, making) the pod's resolv.conf.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<PodDnsOption>,
}

impl Decode for PodDnsConfig {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| PodDnsConfig {
            nameservers: f.list("nameservers"),
            searches: f.list("searches"),
            options: f.list("options"),
        })
    }
}

/// One resolver option: `ndots: "2"`, `edns0`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PodDnsOption {
    pub name: String,
    pub value: Option<String>,
}

impl Decode for PodDnsOption {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| PodDnsOption {
            name: f.req("name").unwrap_or_default(),
            value: f.opt("value"),
        })
    }
}

/// `spec.hostAliases[]`: lines the kubelet adds to the pod's /etc/hosts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

impl Decode for HostAlias {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| HostAlias {
            ip: f.req("ip").unwrap_or_default(),
            hostnames: f.list("hostnames"),
        })
    }
}

impl Decode for PodSpec {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&[
                "activeDeadlineSeconds",
                "enableServiceLinks",
                "ephemeralContainers",
                "hostIPC",
                "hostPID",
                "hostUsers",
                "hostnameOverride",
                "imagePullSecrets",
                "os",
                "overhead",
                "readinessGates",
                "resourceClaims",
                "resources",
                "runtimeClassName",
                "securityContext",
                "setHostnameAsFQDN",
                "subdomain",
            ]);
            let mut ignored = Vec::new();
            for (field, why) in IGNORED_ON_ONE_HOST {
                if f.ignore(field) {
                    ignored.push(Ignored {
                        path: f.child(field),
                        why,
                    });
                }
            }
            let service_account_name = f
                .opt::<String>("serviceAccountName")
                .or_else(|| f.opt("serviceAccount"));
            PodSpec {
                service_account_name,
                ignored,
                containers: f.req("containers").unwrap_or_default(),
                init_containers: f.list("initContainers"),
                volumes: f.list("volumes"),
                restart_policy: f.opt("restartPolicy").unwrap_or(RestartPolicy::Always),
                termination_grace_period_seconds: f
                    .opt("terminationGracePeriodSeconds")
                    .unwrap_or(30),
                share_process_namespace: f.opt("shareProcessNamespace").unwrap_or(false),
                hostname: f.opt("hostname"),
                host_network: f.opt("hostNetwork").unwrap_or(false),
                dns_policy: f.opt("dnsPolicy").unwrap_or(DnsPolicy::ClusterFirst),
                dns_config: f.opt("dnsConfig"),
                host_aliases: f.list("hostAliases"),
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
        let (name, mut sources, unsupported_type) = d.object(node, path, |f| {
            f.unsupported(UNSUPPORTED_VOLUME_TYPES);
            let unsupported_type = UNSUPPORTED_VOLUME_TYPES.iter().any(|t| f.has(t));
            let mut sources = Vec::new();
            if let Some(e) = f.opt("emptyDir") {
                sources.push(VolumeSource::EmptyDir(e));
            }
            if let Some(h) = f.opt("hostPath") {
                sources.push(VolumeSource::HostPath(h));
            }
            (
                f.req::<String>("name").unwrap_or_default(),
                sources,
                unsupported_type,
            )
        })?;
        if sources.is_empty() && unsupported_type {
            // Its type was reported as not supported (the pod is refused for it). The volume
            // stays defined, as an empty directory that never runs, so that its mounts are not
            // reported again as mounts of an undefined volume.
            return Some(Volume {
                name,
                source: VolumeSource::EmptyDir(EmptyDir::default()),
            });
        }
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
    pub medium: StorageMedium,
    pub size_limit_bytes: Option<u64>,
}

impl Decode for EmptyDir {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        // `emptyDir: {}` is the common spelling; an empty mapping decodes to the defaults.
        d.object(node, path, |f| {
            let medium = f.opt("medium").unwrap_or(StorageMedium::Default);
            let limit: Option<String> = f.opt("sizeLimit");
            let limit_path = f.child("sizeLimit");
            let size_limit_bytes = limit.and_then(|text| match quantity::bytes(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    let loc = f.d.map.locate(&limit_path);
                    f.d.error_at(loc, &limit_path, e.to_string());
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
    #[serde(rename = "type")]
    pub kind: HostPathType,
}

impl Decode for HostPath {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| HostPath {
            path: f.req("path").unwrap_or_default(),
            kind: f.opt("type").unwrap_or(HostPathType::Unset),
        })
    }
}
