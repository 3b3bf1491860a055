//! Pod → PodPlan: what to create and in which order, decided before anything starts.
//!
//! Everything that can be checked without touching the system is checked here, so `wpod
//! validate` and `wpod run` refuse the same manifests with the same located errors.

pub mod image;

use std::path::Path;

use serde::Serialize;

use crate::spec::{Container, Diagnostic, Diagnostics, Handler, Pod, VolumeSource};
pub use image::Image;

/// A container's place in the pod's start order (Kubernetes semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// An init container: runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: starts in its place and keeps running.
    NativeSidecar,
    /// A regular container; the first one is the pod's main container.
    Regular,
}

#[derive(Clone, Debug, Serialize)]
pub struct ContainerPlan {
    /// Field path of the container in the manifest, e.g. `spec.containers[0]`.
    pub path: String,
    pub role: Role,
    pub image: Image,
    pub spec: Container,
}

impl ContainerPlan {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// A pod ready to be created: containers in start order.
#[derive(Clone, Debug, Serialize)]
pub struct PodPlan {
    pub pod: Pod,
    pub containers: Vec<ContainerPlan>,
}

impl PodPlan {
    pub fn name(&self) -> &str {
        &self.pod.metadata.name
    }
}

/// Resolves images and checks what depends on them and on the host.
pub fn plan(pod: &Pod) -> Result<PodPlan, Diagnostics> {
    let mut diags = Vec::new();
    let mut containers = Vec::new();
    for (path, c) in pod.all_containers() {
        let role = match (
            path.starts_with("spec.initContainers"),
            c.restart_policy.as_deref(),
        ) {
            (true, Some("Always")) => Role::NativeSidecar,
            (true, _) => Role::Init,
            (false, _) => Role::Regular,
        };
        match image::resolve(c.image.as_deref(), pod.manifest_dir()) {
            Ok(image) => {
                if let Image::Wasm(component) = &image {
                    check_wasm_container(pod, &path, c, &mut diags);
                    check_component_grants(
                        pod,
                        &path,
                        component,
                        &ContainerPlan {
                            path: path.clone(),
                            role,
                            image: image.clone(),
                            spec: c.clone(),
                        },
                        &mut diags,
                    );
                } else {
                    check_native_container(pod, &path, c, &image, &mut diags);
                }
                containers.push(ContainerPlan {
                    path,
                    role,
                    image,
                    spec: c.clone(),
                });
            }
            Err(message) => diags.push(pod.source.diag(format!("{path}.image"), message)),
        }
    }
    check_host_paths(pod, &mut diags);
    if diags.is_empty() {
        Ok(PodPlan {
            pod: pod.clone(),
            containers,
        })
    } else {
        diags.sort_by_key(|d| d.loc);
        Err(Diagnostics(diags))
    }
}

/// A component may import only what the pod grants it, and must be a runnable sidecar.
fn check_component_grants(
    pod: &Pod,
    path: &str,
    component: &Path,
    plan: &ContainerPlan,
    diags: &mut Vec<Diagnostic>,
) {
    let field = format!("{path}.image");
    match crate::sidecars::inspect::inspect(component) {
        Err(e) => diags.push(pod.source.diag(field, e.to_string())),
        Ok(report) => {
            for import in &report.imports {
                if let Some(why) = crate::sidecars::grants::refusal(pod, plan, &import.name) {
                    diags.push(pod.source.diag(field.clone(), why));
                }
            }
            if !report
                .exports
                .iter()
                .any(|e| e.starts_with("wasi:cli/run@0.2"))
            {
                diags.push(pod.source.diag(
                    field,
                    format!("{} does not export wasi:cli/run: a sidecar is a command component (a wasm32-wasip2 program with a main)", component.display()),
                ));
            }
        }
    }
}

/// Fields that need a process make no sense for a Wasm sidecar; say so instead of ignoring them.
fn check_wasm_container(pod: &Pod, path: &str, c: &Container, diags: &mut Vec<Diagnostic>) {
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
            diags.push(pod.source.diag(
                format!("{path}.{field}.exec"),
                "a Wasm sidecar has no process to exec in; use httpGet or tcpSocket",
            ));
        }
    }
    if let Some(w) = &c.working_dir {
        let mounted = c
            .volume_mounts
            .iter()
            .any(|m| Path::new(w).starts_with(&m.mount_path));
        if !mounted {
            diags.push(pod.source.diag(
                format!("{path}.workingDir"),
                "a Wasm sidecar sees only its volumeMounts; workingDir must be inside one of them",
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
    if matches!(image, Image::Rootfs(_)) && c.command.is_empty() {
        diags.push(pod.source.diag(
            format!("{path}.command"),
            "a rootfs directory has no entrypoint: give the command to run",
        ));
    }
    if let Some(sc) = &c.security_context {
        if sc.run_as_non_root == Some(true) && sc.run_as_user.unwrap_or(0) == 0 {
            diags.push(pod.source.diag(
                format!("{path}.securityContext.runAsNonRoot"),
                "the container would run as root (uid 0); set securityContext.runAsUser to a non-zero uid",
            ));
        }
    }
    for (i, p) in c.ports.iter().enumerate() {
        if p.host_port.is_some() && p.protocol == "UDP" {
            diags.push(pod.source.diag(
                format!("{path}.ports[{i}].hostPort"),
                "publishing UDP ports is not supported by wpod yet; use TCP",
            ));
        }
        if let Some(ip) = &p.host_ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                diags.push(pod.source.diag(
                    format!("{path}.ports[{i}].hostIP"),
                    format!("\"{ip}\" is not an IP address"),
                ));
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
        let (ok, want) = match h.kind.as_str() {
            "" | "DirectoryOrCreate" | "FileOrCreate" => (true, ""),
            "Directory" => (ft.is_some_and(|t| t.is_dir()), "a directory"),
            "File" => (ft.is_some_and(|t| t.is_file()), "a file"),
            "Socket" => (ft.is_some_and(|t| t.is_socket()), "a unix socket"),
            "CharDevice" => (ft.is_some_and(|t| t.is_char_device()), "a character device"),
            "BlockDevice" => (ft.is_some_and(|t| t.is_block_device()), "a block device"),
            _ => (true, ""), // unknown types are reported by validation
        };
        if !ok {
            let found = match &meta {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "nothing is there".to_string()
                }
                Err(e) => format!("cannot stat it: {e}"),
                Ok(_) => "something else is there".to_string(),
            };
            let fix = match h.kind.as_str() {
                "Directory" => "create it or use type DirectoryOrCreate",
                "File" => "create it or use type FileOrCreate",
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
