//! wpod's end-to-end tests: they run the real `wpod` binary on real manifests and pods.
//! Each module says what it needs (root, Debian packages); CI runs them all as root.

mod apply;
mod bench;
mod cri;
mod fields;
mod helpers;
mod images;
mod kube;
mod lifecycle;
mod manage;
mod manifests;
mod market;
mod network;
mod pods;
mod redteam;
mod redteam2;
mod redteam_registry;
mod rootless;
mod sandbox;
mod sdk;
mod sidecars;
mod tls;
mod use_cases;
mod userns;

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

/// A TCP port for the host's side of a test (a hostPort, a server the test runs): free now, and
/// never handed to another test of this process, so tests running at once never share one (all
/// pods publish their hostPorts on the one host). Taken below the kernel's ephemeral range,
/// where connections pick their source ports, so it stays free until the test binds it; and
/// above 20000, clear of the fixed ports pods use on their own loopback.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(LOW + 1_000, 65_536);
    let span = ephemeral - LOW;
    // Test processes running at once (another binary, another checkout) start apart.
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (offset + n) % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {LOW}..{ephemeral}");
}

/// A field of /proc/PID/status, in its first unit (kB for memory).
pub fn status_field(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
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
