//! Which Pod field grants each interface a sidecar may import: the single table that the
//! runtime's refusal check and `wpod inspect` both read.

use serde::Serialize;

/// How an imported interface is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "grant", rename_all = "camelCase")]
pub enum ImportRule {
    /// Every sidecar has it (clocks, random, I/O streams, its own stdio, env and lifecycle).
    Always { what: &'static str },
    /// Granted by a Pod field; `field` is where to write it.
    ByField {
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
        ("wasi:filesystem", _) => ImportRule::ByField {
            field: "volumeMounts",
            what: "each volumeMount as a preopened directory (readOnly honoured); no mounts, no files",
        },
        (_, "wasi:sockets/ip-name-lookup") => ImportRule::Always { what: "name lookups (always refused: the pod has no DNS)" },
        ("wasi:sockets", _) => ImportRule::ByField {
            field: "ports",
            what: "sockets in the pod's network namespace: connect to the pod's loopback; listen only on declared ports",
        },
        (_, "wpod:sidecar/lifecycle") => ImportRule::Always { what: "ready() and pod lifecycle events" },
        (_, "wpod:sidecar/main-process") => ImportRule::ByField {
            field: "spec.shareProcessNamespace: true",
            what: "the main container's state, stats and output; signals also need securityContext.capabilities.add: [KILL]",
        },
        _ => ImportRule::Never,
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
            ImportRule::ByField {
                field: "volumeMounts",
                ..
            }
        ));
        assert!(matches!(
            for_import("wpod:sidecar/main-process@0.1.0"),
            ImportRule::ByField { .. }
        ));
        assert_eq!(
            for_import("wasi:http/outgoing-handler@0.2.0"),
            ImportRule::Never
        );
    }
}
