//! `wpod sidecar run`: one Wasm sidecar as the process of a container already inside a pod.
//!
//! The container runtime made the pod (its network namespace, the volumes at their
//! mountPaths, the memory limit of the container); wpod plans the sidecar from the Pod manifest
//! as `wpod run` does, refuses at start any grant the container does not back, and runs the
//! component with exactly those grants: sockets in the pod's network to its loopback, its own
//! addresses and its declared ports (and its outbound rules), its volumeMounts as preopens, its
//! memory and handle limits. The readiness the guest signals with `ready()` is a file that
//! `wpod sidecar probe` (the container's startupProbe) checks; SIGTERM is its `stopping`
//! event, with the pod's grace period.
//!
//! Exit codes are a process's: the guest's own code, 1 for a trap, 143 for a guest that cannot
//! hear `stopping`, 137 for one stopped by force, and [`REFUSED`] when it never started.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::context::{pod_net, ContainerVolumes, ContextError};
use crate::grants::report::Reporter;
use crate::logs::Logs;
use crate::oci::store::Digest;
use crate::plan::in_container::{FromRuntime, InContainerPlan};
use crate::plan::{ManifestFiles, WasmComponent};
use crate::sidecars::{PodContext, PreparedSidecar, SidecarError, WasmSidecar};
use crate::spec::env::RuntimeFacts;
use crate::spec::SpecError;
use crate::status::{ExitInfo, PodState};
use crate::supervisor::api::Event;
use crate::supervisor::events::{Events, ReportEvents};

/// The exit code of a sidecar refused at start (as a container runtime reports a container
/// that could not run).
pub const REFUSED: i32 = 128;

/// Descriptors the runner keeps for itself beyond the guest's handles (its runtime, the
/// engine, stdio, the volumes it holds).
const OWN_DESCRIPTORS: u64 = 256;

/// What `wpod sidecar run` is told.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The Pod manifest (and the ConfigMaps, Secrets beside it) the grants come from.
    pub files: ManifestFiles,
    /// The sidecar's container name in that manifest.
    pub container: String,
    /// The component to run.
    pub component: PathBuf,
    /// The sha256 the component must have (`sha256:<hex>`): checked before it is compiled.
    pub component_digest: Option<String>,
    /// The sha256 the manifest must have: a ConfigMap of the same name made by someone else
    /// is refused, not obeyed.
    pub manifest_digest: Option<String>,
    /// A directory of the container's own, writable: the readiness file and the compile cache.
    pub state_dir: PathBuf,
    /// Where the container's termination message goes (Kubernetes' `terminationMessagePath`).
    pub termination_log: PathBuf,
    /// Compiled entries shipped with the component (a runner image's), tried before the
    /// cache in the state directory; ignored when missing.
    pub precompiled: Option<PathBuf>,
    /// The guest's argv as the container runtime expanded it (what follows `--`); with it, the
    /// guest's environment is the runner's own (less its `WPOD_*` settings). Without it, both
    /// come from the manifest, as `wpod run` makes them.
    pub argv: Option<Vec<String>>,
    /// The pod's main containers, which the main-process view shows (`--main`).
    pub mains: Vec<String>,
    /// The registry artifact the component came from (`REPO[:TAG]@sha256:...`), for a sidecar
    /// pulled into wpod's store: it runs only while `approvals` approves it.
    pub artifact: Option<String>,
    /// The approvals file the runner checks `artifact` against at each start (a ConfigMap the
    /// cluster's admins keep): a digest taken out of it stops the sidecar's next start.
    pub approvals: Option<PathBuf>,
}

/// Why the sidecar did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Manifest(#[from] SpecError),
    #[error("--component-digest {0:?} is not a sha256 digest (sha256:<64 hex digits>)")]
    Digest(String),
    #[error(transparent)]
    Volume(#[from] ContextError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(
        "--state-dir {}: {source}; give the runner a writable directory of its own (an \
         emptyDir mounted there)",
        path.display()
    )]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// The readiness the guest signalled, as `wpod sidecar probe` checks it: the runner that wrote
/// it (a file left by an earlier run of the container never passes) and the component.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub pid: i32,
    /// The runner's start time in clock ticks after boot (`/proc/PID/stat`, field 22): a PID
    /// reused by another process does not pass.
    pub start_ticks: u64,
    pub container: String,
    pub digest: String,
}

/// The readiness file in `state_dir`.
pub fn readiness_file(state_dir: &Path) -> PathBuf {
    state_dir.join("ready")
}

/// Plans and checks everything, then runs the sidecar until it ends; the container's exit code.
/// Must run inside a Tokio runtime; `WPOD_ROOT` must already be the state directory.
pub async fn run(options: &RunOptions) -> Result<i32, RunnerError> {
    // Not dumpable: another container's process of the same user (a distroless image's 65532,
    // or one that can setgid to it) cannot read the runner's /proc (its descriptors, the
    // guest's environment) nor ptrace it.
    // SAFETY: prctl with plain integers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // First of all: as a container's PID 1, a SIGTERM without a handler would be ignored, and
    // one that comes while the sidecar is prepared must end it, not be lost.
    let (Ok(mut term), Ok(int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Err(RunnerError::Refused(
            "cannot handle SIGTERM, so the sidecar could not be stopped politely".into(),
        ));
    };
    let digest = options
        .component_digest
        .as_deref()
        .map(|d| Digest::parse(d).map_err(|_| RunnerError::Digest(d.to_string())))
        .transpose()?;
    let component = WasmComponent {
        digest,
        ..WasmComponent::file(options.component.clone())
    };
    let given = options.argv.as_ref().map(|argv| FromRuntime {
        argv: argv.clone(),
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    });
    if let Some(expected) = &options.manifest_digest {
        let bytes =
            crate::files::read_regular(&options.files.manifest, crate::files::MAX_MANIFEST_BYTES)
                .map_err(|e| RunnerError::Manifest(SpecError::from(e)))?;
        let actual = Digest::of(&bytes).to_string();
        if actual != *expected {
            return Err(RunnerError::Refused(format!(
                "the manifest {} is {actual}, not the {expected} `wpod kube generate` pinned: \
                 another ConfigMap stands in its place; apply the generated YAML again",
                options.files.manifest.display()
            )));
        }
    }
    let plan = crate::plan::in_container::load(
        &options.files,
        &options.container,
        component,
        given,
        &options.mains,
    )?;
    let grants = plan
        .container
        .grants
        .as_ref()
        .ok_or_else(|| RunnerError::Refused("not a Wasm sidecar".into()))?;
    super::main_view::check_backed(&grants.process).map_err(RunnerError::Refused)?;
    let main_watch = match grants.process.read {
        true => Some(
            super::main_view::MainWatch::new(plan.main_containers.clone(), plan.container.name())
                .map_err(RunnerError::Refused)?,
        ),
        false => None,
    };
    check_approved(options)?;
    // The runner's own files stay out of the guest's reach: none may lie in one of its volumes
    // (named from anywhere: relative paths made absolute first).
    let binary = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let owned: Vec<(&'static str, PathBuf)> = [
        ("state directory", absolute(&options.state_dir)),
        ("manifest", absolute(&options.files.manifest)),
        ("component", absolute(&options.component)),
        ("termination log", absolute(&options.termination_log)),
        ("binary", binary.clone()),
    ]
    .into_iter()
    .chain(options.approvals.iter().map(|f| ("approvals", absolute(f))))
    .chain(
        options
            .precompiled
            .iter()
            .map(|d| ("precompiled code", absolute(d))),
    )
    .chain(mapped_files().into_iter().map(|f| ("library", f)))
    .collect();
    let protected: Vec<(&'static str, &Path)> =
        owned.iter().map(|(w, p)| (*w, p.as_path())).collect();
    let volumes = ContainerVolumes::open(&grants.fs.mounts, &protected)?;
    check_descriptors(plan.settings.sidecar_max_handles)?;
    prepare_state_dir(&options.state_dir)?;
    let ready_file = readiness_file(&options.state_dir);
    let _ = std::fs::remove_file(&ready_file);

    let name = plan.container.name().to_string();
    let events = Arc::new(Events::new(&name, crate::logs::OutputFormat::Text));
    if let Some(dir) = options
        .precompiled
        .as_deref()
        .filter(|d| on_image(d, &binary))
    {
        crate::sidecars::cache::use_precompiled(dir);
    }
    crate::sidecars::engine::shared_for(1).map_err(SidecarError::from)?;
    // Compiling may take seconds: a SIGTERM meanwhile ends the container as a process without
    // a handler ends (143), without starting the guest.
    let to_prepare = plan.container.clone();
    let preparing = tokio::task::spawn_blocking(move || PreparedSidecar::prepare(&to_prepare));
    let prepared = tokio::select! {
        prepared = preparing => prepared
            .map_err(|e| RunnerError::Refused(format!("preparing the sidecar failed: {e}")))??,
        _ = term.recv() => {
            events.emit(Some(&name), Event::Exited(ExitInfo::terminated()));
            return Ok(ExitInfo::terminated().code);
        }
    };
    if !prepared.component.cached {
        tracing::info!(container = %name, "compiled the component (no precompiled code for this CPU, nor any in the state directory)");
    }
    let network = Arc::new(pod_net(plan.host_aliases.clone(), plan.host_network));
    let facts = Arc::new(RuntimeFacts {
        pod_ip: network
            .ips
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        host_ip: std::env::var("WPOD_HOST_IP").unwrap_or_default(),
        uid: std::env::var("WPOD_POD_UID").unwrap_or_default(),
    });
    let state = PodState::new(plan.main_containers.clone());
    if let Some(mut watch) = main_watch {
        // Looked at once before the guest starts, so that its first question has an answer.
        watch.update(&state);
        watch.spawn(state.clone()).map_err(|e| {
            RunnerError::Refused(format!("cannot start watching the main containers: {e}"))
        })?;
    }
    let logs = Logs::stdio((&plan.settings).into());
    let ctx = PodContext {
        runtime: tokio::runtime::Handle::current(),
        state: state.clone(),
        logs,
        volumes: &volumes,
        max_handles: plan.settings.sidecar_max_handles,
        network,
        reports: Reporter::new(Arc::new(ReportEvents(events.clone())), false),
        facts,
    };
    let mut sidecar = WasmSidecar::start(&prepared, &ctx)?;
    events.emit(
        Some(&name),
        Event::Started {
            pid: Some(std::process::id() as i32),
            restarts: 0,
            image: Some(plan.container.shown_image.clone()),
        },
    );
    let signals = Signals { term, int };
    let exit = supervise(
        &mut sidecar,
        &plan,
        &state,
        &events,
        &ready_file,
        &prepared,
        signals,
    )
    .await;
    let _ = std::fs::remove_file(&ready_file);
    if let Some(message) = &exit.message {
        write_termination_log(&options.termination_log, message);
    }
    events.emit(Some(&name), Event::Exited(exit.clone()));
    Ok(exit.code)
}

/// Waits for the sidecar to end: its readiness becomes the file, SIGTERM its `stopping` (the
/// grace period, then by force), a second SIGTERM or a SIGINT ends it at once.
async fn supervise(
    sidecar: &mut WasmSidecar,
    plan: &InContainerPlan,
    state: &PodState,
    events: &Events,
    ready_file: &Path,
    prepared: &PreparedSidecar,
    signals: Signals,
) -> ExitInfo {
    let name = plan.container.name().to_string();
    let mut ready = state.watch_ready();
    let mut told_ready = false;
    let Signals { mut term, mut int } = signals;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let grace_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = sidecar.exited() => return exit,
            changed = ready.changed(), if !told_ready => {
                if changed.is_err() {
                    continue;
                }
                if ready.borrow_and_update().contains(&name) {
                    told_ready = true;
                    match write_readiness(ready_file, &name, prepared.digest()) {
                        Ok(()) => events.emit(Some(&name), Event::Ready),
                        Err(e) => events.emit(Some(&name), Event::Warning {
                            message: format!(
                                "the sidecar is ready, but its readiness file {} cannot be \
                                 written ({e}): its startupProbe will not pass",
                                ready_file.display()
                            ),
                        }),
                    }
                }
            }
            _ = term.recv() => {
                if deadline.is_some() {
                    stop_now(sidecar, events, &name, "SIGTERM again");
                    continue;
                }
                let at = tokio::time::Instant::now() + plan.grace_period;
                deadline = Some(at);
                if sidecar.stopping(at) {
                    events.emit(Some(&name), Event::StoppedAtOnce);
                }
            }
            _ = int.recv() => stop_now(sidecar, events, &name, "SIGINT"),
            () = grace_over => {
                deadline = None;
                sidecar.kill();
                events.emit(Some(&name), Event::Killed);
            }
        }
    }
}

/// The signals the runner handles, installed before anything else.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// Whether `dir` lies on the same mount as the runner's binary (the image's root), and that
/// mount is read-only: only such precompiled code is trusted, never a volume's, whose writer
/// could sign its own.
fn on_image(dir: &Path, binary: &Path) -> bool {
    let id = |p: &Path| {
        std::fs::File::open(p)
            .ok()
            .and_then(|f| crate::mounts::mount_id(std::os::fd::AsFd::as_fd(&f)).ok())
    };
    let read_only = nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let same = matches!((id(dir), id(binary)), (Some(a), Some(b)) if a == b);
    if !(same && read_only) {
        tracing::warn!(dir = %dir.display(), "precompiled code not on the image's own read-only filesystem: not used");
    }
    same && read_only
}

/// The files mapped into the runner (its libraries, its loader): a guest that could write one
/// would run its code in the runner at its next start.
fn mapped_files() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Stops the sidecar by force before its grace period ends, saying why.
fn stop_now(sidecar: &WasmSidecar, events: &Events, name: &str, why: &str) {
    sidecar.kill();
    events.emit(
        Some(name),
        Event::Warning {
            message: format!("stopped at once ({why})"),
        },
    );
}

/// A sidecar from a registry runs only while the approvals file approves its artifact: that
/// very digest, approved as a Wasm sidecar, with imports (read again from the component's
/// bytes) that add nothing to what was approved. `kube generate` writes the exact approval of
/// each sidecar it takes, so withdrawing that entry stops the next start. A missing file
/// approves nothing.
fn check_approved(options: &RunOptions) -> Result<(), RunnerError> {
    use crate::oci::approvals::{Approvals, ArtifactKind};
    let Some(artifact) = &options.artifact else {
        return Ok(());
    };
    let refused = |why: String| RunnerError::Refused(format!("--artifact {artifact}: {why}"));
    let name =
        crate::oci::reference::ImageName::parse(artifact).map_err(|e| refused(e.to_string()))?;
    let digest = name
        .digest
        .as_deref()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| refused("name it by its digest (REPO@sha256:...)".into()))?;
    let file = options.approvals.clone().ok_or_else(|| {
        refused("a sidecar from a registry needs --approvals FILE, which approves it".into())
    })?;
    let approvals = Approvals::load_from(file.clone()).map_err(|e| refused(e.to_string()))?;
    let Some(approval) = approvals.of(&name.repository_name(), &digest) else {
        return Err(refused(format!(
            "not approved by {} (withdrawn, or never given): review it with `wpod pull` and \
             apply the approvals again",
            file.display()
        )));
    };
    if approval.kind != ArtifactKind::Sidecar {
        return Err(refused(format!(
            "{} approves it as {}, not as a Wasm sidecar",
            file.display(),
            approval.kind
        )));
    }
    let imports: Vec<String> = crate::grants::inspect::inspect(&options.component)
        .map_err(|e| refused(e.to_string()))?
        .imports
        .into_iter()
        .map(|i| i.name)
        .collect();
    let diff = crate::component::ImportDiff::between(&approval.imports, &imports);
    if diff.increases(crate::grants::always_granted) {
        return Err(refused(format!(
            "its component imports {} beyond what {} approves: not the component that was \
             reviewed",
            diff.added.join(", "),
            file.display()
        )));
    }
    Ok(())
}

/// The guest's handles and the runner's own descriptors must fit the open files limit (raised
/// to its hard limit first): a guest refused a socket for want of descriptors would fail far
/// from the cause.
fn check_descriptors(max_handles: u64) -> Result<(), RunnerError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = max_handles.saturating_add(OWN_DESCRIPTORS);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if soft < need && soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if soft < need {
        return Err(RunnerError::Refused(format!(
            "the container may open {soft} files, and the sidecar may hold {max_handles} \
             handles (wpod.dev/sidecar-max-handles) plus {OWN_DESCRIPTORS} of the runner's own: \
             raise the container's open files limit or lower the annotation"
        )));
    }
    Ok(())
}

/// The state directory, created if missing (0700), and writable.
fn prepare_state_dir(dir: &Path) -> Result<(), RunnerError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |source| RunnerError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes the readiness file (0600, renamed into place: a probe never reads half of it).
fn write_readiness(path: &Path, container: &str, digest: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pid = std::process::id() as i32;
    let readiness = Readiness {
        pid,
        start_ticks: start_ticks(pid)?,
        container: container.to_string(),
        digest: digest.to_string(),
    };
    let tmp = path.with_extension(format!("tmp.{pid}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(&readiness).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// A process's start time in clock ticks after boot (`/proc/PID/stat`, field 22).
fn start_ticks(pid: i32) -> std::io::Result<u64> {
    super::main_view::Stat::of(pid)
        .map(|s| s.start)
        .ok_or_else(|| std::io::Error::other(format!("no readable /proc/{pid}/stat")))
}

/// Writes the termination message where the container runtime reads it, if it gave the
/// container that file; at most 4 KiB, as the kubelet reads.
pub fn write_termination_log(path: &Path, message: &str) {
    if !path.exists() {
        return;
    }
    let mut cut = message.len().min(4096);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = &message[..cut];
    if let Err(e) = std::fs::write(path, cut) {
        tracing::debug!(file = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// `wpod sidecar probe`: whether the runner of this container is running and its guest has
/// called `ready()`. `Err` says why not.
pub fn probe(state_dir: &Path) -> Result<Readiness, String> {
    let file = readiness_file(state_dir);
    let bytes = crate::files::read_regular(&file, 4096).map_err(|e| match e.is_not_found() {
        true => "the sidecar has not called ready() yet".to_string(),
        false => e.to_string(),
    })?;
    let readiness: Readiness = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a readiness file ({e})", file.display()))?;
    match start_ticks(readiness.pid) {
        Ok(t) if t == readiness.start_ticks => Ok(readiness),
        _ => Err(format!(
            "{} was written by a runner that is no longer running (pid {}): the sidecar has \
             not called ready() since it started again",
            file.display(),
            readiness.pid
        )),
    }
}
