//! The manifest's string enums, decoded once: everything past `spec/` matches variants, never
//! Kubernetes spellings. The spellings stay in `Display` (and serde) and in the errors, which
//! name the field and the values it takes.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::decode::{did_you_mean, loc_of, Decode, Decoder, Node};

/// Declares a Kubernetes string enum: its variants with their spellings, `as_str`, `Display`,
/// and a `Decode` that reports any other value with the type's own `unsupported` message.
macro_rules! spelled_enum {
    ($(#[$doc:meta])* pub enum $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, with its Kubernetes spelling.
            pub const ALL: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Decode for $name {
            fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
                let text = String::decode(d, node, path)?;
                match Self::ALL.iter().find(|(s, _)| *s == text) {
                    Some((_, v)) => Some(*v),
                    None => {
                        d.error_at(loc_of(node), path, Self::unsupported(&text));
                        None
                    }
                }
            }
        }
    };
}

spelled_enum! {
    /// `spec.restartPolicy` (and an init container's `restartPolicy`).
    pub enum RestartPolicy {
        Always = "Always",
        OnFailure = "OnFailure",
        Never = "Never",
    }
}

/// Kubernetes' default.
impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::Always
    }
}

impl RestartPolicy {
    fn unsupported(text: &str) -> String {
        format!("unsupported value \"{text}\": use Always, OnFailure or Never")
    }

    /// Whether a container that exited with `code` starts again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

spelled_enum! {
    /// `spec.dnsPolicy`. There is no cluster DNS on one host: `ClusterFirst` (Kubernetes'
    /// default) and `ClusterFirstWithHostNet` behave as `Default`, as the kubelet does without
    /// cluster DNS.
    pub enum DnsPolicy {
        ClusterFirst = "ClusterFirst",
        ClusterFirstWithHostNet = "ClusterFirstWithHostNet",
        Default = "Default",
        None = "None",
    }
}

// `spelled_enum!` declares the type; a derive cannot mark its default variant.
#[allow(clippy::derivable_impls)]
impl Default for DnsPolicy {
    fn default() -> Self {
        DnsPolicy::ClusterFirst
    }
}

impl DnsPolicy {
    fn unsupported(text: &str) -> String {
        format!(
            "unsupported value \"{text}\": use ClusterFirst, ClusterFirstWithHostNet, Default or None"
        )
    }
}

spelled_enum! {
    /// A container port's `protocol`. (SCTP is refused by name.)
    pub enum Protocol {
        Tcp = "TCP",
        Udp = "UDP",
    }
}

impl Protocol {
    fn unsupported(text: &str) -> String {
        if text == "SCTP" {
            "SCTP is not supported by wpod; use TCP or UDP".to_string()
        } else {
            format!("unsupported value \"{text}\": use TCP or UDP")
        }
    }
}

spelled_enum! {
    /// An `emptyDir`'s `medium`.
    pub enum StorageMedium {
        /// The node's disk (under wpod's state directory).
        Default = "",
        /// A tmpfs.
        Memory = "Memory",
    }
}

// (Written out: the variants come from `spelled_enum!`, which cannot mark a `#[default]`.)
#[allow(clippy::derivable_impls)]
impl Default for StorageMedium {
    fn default() -> Self {
        StorageMedium::Default
    }
}

impl StorageMedium {
    fn unsupported(text: &str) -> String {
        format!("unsupported value \"{text}\": use \"\" (disk) or Memory (tmpfs)")
    }
}

spelled_enum! {
    /// A `hostPath`'s `type`: what must be at the path before the pod starts.
    pub enum HostPathType {
        /// No check.
        Unset = "",
        DirectoryOrCreate = "DirectoryOrCreate",
        Directory = "Directory",
        FileOrCreate = "FileOrCreate",
        File = "File",
        Socket = "Socket",
        CharDevice = "CharDevice",
        BlockDevice = "BlockDevice",
    }
}

impl HostPathType {
    fn unsupported(text: &str) -> String {
        let named: Vec<&str> = Self::ALL[1..].iter().map(|(s, _)| *s).collect();
        let hint = did_you_mean(text, &named)
            .map(|s| format!("did you mean \"{s}\"? "))
            .unwrap_or_default();
        format!(
            "unsupported value \"{text}\": {hint}use one of {}",
            named.join(", ")
        )
    }

    /// A device node: mounted without `nodev`.
    pub fn is_device(self) -> bool {
        matches!(self, HostPathType::CharDevice | HostPathType::BlockDevice)
    }

    /// A directory (or unchecked, which a Wasm sidecar gets as a directory).
    pub fn may_be_directory(self) -> bool {
        matches!(
            self,
            HostPathType::Unset | HostPathType::Directory | HostPathType::DirectoryOrCreate
        )
    }
}

spelled_enum! {
    /// A container's `imagePullPolicy`.
    pub enum PullPolicy {
        Always = "Always",
        IfNotPresent = "IfNotPresent",
        Never = "Never",
    }
}

impl PullPolicy {
    fn unsupported(text: &str) -> String {
        format!("unsupported value \"{text}\": use Always, IfNotPresent or Never")
    }
}

spelled_enum! {
    /// `securityContext.seccompProfile.type`.
    pub enum SeccompProfile {
        /// The container runtime's default filter (wpod's default too).
        RuntimeDefault = "RuntimeDefault",
        Unconfined = "Unconfined",
        /// A profile file of the host's (`localhostProfile`, under `/etc/wpod/seccomp`).
        Localhost = "Localhost",
    }
}

impl SeccompProfile {
    fn unsupported(text: &str) -> String {
        format!("unsupported value \"{text}\": use RuntimeDefault, Unconfined or Localhost")
    }
}

/// A container's place in the pod's start order (Kubernetes semantics), decided by where it is
/// declared and its `restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// An init container: runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: starts in its place and keeps running.
    /// (`sidecar` is how a pod run by an earlier wpod describes it over its control socket.)
    #[serde(alias = "sidecar")]
    NativeSidecar,
    /// A regular container; the first one is the pod's main container.
    Regular,
}

impl Role {
    /// Declared under `spec.initContainers` (an init container or a native sidecar).
    pub fn is_init(self) -> bool {
        !matches!(self, Role::Regular)
    }
}

/// A Linux capability as a manifest names it (`KILL` or `CAP_KILL`), checked against the
/// kernel's list; `ALL` only in `drop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Capability {
    /// `drop: [ALL]`.
    All,
    /// A capability by its name without `CAP_` (`KILL`).
    Named(&'static str),
}

impl Capability {
    pub const KILL: Capability = Capability::Named("KILL");
    pub const SYS_ADMIN: Capability = Capability::Named("SYS_ADMIN");

    /// A name as written in a manifest; `None` if the kernel has no such capability.
    pub fn parse(text: &str) -> Option<Capability> {
        let name = text.strip_prefix("CAP_").unwrap_or(text);
        if name == "ALL" {
            return Some(Capability::All);
        }
        CAPABILITIES
            .iter()
            .find(|c| **c == name)
            .map(|c| Capability::Named(c))
    }

    /// The kernel's spelling, `CAP_KILL`.
    pub fn kernel_name(self) -> String {
        match self {
            Capability::All => "ALL".to_string(),
            Capability::Named(n) => format!("CAP_{n}"),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::All => f.write_str("ALL"),
            Capability::Named(n) => f.write_str(n),
        }
    }
}

/// Linux capability names as Kubernetes writes them (without `CAP_`).
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];
