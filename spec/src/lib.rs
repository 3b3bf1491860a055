//! wpod's lowest layers, a crate of their own so that the compiler keeps them below the rest:
//!
//! 1. `error`, `files`, `memory`, `mounts`, `status`, `sys`: vocabulary with no wpod
//!    dependencies (printing error chains, reading files and where wpod keeps its state, the
//!    memory a started process gives back, the mount table, the live pod status, the sandbox's
//!    system calls); above them `records` (what one wpod process learnt of a settled file,
//!    kept for the next ones under a key), then `component` (a component file's imports,
//!    exports and digest, read once per file and identity) and `helper` (helper processes and
//!    their step errors).
//! 2. `spec`: manifest → typed, validated Pod, every string enum decoded once.
//! 3. `logs`: container output (the CRI log format, its files and their rotation, and the
//!    live streams sidecars and `wpod logs -f` follow).
//!
//! The `wpod` crate re-exports these modules under the same names (`wpod::spec`, ...).

pub mod component;
pub mod error;
pub mod files;
pub mod helper;
pub mod logs;
pub mod memory;
pub mod mounts;
pub mod records;
pub mod spec;
pub mod status;
pub mod sys;

#[cfg(test)]
mod layering {
    //! The layers point one way inside this crate too (`wpod_test_support::layering`).

    const LAYERS: &[&[&str]] = &[
        &["error", "files", "memory", "mounts", "status", "sys"],
        &["records"],
        &["component", "helper"],
        &["spec"],
        &["logs"],
    ];

    #[test]
    fn modules_import_only_lower_layers() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let wrong = wpod_test_support::layering::violations(&src, LAYERS, &[]);
        assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
    }
}
