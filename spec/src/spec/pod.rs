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

/// The annotation that sets each Wasm sidecar's handle quota.
pub const MAX_HANDLES_ANNOTATION: &str = "wpod.dev/sidecar-max-handles";

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
        key: MAX_HANDLES_ANNOTATION,
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
    /// `nodeSelector`: labels the host must have (see the plan's node check).
    pub node_selector: BTreeMap<String, String>,
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`:
    /// the host must meet one of them.
    pub required_node_terms: Vec<NodeSelectorTerm>,
    /// `os.name`: `linux` (the only one wpod runs); what `lifecycle.stopSignal` needs.
    pub os: Option<String>,
    /// `securityContext`: merged into each container's when the file is read (the
    /// container's fields win), and the pod's groups, volume ownership and sysctls.
    pub security_context: super::container::PodSecurityContext,
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
    /// `hostUsers`: `Some(false)` gives the pod a user namespace of its own (its root is an
    /// unprivileged ID range on the host); `None` leaves it to the host's default.
    pub host_users: Option<bool>,
    pub dns_policy: DnsPolicy,
    pub dns_config: Option<PodDnsConfig>,
    pub host_aliases: Vec<HostAlias>,
    /// Pod-level `resources` (KEP-2837): limits on the pod's cgroup as a whole (containers
    /// without their own are bounded by it), and the requests the scheduler weighs.
    pub resources: super::container::Resources,
}

/// A field of the manifest wpod accepts and ignores, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Ignored {
    pub path: String,
    pub why: &'static str,
}

/// Scheduling fields: on one host there is no node to choose.
const IGNORED_ON_ONE_HOST: &[(&str, &str)] = &[
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
                "hostnameOverride",
                "imagePullSecrets",
                "overhead",
                "readinessGates",
                "resourceClaims",
                "runtimeClassName",
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
            // Node placement: on one host, a requirement the host's labels meet is met, one
            // they do not is refused (the plan checks); preferences and pod (anti-)affinity
            // have no other node to weigh.
            let node_selector: BTreeMap<String, String> = f.opt("nodeSelector").unwrap_or_default();
            let affinity: Option<Affinity> = f.opt("affinity");
            let affinity_path = f.child("affinity");
            let (required_node_terms, affinity_ignored) = match affinity {
                Some(a) => (a.required, a.ignored),
                None => (Vec::new(), Vec::new()),
            };
            ignored.extend(affinity_ignored.into_iter().map(|(field, why)| Ignored {
                path: format!("{affinity_path}.{field}"),
                why,
            }));
            let service_account_name = f
                .opt::<String>("serviceAccountName")
                .or_else(|| f.opt("serviceAccount"));
            let os_path = f.child("os");
            let os: Option<PodOs> = f.opt("os");
            if let Some(PodOs(name)) = &os {
                if name != "linux" {
                    let at = format!("{os_path}.name");
                    let loc = f.d.map.locate(&at);
                    f.d.error_at(
                        loc,
                        &at,
                        format!("\"{name}\": wpod runs Linux pods; write linux"),
                    );
                }
            }
            PodSpec {
                node_selector,
                required_node_terms,
                os: os.map(|o| o.0),
                security_context: f.opt("securityContext").unwrap_or_default(),
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
                host_users: f.opt("hostUsers"),
                dns_policy: f.opt("dnsPolicy").unwrap_or(DnsPolicy::ClusterFirst),
                dns_config: f.opt("dnsConfig"),
                resources: f.opt("resources").unwrap_or_default(),
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
    /// `configMap`, `secret`, `downwardAPI` and `projected`: files the kubelet writes from the
    /// pod's objects and fields (each of the first three is a projection of one source).
    Projected(Projected),
    /// `persistentVolumeClaim`: a named volume kept under wpod's state.
    Claim(ClaimRef),
    /// `image` (KEP-4639): an OCI image's files, read-only.
    Image(ImageVolume),
}

/// An `image` volume: `reference` pulled as a container image is, per `pullPolicy`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolume {
    pub reference: String,
    pub pull_policy: Option<super::enums::PullPolicy>,
}

impl Decode for ImageVolume {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ImageVolume {
            reference: f.req("reference").unwrap_or_default(),
            pull_policy: f.opt("pullPolicy"),
        })
    }
}

impl VolumeSource {
    /// Volumes whose files wpod writes: always mounted read-only, as the kubelet mounts them.
    pub fn is_projected(&self) -> bool {
        matches!(self, VolumeSource::Projected(_))
    }
}

/// Files written from ConfigMaps, Secrets and the downward API.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Projected {
    /// How the manifest wrote it (`configMap`, `secret`, `downwardAPI` or `projected`), so a
    /// problem is located where it was written.
    #[serde(skip)]
    pub written_as: &'static str,
    pub sources: Vec<Projection>,
    /// The files' mode when an item gives none (Kubernetes' 0644).
    pub default_mode: u32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Projection {
    ConfigMap(ObjectProjection),
    Secret(ObjectProjection),
    DownwardApi(Vec<DownwardFile>),
}

/// The keys of a ConfigMap or Secret as files: every key by its name, or `items` alone.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectProjection {
    pub name: String,
    pub items: Vec<KeyToPath>,
    /// An absent object (or key) leaves the files out instead of failing the pod.
    pub optional: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

/// One file of the downward API: a field of the pod, or a container's resource.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownwardFile {
    pub path: String,
    pub field: Option<String>,
    pub resource: Option<super::container::ResourceFieldRef>,
    pub mode: Option<u32>,
}

/// `persistentVolumeClaim`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    pub claim_name: String,
    pub read_only: bool,
}

/// Kubernetes volume types wpod does not implement; naming one says so.
const UNSUPPORTED_VOLUME_TYPES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
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
            if let Some(ObjectVolume {
                projection,
                default_mode,
            }) = f.opt("configMap")
            {
                sources.push(VolumeSource::Projected(Projected {
                    written_as: "configMap",
                    sources: vec![Projection::ConfigMap(projection)],
                    default_mode,
                }));
            }
            if let Some(SecretVolume(ObjectVolume {
                projection,
                default_mode,
            })) = f.opt("secret")
            {
                sources.push(VolumeSource::Projected(Projected {
                    written_as: "secret",
                    sources: vec![Projection::Secret(projection)],
                    default_mode,
                }));
            }
            if let Some(DownwardVolume {
                items,
                default_mode,
            }) = f.opt("downwardAPI")
            {
                sources.push(VolumeSource::Projected(Projected {
                    written_as: "downwardAPI",
                    sources: vec![Projection::DownwardApi(items)],
                    default_mode,
                }));
            }
            if let Some(p) = f.opt("projected") {
                sources.push(VolumeSource::Projected(p));
            }
            if let Some(c) = f.opt("persistentVolumeClaim") {
                sources.push(VolumeSource::Claim(c));
            }
            if let Some(i) = f.opt("image") {
                sources.push(VolumeSource::Image(i));
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
            // The pod is refused for it; the volume stays defined (as an empty directory that
            // never runs), so its mounts are not reported again as mounts of an undefined one.
            let placeholder = Volume {
                name: name.clone(),
                source: VolumeSource::EmptyDir(EmptyDir::default()),
            };
            d.error_at(
                loc,
                path,
                format!(
                    "has {what}; give exactly one of emptyDir, hostPath, configMap, secret, \
                     downwardAPI, projected, persistentVolumeClaim or image"
                ),
            );
            return Some(placeholder);
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

/// Kubernetes' default mode of projected files (0644).
const DEFAULT_MODE: u32 = 0o644;

/// A file mode as Kubernetes takes it: 0 to 0777 (YAML writes octal `0644` or decimal `420`).
fn mode(f: &mut super::decode::Fields<'_, '_>, name: &'static str) -> Option<u32> {
    f.opt::<super::decode::FileMode>(name).map(|m| m.0)
}

/// A path inside a projected volume: relative, no `..` element, not starting with `..`
/// (the kubelet keeps its own `..data` there).
fn check_relative(d: &mut Decoder, path: &str, p: &str) {
    let bad = p.is_empty()
        || p.len() > 4096
        || p.starts_with('/')
        || p.starts_with("..")
        || p.split('/')
            .any(|e| e == ".." || e == "." || e.is_empty() || e.len() > 255);
    if bad {
        let loc = d.map.locate(path);
        d.error_at(
            loc,
            path,
            format!(
                "\"{p}\" must be a relative path without \"..\" or \".\" elements, not starting \
                 with \"..\" (at most 4096 characters, 255 per element)"
            ),
        );
    }
}

impl Decode for KeyToPath {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let item = d.object(node, path, |f| KeyToPath {
            key: f.req("key").unwrap_or_default(),
            path: f.req("path").unwrap_or_default(),
            mode: mode(f, "mode"),
        })?;
        check_relative(d, &format!("{path}.path"), &item.path);
        Some(item)
    }
}

/// `configMap` (and, through [`SecretVolume`], `secret`) volumes, and their projected forms.
struct ObjectVolume {
    projection: ObjectProjection,
    default_mode: u32,
}

fn object_volume(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    name_field: &'static str,
) -> Option<ObjectVolume> {
    d.object(node, path, |f| ObjectVolume {
        projection: ObjectProjection {
            name: f.req(name_field).unwrap_or_default(),
            items: f.list("items"),
            optional: f.opt("optional").unwrap_or(false),
        },
        default_mode: mode(f, "defaultMode").unwrap_or(DEFAULT_MODE),
    })
}

impl Decode for ObjectVolume {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        object_volume(d, node, path, "name")
    }
}

struct SecretVolume(ObjectVolume);

impl Decode for SecretVolume {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        object_volume(d, node, path, "secretName").map(SecretVolume)
    }
}

/// A projection's ConfigMap or Secret: `name`, `items`, `optional` (no mode of its own).
impl Decode for ObjectProjection {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ObjectProjection {
            name: f.req("name").unwrap_or_default(),
            items: f.list("items"),
            optional: f.opt("optional").unwrap_or(false),
        })
    }
}

struct DownwardVolume {
    items: Vec<DownwardFile>,
    default_mode: u32,
}

impl Decode for DownwardVolume {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| DownwardVolume {
            items: f.list("items"),
            default_mode: mode(f, "defaultMode").unwrap_or(DEFAULT_MODE),
        })
    }
}

/// Items of a `downwardAPI` volume: its fields (no `status.*`: they change) and resources.
impl Decode for DownwardFile {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let file = d.object(node, path, |f| DownwardFile {
            path: f.req("path").unwrap_or_default(),
            field: f.opt::<super::container::FieldRef>("fieldRef").map(|r| r.0),
            resource: f.opt("resourceFieldRef"),
            mode: mode(f, "mode"),
        })?;
        check_relative(d, &format!("{path}.path"), &file.path);
        match (&file.field, &file.resource) {
            (Some(_), Some(_)) | (None, None) => {
                d.error_at(
                    loc,
                    path,
                    "give exactly one of fieldRef or resourceFieldRef",
                );
                return None;
            }
            (Some(field), None) if !field.starts_with("metadata.") => {
                let p = format!("{path}.fieldRef.fieldPath");
                let loc = d.map.locate(&p);
                d.error_at(
                    loc,
                    &p,
                    format!("a downwardAPI volume gives metadata fields only (Kubernetes' rule); \"{field}\" is for env"),
                );
                return None;
            }
            (None, Some(r)) if r.container_name.is_none() => {
                let p = format!("{path}.resourceFieldRef.containerName");
                let loc = d.map.locate(&format!("{path}.resourceFieldRef"));
                d.error_at(
                    loc,
                    &p,
                    "required in a volume: name the container whose resource it is",
                );
                return None;
            }
            _ => {}
        }
        Some(file)
    }
}

impl Decode for Projected {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| Projected {
            written_as: "projected",
            sources: f
                .list::<ProjectionSource>("sources")
                .into_iter()
                .map(|s| s.0)
                .collect(),
            default_mode: mode(f, "defaultMode").unwrap_or(DEFAULT_MODE),
        })
    }
}

struct ProjectionSource(Projection);

impl Decode for ProjectionSource {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let mut found = d.object(node, path, |f| {
            f.unsupported(&["clusterTrustBundle", "podCertificate"]);
            if f.has("serviceAccountToken") {
                let p = f.child("serviceAccountToken");
                let _ = f.ignore("serviceAccountToken");
                let loc = f.d.map.locate(&p);
                f.d.error_at(
                    loc,
                    &p,
                    "there is no API server on one host to issue a token; remove this source",
                );
            }
            let mut found = Vec::new();
            if f.has("serviceAccountToken") {
                // Refused above; it stands as an empty source, so the next ones keep their
                // place in messages.
                found.push(Projection::DownwardApi(Vec::new()));
            }
            if let Some(c) = f.opt("configMap") {
                found.push(Projection::ConfigMap(c));
            }
            if let Some(s) = f.opt("secret") {
                found.push(Projection::Secret(s));
            }
            if let Some(DownwardItems(items)) = f.opt("downwardAPI") {
                found.push(Projection::DownwardApi(items));
            }
            found
        })?;
        match found.len() {
            1 => found.pop().map(ProjectionSource),
            0 => None,
            _ => {
                d.error_at(
                    loc,
                    path,
                    "give one source per entry: configMap, secret or downwardAPI",
                );
                None
            }
        }
    }
}

/// A projection's `downwardAPI`: `items` only.
struct DownwardItems(Vec<DownwardFile>);

impl Decode for DownwardItems {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| DownwardItems(f.list("items")))
    }
}

impl Decode for ClaimRef {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ClaimRef {
            claim_name: f.req("claimName").unwrap_or_default(),
            read_only: f.opt("readOnly").unwrap_or(false),
        })
    }
}

/// `spec.os`: its `name`.
struct PodOs(String);

impl Decode for PodOs {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| PodOs(f.req("name").unwrap_or_default()))
    }
}

/// `affinity`: the node requirement wpod checks against the host, and what it ignores.
struct Affinity {
    required: Vec<NodeSelectorTerm>,
    ignored: Vec<(String, &'static str)>,
}

impl Decode for Affinity {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            let mut ignored = Vec::new();
            for (field, why) in [
                ("podAffinity", "there is one host: every pod of it is on it"),
                (
                    "podAntiAffinity",
                    "there is one host: no other node to keep apart on",
                ),
            ] {
                if f.ignore(field) {
                    ignored.push((field.to_string(), why));
                }
            }
            let node: Option<NodeAffinity> = f.opt("nodeAffinity");
            let mut required = Vec::new();
            if let Some(n) = node {
                required = n.required;
                if n.preferred {
                    ignored.push((
                        "nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution".into(),
                        "there is one host: no other node to prefer",
                    ));
                }
            }
            Affinity { required, ignored }
        })
    }
}

struct NodeAffinity {
    required: Vec<NodeSelectorTerm>,
    preferred: bool,
}

impl Decode for NodeAffinity {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            let preferred = f.ignore("preferredDuringSchedulingIgnoredDuringExecution");
            let required: Option<RequiredNodes> =
                f.opt("requiredDuringSchedulingIgnoredDuringExecution");
            NodeAffinity {
                required: required.map(|r| r.0).unwrap_or_default(),
                preferred,
            }
        })
    }
}

struct RequiredNodes(Vec<NodeSelectorTerm>);

impl Decode for RequiredNodes {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            RequiredNodes(f.req("nodeSelectorTerms").unwrap_or_default())
        })
    }
}

/// One of `nodeSelectorTerms`: all its requirements must hold.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    /// On the node's labels.
    pub match_expressions: Vec<NodeRequirement>,
    /// On the node's fields (`metadata.name`).
    pub match_fields: Vec<NodeRequirement>,
}

impl Decode for NodeSelectorTerm {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| NodeSelectorTerm {
            match_expressions: f.list("matchExpressions"),
            match_fields: f.list("matchFields"),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    pub values: Vec<String>,
}

impl NodeRequirement {
    /// Whether the node's value of `key` (`None`: it has none) meets this requirement.
    pub fn holds(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.parse::<i64>().ok();
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            "NotIn" => !value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(have), Some(want)) = (
                    value.and_then(number),
                    self.values.first().and_then(|w| number(w)),
                ) else {
                    return false;
                };
                if self.operator == "Gt" {
                    have > want
                } else {
                    have < want
                }
            }
            _ => false,
        }
    }
}

impl Decode for NodeRequirement {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let r = d.object(node, path, |f| NodeRequirement {
            key: f.req("key").unwrap_or_default(),
            operator: f.req("operator").unwrap_or_default(),
            values: f.list("values"),
        })?;
        let op_path = format!("{path}.operator");
        let bad = match r.operator.as_str() {
            "In" | "NotIn" => r.values.is_empty().then_some("needs values"),
            "Exists" | "DoesNotExist" => (!r.values.is_empty()).then_some("takes no values"),
            "Gt" | "Lt" => (r.values.len() != 1 || r.values[0].parse::<i64>().is_err())
                .then_some("needs one integer value"),
            _ => Some("is not an operator: write In, NotIn, Exists, DoesNotExist, Gt or Lt"),
        };
        if let Some(why) = bad {
            let loc = d.map.locate(&op_path);
            d.error_at(loc, &op_path, format!("{} {why}", r.operator));
            return None;
        }
        Some(r)
    }
}
