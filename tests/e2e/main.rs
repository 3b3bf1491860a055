//! wpod's end-to-end tests: they run the real `wpod` binary on real manifests and pods.
//! Each module says what it needs (root, Debian packages); CI runs them all as root.

mod apply;
mod images;
mod lifecycle;
mod manage;
mod manifests;
mod market;
mod network;
mod pods;
mod redteam;
mod redteam2;
mod redteam_registry;
mod sandbox;
mod sdk;
mod sidecars;
mod tls;
mod use_cases;

use std::path::Path;
use std::process::{Command, Output};

/// The `wpod` binary under test: the one cargo built, or `$WPOD_BIN` (to run the suite against
/// another build, e.g. to show that a red-team test fails on an older wpod).
pub fn wpod_bin() -> std::path::PathBuf {
    std::env::var_os("WPOD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_wpod").into())
}

/// A command running the wpod under test from the repository root.
pub fn wpod() -> Command {
    let mut cmd = Command::new(wpod_bin());
    cmd.current_dir(wpod_test_support::repo_root());
    cmd
}

/// Runs `wpod ARGS` to completion from the repository root.
pub fn wpod_output(args: &[&str]) -> Output {
    wpod().args(args).output().expect("cannot run wpod")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Files of `dir` (relative to the repository root) with this extension, sorted.
pub fn files_with_ext(dir: &str, ext: &str) -> Vec<String> {
    let root = wpod_test_support::repo_root();
    let mut out: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| {
            format!(
                "{dir}/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.{ext} files in {dir}");
    let _ = Path::new(dir);
    out
}
