//! The pod as a library: [`pull`] (its registry images, then the Wasm sidecars among them
//! planned), [`Pod::start`] (sidecars compiled, the sandbox, the supervisor, the control socket)
//! and [`Pod::wait`] (until it ends, by itself or on a stop request). `wpod run` is this plus
//! argument parsing and printing; the control socket (`wpod apply`) plans and pulls a new
//! manifest with the same [`pull`].
//!
//! Everything that can fail does so before the pod exists, or tears down what was made: a
//! `Pod` that is dropped takes its sandbox with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::control::Control;
use super::events::{Event, Events, ReportEvents};
use super::images::{ImagesError, PulledImages};
use super::{PodResult, Supervisor};
use crate::grants::report::Reporter;
use crate::logs::{Logs, OutputFormat};
use crate::oci::store::{ImageRecord, StoreError};
use crate::plan::{PodPlan, WasmComponent};
use crate::sandbox::{PodSandbox, SandboxError};
use crate::sidecars::SidecarError;
use crate::spec::Diagnostics;

/// Why a pod did not start (nothing of it is left).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// A pulled Wasm sidecar's grants, checked as a `.wasm` file's are.
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cannot keep the pod's image layers from `wpod image prune`")]
    Pin(#[source] StoreError),
    /// Asked to stop (Ctrl-C, `wpod stop`) while it waited for an image.
    #[error("stopped ({0}) while waiting for its images")]
    Stopped(&'static str),
}

/// How a pod runs: what `wpod run`'s flags choose.
#[derive(Clone)]
pub struct PodOptions {
    pub format: OutputFormat,
    /// The first restart delay, and of image pulls tried again (the kubelet's 10 s).
    pub backoff: Duration,
    /// Report each sidecar's first use of each grant, and the narrowest grant at the end.
    pub audit: bool,
    /// Told once when the pod waits (an image pull backing off), with why: `wpod run -d`
    /// returns then, as `kubectl apply` does for a pending pod.
    pub on_waiting: Option<OnWaiting>,
}

/// What [`PodOptions::on_waiting`] calls, with why the pod waits.
pub type OnWaiting = Arc<dyn Fn(&str) + Send + Sync>;

/// Pulls (or finds in the store) the registry images of `pull`'s containers and plans
/// `plan`'s Wasm sidecars among them (grants resolved and checked, with located errors, as for
/// a `.wasm` file). `known`: the components of sidecars not pulled here (an apply's unchanged
/// ones). "Pull, then re-plan", for `wpod run` and `wpod apply` alike.
pub async fn pull(
    plan: &PodPlan,
    pull: &PodPlan,
    mut known: BTreeMap<String, WasmComponent>,
    events: &Events,
) -> Result<(PodPlan, PulledImages), PodError> {
    let images = super::images::pull_images(pull, events).await?;
    known.extend(images.sidecar_components(pull));
    let plan = plan
        .with_pulled_sidecars(&known)
        .map_err(PodError::Invalid)?;
    Ok((plan, images))
}

/// [`pull`] for a pod that starts: a pull the registry (or the way to it) failed is tried
/// again, as the kubelet tries it, after 10 s doubling to 5 min (scaled by `--backoff-base`),
/// with an `ImagePullBackOff` event each time, until it succeeds or the pod is asked to stop.
/// A refusal that needs a person (policy, trust, approval, `Never`) fails at once.
async fn pull_with_back_off(
    plan: &PodPlan,
    events: &Events,
    options: &PodOptions,
    mut signals: Option<&mut super::StopSignals>,
) -> Result<(PodPlan, PulledImages), PodError> {
    // Never faster than this, whatever `--backoff-base` says: a registry is not hammered.
    const FASTEST: Duration = Duration::from_millis(100);
    let mut backoff = super::backoff::BackOff::new(options.backoff.max(FASTEST));
    let mut told = false;
    loop {
        let failed = match pull(plan, plan, BTreeMap::new(), events).await {
            Err(PodError::Images(e)) => e,
            other => return other,
        };
        let Some(image) = failed.retryable_image().map(str::to_string) else {
            return Err(PodError::Images(failed));
        };
        let delay = backoff.next_delay(Duration::ZERO);
        // Each container that waits for it; an `image` volume's is the pod's.
        let waiting: Vec<&str> = plan
            .containers
            .iter()
            .filter(|c| {
                matches!(&c.image, crate::plan::Image::Registry { name, .. } if name.canonical() == image)
            })
            .map(|c| c.name())
            .collect();
        let back_off = || Event::ImagePullBackOff {
            image: image.clone(),
            retry_in_ms: delay.as_millis() as u64,
        };
        if waiting.is_empty() {
            events.emit(None, back_off());
        }
        for c in waiting {
            events.emit(Some(c), back_off());
        }
        if let (false, Some(tell)) = (told, &options.on_waiting) {
            tell(&format!(
                "ImagePullBackOff: {}",
                crate::error::chain(&failed)
            ));
            told = true;
        }
        // Ctrl-C or `wpod stop` (SIGTERM) ends the wait: nothing of the pod runs yet.
        match signals.as_deref_mut() {
            Some(s) => tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                reason = s.recv() => return Err(PodError::Stopped(reason)),
            },
            None => tokio::time::sleep(delay).await,
        }
    }
}

/// A started pod.
pub struct Pod {
    plan: Arc<PodPlan>,
    sandbox: Arc<PodSandbox>,
    supervisor: Supervisor,
    events: Arc<Events>,
    reports: Arc<Reporter>,
    options: PodOptions,
    /// Ctrl-C and SIGTERM, heard from the start of [`Pod::start`] (while images are pulled
    /// and the sandbox made, a request waits here for the supervisor).
    signals: Option<super::StopSignals>,
    phase: watch::Receiver<super::Phase>,
}

impl Pod {
    /// Pulls, prepares and starts the pod of `plan`: its sandbox made, its containers handed
    /// to the supervisor (they start in [`Pod::wait`]), its control socket open.
    pub async fn start(
        plan: PodPlan,
        options: PodOptions,
        events: Arc<Events>,
    ) -> Result<Pod, PodError> {
        // The pod's helpers (its holder first) run from a sealed view of `wpod-helper`, made
        // meanwhile on a thread.
        crate::helper::seal_helper_early(crate::sandbox::build_id());
        // The pod's state directory first: the pod is this process's from now on (`wpod ps`
        // lists it, `wpod stop` finds it), and its events go to its journal, while its images
        // are pulled (a pull that fails for good leaves only the journal, as a failed pod's).
        let state = crate::sandbox::state_dir::StateDir::acquire(&plan.name)?;
        // Who holds the pod, for `wpod stop` from another shell.
        let pid_file = state.path.join(crate::sandbox::state_dir::PID_FILE);
        if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
            tracing::warn!(path = %pid_file.display(), error = %e, "cannot record wpod's pid; wpod stop will not find this pod");
        }
        let journal = state.logs.join(super::events::JOURNAL);
        if let Err(e) = events.journal_to(&journal) {
            tracing::warn!(path = %journal.display(), error = %e, "cannot keep the event journal; wpod ps will not see this pod");
        }
        // Stop requests are heard from now on: none is lost, whether it comes while an image
        // backs off or while the sandbox is made (the supervisor then stops at once).
        let signals = match super::StopSignals::install() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch Ctrl-C/SIGTERM yet");
                None
            }
        };
        events.emit(
            None,
            Event::PodPlanned {
                containers: plan
                    .containers
                    .iter()
                    .map(|c| super::api::PlannedContainer {
                        name: c.name().to_string(),
                        role: c.role,
                        image: c.shown_image.clone(),
                    })
                    .collect(),
            },
        );
        let started = Self::start_in(state, plan, options, events.clone(), signals).await;
        if started.is_err() {
            // Its journal ends as a failed pod's (`wpod ps -a`: exited 1).
            events.emit(None, Event::PodFinished { exit_code: 1 });
        }
        started
    }

    /// The rest of [`Pod::start`], in the pod's acquired state directory.
    async fn start_in(
        state: crate::sandbox::state_dir::StateDir,
        plan: PodPlan,
        options: PodOptions,
        events: Arc<Events>,
        mut signals: Option<super::StopSignals>,
    ) -> Result<Pod, PodError> {
        let (plan, images) = pull_with_back_off(&plan, &events, &options, signals.as_mut()).await?;
        let records: Vec<ImageRecord> = images.records().cloned().collect();
        // Native containers' processes on their images: a runAsNonRoot container whose image
        // runs as root is refused here, located, before anything of the pod exists.
        let plan = plan
            .with_volume_images(&images.volume_layers())
            .with_native_processes(&images.container_images())
            .map_err(PodError::Invalid)?;
        // The pod's namespace holder starts first: its exec and the kernel's namespaces take
        // a couple of milliseconds, which the rest overlaps. The sidecars are prepared on a
        // thread of their own meanwhile: their components read and hashed, compiled when the
        // cache lacks them, their code loaded and linked. If either side fails, the other is
        // dropped, which tears it down. wpod's runtime joins the pod's cgroup only once both
        // are done: a compile's memory is not the pod's.
        let (sandbox, prepared) = tokio::task::block_in_place(|| {
            let starting = PodSandbox::start(&plan, state)?;
            let observer = CompileEvents::new(&events);
            Ok::<_, SandboxError>(std::thread::scope(|s| {
                let preparing = s.spawn(|| crate::sidecars::prepare(&plan, &observer));
                let sandbox = starting.finish(&plan);
                let prepared = preparing
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (sandbox, prepared)
            }))
        })?;
        // A sidecar that cannot be prepared is the manifest's to fix: said first (a sandbox
        // that failed too is logged).
        let prepared = match (prepared, &sandbox) {
            (Err(e), Err(also)) => {
                tracing::warn!(error = %crate::error::chain(also), "the pod's sandbox failed too");
                return Err(e.into());
            }
            (prepared, _) => prepared?,
        };
        let mut sandbox = sandbox?;
        sandbox.complete(&plan)?;
        let sandbox = Arc::new(sandbox);
        crate::oci::store::pin_layers(&sandbox.state.path, records.iter())
            .map_err(PodError::Pin)?;
        events.emit(
            None,
            Event::PodStarted {
                hostname: sandbox.hostname.clone(),
                network: plan.network,
                ip: sandbox.pod_net.ips.first().map(|ip| ip.to_string()),
            },
        );
        for w in plan
            .ignored
            .iter()
            .map(ToString::to_string)
            .chain(sandbox.warnings.iter().cloned())
        {
            events.emit(None, Event::Warning { message: w });
        }
        let logs = Logs::new(sandbox.log_dir(), options.format, (&plan.settings).into());
        let plan = Arc::new(plan);
        let digests = prepared
            .iter()
            .flatten()
            .map(|p| (p.name().to_string(), p.digest().to_string()))
            .collect();
        // Sidecars' refusals (and, under --audit, their uses) become pod events.
        let reports = Reporter::new(Arc::new(ReportEvents(events.clone())), options.audit);
        if options.audit {
            crate::grants::calls::report_to(reports.clone());
        }
        let mut supervisor = Supervisor::new(
            plan.clone(),
            sandbox.clone(),
            prepared,
            logs,
            events.clone(),
            reports.clone(),
            options.backoff,
        );
        // `wpod describe` and `wpod apply` from another shell.
        let (changes, phase) = supervisor.control();
        let running = phase.clone();
        let control = Control::new(
            plan.clone(),
            digests,
            events.clone(),
            &sandbox,
            (changes, phase),
        );
        let socket = sandbox.state.path.join(super::control::SOCKET);
        match Control::bind(&socket) {
            Ok(listener) => {
                tokio::spawn(control.serve(listener));
            }
            Err(e) => {
                tracing::warn!(path = %socket.display(), error = %e, "cannot open the control socket; wpod apply and describe will not reach this pod")
            }
        }
        Ok(Pod {
            plan,
            sandbox,
            supervisor,
            events,
            reports,
            options,
            signals,
            phase: running,
        })
    }

    /// Where the pod is: `Running` once every container has started (or failed), as
    /// `podman kube play` returns then; `Stopping` if it ended first.
    pub fn phase(&self) -> watch::Receiver<super::Phase> {
        self.phase.clone()
    }

    pub fn name(&self) -> &str {
        self.plan.name()
    }

    /// Runs the pod's containers until the pod ends (by itself, or on Ctrl-C/SIGTERM), then
    /// tears everything down.
    pub async fn wait(self) -> PodResult {
        let result = match self.signals {
            Some(signals) => self.supervisor.run_until(signals).await,
            None => self.supervisor.run().await,
        };
        if self.options.audit {
            super::events::audit_summary(&self.events, &self.plan, &self.reports);
        }
        self.sandbox.close_ports().await;
        // Everything that shared the sandbox has ended; it is torn down here, inside the
        // runtime, as the last reference goes.
        drop(self.sandbox);
        result
    }
}

/// Compilations of the pod's components as events ("compiling site.wasm (14 MiB), first run
/// only"), with a spinner counting the seconds while events go to a terminal.
pub(crate) struct CompileEvents<'a> {
    events: &'a Events,
    spinners: std::sync::Mutex<Vec<(std::path::PathBuf, indicatif::ProgressBar)>>,
}

impl<'a> CompileEvents<'a> {
    pub(crate) fn new(events: &'a Events) -> Self {
        CompileEvents {
            events,
            spinners: Default::default(),
        }
    }
}

impl Drop for CompileEvents<'_> {
    /// A compilation that failed never says it finished: its spinner goes with the observer.
    fn drop(&mut self) {
        let spinners = self
            .spinners
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, s) in spinners.drain(..) {
            s.finish_and_clear();
        }
    }
}

impl crate::sidecars::CompileObserver for CompileEvents<'_> {
    fn compiling(&self, container: &str, path: &std::path::Path, bytes: u64) {
        let component = crate::plan::image::file_label(path);
        self.events.emit(
            Some(container),
            Event::Compiling {
                component: component.clone(),
                size_bytes: bytes,
            },
        );
        if self.events.to_terminal() {
            let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
                "compiling {}",
                crate::logs::escape_controls(&component)
            ));
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            let mut spinners = self.spinners.lock().unwrap_or_else(|p| p.into_inner());
            spinners.push((path.to_path_buf(), spinner));
        }
    }

    fn compiled(&self, container: &str, path: &std::path::Path, took: std::time::Duration) {
        {
            let mut spinners = self.spinners.lock().unwrap_or_else(|p| p.into_inner());
            spinners.retain(|(p, s)| {
                let done = p == path;
                if done {
                    s.finish_and_clear();
                }
                !done
            });
        }
        self.events.emit(
            Some(container),
            Event::Compiled {
                component: crate::plan::image::file_label(path),
                seconds: took.as_secs_f64(),
            },
        );
    }
}
