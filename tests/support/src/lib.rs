//! Helpers shared by wpod's end-to-end tests: where the built guests are, the repository root,
//! the root check that privileged tests make before touching namespaces, and a registry that
//! misbehaves on cue (`hostile_registry`).

use std::path::PathBuf;

pub mod hostile_registry;
pub mod layering;
pub mod netns;
pub mod tlsca;

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
/// Pods get networks (CNI), so it also requires a network namespace without a way out.
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{test} needs root (it creates namespaces, mounts and cgroups): run the tests as root, e.g. `sudo -E cargo test`");
    require_isolated_network();
}

/// Runs `cmd` in the host's network namespace (the one `.ci/test` pinned at
/// `$WPOD_TEST_HOST_NETNS`), outside the tests' isolated one: only for a build step that fetches
/// packages from their registries (npm), never for a pod. Without the variable, where it runs.
pub fn in_host_network(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let Some(path) = std::env::var_os("WPOD_TEST_HOST_NETNS")
        .and_then(|p| std::ffi::CString::new(p.into_encoded_bytes()).ok())
    else {
        return;
    };
    // SAFETY: between fork and exec only open, setns and close, with a path made before.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::setns(fd, libc::CLONE_NEWNET);
            libc::close(fd);
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Fails the test unless the calling thread's network namespace has no default route (so no
/// pod's egress can reach this machine's real network, whatever the pod's own route says).
/// `bash .ci/test` runs the tests that way (`unshare --net`).
pub fn require_isolated_network() {
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    let default = routes
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    assert!(
        !default,
        "the end-to-end tests run pods on networks (CNI: a bridge, NAT), and this network \
         namespace has a default route: a pod's traffic could reach the real network. Run them \
         in a namespace without a way out: `bash .ci/test` (or `unshare --net`, then \
         `ip link set lo up`)"
    );
}

/// A test's own directory under the system's temporary one, `wpod-NAME-PID`, made empty and
/// removed when dropped: also when the test fails half-way.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("wpod-{name}-{}", std::process::id()));
        // One a killed run of this PID left.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
