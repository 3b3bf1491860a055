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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::grants::process::ProcessGrant;
pub use crate::grants::procstat::Stat;
use crate::status::PodState;

/// How often the runner looks at the main containers' processes (a start or an end is seen
/// within this).
const POLL: Duration = Duration::from_millis(200);

/// Bit of `CAP_KILL` in `/proc/PID/status`'s `CapEff`.
const CAP_KILL: u32 = 5;

/// The main containers' processes, as the runner last saw them.
pub struct MainWatch {
    proc: PathBuf,
    names: Vec<String>,
    /// The pod's UID (the kubelet's directories are under it), when the runner was told.
    pod_uid: Option<String>,
    /// Each running main container's first process: its PID and start time.
    seen: HashMap<String, (i32, u64)>,
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
    pub fn new(names: Vec<String>, pod_uid: Option<String>) -> Self {
        MainWatch {
            proc: PathBuf::from("/proc"),
            names,
            pod_uid: pod_uid.filter(|u| !u.is_empty()),
            seen: HashMap::new(),
        }
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

    /// Keeps the pod's state up to date, until the runner ends.
    pub async fn run(mut self, state: Arc<PodState>) {
        loop {
            tokio::time::sleep(POLL).await;
            self.update(&state);
        }
    }

    /// The first process of each main container that runs now, by name (the newest, should a
    /// container show two).
    fn scan(&self) -> HashMap<String, (i32, u64)> {
        let own = std::process::id() as i32;
        let mut found: HashMap<String, (i32, u64)> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.proc) else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == own || pid == 1 {
                continue;
            }
            let Some(stat) = self.stat(pid) else { continue };
            if stat.ppid != 0 {
                continue;
            }
            let Ok(mountinfo) = std::fs::read_to_string(self.proc.join(format!("{pid}/mountinfo")))
            else {
                continue;
            };
            let Some(name) = container_of(&mountinfo, self.pod_uid.as_deref()) else {
                continue;
            };
            if !self.names.contains(&name) {
                continue;
            }
            let newer = found.get(&name).is_none_or(|&(_, s)| stat.start > s);
            if newer {
                found.insert(name, (pid, stat.start));
            }
        }
        found
    }

    fn stat(&self, pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(self.proc.join(format!("{pid}/stat"))).ok()?;
        Stat::parse(&text)
    }
}

/// The container a process belongs to, by the kubelet's directory of that container among its
/// mounts' roots (`…/pods/<uid>/containers/<name>/<id>`, field 4 of mountinfo); with `pod_uid`,
/// only under that pod's.
pub fn container_of(mountinfo: &str, pod_uid: Option<&str>) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let root = line.split(' ').nth(3)?;
        let parts: Vec<&str> = root.split('/').collect();
        let [.., pods, uid, containers, name, id] = parts.as_slice() else {
            return None;
        };
        let ours = pod_uid.is_none_or(|u| u == *uid);
        (*pods == "pods"
            && *containers == "containers"
            && ours
            && !name.is_empty()
            && !id.is_empty())
        .then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MainState;

    const NGINX: &str = "\
1510 1498 0:118 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/x
1513 1510 0:5 / /dev rw,nosuid - tmpfs tmpfs rw
1520 1513 254:1 /var/lib/kubelet/pods/6b3e1f0e-0000-4000-8000-000000000001/containers/nginx/3f1e2d9a /dev/termination-log rw,relatime - ext4 /dev/vda1 rw
1521 1510 254:1 /var/lib/kubelet/pods/6b3e1f0e-0000-4000-8000-000000000001/volumes/kubernetes.io~empty-dir/data /data rw - ext4 /dev/vda1 rw
";

    #[test]
    fn a_container_is_named_by_the_kubelets_directory_of_it() {
        assert_eq!(container_of(NGINX, None), Some("nginx".into()));
        assert_eq!(
            container_of(NGINX, Some("6b3e1f0e-0000-4000-8000-000000000001")),
            Some("nginx".into())
        );
        // Another pod's directory (a hostPath of the kubelet's tree) is not this pod's.
        assert_eq!(container_of(NGINX, Some("another-uid")), None);
        // /var/lib/kubelet on a filesystem of its own: the root starts at pods/.
        let own_fs =
            "7 6 0:9 /pods/u1/containers/app/ab /dev/termination-log rw - xfs /dev/sdb rw\n";
        assert_eq!(container_of(own_fs, Some("u1")), Some("app".into()));
        // Volumes, subPaths and the like are not a container's directory.
        let volume = "7 6 0:9 /pods/u1/volume-subpaths/v/app/0 /x rw - xfs /dev/sdb rw\n";
        assert_eq!(container_of(volume, None), None);
        assert_eq!(container_of("", None), None);
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

    #[test]
    fn a_process_that_goes_away_is_an_exit_without_a_code_and_its_return_a_restart() {
        let dir = std::env::temp_dir().join(format!("wpod-main-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |pid: i32, start: u64| {
            let p = dir.join(pid.to_string());
            std::fs::create_dir_all(&p).expect("dir");
            let stat = format!(
                "{pid} (nginx) S 0 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0"
            );
            std::fs::write(p.join("stat"), stat).expect("stat");
            std::fs::write(p.join("mountinfo"), NGINX).expect("mountinfo");
        };
        let state = PodState::new(vec!["nginx".to_string()]);
        let mut watch = MainWatch {
            proc: dir.clone(),
            names: vec!["nginx".into()],
            pod_uid: Some("6b3e1f0e-0000-4000-8000-000000000001".into()),
            seen: HashMap::new(),
        };
        watch.update(&state);
        assert_eq!(
            state.main("nginx").map(|m| m.state),
            Some(MainState::Waiting),
            "nothing there yet"
        );
        write(7, 100);
        watch.update(&state);
        let m = state.main("nginx").expect("nginx");
        assert_eq!((m.state, m.pid, m.restarts), (MainState::Running, 7, 0));
        // The same PID, another process: the first ended, a new one started.
        std::fs::remove_dir_all(dir.join("7")).expect("rm");
        watch.update(&state);
        let m = state.main("nginx").expect("nginx");
        assert_eq!((m.state, m.exit_code), (MainState::Exited, None));
        write(7, 200);
        watch.update(&state);
        let m = state.main("nginx").expect("nginx");
        assert_eq!((m.state, m.restarts), (MainState::Running, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
