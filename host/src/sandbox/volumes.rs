//! The pod's volumes on the host: an `emptyDir` is a directory of the pod (a size-limited tmpfs
//! with `medium: Memory`), a `hostPath` is the host path itself. Native containers get them as
//! bind mounts and Wasm sidecars as preopened directories: the same host directory, so what one
//! writes the other sees at once.
//!
//! Each volume is opened once, when the pod starts (a hostPath's symlinks are followed then, as
//! Kubernetes does), and every container start, first or restart, native or Wasm, uses that
//! open directory: a container that replaces a volume's path (or a directory on the way to it)
//! with a symlink changes nothing for the pod's later starts.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::SandboxError;
use crate::plan::files::Files;
use crate::plan::{PodPlan, VolumeKind};
use crate::spec::env::RuntimeFacts;
use crate::spec::{HostPathType, StorageMedium};
use crate::sys::Syscall;

/// One volume, open.
struct Volume {
    path: PathBuf,
    fd: OwnedFd,
    /// A hostPath of type CharDevice or BlockDevice.
    device: bool,
    /// Files wpod writes (configMap, secret, downwardAPI, projected).
    projected: bool,
}

pub struct PodVolumes {
    sys: Arc<dyn Syscall>,
    /// (`tmpfs`: every mount the volumes made, tmpfs or not, unmounted with the pod.)
    /// A shared lock on each claim the pod mounts, held while it runs: `wpod volume rm`
    /// refuses a claim in use.
    _claim_locks: Vec<std::fs::File>,
    volumes: HashMap<String, Volume>,
    tmpfs: Vec<PathBuf>,
    /// The pod's own user namespace's IDs: what its projected files and fsGroup are on the
    /// host.
    ids: Option<super::userns::IdMap>,
}

impl PodVolumes {
    /// The pod's volumes, under `root` (emptyDirs) and where hostPaths say, mounted with `sys`;
    /// `users`: the pod's own user namespace.
    pub fn create(
        sys: Arc<dyn Syscall>,
        plan: &PodPlan,
        root: &Path,
        facts: &RuntimeFacts,
        users: Option<&super::namespaces::PodUserNs>,
    ) -> Result<(Self, Vec<String>), SandboxError> {
        let ids = users.map(|u| u.ids);
        // Image volumes' layers are ID-mapped through it, as containers' images are.
        let userns = users
            .map(|u| {
                std::fs::File::open(&u.ns)
                    .map_err(|e| SandboxError::io("open the pod's user namespace", &u.ns, e))
            })
            .transpose()?;
        let mut vols = PodVolumes {
            _claim_locks: Vec::new(),
            sys,
            volumes: HashMap::new(),
            tmpfs: Vec::new(),
            ids,
        };
        let owner = super::projected::Owner::of(plan.fs_group.map(|g| g.0), ids);
        let mut warnings = Vec::new();
        for v in &plan.volumes {
            let step = |what: &str| format!("volume {}: {what}", v.name);
            let mut device = false;
            let path = match &v.kind {
                VolumeKind::Image { name, layers, .. } => {
                    // The image's layers, read-only: an overlay of them (a single layer is
                    // bound), as the container runtime mounts an image volume.
                    let dir = root.join(&v.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| SandboxError::io(step("create its directory"), &dir, e))?;
                    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                    // In the pod's own user namespace, each layer is first an ID-mapped copy,
                    // attached under NAME.layers/ (the image's root is then the pod's root).
                    let mapped;
                    let layers = match &userns {
                        Some(userns) => {
                            mapped = vols
                                .idmapped_layers(
                                    layers,
                                    &root.join(format!("{}.layers", v.name)),
                                    userns.as_fd(),
                                )
                                .map_err(|e| {
                                    SandboxError::step(step("ID-map the image's layers"), e)
                                })?;
                            &mapped
                        }
                        None => layers,
                    };
                    match layers.as_slice() {
                        [] => {
                            return Err(SandboxError::step(
                                step("mount the image"),
                                format!("image {} was not pulled", name.canonical()),
                            ))
                        }
                        [one] => {
                            vols.sys
                                .mount(Some(one), &dir, None, MsFlags::MS_BIND, None)
                                .map_err(|e| {
                                    SandboxError::sys(step("bind the image's layer"), &dir, e)
                                })?;
                            vols.tmpfs.push(dir.clone());
                            vols.sys
                                .mount(
                                    None,
                                    &dir,
                                    None,
                                    flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                                    None,
                                )
                                .map_err(|e| {
                                    SandboxError::sys(step("make the image read-only"), &dir, e)
                                })?;
                        }
                        many => {
                            let lower: Vec<String> =
                                many.iter().map(|l| l.display().to_string()).collect();
                            let data = format!("lowerdir={}", lower.join(":"));
                            vols.sys
                                .mount(
                                    Some(Path::new("overlay")),
                                    &dir,
                                    Some("overlay"),
                                    flags,
                                    Some(data.as_str()),
                                )
                                .map_err(|e| {
                                    SandboxError::sys(
                                        step("mount the image's layers (overlay)"),
                                        &dir,
                                        e,
                                    )
                                })?;
                            vols.tmpfs.push(dir.clone());
                        }
                    }
                    dir
                }
                VolumeKind::Files(files) => {
                    let dir = root.join(&v.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| SandboxError::io(step("create its directory"), &dir, e))?;
                    if files.secret {
                        // A Secret's values live in memory only, as the kubelet keeps them;
                        // the pod's state directory above is root's alone.
                        vols.sys
                            .mount(
                                Some(Path::new("tmpfs")),
                                &dir,
                                Some("tmpfs"),
                                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                                Some("mode=0755"),
                            )
                            .map_err(|e| SandboxError::sys(step("mount tmpfs"), &dir, e))?;
                        vols.tmpfs.push(dir.clone());
                    }
                    super::projected::write(&dir, files, facts, owner)
                        .map_err(|e| SandboxError::io(step("write its files"), &dir, e))?;
                    dir
                }
                VolumeKind::Claim { dir, claim } => {
                    let lock = claim_shared(claim)
                        .map_err(|e| SandboxError::io(step("lock the claim"), dir, e))?;
                    vols._claim_locks.push(lock);
                    if !dir.exists() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            SandboxError::io(step("create the claim's directory"), dir, e)
                        })?;
                        // As an emptyDir: any container user may write it.
                        use std::os::unix::fs::PermissionsExt;
                        let _ =
                            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
                    }
                    dir.clone()
                }
                VolumeKind::EmptyDir(e) => {
                    let dir = root.join(&v.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| SandboxError::io(step("create emptyDir"), &dir, e))?;
                    if e.medium == StorageMedium::Memory {
                        let mut data = "mode=0777".to_string();
                        // Sized by the plan (sizeLimit, bounded by the pod's memory limit).
                        if let Some(Some(size)) = plan.tmpfs_sizes.get(&v.name) {
                            data.push_str(&format!(",size={size}"));
                        }
                        vols.sys
                            .mount(
                                Some(Path::new("tmpfs")),
                                &dir,
                                Some("tmpfs"),
                                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                                Some(data.as_str()),
                            )
                            .map_err(|e| SandboxError::sys(step("mount tmpfs"), &dir, e))?;
                        vols.tmpfs.push(dir.clone());
                    } else {
                        // Kubernetes' own emptyDir is world-writable, so any container user can
                        // use it (the pod's directory above it is root's alone).
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
                VolumeKind::HostPath(h) => {
                    let p = PathBuf::from(&h.path);
                    device = h.kind.is_device();
                    match h.kind {
                        HostPathType::DirectoryOrCreate => {
                            std::fs::create_dir_all(&p).map_err(|e| {
                                SandboxError::io(step("create hostPath directory"), &p, e)
                            })?
                        }
                        HostPathType::FileOrCreate => create_file(&p)
                            .map_err(|e| SandboxError::io(step("create hostPath file"), &p, e))?,
                        HostPathType::Unset if !p.exists() => {
                            return Err(SandboxError::step(
                                step("hostPath"),
                                format!(
                                    "{} does not exist (set type: DirectoryOrCreate to create it)",
                                    p.display()
                                ),
                            ));
                        }
                        _ => {}
                    }
                    p
                }
            };
            // fsGroup: the pod's group owns its emptyDirs and claims (a hostPath is the
            // host's, as in Kubernetes; projected files get it as they are written).
            if let (
                Some((gid, on_root_mismatch)),
                VolumeKind::EmptyDir(_) | VolumeKind::Claim { .. },
            ) = (plan.fs_group, &v.kind)
            {
                // The group as the host numbers it (checked to be in the pod's range).
                let gid = owner.gid.unwrap_or(gid);
                let deep = super::ownership::give_group(&path, gid, false, on_root_mismatch)
                    .map_err(|e| SandboxError::io(step("give it to the fsGroup"), &path, e))?;
                if deep {
                    warnings.push(format!(
                        "volume {}: fsGroup was applied to part of it only (at most 128 levels and a million entries)",
                        v.name
                    ));
                }
            }
            let fd = open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| SandboxError::sys(step("open"), &path, e))?;
            let projected = matches!(v.kind, VolumeKind::Files(_));
            vols.volumes.insert(
                v.name.clone(),
                Volume {
                    path,
                    fd,
                    device,
                    projected,
                },
            );
        }
        Ok((vols, warnings))
    }

    /// Writes a projected volume's files again: `wpod apply` brought new ConfigMaps or
    /// Secrets. Readers see the old files or the new, never a mix.
    pub fn refresh(
        &self,
        name: &str,
        files: &Files,
        facts: &RuntimeFacts,
        fs_group: Option<u32>,
    ) -> Result<(), SandboxError> {
        let v = self
            .volumes
            .get(name)
            .ok_or_else(|| SandboxError::step(format!("volume {name}"), "not created"))?;
        let owner = super::projected::Owner::of(fs_group, self.ids);
        super::projected::write(&v.path, files, facts, owner)
            .map_err(|e| SandboxError::io(format!("volume {name}: write its files"), &v.path, e))
    }

    /// The host path of a volume, as the manifest named it (for messages).
    pub fn host_path(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(|v| v.path.as_path())
    }

    /// The volume as wpod opened it when the pod started.
    pub fn fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.volumes.get(name).map(|v| v.fd.as_fd())
    }

    /// A path through which another process (a container's shim) reaches exactly the volume
    /// wpod opened: `/proc/<wpod>/fd/N`.
    pub fn source_for_helpers(&self, name: &str) -> Option<PathBuf> {
        self.volumes.get(name).map(|v| {
            PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                v.fd.as_raw_fd()
            ))
        })
    }

    /// Whether wpod writes the volume's files (projected volumes): no container can.
    pub fn is_written_by_wpod(&self, name: &str) -> bool {
        self.volumes.get(name).is_some_and(|v| v.projected)
    }

    /// Whether the volume is a device the pod asked for (its node must open).
    pub fn is_device(&self, name: &str) -> bool {
        self.volumes.get(name).is_some_and(|v| v.device)
    }
}

/// The lock of claim `name`: `$WPOD_ROOT/volumes/.locks/NAME` (a name that starts with `.`
/// is never a claim's), never removed, so every process locks the same file.
fn claim_lock_file(claim: &str) -> std::io::Result<std::fs::File> {
    let dir = crate::files::private_state_dir("volumes/.locks").map_err(std::io::Error::other)?;
    crate::files::open_lock(&dir.join(claim))
}

fn flock(file: &std::fs::File, how: nix::fcntl::FlockArg) -> std::io::Result<()> {
    #[allow(deprecated)]
    nix::fcntl::flock(std::os::fd::AsRawFd::as_raw_fd(file), how).map_err(std::io::Error::from)
}

/// A shared lock on claim `name` for a pod that mounts it. A `wpod volume ls` or `rm` may
/// hold it exclusively for a moment: the pod waits for that, a few seconds at most.
fn claim_shared(claim: &str) -> std::io::Result<std::fs::File> {
    let file = claim_lock_file(claim)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match flock(&file, nix::fcntl::FlockArg::LockSharedNonblock) {
            Ok(()) => return Ok(file),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Whether a running pod mounts the claim `name`.
pub fn claim_in_use(name: &str) -> bool {
    claim_lock_exclusive(name).is_err()
}

/// The claim `name` locked for its removal; an error while a running pod mounts it.
pub fn claim_lock_exclusive(name: &str) -> std::io::Result<std::fs::File> {
    let file = claim_lock_file(name)?;
    flock(&file, nix::fcntl::FlockArg::LockExclusiveNonblock)?;
    Ok(file)
}

/// `FileOrCreate`: creates the file unless something is there, never through a symlink (a
/// dangling link planted there would make wpod, as root, create a file wherever it points).
fn create_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other(
                "a symlink is there (pointing nowhere): refusing to create a file through it",
            ),
            _ => e,
        })
}

impl PodVolumes {
    /// Each layer, ID-mapped through `userns` and attached on `dir/N` (unmounted with the pod,
    /// each as soon as it is attached).
    fn idmapped_layers(
        &mut self,
        layers: &[PathBuf],
        dir: &Path,
        userns: BorrowedFd<'_>,
    ) -> Result<Vec<PathBuf>, super::userns::IdmapError> {
        let mut out = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let at = dir.join(i.to_string());
            super::userns::idmap_onto(&*self.sys, layer, &at, userns)?;
            self.tmpfs.push(at.clone());
            out.push(at);
        }
        Ok(out)
    }
}

impl Drop for PodVolumes {
    fn drop(&mut self) {
        self.volumes.clear();
        for dir in &self.tmpfs {
            if let Err(e) = self.sys.umount2(dir, MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount a volume");
            }
        }
    }
}

impl crate::grants::OpenVolumes for PodVolumes {
    fn volume(&self, name: &str) -> Option<(&Path, BorrowedFd<'_>)> {
        self.host_path(name).zip(self.fd(name))
    }

    fn written_by_wpod(&self, name: &str) -> bool {
        self.is_written_by_wpod(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscall};

    fn plan(yaml: &str) -> PodPlan {
        let pods = crate::spec::parse(Path::new("pod.yaml"), yaml).expect("a valid pod");
        crate::plan::plan(&pods[0]).expect("a valid pod")
    }

    /// A memory emptyDir is a tmpfs sized by the plan, mounted nosuid and nodev, and unmounted
    /// with the pod; a disk one with a sizeLimit is said to be unlimited.
    #[test]
    fn emptydirs_are_mounted_as_planned_and_unmounted_with_the_pod() {
        let fake = Arc::new(RecordingSyscall::new("volumes", &[]));
        let plan = plan(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: /
    command: [sleep, "1"]
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: cache, mountPath: /cache}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
  - name: scratch
    emptyDir: {sizeLimit: 1Gi}
"#,
        );
        let root = fake.path("volumes");
        let (volumes, warnings) =
            PodVolumes::create(fake.clone(), &plan, &root, &RuntimeFacts::default(), None).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0]
            .starts_with("volume scratch: sizeLimit is enforced only for medium: Memory"));
        let cache = root.join("cache");
        assert_eq!(
            fake.calls(),
            [Call::Mount {
                source: Some("tmpfs".into()),
                target: cache.clone(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: Some(format!("mode=0777,size={}", 16 << 20)),
            }]
        );
        assert!(volumes.host_path("scratch").is_some_and(|p| p.is_dir()));
        drop(volumes);
        assert_eq!(
            fake.calls().last(),
            Some(&Call::Umount2 {
                target: cache,
                flags: MntFlags::MNT_DETACH
            })
        );
    }

    /// A hostPath of no type that does not exist fails the pod, naming the fix.
    #[test]
    fn a_missing_host_path_is_refused_with_the_fix() {
        let fake = Arc::new(RecordingSyscall::new("volumes-missing", &[]));
        let missing = fake.path("not-there");
        let plan = plan(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: main
    image: /
    command: [sleep, "1"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    hostPath: {{path: {}}}
"#,
            missing.display()
        ));
        let e = match PodVolumes::create(
            fake.clone(),
            &plan,
            &fake.path("volumes"),
            &RuntimeFacts::default(),
            None,
        ) {
            Ok(_) => panic!("a missing hostPath was accepted"),
            Err(e) => crate::error::chain(&e),
        };
        assert!(
            e.contains("does not exist (set type: DirectoryOrCreate to create it)"),
            "{e}"
        );
        assert!(fake.calls().is_empty());
    }
}
