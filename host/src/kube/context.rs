//! What a container already inside a pod gives its Wasm sidecar: the volumes its runtime
//! mounted at their mountPaths, and the pod's network as the container sees it. Nothing here
//! creates or joins anything: the container runtime made the pod; wpod only finds its parts and
//! refuses a grant the container does not back.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::grants::fs::FsMount;
use crate::grants::net::dns::parse_resolv;
use crate::grants::net::PodNet;

/// A volumeMount the container does not back.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "volumeMount {path}: cannot open it in this container (the container runtime mounts \
         each volumeMount of the sidecar's container at its mountPath; one reached through a \
         symlink is refused)"
    )]
    Open {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "volumeMount {path}: nothing is mounted there in this container (it is a directory of \
         the container's own filesystem); run the sidecar in a container whose spec mounts \
         the volume at {path}, as `wpod kube generate` writes it"
    )]
    NotAMount { path: String },
    #[error(
        "volumeMount {path}: {inside} is mounted inside it, and the sidecar would reach it \
         through its volume ({what}); mount the volume where nothing else of the container is \
         mounted below it"
    )]
    MountBelow {
        path: String,
        inside: String,
        what: String,
    },
    #[error(
        "volumeMount {path}: the runner's own {what} {inside} lies inside it, where the \
         sidecar could read or replace it; mount the volume elsewhere"
    )]
    RunnerFile {
        path: String,
        what: &'static str,
        inside: String,
    },
    #[error(
        "volumeMount {path}: the manifest says readOnly, but it is mounted read-write in this \
         container; mount it read-only (as the kubelet does for readOnly: true)"
    )]
    Writable { path: String },
    #[error(
        "volumeMount {path}: it is mounted with shared or slave propagation, so what is \
         mounted under it outside the container later would appear in it; mount it private (as \
         the kubelet does unless mountPropagation asks otherwise)"
    )]
    Propagation { path: String },
    #[error("volumeMount {path}: cannot read the container's mount table: {source}")]
    Mounts {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The sidecar's volumes, keyed by mountPath (see `plan::in_container`), each opened once at
/// start without following any link, and checked to be a mount of its own.
pub struct ContainerVolumes {
    dirs: Vec<(PathBuf, OwnedFd)>,
}

impl ContainerVolumes {
    /// Opens and checks each volume. None may hold, below its mountPath, a mount that is not
    /// itself one of the sidecar's volumes (the container's /etc/hosts, a ServiceAccount
    /// token, the runner's state directory: cap-std crosses mounts, and the guest would reach
    /// them), nor any of the runner's own files in `protected` (what it is, and its path).
    pub fn open(
        mounts: &[FsMount],
        protected: &[(&'static str, &Path)],
    ) -> Result<Self, ContextError> {
        let table = crate::mounts::table().map_err(|source| ContextError::Mounts {
            path: mounts.first().map(|m| m.guest.clone()).unwrap_or_default(),
            source,
        })?;
        let mut dirs = Vec::new();
        for m in mounts {
            let path = m.volume.clone();
            let fd = open_no_links(Path::new(&path)).map_err(|source| ContextError::Open {
                path: path.clone(),
                source,
            })?;
            let id =
                crate::mounts::mount_id(fd.as_fd()).map_err(|source| ContextError::Mounts {
                    path: path.clone(),
                    source,
                })?;
            // The mount the directory lies on must be mounted at that very path: a directory
            // of the image (or of another volume) is not the volume the manifest names.
            let mounted_here = table
                .iter()
                .any(|t| t.id == id && t.mount_point == Path::new(&path));
            if !mounted_here {
                return Err(ContextError::NotAMount { path });
            }
            // `readOnly: true` must be the kernel's too: a sidecar whose read-write volume holds
            // this one could otherwise write here through it.
            if m.read_only {
                let flags = nix::sys::statvfs::fstatvfs(&fd).map(|v| v.flags());
                if !flags.is_ok_and(|f| f.contains(nix::sys::statvfs::FsFlags::ST_RDONLY)) {
                    return Err(ContextError::Writable { path });
                }
            }
            // Checked once, at start: a volume that receives mounts made outside would show the
            // guest what is mounted there later.
            if table.iter().any(|t| t.id == id && t.receives_mounts) {
                return Err(ContextError::Propagation { path });
            }
            // A kernel filesystem as the volume itself: /proc would be the runner's memory.
            if let Some(k) = table.iter().find(|t| {
                t.id == id && crate::mounts::KERNEL_FILESYSTEMS.contains(&t.fstype.as_str())
            }) {
                return Err(ContextError::MountBelow {
                    path: path.clone(),
                    inside: path,
                    what: format!("the kernel filesystem {}", k.fstype),
                });
            }
            dirs.push((PathBuf::from(path), fd));
        }
        let volumes: Vec<&Path> = dirs.iter().map(|(p, _)| p.as_path()).collect();
        for v in &volumes {
            let below = table.iter().find(|t| {
                t.mount_point.starts_with(v)
                    && t.mount_point != *v
                    && !volumes.contains(&t.mount_point.as_path())
            });
            if let Some(t) = below {
                return Err(ContextError::MountBelow {
                    path: v.display().to_string(),
                    inside: t.mount_point.display().to_string(),
                    what: t.fstype.clone(),
                });
            }
            for (what, file) in protected {
                let real = crate::files::resolve_existing(file);
                if real.starts_with(v) || file.starts_with(v) {
                    return Err(ContextError::RunnerFile {
                        path: v.display().to_string(),
                        what,
                        inside: file.display().to_string(),
                    });
                }
            }
        }
        Ok(ContainerVolumes { dirs })
    }
}

/// `path` (absolute) opened as a directory (`O_PATH`), following no symlink and no magic link
/// on the way.
fn open_no_links(path: &Path) -> Result<OwnedFd, nix::Error> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    if !path.is_absolute() {
        return Err(nix::Error::EINVAL);
    }
    openat2(nix::fcntl::AT_FDCWD, path, how)
}

impl crate::grants::OpenVolumes for ContainerVolumes {
    fn volume(&self, name: &str) -> Option<(&Path, BorrowedFd<'_>)> {
        self.dirs
            .iter()
            .find(|(p, _)| p == Path::new(name))
            .map(|(p, fd)| (p.as_path(), fd.as_fd()))
    }
}

/// The pod's network as this container sees it: its addresses (every up, non-loopback address
/// of its interfaces: the pod's IPs; none on the host's network, whose addresses are the
/// node's, as in a wpod pod), the resolv.conf its runtime wrote, the pod's host aliases, and
/// its hostname.
pub fn pod_net(aliases: Vec<(IpAddr, Vec<String>)>, host_network: bool) -> PodNet {
    PodNet {
        ips: match host_network {
            true => Vec::new(),
            false => pod_ips(),
        },
        resolv: parse_resolv(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
        aliases,
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    }
}

/// Every up, non-loopback address of this network namespace (IPv4 first).
pub fn pod_ips() -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter(|a| {
            a.flags.contains(InterfaceFlags::IFF_UP)
                && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips
}
