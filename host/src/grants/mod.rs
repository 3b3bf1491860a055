//! Grants: what a Wasm sidecar may touch, decided from the Pod's own fields, deny by default.
//! One module per capability (network, filesystem, main process, lifecycle), each reading its
//! part of the manifest and configuring the sidecar's store; this file holds the table of which
//! Pod field grants each interface a component may import, read by the pre-start refusal check
//! and by `wpod inspect` alike.

pub mod fs;
pub mod lifecycle;
pub mod net;
pub mod process;

use serde::Serialize;

use crate::plan::ContainerPlan;
use crate::spec::Pod;

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

/// `wasi:sockets/tcp@0.2.3` → `wasi:sockets/tcp`.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// The rule for an import, by its WIT interface name.
pub fn for_import(name: &str) -> ImportRule {
    let iface = unversioned(name);
    let (package, _) = iface.split_once('/').unwrap_or((iface, ""));
    match (package, iface) {
        ("wasi:io" | "wasi:clocks" | "wasi:random", _) => ImportRule::Always { what: "I/O streams, clocks and randomness" },
        (_, "wasi:cli/environment") => ImportRule::Always { what: "env, and command/args as argv" },
        (_, "wasi:cli/exit") => ImportRule::Always { what: "exit with a code" },
        (_, "wasi:cli/stdin") => ImportRule::Always { what: "stdin (always closed)" },
        (_, "wasi:cli/stdout" | "wasi:cli/stderr") => ImportRule::Always { what: "stdout/stderr into the pod's logs" },
        ("wasi:cli", _) => ImportRule::Always { what: "no terminal (never a tty)" },
        ("wasi:filesystem", _) => ImportRule::Scoped {
            field: "volumeMounts",
            what: "each volumeMount as a preopened directory (readOnly honoured); nothing else of the host",
        },
        (_, "wasi:sockets/udp" | "wasi:sockets/udp-create-socket") => ImportRule::Always { what: "UDP sockets (always refused)" },
        (_, "wasi:sockets/ip-name-lookup") => ImportRule::Always { what: "name lookups (always refused: nothing to resolve)" },
        ("wasi:sockets", _) => ImportRule::Scoped {
            field: "ports",
            what: "TCP in the pod's network namespace: connect to the pod's loopback; listen only on declared ports",
        },
        (_, "wpod:sidecar/lifecycle") => ImportRule::Always { what: "ready() and pod lifecycle events" },
        (_, "wpod:sidecar/main-process") => ImportRule::Requires {
            field: "spec.shareProcessNamespace: true",
            what: "the main containers' state, stats and output; signals also need securityContext.capabilities.add: [KILL]",
        },
        _ => ImportRule::Never,
    }
}

/// Why a component cannot run in this pod: an import the pod does not grant.
pub fn refusal(pod: &Pod, container: &ContainerPlan, import: &str) -> Option<String> {
    let name = container.name();
    match for_import(import) {
        ImportRule::Always { .. } | ImportRule::Scoped { .. } => None,
        ImportRule::Requires { field, .. } if field.starts_with("spec.shareProcessNamespace") => {
            (!pod.spec.share_process_namespace).then(|| {
                format!("sidecar \"{name}\" imports {import}, which this pod does not grant: set {field} to grant it")
            })
        }
        ImportRule::Requires { field, .. } => Some(format!("sidecar \"{name}\" imports {import}, granted by {field}")),
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
            for_import("wpod:sidecar/main-process@0.1.0"),
            ImportRule::Requires { .. }
        ));
        assert_eq!(
            for_import("wasi:http/outgoing-handler@0.2.0"),
            ImportRule::Never
        );
    }
}
