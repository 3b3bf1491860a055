//! A cgroup per container under `wpod/<pod>/`, for limits (memory, cpu, pids), for OOM
//! reporting, and to find and kill every process of a container. Pure cgroup v2 hosts and hybrid
//! v1/v2 hosts (controllers on v1) are both supported; a limit that cannot be applied is said.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::spec::ResourceList;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period for CPU limits, as the kubelet uses.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug)]
enum Layout {
    /// Unified hierarchy with controllers at its root.
    V2,
    /// Controllers on v1 hierarchies (hybrid hosts); any may be missing.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

fn detect() -> Layout {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return Layout::V2;
    }
    let hierarchy = |name: &str| Some(root.join(name)).filter(|p| p.join("cgroup.procs").exists());
    Layout::V1 {
        memory: hierarchy("memory"),
        cpu: hierarchy("cpu"),
        pids: hierarchy("pids"),
    }
}

/// The pod's cgroups: `wpod/<pod>` in every hierarchy used.
pub struct PodCgroups {
    layout: Layout,
    pod_dirs: Vec<PathBuf>,
}

/// A container's cgroup (one directory per hierarchy on v1).
pub struct ContainerCgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
}

/// The hierarchies wpod uses on this host.
fn roots(layout: &Layout) -> Vec<PathBuf> {
    match layout {
        Layout::V2 => vec![PathBuf::from(CGROUP_ROOT)],
        Layout::V1 { memory, cpu, pids } => {
            [memory, cpu, pids].into_iter().flatten().cloned().collect()
        }
    }
}

impl PodCgroups {
    pub fn create(pod: &str) -> Result<Self, CgroupError> {
        let layout = detect();
        let mut pod_dirs = Vec::new();
        for root in roots(&layout) {
            let wpod = root.join("wpod");
            let dir = wpod.join(pod);
            std::fs::create_dir_all(&dir).map_err(io("create cgroup", &dir))?;
            if matches!(layout, Layout::V2) {
                // Limits in a child need the controllers enabled on every level above it.
                for level in [&root, &wpod, &dir] {
                    enable_v2_controllers(level);
                }
            }
            pod_dirs.push(dir);
        }
        Ok(PodCgroups { layout, pod_dirs })
    }

    /// Creates the container's cgroup with `limits` applied. Returns warnings for limits that
    /// could not be applied here.
    pub fn container(
        &self,
        name: &str,
        limits: &ResourceList,
        pids_max: u64,
    ) -> Result<(ContainerCgroup, Vec<String>), CgroupError> {
        let mut warnings = Vec::new();
        let dirs: Vec<PathBuf> = self.pod_dirs.iter().map(|d| d.join(name)).collect();
        for d in &dirs {
            if d.exists() {
                // Left by an earlier start of the same container: empty it and start afresh.
                kill_procs(d);
                let _ = std::fs::remove_dir(d);
            }
            std::fs::create_dir(d).map_err(io("create cgroup", d))?;
        }
        let find = |hier: &Option<PathBuf>| -> Option<PathBuf> {
            let h = hier.as_ref()?;
            dirs.iter().find(|d| d.starts_with(h)).cloned()
        };
        let (mem, cpu, pids) = match &self.layout {
            Layout::V2 => (
                dirs.first().cloned(),
                dirs.first().cloned(),
                dirs.first().cloned(),
            ),
            Layout::V1 { memory, cpu, pids } => (find(memory), find(cpu), find(pids)),
        };
        let v2 = matches!(self.layout, Layout::V2);
        let mut apply = |dir: &Option<PathBuf>, what: &str, file: &str, value: String| {
            match dir {
            Some(d) if d.join(file).exists() => {
                if let Err(e) = std::fs::write(d.join(file), &value) {
                    warnings.push(format!("cannot apply the {what} limit ({file} = {value}): {e}"));
                }
            }
            _ => warnings.push(format!("cannot apply the {what} limit: this host has no {what} cgroup controller for wpod ({file} missing)")),
        }
        };
        if let Some(bytes) = limits.memory_bytes {
            if v2 {
                apply(&mem, "memory", "memory.max", bytes.to_string());
                // Without swap the limit means what it says: over it, the OOM killer acts.
                if mem
                    .as_ref()
                    .is_some_and(|d| d.join("memory.swap.max").exists())
                {
                    apply(&mem, "memory", "memory.swap.max", "0".to_string());
                }
            } else {
                apply(&mem, "memory", "memory.limit_in_bytes", bytes.to_string());
                if mem
                    .as_ref()
                    .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists())
                {
                    apply(
                        &mem,
                        "memory",
                        "memory.memsw.limit_in_bytes",
                        bytes.to_string(),
                    );
                }
            }
        }
        if let Some(millis) = limits.cpu_millis {
            let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
            if v2 {
                apply(&cpu, "cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}"));
            } else {
                apply(&cpu, "cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string());
                apply(&cpu, "cpu", "cpu.cfs_quota_us", quota.to_string());
            }
        }
        apply(&pids, "pids", "pids.max", pids_max.to_string());
        Ok((
            ContainerCgroup {
                layout: self.layout.clone(),
                dirs,
                memory_dir: mem,
            },
            warnings,
        ))
    }
}

fn enable_v2_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    for c in ["memory", "cpu", "pids"] {
        if available.split_whitespace().any(|a| a == c) {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

impl ContainerCgroup {
    /// The `cgroup.procs` files a process writes its PID to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Every process in the container.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.dirs.iter().flat_map(|d| read_pids(d)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many times the kernel's OOM killer killed a process of this container.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = match self.layout {
            Layout::V2 => "memory.events",
            Layout::V1 { .. } => "memory.oom_control",
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// SIGKILLs every process of the container and waits (briefly) until none is left.
    pub fn kill_all(&self) {
        for d in &self.dirs {
            if d.join("cgroup.kill").exists() && std::fs::write(d.join("cgroup.kill"), "1").is_ok()
            {
                continue;
            }
            kill_procs(d);
        }
        for _ in 0..200 {
            if self.pids().is_empty() {
                return;
            }
            for d in &self.dirs {
                kill_procs(d);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(dirs = ?self.dirs, "processes survived SIGKILL in the container's cgroup");
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_procs(dir: &Path) {
    for pid in read_pids(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes a cgroup directory once its processes are gone (rmdir fails while any is left).
fn remove_dir(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                kill_procs(dir);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tracing::warn!(dir = %dir.display(), "cannot remove cgroup");
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            remove_dir(d);
        }
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for d in &self.pod_dirs {
            // Containers remove their own; anything left here is a leftover to clear.
            if let Ok(entries) = std::fs::read_dir(d) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    remove_dir(&e.path());
                }
            }
            remove_dir(d);
            // The shared `wpod` parent goes too once no other pod uses it.
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Removes the cgroups of a pod left behind by a runtime that was killed.
pub fn remove_stale(pod: &str) {
    let layout = detect();
    let pod_dirs = roots(&layout)
        .into_iter()
        .map(|r| r.join("wpod").join(pod))
        .filter(|d| d.exists())
        .collect();
    // Dropping removes what is there: containers' cgroups, then the pod's.
    drop(PodCgroups { layout, pod_dirs });
}
