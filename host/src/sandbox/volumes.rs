//! The pod's volumes on the host: an `emptyDir` is a directory of the pod (a size-limited tmpfs
//! with `medium: Memory`), a `hostPath` is the host path itself. Native containers get them as
//! bind mounts and Wasm sidecars as preopened directories: the same host directory, so what one
//! writes the other sees at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::SandboxError;
use crate::plan::PodPlan;
use crate::spec::VolumeSource;

pub struct PodVolumes {
    dirs: HashMap<String, PathBuf>,
    tmpfs: Vec<PathBuf>,
}

impl PodVolumes {
    pub fn create(plan: &PodPlan, root: &Path) -> Result<(Self, Vec<String>), SandboxError> {
        let pod = &plan.pod;
        let mut vols = PodVolumes {
            dirs: HashMap::new(),
            tmpfs: Vec::new(),
        };
        let mut warnings = Vec::new();
        for v in &pod.spec.volumes {
            let step = |what: &str| format!("volume {}: {what}", v.name);
            let path = match &v.source {
                VolumeSource::EmptyDir(e) => {
                    let dir = root.join(&v.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| SandboxError::io(step("create emptyDir"), &dir, e))?;
                    if e.medium == "Memory" {
                        let mut data = "mode=0777".to_string();
                        // Sized by the plan (sizeLimit, bounded by the pod's memory limit).
                        if let Some(Some(size)) = plan.tmpfs_sizes.get(&v.name) {
                            data.push_str(&format!(",size={size}"));
                        }
                        mount(
                            Some("tmpfs"),
                            &dir,
                            Some("tmpfs"),
                            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                            Some(data.as_str()),
                        )
                        .map_err(|e| SandboxError::sys(step("mount tmpfs"), &dir, e))?;
                        vols.tmpfs.push(dir.clone());
                    } else {
                        // Kubernetes' own emptyDir is world-writable, so any container user can use it.
                        use std::os::unix::fs::PermissionsExt;
                        let _ =
                            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
                        if e.size_limit_bytes.is_some() {
                            warnings.push(format!(
                                "volume {}: sizeLimit is enforced only for medium: Memory; this disk-backed emptyDir is not limited",
                                v.name
                            ));
                        }
                    }
                    dir
                }
                VolumeSource::HostPath(h) => {
                    let p = PathBuf::from(&h.path);
                    match h.kind.as_str() {
                        "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| {
                            SandboxError::io(step("create hostPath directory"), &p, e)
                        })?,
                        "FileOrCreate" if !p.exists() => {
                            if let Some(parent) = p.parent() {
                                std::fs::create_dir_all(parent).map_err(|e| {
                                    SandboxError::io(step("create hostPath parent"), parent, e)
                                })?;
                            }
                            std::fs::File::create(&p).map_err(|e| {
                                SandboxError::io(step("create hostPath file"), &p, e)
                            })?;
                        }
                        "" if !p.exists() => {
                            return Err(SandboxError::Step {
                                step: step("hostPath"),
                                error: format!(
                                    "{} does not exist (set type: DirectoryOrCreate to create it)",
                                    p.display()
                                ),
                            });
                        }
                        _ => {}
                    }
                    p
                }
            };
            vols.dirs.insert(v.name.clone(), path);
        }
        Ok((vols, warnings))
    }

    /// The host path of a volume.
    pub fn host_path(&self, name: &str) -> Option<&Path> {
        self.dirs.get(name).map(|p| p.as_path())
    }
}

impl Drop for PodVolumes {
    fn drop(&mut self) {
        for dir in &self.tmpfs {
            if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount emptyDir tmpfs");
            }
        }
    }
}
