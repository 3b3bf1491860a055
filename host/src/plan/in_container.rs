//! The plan of one Wasm sidecar that runs as the process of a container already inside a pod
//! (`wpod sidecar run`: a Kubernetes pod, or any runtime's), decided by the same code as `wpod
//! run`'s: its grants come from the Pod manifest's own fields and are checked against what its
//! component imports ([`super::wasm_grants`]), so a sidecar gets exactly what it would get in
//! a wpod pod.
//!
//! What differs is what the container runtime has already done. Each volumeMount is a mount at
//! its mountPath in the container (subPath applied by the runtime), so the sidecar's volumes are
//! keyed by mountPath, not by volume name: one volume mounted twice is two directories. The
//! checks of the node (fit, hostPaths, AppArmor, the other containers' images, the descriptor
//! budget of a whole pod) are not made: they would look at the wrong machine, and the node's
//! runtime makes them.

use std::net::IpAddr;
use std::time::Duration;

use super::{wasm_grants, ContainerPlan, HostInfo, Image, WasmComponent};
use crate::grants::Sidecar;
use crate::spec::{Annotations, Diagnostic, Diagnostics, Pod, SpecError};

/// One Wasm sidecar of a pod, planned to run in a container of its own.
#[derive(Clone, Debug)]
pub struct InContainerPlan {
    /// The sidecar: its grants (volumes keyed by mountPath), limits, probes.
    pub container: ContainerPlan,
    /// wpod's settings from the pod's annotations (handles, log rate), defaults applied.
    pub settings: Annotations,
    /// The pod's `terminationGracePeriodSeconds`, at most [`super::MAX_GRACE`]: how long the sidecar
    /// has after `stopping` (the kubelet's SIGKILL may come first).
    pub grace_period: Duration,
    /// `spec.hostAliases`, answered by the sidecar's resolver as the pod's /etc/hosts has them.
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
    /// `spec.hostNetwork`: the container's addresses are the node's, not the pod's own.
    pub host_network: bool,
    /// The pod's main containers, as the main-process view shows them (the regular native
    /// ones, named by whoever made the pod: `wpod kube generate` knows which containers are
    /// Wasm sidecars, the manifest alone does not); empty without that grant.
    pub main_containers: Vec<String>,
}

/// The guest's command line and environment as the container runtime resolved them for the
/// runner's container (on Kubernetes: the kubelet's `valueFrom`, `envFrom` and `$(VAR)`
/// expansion, done as for any container), in place of resolving them from the manifest, whose
/// ConfigMaps and Secrets the runner does not have.
#[derive(Clone, Debug, Default)]
pub struct FromRuntime {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Plans the container `name` of `pod` as a Wasm sidecar running `component`; its argv and
/// environment come from the manifest, or `given` by the container runtime. `mains` are the
/// pod's main containers, which the main-process view shows.
pub fn plan(
    pod: &Pod,
    name: &str,
    component: WasmComponent,
    given: Option<FromRuntime>,
    mains: &[String],
) -> Result<InContainerPlan, Diagnostics> {
    let mut diags: Vec<Diagnostic> = Vec::new();
    // The variables the manifest gives by name (envFrom's cannot be told from the runtime's).
    let declared: Vec<String> = pod
        .containers_in_order()
        .filter(|(_, _, c)| c.name == name)
        .flat_map(|(_, _, c)| c.env.iter().map(|v| v.name.clone()))
        .collect();
    let without_env;
    let pod = match &given {
        // What the runtime resolved is not resolved again (nor are the objects it needs).
        Some(_) => {
            let mut p = pod.clone();
            for c in p
                .spec
                .init_containers
                .iter_mut()
                .chain(p.spec.containers.iter_mut())
                .filter(|c| c.name == name)
            {
                c.env.clear();
                c.env_from.clear();
                c.command.clear();
                c.args.clear();
            }
            without_env = p;
            &without_env
        }
        None => pod,
    };
    let Some((path, role, c)) = pod.containers_in_order().find(|(_, _, c)| c.name == name) else {
        let names: Vec<String> = pod
            .containers_in_order()
            .map(|(_, _, c)| c.name.clone())
            .collect();
        return Err(Diagnostics(vec![pod.source.diag(
            "spec.containers",
            format!(
                "the pod has no container named \"{name}\" (it has: {}); give --container one \
                 of them",
                names.join(", ")
            ),
        )]));
    };
    let host = HostInfo::here(pod);
    let sidecar = Sidecar {
        pod,
        path: &path,
        container: c,
        host: &host.facts(),
    };
    let mut grants = wasm_grants(&sidecar, &component.path, &mut diags);
    if let Some(given) = given {
        if !given.argv.is_empty() {
            grants.wasi.argv = given.argv;
        }
        grants.wasi.env = guest_env(given.env, &declared);
    }
    // The runtime mounted each volumeMount at its mountPath, subPath applied: that directory
    // is the sidecar's volume.
    for m in &mut grants.fs.mounts {
        m.volume = m.guest.clone();
        m.sub_path = None;
    }
    // The pod's other containers mount these volumes without nosymfollow (a wpod pod mounts
    // them so): a link the guest made would lead them anywhere in their own filesystems.
    grants.fs.no_symlinks = true;
    // The main-process view from a container of its own: the processes of the shared PID
    // namespace, not the output the runtime keeps.
    grants.process.output = false;
    let main_containers = match grants.process.read {
        true => main_containers(pod, name, mains, &mut diags),
        false => Vec::new(),
    };
    let mut containers = [ContainerPlan::new(
        path,
        role,
        pod.spec.restart_policy,
        Image::Wasm(component),
        c,
        Some(grants),
    )];
    // A pod-level memory limit needs the sidecar's own, as in a wpod pod.
    super::share_pod_limits(pod, &mut containers, &mut diags);
    if !diags.is_empty() {
        diags.sort_by_key(|d| d.loc);
        return Err(Diagnostics(diags));
    }
    let [container] = containers;
    Ok(InContainerPlan {
        container,
        settings: pod.annotations(),
        grace_period: super::grace_period(pod),
        host_aliases: super::host_aliases(pod),
        host_network: pod.spec.host_network,
        main_containers,
    })
}

/// Checks the names given as the pod's main containers: each one a regular container of the
/// pod other than the sidecar itself, and at least one, since the view has nothing to show
/// otherwise.
fn main_containers(
    pod: &Pod,
    sidecar: &str,
    mains: &[String],
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    if mains.is_empty() {
        diags.push(pod.source.diag(
            "spec.shareProcessNamespace",
            "the sidecar's main-process view needs the pod's main containers named: give \
             --main NAME for each (`wpod kube generate` writes them)",
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for m in mains {
        if names.contains(m) {
            continue;
        }
        names.push(m.clone());
        let regular = pod
            .containers_in_order()
            .any(|(_, role, c)| c.name == *m && role == crate::spec::Role::Regular);
        if !regular || m == sidecar {
            diags.push(pod.source.diag(
                "spec.containers",
                format!(
                    "--main {m}: not a main container of the pod (one of spec.containers other \
                     than the sidecar {sidecar})"
                ),
            ));
        }
    }
    names
}

/// Reads `files` (one Pod, and the objects beside it) and plans its container `name` as
/// [`plan`] does; every problem of the files comes back located.
pub fn load(
    files: &super::ManifestFiles,
    name: &str,
    component: WasmComponent,
    given: Option<FromRuntime>,
    mains: &[String],
) -> Result<InContainerPlan, SpecError> {
    let (pods, mut diags) = super::read(files)?;
    if !diags.is_empty() {
        crate::spec::sort_diagnostics(&mut diags);
        return Err(SpecError::Invalid(Diagnostics(diags)));
    }
    let [pod] = pods.as_slice() else {
        return Err(SpecError::Invalid(Diagnostics(vec![Diagnostic {
            file: files.manifest.clone(),
            loc: crate::spec::Loc { line: 1, col: 1 },
            path: String::new(),
            message: format!(
                "wpod sidecar runs a container of one pod, but the file holds {} Pod documents; \
                 give it the manifest of its own pod",
                pods.len()
            ),
        }])));
    };
    plan(pod, name, component, given, mains).map_err(SpecError::Invalid)
}

/// Variables a container runtime sets in every container (the image's PATH, containerd's
/// HOSTNAME, HOME): the guest does not get them unless its manifest names them, as in a wpod
/// pod, where a sidecar's environment is its manifest's.
const RUNTIME_ADDED: &[&str] = &["PATH", "HOSTNAME", "HOME"];

/// The prefix of the runner's own settings (`WPOD_HOST_IP`, ...): never the guest's.
pub const RUNNER_PREFIX: &str = "WPOD_";

/// The runner's environment as the guest's: less the runner's own variables, and less what
/// the runtime adds to every container unless `declared` by the manifest.
fn guest_env(env: Vec<(String, String)>, declared: &[String]) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| !k.starts_with(RUNNER_PREFIX))
        .filter(|(k, _)| !RUNTIME_ADDED.contains(&k.as_str()) || declared.contains(k))
        .collect()
}
