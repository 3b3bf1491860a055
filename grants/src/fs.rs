//! Filesystem grant: each `volumeMount` of the sidecar is a preopened directory at its
//! `mountPath` (read-only when `readOnly: true`), opened through cap-std so that `..` and
//! symlinks cannot leave it; nothing else of the host is visible.
//!
//! A read-write sidecar can still *create* a symlink whose target points out of the volume.
//! It cannot follow it itself, and native containers mount such shared volumes with
//! `nosymfollow` (see [`shared_writable_volumes`]), so the link leads nobody out.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::filesystem;
use wasmtime_wasi::FsPerms;

use super::fs_view::{FsState, FsView, HasFs};
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::{Diagnostic, VolumeSource};

pub struct Filesystem;

/// One volumeMount of the sidecar.
#[derive(Clone, Debug)]
pub struct FsMount {
    pub volume: String,
    /// Where the guest sees it.
    pub guest: String,
    pub read_only: bool,
    /// A directory inside the volume preopened in place of its root (`subPath`,
    /// `subPathExpr` expanded; markers of the sandbox's values filled at start).
    pub sub_path: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct FsGrant {
    pub mounts: Vec<FsMount>,
    pub cwd: Option<String>,
    /// `spec.containers[i].volumeMounts`, for refusals.
    pub field: String,
    /// No symlinks may be made: the sidecar runs in a container of its own (`wpod sidecar`),
    /// whose volumes the pod's other containers mount without `nosymfollow`, so a link it
    /// made would lead them anywhere in their own filesystems.
    pub no_symlinks: bool,
}

impl Capability for Filesystem {
    type Grant = FsGrant;
    type State = super::fs_view::FsState;

    const IMPORTS: &'static [Import] = &[Import {
        interface: "wasi:filesystem",
        rule: ImportRule::Scoped {
            field: "volumeMounts",
            what: "each volumeMount as a preopened directory (readOnly honoured); nothing else of the host",
        },
    }];

    fn resolve(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) -> FsGrant {
        let c = sidecar.container;
        check_volumes(sidecar, diags);
        if let Some(w) = &c.working_dir {
            let mounted = c
                .volume_mounts
                .iter()
                .any(|m| Path::new(w).starts_with(&m.mount_path));
            if !mounted {
                diags.push(sidecar.diag(
                    "workingDir",
                    "a Wasm sidecar sees only its volumeMounts; workingDir must be inside one of them",
                ));
            }
        }
        // subPathExpr expands against the container's variables, as for a native container.
        let env = match c.volume_mounts.iter().any(|m| m.sub_path_expr) {
            true => crate::spec::env::resolve(sidecar.pod, c, sidecar.host)
                .map(|e| e.env)
                .unwrap_or_default(),
            false => Vec::new(),
        };
        FsGrant {
            mounts: c
                .volume_mounts
                .iter()
                .enumerate()
                .map(|(i, m)| FsMount {
                    volume: m.name.clone(),
                    guest: m.mount_path.clone(),
                    read_only: m.read_only,
                    sub_path: crate::spec::env::sub_path(m, &env).unwrap_or_else(|e| {
                        diags.push(sidecar.diag(&format!("volumeMounts[{i}].subPathExpr"), e));
                        None
                    }),
                })
                .collect(),
            cwd: c.working_dir.clone(),
            field: format!("{}.volumeMounts", sidecar.path),
            no_symlinks: false,
        }
    }

    /// wasmtime-wasi's filesystem, watched for refusals (`fs_view`).
    fn add_to_linker<T: GrantHost>(l: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: GrantHost>(t: &mut T) -> FsView<'_> {
            let (inner, states) = t.fs_parts();
            FsView {
                inner,
                state: &mut states.fs,
            }
        }
        filesystem::types::add_to_linker::<T, HasFs>(l, view)?;
        filesystem::preopens::add_to_linker::<T, HasFs>(l, view)?;
        Ok(())
    }

    fn prepare(grant: &FsGrant, setup: &mut InstanceSetup<'_>) -> Result<FsState, GrantError> {
        for m in &grant.mounts {
            let (host, held) = setup
                .volumes
                .volume(&m.volume)
                .ok_or_else(|| GrantError::NoVolume(m.volume.clone()))?;
            let fail = |source: Box<dyn std::error::Error + Send + Sync>| GrantError::Volume {
                host: host.to_path_buf(),
                guest: m.guest.clone(),
                source,
            };
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            // The directory wpod opened when the pod started (or a subPath beneath it, opened
            // following nothing), opened for reading and checked; wasmtime then opens that
            // same directory through its descriptor.
            let beneath = match &m.sub_path {
                Some(sub) => Some(
                    crate::files::open_beneath(
                        held,
                        &setup.facts.fill(sub),
                        setup.volumes.written_by_wpod(&m.volume),
                    )
                    .map_err(|e| fail(e.into()))?,
                ),
                None => None,
            };
            let held = beneath.as_ref().map_or(held, |fd| fd.as_fd());
            let dir = open_checked_dir(held).map_err(|e| fail(e.into()))?;
            let by_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
            setup
                .wasi
                .preopened_dir(&by_fd, &m.guest, perms)
                .map_err(|e| fail(e.into()))?;
        }
        if let Some(cwd) = &grant.cwd {
            setup.wasi.initial_cwd(cwd);
        }
        let mut state = FsState::new(
            setup.name,
            grant.mounts.clone(),
            grant.field.clone(),
            setup.reports.clone(),
        );
        state.no_symlinks = grant.no_symlinks;
        Ok(state)
    }
}

/// A Wasm sidecar runs inside the wpod process and gets each volume as a preopened directory.
/// A host directory that is, or holds, a kernel filesystem would hand it wpod's own memory
/// (`/proc/self`) and the host's devices and settings, even read-only: refused. (The check is
/// made again on the opened directory when the sidecar starts.)
fn check_volumes(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) {
    // Read once, and only for a sidecar that mounts a hostPath (most mount none: a warm
    // `wpod apply` read the whole table for each of its sidecars).
    let read = std::cell::OnceCell::new();
    let table = || read.get_or_init(|| crate::mounts::table().unwrap_or_default());
    for (i, m) in sidecar.container.volume_mounts.iter().enumerate() {
        let source = sidecar.pod.spec.volumes.iter().find(|v| v.name == m.name);
        let Some(VolumeSource::HostPath(h)) = source.map(|v| &v.source) else {
            continue;
        };
        let field = format!("volumeMounts[{i}].name");
        if !h.kind.may_be_directory() {
            diags.push(sidecar.diag(
                &field,
                format!(
                    "volume \"{}\" is a hostPath of type {}: a Wasm sidecar gets each volume as a \
                     directory; mount the directory that holds it",
                    m.name, h.kind
                ),
            ));
            continue;
        }
        let real = crate::files::resolve_existing(Path::new(&h.path));
        if real.exists() && !real.is_dir() {
            diags.push(sidecar.diag(
                &field,
                format!(
                    "volume \"{}\" ({}) is not a directory: a Wasm sidecar gets each volume as a \
                     directory; mount the directory that holds it",
                    m.name, h.path
                ),
            ));
            continue;
        }
        if let Some(k) = crate::mounts::kernel_filesystems(table(), &real, None).first() {
            let how = if real.starts_with(&k.mount_point) {
                "is on"
            } else {
                "holds"
            };
            diags.push(sidecar.diag(
                &field,
                format!(
                    "volume \"{}\" (hostPath {}) {how} the kernel filesystem {} at {}: a Wasm sidecar \
                     runs inside the wpod process, and such a mount would expose wpod's memory and \
                     the host's processes, devices or settings to it; mount a directory without \
                     kernel filesystems, such as /var/log",
                    m.name,
                    h.path,
                    k.fstype,
                    k.mount_point.display()
                ),
            ));
        }
    }
}

/// Why a volume's directory cannot be handed to a sidecar.
#[derive(Debug, thiserror::Error)]
enum VolumeError {
    #[error(transparent)]
    Open(std::io::Error),
    #[error("resolve it")]
    Resolve(#[source] std::io::Error),
    #[error("statx")]
    Statx(#[source] std::io::Error),
    #[error("read the mount table")]
    MountTable(#[source] std::io::Error),
    #[error("{} is or holds the kernel filesystem {fstype} (at {}), which a Wasm sidecar must never see", path.display(), mount_point.display())]
    KernelFilesystem {
        path: std::path::PathBuf,
        fstype: String,
        mount_point: std::path::PathBuf,
    },
    #[error("not a directory")]
    NotADirectory,
}

/// Opens a volume's directory for reading (through the descriptor wpod holds) and makes sure it
/// is not, and holds no, kernel filesystem (the plan refused such volumes already; this is the
/// check at the moment of use).
fn open_checked_dir(held: BorrowedFd<'_>) -> Result<OwnedFd, VolumeError> {
    let dir: OwnedFd = std::fs::File::open(format!("/proc/self/fd/{}", held.as_raw_fd()))
        .map_err(VolumeError::Open)?
        .into();
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(VolumeError::Resolve)?;
    let mount = crate::mounts::mount_id(dir.as_fd()).map_err(VolumeError::Statx)?;
    let table = crate::mounts::table().map_err(VolumeError::MountTable)?;
    if let Some(k) = crate::mounts::kernel_filesystems(&table, &real, Some(mount)).first() {
        return Err(VolumeError::KernelFilesystem {
            fstype: k.fstype.to_string(),
            mount_point: k.mount_point.clone(),
            path: real,
        });
    }
    let is_dir = std::fs::File::from(dir.try_clone().map_err(VolumeError::Open)?)
        .metadata()
        .is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Err(VolumeError::NotADirectory);
    }
    Ok(dir)
}
