//! Builds every guest in `guests/` for wasm32-wasip2, once per test run (cargo re-runs this only
//! when guests/ or wit/ change), and copies each component to `target/sidecars/NAME.wasm`.
//! Tests get the folder as `env!("WPOD_SIDECARS_DIR")`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = root.join("guests");
    // Outside guests/ so that building does not touch what this script watches.
    let target_dir = root.join("target/guests");
    let out_dir = root.join("target/sidecars");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's settings (flags, profile, target) are not the guests'.
    for (key, _) in env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUST") && key != "RUSTUP_HOME" && key != "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the guests");
    if !status.success() {
        panic!("building the guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)");
    }

    std::fs::create_dir_all(&out_dir).unwrap();
    let built = target_dir.join("wasm32-wasip2/release");
    for entry in std::fs::read_dir(&built).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            copy_if_changed(&path, &out_dir.join(path.file_name().unwrap()));
        }
    }
    build_python_guest(
        &guests.join("health-check-py"),
        &root.join("wit"),
        &out_dir.join("health-check-py.wasm"),
    );
    println!("cargo:rustc-env=WPOD_SIDECARS_DIR={}", out_dir.display());
}

/// The Python sidecar, with componentize-py (installed by .ci/setup); rebuilt only when its
/// sources or the WIT changed (it takes a quarter of a minute).
fn build_python_guest(dir: &Path, wit: &Path, out: &Path) {
    let newest_input = [dir.join("app.py"), wit.join("sidecar.wit")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    if let (Some(input), Some(built)) = (newest_input, built) {
        if built > input {
            return;
        }
    }
    let status = Command::new("componentize-py")
        .arg("-d")
        .arg(wit)
        .args([
            "-w",
            "wpod:sidecar/sidecar-basic",
            "componentize",
            "app",
            "-o",
        ])
        .arg(out)
        .current_dir(dir)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("componentize-py failed ({s}) building {}", dir.display()),
        Err(e) => panic!(
            "cannot run componentize-py ({e}): install it with `python3 -m pip install componentize-py==0.25.1` (bash .ci/setup does)"
        ),
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap();
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap();
    }
}
