//! Pods from another shell, as podman's commands of the same names: `wpod ps` (each pod with a
//! state directory, from its event journal) and `wpod logs` (a container's CRI log file).

use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use wpod::sandbox::state_dir;
use wpod::supervisor::journal::{self, PodView};

use crate::cli::Output;

/// The file in a pod's state directory that names the `wpod run` holding it.
pub const PID_FILE: &str = "wpod.pid";

fn pod_dir(pod: &str) -> PathBuf {
    state_dir::root().join("pods").join(pod)
}

/// A pod's view, and whether a supervisor holds it now.
fn view(pod: &str) -> (PodView, bool) {
    let v = journal::read(pod, &pod_dir(pod).join(wpod::supervisor::events::JOURNAL));
    (v, state_dir::in_use(pod))
}

pub fn ps(output: Output) -> anyhow::Result<ExitCode> {
    let pods: Vec<(PodView, bool)> = state_dir::pods().iter().map(|p| view(p)).collect();
    match output {
        Output::Json => {
            let list: Vec<serde_json::Value> = pods
                .iter()
                .map(|(v, alive)| {
                    let mut j = serde_json::to_value(v).unwrap_or_default();
                    j["supervised"] = (*alive).into();
                    if !alive {
                        j["phase"] = "Lost".into();
                    }
                    j
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Text => {
            println!(
                "{:<24} {:<20} {:<10} {:<6} {:>8}  {:<30} STARTED",
                "POD", "CONTAINER", "STATE", "READY", "RESTARTS", "IMAGE"
            );
            for (v, alive) in &pods {
                let phase = if *alive { v.phase.as_str() } else { "Lost" };
                println!(
                    "{:<24} {:<20} {:<10} {:<6} {:>8}  {:<30} {}",
                    v.name,
                    "",
                    phase,
                    "",
                    "",
                    "",
                    v.started.as_deref().unwrap_or("-")
                );
                for c in &v.containers {
                    let state = match c.exit_code {
                        Some(code) if c.state == "exited" => format!("exited({code})"),
                        _ => c.state.clone(),
                    };
                    println!(
                        "{:<24} {:<20} {:<10} {:<6} {:>8}  {:<30}",
                        "",
                        c.name,
                        state,
                        if c.ready { "yes" } else { "no" },
                        c.restarts,
                        c.image.as_deref().unwrap_or("-")
                    );
                }
                if !alive {
                    println!("  (no wpod holds this pod: its run was killed; `wpod __cleanup {}` clears what it left)", v.name);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wpod logs [-f] [--tail N] [-c CONTAINER] POD`: the lines of a container's log file (the
/// rotated files first), each as the container wrote it.
pub fn logs(
    pod: &str,
    container: Option<&str>,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let dir = pod_dir(pod.as_str());
    if !dir.is_dir() {
        bail!("no pod \"{pod}\" on this host (wpod ps lists them)");
    }
    let (v, _) = view(pod.as_str());
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
    let file = dir.join("logs").join(format!("{container}.log"));
    if !file.exists() && !v.containers.iter().any(|c| c.name == container) {
        bail!("pod {pod} has no container \"{container}\"");
    }
    let mut lines = Vec::new();
    for n in (1..=9).rev() {
        read_lines(&wpod::logs::rotated(&file, n), &mut lines);
    }
    let mut offset = read_lines(&file, &mut lines);
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    let mut out = std::io::stdout().lock();
    for l in &lines[skip..] {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    while follow && dir.is_dir() && state_dir::in_use(pod.as_str()) {
        std::thread::sleep(Duration::from_millis(200));
        let mut more = Vec::new();
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if size < offset {
            offset = 0; // rotated: the new file from its start
        }
        offset = read_from(&file, offset, &mut more);
        for l in more {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends the text of each CRI record of `path` to `out`; returns the bytes read.
fn read_lines(path: &Path, out: &mut Vec<String>) -> u64 {
    read_from(path, 0, out)
}

fn read_from(path: &Path, offset: u64, out: &mut Vec<String>) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    // Only whole records: a line being written is read next time.
    let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut partial = String::new();
    for line in buf[..whole].lines().map_while(Result::ok) {
        // TIMESTAMP STREAM P|F TEXT
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        let text = text.unwrap_or_default();
        if tag == Some("P") {
            partial.push_str(text);
            continue;
        }
        partial.push_str(text);
        out.push(std::mem::take(&mut partial));
    }
    offset + whole as u64
}

/// `wpod stop [-t SECONDS] POD`: SIGTERM to the `wpod run` that holds the pod (its ordered
/// termination, as Ctrl-C), a second request after SECONDS (kill what is left), then waits until
/// the pod is gone.
pub fn stop(pod: &str, time: Option<u64>) -> anyhow::Result<ExitCode> {
    let pod = wpod::spec::PodName::new(pod).map_err(anyhow::Error::msg)?;
    let dir = pod_dir(pod.as_str());
    if !dir.is_dir() || !state_dir::in_use(pod.as_str()) {
        bail!("pod {pod} is not running on this host (wpod ps lists the pods)");
    }
    let pid_text = std::fs::read_to_string(dir.join(PID_FILE)).unwrap_or_default();
    let Ok(pid) = pid_text.trim().parse::<i32>() else {
        bail!(
            "pod {pod} is starting or was started by an older wpod: no {PID_FILE} in {}",
            dir.display()
        );
    };
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
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{pod}");
    Ok(ExitCode::SUCCESS)
}
