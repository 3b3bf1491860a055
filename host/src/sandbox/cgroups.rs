//! A cgroup per container under `wpod/<root-id>/pod-<pod>/containers/ctr-<container>`, for
//! limits (memory, cpu, pids), for OOM reporting, and to find and kill every process of a
//! container; `containers` itself holds the pod-level limits (`spec.resources`), so they bound
//! the containers together; and `_runtime` beside it for the `wpod` process itself, which hosts
//! the pod's Wasm sidecars, so that what they cost the host is charged and bounded too, apart:
//! a container that exhausts the pod's memory meets the OOM killer among containers, never
//! wpod's supervisor. `<root-id>` names the state root (`$WPOD_ROOT`): two roots
//! never touch each other's pods. Pure cgroup v2 hosts and hybrid v1/v2 hosts (controllers on
//! v1) are both supported; a limit that cannot be applied is said.
//!
//! Moves: on v1 hierarchies the moves on a pod's start path are threads moving themselves alone
//! ([`move_this_thread`]), which Linux 5.17 and later do without the global lock for moves and
//! its wait; on v2 (and should a thread move fail, or an older kernel take the lock anyway) the
//! processes move whole, and [`prime_moves`] pays the lock's first wait ahead.
//!
//! A rootless wpod may write no cgroup of the host's but those delegated to its user (by
//! systemd's `Delegate=yes`, or an administrator's `chown`): in each hierarchy the tree above
//! is rooted at the process's own cgroup instead of the hierarchy's root, when the user may
//! write it ([`PodCgroups::delegated`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use nix::sys::signal::Signal;

use crate::spec::{PodName, ResourceList};
use crate::sys::{Host, Syscall};
/// CFS period for CPU limits, as the kubelet uses.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {}", path.display())]
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
    V2 { root: PathBuf },
    /// Controllers on v1 hierarchies (hybrid hosts); any may be missing.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

fn detect(root: &Path) -> Layout {
    if root.join("cgroup.controllers").exists() {
        return Layout::V2 {
            root: root.to_path_buf(),
        };
    }
    let hierarchy = |name: &str| Some(root.join(name)).filter(|p| p.join("cgroup.procs").exists());
    Layout::V1 {
        memory: hierarchy("memory"),
        cpu: hierarchy("cpu"),
        pids: hierarchy("pids"),
    }
}

/// The cgroup of the `wpod` process while it runs a pod (container names are DNS labels, so
/// none can be called this).
const RUNTIME: &str = "_runtime";
/// The cgroup that holds the pod's containers' cgroups and the pod-level limits.
const CONTAINERS: &str = "containers";

/// The pod's cgroups: `wpod/<root-id>/<pod>` in every hierarchy used.
pub struct PodCgroups {
    sys: Arc<dyn Syscall>,
    /// Where the hierarchies are mounted (`/sys/fs/cgroup`).
    mount_root: PathBuf,
    /// Where wpod's tree starts in each hierarchy used: the hierarchy's root, or (rootless)
    /// the cgroup delegated to the user there.
    layout: Layout,
    /// Whether `layout` is a user's delegated cgroups (a rootless pod's).
    delegated: bool,
    pod_dirs: Vec<PathBuf>,
    /// Where the wpod process was before it joined `_runtime`, to go back before removing it.
    runtime_origin: Vec<PathBuf>,
    /// wpod joined `_runtime` by its main thread alone (v1), so the threads that run sidecars
    /// join it as they are made.
    runtime_by_thread: bool,
    /// The runtime's memory limit as last written in every hierarchy (`Some(None)`: unbounded);
    /// `None` when not known (a write failed), so the next one is made whatever it is.
    runtime_limit: std::sync::Mutex<Option<Option<u64>>>,
}

/// Starts, on a thread, the wait the kernel makes the first cgroup move after a quiet spell pay,
/// so that the pod's moves that follow do not pay it on its start path.
///
/// Moving a process between cgroups takes the kernel's lock for moves
/// (`cgroup_threadgroup_rwsem`, one for every hierarchy and every process). Taking it after a
/// quiet spell waits for an RCU grace period: 5-20 ms on a 2-core machine, against 0.1 ms for
/// a move made within about 15 ms of the last one (BENCHMARKS.md, issue 29's "The first cgroup
/// move"). A pod's start moves wpod into its `_runtime` cgroup, then each native container
/// into its own; the first of those used to pay the whole wait.
///
/// Only where wpod's moves take that lock: on v2, and on v1 before Linux 5.17 (from it, the
/// moves of a pod's start on v1 do not, [`move_this_thread`]).
///
/// The thread moves itself, alone (its thread ID into `tasks` on v1, `cgroup.threads` on v2),
/// into the cgroup it is in, and ends: the kernel takes the lock, nothing else moves, and no
/// move of wpod's own can be undone by it (a PID that does not exist would move nothing, but the
/// kernel looks it up before it takes the lock). Failing (no cgroup wpod may write: a rootless
/// one), it only costs the time it would have saved.
pub fn prime_moves(host: &Host) {
    let sys = host.sys.clone();
    let layout = detect(&host.cgroup_root);
    if matches!(layout, Layout::V1 { .. }) && thread_moves_skip_the_lock() {
        // wpod's moves on v1 hierarchies take no lock there ([`move_this_thread`]), and a
        // primer would make them wait: the kernel holds its cgroup mutex through its wait.
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("wpod-cgroup-prime".into())
        .spawn(move || {
            let Ok(own) = std::fs::read_to_string("/proc/thread-self/cgroup") else {
                return;
            };
            let file = match layout {
                Layout::V2 { root } => current_cgroup(&own, &root, None).join("cgroup.threads"),
                Layout::V1 { memory, cpu, pids } => {
                    let first = [(memory, "memory"), (cpu, "cpu"), (pids, "pids")]
                        .into_iter()
                        .find_map(|(mount, name)| Some((mount?, name)));
                    let Some((mount, name)) = first else { return };
                    current_cgroup(&own, &mount, Some(name)).join("tasks")
                }
            };
            if let Err(e) = sys.write(&file, &nix::unistd::gettid().to_string()) {
                tracing::debug!(file = %file.display(), error = %e, "cannot prime cgroup moves");
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the thread that primes cgroup moves");
    }
}

/// Moves the calling thread alone into the v1 cgroup `dir` (`0` into its `tasks`). The kernel
/// takes its lock for moves, and waits for an RCU grace period first after a quiet spell (7-15
/// ms on a 2-core machine, against 0.1-0.2 ms without: BENCHMARKS.md, issue 29's "The first
/// cgroup move"), for every move but this one: a thread moving itself alone cannot exit or
/// `exec` under the move, so since Linux 5.17 ("cgroup: Optimize single thread migration") the
/// lock is skipped (before, it is taken as for any move). Memory is charged to the cgroup of a
/// process's main thread, and a thread starts in the cgroups of the thread that made it.
pub fn move_this_thread(sys: &dyn Syscall, dir: &Path) -> std::io::Result<()> {
    sys.write(&dir.join("tasks"), "0")
}

/// Whether the calling thread is the process's main one, whose cgroup charges the process's
/// memory.
fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// Whether this kernel moves a thread that moves itself alone without its lock for moves
/// (Linux 5.17 and later; see [`move_this_thread`]).
fn thread_moves_skip_the_lock() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .is_ok_and(|release| kernel_at_least(&release, (5, 17)))
}

/// Whether a kernel release (`6.18.44-fc`) is `major.minor` or later.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Whether the calling process has no thread but the calling one (from `/proc/self/status`;
/// false when it cannot be read).
pub fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.strip_prefix("Threads:").map(str::trim) == Some("1"))
    })
}

/// How [`join_process`] moved the calling process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// Its calling thread alone, without the kernel's lock.
    ThreadAlone,
    /// Its PID, through `cgroup.procs`: every thread.
    WholeProcess,
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. With `alone`
/// (its calling thread may stand for it: its only thread, or the one its memory is charged
/// by), in a v1 hierarchy, that thread moves alone ([`move_this_thread`]): no kernel lock.
/// Else, or if `tasks` may not be written (a delegated cgroup whose owner was given
/// `cgroup.procs` alone), its PID goes into `cgroup.procs`.
pub fn join_process(sys: &dyn Syscall, procs: &Path, alone: bool) -> std::io::Result<Joined> {
    let v1 = procs.parent().filter(|dir| dir.join("tasks").exists());
    if let Some(dir) = v1.filter(|_| alone) {
        if move_this_thread(sys, dir).is_ok() {
            return Ok(Joined::ThreadAlone);
        }
    }
    sys.write(procs, &std::process::id().to_string())
        .map(|()| Joined::WholeProcess)
}

/// The pod's directory in hierarchy `root`. Pod and container names are prefixed: a name can
/// be that of a cgroup control file (`tasks`, `cpu.shares` are valid Kubernetes names).
fn pod_dir(root: &Path, pod: &PodName) -> PathBuf {
    root.join("wpod")
        .join(super::state_dir::root_id())
        .join(format!("pod-{pod}"))
}

/// A container's cgroup (one directory per hierarchy on v1).
pub struct ContainerCgroup {
    sys: Arc<dyn Syscall>,
    layout: Layout,
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    /// Each directory's `cgroup.procs` (and, on v2, `cgroup.kill`), opened when the cgroup is
    /// made: killing the container must work even when wpod can open no more files.
    procs: Vec<std::fs::File>,
    kill: Vec<std::fs::File>,
}

/// The hierarchies wpod uses on this host.
fn roots(layout: &Layout) -> Vec<PathBuf> {
    match layout {
        Layout::V2 { root } => vec![root.clone()],
        Layout::V1 { memory, cpu, pids } => {
            [memory, cpu, pids].into_iter().flatten().cloned().collect()
        }
    }
}

impl PodCgroups {
    pub fn create(pod: &PodName) -> Result<Self, CgroupError> {
        Self::create_in(&Host::real(), pod)
    }

    /// No cgroup at all (a rootless pod's): every limit is said not to apply, and a container
    /// is found and killed through its own PID namespace alone.
    pub fn none(sys: Arc<dyn Syscall>) -> Self {
        PodCgroups {
            sys,
            mount_root: PathBuf::new(),
            layout: Layout::V1 {
                memory: None,
                cpu: None,
                pids: None,
            },
            delegated: true,
            pod_dirs: Vec::new(),
            runtime_origin: Vec::new(),
            runtime_by_thread: false,
            runtime_limit: Default::default(),
        }
    }

    /// A rootless pod's cgroups, under the cgroups delegated to this user (see the module's
    /// comment); `None` when no hierarchy has one, so that no limit can be applied.
    pub fn delegated(host: &Host, pod: &PodName) -> Result<Option<Self>, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        match delegated_layout(&host.cgroup_root, &own, &Ownership::real()) {
            Some(layout) => Self::create_with(host, layout, true, pod).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the pod has no cgroup ([`PodCgroups::none`]).
    pub fn is_none(&self) -> bool {
        self.pod_dirs.is_empty()
    }

    /// The pod's cgroups under `host`'s cgroup root, made with its syscalls.
    pub fn create_in(host: &Host, pod: &PodName) -> Result<Self, CgroupError> {
        Self::create_with(host, detect(&host.cgroup_root), false, pod)
    }

    /// The pod's cgroups under `layout`'s roots (`delegated`: a user's delegated cgroups).
    fn create_with(
        host: &Host,
        layout: Layout,
        delegated: bool,
        pod: &PodName,
    ) -> Result<Self, CgroupError> {
        let sys = host.sys.clone();
        let mut cgroups = PodCgroups {
            sys: sys.clone(),
            mount_root: host.cgroup_root.clone(),
            layout: layout.clone(),
            delegated,
            pod_dirs: Vec::new(),
            runtime_origin: Vec::new(),
            runtime_by_thread: false,
            runtime_limit: Default::default(),
        };
        for root in roots(&layout) {
            let dir = pod_dir(&root, pod);
            sys.mkdir_all(&dir).map_err(io("create cgroup", &dir))?;
            // From here an error drops `cgroups`, which removes what was made.
            cgroups.pod_dirs.push(dir.clone());
            if delegated && matches!(layout, Layout::V2 { .. }) {
                vacate(&*sys, &root)?;
            }
            if matches!(layout, Layout::V2 { .. }) {
                // Limits in a child need the controllers enabled on every level above it.
                for level in dir
                    .ancestors()
                    .filter(|l| l.starts_with(&root))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    enable_v2_controllers(&*sys, level);
                }
            }
            let containers = dir.join(CONTAINERS);
            sys.mkdir_all(&containers)
                .map_err(io("create cgroup", &containers))?;
            if matches!(layout, Layout::V2 { .. }) {
                enable_v2_controllers(&*sys, &containers);
            }
        }
        Ok(cgroups)
    }

    /// Sets the memory limit of the wpod process's own cgroup (`None`: unbounded), when the pod's
    /// Wasm sidecars change live: their memory is wpod's.
    /// A limit already in place is not written again (a write costs the kernel a check of the
    /// cgroup's usage, on the way to a sidecar `wpod apply` starts).
    pub fn limit_runtime_memory(&self, memory: Option<u64>) -> Result<(), CgroupError> {
        let mut written = self.runtime_limit.lock().unwrap_or_else(|p| p.into_inner());
        if *written == Some(memory) {
            return Ok(());
        }
        *written = None;
        for (_, pod_dir) in self.runtime_hierarchies() {
            self.write_memory_limit(&pod_dir.join(RUNTIME), memory)?;
        }
        *written = Some(memory);
        Ok(())
    }

    /// The hierarchies wpod's own cgroup is in (root, the pod's directory there). What is
    /// charged is the point: on a v1 host only the memory hierarchy is joined. (wpod has no
    /// CPU limit of its own, and a nested cpu cgroup would cost group scheduling on every one
    /// of its many thread switches.)
    fn runtime_hierarchies(&self) -> Vec<(PathBuf, PathBuf)> {
        let memory_root = match &self.layout {
            Layout::V2 { .. } => None,
            Layout::V1 { memory, .. } => Some(memory.clone()),
        };
        roots(&self.layout)
            .into_iter()
            .zip(self.pod_dirs.iter().cloned())
            .filter(|(root, _)| {
                memory_root
                    .as_ref()
                    .is_none_or(|m| m.as_ref() == Some(root))
            })
            .collect()
    }

    fn write_memory_limit(&self, dir: &Path, memory: Option<u64>) -> Result<(), CgroupError> {
        let (file, unbounded) = match self.layout {
            Layout::V2 { .. } => ("memory.max", "max"),
            Layout::V1 { .. } => ("memory.limit_in_bytes", "-1"),
        };
        let value = memory.map_or_else(|| unbounded.to_string(), |b| b.to_string());
        let path = dir.join(file);
        if path.exists() {
            self.sys
                .write(&path, &value)
                .map_err(io("limit wpod's own memory through", &path))?;
        }
        Ok(())
    }

    /// Moves the calling process (wpod, with the Wasm sidecars it hosts) into the pod's
    /// `_runtime` cgroup, limited to `memory` bytes when given. Its threads, the sidecars' memory
    /// and what they write to a memory-backed volume are then charged there; past the limit the
    /// kernel stops the pod rather than the host. Returns warnings for what the host cannot do.
    ///
    /// On v1 hierarchies, called on the process's main thread (a pod's start is), it moves that
    /// thread alone ([`move_this_thread`]: no wait for the kernel's lock on the pod's start
    /// path): the process's memory is charged by its main thread's cgroup, and the sidecars'
    /// threads are made in `_runtime` ([`PodCgroups::runtime_thread_dirs`]). wpod's other
    /// threads, made before, stay where they were; they run no sidecar.
    pub fn join_runtime(&mut self, memory: Option<u64>) -> Result<Vec<String>, CgroupError> {
        self.join_runtime_from(memory, on_main_thread())
    }

    fn join_runtime_from(
        &mut self,
        memory: Option<u64>,
        main_thread: bool,
    ) -> Result<Vec<String>, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut warnings = Vec::new();
        let mut known = true;
        let hierarchies = self.runtime_hierarchies();
        let mut by_thread = !hierarchies.is_empty();
        for (root, pod_dir) in hierarchies {
            let dir = pod_dir.join(RUNTIME);
            // One made before (a supervisor's restart) may hold any limit.
            if dir.exists() {
                known &= memory.is_some();
            } else {
                self.sys.mkdir(&dir).map_err(io("create cgroup", &dir))?;
            }
            if let Some(bytes) = memory {
                if let Err(e) = self.write_memory_limit(&dir, Some(bytes)) {
                    warnings.push(crate::error::chain(&e));
                    known = false;
                }
            }
            let origin = self.own_cgroup(&own, &root);
            let procs = dir.join("cgroup.procs");
            let joined =
                join_process(&*self.sys, &procs, main_thread).map_err(io("join cgroup", &procs))?;
            by_thread &= joined == Joined::ThreadAlone;
            self.runtime_origin.push(origin);
        }
        self.runtime_by_thread = by_thread;
        *self
            .runtime_limit
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) = known.then_some(memory);
        Ok(warnings)
    }

    /// The calling process's cgroup (`own`: its `/proc/self/cgroup`) in the hierarchy whose
    /// tree wpod roots at `base`.
    fn own_cgroup(&self, own: &str, base: &Path) -> PathBuf {
        match &self.layout {
            Layout::V2 { .. } => current_cgroup(own, &self.mount_root, None),
            Layout::V1 { memory, cpu, .. } => {
                let name = if memory.as_deref() == Some(base) {
                    "memory"
                } else if cpu.as_deref() == Some(base) {
                    "cpu"
                } else {
                    "pids"
                };
                current_cgroup(own, &self.mount_root.join(name), Some(name))
            }
        }
    }

    /// The v1 `_runtime` cgroups the threads that run the pod's sidecars join as they are made
    /// ([`move_this_thread`]; a runtime made on another thread than the main one would
    /// otherwise start them where that thread is). None when wpod moved whole (v2).
    pub fn runtime_thread_dirs(&self) -> Vec<PathBuf> {
        match self.runtime_by_thread {
            true => self
                .runtime_hierarchies()
                .into_iter()
                .map(|(_, pod_dir)| pod_dir.join(RUNTIME))
                .collect(),
            false => Vec::new(),
        }
    }

    /// The `cgroup.procs` files of the cgroups wpod was in before it joined the pod's
    /// `_runtime`: where work that must not be charged to the pod (an apply's pulls) runs.
    pub fn outside_procs(&self) -> Vec<PathBuf> {
        self.runtime_origin
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The directories that hold the containers' cgroups, one per hierarchy.
    fn containers_dirs(&self) -> Vec<PathBuf> {
        self.pod_dirs.iter().map(|d| d.join(CONTAINERS)).collect()
    }

    /// Applies pod-level `limits` to the cgroup of the pod's containers (together). The wpod
    /// process, which hosts the Wasm sidecars, is not under it: each sidecar is held to its
    /// own memory limit (carved out of the pod's by the plan), and the supervisor is never the one a
    /// runaway container's OOM kills. Returns warnings for limits that could not be applied.
    pub fn limit_pod(&self, limits: &ResourceList) -> Vec<String> {
        if self.is_none() {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        let (mem, cpu, _) = self.by_controller(&self.containers_dirs());
        for w in limit_writes(&self.layout, &mem, &cpu, limits) {
            w.apply(&*self.sys, self.delegated, &mut warnings);
        }
        for w in &mut warnings {
            *w = format!("spec.resources (pod-level): {w}");
        }
        warnings
    }

    /// Of one directory per hierarchy (`dirs`), the memory, cpu and pids controllers' ones.
    fn by_controller(
        &self,
        dirs: &[PathBuf],
    ) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        let find = |hier: &Option<PathBuf>| -> Option<PathBuf> {
            let h = hier.as_ref()?;
            dirs.iter().find(|d| d.starts_with(h)).cloned()
        };
        match &self.layout {
            Layout::V2 { .. } => (
                dirs.first().cloned(),
                dirs.first().cloned(),
                dirs.first().cloned(),
            ),
            Layout::V1 { memory, cpu, pids } => (find(memory), find(cpu), find(pids)),
        }
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
        if self.is_none() {
            // Said once for the pod (`PodCgroups::none`'s caller), not per container.
            let none = ContainerCgroup {
                sys: self.sys.clone(),
                layout: self.layout.clone(),
                dirs: Vec::new(),
                memory_dir: None,
                procs: Vec::new(),
                kill: Vec::new(),
            };
            return Ok((none, warnings));
        }
        let dirs: Vec<PathBuf> = self
            .containers_dirs()
            .iter()
            .map(|d| d.join(format!("ctr-{name}")))
            .collect();
        for d in &dirs {
            if d.exists() {
                // Left by an earlier start of the same container: empty it and start afresh.
                kill_procs(&*self.sys, d);
                let _ = self.sys.rmdir(d);
            }
            self.sys.mkdir(d).map_err(io("create cgroup", d))?;
        }
        let (mem, cpu, pids) = self.by_controller(&dirs);
        let pids = LimitWrite {
            dir: pids,
            what: "pids",
            file: "pids.max",
            value: pids_max.to_string(),
        };
        for w in limit_writes(&self.layout, &mem, &cpu, limits)
            .into_iter()
            .chain([pids])
        {
            w.apply(&*self.sys, self.delegated, &mut warnings);
        }
        let mut procs = Vec::new();
        let mut kill = Vec::new();
        for d in &dirs {
            let path = d.join("cgroup.procs");
            procs.push(std::fs::File::open(&path).map_err(io("open", &path))?);
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.kill"))
            {
                kill.push(f);
            }
        }
        Ok((
            ContainerCgroup {
                sys: self.sys.clone(),
                layout: self.layout.clone(),
                dirs,
                memory_dir: mem,
                procs,
                kill,
            },
            warnings,
        ))
    }
}

/// One limit file to write: in which directory (`None`: the host lacks the controller), for
/// which resource, and what.
struct LimitWrite {
    dir: Option<PathBuf>,
    what: &'static str,
    file: &'static str,
    value: String,
}

impl LimitWrite {
    /// Writes the file, or says why the limit could not be applied (`delegated`: the cgroups
    /// are a user's delegated ones, a rootless pod's).
    fn apply(&self, sys: &dyn Syscall, delegated: bool, warnings: &mut Vec<String>) {
        let (what, file, value) = (self.what, self.file, &self.value);
        match &self.dir {
            Some(d) if d.join(file).exists() => {
                if let Err(e) = sys.write(&d.join(file), value) {
                    warnings.push(format!("cannot apply the {what} limit ({file} = {value}): {e}"));
                }
            }
            _ if delegated => warnings.push(format!(
                "cannot apply the {what} limit: no {what} cgroup is delegated to this user ({file} \
                 missing); the README's \"Rootless and user namespaces\" says how to delegate one"
            )),
            _ => warnings.push(format!(
                "cannot apply the {what} limit: this host has no {what} cgroup controller for wpod ({file} missing)"
            )),
        }
    }
}

/// The writes that apply the memory and CPU of `limits` to a container's cgroup or the pod's
/// (`mem` and `cpu`: its directories in those controllers' hierarchies).
fn limit_writes(
    layout: &Layout,
    mem: &Option<PathBuf>,
    cpu: &Option<PathBuf>,
    limits: &ResourceList,
) -> Vec<LimitWrite> {
    let v2 = matches!(layout, Layout::V2 { .. });
    let has = |file: &str| mem.as_ref().is_some_and(|d| d.join(file).exists());
    let mut writes = Vec::new();
    let mut add = |dir: &Option<PathBuf>, what, file, value: String| {
        writes.push(LimitWrite {
            dir: dir.clone(),
            what,
            file,
            value,
        })
    };
    if let Some(bytes) = limits.memory_bytes {
        if v2 {
            add(mem, "memory", "memory.max", bytes.to_string());
            // Without swap the limit means what it says: over it, the OOM killer acts.
            if has("memory.swap.max") {
                add(mem, "memory", "memory.swap.max", "0".to_string());
            }
        } else {
            add(mem, "memory", "memory.limit_in_bytes", bytes.to_string());
            if has("memory.memsw.limit_in_bytes") {
                add(
                    mem,
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    bytes.to_string(),
                );
            }
        }
    }
    if let Some(quota) = limits.cpu_millis.and_then(cfs_quota_us) {
        if v2 {
            add(cpu, "cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}"));
        } else {
            add(cpu, "cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string());
            add(cpu, "cpu", "cpu.cfs_quota_us", quota.to_string());
        }
    }
    writes
}

/// The CFS quota for a CPU limit, or `None` when the limit is at least every CPU of the host
/// (it could hold nothing back, and `1e12` cores must not overflow into a small quota).
fn cfs_quota_us(millis: u64) -> Option<u64> {
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if millis >= host_cpus.saturating_mul(1000) {
        return None;
    }
    // The kernel's smallest quota is 1 ms.
    Some((millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000))
}

/// The calling process's cgroup (`own`: its `/proc/self/cgroup`) in the hierarchy mounted at
/// `mount`: the v1 one of `controller`, or (`None`) the unified one.
fn current_cgroup(own: &str, mount: &Path, controller: Option<&str>) -> PathBuf {
    let relative = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => names.is_empty(),
            Some(c) => names.split(',').any(|n| n == c),
        };
        matches.then(|| path.trim_start_matches('/').to_string())
    });
    mount.join(relative.unwrap_or_default())
}

/// What wpod may learn of a cgroup: whether this user may write a path, and whether systemd
/// marked a directory delegated (`user.delegate` = 1, which systemd sets on a unit's cgroup
/// with `Delegate=yes` since version 253). Closures, so that tests can say.
pub struct Ownership<'a> {
    pub writable: &'a dyn Fn(&Path) -> bool,
    pub marked: &'a dyn Fn(&Path) -> bool,
}

impl Ownership<'static> {
    /// This process's view of the host.
    pub fn real() -> Self {
        Ownership {
            writable: &|p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok(),
            marked: &delegate_mark,
        }
    }
}

/// Whether the cgroup `dir` carries systemd's delegation mark (`user.delegate` = 1).
fn delegate_mark(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 8];
    // SAFETY: a NUL-terminated path and attribute name, and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.delegate".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'1'
}

/// Whether the v2 cgroup `dir` is delegated to this user: the user may write it (its
/// directory, `cgroup.procs` and `cgroup.subtree_control`), and it is a delegated unit's (the
/// scope wpod asked the user's systemd for, `wpod-PID.scope`, or a cgroup systemd marked
/// delegated). A writable cgroup alone is not: every unit of the user's own systemd is the
/// user's, and a terminal's scope is for systemd to manage, not wpod.
pub fn delegated_v2(dir: &Path, ownership: &Ownership) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let asked_for = name.starts_with("wpod-") && name.ends_with(".scope");
    (asked_for || (ownership.marked)(dir))
        && ["", "cgroup.procs", "cgroup.subtree_control"]
            .iter()
            .all(|f| (ownership.writable)(&dir.join(f)))
}

/// The cgroups delegated to the calling process's user under `root` (`own`: its
/// `/proc/self/cgroup`): in each hierarchy wpod uses, its own cgroup when delegated. On v2
/// see [`delegated_v2`] (wpod's own `init` child of one, where it moved the processes, counts
/// as the one above it). On v1, where systemd delegates nothing to users, one the user may make
/// cgroups in and move processes into (an administrator's `chown`, `cgcreate -a -t`). `None`
/// when no hierarchy has one.
fn delegated_layout(root: &Path, own: &str, ownership: &Ownership) -> Option<Layout> {
    let writable = ownership.writable;
    match detect(root) {
        Layout::V2 { root } => {
            let mut dir = current_cgroup(own, &root, None);
            if dir.file_name().is_some_and(|n| n == "init") {
                if let Some(parent) = dir.parent().filter(|p| delegated_v2(p, ownership)) {
                    dir = parent.to_path_buf();
                }
            }
            delegated_v2(&dir, ownership).then_some(Layout::V2 { root: dir })
        }
        Layout::V1 { memory, cpu, pids } => {
            let mine = |hierarchy: Option<PathBuf>, name: &str| {
                let dir = current_cgroup(own, &hierarchy?, Some(name));
                (writable(&dir) && writable(&dir.join("cgroup.procs"))).then_some(dir)
            };
            let layout = Layout::V1 {
                memory: mine(memory, "memory"),
                cpu: mine(cpu, "cpu"),
                pids: mine(pids, "pids"),
            };
            (!roots(&layout).is_empty()).then_some(layout)
        }
    }
}

/// Empties a delegated v2 cgroup of its processes (wpod's own, and whatever else the user runs
/// in it) into its child `init`, as podman does: cgroup v2 enables controllers for a cgroup's
/// children only while it holds no process itself. A no-op once done.
fn vacate(sys: &dyn Syscall, dir: &Path) -> Result<(), CgroupError> {
    let pids = read_pids(dir);
    if pids.is_empty() {
        return Ok(());
    }
    let init = dir.join("init");
    if !init.exists() {
        sys.mkdir(&init).map_err(io("create cgroup", &init))?;
    }
    let procs = init.join("cgroup.procs");
    for pid in pids {
        // A process that ended meanwhile is not an error.
        if let Err(e) = sys.write(&procs, &pid.to_string()) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(io("move a process into", &procs)(e));
            }
        }
    }
    Ok(())
}

fn enable_v2_controllers(sys: &dyn Syscall, dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    for c in ["memory", "cpu", "pids"] {
        if available.split_whitespace().any(|a| a == c) {
            let _ = sys.write(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
}

impl ContainerCgroup {
    /// Whether the container has no cgroup (its pod's is [`PodCgroups::none`]): its processes
    /// cannot be found or killed through one.
    pub fn is_none(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The `cgroup.procs` files a process writes its PID to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Every process in the container.
    pub fn pids(&self) -> Vec<i32> {
        // A fresh read where possible: cgroup v1 caches a file's PID list for a second after
        // each read. The descriptor opened earlier serves when no file can be opened.
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .zip(&self.procs)
            .flat_map(
                |(d, held)| match std::fs::read_to_string(d.join("cgroup.procs")) {
                    Ok(text) => parse_pids(&text),
                    Err(_) => read_pids_from(held),
                },
            )
            .collect();
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
            Layout::V2 { .. } => "memory.events",
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
        use std::io::Write;
        let killed_by_kernel =
            !self.kill.is_empty() && self.kill.iter().all(|mut f| f.write_all(b"1").is_ok());
        if !killed_by_kernel {
            self.kill_listed();
        }
        for _ in 0..200 {
            if self.pids().is_empty() {
                return;
            }
            self.kill_listed();
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(dirs = ?self.dirs, "processes survived SIGKILL in the container's cgroup");
    }
}

impl ContainerCgroup {
    fn kill_listed(&self) {
        let me = std::process::id() as i32;
        for pid in self.pids().into_iter().filter(|p| *p != me) {
            let _ = self.sys.kill(pid, Signal::SIGKILL);
        }
    }
}

/// The PIDs in an open `cgroup.procs`, read again from its start (on cgroup v1 possibly up to a
/// second old).
fn read_pids_from(file: &std::fs::File) -> Vec<i32> {
    use std::io::{Read, Seek};
    let mut file = file;
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    parse_pids(&text)
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_procs(sys: &dyn Syscall, dir: &Path) {
    // Never wpod itself, should it still be in a cgroup being removed.
    let me = std::process::id() as i32;
    for pid in read_pids(dir).into_iter().filter(|p| *p != me) {
        let _ = sys.kill(pid, Signal::SIGKILL);
    }
}

/// Removes a cgroup directory once its processes are gone (rmdir fails while any is left).
/// Removes the cgroup `dir` and every cgroup under it, children first.
fn remove_tree(sys: &dyn Syscall, dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_tree(sys, &e.path());
        }
    }
    remove_dir(sys, dir);
}

fn remove_dir(sys: &dyn Syscall, dir: &Path) {
    for _ in 0..100 {
        match sys.rmdir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                kill_procs(sys, dir);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tracing::warn!(dir = %dir.display(), "cannot remove cgroup");
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        self.kill_all();
        self.procs.clear();
        self.kill.clear();
        for d in &self.dirs {
            remove_dir(&*self.sys, d);
        }
    }
}

impl PodCgroups {
    /// wpod leaves its `_runtime` cgroups (a cgroup with a process in it cannot go). Joined by
    /// its main thread alone (v1), it leaves the same way when that thread calls this
    /// (`main_thread`) and no other thread of wpod is left there: without the kernel's lock for
    /// moves, whose wait for an RCU grace period took 14 ms of each pod's stop on a busy
    /// machine (`perf`, kernel stacks). Otherwise the whole process moves back.
    fn leave_runtime(&mut self, main_thread: bool) {
        let me = std::process::id().to_string();
        let alone = self.runtime_by_thread && main_thread;
        let runtimes = self
            .runtime_hierarchies()
            .into_iter()
            .map(|(_, pod_dir)| pod_dir.join(RUNTIME));
        for (origin, runtime) in std::mem::take(&mut self.runtime_origin)
            .iter()
            .zip(runtimes)
        {
            let left = alone
                && move_this_thread(&*self.sys, origin).is_ok()
                && emptied(&runtime.join("tasks"));
            if left {
                continue;
            }
            if let Err(e) = self.sys.write(&origin.join("cgroup.procs"), &me) {
                tracing::warn!(cgroup = %origin.display(), error = %e, "cannot move wpod back to its cgroup");
            }
        }
    }
}

/// Whether the v1 `tasks` file lists no thread, within [`THREADS_EXIT_WITHIN`]: the sidecars'
/// runtime, shut down just before, has joined its threads, but a joined thread is listed until
/// it has exited.
fn emptied(tasks: &Path) -> bool {
    let deadline = std::time::Instant::now() + THREADS_EXIT_WITHIN;
    loop {
        match std::fs::read_to_string(tasks) {
            Ok(threads) if threads.trim().is_empty() => return true,
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(250))
            }
            _ => return false,
        }
    }
}

/// How long [`emptied`] waits for exiting threads: well below the grace period a whole move
/// may wait for.
const THREADS_EXIT_WITHIN: Duration = Duration::from_millis(3);

impl Drop for PodCgroups {
    fn drop(&mut self) {
        self.leave_runtime(on_main_thread());
        for d in &self.pod_dirs {
            // Containers remove their own; anything left here is a leftover to clear, deepest
            // first (a cgroup with children cannot go).
            remove_tree(&*self.sys, d);
            // The shared parents (`wpod/<root-id>`, `wpod`) go too once no other pod uses them.
            for parent in d.ancestors().skip(1).take(2) {
                let _ = self.sys.rmdir(parent);
            }
        }
    }
}

/// Where an earlier run may have made a pod's cgroups, given this run's tree root `base`: the
/// same, and when `base` is a scope wpod asked systemd for (each run gets its own,
/// `wpod-PID.scope`), every such scope beside it (a scope stays while a process of a killed
/// run's pod is left in it).
fn earlier_scopes(base: &Path) -> Vec<PathBuf> {
    let is_scope = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("wpod-") && n.ends_with(".scope"))
    };
    let mut found = vec![base.to_path_buf()];
    if let (true, Some(parent)) = (is_scope(base), base.parent()) {
        let siblings = std::fs::read_dir(parent).into_iter().flatten().flatten();
        found.extend(
            siblings
                .map(|e| e.path())
                .filter(|p| p != base && is_scope(p)),
        );
    }
    found
}

/// Removes the cgroups of this pod (of this state root) left behind by a runtime that was
/// killed. The caller holds the pod's lock, so no live run of it can own them.
pub fn remove_stale(pod: &PodName) {
    let host = Host::real();
    match crate::files::rootless_uid() {
        // A rootless pod's are under the cgroups delegated to the user (when any).
        Some(_) => {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            if let Some(layout) = delegated_layout(&host.cgroup_root, &own, &Ownership::real()) {
                remove_stale_in(&host, layout, true, pod);
            }
        }
        None => remove_stale_in(&host, detect(&host.cgroup_root), false, pod),
    }
}

fn remove_stale_in(host: &Host, layout: Layout, delegated: bool, pod: &PodName) {
    let pod_dirs: Vec<PathBuf> = roots(&layout)
        .iter()
        .flat_map(|r| earlier_scopes(r))
        .map(|r| pod_dir(&r, pod))
        .filter(|d| d.exists())
        .collect();
    if pod_dirs.is_empty() {
        return;
    }
    // Dropping removes what is there: containers' cgroups, then the pod's.
    drop(PodCgroups {
        sys: host.sys.clone(),
        mount_root: host.cgroup_root.clone(),
        layout,
        delegated,
        pod_dirs,
        runtime_origin: Vec::new(),
        runtime_by_thread: false,
        runtime_limit: Default::default(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_never_overflows() {
        assert_eq!(cfs_quota_us(500), Some(50_000));
        assert_eq!(cfs_quota_us(1), Some(1000));
        assert_eq!(cfs_quota_us(u64::MAX), None);
        assert_eq!(cfs_quota_us(1_000_000_000_000_000), None);
    }

    /// A killed run's pod cgroups are found in its own scope, beside this run's.
    #[test]
    fn a_later_run_looks_in_earlier_runs_scopes() {
        let dir = std::env::temp_dir().join(format!("wpod-unit-scopes-{}", std::process::id()));
        let slice = dir.join("app.slice");
        for unit in ["wpod-1.scope", "wpod-2.scope", "app-term-3.scope"] {
            std::fs::create_dir_all(slice.join(unit)).unwrap();
        }
        let mut found = earlier_scopes(&slice.join("wpod-1.scope"));
        found.sort();
        assert_eq!(
            found,
            [slice.join("wpod-1.scope"), slice.join("wpod-2.scope")]
        );
        // A tree rooted elsewhere (root's, or a cgroup delegated by hand) is that alone.
        assert_eq!(earlier_scopes(&slice), std::slice::from_ref(&slice));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finds_own_cgroup_per_hierarchy() {
        let own = "4:memory:/session/a\n1:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            current_cgroup(own, Path::new("/sys/fs/cgroup/memory"), Some("memory")),
            Path::new("/sys/fs/cgroup/memory/session/a")
        );
        assert_eq!(
            current_cgroup(own, Path::new("/sys/fs/cgroup/cpu"), Some("cpu")),
            Path::new("/sys/fs/cgroup/cpu/")
        );
        assert_eq!(
            current_cgroup(own, Path::new("/sys/fs/cgroup"), None),
            Path::new("/sys/fs/cgroup/user.slice")
        );
    }

    /// The cgroup code run against the recording fake and a directory of fixture files: what
    /// it writes, where, in which order, and what it removes, without root.
    mod seam {
        use super::*;
        use crate::sys::fake::{Call, RecordingSyscall};
        use nix::errno::Errno;

        /// What the kernel gives a new cgroup on a v2 host (the files wpod reads or writes).
        const V2_FILES: &[(&str, &str)] = &[
            ("cgroup.procs", ""),
            ("cgroup.controllers", "cpu memory pids"),
            ("cgroup.subtree_control", ""),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.events", "oom_kill 0"),
            ("cpu.max", "max 100000"),
            ("pids.max", "max"),
        ];

        /// A hybrid host's v1 hierarchies' files (both hierarchies get all of them).
        const V1_FILES: &[(&str, &str)] = &[
            ("cgroup.procs", ""),
            ("tasks", ""),
            ("memory.limit_in_bytes", "-1"),
            ("memory.oom_control", "oom_kill 0"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
        ];

        fn host(fake: &Arc<RecordingSyscall>) -> Host {
            Host {
                sys: fake.clone(),
                cgroup_root: fake.root.clone(),
            }
        }

        fn read(path: PathBuf) -> String {
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }

        fn limits() -> ResourceList {
            ResourceList {
                cpu_millis: Some(500),
                memory_bytes: Some(512 << 20),
            }
        }

        fn v2() -> Arc<RecordingSyscall> {
            let fake = Arc::new(RecordingSyscall::new("cgroup-v2", V2_FILES));
            std::fs::write(fake.path("cgroup.controllers"), "cpu io memory pids").unwrap();
            fake
        }

        /// `cpu: 700m` is a quota of exactly 70000 µs per 100000 µs period, from the manifest to
        /// the cgroup file (a float parse gave 70100), and `0.15` cores 15000. (Below one core:
        /// a limit of every CPU of the host is not written.)
        #[test]
        fn cpu_quantities_reach_the_quota_exactly() {
            for (cpu, want) in [("700m", "70000 100000"), ("\"0.15\"", "15000 100000")] {
                let yaml = format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  \
                     - name: main\n    image: /\n    command: [id]\n    resources: {{limits: {{cpu: {cpu}}}}}\n"
                );
                let pods = crate::spec::parse(Path::new("pod.yaml"), &yaml).expect("a valid pod");
                let limits = &pods[0].spec.containers[0].resources.limits;
                let fake = v2();
                let pod = PodName::new("web").unwrap();
                let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
                let (ctr, _) = cgroups.container("main", limits, 1024).unwrap();
                let dir = pod_dir(&fake.root, &pod).join("containers/ctr-main");
                assert_eq!(read(dir.join("cpu.max")), want, "cpu: {cpu}");
                drop(ctr);
            }
        }

        #[test]
        fn v2_limits_are_written_and_controllers_enabled_from_the_top() {
            let fake = v2();
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let pod_dir = pod_dir(&fake.root, &pod);
            let shared = pod_dir.parent().unwrap().to_path_buf();
            // Each level, root first, enables the controllers for the one below.
            let enabled: Vec<PathBuf> = fake
                .calls()
                .iter()
                .filter_map(|c| match c {
                    Call::Write(p, v) if v == "+memory" => Some(p.parent().unwrap().into()),
                    _ => None,
                })
                .collect();
            let levels = [
                fake.root.clone(),
                fake.path("wpod"),
                shared.clone(),
                pod_dir.clone(),
                pod_dir.join("containers"),
            ];
            assert_eq!(enabled, levels);

            let (ctr, warnings) = cgroups.container("main", &limits(), 1024).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let dir = pod_dir.join("containers/ctr-main");
            assert_eq!(read(dir.join("memory.max")), "536870912");
            assert_eq!(
                read(dir.join("memory.swap.max")),
                "0",
                "no swap past the limit"
            );
            assert_eq!(read(dir.join("cpu.max")), "50000 100000");
            assert_eq!(read(dir.join("pids.max")), "1024");

            // Torn down: the container, the pod, then the shared levels nobody else uses.
            drop(ctr);
            drop(cgroups);
            let removed: Vec<PathBuf> = fake
                .calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::Rmdir(p) => Some(p),
                    _ => None,
                })
                .collect();
            assert_eq!(
                removed,
                [
                    dir,
                    pod_dir.join("containers"),
                    pod_dir,
                    shared,
                    fake.path("wpod")
                ]
            );
            assert!(!fake.path("wpod").exists());
        }

        /// The primer moves only its own thread, into the cgroup it is in: a move that changes
        /// nothing, which the kernel still locks for, through `cgroup.threads`; never wpod's
        /// process through `cgroup.procs`. Only on v2: on v1 wpod's moves take no lock.
        #[test]
        fn priming_moves_only_its_own_thread_into_its_own_cgroup() {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let fake = Arc::new(RecordingSyscall::new("prime-v1-none", V1_FILES));
            std::fs::create_dir(fake.path("memory")).unwrap();
            std::fs::write(fake.path("memory/cgroup.procs"), "").unwrap();
            prime_moves(&host(&fake));
            if thread_moves_skip_the_lock() {
                assert!(fake.calls().is_empty(), "v1 primed: {:?}", fake.calls());
            }
            for (tag, files) in [("v2", V2_FILES)] {
                let fake = Arc::new(RecordingSyscall::new(&format!("prime-{tag}"), files));
                let file = if tag == "v1" {
                    std::fs::create_dir(fake.path("memory")).unwrap();
                    std::fs::write(fake.path("memory/cgroup.procs"), "").unwrap();
                    current_cgroup(&own, &fake.path("memory"), Some("memory")).join("tasks")
                } else {
                    std::fs::write(fake.path("cgroup.controllers"), "cpu memory pids").unwrap();
                    current_cgroup(&own, &fake.root, None).join("cgroup.threads")
                };
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                prime_moves(&host(&fake));
                let start = std::time::Instant::now();
                let writes = loop {
                    let writes: Vec<(PathBuf, String)> = fake
                        .calls()
                        .into_iter()
                        .filter_map(|c| match c {
                            Call::Write(path, value) => Some((path, value)),
                            _ => None,
                        })
                        .collect();
                    if !writes.is_empty() || start.elapsed() > Duration::from_secs(10) {
                        break writes;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                assert_eq!(writes.len(), 1, "{tag}: {writes:?}");
                let (path, tid) = &writes[0];
                assert_eq!(path, &file, "{tag}");
                let tid: u32 = tid.parse().unwrap();
                assert_ne!(
                    tid,
                    std::process::id(),
                    "{tag}: the thread, not the process"
                );
                assert_ne!(
                    tid,
                    nix::unistd::gettid().as_raw() as u32,
                    "{tag}: its own thread"
                );
            }
        }

        #[test]
        fn kernel_releases_compare_by_major_and_minor() {
            assert!(kernel_at_least("6.18.44-fc-v1300\n", (5, 17)));
            assert!(kernel_at_least("5.17.0", (5, 17)));
            assert!(!kernel_at_least("5.16.20-arch1", (5, 17)));
            assert!(!kernel_at_least("4.18.0-553.el8_10.x86_64", (5, 17)));
            assert!(!kernel_at_least("weird", (5, 17)));
        }

        /// A process with one thread joins a v1 cgroup by moving that thread alone (`0` into
        /// `tasks`: no kernel lock); one with more threads, or a v2 cgroup, by its PID.
        #[test]
        fn a_single_threaded_process_joins_a_v1_cgroup_through_tasks() {
            let fake = Arc::new(RecordingSyscall::new("join-process", V1_FILES));
            let v1 = fake.path("memory/ctr");
            let v2 = fake.path("unified/ctr");
            for dir in [&v1, &v2] {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join("cgroup.procs"), "").unwrap();
            }
            std::fs::write(v1.join("tasks"), "").unwrap();
            let me = std::process::id().to_string();
            for (procs, single, expected) in [
                (
                    v1.join("cgroup.procs"),
                    true,
                    (v1.join("tasks"), "0".to_string()),
                ),
                (
                    v1.join("cgroup.procs"),
                    false,
                    (v1.join("cgroup.procs"), me.clone()),
                ),
                (
                    v2.join("cgroup.procs"),
                    true,
                    (v2.join("cgroup.procs"), me.clone()),
                ),
            ] {
                let before = fake.calls().len();
                let _ = join_process(&*fake, &procs, single).unwrap();
                assert_eq!(
                    fake.calls()[before..],
                    [Call::Write(expected.0, expected.1)],
                    "{} single-threaded: {single}",
                    procs.display()
                );
            }
            // This test runs beside others: never a single thread.
            assert!(!single_threaded());
        }

        /// wpod joins `_runtime` on v1 by moving its main thread alone when it is on it (the
        /// pod's start), else by PID; the sidecars' runtime then makes its threads there.
        #[test]
        fn wpod_joins_its_v1_runtime_cgroup_by_its_main_thread() {
            let me = std::process::id().to_string();
            for main_thread in [true, false] {
                let fake = Arc::new(RecordingSyscall::new("join-runtime-v1", V1_FILES));
                std::fs::create_dir(fake.path("memory")).unwrap();
                std::fs::write(fake.path("memory/cgroup.procs"), "").unwrap();
                let pod = PodName::new("web").unwrap();
                let mut cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
                assert!(cgroups.runtime_thread_dirs().is_empty(), "not joined yet");
                cgroups.join_runtime_from(None, main_thread).unwrap();
                let runtime = pod_dir(&fake.path("memory"), &pod).join(RUNTIME);
                let joined: Vec<Call> = fake
                    .calls()
                    .into_iter()
                    .filter(|c| matches!(c, Call::Write(p, _) if p.starts_with(&runtime)))
                    .collect();
                let expected = match main_thread {
                    true => Call::Write(runtime.join("tasks"), "0".into()),
                    false => Call::Write(runtime.join("cgroup.procs"), me.clone()),
                };
                assert_eq!(joined, [expected], "main thread: {main_thread}");
                let threads = match main_thread {
                    true => vec![runtime],
                    false => vec![],
                };
                assert_eq!(cgroups.runtime_thread_dirs(), threads, "moved whole: none");
            }
        }

        /// The main thread that joined `_runtime` alone leaves it alone, unless a thread of wpod
        /// is still there; wpod moves whole otherwise.
        #[test]
        fn wpod_leaves_its_v1_runtime_cgroup_as_it_joined() {
            let me = std::process::id().to_string();
            for (joined_alone, leaves_on_main, others_left) in [
                (true, true, false),
                (true, true, true),
                (true, false, false),
                (false, true, false),
            ] {
                let case = format!("joined alone {joined_alone}, leaving on the main thread {leaves_on_main}, a thread left {others_left}");
                let fake = Arc::new(RecordingSyscall::new("leave-runtime-v1", V1_FILES));
                std::fs::create_dir(fake.path("memory")).unwrap();
                std::fs::write(fake.path("memory/cgroup.procs"), "").unwrap();
                let pod = PodName::new("web").unwrap();
                let mut cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
                cgroups.join_runtime_from(None, joined_alone).unwrap();
                let runtime = pod_dir(&fake.path("memory"), &pod).join(RUNTIME);
                let threads = if others_left { "4242\n" } else { "" };
                std::fs::write(runtime.join("tasks"), threads).unwrap();
                // Where this test process is, under the fake's hierarchy.
                let origin = cgroups.runtime_origin[0].clone();
                std::fs::create_dir_all(&origin).unwrap();
                let before = fake.calls().len();
                cgroups.leave_runtime(leaves_on_main);
                let left: Vec<Call> = fake.calls()[before..]
                    .iter()
                    .filter(|c| matches!(c, Call::Write(p, _) if p.parent() == Some(&origin)))
                    .cloned()
                    .collect();
                let alone = Call::Write(origin.join("tasks"), "0".into());
                let whole = Call::Write(origin.join("cgroup.procs"), me.clone());
                let expected = match (joined_alone && leaves_on_main, others_left) {
                    (true, false) => vec![alone],
                    (true, true) => vec![alone, whole],
                    (false, _) => vec![whole],
                };
                assert_eq!(left, expected, "{case}");
                // Left once: the drop moves nothing again.
                let before = fake.calls().len();
                drop(cgroups);
                assert!(
                    !fake.calls()[before..]
                        .iter()
                        .any(|c| matches!(c, Call::Write(p, _) if p.parent() == Some(&origin))),
                    "{case}"
                );
            }
        }

        #[test]
        fn a_hybrid_host_gets_v1_limits_and_a_warning_for_the_missing_controller() {
            let fake = Arc::new(RecordingSyscall::new("cgroup-v1", V1_FILES));
            for hierarchy in ["memory", "cpu"] {
                std::fs::create_dir(fake.path(hierarchy)).unwrap();
                std::fs::write(fake.path(hierarchy).join("cgroup.procs"), "").unwrap();
            }
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let (_ctr, warnings) = cgroups.container("main", &limits(), 1024).unwrap();
            assert!(
                warnings.len() == 1 && warnings[0].contains("no pids cgroup controller"),
                "{warnings:?}"
            );
            let memory = pod_dir(&fake.path("memory"), &pod).join("containers/ctr-main");
            let cpu = pod_dir(&fake.path("cpu"), &pod).join("containers/ctr-main");
            assert_eq!(read(memory.join("memory.limit_in_bytes")), "536870912");
            // The period before the quota: a quota is checked against the period in force.
            let writes: Vec<Call> = fake
                .calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Write(p, _) if p.starts_with(&cpu)))
                .collect();
            assert_eq!(
                writes,
                [
                    Call::Write(cpu.join("cpu.cfs_period_us"), "100000".into()),
                    Call::Write(cpu.join("cpu.cfs_quota_us"), "50000".into()),
                ]
            );
        }

        /// Pod-level `resources.limits` go on the directory of the pod's containers, above
        /// each container's and beside wpod's `_runtime` (never above it), in each hierarchy
        /// that has the controller.
        #[test]
        fn pod_level_limits_bound_the_containers_not_wpod() {
            let fake = v2();
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let warnings = cgroups.limit_pod(&limits());
            assert!(warnings.is_empty(), "{warnings:?}");
            let dir = pod_dir(&fake.root, &pod).join("containers");
            assert_eq!(read(dir.join("memory.max")), "536870912");
            assert_eq!(read(dir.join("memory.swap.max")), "0");
            assert_eq!(read(dir.join("cpu.max")), "50000 100000");
            assert_eq!(read(pod_dir(&fake.root, &pod).join("memory.max")), "max");
            // No pod-level limits: nothing is written.
            let fake = v2();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let before = fake.calls().len();
            assert!(cgroups.limit_pod(&ResourceList::default()).is_empty());
            assert_eq!(fake.calls().len(), before);

            let fake = Arc::new(RecordingSyscall::new("cgroup-v1", V1_FILES));
            std::fs::create_dir(fake.path("memory")).unwrap();
            std::fs::write(fake.path("memory").join("cgroup.procs"), "").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let warnings = cgroups.limit_pod(&limits());
            let memory = pod_dir(&fake.path("memory"), &pod).join("containers");
            assert_eq!(read(memory.join("memory.limit_in_bytes")), "536870912");
            assert!(
                warnings.len() == 2
                    && warnings[0]
                        .starts_with("spec.resources (pod-level): cannot apply the cpu limit"),
                "{warnings:?}"
            );
        }

        /// A rootless pod's cgroups on a v2 host: under the cgroup systemd delegated to the
        /// user (wpod's own), emptied first into its `init` child so that controllers can be
        /// enabled below it; nothing is written above it.
        #[test]
        fn a_rootless_pod_goes_under_the_users_delegated_v2_cgroup() {
            let fake = v2();
            let scope = fake.path("user.slice/user@1000.service/app.slice/wpod-7.scope");
            std::fs::create_dir_all(&scope).unwrap();
            for (file, content) in V2_FILES {
                std::fs::write(scope.join(file), content).unwrap();
            }
            std::fs::write(scope.join("cgroup.procs"), "4000007\n4000008\n").unwrap();
            let own = "0::/user.slice/user@1000.service/app.slice/wpod-7.scope\n";
            // The scope is the user's; nothing above it is.
            let mine = |p: &Path| p.starts_with(&scope);
            let ownership = Ownership {
                writable: &mine,
                marked: &|_: &Path| false,
            };
            let layout = delegated_layout(&fake.root, own, &ownership).expect("delegated");
            assert!(
                matches!(&layout, Layout::V2 { root } if *root == scope),
                "{layout:?}"
            );
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_with(&host(&fake), layout, true, &pod).unwrap();
            let pod_dir = pod_dir(&scope, &pod);
            let calls = fake.calls();
            let at = |wanted: &Call| calls.iter().position(|c| c == wanted);
            let init = scope.join("init/cgroup.procs");
            let moved = at(&Call::Write(init.clone(), "4000008".into())).expect("moved");
            let enabled = at(&Call::Write(
                scope.join("cgroup.subtree_control"),
                "+memory".into(),
            ))
            .expect("enabled");
            assert!(moved < enabled, "{calls:#?}");
            assert!(
                calls.iter().all(|c| match c {
                    Call::Write(p, _) | Call::Mkdir(p) => p.starts_with(&scope),
                    _ => true,
                }),
                "{calls:#?}"
            );
            let (_ctr, warnings) = cgroups.container("main", &limits(), 1024).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let dir = pod_dir.join("containers/ctr-main");
            assert_eq!(read(dir.join("memory.max")), "536870912");
            assert_eq!(read(dir.join("pids.max")), "1024");

            // Once wpod moved itself into `init`, the scope still counts.
            let in_init = "0::/user.slice/user@1000.service/app.slice/wpod-7.scope/init\n";
            let again = delegated_layout(&fake.root, in_init, &ownership);
            assert!(
                matches!(&again, Some(Layout::V2 { root }) if *root == scope),
                "{again:?}"
            );
            // Not the user's: no delegated layout at all.
            let nothing = Ownership {
                writable: &|_: &Path| false,
                marked: &|_: &Path| true,
            };
            assert!(delegated_layout(&fake.root, own, &nothing).is_none());
            // The user's, but a unit systemd manages (a terminal's scope): not delegated,
            // unless systemd marked it so.
            let terminal = fake.path("user.slice/user@1000.service/app.slice/app-term-1.scope");
            std::fs::create_dir_all(&terminal).unwrap();
            let own = "0::/user.slice/user@1000.service/app.slice/app-term-1.scope\n";
            let users = |p: &Path| p.starts_with(&terminal);
            let unmarked = Ownership {
                writable: &users,
                marked: &|_: &Path| false,
            };
            assert!(delegated_layout(&fake.root, own, &unmarked).is_none());
            let marked = Ownership {
                writable: &users,
                marked: &|p: &Path| p == terminal,
            };
            assert!(delegated_layout(&fake.root, own, &marked).is_some());
        }

        /// On a hybrid host each v1 hierarchy counts alone: a limit whose hierarchy has no
        /// cgroup delegated to the user is a warning saying so.
        #[test]
        fn a_rootless_pod_uses_each_delegated_v1_hierarchy_and_names_the_missing_one() {
            let fake = Arc::new(RecordingSyscall::new("cgroup-v1", V1_FILES));
            let own = "9:pids:/\n4:memory:/delegated/alice\n1:cpu:/delegated/alice\n";
            for hierarchy in ["memory", "cpu", "pids"] {
                let mine = fake.path(hierarchy).join("delegated/alice");
                std::fs::create_dir_all(&mine).unwrap();
                for dir in [fake.path(hierarchy), mine] {
                    std::fs::write(dir.join("cgroup.procs"), "").unwrap();
                }
            }
            let mine = |p: &Path| p.components().any(|c| c.as_os_str() == "alice");
            let ownership = Ownership {
                writable: &mine,
                marked: &|_: &Path| false,
            };
            let layout = delegated_layout(&fake.root, own, &ownership).expect("delegated");
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_with(&host(&fake), layout, true, &pod).unwrap();
            let (_ctr, warnings) = cgroups.container("main", &limits(), 1024).unwrap();
            let memory = pod_dir(&fake.path("memory/delegated/alice"), &pod);
            assert_eq!(
                read(memory.join("containers/ctr-main/memory.limit_in_bytes")),
                "536870912"
            );
            assert!(
                warnings.len() == 1
                    && warnings[0].contains("no pids cgroup is delegated to this user"),
                "{warnings:?}"
            );
            // wpod's own cgroup before it joins the pod's: the delegated one, found in its
            // hierarchy (not the hierarchy's root).
            assert_eq!(
                cgroups.own_cgroup(own, &fake.path("memory/delegated/alice")),
                fake.path("memory/delegated/alice")
            );
        }

        #[test]
        fn every_process_is_killed_and_ooms_are_counted() {
            let fake = v2();
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let (ctr, _) = cgroups.container("main", &limits(), 1024).unwrap();
            let dir = pod_dir(&fake.root, &pod).join("containers/ctr-main");
            // (Fake PIDs: only the fake is ever asked to signal them.)
            std::fs::write(dir.join("cgroup.procs"), "4000012\n4000007\n4000012\n").unwrap();
            std::fs::write(dir.join("memory.events"), "low 0\noom 3\noom_kill 3\n").unwrap();
            assert_eq!(ctr.pids(), [4000007, 4000012]);
            assert_eq!(ctr.oom_kills(), 3);
            ctr.kill_all();
            let kills: Vec<Call> = fake
                .calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Kill(..)))
                .collect();
            assert_eq!(
                kills,
                [
                    Call::Kill(4000007, Signal::SIGKILL),
                    Call::Kill(4000012, Signal::SIGKILL)
                ]
            );
            assert!(ctr.pids().is_empty());
        }

        /// The runtime's memory limit is written when it changes, not again while it stays;
        /// after a write failed, it is written whatever it is.
        #[test]
        fn the_runtime_limit_is_written_when_it_changes() {
            let fake = v2();
            fake.fail_when(
                |c| matches!(c, Call::Write(p, v) if p.ends_with("memory.max") && v == "1048576"),
                Errno::EBUSY,
            );
            let pod = PodName::new("web").unwrap();
            let mut cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let warnings = cgroups.join_runtime(Some(64 << 20)).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let file = pod_dir(&fake.root, &pod).join(RUNTIME).join("memory.max");
            let writes = |value: &str| {
                let calls = fake.calls();
                calls
                    .iter()
                    .filter(|c| matches!(c, Call::Write(p, v) if *p == file && v == value))
                    .count()
            };
            assert_eq!(writes("67108864"), 1);
            cgroups.limit_runtime_memory(Some(64 << 20)).unwrap();
            assert_eq!(
                writes("67108864"),
                1,
                "the limit in place, not written again"
            );
            cgroups.limit_runtime_memory(None).unwrap();
            cgroups.limit_runtime_memory(None).unwrap();
            assert_eq!((writes("max"), read(file.clone())), (1, "max".into()));
            // Refused (below the usage, say): tried again next time, though the same.
            assert!(cgroups.limit_runtime_memory(Some(1 << 20)).is_err());
            assert!(cgroups.limit_runtime_memory(Some(1 << 20)).is_err());
            assert_eq!(writes("1048576"), 2);
            cgroups.limit_runtime_memory(None).unwrap();
            assert_eq!(writes("max"), 2, "unknown after the failure: written");
        }

        #[test]
        fn a_limit_the_kernel_refuses_is_a_warning_naming_it() {
            let fake = v2();
            fake.fail_when(
                |c| matches!(c, Call::Write(p, _) if p.ends_with("cpu.max")),
                Errno::EINVAL,
            );
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let (_ctr, warnings) = cgroups.container("main", &limits(), 1024).unwrap();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].starts_with("cannot apply the cpu limit (cpu.max = 50000 100000)"),
                "{warnings:?}"
            );
        }

        #[test]
        fn a_cgroup_left_by_an_earlier_start_is_emptied_and_made_afresh() {
            let fake = v2();
            let pod = PodName::new("web").unwrap();
            let cgroups = PodCgroups::create_in(&host(&fake), &pod).unwrap();
            let dir = pod_dir(&fake.root, &pod).join("containers/ctr-main");
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "4000099\n").unwrap();
            let (_ctr, _) = cgroups.container("main", &limits(), 1024).unwrap();
            let calls = fake.calls();
            let at = |wanted: &Call| calls.iter().position(|c| c == wanted).unwrap();
            assert!(
                at(&Call::Kill(4000099, Signal::SIGKILL)) < at(&Call::Rmdir(dir.clone()))
                    && at(&Call::Rmdir(dir.clone())) < at(&Call::Mkdir(dir.clone())),
                "{calls:#?}"
            );
        }
    }
}
