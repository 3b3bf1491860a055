//! wpod: run a Kubernetes Pod on one Linux host; the main container is a native process in real
//! pod namespaces, its sidecars are WebAssembly components that get only what the pod grants.
//!
//! The modules are layers, and a module imports only lower ones. Layers 1 to 4 are crates of
//! their own (`wpod-spec`: 1 to 3; `wpod-grants` and `wpod-oci`: 4), so the compiler keeps them
//! below the rest; above them the `layering` test checks:
//!
//! 1. `component`, `error`, `files`, `mounts`, `status`: vocabulary with no wpod dependencies
//!    (a component's imports and exports, printing error chains, reading files and where wpod
//!    keeps its state, the mount table, the live pod status); above them `helper`: helper
//!    processes and their step errors (wpod runs them from a view made in its state directory).
//! 2. `spec`: manifest → typed, validated Pod, every string enum decoded once.
//! 3. `logs`: container output.
//! 4. `grants`: one module per capability a Wasm sidecar can be granted; `oci`: images and
//!    sidecars on registries (names, the store, pulls, signatures and the trust policy,
//!    approvals, push/search, layout directories).
//! 5. `plan`: Pod → PodPlan, every decision made once (roles, restart policies, grants, ports).
//! 6. `sandbox`: namespaces, volumes, cgroups, ports, the state directory.
//! 7. `containers` (native processes) | `sidecars` (Wasm components), side by side.
//! 8. `supervisor`: the pod's lifecycle.
//! 9. `kube`: the same pods on Kubernetes (`wpod sidecar`, a Wasm sidecar as a container's
//!    process); `helper_main`: the helper processes' entry point (`wpod-helper`); then the CLI
//!    (`main.rs`).

pub mod containers;
pub mod helper_main;
pub mod kube;
pub mod plan;
pub mod sandbox;
pub mod sidecars;
pub mod supervisor;

// Layers 1 to 3 are the `wpod-spec` crate (`spec/`), layer 4 the `wpod-grants` (`grants/`) and
// `wpod-oci` (`oci/`) crates, under their own names here.
pub use wpod_grants as grants;
pub use wpod_oci as oci;
pub use wpod_spec::{
    component, error, files, helper, logs, memory, mounts, records, spec, status, sys,
};

#[cfg(test)]
mod layering {
    //! The layers point one way inside this crate (`wpod_test_support::layering`); the
    //! crates `wpod-spec`, `wpod-grants` and `wpod-oci` sit below all of them, as the
    //! compiler keeps them.

    /// Top-level modules by layer, lowest first. Modules of one layer never import each other.
    const LAYERS: &[&[&str]] = &[
        &["plan"],
        &["sandbox"],
        &["containers", "sidecars"],
        &["supervisor"],
        &["kube", "helper_main"],
    ];

    /// The modules of the crates below (`wpod-spec`, `wpod-grants`, `wpod-oci`), re-exported
    /// here.
    const BELOW: &[&str] = &[
        "component",
        "error",
        "files",
        "grants",
        "helper",
        "logs",
        "memory",
        "mounts",
        "oci",
        "records",
        "spec",
        "status",
        "sys",
    ];

    #[test]
    fn modules_import_only_lower_layers() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let wrong = wpod_test_support::layering::violations(&src, LAYERS, BELOW);
        assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
    }
}
