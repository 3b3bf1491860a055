//! The main-process view of a sidecar that runs in a container of its own (`wpod sidecar
//! run`), in a pod that shares its PID namespace (`shareProcessNamespace: true`).
//!
//! In a wpod pod the supervisor starts the main containers and knows their processes. Here
//! another runtime started them, and the runner finds them as any process of the namespace
//! can: through /proc. A container's first process is the one whose parent is outside the
//! namespace (its runtime's shim: parent PID 0 as the namespace sees it), and the kubelet
//! names its container by a directory of its own, `…/pods/<pod uid>/containers/<name>/<id>`,
//! that it bind-mounts at the container's `terminationMessagePath` and that
//! `/proc/PID/mountinfo` (readable by every process of the namespace) shows as the mount's
//! root. A process cannot change its mounts' roots without `CAP_SYS_ADMIN`, nor its parent.
//!
//! What a container can see is what the view gives: state and statistics from /proc, a
//! restart when the process comes back, signals (the runner needs `CAP_KILL` for a process
//! of another user, which Kubernetes gives only to a container running as user 0). Not the
//! output (the runtime keeps it), nor the exit code (only the process's parent learns it).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::grants::process::ProcessGrant;
pub use crate::grants::procstat::Stat;
use crate::status::PodState;

/// How often the runner looks at the main containers' processes (a start or an end is seen
/// within this).
const POLL: Duration = Duration::from_millis(200);

/// The most of a process's mountinfo read (the kubelet's mounts come first, after the root).
const MAX_PROC_FILE: u64 = 1 << 20;

/// Bit of `CAP_KILL` in `/proc/PID/status`'s `CapEff`.
const CAP_KILL: u32 = 5;

/// The main containers' processes, as the runner last saw them.
pub struct MainWatch {
    proc: PathBuf,
    names: Vec<String>,
    /// Where the kubelet keeps this pod's containers' directories, as the runner's own
    /// termination-log mount shows it: a main container's must be on the same device, under
    /// the same path.
    kubelet: KubeletDirs,
    /// The runner's own `uid_map`: a process in another user namespace (which could mount
    /// anything it likes) is no container of this pod's.
    uid_map: String,
    /// Each running main container's first process: its PID and start time.
    seen: HashMap<String, (i32, u64)>,
    /// Processes already looked at that are no main container's first process, by PID and
    /// start time: not read again (only those still alive are kept).
    ignored: HashSet<(i32, u64)>,
}

/// The kubelet's directory of a pod's containers, as a mount shows it: the device
/// (`major:minor`) and the path up to and including `/containers/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletDirs {
    device: String,
    prefix: String,
}

/// A mount of one container's directory (`…/pods/<uid>/containers/<name>/<id>`, `<id>` the
/// kubelet's eight hex digits): its directory's device and prefix, the container's name and
/// the instance's id.
fn kubelet_mount(line: &str) -> Option<(KubeletDirs, &str, &str)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (device, root) = (*fields.get(2)?, *fields.get(3)?);
    let (dir, id) = root.rsplit_once('/')?;
    let (prefix, name) = dir.rsplit_once('/')?;
    let (pods, uid) = prefix.strip_suffix("/containers")?.rsplit_once('/')?;
    let under_pod = pods.ends_with("/pods") && !uid.is_empty();
    let id_ok = id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (under_pod && id_ok && !name.is_empty()).then(|| {
        (
            KubeletDirs {
                device: device.to_string(),
                prefix: format!("{prefix}/"),
            },
            name,
            id,
        )
    })
}

impl KubeletDirs {
    /// The runner's own: the mount of its own container's directory among its mounts.
    fn own(mountinfo: &str, container: &str) -> Option<KubeletDirs> {
        mountinfo.lines().find_map(|l| {
            kubelet_mount(l).and_then(|(dirs, name, _)| (name == container).then_some(dirs))
        })
    }

    /// The container (and its instance's id) a process with these mounts belongs to.
    fn container_of(&self, mountinfo: &str) -> Option<(String, String)> {
        mountinfo.lines().find_map(|l| {
            let (dirs, name, id) = kubelet_mount(l)?;
            (dirs == *self).then(|| (name.to_string(), id.to_string()))
        })
    }
}

/// Refuses a main-process grant the container does not back: a view without the pod's PID
/// namespace would show nothing, signals without `CAP_KILL` would fail at the first one.
pub fn check_backed(grant: &ProcessGrant) -> Result<(), String> {
    if grant.read && std::process::id() == 1 {
        return Err(
            "spec.shareProcessNamespace: true grants the main-process view, but this container \
             has a PID namespace of its own (the runner is its PID 1): the runtime did not \
             share the pod's; run the pod with shareProcessNamespace as the manifest says"
                .into(),
        );
    }
    if grant.signal && !has_cap_kill() {
        return Err(
            "securityContext.capabilities.add: [KILL] grants signals to the main containers, \
             but the runner has no CAP_KILL: Kubernetes gives an added capability only to a \
             container that runs as user 0 (`wpod kube generate` runs such a runner as user 0 \
             with KILL alone); give the container runAsUser: 0 and capabilities.add: [KILL]"
                .into(),
        );
    }
    Ok(())
}

fn has_cap_kill() -> bool {
    crate::grants::procstat::Status::read("self")
        .ok()
        .and_then(|s| {
            let hex = s.fields("CapEff:")?.next()?.to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_KILL) != 0)
}

impl MainWatch {
    /// The watch of the main containers `names`, for the runner of the container `own`;
    /// refused when the runner's own container shows no kubelet directory to compare with.
    pub fn new(names: Vec<String>, own: &str) -> Result<Self, String> {
        let mountinfo = read_limited(Path::new("/proc/self/mountinfo")).unwrap_or_default();
        let kubelet = KubeletDirs::own(&mountinfo, own).ok_or_else(|| {
            format!(
                "the main-process view recognises the pod's containers by the kubelet's \
                 directory of each (the source of its termination-log file, \
                 .../pods/POD-UID/containers/NAME/ID), and container {own} shows none: run it \
                 on Kubernetes with its terminationMessagePath set (the default)"
            )
        })?;
        Ok(MainWatch {
            proc: PathBuf::from("/proc"),
            names,
            kubelet,
            uid_map: std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default(),
            seen: HashMap::new(),
            ignored: HashSet::new(),
        })
    }

    /// Looks once: a process gone (or its PID reused) is an exit, a new one a start.
    pub fn update(&mut self, state: &PodState) {
        let gone: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, &(pid, start))| self.stat(pid).map(|s| s.start) != Some(start))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.seen.remove(&name);
            tracing::info!(container = %name, "main container's process ended");
            state.vanished(&name);
        }
        if self.seen.len() == self.names.len() {
            return;
        }
        for (name, (pid, start)) in self.scan() {
            if self.seen.contains_key(&name) {
                continue;
            }
            tracing::info!(container = %name, pid, "main container's process found");
            self.seen.insert(name.clone(), (pid, start));
            state.found(&name, pid, Some(start));
        }
    }

    /// Keeps the pod's state up to date on a thread of its own (reading /proc blocks, and the
    /// guest's runtime must not wait for it), until the runner ends.
    pub fn spawn(mut self, state: Arc<PodState>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("wpod-main-view".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                self.update(&state);
            })
            .map(drop)
    }

    /// The first process of each main container that runs now, by name: the oldest process
    /// of the newest instance (a process that `kubectl exec`, an exec probe or a hook starts in
    /// the container also has its parent outside the namespace, but starts later).
    fn scan(&mut self) -> HashMap<String, (i32, u64)> {
        let own = std::process::id() as i32;
        // Per container: per instance id, its oldest process.
        let mut instances: HashMap<String, HashMap<String, (i32, u64)>> = HashMap::new();
        let mut ignored = HashSet::new();
        let Ok(entries) = std::fs::read_dir(&self.proc) else {
            return HashMap::new();
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == own {
                continue;
            }
            let Some(stat) = self.stat(pid) else { continue };
            let key = (pid, stat.start);
            if self.ignored.contains(&key) {
                ignored.insert(key);
                continue;
            }
            // A process with its parent in the namespace never becomes a container's first;
            // one recognised as another container's stays that container's. One whose parent
            // is outside but shows no kubelet directory yet may be a container being set up
            // (the runtime's init joins the namespace before it mounts): looked at again.
            if stat.ppid != 0 {
                ignored.insert(key);
                continue;
            }
            let Some((name, id)) = self.container_of(pid) else {
                continue;
            };
            if !self.names.contains(&name) {
                ignored.insert(key);
                continue;
            }
            let oldest = instances.entry(name).or_default().entry(id).or_insert(key);
            if stat.start < oldest.1 {
                *oldest = key;
            }
        }
        self.ignored = ignored;
        instances
            .into_iter()
            .filter_map(|(name, ids)| {
                let newest = ids.into_values().max_by_key(|&(_, start)| start)?;
                Some((name, newest))
            })
            .collect()
    }

    /// The container a process belongs to: in the runner's user namespace, with a mount of
    /// the kubelet's directory of one of this pod's containers.
    fn container_of(&self, pid: i32) -> Option<(String, String)> {
        let dir = self.proc.join(pid.to_string());
        if std::fs::read_to_string(dir.join("uid_map")).ok()? != self.uid_map {
            return None;
        }
        self.kubelet
            .container_of(&read_limited(&dir.join("mountinfo"))?)
    }

    fn stat(&self, pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(self.proc.join(format!("{pid}/stat"))).ok()?;
        Stat::parse(&text)
    }
}

/// A /proc file, at most [`MAX_PROC_FILE`] bytes of it (a process may have very many mounts).
fn read_limited(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MainState;

    const UID: &str = "6b3e1f0e-0000-4000-8000-000000000001";

    fn mountinfo(container: &str, id: &str) -> String {
        format!(
            "1510 1498 0:118 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/x\n\
             1513 1510 0:5 / /dev rw,nosuid - tmpfs tmpfs rw\n\
             1520 1513 254:1 /var/lib/kubelet/pods/{UID}/containers/{container}/{id} /dev/termination-log rw,relatime - ext4 /dev/vda1 rw\n\
             1521 1510 254:1 /var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/data /data rw - ext4 /dev/vda1 rw\n"
        )
    }

    fn own() -> KubeletDirs {
        KubeletDirs::own(&mountinfo("watcher", "0badcafe"), "watcher").expect("own")
    }

    #[test]
    fn a_container_is_named_by_the_kubelets_directory_of_it_beside_the_runners_own() {
        let dirs = own();
        assert_eq!(
            dirs.container_of(&mountinfo("nginx", "3f1e2d9a")),
            Some(("nginx".into(), "3f1e2d9a".into()))
        );
        // Another pod's directory, another device, a path elsewhere: not this pod's.
        let other_pod = mountinfo("nginx", "3f1e2d9a").replace(UID, "another-uid");
        assert_eq!(dirs.container_of(&other_pod), None);
        let other_device = mountinfo("nginx", "3f1e2d9a").replace("254:1", "0:77");
        assert_eq!(dirs.container_of(&other_device), None);
        let planted = mountinfo("nginx", "3f1e2d9a").replace("/var/lib/kubelet/", "/home/x/");
        assert_eq!(dirs.container_of(&planted), None);
        // Not the kubelet's id (eight hex digits), a volume, nothing.
        assert_eq!(dirs.container_of(&mountinfo("nginx", "x")), None);
        let volume = "7 6 254:1 /var/lib/kubelet/pods/u1/volume-subpaths/v/app/0 /x rw - ext4 /dev/vda1 rw\n";
        assert_eq!(dirs.container_of(volume), None);
        assert_eq!(dirs.container_of(""), None);
        // /var/lib/kubelet on a filesystem of its own: the root starts at /pods.
        let own_fs =
            "7 6 0:9 /pods/u1/containers/app/0000abcd /dev/termination-log rw - xfs /dev/sdb rw\n";
        let dirs = KubeletDirs::own(own_fs, "app").expect("own");
        assert_eq!(
            dirs.container_of(own_fs),
            Some(("app".into(), "0000abcd".into()))
        );
        // A container the kubelet did not make has no such directory.
        assert_eq!(
            KubeletDirs::own("1 0 0:1 / / rw - overlay overlay rw\n", "app"),
            None
        );
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let text = "42 (a) b (c)) S 0 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                ppid: 0,
                start: 12345
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
        let own = Stat::of(std::process::id() as i32).expect("our own stat");
        assert!(own.start > 0);
    }

    /// A fake /proc: each process's stat, uid_map and mountinfo.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn process(&self, pid: i32, ppid: i32, start: u64, container: &str, id: &str) {
            let p = self.0.join(pid.to_string());
            std::fs::create_dir_all(&p).expect("dir");
            let stat = format!(
                "{pid} (nginx) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0"
            );
            std::fs::write(p.join("stat"), stat).expect("stat");
            std::fs::write(p.join("uid_map"), "0 0 4294967295\n").expect("uid_map");
            std::fs::write(p.join("mountinfo"), mountinfo(container, id)).expect("mountinfo");
        }

        fn gone(&self, pid: i32) {
            std::fs::remove_dir_all(self.0.join(pid.to_string())).expect("rm");
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_first_process_of_the_newest_instance_is_the_containers_and_its_end_an_exit() {
        let proc =
            FakeProc(std::env::temp_dir().join(format!("wpod-main-view-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&proc.0);
        std::fs::create_dir_all(&proc.0).expect("dir");
        let state = PodState::new(vec!["nginx".to_string()]);
        let mut watch = MainWatch {
            proc: proc.0.clone(),
            names: vec!["nginx".into()],
            kubelet: own(),
            uid_map: "0 0 4294967295\n".into(),
            seen: HashMap::new(),
            ignored: HashSet::new(),
        };
        let main = |state: &PodState| {
            let m = state.main("nginx").expect("nginx");
            (m.state, m.pid, m.restarts, m.exit_code)
        };
        watch.update(&state);
        assert_eq!(main(&state), (MainState::Waiting, 0, 0, None));
        // An exec'd process (later, its parent outside too) and a child: the first is nginx's.
        proc.process(9, 0, 150, "nginx", "3f1e2d9a");
        proc.process(7, 0, 100, "nginx", "3f1e2d9a");
        proc.process(8, 7, 120, "nginx", "3f1e2d9a");
        // Another user namespace's process, laid out as nginx's: not this pod's container.
        proc.process(11, 0, 90, "nginx", "3f1e2d9a");
        std::fs::write(proc.0.join("11/uid_map"), "0 100000 65536\n").expect("uid_map");
        watch.update(&state);
        assert_eq!(main(&state), (MainState::Running, 7, 0, None));
        // It ended; a new instance of the container reuses its PID: a restart.
        for pid in [7, 8, 9] {
            proc.gone(pid);
        }
        watch.update(&state);
        assert_eq!(main(&state), (MainState::Exited, 0, 0, None));
        proc.process(7, 0, 200, "nginx", "0000beef");
        watch.update(&state);
        assert_eq!(main(&state), (MainState::Running, 7, 1, None));
        assert_eq!(state.main("nginx").and_then(|m| m.start), Some(200));
    }
}
