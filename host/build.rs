//! `WPOD_BUILD_ID` (`sandbox::build_id()`, kept in an ELF section of its own): which build of
//! wpod this is, so that `wpod` runs its helpers from a `wpod-helper` binary only if that binary
//! speaks the same protocol (helper arguments, launch specs, the holder's words). Both
//! binaries link this crate's library, so they carry the same ID; a `wpod-helper` left from
//! another build carries another one. The ID is the version and a hash of the sources that
//! define the protocol: this crate's and `wpod-spec`'s (`helper.rs` lives there). The same
//! sources give the same ID (reproducible builds); any change to them gives another. (Here,
//! not in `wpod-spec`: a change to this crate's sources then recompiles only this crate, as it
//! would anyway.)

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

const SOURCES: &[&str] = &["src", "../spec/src"];

fn main() {
    let mut hasher = DefaultHasher::new();
    hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
    for dir in SOURCES {
        println!("cargo:rerun-if-changed={dir}");
        let mut files = Vec::new();
        walk(Path::new(dir), &mut files);
        files.sort();
        for file in files {
            // A file that vanished between the walk and the read counts as empty: cargo
            // reruns this script when the directory changes anyway.
            let content = std::fs::read(&file).unwrap_or_default();
            hasher.write(file.to_string_lossy().as_bytes());
            hasher.write_usize(content.len());
            hasher.write(&content);
        }
    }
    println!(
        "cargo:rustc-env=WPOD_BUILD_ID={}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        hasher.finish()
    );
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}
