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

use super::{wasm_grants, ContainerPlan, HostInfo, Image, WasmComponent, MAX_GRACE};
use crate::grants::Sidecar;
use crate::spec::{Annotations, Diagnostic, Diagnostics, Pod, SpecError};

/// One Wasm sidecar of a pod, planned to run in a container of its own.
#[derive(Clone, Debug)]
pub struct InContainerPlan {
    /// The sidecar: its grants (volumes keyed by mountPath), limits, probes.
    pub container: ContainerPlan,
    /// wpod's settings from the pod's annotations (handles, log rate), defaults applied.
    pub settings: Annotations,
    /// The pod's `terminationGracePeriodSeconds`, at most [`MAX_GRACE`]: how long the sidecar
    /// has after `stopping` (the kubelet's SIGKILL may come first).
    pub grace_period: Duration,
    /// `spec.hostAliases`, answered by the sidecar's resolver as the pod's /etc/hosts has them.
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
}

/// Plans the container `name` of `pod` as a Wasm sidecar running `component`.
pub fn plan(
    pod: &Pod,
    name: &str,
    component: WasmComponent,
) -> Result<InContainerPlan, Diagnostics> {
    let mut diags: Vec<Diagnostic> = Vec::new();
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
    // The runtime mounted each volumeMount at its mountPath, subPath applied: that directory
    // is the sidecar's volume.
    for m in &mut grants.fs.mounts {
        m.volume = m.guest.clone();
        m.sub_path = None;
    }
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
    let grace_seconds = pod.spec.termination_grace_period_seconds.max(0) as u64;
    Ok(InContainerPlan {
        container,
        settings: pod.annotations(),
        grace_period: Duration::from_secs(grace_seconds).min(MAX_GRACE),
        host_aliases: pod
            .spec
            .host_aliases
            .iter()
            .filter_map(|a| Some((a.ip.parse().ok()?, a.hostnames.clone())))
            .collect(),
    })
}

/// Reads `files` (one Pod, and the objects beside it) and plans its container `name` as
/// [`plan`] does; every problem of the files comes back located.
pub fn load(
    files: &super::ManifestFiles,
    name: &str,
    component: WasmComponent,
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
    plan(pod, name, component).map_err(SpecError::Invalid)
}
