//! config-reloader: watches a config source (a directory, e.g. a hostPath volume standing for a
//! remote store), writes every changed file atomically (temporary file + rename) into the shared
//! volume the main container reads, and then sends the main container a signal (SIGHUP) so it
//! reloads. Signalling needs `shareProcessNamespace: true` and, on this sidecar,
//! `securityContext.capabilities.add: [KILL]`.
//!
//! The source may be a `configMap` volume: `wpod apply` of a changed ConfigMap rewrites it in
//! place, and the change reaches the main container like any other.
//!
//! Configuration (env): `SOURCE` (default /source), `TARGET` (default /config), `CONTAINER`
//! (default: the first main container), `SIGNAL` (number, default 1 = SIGHUP), `INTERVAL_MS`
//! (default 1000). Files are synced by name (regular files at the top level; names starting
//! with `.` are skipped).

use std::collections::BTreeMap;
use std::time::Duration;

use wpod_sidecar::{lifecycle, main_process};

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The regular files of `dir` by name, with their contents.
fn snapshot(dir: &str) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Followed, not taken as it is: a ConfigMap volume's files are links into its
        // `..data` directory (the kubelet's layout), which the names starting with `.` are.
        if name.starts_with('.') || !std::fs::metadata(entry.path())?.is_file() {
            continue;
        }
        files.insert(name, std::fs::read(entry.path())?);
    }
    Ok(files)
}

/// Writes `content` to `dir/name` so a reader sees the old file or the new one, never half.
fn write_atomically(dir: &str, name: &str, content: &[u8]) -> std::io::Result<()> {
    let tmp = format!("{dir}/.{name}.wpod-tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, format!("{dir}/{name}"))
}

/// Brings `target` in line with `source`; returns how many files changed.
fn sync(source: &str, target: &str) -> std::io::Result<usize> {
    let wanted = snapshot(source)?;
    let have = snapshot(target)?;
    let mut changed = 0;
    for (name, content) in &wanted {
        if have.get(name) != Some(content) {
            write_atomically(target, name, content)?;
            println!("updated {name} ({} bytes)", content.len());
            changed += 1;
        }
    }
    for name in have.keys().filter(|n| !wanted.contains_key(*n)) {
        std::fs::remove_file(format!("{target}/{name}"))?;
        println!("removed {name}");
        changed += 1;
    }
    Ok(changed)
}

fn main() {
    let source = env("SOURCE", "/source");
    let target = env("TARGET", "/config");
    let signal: u32 = env("SIGNAL", "1").parse().unwrap_or(1);
    let interval = Duration::from_millis(env("INTERVAL_MS", "1000").parse().unwrap_or(1000));
    let container = std::env::var("CONTAINER").ok().or_else(|| main_process::containers().first().map(|c| c.name.clone()));
    let Some(container) = container else {
        eprintln!("no main container to signal: set CONTAINER");
        std::process::exit(1);
    };
    // The first sync happens before the main container starts (run this as a native sidecar):
    // it then starts with the current configuration.
    match sync(&source, &target) {
        Ok(n) => println!("initial sync of {source} into {target}: {n} files"),
        Err(e) => eprintln!("initial sync failed: {e}"),
    }
    lifecycle::ready();
    loop {
        if let Some(lifecycle::Event::Stopping(_)) = lifecycle::next_event(interval.as_millis() as u64) {
            return;
        }
        match sync(&source, &target) {
            Ok(0) => {}
            Ok(n) => match main_process::signal(&container, signal) {
                Ok(()) => println!("{n} files changed: sent signal {signal} to {container}"),
                Err(e) => eprintln!("{n} files changed, but signalling {container} failed: {e:?}"),
            },
            Err(e) => eprintln!("sync failed: {e}"),
        }
    }
}
