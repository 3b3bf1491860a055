//! Native containers: processes started inside the pod sandbox through a shim (`shim.rs`), with
//! their root filesystem (`rootfs.rs`) and privileges (`security.rs`) set up as a container
//! runtime does.

pub mod exec;
pub mod launch;
mod launch_read;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod shim;
mod syscall_table;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

use crate::helper::{spawn_helper, HelperCall, HelperChild, HelperIo, LIFELINE_FD};
use crate::logs::{Logs, Stream};
use crate::plan::{ContainerPlan, Image};
use crate::sandbox::cgroups::ContainerCgroup;
use crate::sandbox::PodSandbox;
use crate::status::ExitInfo;
use launch::{BindMount, LaunchSpec, Report, RootfsSpec, SecuritySpec, REPORT_FD};

/// What made a setup step fail: a typed error (its `source`), or the words of a helper's report.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

fn setup_error(
    container: &str,
    step: impl std::fmt::Display,
    source: impl Into<Cause>,
) -> ContainerError {
    ContainerError::Setup {
        container: container.to_string(),
        step: step.to_string(),
        source: source.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {container}: {step}")]
    Setup {
        container: String,
        step: String,
        #[source]
        source: Cause,
    },
    #[error("container {container}: cannot create its cgroup: {source}")]
    Cgroup {
        container: String,
        source: crate::sandbox::cgroups::CgroupError,
    },
}

/// Writes a file only its owner (root) may read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A running native container.
pub struct NativeContainer {
    name: String,
    spec_path: PathBuf,
    shim: HelperChild,
    /// Host PID of the container's process.
    pub pid: i32,
    /// The container's process, by pidfd: exec probes and hooks join its namespaces through
    /// it, so a reused PID never leads them into another process's.
    pidfd: Option<Arc<OwnedFd>>,
    cgroup: ContainerCgroup,
    output: Vec<JoinHandle<()>>,
    /// The polite stop: SIGTERM, or the image's `StopSignal` (nginx's is SIGQUIT).
    pub stop_signal: Signal,
    /// Its termination message: the host file mounted at `terminationMessagePath`, and its
    /// log file when its output stands in for a message (`FallbackToLogsOnError`).
    termination_log: PathBuf,
    fallback_log: Option<PathBuf>,
}

/// The most of a termination message the kubelet keeps.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// What `FallbackToLogsOnError` takes of the output: the last 80 lines, at most 2 KiB.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The termination message of a container that ended with `code`: its file, or the end of its
/// output (`fallback_log`) after an error.
fn termination_message(file: &Path, fallback_log: Option<&Path>, code: i32) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    // Truncated as the kubelet truncates it (not refused when larger).
    if let Ok(f) = crate::files::open_regular(file) {
        let _ = f
            .take(MAX_TERMINATION_MESSAGE as u64)
            .read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !text.is_empty() {
        return Some(text);
    }
    let log = fallback_log.filter(|_| code != 0)?;
    let (lines, _) = crate::logs::LogFiles::at(log.to_path_buf()).read_all(None);
    let start = lines.len().saturating_sub(FALLBACK_LINES);
    let mut tail: String = lines[start..]
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect();
    if tail.len() > FALLBACK_BYTES {
        let mut cut = tail.len() - FALLBACK_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    (!tail.is_empty()).then_some(tail)
}

/// A signal as an image config writes it: `SIGQUIT`, `QUIT` or `3`.
fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().ok()
}

/// The shim's launch description (written as an OCI runtime config): the plan's process with
/// the sandbox's paths (namespaces, volumes by descriptor, the container's cgroup).
fn launch_spec(
    plan: &ContainerPlan,
    sandbox: &PodSandbox,
    cgroup: &ContainerCgroup,
    scratch: PathBuf,
    termination_log: &Path,
    held: &mut Vec<OwnedFd>,
) -> Result<LaunchSpec, ContainerError> {
    let name = plan.name();
    let setup_err = |step: &str, source: Cause| setup_error(name, step, source);
    let process = plan.process.as_ref().ok_or_else(|| {
        setup_err(
            "start",
            "its process was not planned (PodPlan::with_native_processes)".into(),
        )
    })?;
    let mut mounts = Vec::new();
    for m in &process.mounts {
        let source = match &m.sub_path {
            None => sandbox.volumes.source_for_helpers(&m.volume),
            // A subPath is opened beneath the volume wpod opened, following nothing (the
            // kubelet's protection against a container's symlinks), and handed to the shim
            // by descriptor, held until it has mounted it.
            Some(sub) => {
                let volume = sandbox.volumes.fd(&m.volume).ok_or_else(|| {
                    setup_err(
                        "mount volumes",
                        format!("volume {} was not created", m.volume).into(),
                    )
                })?;
                let sub = sandbox.facts.fill(sub);
                let ours = sandbox.volumes.is_written_by_wpod(&m.volume);
                let fd = crate::files::open_beneath(volume, &sub, ours).map_err(|e| {
                    setup_err(
                        &format!("open subPath {sub} of volume {}", m.volume),
                        e.into(),
                    )
                })?;
                let path = PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    fd.as_raw_fd()
                ));
                held.push(fd);
                Some(path)
            }
        }
        .ok_or_else(|| {
            setup_err(
                "mount volumes",
                format!("volume {} was not created", m.volume).into(),
            )
        })?;
        mounts.push(BindMount {
            source,
            target: m.target.clone(),
            read_only: m.read_only,
            no_follow_symlinks: sandbox.nosymfollow_volumes.contains(&m.volume),
            device: sandbox.volumes.is_device(&m.volume),
        });
    }
    // The kubelet mounts the termination log at `terminationMessagePath` (unless a volume is
    // there already).
    let tm = &plan.termination_message.path;
    if !process.mounts.iter().any(|m| m.target == *tm) {
        mounts.push(BindMount {
            source: termination_log.to_path_buf(),
            target: tm.clone(),
            read_only: false,
            no_follow_symlinks: false,
            device: false,
        });
    }
    // A container with an image of its own gets the pod's /etc/hosts and /etc/hostname (a
    // host container sees the host's, as it sees the rest of the host's files).
    if !matches!(plan.image, Image::Host) {
        for (source, target) in &sandbox.etc_files {
            if process.mounts.iter().any(|m| m.target == *target) {
                continue;
            }
            mounts.push(BindMount {
                source: source.clone(),
                target: target.to_string(),
                read_only: true,
                no_follow_symlinks: false,
                device: false,
            });
        }
    }
    Ok(LaunchSpec {
        pod: sandbox.pod.clone(),
        container: name.to_string(),
        argv: process.argv.iter().map(|a| sandbox.facts.fill(a)).collect(),
        env: process
            .env
            .iter()
            .map(|(k, v)| (k.clone(), sandbox.facts.fill(v)))
            .collect(),
        cwd: process.cwd.clone(),
        namespaces: sandbox.namespaces.paths(),
        rootfs: RootfsSpec {
            lowers: process.lowers.clone(),
            scratch,
            read_only: process.read_only_root,
        },
        mounts,
        security: SecuritySpec {
            uid: process.uid,
            gid: process.gid,
            additional_gids: process.additional_gids.clone(),
            capabilities: process.capabilities.clone(),
            no_new_privs: process.no_new_privs,
            seccomp: process.seccomp.clone(),
        },
        cgroup_procs: cgroup.procs_files(),
    })
}

impl NativeContainer {
    /// Starts the container and returns once its program was exec'ed (or setup failed, with
    /// the step and the OS error).
    pub async fn start(
        plan: &ContainerPlan,
        sandbox: &PodSandbox,
        logs: &Arc<Logs>,
        pids_limit: u64,
    ) -> Result<Self, ContainerError> {
        let name = plan.name().to_string();
        let setup_err = |step: &str, source: Cause| setup_error(&name, step, source);
        let (cgroup, warnings) = sandbox
            .cgroups
            .container(&name, &plan.limits, pids_limit)
            .map_err(|source| ContainerError::Cgroup {
                container: name.clone(),
                source,
            })?;
        for w in warnings {
            tracing::warn!(container = %name, "{w}");
        }
        let dir = sandbox.container_dir(&name);
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| {
            setup_error(
                &name,
                format!("create the container directory ({})", scratch.display()),
                e,
            )
        })?;
        // A fresh termination log for each instance, any user's to write (only this container
        // reaches it, through its bind mount).
        let termination_log = dir.join("termination-log");
        std::fs::write(&termination_log, b"")
            .and_then(|()| {
                std::fs::set_permissions(
                    &termination_log,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )
            })
            .map_err(|e| setup_error(&name, "create the termination log", e))?;
        // subPaths, open until the shim has mounted them.
        let mut held = Vec::new();
        let config = launch_spec(plan, sandbox, &cgroup, scratch, &termination_log, &mut held)?
            .to_oci()
            .map_err(|e| setup_err("describe the container (OCI runtime config)", e.into()))?;
        let spec_path = sandbox.launch_config(&name);
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| setup_err("write the launch config", e.into()))?;
        // It holds the container's environment: root's alone.
        write_private(&spec_path, &json).map_err(|e| {
            setup_error(
                &name,
                format!("write the launch config ({})", spec_path.display()),
                e,
            )
        })?;

        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| setup_err("create the report pipe", e.into()))?;
        let call = HelperCall::Container {
            launch_spec: spec_path.clone(),
        };
        let mut shim = spawn_helper(
            &call,
            crate::sandbox::build_id(),
            [HelperIo::Null, HelperIo::Piped, HelperIo::Piped],
            &[
                (sandbox.lifeline.read_fd(), LIFELINE_FD),
                (report_write.as_raw_fd(), REPORT_FD),
            ],
        )
        .map_err(|e| setup_err("start the container shim", e.into()))?;
        drop(report_write);

        let mut output = Vec::new();
        for (pipe, stream) in [
            (shim.stdout.take(), Stream::Stdout),
            (shim.stderr.take(), Stream::Stderr),
        ] {
            let Some(pipe) = pipe else { continue };
            match async_pipe(pipe) {
                Ok(pipe) => output.push(logs.follow(&name, stream, pipe)),
                Err(e) => {
                    // Nothing would read the container's output: it does not start.
                    let _ = shim.kill();
                    let _ = shim.exited().await;
                    return Err(setup_err("read the container's output", e.into()));
                }
            }
        }
        let report = read_report(report_read).await;
        drop(held);
        let mut container = NativeContainer {
            name: name.clone(),
            spec_path: spec_path.clone(),
            shim,
            pid: 0,
            pidfd: None,
            cgroup,
            output,
            stop_signal: plan
                .process
                .as_ref()
                .and_then(|p| p.stop_signal.as_deref())
                .and_then(parse_signal)
                .unwrap_or(Signal::SIGTERM),
            termination_log,
            fallback_log: plan
                .termination_message
                .fallback_to_logs
                .then(|| logs.file(&name)),
        };
        match report {
            Some(Report::Started { pid }) => {
                let shim_pid = container.shim.id() as i32;
                match open_child(pid, shim_pid) {
                    Ok(pidfd) => {
                        container.pid = pid;
                        container.pidfd = pidfd.map(Arc::new);
                        Ok(container)
                    }
                    Err(error) => {
                        container.kill_all();
                        let _ = container.wait().await;
                        Err(setup_err("check the container's process", error.into()))
                    }
                }
            }
            Some(Report::Failed { step, error }) => {
                let _ = container.wait().await;
                // The shim's report: its step, and the error it met, in words (it crossed a
                // process boundary).
                Err(setup_error(&name, step, error))
            }
            None => {
                let exit = container.wait().await;
                Err(setup_err(
                    "start",
                    format!(
                        "the shim exited without reporting (exit code {})",
                        exit.code
                    )
                    .into(),
                ))
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the container's process to end. Cancel-safe: use it in `select!`, then
    /// [`Self::finish`].
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.shim.exited().await
    }

    /// After [`Self::exited`]: empties the cgroup, drains the output, tells how it ended.
    pub async fn finish(&mut self, status: std::io::Result<std::process::ExitStatus>) -> ExitInfo {
        // Whatever the container wrote before exiting is still in the pipes; a process it left
        // behind could hold them open, so the cgroup is emptied first.
        self.cgroup.kill_all();
        for task in self.output.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let oom = self.cgroup.oom_kills() > 0;
        let mut exit = match status {
            Ok(s) => ExitInfo::from_status(s, oom),
            Err(_) => ExitInfo::killed(),
        };
        exit.message = termination_message(
            &self.termination_log,
            self.fallback_log.as_deref(),
            exit.code,
        );
        exit
    }

    /// Waits until the container has exited and its output is drained.
    pub async fn wait(&mut self) -> ExitInfo {
        let status = self.exited().await;
        self.finish(status).await
    }

    /// Sends `signal` to the container's process (through the shim, which forwards it).
    pub fn signal(&self, signal: Signal) {
        let _ = self.shim.signal(signal);
    }

    /// SIGKILLs every process of the container (the end of a grace period).
    pub fn kill_all(&self) {
        if self.cgroup.is_none() {
            self.kill_tree();
        }
        self.cgroup.kill_all();
    }

    /// Without a cgroup (a rootless pod with none delegated) the container's processes are
    /// found from its first one: its descendants through `/proc`, then it, through its pidfd
    /// (never a reused PID). Whatever else is left in its PID namespace (a daemon that left
    /// its parent) the kernel ends with the namespace's first process, or, when the pod shares
    /// one namespace, with the pod.
    fn kill_tree(&self) {
        let Some(pidfd) = &self.pidfd else {
            return;
        };
        for _ in 0..3 {
            let tree = descendants(self.pid);
            // Read while the first process was still there (a zombie keeps its PID): else the
            // PID, and the tree read from it, may be another process's.
            if pidfd_signal(pidfd, 0).is_err() {
                return;
            }
            let _ = pidfd_signal(pidfd, libc::SIGKILL);
            for pid in tree {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // What a dying process forked meanwhile, on the next round.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What it takes to run commands inside this container, detached from it (probes run
    /// beside the task that owns the container).
    pub fn exec_target(&self) -> ExecTarget {
        ExecTarget {
            spec_path: self.spec_path.clone(),
            pid: self.pid,
            pidfd: self.pidfd.clone(),
        }
    }
}

/// A helper's output pipe as the runtime reads it (non-blocking, on its reactor).
fn async_pipe(pipe: std::fs::File) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(pipe))
}

/// What [`ExecTarget::output`] keeps of each stream of a command: the kubelet's limit for an
/// exec probe's output (`maxReadLength`, 10 KiB).
const MAX_EXEC_OUTPUT: u64 = 10 * 1024;

/// A running container commands can be executed in.
#[derive(Clone, Debug)]
pub struct ExecTarget {
    spec_path: PathBuf,
    pid: i32,
    pidfd: Option<Arc<OwnedFd>>,
}

impl ExecTarget {
    /// Runs `argv` inside the container (`wpod __exec`) to its end, with its output; the
    /// command is killed if this is dropped first (a probe's or hook's deadline).
    pub async fn output(&self, argv: &[String]) -> std::io::Result<std::process::Output> {
        use tokio::io::AsyncReadExt;
        let pidfd = self
            .pidfd
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the container has no process"))?;
        let call = HelperCall::Exec {
            launch_spec: self.spec_path.clone(),
            pid: self.pid,
            argv: argv.to_vec(),
        };
        let mut child = spawn_helper(
            &call,
            crate::sandbox::build_id(),
            [HelperIo::Null, HelperIo::Piped, HelperIo::Piped],
            &[(pidfd.as_raw_fd(), exec::PIDFD_FD)],
        )?;
        child.kill_on_drop();
        // The first 10 KiB of each stream are kept, as the kubelet keeps of an exec probe's
        // output; the rest is read and dropped, so a command that prints without end costs
        // wpod no memory.
        let read = |pipe: Option<std::fs::File>| async move {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let mut pipe = async_pipe(pipe)?;
                (&mut pipe)
                    .take(MAX_EXEC_OUTPUT)
                    .read_to_end(&mut bytes)
                    .await?;
                tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
            }
            Ok::<_, std::io::Error>(bytes)
        };
        let (stdout, stderr) =
            tokio::try_join!(read(child.stdout.take()), read(child.stderr.take()))?;
        let status = child.exited().await?;
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// A pidfd for `pid`, which the shim `shim_pid` reported as the container's process, once it
/// is sure to be the shim's child. The report pipe is the shim's, but the container process
/// held a copy of it for an instant after the fork (it closes it first thing), and a PID taken
/// on trust would lead exec probes into whatever process it names. `None`: the process has
/// already ended and been reaped (a quick command), so there is nothing to exec into.
fn open_child(pid: i32, shim_pid: i32) -> Result<Option<OwnedFd>, ChildError> {
    if pid <= 0 {
        return Err(ChildError::Reported { pid, shim_pid });
    }
    // SAFETY: pidfd_open with plain integers; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        return Err(ChildError::PidfdOpen { pid, source: e });
    }
    // SAFETY: a descriptor pidfd_open just returned.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Read after the pidfd exists: were `pid` reused in between, this is the new process's
    // parent, not the shim.
    let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parent_pid(&stat));
    if parent != Some(shim_pid) {
        // A quick command may have ended and been reaped between the two reads (then its
        // /proc entry is gone, or belongs to a process that reused the pid): the pidfd still
        // names the process it was opened for, and says whether that one is gone.
        if exited(&pidfd) {
            return Ok(None);
        }
        return Err(ChildError::NotItsChild { pid, shim_pid });
    }
    Ok(Some(pidfd))
}

/// Why the process a shim reported is not taken as the container's.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error("the shim (pid {shim_pid}) reported pid {pid}")]
    Reported { pid: i32, shim_pid: i32 },
    #[error("pidfd_open({pid})")]
    PidfdOpen {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("the shim (pid {shim_pid}) reported pid {pid}, which is not its child")]
    NotItsChild { pid: i32, shim_pid: i32 },
}

/// Whether the process a pidfd names has ended (`pidfd_send_signal` with no signal: ESRCH).
fn exited(pidfd: &OwnedFd) -> bool {
    pidfd_signal(pidfd, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH))
}

/// Sends `signal` (0: none, only the check) to the process a pidfd names.
fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a pidfd we own, a plain signal number, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match r < 0 {
        true => Err(std::io::Error::last_os_error()),
        false => Ok(()),
    }
}

/// Every descendant of process `pid` still alive, from `/proc/PID/task/TID/children`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            for child in children.unwrap_or_default().split_whitespace() {
                if let Ok(child) = child.parse::<i32>() {
                    if !found.contains(&child) {
                        found.push(child);
                        todo.push(child);
                    }
                }
            }
        }
    }
    found
}

/// The parent PID in a `/proc/PID/stat` line (the field after the command name, which may
/// itself hold spaces and parentheses: the last `)` ends it).
fn parent_pid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

async fn read_report(fd: std::os::fd::OwnedFd) -> Option<Report> {
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(receiver);
    reader.read_line(&mut line).await.ok()?;
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_survives_hostile_command_names() {
        assert_eq!(parent_pid("42 (nginx) S 7 42 42 0"), Some(7));
        // A process may name itself ") R 1 " to pose as a child of PID 1.
        assert_eq!(parent_pid("42 (x) R 1 (y) S 9 42 42 0"), Some(9));
        assert_eq!(parent_pid("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(
            parent_pid(&own),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }
}
