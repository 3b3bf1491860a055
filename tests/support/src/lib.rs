//! Helpers shared by wpod's end-to-end tests: where the built guests are, the repository root,
//! the root check that privileged tests make before touching namespaces, and a registry that
//! misbehaves on cue (`hostile_registry`).

use std::path::PathBuf;

pub mod hostile_registry;

/// The repository root (tests run with their package directory as cwd).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Where this crate's build script put the built guests.
pub fn sidecars_dir() -> PathBuf {
    PathBuf::from(env!("WPOD_SIDECARS_DIR"))
}

/// A guest built by this crate's build script: `target/sidecars/NAME.wasm`.
pub fn sidecar(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("WPOD_SIDECARS_DIR")).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "guest {name} was not built: {} is missing",
        path.display()
    );
    path
}

/// Fails the test, saying why, unless it runs as root: privileged tests never skip silently.
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{test} needs root (it creates namespaces, mounts and cgroups): run the tests as root, e.g. `sudo -E cargo test`");
}
