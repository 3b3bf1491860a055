//! The pod sandbox: everything created on the host for one pod, torn down by `Drop` in reverse
//! order of creation (so an error half-way through setup, a panic, Ctrl-C or SIGTERM all leave
//! nothing behind).

pub mod cgroups;
pub mod dns;
pub mod holder;
pub mod namespaces;
pub mod network;
pub mod ownership;
pub mod pasta;
pub mod ports;
pub mod projected;
pub mod rootless;
pub mod runtime;
pub mod state_dir;
pub mod sysctls;
pub mod userns;
pub mod volumes;

use std::path::{Path, PathBuf};

use crate::helper::Lifeline;
use crate::plan::PodPlan;
use cgroups::PodCgroups;
use namespaces::{Dialer, PodNamespaces};
use ports::PortForwards;
use state_dir::StateDir;
use volumes::PodVolumes;

/// Which build this is (`build.rs`), as [`build_id`] reads it.
const BUILD_ID_TEXT: &str = env!("WPOD_BUILD_ID");

/// The build ID in the ELF section both `wpod` and `wpod-helper` carry
/// (`helper::BUILD_ID_SECTION`): `wpod` runs the pod's helpers (the holder here, the shims and
/// exec helpers in `containers`) from a `wpod-helper` only if its section holds the same.
#[used]
#[unsafe(link_section = ".wpod_build")]
static BUILD_NOTE: [u8; BUILD_ID_TEXT.len()] = {
    let text = BUILD_ID_TEXT.as_bytes();
    let mut note = [0u8; BUILD_ID_TEXT.len()];
    let mut i = 0;
    while i < note.len() {
        note[i] = text[i];
        i += 1;
    }
    note
};

/// This build's ID, read from its section (so every binary that asks carries the section).
pub fn build_id() -> &'static str {
    std::str::from_utf8(&BUILD_NOTE).unwrap_or(BUILD_ID_TEXT)
}

/// What caused a step to fail: a typed error, kept as the step's `source` (printed after it by
/// `error::chain` and anyhow), or a message when the cause is one (a helper's report).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A step of making the sandbox (`create emptyDir (/path)`), and why it failed.
    #[error("{step}")]
    Step {
        step: String,
        #[source]
        source: Cause,
    },
    #[error("pod \"{pod}\" is already running on this host (another wpod holds its lock)")]
    AlreadyRunning { pod: String },
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
}

impl SandboxError {
    pub fn step(step: impl Into<String>, source: impl Into<Cause>) -> Self {
        SandboxError::Step {
            step: step.into(),
            source: source.into(),
        }
    }
    pub fn io(step: impl std::fmt::Display, path: &Path, e: std::io::Error) -> Self {
        Self::step(format!("{step} ({})", path.display()), e)
    }
    pub fn sys(step: impl std::fmt::Display, path: &Path, e: nix::Error) -> Self {
        Self::step(format!("{step} ({})", path.display()), e)
    }
}

/// Fields drop in declaration order: port forwards, the network, cgroups, volumes, namespaces,
/// the lifeline, and last the state directory.
pub struct PodSandbox {
    pub pod: String,
    pub hostname: String,
    ports: Option<PortForwards>,
    /// The pod on its CNI network (DEL when dropped).
    _network: Option<network::PodNetwork>,
    /// A rootless pod's pasta (stopped when dropped).
    _pasta: Option<pasta::Pasta>,
    pub cgroups: PodCgroups,
    pub volumes: PodVolumes,
    pub namespaces: PodNamespaces,
    /// Makes sockets in the pod's network namespace (hostPorts, probes).
    pub dialer: Dialer,
    pub lifeline: Lifeline,
    /// Where the containers' launch configs are written: a tmpfs, since they hold the
    /// environment (Secrets' values too), as containerd keeps its bundles under /run.
    launch: LaunchDir,
    pub state: StateDir,
    /// The pod's range of host IDs (`hostUsers: false`; the namespaces map it), given back
    /// last, once every process of the pod is gone.
    _id_lease: Option<userns::IdLease>,
    /// The pod's `/etc/hosts` and `/etc/hostname`, as the kubelet writes them for every
    /// container with an image of its own (see [`PodSandbox::etc_files`]).
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// The pod's addresses and resolver, as its sidecars' network capability sees them.
    pub pod_net: std::sync::Arc<crate::grants::net::PodNet>,
    /// Volumes native containers mount `nosymfollow` (a Wasm sidecar writes to them).
    pub nosymfollow_volumes: std::collections::BTreeSet<String>,
    /// The downward API's values that exist once the sandbox does: the pod's IP, the host's,
    /// the pod's UID.
    pub facts: std::sync::Arc<crate::spec::env::RuntimeFacts>,
    /// Things the host could not do as asked (e.g. a limit without a controller), said once.
    pub warnings: Vec<String>,
}

/// A sandbox on its way ([`PodSandbox::start`]): the pod's namespace holder started, making the
/// namespaces while wpod does what needs none (its sidecars' components read, the pod's
/// cgroups made); [`StartingSandbox::finish`] makes the rest. Dropped, it ends the holder (the
/// lifeline) and gives back what it holds.
pub struct StartingSandbox {
    // Dropped in this order: the holder before its lifeline, the state directory last.
    namespaces: namespaces::StartingNamespaces,
    lifeline: Lifeline,
    /// The pod's range of host IDs (`hostUsers: false`).
    id_lease: Option<userns::IdLease>,
    state: StateDir,
}

impl PodSandbox {
    /// Creates the pod's namespaces, volumes, cgroups and published ports. Must run inside a
    /// tokio runtime (the port forwarders live on it).
    /// `state`: the pod's state directory, acquired (see [`StateDir::acquire`]).
    pub fn create(plan: &PodPlan, state: StateDir) -> Result<Self, SandboxError> {
        let mut sandbox = Self::start(plan, state)?.finish(plan)?;
        sandbox.complete(plan)?;
        Ok(sandbox)
    }

    /// The sandbox's last steps, once the pod's sidecars are prepared. wpod's runtime joins
    /// the pod's `_runtime` cgroup (on the thread that made the sandbox: see
    /// [`PodCgroups::join_runtime`]), under the memory limit the plan gives it:
    /// last, so that what ran before (CNI plugins, pasta, a compile) is not charged to the pod.
    /// Then the hostPorts wpod forwards itself open: their forwarders' threads start in the
    /// pod's cgroup, and no connection is taken before the pod's sidecars are ready to start.
    pub fn complete(&mut self, plan: &PodPlan) -> Result<(), SandboxError> {
        let warnings = self.cgroups.join_runtime(plan.runtime_memory_limit)?;
        self.warnings.extend(warnings);
        if matches!(
            plan.network,
            crate::plan::Network::Loopback | crate::plan::Network::Pasta
        ) {
            self.ports = Some(PortForwards::publish(
                plan.name(),
                &plan.port_mappings,
                plan.fd_budget.forwarded_connections,
                self.namespaces.net_handle(),
            )?);
        }
        Ok(())
    }

    /// Starts the pod's namespace holder: its exec and the kernel's namespaces take a couple
    /// of milliseconds, which a pod's start would otherwise wait through.
    pub fn start(plan: &PodPlan, state: StateDir) -> Result<StartingSandbox, SandboxError> {
        let name = plan.name();
        let lifeline =
            Lifeline::new().map_err(|e| SandboxError::step("create the lifeline pipe", e))?;
        let pod_proc = match plan.share_process_namespace {
            true => Some(state.pod_proc_dir()?),
            false => None,
        };
        let host_network = plan.network == crate::plan::Network::Host;
        let id_lease = match plan.user_namespace {
            true => Some(userns::lease(name).map_err(|e| {
                SandboxError::step(
                    "give the pod a user namespace of its own (hostUsers: false)",
                    e,
                )
            })?),
            false => None,
        };
        let ids = id_lease.as_ref().map(|l| l.map);
        // Again (`wpod run` did when it started): an image pull may have taken longer than
        // the kernel keeps moves fast.
        cgroups::prime_moves(&crate::sys::Host::real());
        let namespaces = PodNamespaces::start(
            &plan.hostname,
            pod_proc.as_deref(),
            host_network,
            ids,
            &lifeline,
        )?;
        Ok(StartingSandbox {
            namespaces,
            lifeline,
            id_lease,
            state,
        })
    }
}

impl StartingSandbox {
    /// Makes the rest of the sandbox: first what needs no namespace (the launch directory,
    /// the pod's cgroups; a rootless pod's once the holder is ready) while the holder makes
    /// them, then the network, volumes and the files of `/etc`. wpod's runtime has not joined
    /// the pod's cgroup yet, nor are the hostPorts it forwards open
    /// ([`PodSandbox::complete`]).
    pub fn finish(self, plan: &PodPlan) -> Result<PodSandbox, SandboxError> {
        // Declared so that an error drops them in reverse: the state directory last.
        let state = self.state;
        let id_lease = self.id_lease;
        let lifeline = self.lifeline;
        let starting = self.namespaces;
        let name = plan.name();
        let mut warnings = Vec::new();
        let host = crate::sys::Host::real();
        let launch = LaunchDir::mount(host.sys.clone(), state.path.join("launch"))?;
        let (namespaces, cgroups) = match plan.rootless {
            // The pod's cgroups while the holder makes the namespaces.
            false => {
                let cgroups = PodCgroups::create_in(&host, &plan.name)?;
                (starting.ready()?, cgroups)
            }
            // A user's delegated cgroup is emptied of wpod's processes into a leaf first
            // (`PodCgroups::delegated`): once the holder is ready, whose fork of the pod's PID 1
            // it would race.
            true => {
                let namespaces = starting.ready()?;
                (namespaces, delegated_cgroups(&host, plan, &mut warnings))
            }
        };
        warnings.extend(cgroups.limit_pod(&plan.limits));
        // hostPorts first (a port in use fails the pod before anything is on the network),
        // then the network, whose portmap forwards them.
        let (ports, network) = match plan.network {
            crate::plan::Network::Cni => {
                let ports = PortForwards::reserve(&plan.port_mappings)?;
                let network = network::PodNetwork::attach(
                    name,
                    plan.namespace.as_deref(),
                    &namespaces.net_path(),
                    &plan.port_mappings,
                )
                .map_err(|e| SandboxError::step("attach the pod to its network (CNI ADD)", e))?;
                (Some(ports), Some(network))
            }
            _ => (None, None),
        };
        let pasta = match plan.network {
            crate::plan::Network::Pasta => Some(
                pasta::Pasta::attach(&namespaces.net_path(), &state.path).map_err(|e| {
                    SandboxError::step("join the pod to the host's network (pasta)", e)
                })?,
            ),
            _ => None,
        };
        let ip = match &pasta {
            Some(_) => pasta::address(&namespaces.net_handle()),
            None => network.as_ref().and_then(|n| n.ip),
        };
        let dialer = Dialer::new(namespaces.net_handle())
            .map_err(|e| SandboxError::step("start the pod's dialer", e))?;
        let facts = std::sync::Arc::new(runtime_facts(plan.network, ip));
        sysctls::set(&namespaces.paths(), &plan.sysctls)?;
        let users = namespaces.paths().user;
        let (volumes, volume_warnings) = PodVolumes::create(
            host.sys.clone(),
            plan,
            &state.path.join("volumes"),
            &facts,
            users.as_ref(),
        )?;
        warnings.extend(volume_warnings);
        let etc = dns::write_etc_files(&state.path, plan, ip)?;
        warnings.extend(etc.warnings);
        Ok(PodSandbox {
            pod: name.to_string(),
            hostname: plan.hostname.clone(),
            ports,
            _network: network,
            _pasta: pasta,
            cgroups,
            volumes,
            namespaces,
            dialer,
            lifeline,
            launch,
            state,
            _id_lease: id_lease,
            etc_files: etc.files,
            pod_net: std::sync::Arc::new(etc.net),
            facts,
            warnings,
            nosymfollow_volumes: plan.nosymfollow_volumes.clone(),
        })
    }
}

impl PodSandbox {
    /// Stops publishing the pod's hostPorts and waits until every forwarded connection is
    /// closed (their descriptors are free again for the teardown).
    pub async fn close_ports(&self) {
        if let Some(ports) = &self.ports {
            ports.close().await;
        }
    }

    /// Where a container keeps its scratch space (its overlay's upper layer) and its
    /// termination log.
    pub fn container_dir(&self, container: &str) -> PathBuf {
        self.state.path.join("containers").join(container)
    }

    /// Where a container's launch config (the OCI runtime config, which holds its
    /// environment) is written: in memory, root's alone.
    pub fn launch_config(&self, container: &str) -> PathBuf {
        self.launch.path.join(format!("{container}.json"))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state.logs.clone()
    }

    /// The host IDs of the pod's own user namespace; `None`: the pod has the host's.
    pub fn ids(&self) -> Option<userns::IdMap> {
        self.namespaces.ids()
    }
}

/// A rootless pod's cgroups: those delegated to the user, which are the user's to break; when
/// there are none (or they cannot be used), none, and the pod runs without its limits (said).
fn delegated_cgroups(
    host: &crate::sys::Host,
    plan: &PodPlan,
    warnings: &mut Vec<String>,
) -> PodCgroups {
    match PodCgroups::delegated(host, &plan.name) {
        Ok(Some(cgroups)) => cgroups,
        failed => {
            if let Err(e) = failed {
                warnings.push(format!(
                    "rootless: cannot use the cgroups delegated to this user: {}",
                    crate::error::chain(&e)
                ));
            }
            warnings.extend(rootless_limits_warning(plan));
            PodCgroups::none(host.sys.clone())
        }
    }
}

/// The pod's IP (CNI's address; its loopback for a pod off the network; the host's on the
/// host's network), the host's (its first address that is not a loopback one, as a node's
/// InternalIP), and a new UID (a random UUID, as the API server gives a pod).
fn runtime_facts(
    network: crate::plan::Network,
    ip: Option<std::net::IpAddr>,
) -> crate::spec::env::RuntimeFacts {
    let host_ip = nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|mut addrs| {
            addrs.find_map(|a| {
                let ip = a.address?.as_sockaddr_in()?.ip();
                (!ip.is_loopback()).then(|| ip.to_string())
            })
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let pod_ip = match (network, ip) {
        (_, Some(ip)) => ip.to_string(),
        // pasta gives the pod the host's address.
        (crate::plan::Network::Host | crate::plan::Network::Pasta, None) => host_ip.clone(),
        _ => "127.0.0.1".into(),
    };
    // Version 4, variant 1 (RFC 9562): the rest random.
    let h = crate::files::random_hex(16);
    let variant = ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)];
    let uid = format!(
        "{}-{}-4{}-{variant}{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    );
    crate::spec::env::RuntimeFacts {
        pod_ip,
        host_ip,
        uid,
    }
}

/// What a rootless pod's manifest limits that nothing will hold: without a cgroup, no memory,
/// CPU or PID limit of a native container (or of the pod) applies. Each Wasm sidecar's memory
/// limit still does: wasmtime holds it.
fn rootless_limits_warning(plan: &PodPlan) -> Option<String> {
    let set = |l: &crate::spec::ResourceList| l.cpu_millis.is_some() || l.memory_bytes.is_some();
    let limited = set(&plan.limits)
        || plan
            .containers
            .iter()
            .any(|c| c.grants.is_none() && set(&c.limits));
    limited.then(|| {
        "rootless: no cgroup is delegated to this user, so the native containers' resource \
         limits (memory, cpu, pids) are not applied; each Wasm sidecar's memory limit is \
         (wasmtime holds it). Run wpod under a systemd user manager (it asks for a delegated \
         scope), in a cgroup delegated to the user, or as root, for them"
            .to_string()
    })
}

/// A tmpfs of the pod's, root's alone, unmounted with the pod.
struct LaunchDir {
    sys: std::sync::Arc<dyn crate::sys::Syscall>,
    path: PathBuf,
}

impl LaunchDir {
    fn mount(
        sys: std::sync::Arc<dyn crate::sys::Syscall>,
        path: PathBuf,
    ) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(&path)
            .map_err(|e| SandboxError::io("create the launch directory", &path, e))?;
        sys.mount(
            Some(std::path::Path::new("tmpfs")),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700,size=16m"),
        )
        .map_err(|e| SandboxError::sys("mount the launch directory's tmpfs", &path, e))?;
        Ok(LaunchDir { sys, path })
    }
}

impl Drop for LaunchDir {
    fn drop(&mut self) {
        if let Err(e) = self
            .sys
            .umount2(&self.path, nix::mount::MntFlags::MNT_DETACH)
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot unmount the launch directory");
        }
    }
}
