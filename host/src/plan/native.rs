//! A native container's process, decided once its image is known (after the pull), as a Wasm
//! sidecar's grants are: the command, the environment, the working directory, the user and
//! group, the capability bounding set, `no_new_privs`, seccomp, the root's layers and the stop
//! signal. Kubernetes' rules (containerd's `WithProcessArgs`, the kubelet's environment and
//! working directory) are applied here once; the container runtime below only combines this
//! with the sandbox's paths, and reads nothing of the manifest.

use std::path::PathBuf;

use oci_spec::runtime::LinuxSeccomp;

use super::{ContainerPlan, Image};
use crate::oci::pull::StoredImage;
use crate::spec::env::{EnvProblem, HostFacts};
use crate::spec::{Capabilities, Capability as Cap, Pod, SeccompProfile};

/// A native container's process, as the shim starts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeProcess {
    /// `$(VAR)` references expanded; downward API values known only once the sandbox exists
    /// (the pod's IP) are markers the container runtime fills in
    /// ([`crate::spec::env::RuntimeFacts::fill`]).
    pub argv: Vec<String>,
    /// The runtime's defaults, the image's `Env` over them, the Pod's over all (markers as in
    /// `argv`).
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the pod's `supplementalGroups` and `fsGroup`.
    pub additional_gids: Vec<u32>,
    /// The capability bounding set, as the kernel names them (`CAP_KILL`).
    pub capabilities: Vec<String>,
    /// Kubernetes' `allowPrivilegeEscalation: false` (wpod's default).
    pub no_new_privs: bool,
    /// The seccomp profile, resolved for this container on this host (its capabilities,
    /// this architecture and kernel): RuntimeDefault unless the container asks to run
    /// unconfined (`None`) or names a Localhost profile (read here, once).
    pub seccomp: Option<LinuxSeccomp>,
    pub read_only_root: bool,
    /// The root's read-only layers, topmost first: `/` for a host container, the directory of
    /// a rootfs image, or a pulled image's unpacked layers.
    pub lowers: Vec<PathBuf>,
    /// The polite stop, as the image's config spells it (`SIGQUIT`); SIGTERM when unset.
    pub stop_signal: Option<String>,
    /// The container's volumes, in the manifest's order (a later mount may sit inside an
    /// earlier one).
    pub mounts: Vec<VolumeMount>,
}

/// A volume mounted into a native container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The pod's volume.
    pub volume: String,
    /// A path inside it, mounted in place of its root (`subPath`, `subPathExpr` expanded;
    /// markers of the sandbox's values, as in `env`).
    pub sub_path: Option<String>,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// The capabilities container runtimes (containerd, CRI-O, podman) grant by default.
pub const DEFAULT_CAPABILITIES: &[Cap] = &[
    Cap::Named("CHOWN"),
    Cap::Named("DAC_OVERRIDE"),
    Cap::Named("FSETID"),
    Cap::Named("FOWNER"),
    Cap::Named("MKNOD"),
    Cap::Named("NET_RAW"),
    Cap::Named("SETGID"),
    Cap::Named("SETUID"),
    Cap::Named("SETFCAP"),
    Cap::Named("SETPCAP"),
    Cap::Named("NET_BIND_SERVICE"),
    Cap::Named("SYS_CHROOT"),
    Cap::KILL,
    Cap::Named("AUDIT_WRITE"),
];

/// The bounding set for a container: the defaults, minus `drop` (`ALL` drops all), plus `add`;
/// names as the kernel spells them (`CAP_KILL`).
pub fn capability_set(caps: &Capabilities) -> Vec<String> {
    let mut set: Vec<Cap> = if caps.drop.contains(&Cap::All) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| !caps.drop.contains(c))
            .collect()
    };
    for c in &caps.add {
        if !set.contains(c) {
            set.push(*c);
        }
    }
    let mut names: Vec<String> = set.into_iter().map(Cap::kernel_name).collect();
    names.sort();
    names
}

/// The environment every container starts with, before its image's and its own.
fn base_env(hostname: &str) -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), hostname.into()),
        ("HOME".into(), "/root".into()),
    ]
}

/// Why a native container's process cannot be planned: `(field, message)` for a located
/// diagnostic.
pub type Refusal = (String, String);

/// Plans `c`'s process on `image` (its pulled image, for a registry image).
pub fn process(
    c: &ContainerPlan,
    pod: &Pod,
    host: &HostFacts<'_>,
    image: Option<&StoredImage>,
) -> Result<NativeProcess, Refusal> {
    let spec = &c.spec;
    let hostname = pod.hostname();
    let lowers = match (&c.image, image) {
        (Image::Host, _) => vec![PathBuf::from("/")],
        (Image::Rootfs(dir), _) => vec![dir.clone()],
        (Image::Registry { .. }, Some(image)) => image.layers.clone(),
        (Image::Registry { name, .. }, None) => {
            return Err((
                format!("{}.image", c.path),
                format!("image {} was not pulled", name.canonical()),
            ))
        }
        (Image::Wasm(_), _) => {
            return Err((
                format!("{}.image", c.path),
                "a Wasm component is not a native container".into(),
            ))
        }
    };
    let sc = spec.security_context.clone().unwrap_or_default();
    // The Pod's variables and command line as the kubelet makes them (checked when the pod
    // was first planned, so the first problem stands for all).
    let own = crate::spec::env::resolve(pod, spec, host).map_err(|problems| {
        let p = problems.into_iter().next().unwrap_or(EnvProblem {
            field: "env".into(),
            message: "cannot be made".into(),
        });
        (format!("{}.{}", c.path, p.field), p.message)
    })?;
    let image_process = image.map(|i| &i.process);
    let mut env = base_env(hostname);
    let layered = crate::oci::process::env(
        image_process.map(|p| p.env.as_slice()).unwrap_or_default(),
        &own.env,
    );
    for (k, v) in layered {
        match env.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    let (argv, cwd) = match image_process {
        Some(p) => (
            crate::oci::process::argv(&own.command, &own.args, p)
                .map_err(|e| (format!("{}.command", c.path), e.to_string()))?,
            Some(crate::oci::process::working_dir(
                spec.working_dir.as_deref(),
                p,
            )),
        ),
        None => (
            own.command.iter().chain(&own.args).cloned().collect(),
            spec.working_dir.clone(),
        ),
    };
    // runAsUser wins; else the image's User; else root.
    let (uid, image_gid) = match (sc.run_as_user, image) {
        (Some(uid), _) => (uid, None),
        (None, Some(img)) => match &img.process.user {
            Some(user) => {
                let (uid, gid) =
                    crate::oci::process::resolve_user(user, &img.layers).map_err(|e| {
                        (
                            format!("{}.image", c.path),
                            format!("the image's user: {}", crate::error::chain(&e)),
                        )
                    })?;
                (uid, Some(gid))
            }
            None => (0, None),
        },
        (None, None) => (0, None),
    };
    if sc.run_as_non_root == Some(true) && uid == 0 {
        return Err((
            format!("{}.securityContext.runAsNonRoot", c.path),
            "the container would run as root (uid 0): the image's user is root or unset; set \
             securityContext.runAsUser to a non-zero uid"
                .into(),
        ));
    }
    let capabilities = capability_set(&sc.capabilities);
    let profile = match sc.seccomp_profile {
        Some(SeccompProfile::Unconfined) => None,
        Some(SeccompProfile::Localhost) => {
            let relative = sc.seccomp_localhost_profile.as_deref().unwrap_or_default();
            Some(super::seccomp::read_localhost(relative).map_err(|e| {
                (
                    format!("{}.securityContext.seccompProfile.localhostProfile", c.path),
                    e.to_string(),
                )
            })?)
        }
        Some(SeccompProfile::RuntimeDefault) | None => {
            Some(super::seccomp::Profile::runtime_default())
        }
    };
    Ok(NativeProcess {
        argv,
        env,
        cwd,
        uid,
        gid: sc.run_as_group.or(image_gid).unwrap_or(0),
        additional_gids: {
            // The pod's groups, as the kubelet gives every container's processes.
            let psc = &pod.spec.security_context;
            let mut gids = psc.supplemental_groups.clone();
            gids.extend(psc.fs_group);
            gids.sort_unstable();
            gids.dedup();
            gids
        },
        seccomp: profile.map(|p| p.resolve_here(&capabilities)),
        capabilities,
        // Kubernetes' allowPrivilegeEscalation; wpod defaults to the safe side.
        no_new_privs: sc.allow_privilege_escalation != Some(true),
        read_only_root: sc.read_only_root_filesystem,
        lowers,
        // lifecycle.stopSignal, else the image's StopSignal.
        stop_signal: spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.stop_signal.clone())
            .or_else(|| image.and_then(|i| i.process.stop_signal.clone())),
        mounts: spec
            .volume_mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(VolumeMount {
                    volume: m.name.clone(),
                    sub_path: crate::spec::env::sub_path(m, &own.env)
                        .map_err(|e| (format!("{}.volumeMounts[{i}].subPathExpr", c.path), e))?,
                    target: m.mount_path.clone(),
                    read_only: m.read_only,
                })
            })
            .collect::<Result<_, Refusal>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(yaml: &str) -> super::super::PodPlan {
        let pods = crate::spec::parse(Path::new("pod.yaml"), yaml).expect("a valid pod");
        super::super::plan(&pods[0]).expect("a valid pod")
    }

    #[test]
    fn a_host_container_runs_its_command_as_the_manifest_says() {
        let plan = plan(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  hostname: front
  containers:
  - name: main
    image: /
    command: [sh, -c]
    args: [echo hi]
    workingDir: /srv
    env: [{name: HOME, value: /home/app}, {name: MODE, value: test}]
    securityContext:
      runAsUser: 1000
      runAsGroup: 2000
      allowPrivilegeEscalation: true
      readOnlyRootFilesystem: true
      seccompProfile: {type: Unconfined}
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
"#,
        )
        .with_native_processes(&[])
        .unwrap();
        let p = plan.containers[0].process.as_ref().expect("planned");
        assert_eq!(p.argv, ["sh", "-c", "echo hi"]);
        assert_eq!(p.cwd.as_deref(), Some("/srv"));
        assert_eq!(
            p.env,
            [
                (
                    "PATH".to_string(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
                ),
                ("HOSTNAME".into(), "front".into()),
                ("HOME".into(), "/home/app".into()),
                ("MODE".into(), "test".into()),
            ]
        );
        assert_eq!((p.uid, p.gid), (1000, 2000));
        assert_eq!(p.capabilities, ["CAP_NET_BIND_SERVICE"]);
        assert!(!p.no_new_privs && p.seccomp.is_none() && p.read_only_root);
        assert_eq!(p.lowers, [PathBuf::from("/")]);
    }

    /// A registry image is planned on what was pulled; a plan that was not is refused,
    /// located, rather than started on nothing.
    #[test]
    fn a_registry_image_needs_its_pull() {
        let e = plan(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: busybox
    command: [id]
"#,
        )
        .with_native_processes(&[])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "spec.containers[0].image: image docker.io/library/busybox:latest was not pulled"
            ),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_the_safe_side() {
        let plan = plan(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: main, image: /, command: [id]}\n",
        )
        .with_native_processes(&[])
        .unwrap();
        let p = plan.containers[0].process.as_ref().unwrap();
        assert!(p.no_new_privs && p.seccomp.is_some() && !p.read_only_root);
        assert_eq!((p.uid, p.gid), (0, 0));
        assert_eq!(p.capabilities.len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(p.stop_signal, None);
    }
}
