//! Pods from another shell, as podman's commands of the same names: `wpod run -d`, `wpod ps`
//! (each pod's state, folded from its event journal), `wpod logs` (a container's CRI log file),
//! `wpod stop` and `wpod rm`.
//!
//! A pod is *running* while a `wpod run` holds its lock, *lost* when its state directory is
//! there but nobody holds it (a killed run), and *exited* when only its kept logs and journal
//! are left (`$WPOD_ROOT/logs/POD`, until `wpod rm` or its next run).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use wpod::plan::ManifestFiles;
use wpod::sandbox::state_dir;
use wpod::supervisor::api::{
    Answer, ApplyReport, ContainerState, Event, EventRecord, PodDescription, PodPhase, PodView,
    StartState, Versioned,
};
use wpod::supervisor::control;
use wpod::supervisor::journal;

use crate::cli::Output;
use crate::market::{safe, safe_lines};

/// `writeln!` of one line made of what containers, a pod's journal or its control socket said:
/// the whole line is escaped ([`safe`]), so none of it reaches the terminal as a control.
macro_rules! safe_writeln {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, "{}", safe(&format!($($arg)*)))
    };
}

use wpod::sandbox::state_dir::PID_FILE;

fn pod_dir(pod: &str) -> PathBuf {
    state_dir::root().join("pods").join(pod)
}

/// Where a pod stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Running,
    Lost,
    Exited,
}

/// A pod's view (from its journal) and where it stands.
fn view(pod: &str) -> anyhow::Result<(PodView, Standing)> {
    let mut v = journal::read(pod, &journal_path(pod))?;
    let standing = if state_dir::in_use(pod) {
        Standing::Running
    } else if pod_dir(pod).is_dir() {
        v.phase = PodPhase::Lost;
        Standing::Lost
    } else {
        v.phase = PodPhase::Exited;
        Standing::Exited
    };
    Ok((v, standing))
}

fn journal_path(pod: &str) -> PathBuf {
    state_dir::log_dir(pod).join(wpod::supervisor::events::JOURNAL)
}

/// A pod in `wpod ps --output json`: its view and whether a `wpod run` holds it.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    view: &'a PodView,
    supervised: bool,
}

/// Reading the pods' state needs its owner: a state root is its user's alone (their pods'
/// environment, logs, volumes), root's `/var/lib/wpod` or an ordinary user's own (rootless).
/// Said plainly rather than as an empty table or "no pod"; a root that does not exist yet holds
/// no pod.
fn need_owner(command: &str) -> anyhow::Result<()> {
    match foreign_state_root() {
        Some((root, owner)) => bail!(
            "wpod {command} reads the pods' state under {}, which is uid {owner}'s alone: run it \
             as that user ({}), or unset WPOD_ROOT to see your own pods",
            root.display(),
            match owner {
                0 => format!("sudo wpod {command} ..."),
                _ => "sudo -u THAT-USER".to_string(),
            }
        ),
        None => Ok(()),
    }
}

/// The state root and its owner, when it exists and is not this user's.
pub fn foreign_state_root() -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let root = wpod::files::state_root();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(&root).ok()?.uid();
    (owner != me).then_some((root, owner))
}

pub fn ps(all: bool, output: Output) -> anyhow::Result<ExitCode> {
    need_owner("ps")?;
    let mut names = state_dir::pods();
    if all {
        names.extend(state_dir::logged_pods());
        names.sort();
        names.dedup();
    }
    let pods = names
        .iter()
        .map(|p| view(p))
        .collect::<anyhow::Result<Vec<(PodView, Standing)>>>()?;
    match output {
        Output::Json => {
            let list: Vec<Listed> = pods
                .iter()
                .map(|(view, standing)| Listed {
                    view,
                    supervised: *standing == Standing::Running,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Text => {
            use crate::table::{Align::*, Table};
            let mut table = Table::new(&[
                ("POD", Left),
                ("CONTAINER", Left),
                ("STATE", Left),
                ("READY", Left),
                ("RESTARTS", Right),
                ("IP", Left),
                ("IMAGE", Left),
                ("STARTED", Left),
            ]);
            let mut lost = Vec::new();
            // Names, states and images are read from disk (the pod's directory and journal):
            // the table escapes every cell.
            for (v, standing) in &pods {
                let phase = match (standing, v.exit_code) {
                    (Standing::Exited, Some(code)) => format!("Exited({code})"),
                    _ => v.phase.to_string(),
                };
                let ip = match (v.ip.as_deref(), v.network) {
                    (Some(ip), _) => ip,
                    (None, Some(wpod::plan::Network::Host)) => "host",
                    _ => "-",
                };
                let started = v.started.as_deref().unwrap_or("-");
                table.row([v.name.as_str(), "", &phase, "", "", ip, "", started]);
                for c in &v.containers {
                    let restarts = c.restarts.to_string();
                    table.row([
                        "",
                        &c.name,
                        &container_state(c),
                        if c.ready { "yes" } else { "no" },
                        &restarts,
                        "",
                        c.image.as_deref().unwrap_or("-"),
                        "",
                    ]);
                }
                if *standing == Standing::Lost {
                    lost.push(v.name.clone());
                }
            }
            table.print();
            for name in lost {
                println!(
                    "  ({0}: no wpod holds this pod, its run was killed; `wpod rm {0}` clears what it left)",
                    safe(&name)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A container's state in kubectl's words: `Running`, how it ended (`Completed`, `Error`,
/// `OOMKilled`), or why it waits (`PodInitializing`, `ContainerCreating`, `CrashLoopBackOff`,
/// `ImagePullBackOff`, `ErrImagePull`).
fn container_state(c: &wpod::supervisor::api::ContainerView) -> String {
    match (c.state, &c.reason, c.exit_code) {
        (ContainerState::Running, _, _) => "Running".into(),
        (ContainerState::Exited, Some(reason), _) => reason.clone(),
        (ContainerState::Exited, None, Some(code)) => format!("Exited({code})"),
        (ContainerState::Waiting, Some(reason), _) => reason.clone(),
        (state, _, _) => state.to_string(),
    }
}

/// `--since`: a duration before now (`10m`), or an RFC 3339 time, as podman logs takes.
pub fn since(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text}: give a duration (10m, 1h 30m) or an RFC 3339 time (2026-11-28T16:00:00Z)"
        )
    })
}

/// `wpod logs [-f] [--tail N] [-c CONTAINER] [--raw] POD`: the lines of a container's log file
/// (the rotated files first). The files keep the bytes the container wrote; on a terminal each
/// line is printed escaped ([`safe`]: a container's output cannot drive the terminal), unless
/// `raw`; into a pipe or a file, as stored.
pub fn logs(
    pod: &str,
    container: Option<&str>,
    follow: bool,
    tail: Option<usize>,
    since: Option<SystemTime>,
    raw: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    need_owner("logs")?;
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let dir = state_dir::log_dir(pod.as_str());
    if !dir.is_dir() {
        bail!("no pod \"{pod}\" on this host (wpod ps -a lists them)");
    }
    let (v, _) = view(pod.as_str())?;
    let container = match container {
        Some(c) => c.to_string(),
        None => match v.containers.as_slice() {
            [one] => one.name.clone(),
            _ => bail!(
                "pod {pod} has {} containers: choose one with -c ({})",
                v.containers.len(),
                v.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let file = dir.join(format!("{container}.log"));
    if !file.exists() && !v.containers.iter().any(|c| c.name == container) {
        let names: Vec<&str> = v.containers.iter().map(|c| c.name.as_str()).collect();
        let hint = match wpod::spec::did_you_mean(&container, &names) {
            Some(s) => format!("; did you mean \"{s}\"?"),
            None => format!(" (it has {})", names.join(", ")),
        };
        bail!(
            "pod {pod} has no container \"{}\"{}",
            safe(&container),
            safe(&hint)
        );
    }
    let files = wpod::logs::LogFiles::at(file);
    let (lines, mut offset) = files.read_all(since);
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    let escape = !raw && std::io::stdout().is_terminal();
    let print = |out: &mut std::io::StdoutLock<'_>, l: &wpod::logs::CriLine| match output {
        Output::Json => json_log_line(out, &container, l),
        Output::Text => log_line(out, &l.text, escape),
    };
    let mut out = std::io::stdout().lock();
    for l in &lines[skip..] {
        print(&mut out, l)?;
    }
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        // Whether the pod was still held before this read: if not, this read is the last.
        let running = state_dir::in_use(pod.as_str());
        std::thread::sleep(Duration::from_millis(200));
        let (more, next) = files.read_new(offset);
        offset = next;
        for l in &more {
            print(&mut out, l)?;
        }
        out.flush()?;
        if !running {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `wpod logs --output json`: its time, stream and text, as the log file holds them
/// (JSON escapes what a terminal must not see).
fn json_log_line(
    out: &mut impl Write,
    container: &str,
    l: &wpod::logs::CriLine,
) -> std::io::Result<()> {
    let time = l
        .time
        .map(|t| humantime::format_rfc3339_nanos(t).to_string());
    let stream = l.stream.map(|s| match s {
        wpod::logs::Stream::Stdout => "stdout",
        wpod::logs::Stream::Stderr => "stderr",
    });
    let record = serde_json::json!({
        "container": container, "time": time, "stream": stream, "line": l.text,
    });
    writeln!(out, "{record}")
}

/// One line of `wpod logs`: escaped when `escape` (on a terminal), else as stored.
fn log_line(out: &mut impl Write, line: &str, escape: bool) -> std::io::Result<()> {
    if escape {
        writeln!(out, "{}", safe(line))
    } else {
        writeln!(out, "{line}")
    }
}

/// `wpod stop [-t SECONDS] POD`: SIGTERM to the `wpod run` that holds the pod (its ordered
/// termination, as Ctrl-C), a second request after SECONDS (kill what is left), then waits until
/// the pod is gone.
pub fn stop_command(pod: &str, time: Option<u64>, output: Output) -> anyhow::Result<ExitCode> {
    need_owner("stop")?;
    let was_running = stop(pod, time)?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"pod": pod, "wasRunning": was_running})
        ),
        Output::Text => {
            if !was_running {
                // As `podman stop` says of a stopped container: nothing to do, and success.
                eprintln!("pod {} was not running", safe(pod));
            }
            println!("{}", safe(pod));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the pod (see [`stop_command`]); whether it was running. A pod this host does not know
/// is an error.
pub fn stop(pod: &str, time: Option<u64>) -> anyhow::Result<bool> {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let dir = pod_dir(pod.as_str());
    if !dir.is_dir() || !state_dir::in_use(pod.as_str()) {
        if state_dir::log_dir(pod.as_str()).is_dir() {
            return Ok(false);
        }
        bail!("no pod \"{pod}\" on this host (wpod ps -a lists them)");
    }
    let pid_text = std::fs::read_to_string(dir.join(PID_FILE)).unwrap_or_default();
    let Ok(pid) = pid_text.trim().parse::<i32>() else {
        bail!(
            "pod {pod} is starting or was started by an older wpod: no {PID_FILE} in {}",
            dir.display()
        );
    };
    // Opened before the check below, so that it names the process checked (`None`: it has
    // ended already); waited on for the pod's end, which then is seen at once.
    // SAFETY: pidfd_open with plain integers; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a descriptor pidfd_open just returned.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    // The pid must still be a `wpod run` (not a reused number).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if !args.iter().any(|a| *a == b"run") {
        bail!("pod {pod}: process {pid} is not the wpod run holding it; is the pod still running?");
    }
    let terminate = || {
        // SAFETY: kill on a pid checked above to be the wpod run that holds the pod.
        unsafe { libc::kill(pid, libc::SIGTERM) }
    };
    terminate();
    let started = std::time::Instant::now();
    let mut killed = false;
    let mut ended = pidfd.is_none();
    while state_dir::in_use(pod.as_str()) {
        if let Some(t) = time {
            if !killed && started.elapsed() >= Duration::from_secs(t) {
                // A second request (more than 250 ms after the first): what is left is killed.
                terminate();
                killed = true;
            }
        }
        // Without -t the pod's own grace period bounds its termination.
        if let Some(t) = time {
            if started.elapsed() > Duration::from_secs(t + 30) {
                bail!("pod {pod} did not stop within {} seconds", t + 30);
            }
        }
        match &pidfd {
            // Until `wpod run` ends (it releases the pod's lock as it does), or until the
            // time to kill it comes.
            Some(fd) if !ended => {
                let until_kill = time
                    .filter(|_| !killed)
                    .map(|t| Duration::from_secs(t).saturating_sub(started.elapsed()));
                let wait = until_kill.unwrap_or(Duration::from_secs(1));
                let wait = nix::poll::PollTimeout::try_from(wait.max(Duration::from_millis(1)))
                    .unwrap_or(nix::poll::PollTimeout::MAX);
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                ended = matches!(nix::poll::poll(&mut fds, wait), Ok(n) if n > 0);
            }
            // Ended and the lock still held a moment, or no pidfd: look again shortly.
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(true)
}

/// `wpod run -d FILE`: checks the manifest here (its errors as in the foreground), then starts
/// the pod's supervisor as a process of its own, in its own session (no terminal, no daemon),
/// and returns once it says the pod has started, or with its errors once it has failed. Its
/// stdout and stderr go to `$WPOD_ROOT/detached/POD.log`.
/// The one pod of `file`, checked and planned; `doing` says who wants one ("wpod run runs").
pub fn one_pod(files: &ManifestFiles, doing: &str) -> anyhow::Result<wpod::plan::PodPlan> {
    let mut plans = wpod::plan::load(files)?;
    if plans.len() != 1 {
        bail!(
            "{}: {doing} one pod, but the file holds {} Pod documents; put each pod in a file of its own",
            files.manifest.display(),
            plans.len()
        );
    }
    Ok(plans.remove(0))
}

/// The level this wpod logs at (`--log-level`), passed on to the supervisor of a pod it
/// detaches, whose log file then says as much as this command would have.
static LOG_LEVEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Notes this process's `--log-level` for the pods it detaches.
pub fn pass_on_log_level(level: &tracing_subscriber::filter::Targets) {
    let _ = LOG_LEVEL.set(level.to_string());
}

pub fn run_detached(
    files: &ManifestFiles,
    backoff: humantime::Duration,
    audit: bool,
) -> anyhow::Result<ExitCode> {
    start_detached(files, backoff, audit, true)
}

/// [`run_detached`]; `announce`: print the pod's name on stdout once it started (as `podman
/// kube play` does), which a caller answering in JSON does not want.
fn start_detached(
    files: &ManifestFiles,
    backoff: humantime::Duration,
    audit: bool,
    announce: bool,
) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // The kernel's wait before a cgroup move is one for every process: started here, while
    // the manifest is planned and the supervisor starts, its moves pass at once.
    wpod::sandbox::cgroups::prime_moves(&wpod::sys::Host::real());
    let name = one_pod(files, "wpod run runs")?.name().to_string();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "wpod run needs root: it creates namespaces, mounts and cgroups for the pod (try sudo)"
        );
    }
    if state_dir::in_use(&name) {
        bail!("pod {name} is already running (wpod ps lists it; wpod stop {name} stops it)");
    }
    let dir = wpod::files::private_state_dir("detached")?;
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let write_fd = ready_write.as_raw_fd();
    let files = files.absolute()?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(level) = LOG_LEVEL.get() {
        cmd.arg("--log-level").arg(level);
    }
    cmd.arg("run")
        .arg("--ready-fd")
        .arg("3")
        .arg("--backoff-base")
        .arg(backoff.to_string())
        .args(audit.then_some("--audit"))
        .args(
            files
                .objects
                .iter()
                .flat_map(|f| [OsStr::new("--configmap"), f.as_os_str()]),
        )
        .arg(&files.manifest)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, dup2, fcntl.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // fd 3 is the ready pipe in the supervisor, without close-on-exec.
            if write_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(write_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(ready_write);
    // The first line says how it stands: started, or waiting (an image pull backing off).
    let mut said = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::from(ready_read)),
        &mut said,
    );
    if said.trim() == "started" {
        if announce {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(why) = said.trim().strip_prefix("waiting ") {
        if announce {
            println!("{name}");
        }
        eprintln!(
            "pod {name} is waiting: {} (it tries again with back-off; wpod events {name} follows it, wpod stop {name} ends it)",
            safe(why)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // It failed before the pod started: its errors are what the foreground would print.
    let _ = child.wait();
    let errors = std::fs::read_to_string(&log_path).unwrap_or_default();
    // Its errors can carry a registry's or a container's words: escaped line by line (the
    // colours of its own log lines taken out first, so they do not show as escapes).
    eprint!("{}", safe_lines(&without_colours(&errors)));
    Ok(ExitCode::FAILURE)
}

/// `text` without the SGR sequences (`ESC [ digits ; m`: colours and styles) that wpod's own log
/// lines carry; every other escape sequence stays, for [`safe_lines`] to escape.
fn without_colours(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // What follows a colour (`[`, parameters, `m`), if this is one.
        let colour = after.strip_prefix('[').and_then(|p| {
            let n = p
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b';')
                .count();
            p[n..].strip_prefix('m')
        });
        match colour {
            Some(next) => rest = next,
            None => {
                out.push('\x1b');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// In a detached pod's supervisor: tells `wpod run -d` that the pod has started.
/// Tells `wpod run -d` (the parent that reads `fd`) how the pod stands: `waiting ...` (it
/// returns) or `started`. The descriptor stays open: a `started` may follow a `waiting`,
/// written to a pipe nobody reads any more (an error, ignored: `wpod run` ignores SIGPIPE).
pub fn tell_ready_fd(fd: i32, what: &str) {
    // SAFETY: the fd was handed to this process by its parent for these messages; the
    // ManuallyDrop keeps it open for the next one.
    let mut f = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    let _ = f.write_all(what.as_bytes());
}

/// `wpod rm POD...`: a stopped pod's kept logs and journal, and whatever a killed run left
/// (its state directory, mounts and cgroups). A running pod is refused: stop it first.
/// `wpod rm [-a] [-f] POD...`: with `all`, every pod that has ended (and, with `force`, the
/// running ones); with `force`, a running pod is stopped first, as `podman rm -f`.
pub fn rm_command(
    pods: &[String],
    all: bool,
    force: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    need_owner("rm")?;
    let mut names: Vec<String> = pods.to_vec();
    if all {
        names = state_dir::logged_pods();
        names.extend(state_dir::pods());
        names.sort();
        names.dedup();
        names.retain(|n| force || !state_dir::in_use(n));
    }
    let mut stopped = Vec::new();
    if force {
        for name in &names {
            if wpod::spec::PodName::new(name).is_ok() && state_dir::in_use(name) {
                stop(name, None)?;
                stopped.push(name.clone());
            }
        }
    }
    let (removed, code) = rm(&names)?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"removed": removed, "stopped": stopped})
        ),
        Output::Text => {
            for name in &removed {
                println!("{name}");
            }
        }
    }
    Ok(code)
}

/// Removes each ended pod's kept state; the names removed, and whether all were.
fn rm(pods: &[String]) -> anyhow::Result<(Vec<String>, ExitCode)> {
    let mut removed = Vec::new();
    let mut failed = false;
    for pod in pods {
        let name = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
        if state_dir::in_use(name.as_str()) {
            eprintln!("wpod: error: pod {name} is running; stop it first (wpod stop {name}), or remove it with wpod rm -f {name}");
            failed = true;
            continue;
        }
        let logs = state_dir::log_dir(name.as_str());
        let lost = pod_dir(name.as_str()).is_dir()
            || wpod::sandbox::network::recorded_pods().contains(&name.to_string());
        if !logs.is_dir() && !lost {
            eprintln!("wpod: error: no pod \"{name}\" on this host (wpod ps -a lists them)");
            failed = true;
            continue;
        }
        if lost {
            // Taking the pod's lock clears what a killed run left; releasing it removes the rest.
            drop(state_dir::StateDir::acquire(&name)?);
        }
        let _ = std::fs::remove_dir_all(&logs);
        let _ = std::fs::remove_file(
            state_dir::root()
                .join("detached")
                .join(format!("{name}.log")),
        );
        removed.push(name.to_string());
    }
    let code = if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    Ok((removed, code))
}

/// `wpod pod prune`: every pod that is not running goes, as `wpod rm` removes one (podman's
/// `pod prune`): ended pods' kept logs, and what killed runs left, their networks included.
pub fn pod_prune() -> anyhow::Result<ExitCode> {
    let mut names = state_dir::pods();
    names.extend(state_dir::logged_pods());
    names.extend(wpod::sandbox::network::recorded_pods());
    names.sort();
    names.dedup();
    let idle: Vec<String> = names
        .into_iter()
        .filter(|n| wpod::spec::PodName::new(n).is_ok() && !state_dir::in_use(n))
        .collect();
    if idle.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, code) = rm(&idle)?;
    for name in removed {
        println!("{name}");
    }
    Ok(code)
}

/// `wpod events [-f] POD`: the pod's event journal, as `wpod run` printed it (`--output json`:
/// the same JSON lines); `-f` follows it while the pod runs.
pub fn events(pod: &str, follow: bool, output: Output) -> anyhow::Result<ExitCode> {
    need_owner("events")?;
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let path = state_dir::log_dir(pod.as_str()).join(wpod::supervisor::events::JOURNAL);
    if !path.exists() {
        bail!("no pod \"{pod}\" on this host (wpod ps -a lists them)");
    }
    let print = |e: &EventRecord, out: &mut std::io::StdoutLock<'_>| -> anyhow::Result<()> {
        match output {
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::to_string(&wpod::supervisor::api::Record::Event(e.clone()))?
            )?,
            // As `wpod run` printed it (escaped there).
            Output::Text => writeln!(out, "{}", e.text())?,
        }
        Ok(())
    };
    let mut out = std::io::stdout().lock();
    // The rotated part first (the journal is bounded: `supervisor::journal`).
    for e in journal::events(&journal::rotated(&path))? {
        print(&e, &mut out)?;
    }
    // Opened once: the journal stays readable even if `wpod rm` unlinks it meanwhile.
    let mut f = std::fs::File::open(&path)?;
    let mut pending = Vec::new();
    loop {
        // Whether the pod was still held before this read: if not, this read is the last.
        let running = follow && state_dir::in_use(pod.as_str());
        // Rotated since it was opened: what the old file still held, then the new one.
        let moved = {
            use std::os::unix::fs::MetadataExt;
            let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
            running && now.is_some() && now != f.metadata().map(|m| m.ino()).ok()
        };
        f.read_to_end(&mut pending)?;
        let whole = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for e in journal::parse_events(&String::from_utf8_lossy(&pending[..whole]))? {
            print(&e, &mut out)?;
        }
        out.flush()?;
        pending.drain(..whole);
        if moved {
            f = std::fs::File::open(&path)?;
            pending.clear();
            continue;
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

/// `wpod kube down FILE`: stops the file's pods and removes what they kept, as `podman kube
/// down` does.
pub fn kube_down(file: &Path) -> anyhow::Result<ExitCode> {
    need_owner("kube down")?;
    // Only the pods' names are needed: the objects they use may be in files not named here.
    let bytes = wpod::files::read_regular(file, wpod::files::MAX_MANIFEST_BYTES)
        .map_err(wpod::spec::SpecError::from)?;
    let text = String::from_utf8_lossy(&bytes);
    let (pods, diags) = wpod::spec::parse_all(file, &text);
    // Only valid names become paths.
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p.metadata.name.as_str())
        .filter(|n| wpod::spec::PodName::new(n).is_ok())
        .collect();
    if names.is_empty() {
        return Err(wpod::spec::SpecError::Invalid(wpod::spec::Diagnostics(diags)).into());
    }
    let mut code = ExitCode::SUCCESS;
    for name in names {
        if state_dir::in_use(name) {
            stop(name, None)?;
        }
        if state_dir::log_dir(name).is_dir() || pod_dir(name).is_dir() {
            let (removed, removed_all) = rm(&[name.to_string()])?;
            if removed_all != ExitCode::SUCCESS {
                code = ExitCode::FAILURE;
            }
            for name in removed {
                println!("{name}");
            }
        }
    }
    Ok(code)
}

/// The largest answer read from a control socket.
const MAX_ANSWER: u64 = 16 << 20;

/// Sends `request` to the control socket of the running pod `pod`; its result, or its error.
fn control<T: serde::de::DeserializeOwned>(
    pod: &str,
    request: &control::Request,
) -> anyhow::Result<T> {
    use std::os::unix::net::UnixStream;
    let path = pod_dir(pod).join(control::SOCKET);
    let mut stream = control::short_socket_path(&path)
        .and_then(|(_dir, short)| UnixStream::connect(short))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach pod {pod} at {}: {e} (is it running? wpod ps lists the pods)",
                path.display()
            )
        })?;
    // An apply pulls, compiles and waits for the new sidecars to start; the rest is quick.
    let limit = match request {
        control::Request::Apply { .. } => Duration::from_secs(30 * 60),
        control::Request::Describe {} => Duration::from_secs(30),
    };
    stream.set_read_timeout(Some(limit))?;
    stream.write_all(control::request_line(request).as_bytes())?;
    let mut answer = Vec::new();
    (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer)?;
    // The version first: another version is named, not misread.
    let versioned: Versioned = serde_json::from_slice(&answer).map_err(|e| {
        anyhow::anyhow!(
            "pod {pod} answered something that is not JSON ({e}); is this the same wpod version?"
        )
    })?;
    let ours = u64::from(wpod::supervisor::api::VERSION);
    if versioned.version != Some(ours) {
        bail!(
            "pod {pod} speaks control protocol version {}, this wpod {ours}: use the wpod that started it",
            versioned.version.map_or("(none)".to_string(), |v| v.to_string()),
        );
    }
    let answer: Answer<T> = serde_json::from_slice(&answer)
        .map_err(|e| anyhow::anyhow!("pod {pod} answered what this wpod cannot read: {e}"))?;
    match (answer.ok, answer.result) {
        (true, Some(result)) => Ok(result),
        _ => bail!(
            "{}",
            answer
                .error
                .as_deref()
                .unwrap_or("the pod refused the request")
        ),
    }
}

/// `wpod apply FILE`: the running pod's Wasm sidecars changed to match the manifest (the pod's
/// own `wpod run` does it: `supervisor::control`); a pod that is not running is started
/// detached, as `kubectl apply` creates what is missing.
pub fn apply(files: &ManifestFiles, dry_run: bool, output: Output) -> anyhow::Result<ExitCode> {
    // The running pod plans the file itself (and says what is wrong with it): here only its
    // name is read. A file whose pod has no readable name is planned here, for the error.
    let name = match wpod::plan::pod_name(files) {
        Some(name) => name.as_str().to_string(),
        None => one_pod(files, "wpod apply applies")?.name().to_string(),
    };
    if !state_dir::in_use(&name) {
        if dry_run {
            // Not running: the file is planned here (`run_detached` does it otherwise), and
            // any error said.
            one_pod(files, "wpod apply applies")?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&ApplyReport {
                        pod: name,
                        dry_run: true,
                        created: true,
                        ..Default::default()
                    })?
                ),
                Output::Text => {
                    println!("pod/{name} created (dry run: not running; wpod apply would start it)")
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        return run_detached(files, crate::cli::DEFAULT_BACKOFF.parse()?, false);
    }
    let canonical =
        |f: &Path| std::fs::canonicalize(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()));
    let file = canonical(&files.manifest)?;
    let objects = files
        .objects
        .iter()
        .map(|f| canonical(f))
        .collect::<anyhow::Result<_>>()?;
    let result: ApplyReport = control(
        &name,
        &control::Request::Apply {
            file: file.clone(),
            objects,
            dry_run,
        },
    )
    .map_err(|e| {
        // A change only a new pod can take: say at once how to make one.
        let text = format!("{e:#}");
        let pod_level = text.match_indices("set spec.").any(|(i, _)| {
            let rest = &text[i + "set spec.".len()..];
            !rest.starts_with("containers") && !rest.starts_with("initContainers")
        });
        let hint = if text.contains("run it again") || pod_level {
            format!(
                "\n(wpod apply --replace {} stops the pod and runs it again from the file)",
                files.manifest.display()
            )
        } else {
            String::new()
        };
        // Printed line by line, escaped (main's error printing): the hint keeps its line.
        anyhow::anyhow!("{}: pod {name} unchanged: {text}{hint}", file.display())
    })?;
    let not_started: Vec<String> = result
        .added
        .iter()
        .chain(&result.replaced)
        .filter(|c| !dry_run && c.state != Some(StartState::Started))
        .map(|c| format!("{} ({})", c.name, state_word(c.state)))
        .collect();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Text => {
            let dry = if dry_run { " (dry run)" } else { "" };
            if result.unchanged {
                println!("pod/{name} unchanged{dry}");
            } else {
                println!("pod/{name} configured{dry}");
            }
            let (verb_add, verb_rep, verb_rm) = match dry_run {
                true => ("would add", "would replace", "would remove"),
                false => ("added", "replaced", "removed"),
            };
            let note = |s: Option<StartState>| s.map(|s| format!(": {s}")).unwrap_or_default();
            // The pod's answer (names, fields, states): escaped.
            for c in &result.added {
                let line = format!("  {verb_add} sidecar {}{}", c.name, note(c.state));
                println!("{}", safe(&line));
            }
            for c in &result.replaced {
                let line = format!(
                    "  {verb_rep} sidecar {} ({} changed){}",
                    c.name,
                    c.fields.join(", "),
                    note(c.state)
                );
                println!("{}", safe(&line));
            }
            for n in &result.removed {
                println!("  {verb_rm} sidecar {}", safe(n));
            }
            let verb_files = if dry_run { "would update" } else { "updated" };
            for n in &result.refreshed {
                println!("  {verb_files} the files of volume {}", safe(n));
            }
        }
    }
    if !not_started.is_empty() {
        bail!(
            "pod {name}: not started within {}s: {} (see wpod events {name} and wpod logs {name} -c NAME)",
            control::START_TIMEOUT.as_secs(),
            not_started.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wpod apply --replace FILE`: the pod stopped and run again from the file (the file checked
/// first, so a manifest with errors stops nothing), for what a running pod cannot take.
pub fn replace(files: &ManifestFiles, dry_run: bool, output: Output) -> anyhow::Result<ExitCode> {
    let plan = one_pod(files, "wpod apply --replace replaces")?;
    let name = plan.name().to_string();
    let file = files.manifest.display().to_string();
    let running = state_dir::in_use(&name);
    let dry = if dry_run { " (dry run)" } else { "" };
    if running {
        need_owner("apply --replace")?;
        // The running pod's grace period is the one its stop takes (not the file's).
        let grace =
            control::<wpod::supervisor::api::PodDescription>(&name, &control::Request::Describe {})
                .map(|d| format!("up to {}s", d.grace_period_seconds))
                .unwrap_or_else(|_| "their grace period".to_string());
        eprintln!(
            "pod {name}: stopping it (its containers get {grace}, as wpod stop), then running it again from {}{dry}",
            safe(&file)
        );
    } else {
        eprintln!(
            "pod {name} is not running: starting it from {}{dry}",
            safe(&file)
        );
    }
    let report = |started: bool| {
        if output == Output::Json {
            println!(
                "{}",
                serde_json::json!({"pod": name, "dryRun": dry_run, "wasRunning": running, "started": started})
            );
        }
    };
    if dry_run {
        report(false);
        return Ok(ExitCode::SUCCESS);
    }
    if running {
        stop(&name, None)?;
    }
    let code = start_detached(
        files,
        crate::cli::DEFAULT_BACKOFF.parse()?,
        false,
        output == Output::Text,
    )?;
    report(code == ExitCode::SUCCESS);
    Ok(code)
}

fn state_word(state: Option<StartState>) -> String {
    state.map_or_else(|| "?".to_string(), |s| s.to_string())
}

/// `wpod describe POD`: as `kubectl describe pod`, from the pod's journal and, while it runs,
/// its control socket (the plan it runs now and each sidecar's grants).
pub fn describe(pod: &str, output: Output) -> anyhow::Result<ExitCode> {
    need_owner("describe")?;
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let pod = pod.as_str();
    let (v, standing) = view(pod)?;
    if standing == Standing::Exited && !state_dir::log_dir(pod).is_dir() {
        bail!("no pod \"{pod}\" on this host (wpod ps -a lists them)");
    }
    let plan: Option<PodDescription> = match standing {
        Standing::Running => Some(control(pod, &control::Request::Describe {})?),
        _ => None,
    };
    let events = journal::events(&journal_path(pod))?;
    if output == Output::Json {
        #[derive(serde::Serialize)]
        struct Described<'a> {
            pod: &'a PodView,
            plan: &'a Option<PodDescription>,
            events: Vec<wpod::supervisor::api::Record>,
        }
        let described = Described {
            pod: &v,
            plan: &plan,
            events: events
                .iter()
                .cloned()
                .map(wpod::supervisor::api::Record::Event)
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&described)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    safe_writeln!(out, "Name:        {pod}")?;
    safe_writeln!(out, "Status:      {}", v.phase)?;
    match (v.ip.as_deref(), v.network) {
        (Some(ip), _) => safe_writeln!(out, "IP:          {ip}")?,
        (None, Some(wpod::plan::Network::Host)) => {
            safe_writeln!(out, "IP:          (the host's network)")?
        }
        (None, Some(wpod::plan::Network::Loopback)) => {
            safe_writeln!(out, "IP:          (none: loopback only)")?
        }
        _ => {}
    }
    if let Some(s) = &v.started {
        safe_writeln!(out, "Started:     {s}")?;
    }
    if let Some(p) = &plan {
        safe_writeln!(out, "Supervisor:  wpod run, pid {}", p.pid)?;
        safe_writeln!(out, "Grace:       {}s", p.grace_period_seconds)?;
        if let Some(ids) = &p.user_namespace {
            safe_writeln!(
                out,
                "Users:       own namespace: IDs 0-{} are the host's {}-{} (groups {}-{})",
                ids.size - 1,
                ids.host_uid,
                ids.host_uid + (ids.size - 1),
                ids.host_gid,
                ids.host_gid + (ids.size - 1)
            )?;
        }
        for port in &p.host_ports {
            safe_writeln!(
                out,
                "HostPort:    {}:{} -> {} ({})",
                port.host_ip,
                port.host_port,
                port.container_port,
                port.container
            )?;
        }
    }
    writeln!(out, "Containers:")?;
    let planned = plan.as_ref().map_or(&[][..], |p| &p.containers[..]);
    let mut names: Vec<String> = planned.iter().map(|c| c.name.clone()).collect();
    for c in &v.containers {
        if !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    for name in names {
        safe_writeln!(out, "  {name}:")?;
        let p = planned.iter().find(|c| c.name == name);
        if let Some(p) = p {
            let role = match p.role {
                wpod::plan::Role::Init => "init",
                wpod::plan::Role::NativeSidecar => "sidecar",
                wpod::plan::Role::Regular => "regular",
            };
            safe_writeln!(out, "    Role:      {role} ({})", p.path)?;
            safe_writeln!(out, "    Image:     {}", p.image)?;
            if let Some(d) = &p.component {
                safe_writeln!(out, "    Component: {d}")?;
            }
        }
        if let Some(c) = v.containers.iter().find(|c| c.name == name) {
            let pid = c.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            let code = match (c.exit_code, &c.reason) {
                (Some(x), Some(r)) => format!(" (exit code {x}, {r})"),
                (Some(x), None) => format!(" (exit code {x})"),
                _ => String::new(),
            };
            safe_writeln!(out, "    State:     {}{pid}{code}", c.state)?;
            if let Some(m) = &c.message {
                // Kubernetes' `Message:` of a terminated state: the container's own words.
                safe_writeln!(
                    out,
                    "    Message:   {}",
                    m.trim_end().replace('\n', "\n               ")
                )?;
            }
            safe_writeln!(out, "    Ready:     {}", c.ready)?;
            safe_writeln!(out, "    Restarts:  {}", c.restarts)?;
        }
        if let Some(grants) = p.and_then(|p| p.grants.as_ref()) {
            writeln!(out, "    Grants:")?;
            for g in grants {
                safe_writeln!(out, "      {g}")?;
            }
        }
        // Refusals carry the container's running total: the last one counts them all.
        let mine = events
            .iter()
            .rev()
            .filter(|e| e.container.as_deref() == Some(name.as_str()));
        if let Some((total, message)) = mine.clone().find_map(|e| match &e.event {
            Event::Denied { total, message, .. } => Some((total, message)),
            _ => None,
        }) {
            safe_writeln!(out, "    Denied:    {total} (last: {message})")?;
        }
        if let Some((annotation, outbound, listens)) = mine.clone().find_map(|e| match &e.event {
            Event::AuditSummary {
                annotation,
                outbound,
                listens,
                ..
            } => Some((annotation, outbound, listens)),
            _ => None,
        }) {
            safe_writeln!(
                out,
                "    Audit:     {annotation}: \"{}\"; ports {listens:?}",
                outbound.join(",")
            )?;
        }
    }
    writeln!(out, "Events:")?;
    let skip = events.len().saturating_sub(30);
    for e in &events[skip..] {
        // As `wpod run` printed it (escaped there).
        writeln!(out, "  {}", e.text())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_errors_lose_their_colours_and_keep_other_escapes() {
        assert_eq!(without_colours("plain\nerror"), "plain\nerror");
        assert_eq!(
            without_colours("\x1b[2m2026\x1b[0m \x1b[33m WARN\x1b[0m cannot\n"),
            "2026  WARN cannot\n"
        );
        // Anything but a colour stays, for safe_lines to escape.
        let text = without_colours("a\x1b[2Jb\x1b]0;title\x07c\x1b");
        assert_eq!(text, "a\x1b[2Jb\x1b]0;title\x07c\x1b");
        assert_eq!(safe_lines(&text), "a\\x1b[2Jb\\x1b]0;title\\x07c\\x1b");
    }

    #[test]
    fn log_lines_are_escaped_on_a_terminal_only() {
        let mut out = Vec::new();
        log_line(&mut out, "a\x1b[2Jb\u{202e}", true).unwrap();
        log_line(&mut out, "a\x1b[2Jb", false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\x1b[2Jb\\u{202e}\na\x1b[2Jb\n"
        );
    }
}

/// One claim's volume, as `wpod volume ls` shows it.
#[derive(serde::Serialize)]
struct VolumeRow {
    name: String,
    path: std::path::PathBuf,
    bytes: u64,
    in_use: bool,
}

/// `wpod volume ls`: the PersistentVolumeClaims' directories under `$WPOD_ROOT/volumes`.
pub fn volume_list(output: Output) -> anyhow::Result<ExitCode> {
    let root = wpod::files::state_root().join("volumes");
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `.locks` holds the claims' locks.
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            rows.push(VolumeRow {
                in_use: wpod::sandbox::volumes::claim_in_use(&name),
                bytes: dir_bytes(&entry.path()),
                path: entry.path(),
                name,
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            use crate::table::{human_size, Align::*, Table};
            let mut table = Table::new(&[
                ("VOLUME", Left),
                ("SIZE", Right),
                ("IN USE", Left),
                ("PATH", Left),
            ]);
            for r in rows {
                table.row([
                    r.name.clone(),
                    human_size(r.bytes),
                    if r.in_use { "yes" } else { "no" }.to_string(),
                    r.path.display().to_string(),
                ]);
            }
            table.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes of the regular files under `dir` (symlinks not followed).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// `wpod volume rm NAME...`: a claim's data, gone; refused while a running pod uses it.
pub fn volume_remove(names: &[String]) -> anyhow::Result<ExitCode> {
    let root = wpod::files::state_root().join("volumes");
    for name in names {
        wpod::spec::names::dns1123_subdomain(name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", safe(name)))?;
        let dir = root.join(name);
        if !dir.is_dir() {
            bail!("no volume \"{}\" (wpod volume ls lists them)", safe(name));
        }
        let _lock = wpod::sandbox::volumes::claim_lock_exclusive(name).map_err(|_| {
            anyhow::anyhow!(
                "volume \"{}\" is in use by a running pod; stop the pod first",
                safe(name)
            )
        })?;
        std::fs::remove_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))?;
        println!("{}", safe(name));
    }
    Ok(ExitCode::SUCCESS)
}
