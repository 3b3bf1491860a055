//! The pod sandbox: everything created on the host for one pod, torn down by `Drop` in reverse
//! order of creation (so an error half-way through setup, a panic, Ctrl-C or SIGTERM all leave
//! nothing behind).

pub mod cgroups;
pub mod holder;
pub mod namespaces;
pub mod ports;
pub mod runtime;
pub mod state_dir;
pub mod volumes;

use std::path::{Path, PathBuf};

use crate::helper::Lifeline;
use crate::plan::PodPlan;
use cgroups::PodCgroups;
use namespaces::{Dialer, PodNamespaces};
use ports::PortForwards;
use state_dir::StateDir;
use volumes::PodVolumes;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {error}")]
    Step { step: String, error: String },
    #[error("pod \"{pod}\" is already running on this host (another wpod holds its lock)")]
    AlreadyRunning { pod: String },
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
}

impl SandboxError {
    pub fn io(step: impl Into<String>, path: &Path, e: std::io::Error) -> Self {
        SandboxError::Step {
            step: step.into(),
            error: format!("{e} ({})", path.display()),
        }
    }
    pub fn sys(step: impl Into<String>, path: &Path, e: nix::Error) -> Self {
        SandboxError::Step {
            step: step.into(),
            error: format!("{} ({})", e.desc(), path.display()),
        }
    }
}

/// Fields drop in declaration order: port forwards, cgroups, volumes, namespaces, the lifeline,
/// and last the state directory.
pub struct PodSandbox {
    pub pod: String,
    pub hostname: String,
    ports: Option<PortForwards>,
    pub cgroups: PodCgroups,
    pub volumes: PodVolumes,
    pub namespaces: PodNamespaces,
    /// Makes sockets in the pod's network namespace (hostPorts, probes).
    pub dialer: Dialer,
    pub lifeline: Lifeline,
    pub state: StateDir,
    /// The pod's `/etc/hosts` and `/etc/hostname`, as the kubelet writes them for every
    /// container with an image of its own (see [`PodSandbox::etc_files`]).
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// Volumes native containers mount `nosymfollow` (a Wasm sidecar writes to them).
    pub nosymfollow_volumes: std::collections::BTreeSet<String>,
    /// Things the host could not do as asked (e.g. a limit without a controller), said once.
    pub warnings: Vec<String>,
}

impl PodSandbox {
    /// Creates the pod's namespaces, volumes, cgroups and published ports. Must run inside a
    /// tokio runtime (the port forwarders live on it).
    pub fn create(plan: &PodPlan) -> Result<Self, SandboxError> {
        let pod = &plan.pod;
        let name = plan.name();
        let state = StateDir::acquire(&plan.name)?;
        let lifeline = Lifeline::new().map_err(|e| SandboxError::Step {
            step: "create the lifeline pipe".into(),
            error: e.to_string(),
        })?;
        let pod_proc = match pod.spec.share_process_namespace {
            true => Some(state.pod_proc_dir()?),
            false => None,
        };
        let namespaces = PodNamespaces::create(pod.hostname(), pod_proc.as_deref(), &lifeline)?;
        let dialer = Dialer::new(namespaces.net_handle()).map_err(|e| SandboxError::Step {
            step: "start the pod's dialer".into(),
            error: e.to_string(),
        })?;
        let (volumes, mut warnings) = PodVolumes::create(plan, &state.path.join("volumes"))?;
        let etc_files = write_etc_files(&state.path, pod.hostname())?;
        let mut cgroups = PodCgroups::create(&plan.name)?;
        warnings.extend(cgroups.join_runtime(plan.runtime_memory_limit)?);
        let mut sandbox = PodSandbox {
            pod: name.to_string(),
            hostname: pod.hostname().to_string(),
            ports: None,
            cgroups,
            volumes,
            namespaces,
            dialer,
            lifeline,
            state,
            etc_files,
            warnings,
            nosymfollow_volumes: plan.nosymfollow_volumes.clone(),
        };
        sandbox.ports = Some(PortForwards::publish(
            name,
            &plan.port_mappings,
            plan.fd_budget.forwarded_connections,
            sandbox.namespaces.net_handle(),
        )?);
        Ok(sandbox)
    }

    /// Stops publishing the pod's hostPorts and waits until every forwarded connection is
    /// closed (their descriptors are free again for the teardown).
    pub async fn close_ports(&self) {
        if let Some(ports) = &self.ports {
            ports.close().await;
        }
    }

    /// Where a container keeps its launch spec and scratch space.
    pub fn container_dir(&self, container: &str) -> PathBuf {
        self.state.path.join("containers").join(container)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state.logs.clone()
    }
}

/// The kubelet gives every container a `/etc/hosts` naming localhost and the pod, and an
/// `/etc/hostname`: an image has neither (busybox's `wget localhost` needs the first).
fn write_etc_files(
    state: &Path,
    hostname: &str,
) -> Result<Vec<(PathBuf, &'static str)>, SandboxError> {
    let hosts = format!(
        "# Kubernetes-managed hosts file (written by wpod).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         127.0.0.1\t{hostname}\n"
    );
    let mut out = Vec::new();
    for (name, target, content) in [
        ("etc-hosts", "/etc/hosts", hosts),
        ("etc-hostname", "/etc/hostname", format!("{hostname}\n")),
    ] {
        let path = state.join(name);
        std::fs::write(&path, content).map_err(|e| SandboxError::io("write", &path, e))?;
        out.push((path, target));
    }
    Ok(out)
}
