//! Filesystem grant: each `volumeMount` of the sidecar is a preopened directory at its
//! `mountPath` (read-only when `readOnly: true`), opened through cap-std so that `..` and
//! symlinks cannot leave it; nothing else of the host is visible.
//!
//! A read-write sidecar can still *create* a symlink whose target points out of the volume.
//! It cannot follow it itself, and native containers mount such shared volumes with
//! `nosymfollow` (see [`shared_writable_volumes`]), so the link leads nobody out.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::plan::PodPlan;
use crate::sandbox::volumes::PodVolumes;
use crate::spec::Container;

#[derive(Clone, Debug)]
pub struct Preopen {
    /// The volume as wpod opened it when the pod started.
    pub dir: Arc<OwnedFd>,
    /// Its host path, for messages.
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, Default)]
pub struct FsGrant {
    pub preopens: Vec<Preopen>,
    pub cwd: Option<String>,
}

impl FsGrant {
    pub fn from_container(c: &Container, volumes: &PodVolumes) -> Result<Self, String> {
        let mut preopens = Vec::new();
        for m in &c.volume_mounts {
            let missing = || format!("volume {} was not created", m.name);
            let (host, fd) = volumes
                .host_path(&m.name)
                .zip(volumes.fd(&m.name))
                .ok_or_else(missing)?;
            let dir = fd
                .try_clone_to_owned()
                .map_err(|e| format!("volume {}: {e}", m.name))?;
            preopens.push(Preopen {
                dir: Arc::new(dir),
                host: host.to_path_buf(),
                guest: m.mount_path.clone(),
                read_only: m.read_only,
            });
        }
        Ok(FsGrant {
            preopens,
            cwd: c.working_dir.clone(),
        })
    }

    pub fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<(), String> {
        for p in &self.preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            let fail = |e: String| {
                format!(
                    "cannot open volume {} for {}: {e}",
                    p.host.display(),
                    p.guest
                )
            };
            // The directory wpod opened when the pod started, opened for reading and checked;
            // wasmtime then opens that same directory through its descriptor.
            let dir = open_checked_dir(&p.dir).map_err(fail)?;
            let by_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
            builder
                .preopened_dir(&by_fd, &p.guest, perms)
                .map_err(|e| fail(format!("{e:#}")))?;
        }
        if let Some(cwd) = &self.cwd {
            builder.initial_cwd(cwd);
        }
        Ok(())
    }
}

/// Opens a volume's directory for reading (through the descriptor wpod holds) and makes sure it
/// is not, and holds no, kernel filesystem (the plan refused such volumes already; this is the
/// check at the moment of use).
fn open_checked_dir(held: &OwnedFd) -> Result<OwnedFd, String> {
    let dir: OwnedFd = std::fs::File::open(format!("/proc/self/fd/{}", held.as_raw_fd()))
        .map_err(|e| e.to_string())?
        .into();
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| format!("resolve it: {e}"))?;
    let mount = crate::mounts::mount_id(dir.as_fd()).map_err(|e| format!("statx: {e}"))?;
    let table = crate::mounts::table().map_err(|e| format!("read the mount table: {e}"))?;
    if let Some(k) = crate::mounts::kernel_filesystems(&table, &real, Some(mount)).first() {
        return Err(format!(
            "{} is or holds the kernel filesystem {} (at {}), which a Wasm sidecar must never see",
            real.display(),
            k.fstype,
            k.mount_point.display()
        ));
    }
    let is_dir = std::fs::File::from(dir.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Err("not a directory".into());
    }
    Ok(dir)
}

/// Volumes some Wasm sidecar mounts read-write: native containers mount them `nosymfollow`.
pub fn shared_writable_volumes(plan: &PodPlan) -> HashSet<String> {
    plan.containers
        .iter()
        .filter(|c| c.image.is_wasm())
        .flat_map(|c| c.spec.volume_mounts.iter())
        .filter(|m| !m.read_only)
        .map(|m| m.name.clone())
        .collect()
}
