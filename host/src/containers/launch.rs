//! What `wpod` tells a container shim to set up: an OCI runtime config (`config.json`, the
//! runtime spec's types from `oci-spec`), written by the runtime and read by the shim
//! (`wpod __container FILE`) and by `wpod __exec`. Everything is decided by the runtime; the
//! shim only applies it.
//!
//! The shim implements a subset of the runtime spec, and [`LaunchSpec::from_oci`] checks a
//! config against it before anything is set up: a field it would not honour is refused by
//! name, never ignored. What the config holds, and how wpod's shim reads it:
//! - `process`: `args`, `env`, `cwd`, `user` (uid, gid and additional groups),
//!   `capabilities` (the bounding set; effective and permitted are the same set for uid 0 and
//!   empty otherwise, inheritable and ambient empty), `noNewPrivileges`.
//! - `root`: `path` is the directory the shim assembles the root in: a private tmpfs holding
//!   an overlay of the read-only layers `io.wpod.rootfs.lowers` (topmost first; the image's
//!   unpacked layers, a rootfs directory or the host's `/`) and a writable layer; `readonly`.
//! - `mounts`: first the standard ones, exactly as the shim makes them ([`standard_mounts`]:
//!   `/proc` (the pod's, bound, when the PID namespace is shared), `/dev` and its basic
//!   devices, `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys` and `/tmp` unless the root is
//!   read-only); then the volumes, `bind` mounts with `rbind` and `ro`/`rw`, `nosuid` and
//!   `nodev` unless the volume is a device, `nosymfollow` for volumes a Wasm sidecar shares.
//! - `linux.namespaces`: `network`, `uts` and `ipc` joined by path; `pid` joined (the pod's
//!   shared one) or new; `mount` new. `linux.maskedPaths` and `linux.readonlyPaths` are
//!   runc's and containerd's, as the shim applies them; `linux.rootfsPropagation` is
//!   `private`; `linux.seccomp` is the profile the plan resolved for this container.
//! - The cgroup is created by the sandbox beforehand (on every hierarchy of a hybrid host),
//!   so the config names the `cgroup.procs` files the shim joins, `io.wpod.cgroup.procs`,
//!   rather than `linux.cgroupsPath` and `linux.resources`.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxIdMapping, LinuxNamespace,
    LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, Mount, Process, Root, Spec, User,
};
use serde::{Deserialize, Serialize};

use crate::helper::StepError;
use crate::sandbox::cgroups;
use crate::sandbox::namespaces::{NamespacePaths, PodUserNs, SharedPid};
use crate::sandbox::userns::IdMap;
use crate::sys::LinuxSyscall;

/// File descriptor number of the shim's report pipe (the lifeline is `helper::LIFELINE_FD`).
pub const REPORT_FD: i32 = 4;

/// Exit code of a shim that could not set the container up (as in podman/crun).
pub const EXIT_SETUP_FAILED: i32 = 125;

/// The runtime spec version of the configs wpod writes (oci-spec's).
pub const OCI_VERSION: &str = oci_spec::runtime::VERSION;

/// Annotations wpod's shim reads (`io.wpod.*`), beside the pod's and container's names.
pub const POD_ANNOTATION: &str = "io.wpod.pod";
pub const CONTAINER_ANNOTATION: &str = "io.wpod.container";
pub const LOWERS_ANNOTATION: &str = "io.wpod.rootfs.lowers";
pub const CGROUP_ANNOTATION: &str = "io.wpod.cgroup.procs";

/// Paths of /proc and /sys a container never sees (runc's and containerd's masked paths).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths of /proc a container sees read-only.
pub const READ_ONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The host's device nodes bound into every container's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A container as the shim sets it up: a config decoded and checked once
/// ([`LaunchSpec::from_oci`]), or the runtime's description before it is written
/// ([`LaunchSpec::to_oci`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub pod: String,
    pub container: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub namespaces: NamespacePaths,
    pub rootfs: RootfsSpec,
    pub mounts: Vec<BindMount>,
    pub security: SecuritySpec,
    /// `cgroup.procs` files the shim joins before anything else, so the container is counted
    /// and limited from its first instruction.
    pub cgroup_procs: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsSpec {
    /// The read-only lower layers, topmost first: `/` for a host container, the directory of a
    /// rootfs image, or an OCI image's unpacked layers.
    pub lowers: Vec<PathBuf>,
    /// A directory the shim may mount over (a tmpfs holding the writable layer and the root).
    pub scratch: PathBuf,
    pub read_only: bool,
}

/// A volume bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The volume, by descriptor: `/proc/<wpod>/fd/N` of the directory (or file) wpod opened
    /// when the pod started, so a path swapped for a symlink since leads nowhere new.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
    /// Symlinks inside are not followed: the volume is shared with a Wasm sidecar that may
    /// write links pointing out of it.
    pub no_follow_symlinks: bool,
    /// A hostPath of type CharDevice or BlockDevice: its device node must open (no `nodev`).
    pub device: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecuritySpec {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the pod's `supplementalGroups` and `fsGroup`).
    pub additional_gids: Vec<u32>,
    /// The capability bounding set, e.g. `CAP_CHOWN`; everything else is dropped.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    /// The seccomp profile the plan resolved for this container (RuntimeDefault unless
    /// Unconfined or Localhost), compiled by the shim; `None`: unconfined.
    pub seccomp: Option<LinuxSeccomp>,
}

/// What a shim tells the runtime, one JSON object per line on [`REPORT_FD`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Report {
    /// The container's program was exec'ed; `pid` as seen from the host.
    Started { pid: i32 },
    /// Setting the container up failed at `step`.
    Failed { step: String, error: String },
}

/// Why a config is not one wpod's shim runs.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is not supported by wpod's shim")]
    Unsupported(String),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
    #[error("annotation {key}")]
    Annotation {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> LaunchError {
    LaunchError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(strings(options)));
    m
}

/// The mounts every container gets, in the order the shim makes them (`rootfs.rs`): `/proc`
/// (the pod's procfs, bound, when `pod_proc` is given), `/dev` with the host's basic devices,
/// `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys`, and `/tmp` unless the root is read-only.
pub fn standard_mounts(read_only: bool, pod_proc: Option<&Path>) -> Vec<Mount> {
    let mut mounts = vec![match pod_proc {
        Some(proc) => mount(
            "/proc",
            "bind",
            proc,
            &["bind", "nosuid", "noexec", "nodev"],
        ),
        None => mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    }];
    mounts.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "strictatime", "mode=755", "size=65536k"],
    ));
    for name in DEVICES {
        let path = format!("/dev/{name}");
        mounts.push(mount(&path, "bind", &path, &["bind"]));
    }
    mounts.push(mount(
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    ));
    mounts.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ));
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ));
    mounts.push(mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ));
    if !read_only {
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        ));
    }
    mounts
}

impl BindMount {
    fn to_oci(&self) -> Mount {
        let mut options = vec!["rbind", if self.read_only { "ro" } else { "rw" }];
        if !self.device {
            options.extend(["nosuid", "nodev"]);
        }
        if self.no_follow_symlinks {
            options.push("nosymfollow");
        }
        mount(&self.target, "bind", &self.source, &options)
    }

    fn from_oci(m: &Mount) -> Result<BindMount, LaunchError> {
        let target = m.destination().to_string_lossy().into_owned();
        let field = format!("mounts[{target}]");
        if m.typ().as_deref() != Some("bind") {
            return Err(invalid(
                &field,
                format!(
                    "type {:?}: wpod's shim mounts volumes as binds",
                    m.typ().as_deref().unwrap_or_default()
                ),
            ));
        }
        if !target.starts_with('/') {
            return Err(invalid(&field, "the destination must be absolute"));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(LaunchError::Unsupported(format!("{field}.uidMappings")));
        }
        let source = m
            .source()
            .clone()
            .ok_or_else(|| invalid(&field, "no source"))?;
        let options = m.options().clone().unwrap_or_default();
        let has = |o: &str| options.iter().any(|x| x == o);
        for o in &options {
            if !["rbind", "ro", "rw", "nosuid", "nodev", "nosymfollow"].contains(&o.as_str()) {
                return Err(LaunchError::Unsupported(format!("{field} option {o}")));
            }
        }
        if !has("rbind") || has("ro") == has("rw") {
            return Err(invalid(&field, "a volume is rbind, and either ro or rw"));
        }
        // The shim sets nosuid and nodev together, except on a device the pod asked for.
        if has("nosuid") != has("nodev") {
            return Err(invalid(&field, "nosuid and nodev go together"));
        }
        Ok(BindMount {
            source,
            target,
            read_only: has("ro"),
            no_follow_symlinks: has("nosymfollow"),
            device: !has("nodev"),
        })
    }
}

/// The capabilities the kernel names (`CAP_KILL`) as the runtime spec's values.
fn capabilities(names: &[String]) -> Result<Capabilities, LaunchError> {
    names
        .iter()
        .map(|n| {
            n.strip_prefix("CAP_")
                .and_then(|bare| bare.parse::<Capability>().ok())
                .ok_or_else(|| invalid("process.capabilities", format!("unknown capability {n}")))
        })
        .collect()
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path.map(Path::to_path_buf));
    ns
}

fn annotation<T: serde::de::DeserializeOwned>(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, LaunchError> {
    let text = annotations.get(key).ok_or(LaunchError::Missing(key))?;
    serde_json::from_str(text).map_err(|source| LaunchError::Annotation { key, source })
}

/// `linux.seccomp` as the shim compiles it: the native ABI only, no agent, no filter flags.
fn checked_seccomp(seccomp: LinuxSeccomp) -> Result<LinuxSeccomp, LaunchError> {
    let unsupported = |field: &str| Err(LaunchError::Unsupported(format!("linux.seccomp.{field}")));
    if seccomp
        .architectures()
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        // Calls through another ABI are killed (containers/seccomp.rs), whatever the list says.
        return unsupported("architectures (the native ABI only is filtered)");
    }
    if seccomp.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported("flags");
    }
    if seccomp.listener_path().is_some() || seccomp.listener_metadata().is_some() {
        return unsupported("listenerPath (a seccomp agent)");
    }
    let notify = LinuxSeccompAction::ScmpActNotify;
    if seccomp.default_action() == notify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == notify)
    {
        return unsupported("SCMP_ACT_NOTIFY (a seccomp agent)");
    }
    Ok(seccomp)
}

/// The pod's ID maps, as wpod writes them: one line each for users and groups, from the
/// pod's 0, of the same size (the user namespace exists already; the shim only checks that
/// the config says what it is).
fn id_map(
    uids: &Option<Vec<LinuxIdMapping>>,
    gids: &Option<Vec<LinuxIdMapping>>,
) -> Result<IdMap, LaunchError> {
    let one = |maps: &Option<Vec<LinuxIdMapping>>, field: &str| match maps.as_deref() {
        Some([m]) if m.container_id() == 0 && m.size() > 0 => Ok(*m),
        _ => Err(invalid(
            field,
            "one mapping from the pod's ID 0, as the pod's user namespace has",
        )),
    };
    let (u, g) = (
        one(uids, "linux.uidMappings")?,
        one(gids, "linux.gidMappings")?,
    );
    if u.size() != g.size() {
        return Err(invalid(
            "linux.gidMappings",
            "as many groups as users (the pod's user namespace maps both alike)",
        ));
    }
    Ok(IdMap {
        host_uid: u.host_id(),
        host_gid: g.host_id(),
        size: u.size(),
    })
}

impl LaunchSpec {
    /// The launch config the runtime wrote for a helper (the shim, or `__exec`), checked.
    pub fn read(path: &Path) -> Result<Self, StepError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StepError::io("read launch config", path, e))?;
        // Not `serde_json::from_str::<Spec>`: see `launch_read` (the same `Spec`, without
        // linking the regex crate into every helper).
        let checked = super::launch_read::spec(&text).and_then(|spec| Ok(Self::from_oci(spec)?));
        checked.map_err(|e| {
            StepError::msg(
                format!("launch config {}", path.display()),
                crate::error::chain(&e),
            )
        })
    }

    /// This container as an OCI runtime config.
    pub fn to_oci(&self) -> Result<Spec, LaunchError> {
        let caps = capabilities(&self.security.capabilities)?;
        let mut linux_caps = LinuxCapabilities::default();
        let (live, none) = (
            if self.security.uid == 0 {
                caps.clone()
            } else {
                Capabilities::new()
            },
            Capabilities::new(),
        );
        linux_caps
            .set_bounding(Some(caps))
            .set_effective(Some(live.clone()))
            .set_permitted(Some(live))
            .set_inheritable(Some(none.clone()))
            .set_ambient(Some(none));
        let mut user = User::default();
        user.set_uid(self.security.uid).set_gid(self.security.gid);
        if !self.security.additional_gids.is_empty() {
            user.set_additional_gids(Some(self.security.additional_gids.clone()));
        }
        let mut process = Process::default();
        process
            .set_terminal(None)
            .set_user(user)
            .set_args(Some(self.argv.clone()))
            .set_env(Some(
                self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ))
            .set_cwd(PathBuf::from(self.cwd.as_deref().unwrap_or("/")))
            .set_capabilities(Some(linux_caps))
            .set_rlimits(None)
            .set_no_new_privileges(Some(self.security.no_new_privs));

        let mut root = Root::default();
        root.set_path(self.rootfs.scratch.clone())
            .set_readonly(Some(self.rootfs.read_only));

        let ns = &self.namespaces;
        let pod_proc = ns.pid.as_ref().map(|p| p.proc.as_path());
        let mut mounts = standard_mounts(self.rootfs.read_only, pod_proc);
        mounts.extend(self.mounts.iter().map(BindMount::to_oci));

        let mut namespaces = vec![
            namespace(LinuxNamespaceType::Network, Some(&ns.net)),
            namespace(LinuxNamespaceType::Uts, Some(&ns.uts)),
            namespace(LinuxNamespaceType::Ipc, Some(&ns.ipc)),
            namespace(
                LinuxNamespaceType::Pid,
                ns.pid.as_ref().map(|p| p.ns.as_path()),
            ),
            namespace(LinuxNamespaceType::Mount, None),
        ];
        let mut linux = Linux::default();
        if let Some(user) = &ns.user {
            namespaces.push(namespace(LinuxNamespaceType::User, Some(&user.ns)));
            let mapping = |host: u32| {
                oci_spec::runtime::LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(host)
                    .size(user.ids.size)
                    .build()
                    .map(|m| vec![m])
                    .map_err(|e| invalid("linux.uidMappings", e.to_string()))
            };
            linux
                .set_uid_mappings(Some(mapping(user.ids.host_uid)?))
                .set_gid_mappings(Some(mapping(user.ids.host_gid)?));
        }
        linux
            .set_resources(None)
            .set_namespaces(Some(namespaces))
            .set_masked_paths(Some(strings(MASKED_PATHS)))
            .set_readonly_paths(Some(strings(READ_ONLY_PATHS)))
            .set_rootfs_propagation(Some("private".into()))
            .set_seccomp(self.security.seccomp.clone());

        let json = |key: &'static str, paths: &[PathBuf]| {
            serde_json::to_string(paths).map_err(|source| LaunchError::Annotation { key, source })
        };
        let annotations = HashMap::from([
            (POD_ANNOTATION.to_string(), self.pod.clone()),
            (CONTAINER_ANNOTATION.to_string(), self.container.clone()),
            (
                LOWERS_ANNOTATION.to_string(),
                json(LOWERS_ANNOTATION, &self.rootfs.lowers)?,
            ),
            (
                CGROUP_ANNOTATION.to_string(),
                json(CGROUP_ANNOTATION, &self.cgroup_procs)?,
            ),
        ]);

        let mut spec = Spec::default();
        spec.set_version(OCI_VERSION.to_string())
            .set_hostname(None)
            .set_root(Some(root))
            .set_process(Some(process))
            .set_mounts(Some(mounts))
            .set_linux(Some(linux))
            .set_annotations(Some(annotations));
        Ok(spec)
    }

    /// The container a config describes, if wpod's shim can set it up as written: every
    /// field the shim would not honour is refused by name.
    pub fn from_oci(spec: Spec) -> Result<Self, LaunchError> {
        let unsupported = |field: &str| Err(LaunchError::Unsupported(field.to_string()));
        if !spec.version().starts_with("1.") {
            return Err(invalid(
                "ociVersion",
                format!("{}: wpod's shim reads 1.x", spec.version()),
            ));
        }
        for (set, field) in [
            (spec.hooks().is_some(), "hooks"),
            (
                spec.hostname().is_some(),
                "hostname (the pod's UTS namespace is joined)",
            ),
            (spec.domainname().is_some(), "domainname"),
            (spec.solaris().is_some(), "solaris"),
            (spec.windows().is_some(), "windows"),
            (spec.vm().is_some(), "vm"),
            (spec.zos().is_some(), "zos"),
            (spec.uid_mappings().is_some(), "uidMappings"),
            (spec.gid_mappings().is_some(), "gidMappings"),
        ] {
            if set {
                return unsupported(field);
            }
        }

        let process = spec
            .process()
            .as_ref()
            .ok_or(LaunchError::Missing("process"))?;
        for (set, field) in [
            (process.terminal() == Some(true), "process.terminal"),
            (process.console_size().is_some(), "process.consoleSize"),
            (process.command_line().is_some(), "process.commandLine"),
            (
                process.rlimits().as_ref().is_some_and(|r| !r.is_empty()),
                "process.rlimits",
            ),
            (
                process.apparmor_profile().is_some(),
                "process.apparmorProfile",
            ),
            (process.oom_score_adj().is_some(), "process.oomScoreAdj"),
            (process.selinux_label().is_some(), "process.selinuxLabel"),
            (process.io_priority().is_some(), "process.ioPriority"),
            (process.scheduler().is_some(), "process.scheduler"),
            (
                process.exec_cpu_affinity().is_some(),
                "process.execCPUAffinity",
            ),
            (process.user().umask().is_some(), "process.user.umask"),
            (process.user().username().is_some(), "process.user.username"),
        ] {
            if set {
                return unsupported(field);
            }
        }
        let argv = process.args().clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(invalid("process.args", "empty: nothing to run"));
        }
        let env = process
            .env()
            .iter()
            .flatten()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| invalid("process.env", format!("{kv:?} is not NAME=VALUE")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = process.cwd().to_string_lossy().into_owned();
        if !cwd.starts_with('/') {
            return Err(invalid("process.cwd", "must be absolute"));
        }
        let (uid, gid) = (process.user().uid(), process.user().gid());
        let caps = process
            .capabilities()
            .as_ref()
            .ok_or(LaunchError::Missing("process.capabilities"))?;
        let bounding = caps.bounding().clone().unwrap_or_default();
        let live = if uid == 0 {
            bounding.clone()
        } else {
            Capabilities::new()
        };
        for (set, want, field) in [
            (caps.effective(), &live, "process.capabilities.effective"),
            (caps.permitted(), &live, "process.capabilities.permitted"),
            (
                caps.inheritable(),
                &Capabilities::new(),
                "process.capabilities.inheritable",
            ),
            (
                caps.ambient(),
                &Capabilities::new(),
                "process.capabilities.ambient",
            ),
        ] {
            if set.as_ref().unwrap_or(&Capabilities::new()) != want {
                return Err(invalid(
                    field,
                    "wpod's shim keeps the bounding set for uid 0 and nothing for other users",
                ));
            }
        }
        let mut capabilities: Vec<String> = bounding.iter().map(|c| format!("CAP_{c}")).collect();
        capabilities.sort();

        let root = spec.root().as_ref().ok_or(LaunchError::Missing("root"))?;
        let read_only = root.readonly().unwrap_or(false);

        let linux = spec.linux().as_ref().ok_or(LaunchError::Missing("linux"))?;
        for (set, field) in [
            (
                linux.resources().is_some(),
                "linux.resources (the sandbox makes the cgroup)",
            ),
            (
                linux.cgroups_path().is_some(),
                "linux.cgroupsPath (the sandbox makes the cgroup)",
            ),
            (
                linux.devices().as_ref().is_some_and(|d| !d.is_empty()),
                "linux.devices",
            ),
            (
                linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()),
                "linux.sysctl",
            ),
            (linux.net_devices().is_some(), "linux.netDevices"),
            (linux.intel_rdt().is_some(), "linux.intelRdt"),
            (linux.memory_policy().is_some(), "linux.memoryPolicy"),
            (linux.personality().is_some(), "linux.personality"),
            (linux.time_offsets().is_some(), "linux.timeOffsets"),
            (linux.mount_label().is_some(), "linux.mountLabel"),
            (
                linux
                    .rootfs_propagation()
                    .as_deref()
                    .is_some_and(|p| p != "private"),
                "linux.rootfsPropagation other than private",
            ),
        ] {
            if set {
                return unsupported(field);
            }
        }
        if linux.masked_paths().as_deref().unwrap_or_default() != strings(MASKED_PATHS)
            || linux.readonly_paths().as_deref().unwrap_or_default() != strings(READ_ONLY_PATHS)
        {
            return Err(invalid(
                "linux.maskedPaths, linux.readonlyPaths",
                "wpod's shim masks runc's paths, as listed in containers/launch.rs",
            ));
        }
        let (mut net, mut uts, mut ipc, mut pid, mut mnt) = (None, None, None, None, false);
        let mut user = None;
        for ns in linux.namespaces().iter().flatten() {
            let path = ns.path().clone();
            let field = format!("linux.namespaces[{}]", ns.typ());
            let joined = |slot: &mut Option<PathBuf>| match (&path, slot.is_some()) {
                (Some(p), false) => {
                    *slot = Some(p.clone());
                    Ok(())
                }
                (None, _) => Err(invalid(&field, "joined by path: the pod's")),
                (Some(_), true) => Err(invalid(&field, "given twice")),
            };
            match ns.typ() {
                LinuxNamespaceType::Network => joined(&mut net)?,
                LinuxNamespaceType::Uts => joined(&mut uts)?,
                LinuxNamespaceType::Ipc => joined(&mut ipc)?,
                LinuxNamespaceType::User => joined(&mut user)?,
                LinuxNamespaceType::Pid if pid.is_none() => pid = Some(path),
                LinuxNamespaceType::Mount if !mnt && path.is_none() => mnt = true,
                LinuxNamespaceType::Pid | LinuxNamespaceType::Mount => {
                    return Err(invalid(&field, "given twice, or a mount namespace by path"))
                }
                _ => return unsupported(&field),
            }
        }
        let missing = |what: &'static str| LaunchError::Missing(what);
        let net = net.ok_or(missing("linux.namespaces[network]"))?;
        let uts = uts.ok_or(missing("linux.namespaces[uts]"))?;
        let ipc = ipc.ok_or(missing("linux.namespaces[ipc]"))?;
        let pid = pid.ok_or(missing("linux.namespaces[pid]"))?;
        if !mnt {
            return Err(missing("linux.namespaces[mount]"));
        }
        let user = user
            .map(|ns| {
                Ok::<_, LaunchError>(PodUserNs {
                    ns,
                    ids: id_map(linux.uid_mappings(), linux.gid_mappings())?,
                })
            })
            .transpose()?;
        if user.is_none()
            && (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()))
        {
            return Err(invalid(
                "linux.uidMappings, linux.gidMappings",
                "only with the pod's user namespace (linux.namespaces[user])",
            ));
        }

        let mounts = spec.mounts().clone().unwrap_or_default();
        let pod_proc = match mounts.first() {
            Some(m)
                if m.destination() == Path::new("/proc") && m.typ().as_deref() == Some("bind") =>
            {
                m.source().clone()
            }
            _ => None,
        };
        let shared = match (pid, pod_proc) {
            (Some(ns), Some(proc)) => Some(SharedPid { ns, proc }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "mounts[/proc]",
                    "the pod's /proc is bound exactly when its PID namespace is joined",
                ))
            }
        };
        let standard = standard_mounts(read_only, shared.as_ref().map(|s| s.proc.as_path()));
        if mounts.len() < standard.len() || mounts[..standard.len()] != standard[..] {
            return Err(invalid(
                "mounts",
                "the standard mounts come first, as wpod's shim makes them (launch::standard_mounts)",
            ));
        }
        let binds = mounts[standard.len()..]
            .iter()
            .map(BindMount::from_oci)
            .collect::<Result<Vec<_>, _>>()?;

        let annotations = spec.annotations().clone().unwrap_or_default();
        let name = |key: &'static str| annotations.get(key).cloned().ok_or(missing(key));
        Ok(LaunchSpec {
            pod: name(POD_ANNOTATION)?,
            container: name(CONTAINER_ANNOTATION)?,
            argv,
            env,
            cwd: Some(cwd),
            namespaces: NamespacePaths {
                net,
                uts,
                ipc,
                pid: shared,
                user,
            },
            rootfs: RootfsSpec {
                lowers: annotation(&annotations, LOWERS_ANNOTATION)?,
                scratch: root.path().clone(),
                read_only,
            },
            mounts: binds,
            security: SecuritySpec {
                uid,
                gid,
                additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
                capabilities,
                no_new_privs: process.no_new_privileges().unwrap_or(false),
                seccomp: linux.seccomp().clone().map(checked_seccomp).transpose()?,
            },
            cgroup_procs: annotation(&annotations, CGROUP_ANNOTATION)?,
        })
    }

    /// Moves the calling process into the container's cgroups, so it is counted and limited
    /// from its next instruction. The shim and `__exec` have one thread: on v1 hierarchies
    /// that thread moves alone, without the kernel's lock for moves and its wait
    /// ([`cgroups::join_process`]).
    pub fn join_cgroups(&self) -> Result<(), StepError> {
        let single_threaded = cgroups::single_threaded();
        for procs in &self.cgroup_procs {
            cgroups::join_process(&LinuxSyscall, procs, single_threaded)
                .map_err(|e| StepError::io("join cgroup", procs, e))?;
        }
        Ok(())
    }
}

/// Replaces the calling process with `argv` in the container's environment. Returns only on
/// failure, with the exit code a shell would give (127 for a missing program, 126 for one that
/// cannot run) and the error.
pub fn exec(argv: &[String], env: &[(String, String)]) -> (i32, StepError) {
    let Some((program, args)) = argv.split_first() else {
        return (EXIT_SETUP_FAILED, StepError::msg("exec", "empty command"));
    };
    // The command sees no descriptor of the host's or wpod's beyond its stdio (a container's
    // process and an exec probe's or hook's command alike): whatever a helper inherited or
    // opened without close-on-exec stays behind. A failed exec still finds them open.
    // SAFETY: close_range only marks descriptors close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let err = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    (code, StepError::msg(format!("exec {program}"), err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Hooks, PosixRlimit};

    fn launch(shared: bool, read_only: bool) -> LaunchSpec {
        LaunchSpec {
            pod: "web".into(),
            container: "nginx".into(),
            argv: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            env: vec![("PATH".into(), "/bin".into()), ("EMPTY".into(), "".into())],
            cwd: Some("/srv".into()),
            namespaces: NamespacePaths {
                net: "/proc/7/ns/net".into(),
                uts: "/proc/7/ns/uts".into(),
                ipc: "/proc/7/ns/ipc".into(),
                pid: shared.then(|| SharedPid {
                    ns: "/proc/9/ns/pid".into(),
                    proc: "/run/wpod/web/proc".into(),
                }),
                user: None,
            },
            rootfs: RootfsSpec {
                lowers: vec!["/store/a".into(), "/store/b".into()],
                scratch: "/run/wpod/web/nginx/scratch".into(),
                read_only,
            },
            mounts: vec![
                BindMount {
                    source: "/proc/5/fd/12".into(),
                    target: "/data".into(),
                    read_only: true,
                    no_follow_symlinks: true,
                    device: false,
                },
                BindMount {
                    source: "/proc/5/fd/13".into(),
                    target: "/dev/fuse".into(),
                    read_only: false,
                    no_follow_symlinks: false,
                    device: true,
                },
            ],
            security: SecuritySpec {
                uid: 0,
                gid: 0,
                additional_gids: vec![10, 2000],
                capabilities: vec!["CAP_CHOWN".into(), "CAP_KILL".into()],
                no_new_privs: true,
                seccomp: Some(crate::plan::seccomp::Profile::runtime_default().resolve(
                    "amd64",
                    &[],
                    Some((6, 1)),
                )),
            },
            cgroup_procs: vec!["/sys/fs/cgroup/wpod/web/nginx/cgroup.procs".into()],
        }
    }

    /// Written as JSON and read back (as the shim does), the config gives the same container.
    fn round_trip(l: &LaunchSpec) -> Result<LaunchSpec, LaunchError> {
        let json = serde_json::to_string(&l.to_oci()?).unwrap();
        LaunchSpec::from_oci(super::super::launch_read::spec(&json).unwrap())
    }

    #[test]
    fn a_config_reads_back_as_written() {
        for (shared, read_only) in [(false, false), (true, true)] {
            let l = launch(shared, read_only);
            assert_eq!(round_trip(&l).unwrap(), l);
        }
        let mut user = launch(false, false);
        user.security.uid = 1000;
        user.security.gid = 1000;
        assert_eq!(round_trip(&user).unwrap(), user);
        // The pod's own user namespace: joined by path, its maps the runtime spec's.
        let mut own = launch(true, false);
        own.namespaces.user = Some(PodUserNs {
            ns: "/proc/7/ns/user".into(),
            ids: IdMap {
                host_uid: 1 << 30,
                host_gid: (1 << 30) + 65536,
                size: 65536,
            },
        });
        assert_eq!(round_trip(&own).unwrap(), own);
        let v = serde_json::to_value(own.to_oci().unwrap()).unwrap();
        assert_eq!(
            v["linux"]["uidMappings"],
            serde_json::json!([{"hostID": 1 << 30, "containerID": 0, "size": 65536}])
        );
        let namespaces = v["linux"]["namespaces"].as_array().unwrap();
        assert!(
            namespaces.contains(&serde_json::json!({"type": "user", "path": "/proc/7/ns/user"}))
        );
    }

    /// The config is a plain OCI runtime config: another runtime reads the same fields.
    #[test]
    fn the_config_is_the_runtime_spec() {
        let spec = launch(true, false).to_oci().unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["process"]["args"][2], "daemon off;");
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"]["path"], "/run/wpod/web/nginx/scratch");
        assert_eq!(v["mounts"][0]["destination"], "/proc");
        assert_eq!(v["mounts"][0]["source"], "/run/wpod/web/proc");
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(
            data["options"],
            serde_json::json!(["rbind", "ro", "nosuid", "nodev", "nosymfollow"])
        );
        let namespaces = v["linux"]["namespaces"].as_array().unwrap();
        assert!(namespaces.contains(&serde_json::json!({"type": "pid", "path": "/proc/9/ns/pid"})));
        assert!(namespaces.contains(&serde_json::json!({"type": "mount"})));
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(v["process"].get("rlimits").is_none() && v["linux"].get("resources").is_none());
    }

    /// What the shim would not honour is refused by name, before anything is set up.
    #[test]
    fn what_the_shim_cannot_do_is_refused() {
        let base = || launch(false, false).to_oci().unwrap();
        let refused = |spec: Spec| {
            LaunchSpec::from_oci(spec)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let mut hooks = base();
        hooks.set_hooks(Some(Hooks::default()));
        assert_eq!(refused(hooks), "hooks is not supported by wpod's shim");

        let mut rlimits = base();
        if let Some(p) = rlimits.process_mut() {
            p.set_rlimits(Some(vec![PosixRlimit::default()]));
        }
        assert!(refused(rlimits).contains("process.rlimits"));

        let mut user_ns = base();
        if let Some(l) = user_ns.linux_mut() {
            let mut ns = l.namespaces().clone().unwrap();
            ns.push(namespace(LinuxNamespaceType::User, None));
            l.set_namespaces(Some(ns));
        }
        assert!(refused(user_ns).contains("linux.namespaces[user]"));
        // Joined by path, but without the maps it has: refused.
        let mut unmapped = base();
        if let Some(l) = unmapped.linux_mut() {
            let mut ns = l.namespaces().clone().unwrap();
            ns.push(namespace(
                LinuxNamespaceType::User,
                Some(Path::new("/proc/7/ns/user")),
            ));
            l.set_namespaces(Some(ns));
        }
        assert!(refused(unmapped).contains("linux.uidMappings"));
        // Maps without the namespace: refused.
        let mut maps_only = base();
        if let Some(l) = maps_only.linux_mut() {
            l.set_uid_mappings(Some(vec![LinuxIdMapping::default()]));
        }
        assert!(refused(maps_only).contains("only with the pod's user namespace"));

        let mut no_net = base();
        if let Some(l) = no_net.linux_mut() {
            let ns = l.namespaces().clone().unwrap();
            l.set_namespaces(Some(ns[1..].to_vec()));
        }
        assert!(refused(no_net).contains("linux.namespaces[network] is missing"));

        let mut tmpfs_volume = base();
        if let Some(m) = tmpfs_volume.mounts_mut() {
            m.push(mount("/cache", "tmpfs", "tmpfs", &["nosuid"]));
        }
        assert!(refused(tmpfs_volume).contains("mounts[/cache]: type \"tmpfs\""));

        let mut no_dev = base();
        if let Some(m) = no_dev.mounts_mut() {
            m.retain(|m| m.destination() != Path::new("/dev"));
        }
        assert!(refused(no_dev).contains("the standard mounts come first"));

        let mut ambient = base();
        if let Some(p) = ambient.process_mut() {
            let mut caps = p.capabilities().clone().unwrap();
            caps.set_ambient(Some(capabilities(&["CAP_KILL".into()]).unwrap()));
            p.set_capabilities(Some(caps));
        }
        assert!(refused(ambient).contains("process.capabilities.ambient"));

        let mut agent = base();
        if let Some(l) = agent.linux_mut() {
            let mut seccomp = l.seccomp().clone().unwrap();
            seccomp.set_listener_path(Some("/run/agent.sock".into()));
            l.set_seccomp(Some(seccomp));
        }
        assert!(refused(agent).contains("linux.seccomp.listenerPath"));

        let mut unmasked = base();
        if let Some(l) = unmasked.linux_mut() {
            l.set_masked_paths(Some(vec![]));
        }
        assert!(refused(unmasked).contains("linux.maskedPaths"));
    }
}
