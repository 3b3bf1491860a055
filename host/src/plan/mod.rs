//! Pod → PodPlan: what to create and in which order, decided before anything starts.
//!
//! Everything that can be checked without touching the system is checked here, so `wpod
//! validate` and `wpod run` refuse the same manifests with the same located errors.

pub mod change;
pub mod files;
pub mod fit;
pub mod image;
pub mod in_container;
pub mod native;
pub mod node;
pub mod seccomp;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::grants::{self, Grants, Sidecar};
pub use crate::spec::Role;
use crate::spec::{
    Annotations, Container, ContainerPort, Diagnostic, Diagnostics, EmptyDir, Handler, HostPath,
    HostPathType, Lifecycle, Pod, PodName, Probe, Protocol, ResourceList, RestartPolicy,
    StorageMedium, VolumeSource,
};
pub use image::{Image, ImageError, WasmComponent};

#[derive(Clone, Debug)]
pub struct ContainerPlan {
    /// Field path of the container in the manifest, e.g. `spec.containers[0]`.
    pub path: String,
    pub role: Role,
    /// When it starts again after it ends (Kubernetes' rules: see [`restart_policy`]).
    pub restart_policy: RestartPolicy,
    pub image: Image,
    /// The container as the manifest gives it: read by the plan only (the compiler keeps it
    /// so). Everything the layers above need is one of the decisions below.
    spec: Container,
    /// The container's name.
    pub name: String,
    /// Its ports: where probes and hooks find a port given by name.
    pub ports: Vec<ContainerPort>,
    /// Its startup, readiness and liveness probes.
    pub probes: ContainerProbes,
    /// Its `postStart` and `preStop` hooks.
    pub hooks: Lifecycle,
    /// Where its termination message is read from, and whether its output stands in for one
    /// (`terminationMessagePath`, `terminationMessagePolicy`).
    pub termination_message: TerminationMessage,
    /// Its `resources.limits` (exact quantities): the cgroup's for a native container, the
    /// store's memory bound for a Wasm sidecar.
    pub limits: ResourceList,
    /// Its image as `ps` and `describe` show it: `host`, the file name of a local component,
    /// the rootfs directory as written, a registry reference (`REF@DIGEST` once pulled).
    pub shown_image: String,
    /// What a Wasm sidecar is granted, decided once; `None` for a native container.
    pub grants: Option<Grants>,
    /// A native container's process, decided once its image is known
    /// ([`PodPlan::with_native_processes`]); `None` for a Wasm sidecar, and before that.
    pub process: Option<native::NativeProcess>,
}

/// Kubernetes' termination message: a file the kubelet mounts into the container (native
/// containers: a Wasm sidecar has no such file), read when it ends, at most 4 KiB; with
/// `fallback_to_logs`, an error exit without one takes the last 80 lines (2 KiB) of its output.
#[derive(Clone, Debug, Default)]
pub struct TerminationMessage {
    pub path: String,
    pub fallback_to_logs: bool,
}

/// A container's probes (Kubernetes' `startupProbe`, `readinessProbe`, `livenessProbe`).
#[derive(Clone, Debug, Default)]
pub struct ContainerProbes {
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

impl ContainerProbes {
    /// Whether the container has any probe.
    pub fn any(&self) -> bool {
        self.startup.is_some() || self.readiness.is_some() || self.liveness.is_some()
    }
}

/// How an image is shown ([`ContainerPlan::shown_image`]): `written` is the manifest's `image`.
fn shown_image(written: Option<&str>, image: &Image) -> String {
    match image {
        Image::Host => "host".to_string(),
        Image::Rootfs(_) => written.unwrap_or_default().to_string(),
        Image::Wasm(WasmComponent {
            reference: Some(r), ..
        }) => r.clone(),
        Image::Wasm(w) => image::file_label(&w.path),
        Image::Registry { name, .. } => name.canonical(),
    }
}

impl ContainerPlan {
    /// The plan of one container of the manifest (`path`: its field path), before its image
    /// is known to be native or Wasm beyond what `image` says.
    fn new(
        path: String,
        role: Role,
        pod_policy: RestartPolicy,
        image: Image,
        c: &Container,
        grants: Option<Grants>,
    ) -> Self {
        ContainerPlan {
            shown_image: shown_image(c.image.as_deref(), &image),
            restart_policy: restart_policy(role, pod_policy),
            path,
            role,
            image,
            name: c.name.clone(),
            ports: c.ports.clone(),
            probes: ContainerProbes {
                startup: c.startup_probe.clone(),
                readiness: c.readiness_probe.clone(),
                liveness: c.liveness_probe.clone(),
            },
            hooks: c.lifecycle.clone().unwrap_or_default(),
            limits: c.resources.limits.clone(),
            termination_message: TerminationMessage {
                path: c.termination_message_path.clone(),
                fallback_to_logs: c.termination_message_fallback,
            },
            spec: c.clone(),
            grants,
            process: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A pod ready to be created: containers in start order, and what the sandbox must set up.
#[derive(Clone, Debug)]
pub struct PodPlan {
    /// The manifest: read by the plan only (the compiler keeps it so).
    pod: Pod,
    /// The pod's name, checked: it names the pod's state directory and cgroups.
    pub name: PodName,
    pub containers: Vec<ContainerPlan>,
    /// wpod's settings from the pod's annotations, defaults applied.
    pub settings: Annotations,
    /// `terminationGracePeriodSeconds`, at most [`MAX_GRACE`].
    pub grace_period: Duration,
    /// The hostPorts to publish.
    pub port_mappings: Vec<PortMapping>,
    /// Volumes some Wasm sidecar may write: native containers mount them `nosymfollow`, so a
    /// symlink a sidecar writes there leads nobody out of the volume.
    pub nosymfollow_volumes: BTreeSet<String>,
    /// The size of each `medium: Memory` emptyDir's tmpfs, by volume name; `None` leaves the
    /// kernel's default (half of the host's memory).
    pub tmpfs_sizes: BTreeMap<String, Option<u64>>,
    /// The memory limit of the wpod process while it runs this pod (see
    /// [`runtime_memory_limit`]); `None`: not bounded.
    pub runtime_memory_limit: Option<u64>,
    /// How the descriptors wpod may open are shared (see [`fd_budget`]).
    pub fd_budget: FdBudget,
    /// How the pod reaches the network.
    pub network: Network,
    /// The pod's resolv.conf, before the host's part (`dnsPolicy`, `dnsConfig`).
    pub dns: DnsPlan,
    /// `spec.hostAliases`, for the pod's /etc/hosts.
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
    /// The pod's hostname: `spec.hostname`, else its name (as in Kubernetes).
    pub hostname: String,
    /// `metadata.namespace`, for the pod network (CNI's `K8S_POD_NAMESPACE`).
    pub namespace: Option<String>,
    /// `spec.shareProcessNamespace`: one PID namespace for all its containers.
    pub share_process_namespace: bool,
    /// A user namespace of the pod's own (`spec.hostUsers: false`, or the host's default;
    /// [`users`]): its IDs 0-65535 are a range of the host's the sandbox leases.
    pub user_namespace: bool,
    /// Run by an ordinary user's wpod, in its user namespace (`sandbox::rootless`): no cgroup
    /// of its own (limits are said not to apply), the network through pasta.
    pub rootless: bool,
    /// The pod's volumes, checked (each supported type; hostPaths allowed by policy), in the
    /// manifest's order.
    pub volumes: Vec<VolumePlan>,
    /// `securityContext.fsGroup`: the group that owns the pod's volumes (hostPaths aside),
    /// and whether a volume whose root has it already is left as it is (`OnRootMismatch`).
    pub fs_group: Option<(u32, bool)>,
    /// `securityContext.sysctls`: set in the pod's namespaces before its containers start.
    pub sysctls: Vec<(String, String)>,
    /// Pod-level `resources.limits` as the cgroup of the native containers together takes
    /// them: the pod's memory less what its Wasm sidecars may take (they run in wpod's process,
    /// outside that cgroup, each held to its own limit), the pod's CPU ([`share_pod_limits`]).
    pub limits: crate::spec::ResourceList,
    /// Fields accepted and ignored on one host (scheduling), located, with why: `wpod
    /// validate` prints them, `wpod run` says them as warnings.
    pub ignored: Vec<Diagnostic>,
    /// Where it runs: what a re-plan (once images are pulled) checks.
    pub target: Target,
}

/// A volume of the pod, as the sandbox makes it.
#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub name: String,
    pub kind: VolumeKind,
}

#[derive(Clone, Debug)]
pub enum VolumeKind {
    EmptyDir(EmptyDir),
    HostPath(HostPath),
    /// Files written from ConfigMaps, Secrets and the downward API (`configMap`, `secret`,
    /// `downwardAPI`, `projected`), mounted read-only.
    Files(files::Files),
    /// A PersistentVolumeClaim of the file: a directory under wpod's state
    /// (`$WPOD_ROOT/volumes/NAME`), kept after the pod ends, as podman's named volumes.
    Claim {
        claim: String,
        dir: PathBuf,
    },
    /// An `image` volume: a registry image, pulled with the pod's images; `layers` (topmost
    /// first) once pulled ([`PodPlan::with_volume_images`]), mounted read-only.
    Image {
        name: crate::oci::reference::ImageName,
        policy: crate::spec::PullPolicy,
        layers: Vec<PathBuf>,
    },
}

/// Where a PersistentVolumeClaim's data lives: `$WPOD_ROOT/volumes/NAME`.
pub fn claim_dir(claim: &str) -> PathBuf {
    crate::files::state_root().join("volumes").join(claim)
}

/// The pod's volumes as the sandbox makes them: a projected volume's files decided from the
/// file's objects, a claim's directory. Problems are located.
fn plan_volumes(pod: &Pod, host: &HostInfo, diags: &mut Vec<Diagnostic>) -> Vec<VolumePlan> {
    let mut out = Vec::new();
    for (i, v) in pod.spec.volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let kind = match &v.source {
            VolumeSource::EmptyDir(e) => VolumeKind::EmptyDir(e.clone()),
            VolumeSource::HostPath(h) => VolumeKind::HostPath(h.clone()),
            VolumeSource::Projected(p) => match files::project(pod, p, &host.facts()) {
                Ok(f) => VolumeKind::Files(f),
                Err(problems) => {
                    diags.extend(
                        problems
                            .into_iter()
                            .map(|(field, m)| pod.source.diag(format!("{path}.{field}"), m)),
                    );
                    continue;
                }
            },
            VolumeSource::Image(i) => {
                match image::resolve(Some(&i.reference), i.pull_policy, pod.manifest_dir()) {
                    Ok(Image::Registry { name, policy }) => VolumeKind::Image {
                        name,
                        policy,
                        layers: Vec::new(),
                    },
                    Ok(_) => {
                        diags.push(pod.source.diag(
                            format!("{path}.image.reference"),
                            "an image volume takes a registry image reference (such as \
                             registry.example/team/data:1), not a file or directory",
                        ));
                        continue;
                    }
                    Err(e) => {
                        diags.push(
                            pod.source
                                .diag(format!("{path}.image.reference"), e.to_string()),
                        );
                        continue;
                    }
                }
            }
            VolumeSource::Claim(c) => {
                if !pod.objects.claims.contains_key(&c.claim_name) {
                    diags.push(pod.source.diag(
                        format!("{path}.persistentVolumeClaim.claimName"),
                        format!(
                            "no PersistentVolumeClaim named \"{0}\" in this file; add a `kind: \
                             PersistentVolumeClaim` document with metadata.name: {0}",
                            c.claim_name
                        ),
                    ));
                    continue;
                }
                VolumeKind::Claim {
                    claim: c.claim_name.clone(),
                    dir: claim_dir(&c.claim_name),
                }
            }
        };
        out.push(VolumePlan {
            name: v.name.clone(),
            kind,
        });
    }
    out
}

/// How a pod reaches the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Network {
    /// Its own network namespace joined to a network by CNI: an address, a default route;
    /// hostPorts by the portmap plugin (in the kernel).
    Cni,
    /// Its own network namespace with `lo` only (`wpod.dev/network: none`); hostPorts forwarded
    /// by wpod to the pod's loopback.
    Loopback,
    /// The host's network (and UTS) namespace (`spec.hostNetwork`): containers listen on the
    /// host itself.
    Host,
    /// A rootless pod's (`sandbox::rootless`): its own network namespace joined to the host's
    /// network by pasta (Debian's `passt`), which gives it the host's address and routes and
    /// makes its connections from the user's own sockets; the gateway's address reaches the
    /// host's loopback. hostPorts forwarded by wpod, as for `Loopback`.
    Pasta,
}

/// What the pod's resolv.conf holds: the host's resolvers (`dnsPolicy` Default, and
/// ClusterFirst, as the kubelet without cluster DNS), then `dnsConfig`'s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub from_host: bool,
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

/// The descriptors of the wpod process that runs a pod, shared out so that nothing the pod
/// does from inside (sidecars holding handles) or outside (clients holding hostPort
/// connections) can take the ones wpod needs to restart a container or open a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// Connections the pod's hostPorts forward at once, all ports together (more wait in the
    /// kernel's backlog).
    pub forwarded_connections: u64,
}

/// Descriptors wpod keeps for itself whatever the pod: its runtimes, the control socket, the
/// journal, the lifeline, the compiled code it maps (measured idle: about 60).
pub const RESERVED_FDS: u64 = 256;
/// Descriptors wpod holds per container: output pipes, log files, a shim's report pipe and
/// pidfd, cgroup files while it starts.
pub const FDS_PER_CONTAINER: u64 = 8;
/// Connections one hostPort forwards at once, at most.
pub const MAX_FORWARDED_PER_PORT: u64 = 1024;
/// Descriptors one forwarded connection holds: its two sockets and a pipe (two ends) each way.
pub const FDS_PER_FORWARDED: u64 = 6;
/// The fewest connections a pod with hostPorts must be able to forward at once.
pub const MIN_FORWARDED: u64 = 64;

/// The hard limit on open files of this process (what `wpod run` raises its soft limit to).
pub fn open_files_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// What wpod itself needs while it runs a pod, Wasm sidecars aside: its runtimes, its port
/// forwarders, buffers. Measured idle at ~40 MiB; the rest is headroom.
pub const RUNTIME_BASE_MEMORY: u64 = 256 << 20;
/// What wpod keeps per container: its recent output (`logs::HISTORY_BYTES`) and its tasks.
pub const RUNTIME_MEMORY_PER_CONTAINER: u64 = 4 << 20;

/// The longest grace period wpod waits: a year (Kubernetes sets no bound, but a deadline past
/// the clock's range would overflow).
pub const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 3600);

impl PodPlan {
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The pod's main containers, which a sidecar's main-process view shows: the regular
    /// native ones, in manifest order.
    pub fn main_containers(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|c| c.role == Role::Regular && !c.image.is_wasm())
            .map(|c| c.name().to_string())
            .collect()
    }
}

/// One published port: the host listens on `host_ip:host_port` and forwards to the pod's
/// loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub container: String,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// Kubernetes' restart rules: native sidecars always restart; init containers restart on
/// failure unless the pod says Never; regular containers follow the pod.
pub fn restart_policy(role: Role, pod: RestartPolicy) -> RestartPolicy {
    match (role, pod) {
        (Role::NativeSidecar, _) => RestartPolicy::Always,
        (_, RestartPolicy::Never) => RestartPolicy::Never,
        (Role::Init, _) | (_, RestartPolicy::OnFailure) => RestartPolicy::OnFailure,
        (Role::Regular, RestartPolicy::Always) => RestartPolicy::Always,
    }
}

/// Resolves images and grants, and checks what depends on them and on the host.
pub fn plan(pod: &Pod) -> Result<PodPlan, Diagnostics> {
    plan_with(pod, &BTreeMap::new(), Target::ThisHost)
}

/// Where a plan is for: this host (`wpod run`), or a node of a cluster (`wpod kube
/// generate`), whose capacity, kernel, hostPath policy and AppArmor this host cannot tell: those
/// checks are left to the node's kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    ThisHost,
    Cluster,
}

impl PodPlan {
    /// The plan once its registry images are pulled: each that turned out to be a Wasm sidecar
    /// (`sidecars`: its component in the store, by container path) runs as one, its grants
    /// resolved and checked exactly as for a `.wasm` file beside the manifest.
    pub fn with_pulled_sidecars(
        &self,
        sidecars: &BTreeMap<String, WasmComponent>,
    ) -> Result<PodPlan, Diagnostics> {
        if sidecars.is_empty() {
            return Ok(self.clone());
        }
        let images = sidecars
            .iter()
            .map(|(path, component)| (path.clone(), Image::Wasm(component.clone())))
            .collect();
        plan_with(&self.pod, &images, self.target)
    }
}

impl PodPlan {
    /// The plan with each `image` volume's layers (by volume name), once pulled.
    pub fn with_volume_images(mut self, layers: &BTreeMap<String, Vec<PathBuf>>) -> PodPlan {
        for v in &mut self.volumes {
            if let (VolumeKind::Image { layers: l, .. }, Some(pulled)) =
                (&mut v.kind, layers.get(&v.name))
            {
                *l = pulled.clone();
            }
        }
        self
    }
}

impl PodPlan {
    /// The plan with each native container's process decided on its image (`images`: the
    /// pulled image of each container, by index; `None` for one that needs none). What cannot
    /// be decided (a `runAsNonRoot` container whose image runs as root, an image with nothing
    /// to run) is a located error, before anything of the pod exists.
    pub fn with_native_processes(
        &self,
        images: &[Option<crate::oci::pull::StoredImage>],
    ) -> Result<PodPlan, Diagnostics> {
        let mut plan = self.clone();
        let host = HostInfo::here(&self.pod);
        let mut diags = Vec::new();
        for (i, c) in plan.containers.iter_mut().enumerate() {
            if c.image.is_wasm() {
                continue;
            }
            let image = images.get(i).and_then(Option::as_ref);
            if let (Image::Registry { name, .. }, Some(pulled)) = (&c.image, image) {
                c.shown_image = image::pinned(&name.canonical(), pulled.record.digest.as_str());
            }
            let process = native::process(c, &self.pod, &host.facts(), image).and_then(|p| {
                // The image's USER may name IDs the manifest does not.
                match self.user_namespace {
                    true => users::check_process(&c.path, &p).map(|()| p),
                    false => Ok(p),
                }
            });
            match process {
                Ok(process) => c.process = Some(process),
                Err((field, message)) => diags.push(self.pod.source.diag(field, message)),
            }
        }
        match diags.is_empty() {
            true => Ok(plan),
            false => Err(Diagnostics(diags)),
        }
    }
}

/// The annotation older manifests give a container's AppArmor profile by (Kubernetes < 1.30).
const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// A container's AppArmor profile (`securityContext.appArmorProfile`, the pod's, or the older
/// annotation) against this host: `Unconfined` always holds; any other is refused where it
/// cannot be applied, as the kubelet refuses the pod, rather than the container running
/// without the confinement its manifest asked for. wpod applies no AppArmor profile yet, so a
/// host with AppArmor is told that; one without is told it lacks AppArmor.
fn check_app_armor(pod: &Pod, path: &str, c: &Container, diags: &mut Vec<Diagnostic>) {
    let from_field = c
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor.as_ref());
    let annotation = format!("{APPARMOR_ANNOTATION}{}", c.name);
    // The container's own field, then its annotation, then the pod's field.
    let own_written = pod
        .source
        .has(&format!("{path}.securityContext.appArmorProfile"));
    let from_field =
        from_field.filter(|_| own_written || !pod.metadata.annotations.contains_key(&annotation));
    let (field, wanted) = match (from_field, pod.metadata.annotations.get(&annotation)) {
        (Some(p), _) => {
            // The container's own, or the pod's it inherited.
            let own = format!("{path}.securityContext.appArmorProfile");
            let inherited = pod.spec.security_context.app_armor.as_ref() == Some(p);
            if pod.source.has(&own) && inherited {
                // Its own was refused when read: said there already.
                return;
            }
            let field = match pod.source.has(&own) {
                true => format!("{own}.type"),
                false => "spec.securityContext.appArmorProfile.type".to_string(),
            };
            let name = match &p.localhost_profile {
                Some(l) => format!("{} {l}", p.kind),
                None => p.kind.clone(),
            };
            (field, name)
        }
        (None, Some(value)) => (format!("metadata.annotations.{annotation}"), value.clone()),
        (None, None) => return,
    };
    if matches!(wanted.as_str(), "Unconfined" | "unconfined") {
        return;
    }
    let host = std::path::Path::new("/sys/kernel/security/apparmor");
    let message = if host.is_dir() {
        format!(
            "AppArmor profile {wanted}: wpod does not apply AppArmor profiles yet, and a container \
             must not run without the confinement its manifest asks for; set type: Unconfined \
             (or remove it) to run it without"
        )
    } else {
        format!(
            "AppArmor profile {wanted}: AppArmor is not enabled on this host ({} is missing), \
             so the profile cannot be applied (the kubelet refuses such a pod too); set type: \
             Unconfined (or remove it) to run it without",
            host.display()
        )
    };
    diags.push(pod.source.diag(field, message));
}

/// What the downward API reads of this host: its name, and its capacity (a `resourceFieldRef`
/// to a limit that is not set gives it).
struct HostInfo {
    node_name: String,
    /// `None` when it cannot be read (then the fit check is skipped, and an unset limit
    /// reads as one core and no memory).
    capacity: Option<fit::Capacity>,
    /// The pod's own limits (pod-level `resources`): what an unset container limit reads as
    /// before the host's capacity, as the kubelet gives them.
    pod_limits: crate::spec::ResourceList,
}

impl HostInfo {
    fn here(pod: &Pod) -> Self {
        HostInfo {
            pod_limits: pod.spec.resources.limits.clone(),
            node_name: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            capacity: fit::Capacity::here(),
        }
    }

    fn facts(&self) -> crate::spec::env::HostFacts<'_> {
        crate::spec::env::HostFacts {
            node_name: &self.node_name,
            cpu_millis: self
                .pod_limits
                .cpu_millis
                .unwrap_or_else(|| self.capacity.map_or(1000, |c| c.cpu_millis)),
            memory_bytes: self
                .pod_limits
                .memory_bytes
                .unwrap_or_else(|| self.capacity.map_or(0, |c| c.memory_bytes)),
        }
    }
}

/// `plan`, with the images of some containers (by path) already decided.
fn plan_with(
    pod: &Pod,
    decided: &BTreeMap<String, Image>,
    target: Target,
) -> Result<PodPlan, Diagnostics> {
    let here = target == Target::ThisHost;
    let mut diags = Vec::new();
    let host = HostInfo::here(pod);
    let mut containers = Vec::new();
    for (path, role, c) in pod.containers_in_order() {
        let resolved = match decided.get(&path) {
            Some(image) => Ok(image.clone()),
            None => image::resolve(c.image.as_deref(), c.image_pull_policy, pod.manifest_dir()),
        };
        let image = match resolved {
            Ok(image) => image,
            Err(e) => {
                diags.push(pod.source.diag(format!("{path}.image"), e.to_string()));
                continue;
            }
        };
        let grants = match &image {
            Image::Wasm(component) => {
                let sidecar = Sidecar {
                    pod,
                    path: &path,
                    container: c,
                    host: &host.facts(),
                };
                Some(wasm_grants(&sidecar, &component.path, &mut diags))
            }
            _ => {
                check_native_container(pod, &path, c, &image, &mut diags);
                // Its environment is made again with its image's once pulled; what the file
                // gets wrong is said now.
                if let Err(problems) = crate::spec::env::resolve(pod, c, &host.facts()) {
                    diags.extend(
                        problems
                            .into_iter()
                            .map(|p| pod.source.diag(format!("{path}.{}", p.field), p.message)),
                    );
                }
                None
            }
        };
        containers.push(ContainerPlan::new(
            path,
            role,
            pod.spec.restart_policy,
            image,
            c,
            grants,
        ));
    }
    let containers_limits = share_pod_limits(pod, &mut containers, &mut diags);
    let volumes = plan_volumes(pod, &host, &mut diags);
    for (path, _, c) in pod.containers_in_order().filter(|_| here) {
        check_app_armor(pod, &path, c, &mut diags);
    }
    if pod.spec.host_network {
        for (i, (name, _)) in pod.spec.security_context.sysctls.iter().enumerate() {
            if name.starts_with("net.") {
                diags.push(pod.source.diag(
                    format!("spec.securityContext.sysctls[{i}].name"),
                    format!("{name} would be the host's own on the host's network (hostNetwork: true); remove it, or the pod's hostNetwork"),
                ));
            }
        }
    }
    check_sidecar_count(pod, &containers, &mut diags);
    check_outbound_keys(pod, &containers, &mut diags);
    check_volume_nesting(pod, &containers, &mut diags);
    if here {
        check_host_paths(pod, &mut diags);
        if let Some(capacity) = host.capacity {
            fit::check(pod, &containers, capacity, &mut diags);
        }
        node::check(pod, &node::Node::here(&host.node_name), &mut diags);
    }
    // This host's default is this host's: a pod planned for Kubernetes takes the cluster's.
    let default = match here {
        true => users::host_default(),
        false => Ok((true, "Kubernetes' default".to_string())),
    };
    // An ordinary user's wpod (`sandbox::rootless`): its pods are in its user namespace.
    let rootless = here && crate::files::rootless_uid().is_some();
    let default = match rootless {
        true => Ok((true, "a rootless wpod's".to_string())),
        false => default,
    };
    let user_namespace = users::user_namespace(pod, default, &mut diags);
    if rootless {
        users::check_rootless(pod, user_namespace, &mut diags);
    }
    let mut settings = pod.annotations();
    let network = match (pod.spec.host_network, settings.network_none, rootless) {
        (true, _, _) => Network::Host,
        (false, true, _) => Network::Loopback,
        (false, false, true) => Network::Pasta,
        (false, false, false) => Network::Cni,
    };
    // On the host's network a container listens on the host itself: nothing is published.
    let port_mappings = match network {
        Network::Host => Vec::new(),
        _ => port_mappings(pod, &mut diags),
    };
    // Each hostPort holds a socket; only wpod's own forwarder (a pod off the network) holds
    // descriptors per connection too: portmap's are the kernel's.
    let forwarded = match network {
        Network::Loopback | Network::Pasta => port_mappings.len() as u64,
        _ => 0,
    };
    let ports = (port_mappings.len() as u64, forwarded);
    if !pod
        .metadata
        .annotations
        .contains_key(crate::spec::MAX_HANDLES_ANNOTATION)
    {
        settings.sidecar_max_handles = shared_handles(&containers, ports, open_files_limit());
    }
    let fd_budget = fd_budget(
        pod,
        &containers,
        settings.sidecar_max_handles,
        ports,
        open_files_limit(),
        &mut diags,
    );
    let name = PodName::new(&pod.metadata.name)
        .map_err(|e| diags.push(pod.source.diag("metadata.name", e)));
    match name {
        Ok(name) if diags.is_empty() => {
            let tmpfs_sizes = tmpfs_sizes(pod, &containers);
            Ok(PodPlan {
                name,
                runtime_memory_limit: runtime_memory_limit(&containers, &tmpfs_sizes),
                nosymfollow_volumes: sidecar_writable_volumes(&containers),
                grace_period: grace_period(pod),
                containers,
                settings,
                port_mappings,
                tmpfs_sizes,
                fd_budget,
                network,
                dns: dns_plan(pod),
                host_aliases: host_aliases(pod),
                hostname: pod.hostname().to_string(),
                namespace: pod.metadata.namespace.clone(),
                share_process_namespace: pod.spec.share_process_namespace,
                user_namespace,
                rootless,
                volumes,
                fs_group: pod
                    .spec
                    .security_context
                    .fs_group
                    .map(|g| (g, pod.spec.security_context.fs_group_on_root_mismatch)),
                sysctls: pod.spec.security_context.sysctls.clone(),
                limits: containers_limits,
                ignored: pod
                    .spec
                    .ignored
                    .iter()
                    .map(|i| pod.source.diag(&i.path, format!("ignored: {}", i.why)))
                    .collect(),
                pod: pod.clone(),
                target,
            })
        }
        _ => {
            diags.sort_by_key(|d| d.loc);
            Err(Diagnostics(diags))
        }
    }
}

/// `terminationGracePeriodSeconds`, at most [`MAX_GRACE`].
fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod.spec.termination_grace_period_seconds.max(0) as u64;
    Duration::from_secs(seconds).min(MAX_GRACE)
}

/// `spec.hostAliases`, as the pod's /etc/hosts has them (validation checked each address).
fn host_aliases(pod: &Pod) -> Vec<(IpAddr, Vec<String>)> {
    pod.spec
        .host_aliases
        .iter()
        .filter_map(|a| Some((a.ip.parse().ok()?, a.hostnames.clone())))
        .collect()
}

/// A located problem with `field` of this plan's manifest (`spec.containers[1].image`).
impl PodPlan {
    pub fn diag(&self, field: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        self.pod.source.diag(field, message)
    }
}

/// Each `wpod.dev/allowed-outbound.<container>` must name a Wasm container of the pod (a
/// registry image may turn out to be one once pulled): a typo would otherwise grant nothing
/// and say nothing, and a native container's traffic is the pod network's to govern.
fn check_outbound_keys(pod: &Pod, containers: &[ContainerPlan], diags: &mut Vec<Diagnostic>) {
    for key in pod.metadata.annotations.keys() {
        let Some(name) = key.strip_prefix(crate::spec::OUTBOUND_PREFIX) else {
            continue;
        };
        let field = format!("metadata.annotations.{key}");
        match containers.iter().find(|c| c.name() == name) {
            Some(c) if matches!(c.image, Image::Wasm(_) | Image::Registry { .. }) => {}
            Some(_) => diags.push(pod.source.diag(
                field,
                format!(
                    "container \"{name}\" is a native container: outbound rules are for Wasm \
                     sidecars (a native container reaches whatever the pod's network reaches)"
                ),
            )),
            None => {
                let names: Vec<&str> = containers
                    .iter()
                    .filter(|c| c.image.is_wasm())
                    .map(|c| c.name())
                    .collect();
                let hint = match crate::spec::did_you_mean(name, &names) {
                    Some(n) => format!("did you mean \"{n}\"?"),
                    None if names.is_empty() => "the pod has no Wasm sidecar".to_string(),
                    None => format!("its Wasm sidecars are {}", names.join(", ")),
                };
                diags.push(pod.source.diag(
                    field,
                    format!("no container \"{name}\" in this pod: {hint}"),
                ));
            }
        }
    }
}

/// Wasm containers one pod may run at once: the size of the instance pool of the wpod process
/// that hosts it (`sidecars::engine`). Its slots are reserved address space, not memory.
pub const MAX_WASM_CONTAINERS: usize = 1024;

/// The Wasm containers that hold a slot of the sidecar pool at once: the regular ones, the
/// native sidecars, and one init container at a time (counted as the first).
fn pool_slots(containers: &[ContainerPlan]) -> impl Iterator<Item = &ContainerPlan> {
    let first_init = containers
        .iter()
        .position(|c| c.image.is_wasm() && c.role == Role::Init);
    containers
        .iter()
        .enumerate()
        .filter(move |(i, c)| c.image.is_wasm() && (c.role != Role::Init || Some(*i) == first_init))
        .map(|(_, c)| c)
}

impl PodPlan {
    /// The Wasm containers of the pod that run at once (what its sidecar pool must hold).
    pub fn wasm_containers_at_once(&self) -> usize {
        pool_slots(&self.containers).count()
    }
}

/// The Wasm containers that run at once must fit in the pool: past it one would fail at every
/// start.
fn check_sidecar_count(pod: &Pod, containers: &[ContainerPlan], diags: &mut Vec<Diagnostic>) {
    if let Some(first_over) = pool_slots(containers).nth(MAX_WASM_CONTAINERS) {
        diags.push(pod.source.diag(
            format!("{}.image", first_over.path),
            format!(
                "a pod runs at most {MAX_WASM_CONTAINERS} Wasm containers at once (the sidecar \
                 pool of the wpod process that hosts it), and this one is past it: move \
                 sidecars to another pod"
            ),
        ));
    }
}

/// Shares out the `limit` descriptors wpod may open: its own reserve, each container's and a
/// socket per hostPort first, then every Wasm sidecar's handle quota
/// (`wpod.dev/sidecar-max-handles`, for the sidecars that run at once), and what is left to
/// the connections wpod forwards itself (`ports`: the hostPorts of a pod off the network; at
/// most [`MAX_FORWARDED_PER_PORT`] per port; portmap's are the kernel's). A pod whose quotas leave hostPorts less than
/// [`MIN_FORWARDED`] connections, or leave wpod less than its reserve, is refused with the
/// arithmetic: twenty sidecars within their own quotas once took every descriptor wpod had.
fn fd_budget(
    pod: &Pod,
    containers: &[ContainerPlan],
    per_sidecar: u64,
    (host_ports, ports): (u64, u64),
    limit: u64,
    diags: &mut Vec<Diagnostic>,
) -> FdBudget {
    let sidecars = pool_slots(containers).count() as u64;
    let quotas = sidecars.saturating_mul(per_sidecar);
    let (fixed, min_forwarded) = fixed_fds(containers, (host_ports, ports));
    let needed = fixed.saturating_add(quotas).saturating_add(min_forwarded);
    if needed > limit {
        let room = limit.saturating_sub(fixed + min_forwarded);
        let fix = match (sidecars, room / sidecars.max(1)) {
            (0, _) => "raise the hard limit on open files (ulimit -Hn, LimitNOFILE=)".to_string(),
            (_, most) if most < crate::spec::MIN_SIDECAR_HANDLES => format!(
                "move sidecars to another pod (each needs at least {} handles), or raise the hard \
                 limit on open files (ulimit -Hn, LimitNOFILE=)",
                crate::spec::MIN_SIDECAR_HANDLES
            ),
            (_, most) => format!(
                "set wpod.dev/sidecar-max-handles to at most {most}, or raise the hard limit on \
                 open files (ulimit -Hn, LimitNOFILE=)"
            ),
        };
        let hostports = match ports {
            0 => String::new(),
            _ => format!(" + {min_forwarded} for at least {MIN_FORWARDED} hostPort connections"),
        };
        diags.push(pod.source.diag(
            "metadata.annotations[wpod.dev/sidecar-max-handles]",
            format!(
                "the pod needs more descriptors than wpod may open: {sidecars} Wasm sidecars x \
                 {per_sidecar} handles = {quotas}, + {fixed} for wpod and its {} containers{hostports} \
                 = {needed}, over the limit of {limit}; {fix}",
                containers.len()
            ),
        ));
    }
    let spare = limit.saturating_sub(fixed.saturating_add(quotas));
    FdBudget {
        forwarded_connections: (spare / FDS_PER_FORWARDED)
            .min(ports.saturating_mul(MAX_FORWARDED_PER_PORT))
            .max(MIN_FORWARDED.min(ports * MAX_FORWARDED_PER_PORT)),
    }
}

/// What [`fd_budget`] sets aside before the sidecars' quotas: wpod's reserve, each container's
/// and a socket per hostPort; and the connections wpod forwards itself, at the least.
fn fixed_fds(containers: &[ContainerPlan], (host_ports, ports): (u64, u64)) -> (u64, u64) {
    let fixed = RESERVED_FDS
        .saturating_add(FDS_PER_CONTAINER.saturating_mul(containers.len() as u64))
        .saturating_add(host_ports);
    let min_forwarded = if ports > 0 {
        MIN_FORWARDED * FDS_PER_FORWARDED
    } else {
        0
    };
    (fixed, min_forwarded)
}

/// The handle quota of a pod that does not set `wpod.dev/sidecar-max-handles`: wpod's default
/// (1024), or, when that many for every Wasm sidecar would not fit the `limit` descriptors wpod
/// may open here, an equal share of what is left (at least the annotation's floor, below which
/// the budget refuses the pod). So a pod of a hundred small sidecars starts on a host whose hard
/// limit is 20,000, as `ulimit -n` is a default, not a demand; a quota written in the manifest
/// is taken as written, and refused when it does not fit.
fn shared_handles(containers: &[ContainerPlan], ports: (u64, u64), limit: u64) -> u64 {
    let default = crate::spec::Annotations::default().sidecar_max_handles;
    let sidecars = pool_slots(containers).count() as u64;
    let (fixed, min_forwarded) = fixed_fds(containers, ports);
    let room = limit.saturating_sub(fixed.saturating_add(min_forwarded));
    (room / sidecars.max(1)).clamp(crate::spec::MIN_SIDECAR_HANDLES, default)
}

impl PodPlan {
    /// Holds the pod's Wasm sidecars to `per_sidecar` handles each, unless its manifest sets
    /// the quota: a running pod keeps the quota it started with (`wpod apply`; a share of the
    /// descriptors would shrink as sidecars are added, under the ones already running). The
    /// budget is checked again with it.
    pub fn keep_handle_quota(&mut self, per_sidecar: u64) -> Result<(), crate::spec::SpecError> {
        if self
            .pod
            .metadata
            .annotations
            .contains_key(crate::spec::MAX_HANDLES_ANNOTATION)
        {
            return Ok(());
        }
        let host_ports = self.port_mappings.len() as u64;
        let forwarded = match self.network {
            Network::Loopback | Network::Pasta => host_ports,
            _ => 0,
        };
        let mut diags = Vec::new();
        self.fd_budget = fd_budget(
            &self.pod,
            &self.containers,
            per_sidecar,
            (host_ports, forwarded),
            open_files_limit(),
            &mut diags,
        );
        self.settings.sidecar_max_handles = per_sidecar;
        if diags.is_empty() {
            Ok(())
        } else {
            Err(crate::spec::SpecError::Invalid(Diagnostics(diags)))
        }
    }
}

/// Volumes some Wasm sidecar mounts read-write.
fn sidecar_writable_volumes(containers: &[ContainerPlan]) -> BTreeSet<String> {
    containers
        .iter()
        .filter_map(|c| c.grants.as_ref())
        .flat_map(|g| g.fs.mounts.iter())
        .filter(|m| !m.read_only)
        .map(|m| m.volume.clone())
        .collect()
}

/// Every hostPort of the pod (validation made sure each hostIP is an address and each port is
/// unique); UDP cannot be published yet.
fn port_mappings(pod: &Pod, diags: &mut Vec<Diagnostic>) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for (path, c) in pod.all_containers() {
        for (i, p) in c.ports.iter().enumerate() {
            let Some(host_port) = p.host_port else {
                continue;
            };
            if p.protocol == Protocol::Udp {
                diags.push(pod.source.diag(
                    format!("{path}.ports[{i}].hostPort"),
                    "publishing UDP ports is not supported by wpod yet; use TCP",
                ));
                continue;
            }
            let host_ip = match p.host_ip.as_deref().map(str::parse::<IpAddr>) {
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Some(Ok(ip)) => ip,
                Some(Err(_)) => continue, // reported by validation; never published
            };
            out.push(PortMapping {
                container: c.name.clone(),
                host_ip,
                host_port,
                container_port: p.container_port,
            });
        }
    }
    out
}

/// The pod's resolv.conf as the kubelet forms it (`dnsPolicy`, then `dnsConfig` merged in).
fn dns_plan(pod: &Pod) -> DnsPlan {
    use crate::spec::DnsPolicy;
    let config = pod.spec.dns_config.clone().unwrap_or_default();
    DnsPlan {
        from_host: pod.spec.dns_policy != DnsPolicy::None,
        nameservers: config
            .nameservers
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        searches: config.searches.clone(),
        options: config
            .options
            .iter()
            .map(|o| match &o.value {
                Some(v) => format!("{}:{v}", o.name),
                None => o.name.clone(),
            })
            .collect(),
    }
}

/// Pod-level `resources.limits` (KEP-2837) shared out: they bound the pod's containers
/// together. Its native containers share one cgroup; its Wasm sidecars run in wpod's process,
/// outside it, so each needs a memory limit of its own, carved out of the pod's: the native
/// containers' cgroup gets what is left. A container without a limit of its own is bounded by
/// its share (the downward API reads the pod's, as the kubelet gives it). Returns the limits
/// of the native containers' cgroup.
fn share_pod_limits(
    pod: &Pod,
    containers: &mut [ContainerPlan],
    diags: &mut Vec<Diagnostic>,
) -> crate::spec::ResourceList {
    let pod_limits = &pod.spec.resources.limits;
    let mut shared = pod_limits.clone();
    if let Some(pod_memory) = pod_limits.memory_bytes {
        let mut sidecars = 0u64;
        for c in containers.iter().filter(|c| c.image.is_wasm()) {
            match c.limits.memory_bytes {
                Some(own) => sidecars = sidecars.saturating_add(own),
                None => diags.push(pod.source.diag(
                    format!("{}.resources", c.path),
                    format!(
                        "a Wasm sidecar in a pod with a pod-level memory limit needs a memory \
                         limit of its own: sidecars run in wpod's process, outside the \
                         containers' cgroup, so their share of the pod's {} is carved out of it; \
                         add resources.limits.memory",
                        crate::spec::quantity::show_bytes(pod_memory)
                    ),
                )),
            }
        }
        if sidecars > 0 && sidecars >= pod_memory {
            diags.push(pod.source.diag(
                "spec.resources.limits.memory",
                format!(
                    "the Wasm sidecars' memory limits ({}) leave nothing of the pod's {} to its \
                     other containers; raise the pod's limit or lower the sidecars'",
                    crate::spec::quantity::show_bytes(sidecars),
                    crate::spec::quantity::show_bytes(pod_memory)
                ),
            ));
        }
        shared.memory_bytes = Some(pod_memory.saturating_sub(sidecars).max(1));
    }
    for c in containers.iter_mut().filter(|c| !c.image.is_wasm()) {
        let limits = &mut c.limits;
        limits.cpu_millis = limits.cpu_millis.or(shared.cpu_millis);
        limits.memory_bytes = limits.memory_bytes.or(shared.memory_bytes);
    }
    shared
}

/// The pod's memory limit: its pod-level one, else as the kubelet computes it when every
/// container has one: the larger
/// of the regular containers plus native sidecars, and of each init container plus the native
/// sidecars started before it.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    if let Some(limit) = pod.spec.resources.limits.memory_bytes {
        return Some(limit);
    }
    let mut sidecars = 0u64;
    let mut peak = 0u64;
    for c in &pod.spec.init_containers {
        let limit = c.resources.limits.memory_bytes?;
        if c.restart_policy == Some(RestartPolicy::Always) {
            sidecars = sidecars.saturating_add(limit);
        } else {
            peak = peak.max(sidecars.saturating_add(limit));
        }
    }
    let mut regular = sidecars;
    for c in &pod.spec.containers {
        regular = regular.saturating_add(c.resources.limits.memory_bytes?);
    }
    Some(peak.max(regular))
}

/// The wpod process hosts the Wasm sidecars: their memory is its memory, and what they write to
/// a memory-backed volume is charged to it. It is bounded when they are: its own need, plus each
/// sidecar's limit, plus each memory-backed volume a sidecar may write. `None` when a Wasm
/// sidecar has no memory limit (or writes to an unbounded tmpfs), like a container without one.
fn runtime_memory_limit(
    containers: &[ContainerPlan],
    tmpfs_sizes: &BTreeMap<String, Option<u64>>,
) -> Option<u64> {
    let mut limit = RUNTIME_BASE_MEMORY
        .saturating_add(RUNTIME_MEMORY_PER_CONTAINER.saturating_mul(containers.len() as u64));
    let mut written = std::collections::BTreeSet::new();
    for c in containers.iter().filter(|c| c.image.is_wasm()) {
        limit = limit.saturating_add(c.limits.memory_bytes?);
        written.extend(
            c.spec
                .volume_mounts
                .iter()
                .filter(|m| !m.read_only)
                .map(|m| m.name.as_str()),
        );
    }
    for name in written {
        if let Some(size) = tmpfs_sizes.get(name) {
            limit = limit.saturating_add((*size)?);
        }
    }
    Some(limit)
}

/// Each `medium: Memory` emptyDir is sized as the kubelet sizes it: its `sizeLimit` when above
/// zero, but never above the pod's memory limit (`sizeLimit: 0` means "not set", as in
/// Kubernetes; a tmpfs of size 0 would be unlimited).
///
/// One a Wasm sidecar may write, and that has no size that way, is sized by its writers: the
/// sum of the memory limits of the containers that mount it writable, or, when one of them has
/// no limit, the kernel's default for a tmpfs (half of the host's memory). Kubernetes charges
/// tmpfs pages to the writer's cgroup, so a 16Mi container can put at most 16Mi there; a
/// sidecar writes through wpod, whose cgroup would be charged instead (a 16Mi sidecar once
/// filled a volume with 2 GiB, charged to nobody). So the volume holds no more than its
/// writers may, and wpod's own limit counts it ([`runtime_memory_limit`]).
fn tmpfs_sizes(pod: &Pod, containers: &[ContainerPlan]) -> BTreeMap<String, Option<u64>> {
    let pod_limit = pod_memory_limit(pod);
    let writers = |volume: &str| -> Vec<&ContainerPlan> {
        containers
            .iter()
            .filter(|c| {
                c.spec
                    .volume_mounts
                    .iter()
                    .any(|m| m.name == volume && !m.read_only)
            })
            .collect()
    };
    pod.spec
        .volumes
        .iter()
        .filter_map(|v| match &v.source {
            VolumeSource::EmptyDir(e) if e.medium == StorageMedium::Memory => {
                let own = e.size_limit_bytes.filter(|n| *n > 0);
                let mut size = match (own, pod_limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let writers = writers(&v.name);
                if size.is_none() && writers.iter().any(|c| c.image.is_wasm()) {
                    let limits: Option<u64> = writers
                        .iter()
                        .map(|c| c.limits.memory_bytes)
                        .try_fold(0u64, |sum, l| Some(sum.saturating_add(l?)));
                    size = Some(limits.unwrap_or_else(default_tmpfs_size).max(1 << 20));
                }
                Some((v.name.clone(), size))
            }
            _ => None,
        })
        .collect()
}

/// The size the kernel gives a tmpfs mounted without one: half of the host's memory.
fn default_tmpfs_size() -> u64 {
    fit::Capacity::here().map_or(1 << 30, |host| host.memory_bytes) / 2
}

/// A component may import only what the pod grants it, and must be a runnable sidecar.
/// A Wasm sidecar's grants, resolved from its Pod fields and checked against what its
/// component imports: the one decision `wpod run` and `wpod sidecar` share.
fn wasm_grants(sidecar: &Sidecar<'_>, component: &Path, diags: &mut Vec<Diagnostic>) -> Grants {
    check_wasm_container(sidecar, diags);
    let grants = Grants::resolve(sidecar, diags);
    check_component_grants(sidecar, component, &grants, diags);
    grants
}

fn check_component_grants(
    sidecar: &Sidecar<'_>,
    component: &Path,
    grants: &Grants,
    diags: &mut Vec<Diagnostic>,
) {
    let field = "image";
    match grants::inspect::inspect(component) {
        Err(e) => diags.push(sidecar.diag(field, e.to_string())),
        Ok(report) => {
            for import in &report.imports {
                if let Some(why) = grants::refusal(sidecar, grants, &import.name) {
                    diags.push(sidecar.diag(field, why));
                }
            }
            if !report
                .exports
                .iter()
                .any(|e| e.starts_with("wasi:cli/run@0.2"))
            {
                diags.push(sidecar.diag(
                    field,
                    format!("{} does not export wasi:cli/run: a sidecar is a command component (a wasm32-wasip2 program with a main)", component.display()),
                ));
            }
        }
    }
}

/// Fields that need a process make no sense for a Wasm sidecar; say so instead of ignoring them.
fn check_wasm_container(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) {
    let c = sidecar.container;
    if c.lifecycle
        .as_ref()
        .is_some_and(|l| l.stop_signal.is_some())
    {
        diags.push(sidecar.diag(
            "lifecycle.stopSignal",
            "a Wasm sidecar is asked to stop by its lifecycle `stopping` event, not a signal; remove stopSignal",
        ));
    }
    let handlers = [
        (
            "livenessProbe",
            c.liveness_probe.as_ref().map(|p| &p.handler),
        ),
        (
            "readinessProbe",
            c.readiness_probe.as_ref().map(|p| &p.handler),
        ),
        ("startupProbe", c.startup_probe.as_ref().map(|p| &p.handler)),
        (
            "lifecycle.postStart",
            c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()),
        ),
        (
            "lifecycle.preStop",
            c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()),
        ),
    ];
    for (field, h) in handlers {
        if let Some(Handler::Exec(_)) = h {
            diags.push(sidecar.diag(
                &format!("{field}.exec"),
                "a Wasm sidecar has no process to exec in; use httpGet or tcpSocket",
            ));
        }
    }
}

/// What a native container needs that validation alone cannot tell.
fn check_native_container(
    pod: &Pod,
    path: &str,
    c: &Container,
    image: &Image,
    diags: &mut Vec<Diagnostic>,
) {
    if matches!(image, Image::Rootfs(_)) && c.command.is_empty() && c.args.is_empty() {
        diags.push(pod.source.diag(
            format!("{path}.command"),
            "a rootfs directory has no entrypoint: give the command to run",
        ));
    }
    // With a registry image and no runAsUser, the image's user decides: checked at start.
    let user_from_image = matches!(image, Image::Registry { .. });
    if let Some(sc) = c.security_context.as_ref().filter(|_| !user_from_image) {
        if sc.run_as_non_root == Some(true) && sc.run_as_user.unwrap_or(0) == 0 {
            diags.push(pod.source.diag(
                format!("{path}.securityContext.runAsNonRoot"),
                "the container would run as root (uid 0); set securityContext.runAsUser to a non-zero uid",
            ));
        }
    }
}

/// wpod's own files on this host, as a hostPath must not reach them: its state (the image
/// store, compiled code, other pods' volumes, launch specs and logs), its configuration (trust
/// policy, registries, approvals, the CNI network), its binary and the CNI plugins (both run
/// as root).
fn own_paths() -> Vec<(&'static str, std::path::PathBuf)> {
    let resolve = |p: &Path| crate::files::resolve_existing(p);
    let mut out = vec![
        ("state", resolve(&crate::files::state_root())),
        (
            "configuration",
            resolve(Path::new(crate::files::CONFIG_DIR)),
        ),
        ("configuration", resolve(&crate::files::cni_conf_dir())),
    ];
    out.extend(
        crate::files::cni_plugin_dirs()
            .iter()
            .map(|d| ("CNI plugins", resolve(d))),
    );
    if let Some(dir) = crate::files::user_config_dir() {
        out.push(("configuration", resolve(&dir)));
    }
    for var in ["WPOD_POLICY", "WPOD_REGISTRIES_CONF", "WPOD_APPROVALS"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            out.push(("configuration", resolve(Path::new(&p))));
        }
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        out.push(("binary", exe));
    }
    out
}

/// hostPath volumes whose directories a container could swap under the pod: one inside another
/// hostPath volume that a container may write (the writer can replace the inner directory with
/// a symlink before the next start), or inside wpod's own state (launch specs, other pods'
/// volumes and logs). And hostPath volumes that hold wpod's own files (its state, configuration
/// or binary): refused when any container may write them (a sidecar once swapped two entries of
/// the compiled cache through a writable `/var/lib`, and the next pod ran the other's code), and
/// for Wasm sidecars even read-only (they would read other pods' secrets and the cache's key).
fn check_volume_nesting(pod: &Pod, containers: &[ContainerPlan], diags: &mut Vec<Diagnostic>) {
    let host_paths: Vec<(usize, &str, std::path::PathBuf)> = pod
        .spec
        .volumes
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match &v.source {
            VolumeSource::HostPath(h) if h.path.starts_with('/') => Some((
                i,
                v.name.as_str(),
                crate::files::resolve_existing(Path::new(&h.path)),
            )),
            _ => None,
        })
        .collect();
    let writer = |volume: &str| {
        pod.all_containers().find_map(|(_, c)| {
            c.volume_mounts
                .iter()
                .any(|m| m.name == volume && !m.read_only)
                .then(|| c.name.clone())
        })
    };
    let sidecar = |volume: &str| {
        containers.iter().find_map(|c| {
            (c.image.is_wasm() && c.spec.volume_mounts.iter().any(|m| m.name == volume))
                .then(|| c.name().to_string())
        })
    };
    let own = own_paths();
    let state = own[0].1.clone();
    for (i, name, inner) in &host_paths {
        let field = format!("spec.volumes[{i}].hostPath.path");
        if inner.starts_with(&state) {
            diags.push(pod.source.diag(
                field,
                format!(
                    "{} is inside wpod's own state ({}); use a directory of your own",
                    inner.display(),
                    state.display()
                ),
            ));
            continue;
        }
        let held = own.iter().find(|(_, p)| p.starts_with(inner));
        if let Some((what, path)) = held {
            let reason = match (writer(name), sidecar(name)) {
                (Some(c), _) => Some(format!("container \"{c}\" may write it")),
                (None, Some(c)) => Some(format!("Wasm sidecar \"{c}\" mounts it")),
                (None, None) => None,
            };
            if let Some(reason) = reason {
                diags.push(pod.source.diag(
                    field,
                    format!(
                        "{} holds wpod's own {what} ({}) and {reason}: a container could rewrite \
                         what wpod runs or trusts, and a sidecar read other pods' secrets; \
                         mount a directory that does not hold it (native containers may mount \
                         it readOnly)",
                        inner.display(),
                        path.display()
                    ),
                ));
                continue;
            }
        }
        for (_, outer_name, outer) in &host_paths {
            if inner == outer || !inner.starts_with(outer) {
                continue;
            }
            if let Some(container) = writer(outer_name) {
                diags.push(pod.source.diag(
                    field.clone(),
                    format!(
                        "{} lies inside volume \"{outer_name}\" ({}), which container \"{container}\" \
                         may write: it could replace this directory with a symlink before the next \
                         start; mount \"{outer_name}\" readOnly in every container, or use directories \
                         that do not nest",
                        inner.display(),
                        outer.display()
                    ),
                ));
                break;
            }
        }
    }
}

/// hostPath `type` checks that need the host: the path must already be what the type says.
fn check_host_paths(pod: &Pod, diags: &mut Vec<Diagnostic>) {
    use std::os::unix::fs::FileTypeExt;
    for (i, v) in pod.spec.volumes.iter().enumerate() {
        let VolumeSource::HostPath(h) = &v.source else {
            continue;
        };
        if !h.path.starts_with('/') {
            continue; // reported by validation
        }
        let meta = std::fs::metadata(&h.path);
        let ft = meta.as_ref().ok().map(|m| m.file_type());
        let (ok, want) = match h.kind {
            HostPathType::Unset | HostPathType::DirectoryOrCreate | HostPathType::FileOrCreate => {
                (true, "")
            }
            HostPathType::Directory => (ft.is_some_and(|t| t.is_dir()), "a directory"),
            HostPathType::File => (ft.is_some_and(|t| t.is_file()), "a file"),
            HostPathType::Socket => (ft.is_some_and(|t| t.is_socket()), "a unix socket"),
            HostPathType::CharDevice => {
                (ft.is_some_and(|t| t.is_char_device()), "a character device")
            }
            HostPathType::BlockDevice => {
                (ft.is_some_and(|t| t.is_block_device()), "a block device")
            }
        };
        if !ok {
            let found = match &meta {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "nothing is there".to_string()
                }
                Err(e) => format!("cannot stat it: {e}"),
                Ok(_) => "something else is there".to_string(),
            };
            let fix = match h.kind {
                HostPathType::Directory => "create it or use type DirectoryOrCreate",
                HostPathType::File => "create it or use type FileOrCreate",
                _ => "create it first",
            };
            diags.push(pod.source.diag(
                format!("spec.volumes[{i}].hostPath.path"),
                format!(
                    "type {} needs {want} at {}, but {found}; {fix}",
                    h.kind, h.path
                ),
            ));
        }
    }
}

/// The files a pod comes from: its manifest, and files of ConfigMaps, Secrets and claims named
/// beside it (`--configmap`, as `podman kube play` names them).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFiles {
    pub manifest: std::path::PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<std::path::PathBuf>,
}

impl ManifestFiles {
    /// A manifest alone.
    pub fn new(manifest: impl Into<std::path::PathBuf>) -> Self {
        ManifestFiles {
            manifest: manifest.into(),
            objects: Vec::new(),
        }
    }

    /// The same files named from anywhere (a detached pod's supervisor runs elsewhere).
    pub fn absolute(&self) -> std::io::Result<Self> {
        Ok(ManifestFiles {
            manifest: std::path::absolute(&self.manifest)?,
            objects: self
                .objects
                .iter()
                .map(std::path::absolute)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Loads, validates and plans every pod of a manifest: what `wpod run` does before starting
/// anything, and what `wpod validate` checks. All problems of the files come back at once.
pub fn load(files: &ManifestFiles) -> Result<Vec<PodPlan>, crate::spec::SpecError> {
    load_for(files, Target::ThisHost)
}

/// [`load`], for where the pods will run.
pub fn load_for(
    files: &ManifestFiles,
    target: Target,
) -> Result<Vec<PodPlan>, crate::spec::SpecError> {
    let (pods, mut diags) = read(files)?;
    let mut plans = Vec::new();
    for pod in &pods {
        match plan_with(pod, &BTreeMap::new(), target) {
            Ok(p) => plans.push(p),
            Err(mut d) => diags.append(&mut d.0),
        }
    }
    if diags.is_empty() {
        Ok(plans)
    } else {
        crate::spec::sort_diagnostics(&mut diags);
        Err(crate::spec::SpecError::Invalid(Diagnostics(diags)))
    }
}

/// The name of a manifest's one pod, read without planning it, when the file holds exactly one
/// pod whose name is valid; `None` otherwise (planning it then says what is wrong). For a
/// command that hands the manifest to the running pod, which plans it there (`wpod apply`):
/// planning reads images and components, and did it twice.
pub fn pod_name(files: &ManifestFiles) -> Option<PodName> {
    let (pods, _) = read(files).ok()?;
    match pods.as_slice() {
        [pod] => PodName::new(&pod.metadata.name).ok(),
        _ => None,
    }
}

/// The pods of a manifest (with the objects of the files beside it), and the problems found
/// reading them; an unreadable file is an error at once.
fn read(files: &ManifestFiles) -> Result<(Vec<Pod>, Vec<Diagnostic>), crate::spec::SpecError> {
    use crate::spec::{Loc, SpecError};
    let read = |path: &std::path::Path| -> Result<String, SpecError> {
        let bytes = crate::files::read_regular(path, crate::files::MAX_MANIFEST_BYTES)?;
        String::from_utf8(bytes).map_err(|_| {
            SpecError::Invalid(Diagnostics(vec![Diagnostic {
                file: path.to_path_buf(),
                loc: Loc { line: 1, col: 1 },
                path: String::new(),
                message: "the file is not UTF-8 text; a manifest is YAML in UTF-8".to_string(),
            }]))
        })
    };
    let text = read(&files.manifest)?;
    let objects = files
        .objects
        .iter()
        .map(|path| Ok((path.clone(), read(path)?)))
        .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(crate::spec::parse_with_objects(
        &files.manifest,
        &text,
        &objects,
    ))
}
