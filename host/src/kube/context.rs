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
    pub fn open(mounts: &[FsMount]) -> Result<Self, ContextError> {
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
            dirs.push((PathBuf::from(path), fd));
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
/// of its interfaces: the pod's IPs), the resolv.conf its runtime wrote, the pod's host
/// aliases, and its hostname.
pub fn pod_net(aliases: Vec<(IpAddr, Vec<String>)>) -> PodNet {
    PodNet {
        ips: pod_ips(),
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
