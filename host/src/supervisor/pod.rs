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

use super::control::Control;
use super::events::{Event, Events, ReportEvents};
use super::images::{ImagesError, PulledImages};
use super::{PodResult, Supervisor};
use crate::grants::report::Reporter;
use crate::logs::{Logs, OutputFormat};
use crate::oci::store::{ImageRecord, StoreError};
use crate::plan::{PodPlan, WasmComponent};
use crate::sandbox::runtime::RuntimeError;
use crate::sandbox::{PodSandbox, SandboxError};
use crate::sidecars::{Preparation, SidecarError};
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
    #[error("cannot start the pod's sidecar runtime")]
    Runtime(#[from] RuntimeError),
}

/// How a pod runs: what `wpod run`'s flags choose.
#[derive(Clone, Copy, Debug)]
pub struct PodOptions {
    pub format: OutputFormat,
    /// The first restart delay (the kubelet's 10 s).
    pub backoff: Duration,
    /// Report each sidecar's first use of each grant, and the narrowest grant at the end.
    pub audit: bool,
}

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

/// A started pod.
pub struct Pod {
    plan: Arc<PodPlan>,
    sandbox: Arc<PodSandbox>,
    supervisor: Supervisor,
    events: Arc<Events>,
    reports: Arc<Reporter>,
    options: PodOptions,
}

impl Pod {
    /// Pulls, prepares and starts the pod of `plan`: its sandbox made, its containers handed
    /// to the supervisor (they start in [`Pod::wait`]), its control socket open.
    pub async fn start(
        plan: PodPlan,
        options: PodOptions,
        events: Arc<Events>,
    ) -> Result<Pod, PodError> {
        // Images first, before anything of the pod exists: a pull that fails leaves nothing
        // behind.
        let (plan, images) = pull(&plan, &plan, BTreeMap::new(), &events).await?;
        let records: Vec<ImageRecord> = images.records().cloned().collect();
        // Native containers' processes on their images: a runAsNonRoot container whose image
        // runs as root is refused here, located, before anything of the pod exists.
        let plan = plan
            .with_native_processes(&images.container_images())
            .map_err(PodError::Invalid)?;
        // The sidecars' components come next: read, hashed and, when the cache lacks them,
        // compiled before anything of the pod exists (one that cannot compile fails the pod
        // here). Loading their cached code and linking it overlaps the sandbox's creation; if
        // it fails, the sandbox is dropped, which tears it down.
        let (sandbox, prepared) = tokio::task::block_in_place(|| {
            let preparation = Preparation::begin(&plan)?;
            Ok::<_, SidecarError>(std::thread::scope(|s| {
                let finishing = s.spawn(|| preparation.finish());
                let sandbox = PodSandbox::create(&plan);
                let prepared = finishing
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (sandbox, prepared)
            }))
        })?;
        let sandbox = Arc::new(sandbox?);
        let prepared = prepared?;
        crate::oci::store::pin_layers(&sandbox.state.path, records.iter())
            .map_err(PodError::Pin)?;
        // Who holds the pod, for `wpod stop` from another shell.
        let pid_file = sandbox.state.path.join(crate::sandbox::state_dir::PID_FILE);
        if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
            tracing::warn!(path = %pid_file.display(), error = %e, "cannot record wpod's pid; wpod stop will not find this pod");
        }
        let journal = sandbox.log_dir().join(super::events::JOURNAL);
        if let Err(e) = events.journal_to(&journal) {
            tracing::warn!(path = %journal.display(), error = %e, "cannot keep the event journal; wpod ps will not see this pod");
        }
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
        )?;
        // `wpod describe` and `wpod apply` from another shell.
        let control = Control::new(
            plan.clone(),
            digests,
            events.clone(),
            &sandbox,
            supervisor.control(),
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
        })
    }

    pub fn name(&self) -> &str {
        self.plan.name()
    }

    /// Runs the pod's containers until the pod ends (by itself, or on Ctrl-C/SIGTERM), then
    /// tears everything down.
    pub async fn wait(self) -> PodResult {
        let result = self.supervisor.run().await;
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
