//! The pod's control socket (`control.sock` in its state directory): how `wpod describe` and
//! `wpod apply` reach the `wpod run` that holds a pod, detached or not. Daemonless, as podman's
//! conmon: one socket per pod, served by the process that owns the pod.
//!
//! The protocol is one request per connection, one JSON line each way, versioned:
//! `{"version":1,"op":"describe"}` or `{"version":1,"op":"apply","file":"/abs/pod.yaml",
//! "dryRun":false}`; the answer is `{"version":1,"ok":true,"result":...}` or
//! `{"version":1,"ok":false,"error":"..."}`. The socket is root's alone (mode 0600 in a 0700
//! directory, and the peer's uid is checked); a request larger than [`MAX_REQUEST`], slower
//! than [`REQUEST_TIMEOUT`], or not understood gets an error answer, never a crash.
//!
//! `apply` changes the pod's Wasm sidecars live (`plan::change` decides what may change): the
//! new manifest is planned, its images pulled and approved, and each new or replacing sidecar
//! compiled and linked, all before anything running is touched; a sidecar that cannot be
//! prepared leaves the pod as it was. Then the supervisor stops the replaced and removed ones
//! (grace period and `stopping` event, as at termination) and starts the new ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Mutex, Semaphore};

pub use super::api::Request;
use super::api::{
    Answer, Applied, ApplyReport, ContainerDescription, HostPortView, PodDescription, RequestLine,
    StartState, SupervisorPhase, Versioned, VERSION,
};
use super::events::{Event, Events};
use super::workload::Member;
use super::{Change, Phase, Progress};
use crate::plan::change::{self, PodChange};
use crate::plan::{Image, PodPlan, Role};
use crate::sandbox::PodSandbox;
use crate::sidecars::{Preloaded, PreparedSidecar};

/// The socket's name in the pod's state directory.
pub const SOCKET: &str = "control.sock";
/// The largest request read: a path and a few flags fit many times over.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this much of what follows a request is read before the connection is closed.
const DRAIN_BYTES: u64 = 1 << 20;
/// Requests served at once; more wait for the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// How long `apply` waits for a new sidecar to start (its readiness, or its startup probe)
/// before answering that it is still starting.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The request line a client sends.
pub fn request_line(request: &Request) -> String {
    let line = RequestLine {
        version: VERSION,
        request: request.clone(),
    };
    // A request is paths and flags: it always serialises.
    let json = serde_json::to_string(&line).unwrap_or_default();
    format!("{json}\n")
}

/// Why a request was refused or failed: its words (with its causes) are the answer's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no request within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("reading the request")]
    Read(#[source] std::io::Error),
    #[error("the request is larger than {} KiB", MAX_REQUEST / 1024)]
    TooLarge,
    #[error("the request is not UTF-8")]
    NotUtf8,
    #[error("the request is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the request is not a JSON object")]
    NotObject,
    #[error("the request has no \"version\" (this wpod speaks {VERSION})")]
    NoVersion,
    #[error("protocol version {0} is not spoken here; this wpod speaks version {VERSION}")]
    Version(u64),
    #[error("bad request")]
    BadRequest(#[source] serde_json::Error),
    #[error("SO_PEERCRED")]
    PeerCred(#[source] std::io::Error),
    #[error("only root may control a pod")]
    NotRoot,
    #[error("only root on the host may control a pod (not from inside a container)")]
    NotOnHost,
    #[error("cannot read wpod's own mount namespace")]
    OwnNamespace(#[source] std::io::Error),
    #[error("{0}: give the manifest's absolute path")]
    NotAbsolute(PathBuf),
    #[error("the pod is still starting (init containers and native sidecars); apply once it runs")]
    Starting,
    #[error(transparent)]
    Change(#[from] super::ChangeError),
    #[error("{file}: holds {count} Pod documents; apply one pod's manifest")]
    Documents { file: PathBuf, count: usize },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// What `plan::change` refuses, located in the manifest.
    #[error("{0}")]
    Refused(crate::spec::Diagnostics),
    #[error("cannot write the pod's new ConfigMaps and Secrets into its volumes")]
    Refresh(#[source] crate::sandbox::SandboxError),
    /// (Boxed: a pull's errors are large, and every answer would carry their size.)
    #[error(transparent)]
    Pod(Box<super::pod::PodError>),
    #[error(
        "this change needs {at_once} Wasm sidecars at once (replacements start before the old \
         ones stop), and this pod's sidecar pool holds {capacity} (twice what it started with, at \
         least {min}): apply fewer changes at a time, or restart the pod with the new manifest",
        min = crate::sidecars::engine::MIN_SIDECARS
    )]
    Pool { at_once: usize, capacity: usize },
    #[error(transparent)]
    Sidecar(#[from] crate::sidecars::SidecarError),
    #[error("cannot keep the new sidecars' layers from `wpod image prune`")]
    Pin(#[source] crate::oci::store::StoreError),
    #[error("cannot start the pull outside the pod")]
    PullHelper(#[source] std::io::Error),
    /// The pull helper's own error, in its words (it is another process).
    #[error("{0}")]
    Pulled(String),
    #[error("cannot read the component {path}")]
    Component {
        path: PathBuf,
        #[source]
        source: crate::files::ReadError,
    },
    #[error("a task of the request failed")]
    Task(#[from] tokio::task::JoinError),
}

impl From<super::pod::PodError> for ControlError {
    fn from(e: super::pod::PodError) -> Self {
        ControlError::Pod(Box::new(e))
    }
}

/// What a request gives back.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Describe(PodDescription),
    Apply(ApplyReport),
}

/// An answer line.
fn answer_line<T: Serialize>(result: Result<T, ControlError>) -> String {
    match serde_json::to_string(&Answer::of(result)) {
        Ok(json) => format!("{json}\n"),
        Err(e) => format!(
            "{{\"version\":{VERSION},\"ok\":false,\"error\":\"the answer did not serialise: {e}\"}}\n"
        ),
    }
}

/// The running pod as the control socket knows it: the plan it runs now, and each Wasm
/// sidecar's component digest (a rebuilt `.wasm` under the same path is a new version).
#[derive(Clone)]
struct Live {
    plan: Arc<PodPlan>,
    digests: BTreeMap<String, String>,
}

/// What serves a pod's control socket.
pub struct Control {
    /// What `describe` shows and `apply` starts from; replaced when an apply succeeds.
    live: std::sync::Mutex<Arc<Live>>,
    /// Held for a whole `apply`: changes are made one at a time (`describe` does not wait).
    applying: Mutex<()>,
    /// What the sandbox fixed when the pod started: the hostPorts it publishes and the volumes
    /// native containers mount `nosymfollow`.
    started_with: change::StartedWith,
    events: Arc<Events>,
    /// Weak: the pod's teardown must not wait for a request in flight.
    sandbox: Weak<PodSandbox>,
    changes: mpsc::Sender<Change>,
    phase: watch::Receiver<Phase>,
}

impl Control {
    /// `digests`: the component digest of each Wasm sidecar as it was prepared.
    pub fn new(
        plan: Arc<PodPlan>,
        digests: BTreeMap<String, String>,
        events: Arc<Events>,
        sandbox: &Arc<PodSandbox>,
        (changes, phase): (mpsc::Sender<Change>, watch::Receiver<Phase>),
    ) -> Arc<Self> {
        Arc::new(Control {
            started_with: change::StartedWith {
                published: plan.port_mappings.clone(),
                nosymfollow: sandbox.nosymfollow_volumes.clone(),
            },
            live: std::sync::Mutex::new(Arc::new(Live { plan, digests })),
            applying: Mutex::new(()),
            events,
            sandbox: Arc::downgrade(sandbox),
            changes,
            phase,
        })
    }

    fn live(&self) -> Arc<Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Binds the socket at `path`, root's alone.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let (_dir, short) = short_socket_path(path)?;
        let listener = UnixListener::bind(&short)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Serves requests until the task is dropped with the pod.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A peer that may not control the pod is refused before it takes one of the
            // slots (refused peers once held them for a second each, delaying root's
            // requests by seconds): one short answer, written if it fits, and closed.
            if let Err(error) = check_peer(&stream) {
                let _ = stream.try_write(answer_line::<()>(Err(error)).as_bytes());
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let control = self.clone();
            tokio::spawn(async move {
                control.answer(stream).await;
                drop(permit);
            });
        }
    }

    async fn answer(&self, mut stream: UnixStream) {
        let answer = answer_line(self.request(&mut stream).await);
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // What the client sent past the request (an oversized one) is read and dropped, a
        // little, so that closing does not reset the connection before it reads the answer.
        let mut rest = stream.take(DRAIN_BYTES);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::copy(&mut rest, &mut tokio::io::sink()),
        )
        .await;
    }

    async fn request(&self, stream: &mut UnixStream) -> Result<Reply, ControlError> {
        let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(stream))
            .await
            .map_err(|_| ControlError::Timeout)??;
        let request = parse(&line)?;
        tracing::debug!(?request, "control request");
        match request {
            Request::Describe {} => Ok(Reply::Describe(self.describe())),
            Request::Apply {
                file,
                objects,
                dry_run,
            } => {
                let files = crate::plan::ManifestFiles {
                    manifest: file,
                    objects,
                };
                self.apply(&files, dry_run).await.map(Reply::Apply)
            }
        }
    }

    /// The running pod's plan: each container's place, image and, for a Wasm sidecar, what it
    /// is granted.
    fn describe(&self) -> PodDescription {
        let live = self.live();
        let phase = match *self.phase.borrow() {
            Phase::Starting => SupervisorPhase::Starting,
            Phase::Running => SupervisorPhase::Running,
            Phase::Stopping => SupervisorPhase::Stopping,
        };
        PodDescription {
            pod: live.plan.name().to_string(),
            phase,
            pid: std::process::id(),
            grace_period_seconds: live.plan.grace_period.as_secs(),
            share_process_namespace: live.plan.share_process_namespace,
            user_namespace: self.sandbox.upgrade().and_then(|s| s.ids()),
            host_ports: self
                .started_with
                .published
                .iter()
                .map(|p| HostPortView {
                    container: p.container.clone(),
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    container_port: p.container_port,
                })
                .collect(),
            containers: live
                .plan
                .containers
                .iter()
                .map(|c| ContainerDescription {
                    name: c.name().to_string(),
                    path: c.path.clone(),
                    role: c.role,
                    image: described_image(c),
                    restart_policy: c.restart_policy,
                    component: live.digests.get(c.name()).cloned(),
                    grants: c.grants.as_ref().map(|g| g.describe()),
                })
                .collect(),
        }
    }

    /// `wpod apply`: see the module's documentation.
    async fn apply(
        &self,
        files: &crate::plan::ManifestFiles,
        dry_run: bool,
    ) -> Result<ApplyReport, ControlError> {
        if let Some(file) = std::iter::once(&files.manifest)
            .chain(&files.objects)
            .find(|f| !f.is_absolute())
        {
            return Err(ControlError::NotAbsolute(file.clone()));
        }
        let _one_at_a_time = self.applying.lock().await;
        match *self.phase.borrow() {
            Phase::Running => {}
            Phase::Starting => return Err(ControlError::Starting),
            Phase::Stopping => return Err(super::ChangeError::Stopping.into()),
        }
        let live = self.live();
        // Held until the change is made: a refused apply (or a dry run) leaves no event of its
        // containers in the pod's journal, so no phantom container in `wpod ps`.
        let events = Arc::new(Events::capturing(live.plan.name()));
        let outside = self
            .sandbox
            .upgrade()
            .map(|s| s.cgroups.outside_procs())
            .unwrap_or_default();
        let NewPlan {
            plan,
            records,
            preloaded,
        } = new_plan(files, &live.plan, &self.started_with, &events, &outside).await?;
        let mut change = change::compare(&live.plan, &plan, &self.started_with)
            .map_err(ControlError::Refused)?;
        let digests = component_digests(&plan, &change).await?;
        // A component rebuilt under the same path is a new version.
        for (name, digest) in &digests {
            let known = change.to_start().contains(name);
            if !known && live.digests.get(name).is_some_and(|d| d != digest) {
                change
                    .replaced
                    .push((name.clone(), vec![format!("image (component {digest})")]));
            }
        }
        if change.is_empty() {
            return Ok(report(&plan, &change, dry_run, &[]));
        }
        // The new sidecars start before the ones they replace stop: all must fit the pool that
        // was sized for the pod when it started.
        let at_once = plan.wasm_containers_at_once() + change.replaced.len();
        if let Some(capacity) = crate::sidecars::engine::capacity() {
            if at_once > capacity {
                return Err(ControlError::Pool { at_once, capacity });
            }
        }
        // Everything that can fail is done before anything running is touched.
        let mut members = Vec::new();
        for name in change.to_start() {
            let Some(c) = plan.containers.iter().find(|c| c.name() == name) else {
                continue;
            };
            let prepared = match PreparedSidecar::preloaded(c, &preloaded) {
                Some(prepared) => prepared?,
                None => {
                    let c = c.clone();
                    tokio::task::spawn_blocking(move || PreparedSidecar::prepare(&c)).await??
                }
            };
            members.push(Arc::new(Member {
                plan: prepared.plan.clone(),
                prepared: Some(prepared),
            }));
        }
        if dry_run {
            return Ok(report(&plan, &change, true, &[]));
        }
        let sandbox = self.sandbox.upgrade().ok_or(super::ChangeError::Stopping)?;
        // What a new sidecar runs is kept from `wpod image prune` while the pod runs.
        crate::oci::store::pin_more_layers(&sandbox.state.path, records.iter())
            .map_err(ControlError::Pin)?;

        // New files first, a sidecar this change starts reads them; and once nothing before
        // the change itself can fail (a pod that stops meanwhile keeps them).
        let refresh: Vec<(String, crate::plan::files::Files)> = plan
            .volumes
            .iter()
            .filter(|v| change.refreshed.contains(&v.name))
            .filter_map(|v| match &v.kind {
                crate::plan::VolumeKind::Files(files) => Some((v.name.clone(), files.clone())),
                _ => None,
            })
            .collect();
        if !refresh.is_empty() {
            let sandbox = sandbox.clone();
            let fs_group = plan.fs_group.map(|g| g.0);
            tokio::task::spawn_blocking(move || {
                refresh.iter().try_for_each(|(name, files)| {
                    sandbox
                        .volumes
                        .refresh(name, files, &sandbox.facts, fs_group)
                })
            })
            .await?
            .map_err(ControlError::Refresh)?;
        }
        if !change.touches_containers() {
            let now = self.commit(plan, live.digests.clone(), &change, &events);
            return Ok(report(&now.plan, &change, false, &[]));
        }

        // The runtime's memory holds the old and the new sidecars for a moment: the larger
        // limit until the change is done.
        let limit = |bytes: Option<u64>| {
            if let Err(e) = sandbox.cgroups.limit_runtime_memory(bytes) {
                tracing::warn!("{}", crate::error::chain(&e));
            }
        };
        let before = live.plan.runtime_memory_limit;
        let during = match (before, plan.runtime_memory_limit) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        limit(during);
        let (reply, answer) = oneshot::channel();
        let sidecar_order = plan
            .containers
            .iter()
            .filter(|c| c.role == Role::NativeSidecar)
            .map(|c| c.name().to_string())
            .collect();
        let request = Change {
            stop: change.to_stop(),
            start: members.clone(),
            sidecar_order,
            reply,
        };
        let started = match self.changes.send(request).await {
            Ok(()) => answer.await.unwrap_or(Err(super::ChangeError::Stopping)),
            Err(_) => Err(super::ChangeError::Stopping),
        };
        let started = match started {
            Ok(started) => started,
            Err(e) => {
                limit(before);
                return Err(e.into());
            }
        };
        limit(plan.runtime_memory_limit);
        let mut digests = live.digests.clone();
        for name in &change.removed {
            digests.remove(name);
        }
        for m in &members {
            if let Some(p) = &m.prepared {
                digests.insert(m.name().to_string(), p.digest().to_string());
            }
        }
        let now = self.commit(plan, digests, &change, &events);
        let outcomes = wait_started(started).await;
        Ok(report(&now.plan, &change, false, &outcomes))
    }
}

impl Control {
    /// The change is made: `plan` is the running one from now on, and the journal says so
    /// (the events held while it was made, then `podChanged`).
    fn commit(
        &self,
        plan: PodPlan,
        digests: BTreeMap<String, String>,
        change: &PodChange,
        held: &Events,
    ) -> Arc<Live> {
        let now = Arc::new(Live {
            plan: Arc::new(plan),
            digests,
        });
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = now.clone();
        self.events.replay(held.take_captured());
        self.events.emit(
            None,
            Event::PodChanged {
                added: change.added.clone(),
                replaced: change.replaced.iter().map(|(n, _)| n.clone()).collect(),
                removed: change.removed.clone(),
                refreshed: change.refreshed.clone(),
            },
        );
        now
    }
}

/// Only root on the host controls a pod: the peer is uid 0 (or wpod's own uid) and in wpod's
/// own mount namespace, so root inside a container that shares the host's files cannot.
/// A path to the socket `path` short enough for `sockaddr_un` (108 bytes) however long the
/// state root and the pod's name: through the open directory, `/proc/self/fd/N/control.sock`.
/// The directory must stay open while the path is used.
pub fn short_socket_path(path: &Path) -> std::io::Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} is not a socket path",
            path.display()
        )));
    };
    let dir = std::fs::File::open(dir)?;
    let short = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((dir, short))
}

fn check_peer(stream: &UnixStream) -> Result<(), ControlError> {
    let peer = stream.peer_cred().map_err(ControlError::PeerCred)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if peer.uid() != 0 && peer.uid() != me {
        return Err(ControlError::NotRoot);
    }
    let ours = std::fs::read_link("/proc/self/ns/mnt").map_err(ControlError::OwnNamespace)?;
    let theirs = peer
        .pid()
        .map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")));
    match theirs {
        Some(Ok(theirs)) if theirs == ours => Ok(()),
        // A rootless wpod runs in a user namespace of its own, and so do its pods' containers.
        // A peer whose namespaces it may not even see is outside it: a process of the user's
        // own (its UID, 0 here, is the user), which could signal or trace wpod anyway.
        Some(Err(e))
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && crate::files::rootless_uid().is_some() =>
        {
            Ok(())
        }
        _ => Err(ControlError::NotOnHost),
    }
}

/// The manifest at `file`, planned, and the images of the containers it adds or changes
/// pulled and approved exactly as `wpod run` pulls them (an unchanged container keeps what it
/// runs, as Kubernetes does not pull again for an unchanged Pod). Also the records of what was
/// pulled.
///
/// The change is checked before anything is pulled (with every new registry image presumed a
/// sidecar, as only sidecars may be added); then the pulls run in a `wpod __pull` process moved
/// into `outside`, the cgroups wpod came from, so that nothing a registry sends is charged to
/// the running pod's wpod; the pod then reads what was pulled from the store. The components
/// of new and changed local sidecars are loaded from the compiled cache as the manifest is read
/// ([`PreparedSidecar::preload`]).
async fn new_plan(
    files: &crate::plan::ManifestFiles,
    running: &PodPlan,
    started_with: &change::StartedWith,
    events: &Arc<Events>,
    outside: &[std::path::PathBuf],
) -> Result<NewPlan, ControlError> {
    let unchanged =
        |c: &crate::plan::ContainerPlan| running.containers.iter().any(|o| change::unchanged(o, c));
    // The manifest is read and planned, and the components of new and changed sidecars
    // loaded from the cache, on this thread, one after the other: the request waited for
    // each hand-off to a thread of the blocking pool and back, 0.1-0.2 ms each on a virtual
    // machine whose other CPU idles (four of them in a warm apply). (`block_in_place` needs
    // the multi-threaded runtime `wpod run` serves the control socket on.)
    let (mut plans, preloaded) = tokio::task::block_in_place(|| {
        let plans = crate::plan::load(files)?;
        let preloaded: Vec<Preloaded> = match plans.as_slice() {
            [plan] => plan
                .containers
                .iter()
                .filter(|c| c.grants.is_some() && !unchanged(c))
                .filter_map(PreparedSidecar::preload)
                .collect(),
            _ => Vec::new(),
        };
        Ok::<_, ControlError>((plans, preloaded))
    })?;
    if plans.len() != 1 {
        return Err(ControlError::Documents {
            file: files.manifest.clone(),
            count: plans.len(),
        });
    }
    let mut plan = plans.remove(0);
    // The sidecars keep the handle quota the pod started with, and it must still fit.
    plan.keep_handle_quota(running.settings.sidecar_max_handles)?;
    // Unchanged registry sidecars run what they ran.
    let mut components: BTreeMap<String, crate::plan::WasmComponent> = BTreeMap::new();
    for c in plan.containers.iter().filter(|c| unchanged(c)) {
        let running = running.containers.iter().find(|o| o.name() == c.name());
        if let (Image::Registry { .. }, Some(Image::Wasm(w))) =
            (&c.image, running.map(|o| &o.image))
        {
            components.insert(c.path.clone(), w.clone());
        }
    }
    // Checked before anything is pulled: new registry images as sidecars, unchanged
    // containers as they run.
    let mut presumed = plan.clone();
    for c in presumed.containers.iter_mut() {
        match running.containers.iter().find(|o| o.name() == c.name()) {
            Some(o) if unchanged(c) => c.image = o.image.clone(),
            _ if matches!(c.image, Image::Registry { .. }) => {
                c.image = Image::Wasm(crate::plan::WasmComponent {
                    path: std::path::PathBuf::from("(not pulled yet)"),
                    digest: None,
                    reference: None,
                })
            }
            _ => {}
        }
    }
    change::compare(running, &presumed, started_with).map_err(ControlError::Refused)?;

    let mut to_pull = plan.clone();
    to_pull.containers.retain(|c| !unchanged(c));
    pull_outside(&to_pull, events, outside).await?;
    // What the helper pulled, from the store (approvals checked here, nothing fetched).
    for c in to_pull.containers.iter_mut() {
        if let Image::Registry { policy, .. } = &mut c.image {
            *policy = crate::spec::PullPolicy::Never;
        }
    }
    let quiet = Events::new(plan.name(), crate::logs::OutputFormat::Silent);
    let (plan, images) = super::pod::pull(&plan, &to_pull, components, &quiet).await?;
    let records = images.records().cloned().collect();
    Ok(NewPlan {
        plan,
        records,
        preloaded,
    })
}

/// A manifest planned for a running pod ([`new_plan`]).
struct NewPlan {
    plan: PodPlan,
    /// The images its new containers use, to pin.
    records: Vec<crate::oci::store::ImageRecord>,
    /// The components of its new and changed sidecars, loaded from the cache.
    preloaded: Vec<Preloaded>,
}

/// Runs `wpod __pull` for the registry images of `plan`, in the cgroups `outside` (joined
/// before it execs), reporting what it says as events.
async fn pull_outside(
    plan: &PodPlan,
    events: &Events,
    outside: &[std::path::PathBuf],
) -> Result<(), ControlError> {
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;
    let request = super::images::PullRequest::of(plan);
    if request.images.is_empty() {
        return Ok(());
    }
    // Names and paths: it always serialises.
    let json = serde_json::to_string(&request).unwrap_or_default();
    let exe = std::env::current_exe().map_err(ControlError::PullHelper)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__pull")
        .arg(json)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let procs: Vec<std::ffi::CString> = outside
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
        .collect();
    // SAFETY: between fork and exec only open, write and close, with buffers made before.
    unsafe {
        cmd.pre_exec(move || {
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(ControlError::PullHelper)?;
    let piped = || ControlError::PullHelper(std::io::Error::other("its output was not piped"));
    let stdout = child.stdout.take().ok_or_else(piped)?;
    let mut stderr = child.stderr.take().ok_or_else(piped)?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(
            &mut tokio::io::AsyncReadExt::take(&mut stderr, 64 << 10),
            &mut text,
        )
        .await;
        text
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // The helper's pull events, and nothing else of what it prints.
        if let Ok(super::api::Record::Event(e)) = serde_json::from_str(&line) {
            if let (Some(container), true) = (&e.container, e.event.is_pull()) {
                events.emit(Some(container), e.event);
            }
        }
    }
    let status = child.wait().await.map_err(ControlError::PullHelper)?;
    let errors = errors.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let message = errors
            .lines()
            .filter_map(|l| l.strip_prefix("wpod: error: "))
            .next_back()
            .unwrap_or(errors.trim());
        Err(ControlError::Pulled(message.to_string()))
    }
}

/// The sha256 of each Wasm sidecar's component in `plan` that the change does not already
/// start: a pulled one's is its digest; a file's is read.
async fn component_digests(
    plan: &PodPlan,
    change: &PodChange,
) -> Result<BTreeMap<String, String>, ControlError> {
    let starting = change.to_start();
    let files: Vec<(String, Image)> = plan
        .containers
        .iter()
        .filter(|c| c.image.is_wasm() && !starting.iter().any(|n| n == c.name()))
        .map(|c| (c.name().to_string(), c.image.clone()))
        .collect();
    if files.is_empty() {
        return Ok(BTreeMap::new());
    }
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (name, image) in files {
            let Image::Wasm(w) = image else { continue };
            // A file this process loaded and that has not changed since is not read and
            // hashed again at every apply.
            let known = || crate::sidecars::components::known_digest(&w.path);
            let digest = match w.digest.as_ref().map(|d| d.to_string()).or_else(known) {
                Some(d) => d,
                None => {
                    let bytes =
                        crate::files::read_regular(&w.path, crate::files::MAX_COMPONENT_BYTES)
                            .map_err(|source| ControlError::Component {
                                path: w.path.clone(),
                                source,
                            })?;
                    crate::component::sha256_digest(&bytes)
                }
            };
            out.insert(name, digest);
        }
        Ok(out)
    })
    .await?
}

/// Waits (at most [`START_TIMEOUT`] in all) for each started sidecar to count as started.
async fn wait_started(
    started: Vec<(String, watch::Receiver<Progress>)>,
) -> Vec<(String, StartState)> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut out = Vec::new();
    for (name, mut progress) in started {
        let state = tokio::time::timeout_at(
            deadline,
            progress.wait_for(|p| matches!(p, Progress::Started | Progress::Ended)),
        )
        .await;
        let state = match state {
            Ok(Ok(p)) if *p == Progress::Started => StartState::Started,
            Ok(_) => StartState::Ended,
            Err(_) => StartState::Starting,
        };
        out.push((name, state));
    }
    out
}

/// What `apply` answers: each change and, once applied, where each started sidecar is.
fn report(
    plan: &PodPlan,
    change: &PodChange,
    dry_run: bool,
    started: &[(String, StartState)],
) -> ApplyReport {
    let state = |name: &str| started.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    ApplyReport {
        pod: plan.name().to_string(),
        dry_run,
        unchanged: change.is_empty(),
        created: false,
        added: change
            .added
            .iter()
            .map(|n| Applied {
                name: n.clone(),
                fields: Vec::new(),
                state: state(n),
            })
            .collect(),
        replaced: change
            .replaced
            .iter()
            .map(|(n, f)| Applied {
                name: n.clone(),
                fields: f.clone(),
                state: state(n),
            })
            .collect(),
        removed: change.removed.clone(),
        refreshed: change.refreshed.clone(),
    }
}

/// Reads one request line, at most [`MAX_REQUEST`] bytes.
async fn read_line(stream: &mut UnixStream) -> Result<String, ControlError> {
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(ControlError::Read)?;
    if line.len() > MAX_REQUEST {
        return Err(ControlError::TooLarge);
    }
    String::from_utf8(line).map_err(|_| ControlError::NotUtf8)
}

/// A request line: JSON with the version this wpod speaks, and a known operation.
pub fn parse(line: &str) -> Result<Request, ControlError> {
    let line = line.trim();
    // Each check on its own, so that the answer says which one failed.
    serde_json::from_str::<serde::de::IgnoredAny>(line).map_err(ControlError::NotJson)?;
    serde_json::from_str::<BTreeMap<String, serde::de::IgnoredAny>>(line)
        .map_err(|_| ControlError::NotObject)?;
    let versioned: Versioned = serde_json::from_str(line).map_err(ControlError::BadRequest)?;
    match versioned.version {
        Some(v) if v == u64::from(VERSION) => {}
        Some(other) => return Err(ControlError::Version(other)),
        None => return Err(ControlError::NoVersion),
    }
    serde_json::from_str::<RequestLine>(line)
        .map(|l| l.request)
        .map_err(ControlError::BadRequest)
}

/// A container's image in `describe`: as `ps` shows it, but a local component or rootfs by its
/// whole path (a pulled one by its reference and digest, never its place in the store).
fn described_image(c: &crate::plan::ContainerPlan) -> String {
    match &c.image {
        Image::Rootfs(p) => p.display().to_string(),
        Image::Wasm(w) if w.digest.is_none() => w.path.display().to_string(),
        _ => c.shown_image.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_versioned_and_checked() {
        assert!(matches!(
            parse(r#"{"version":1,"op":"describe"}"#),
            Ok(Request::Describe {})
        ));
        assert!(matches!(
            parse(r#"{"version":1,"op":"apply","file":"/p.yaml","dryRun":true}"#),
            Ok(Request::Apply { dry_run: true, .. })
        ));
        for (bad, says) in [
            ("nonsense", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"op":"describe"}"#, "no \"version\""),
            (r#"{"version":2,"op":"describe"}"#, "version 2"),
            (r#"{"version":1,"op":"format-disk"}"#, "bad request"),
            (r#"{"version":1,"op":"describe","x":1}"#, "bad request"),
            (r#"{"version":1,"op":"apply"}"#, "bad request"),
        ] {
            let e = crate::error::chain(&parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
        let line = request_line(&Request::Describe {});
        assert!(matches!(parse(&line), Ok(Request::Describe {})));
    }
}
