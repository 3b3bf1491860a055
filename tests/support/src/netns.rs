//! Network namespaces for the networking tests: a "host" of a test's own (its own bridge,
//! iptables and routes, gone with it) and "remote" test hosts joined to a namespace by a veth
//! pair on a documentation range (198.51.100.0/24, a /30 per host), so that a pod's traffic
//! leaves its node for a machine the test made, never for the real network. Every namespace is
//! deleted when its guard drops, whatever the test did.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace made by `ip netns add`, deleted (with its links) when dropped.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A new namespace with its loopback up.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("wpt-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Makes `cmd` run inside this namespace (only its network: files and processes stay).
    pub fn enter(&self, cmd: &mut Command) {
        enter(&self.path(), cmd);
    }

    /// `ip ARGS` inside it; must succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(args);
        self.enter(&mut cmd);
        run(&mut cmd)
    }

    /// `sh -c SCRIPT` inside it.
    pub fn sh(&self, script: &str) -> Output {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        self.enter(&mut cmd);
        cmd.output().expect("sh")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Makes `cmd` join the network namespace at `path` between fork and exec.
pub fn enter(path: &Path, cmd: &mut Command) {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
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

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run ip");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A "remote" test host: a namespace of its own, joined by a veth pair to `from` (a namespace,
/// or the calling thread's when `None`), on a /30 of 198.51.100.0/24: `near` is `from`'s end,
/// `addr` the host's.
pub struct RemoteHost {
    pub ns: NetNs,
    pub near: Ipv4Addr,
    pub addr: Ipv4Addr,
    link: String,
    from: Option<PathBuf>,
}

impl RemoteHost {
    pub fn new(from: Option<&NetNs>) -> Self {
        let ns = NetNs::new("remote");
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
        let base = u32::from(Ipv4Addr::new(198, 51, 100, 0)) + n * 4;
        let (near, addr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let link = format!("wpt{}x{n}", std::process::id() % 100_000);
        let from_path = from.map(NetNs::path);
        let in_from = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            if let Some(p) = &from_path {
                enter(p, &mut cmd);
            }
            run(&mut cmd);
        };
        in_from(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        in_from(&["addr", "add", &format!("{near}/30"), "dev", &link]);
        in_from(&["link", "set", &link, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // Answers come back to whatever the pod's traffic was masqueraded to.
        ns.ip(&["route", "add", "default", "via", &near.to_string()]);
        RemoteHost {
            ns,
            near,
            addr,
            link,
            from: from_path,
        }
    }

    /// Fails the test unless `from` reaches this host's address through the veth (and so
    /// nowhere else).
    pub fn assert_routed(&self) {
        let mut cmd = Command::new("ip");
        cmd.args(["route", "get", &self.addr.to_string()]);
        if let Some(p) = &self.from {
            enter(p, &mut cmd);
        }
        let out = run(&mut cmd);
        let route = String::from_utf8_lossy(&out.stdout);
        assert!(
            route.contains(&format!("dev {}", self.link)),
            "the test host {} is not reached through its veth: {route}",
            self.addr
        );
    }
}
