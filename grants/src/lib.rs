//! Grants: what a Wasm sidecar may touch, decided from the Pod's own fields, deny by default.
//!
//! One module per capability, each self-contained as Spin's factors are: the WIT interfaces it
//! provides and the rule for each ([`Capability::IMPORTS`]), how it reads its part of the
//! manifest into a grant with located diagnostics ([`Capability::resolve`], run once by the
//! plan), how it adds its host functions to the linker, and how it prepares each instance (its
//! own host state, reached through a view of the store rather than host traits on the whole
//! store). The [`capabilities!`] list below is the one place that names them all: adding a
//! capability is one new file and one line there (see `docs/architecture.md`).
//!
//! The import table that `wpod inspect` prints and that refuses a component before the pod
//! starts is built from the same modules that enforce it, so the two cannot drift.
//!
//! A crate of its own, above `wpod-spec` and beside `wpod-oci`, so that the compiler keeps it
//! from reaching the plan, the sandbox or the pod's processes; `wpod` re-exports it as
//! `wpod::grants`.

pub mod bindings;
pub mod calls;
pub mod fs;
pub mod fs_cached;
pub mod fs_view;
pub mod inspect;
pub mod lifecycle;
pub mod net;
pub mod outcome;
pub mod process;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod tls;
pub mod wasi;

// The layers below, under the names the modules use (`crate::spec`, ...).
use wpod_spec::{component, error, files, logs, mounts, spec, status};

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtxBuilder, WasiView};

use crate::component::unversioned;
use crate::logs::Logs;
use crate::spec::{Container, Diagnostic, Pod};
use crate::status::PodState;

/// How an imported interface is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "grant", rename_all = "camelCase")]
pub enum ImportRule {
    /// Every sidecar has it (clocks, random, I/O streams, its own stdio, env and lifecycle).
    Always { what: &'static str },
    /// Every sidecar may import it; what it can reach is scoped by a Pod field (a sidecar
    /// without volumeMounts has no directory, without ports can listen nowhere).
    Scoped {
        field: &'static str,
        what: &'static str,
    },
    /// A component that imports it is refused unless the Pod field grants it.
    Requires {
        field: &'static str,
        what: &'static str,
    },
    /// No Pod field grants it: a component that imports it is refused.
    Never,
}

/// One row of a capability's import table: a WIT interface (`wasi:cli/environment`) or a whole
/// package (`wasi:sockets`, any interface without a row of its own), and its rule.
#[derive(Clone, Copy, Debug)]
pub struct Import {
    pub interface: &'static str,
    pub rule: ImportRule,
}

/// The sidecar a capability reads its grant for.
pub struct Sidecar<'a> {
    pub pod: &'a Pod,
    /// Field path of the container, e.g. `spec.containers[1]`.
    pub path: &'a str,
    pub container: &'a Container,
    /// What the downward API reads of the host.
    pub host: &'a crate::spec::env::HostFacts<'a>,
}

impl Sidecar<'_> {
    pub fn name(&self) -> &str {
        &self.container.name
    }

    /// A located problem with `field` of this container (`volumeMounts[0].name`).
    pub fn diag(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.pod
            .source
            .diag(format!("{}.{field}", self.path), message)
    }
}

/// The pod's volumes as wpod opened them when the pod started (the sandbox implements it).
pub trait OpenVolumes {
    /// The volume's host path (for messages) and the descriptor wpod holds for it.
    fn volume(&self, name: &str) -> Option<(&Path, BorrowedFd<'_>)>;
    /// Whether wpod writes the volume (a ConfigMap's, a Secret's: its keys are links into
    /// `..data` that no container can change), so a subPath may follow its links.
    fn written_by_wpod(&self, _name: &str) -> bool {
        false
    }
}

/// What preparing one instance of a sidecar is given: values, never ambient authority.
pub struct InstanceSetup<'a> {
    pub name: &'a str,
    pub wasi: &'a mut WasiCtxBuilder,
    pub volumes: &'a dyn OpenVolumes,
    pub status: &'a Arc<PodState>,
    pub logs: &'a Arc<Logs>,
    /// Set when this sidecar's turn to stop comes: the deadline it has.
    pub stopping: watch::Receiver<Option<tokio::time::Instant>>,
    /// The pod's addresses and resolver, once its network exists.
    pub network: &'a Arc<net::PodNet>,
    /// Where refusals (and, under `--audit`, uses) are reported.
    pub reports: &'a Arc<report::Reporter>,
    /// The sandbox's values of the downward API (the pod's IP): filled into argv and env.
    pub facts: &'a crate::spec::env::RuntimeFacts,
}

/// A capability could not be set up for an instance.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The plan granted a volume the sandbox did not make (a bug, never a manifest's fault).
    #[error("volume {0} was not created")]
    NoVolume(String),
    #[error("cannot open volume {host} for {guest}")]
    Volume {
        host: std::path::PathBuf,
        guest: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// The store data of a sidecar, as the capabilities see it: WASI's view, and their own states
/// with the resource table they share.
pub trait GrantHost: WasiView + Send + 'static {
    fn grant_states(&mut self) -> (&mut GrantStates, &mut ResourceTable);
    /// wasmtime-wasi's filesystem host and the capabilities' states at once (the filesystem
    /// capability wraps the one with the other).
    fn fs_parts(
        &mut self,
    ) -> (
        wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
        &mut GrantStates,
    );
    /// wasmtime-wasi's sockets host and the capabilities' states at once (the network
    /// capability wraps TCP: `net::nodelay`).
    fn sockets_parts(
        &mut self,
    ) -> (
        wasmtime_wasi::sockets::WasiSocketsCtxView<'_>,
        &mut GrantStates,
    );
}

/// One capability a sidecar can be granted.
pub trait Capability {
    /// What the plan decides for one sidecar, once (restarts reuse it).
    type Grant: Clone + fmt::Debug + Send + Sync + 'static;
    /// Its host state in one instance's store.
    type State: Send + 'static;
    /// The interfaces it provides and how each is granted.
    const IMPORTS: &'static [Import];
    /// Reads its part of the manifest for `sidecar`; problems go to `diags`, located.
    fn resolve(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) -> Self::Grant;
    /// Whether `grant` grants its [`ImportRule::Requires`] interfaces.
    fn grants_required(_grant: &Self::Grant) -> bool {
        false
    }
    /// Adds its host functions to the linker shared by all sidecars.
    fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()>;
    /// Configures one starting instance and returns its host state.
    fn prepare(
        grant: &Self::Grant,
        setup: &mut InstanceSetup<'_>,
    ) -> Result<Self::State, GrantError>;
}

/// The list of capabilities: generates the plan's [`Grants`], the store's [`GrantStates`], the
/// import table, and the calls that resolve, link and prepare them all.
macro_rules! capabilities {
    ($($field:ident: $cap:ty),+ $(,)?) => {
        /// Every capability's grant for one sidecar: what the plan carries.
        #[derive(Clone, Debug)]
        pub struct Grants {
            $(pub $field: <$cap as Capability>::Grant),+
        }

        /// Every capability's host state in one instance's store.
        pub struct GrantStates {
            $(pub $field: <$cap as Capability>::State),+
        }

        /// Each capability's import table.
        const TABLES: &[&[Import]] = &[$(<$cap as Capability>::IMPORTS),+];

        impl Grants {
            /// Reads every capability's grant for `sidecar`.
            pub fn resolve(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) -> Self {
                Grants {
                    $($field: <$cap as Capability>::resolve(sidecar, diags)),+
                }
            }

            /// Prepares every capability for one starting instance.
            pub fn prepare(&self, setup: &mut InstanceSetup<'_>) -> Result<GrantStates, GrantError> {
                Ok(GrantStates {
                    $($field: <$cap as Capability>::prepare(&self.$field, setup)?),+
                })
            }

            /// Whether the capability providing `import` grants its required interfaces.
            fn grants_required(&self, import: &str) -> bool {
                $(
                    if provides(<$cap as Capability>::IMPORTS, import) {
                        return <$cap as Capability>::grants_required(&self.$field);
                    }
                )+
                false
            }
        }

        /// Adds every capability's host functions to `linker`.
        pub fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
            $(<$cap as Capability>::add_to_linker(linker)?;)+
            Ok(())
        }
    };
}

capabilities! {
    wasi: wasi::Wasi,
    net: net::Network,
    fs: fs::Filesystem,
    process: process::MainProcess,
    lifecycle: lifecycle::Lifecycle,
    tls: tls::Tls,
    relay: relay::Relay,
}

impl Grants {
    /// What the sidecar may touch, in the manifest's terms, one line per grant (`wpod
    /// describe`). Environment values are not shown: they may be secrets.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .fs
            .mounts
            .iter()
            .map(|m| {
                let mode = if m.read_only {
                    "read-only"
                } else {
                    "read-write"
                };
                format!("volume \"{}\" at {} ({mode})", m.volume, m.guest)
            })
            .collect();
        let ports: Vec<String> = self.net.listen_ports.iter().map(u16::to_string).collect();
        let loopback = match &self.net.outbound {
            Some(o) if o.narrows_loopback() => "TCP to the pod's loopback as the rules say",
            _ => "TCP to the pod's loopback",
        };
        out.push(match ports.is_empty() {
            true => format!("network: {loopback}; listens nowhere"),
            false => format!("network: {loopback}; listens on {}", ports.join(", ")),
        });
        out.push(match &self.net.outbound {
            Some(o) => {
                let rules: Vec<String> = o.rules.iter().map(|r| r.to_string()).collect();
                format!("outbound: {} ({})", rules.join(", "), o.field)
            }
            None => format!("outbound: none (grant with {})", self.net.outbound_field),
        });
        out.push(
            match (self.process.read, self.process.signal) {
                (true, true) => "main-process: read and signal (shareProcessNamespace, capabilities.add: [KILL])",
                (true, false) => "main-process: read (shareProcessNamespace)",
                _ => "main-process: none",
            }
            .to_string(),
        );
        if !self.wasi.env.is_empty() {
            let names: Vec<&str> = self.wasi.env.iter().map(|(k, _)| k.as_str()).collect();
            out.push(format!("environment: {}", names.join(", ")));
        }
        out
    }
}

/// The row of `table` for `import`: its own interface's, else its package's.
fn row(table: &[Import], import: &str) -> Option<ImportRule> {
    let iface = unversioned(import);
    let package = iface.split_once('/').map_or(iface, |(p, _)| p);
    table
        .iter()
        .find(|i| i.interface == iface)
        .or_else(|| table.iter().find(|i| i.interface == package))
        .map(|i| i.rule)
}

fn provides(table: &[Import], import: &str) -> bool {
    row(table, import).is_some()
}

/// The rule for an import, by its WIT interface name: an interface's own row anywhere wins
/// over a package row.
pub fn for_import(name: &str) -> ImportRule {
    let iface = unversioned(name);
    let exact = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|i| i.interface == iface)
        .map(|i| i.rule);
    exact
        .or_else(|| TABLES.iter().find_map(|t| row(t, name)))
        .unwrap_or(ImportRule::Never)
}

/// Whether every sidecar has `import` anyway, whatever its pod says: adding it to a new
/// version needs no new approval.
pub fn always_granted(import: &str) -> bool {
    matches!(for_import(import), ImportRule::Always { .. })
}

/// Why a component cannot run as `sidecar` with `grants`: an import the pod does not grant.
pub fn refusal(sidecar: &Sidecar<'_>, grants: &Grants, import: &str) -> Option<String> {
    let name = sidecar.name();
    match for_import(import) {
        ImportRule::Always { .. } | ImportRule::Scoped { .. } => None,
        ImportRule::Requires { field, .. } => (!grants.grants_required(import)).then(|| {
            format!("sidecar \"{name}\" imports {import}, which this pod does not grant: set {field} to grant it")
        }),
        ImportRule::Never => Some(format!(
            "sidecar \"{name}\" imports {import}, which no Pod field grants: wpod cannot run this component \
             (see `wpod inspect` for what it imports)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_imports_to_fields() {
        assert!(matches!(
            for_import("wasi:io/streams@0.2.6"),
            ImportRule::Always { .. }
        ));
        assert!(matches!(
            for_import("wasi:filesystem/preopens@0.2.0"),
            ImportRule::Scoped {
                field: "volumeMounts",
                ..
            }
        ));
        assert!(matches!(
            for_import("wasi:sockets/tcp@0.2.0"),
            ImportRule::Scoped {
                field: "ports, metadata.annotations[wpod.dev/allowed-outbound.<container>]",
                ..
            }
        ));
        // A name lookup reaches the network: a new version that adds it needs approval.
        assert!(matches!(
            for_import("wasi:sockets/ip-name-lookup@0.2.0"),
            ImportRule::Scoped { .. }
        ));
        assert!(!always_granted("wasi:sockets/ip-name-lookup@0.2.3"));
        assert!(matches!(
            for_import("wasi:sockets/udp@0.2.0"),
            ImportRule::Always { .. }
        ));
        assert!(matches!(
            for_import("wasi:cli/terminal-input@0.2.0"),
            ImportRule::Always { .. }
        ));
        assert!(matches!(
            for_import("wpod:sidecar/main-process@0.1.0"),
            ImportRule::Requires { .. }
        ));
        assert_eq!(
            for_import("wasi:http/outgoing-handler@0.2.0"),
            ImportRule::Never
        );
    }
}
