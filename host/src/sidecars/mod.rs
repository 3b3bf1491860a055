//! Wasm sidecars: components run in wasmtime with only the capabilities the pod grants.
//!
//! Before the pod starts, each sidecar is *prepared* (compiled or loaded from the cache, linked,
//! pre-instantiated: a refused import fails here). Each start then builds a fresh store whose
//! host state each capability prepares from the grants the plan resolved (`crate::grants`), and
//! runs `wasi:cli/run` on the pod's own runtime (`runtime.rs`), so that its sockets live in the
//! pod's network namespace.

pub mod cache;
pub mod engine;
pub mod limits;
pub mod runtime;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::grants::{self, GrantHost, GrantStates, Grants, InstanceSetup, OpenVolumes};
use crate::logs::{Logs, Stream};
use crate::plan::{ContainerPlan, Image, PodPlan};
use crate::status::{ExitInfo, ExitReason, PodState};

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("sidecar {container}: {message}")]
    Link { container: String, message: String },
    #[error("sidecar {container}: {message}")]
    Start { container: String, message: String },
}

/// A running sidecar's store data: WASI's context, the resource table every capability shares,
/// each capability's own state, and the memory limits.
pub struct SidecarState {
    wasi: WasiCtx,
    table: ResourceTable,
    grants: GrantStates,
    limits: limits::SidecarLimits,
}

impl GrantHost for SidecarState {
    fn grant_states(&mut self) -> (&mut GrantStates, &mut ResourceTable) {
        (&mut self.grants, &mut self.table)
    }
}

impl WasiView for SidecarState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// WASI and wpod's interfaces, linked once per process.
fn linker(engine: &Engine) -> wasmtime::Result<&'static Linker<SidecarState>> {
    static LINKER: OnceLock<Linker<SidecarState>> = OnceLock::new();
    if let Some(l) = LINKER.get() {
        return Ok(l);
    }
    let mut linker = Linker::new(engine);
    grants::add_to_linker(&mut linker)?;
    Ok(LINKER.get_or_init(|| linker))
}

/// A sidecar compiled, linked and pre-instantiated, ready to start (and restart) quickly.
#[derive(Clone)]
pub struct PreparedSidecar {
    pub plan: ContainerPlan,
    /// What the plan granted it.
    grants: Grants,
    pre: CommandPre<SidecarState>,
    /// Whether the compiled component came from the cache.
    pub cached: bool,
    /// The sha256 of the component's bytes (`sha256:<hex>`).
    pub digest: String,
    /// It imports `lifecycle.ready`: as a native sidecar it counts as started only once it
    /// calls it.
    pub signals_readiness: bool,
    /// It imports `lifecycle.next-event`: it can hear `stopping` (see
    /// `grants::lifecycle::hears_stopping`).
    pub hears_stopping: bool,
}

impl PreparedSidecar {
    pub fn prepare(plan: &ContainerPlan) -> Result<Self, SidecarError> {
        let (Image::Wasm(wasm), Some(grants)) = (&plan.image, &plan.grants) else {
            return Err(SidecarError::Link {
                container: plan.name().into(),
                message: "not a Wasm component".into(),
            });
        };
        let engine = engine::shared()?;
        let (component, source, digest) = cache::load(engine, &wasm.path, wasm.digest.as_ref())?;
        let link_err = |message: String| SidecarError::Link {
            container: plan.name().to_string(),
            message,
        };
        let linker = linker(engine).map_err(|e| link_err(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| link_err(format!("cannot link the component: {e:#}")))?;
        let pre = CommandPre::new(pre).map_err(|e| {
            link_err(format!(
                "not a command component (no wasi:cli/run export): {e:#}"
            ))
        })?;
        let signals_readiness = grants::lifecycle::signals_readiness(engine, &component);
        let hears_stopping = grants::lifecycle::hears_stopping(engine, &component);
        Ok(PreparedSidecar {
            plan: plan.clone(),
            grants: grants.clone(),
            pre,
            cached: source == cache::Source::Cache,
            digest,
            signals_readiness,
            hears_stopping,
        })
    }

    pub fn name(&self) -> &str {
        self.plan.name()
    }
}

/// Everything wpod does with a component's bytes before a pod may run it, without the pod:
/// read its imports and exports, compile it, link it against WASI and wpod's interfaces and
/// check that it is a command. The component loader the fuzzer drives; `Ok` means "would run".
pub fn check_component_bytes(bytes: &[u8]) -> Result<(), ComponentError> {
    let report = grants::inspect::inspect_bytes(std::path::Path::new("component.wasm"), bytes)?;
    if report
        .imports
        .iter()
        .any(|i| i.rule == grants::ImportRule::Never)
    {
        return Err(ComponentError::Ungranted);
    }
    let engine = engine::shared()?;
    let component = wasmtime::component::Component::new(engine, bytes)?;
    let pre = linker(engine)?.instantiate_pre(&component)?;
    CommandPre::new(pre)?;
    Ok(())
}

/// Why a component would not run (`check_component_bytes`).
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error(transparent)]
    Inspect(#[from] grants::inspect::InspectError),
    #[error("imports something no Pod field grants")]
    Ungranted,
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// Compiling, linking or the command check failed (wasmtime's error, with its context).
    #[error("{0:#}")]
    Wasmtime(wasmtime::Error),
}

impl From<wasmtime::Error> for ComponentError {
    fn from(e: wasmtime::Error) -> Self {
        ComponentError::Wasmtime(e)
    }
}

/// Compiles (or loads from the cache), links and pre-instantiates every Wasm container of the
/// pod, before anything of the pod exists: a component that cannot run fails here. By
/// container index; `None` for native containers.
pub fn prepare_all(plan: &PodPlan) -> Result<Vec<Option<PreparedSidecar>>, SidecarError> {
    plan.containers
        .iter()
        .map(|c| match c.grants {
            Some(_) => PreparedSidecar::prepare(c).map(Some),
            None => Ok(None),
        })
        .collect()
}

/// What a starting sidecar needs from its pod.
pub struct PodContext<'a> {
    pub runtime: tokio::runtime::Handle,
    pub state: Arc<PodState>,
    pub logs: Arc<Logs>,
    pub volumes: &'a dyn OpenVolumes,
    /// Entries each sidecar's resource table may hold (its handles quota).
    pub max_handles: u64,
}

/// A running sidecar.
pub struct WasmSidecar {
    name: String,
    task: JoinHandle<ExitInfo>,
    stop: Arc<AtomicBool>,
    stopping: watch::Sender<Option<tokio::time::Instant>>,
    hears_stopping: bool,
}

impl WasmSidecar {
    pub fn start(prepared: &PreparedSidecar, ctx: &PodContext<'_>) -> Result<Self, SidecarError> {
        let c = &prepared.plan.spec;
        let name = c.name.clone();
        let start_err = |message: String| SidecarError::Start {
            container: name.clone(),
            message,
        };

        let (stopping, stopping_rx) = watch::channel(None);
        let mut builder = WasiCtxBuilder::new();
        let mut setup = InstanceSetup {
            name: &name,
            wasi: &mut builder,
            volumes: ctx.volumes,
            status: &ctx.state,
            logs: &ctx.logs,
            stopping: stopping_rx,
        };
        let grants = prepared
            .grants
            .prepare(&mut setup)
            .map_err(|e| start_err(e.0))?;
        // Every socket, file, stream and pollable the guest holds is an entry of its table:
        // bounding the table bounds the host resources it can hold (`wpod.dev/sidecar-max-handles`).
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(ctx.max_handles).unwrap_or(usize::MAX));
        let state = SidecarState {
            wasi: builder.build(),
            table,
            grants,
            limits: limits::SidecarLimits::new(c.resources.limits.memory_bytes),
        };
        let engine = engine::shared()?;
        let stop = Arc::new(AtomicBool::new(false));
        let pre = prepared.pre.clone();
        let logs = ctx.logs.clone();
        let task_name = name.clone();
        let stopped = stop.clone();
        let task = ctx.runtime.spawn(async move {
            let mut store = Store::new(engine, state);
            store.limiter(|s| &mut s.limits);
            // Every tick a computing guest yields to the others, or stops if asked to.
            let interrupted = stopped.clone();
            store.epoch_deadline_callback(move |_| {
                Ok(if interrupted.load(Ordering::SeqCst) {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Yield(1)
                })
            });
            store.set_epoch_deadline(1);
            let result = async {
                let command = pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            }
            .await;
            exit_info(result, &logs, &task_name, stopped.load(Ordering::SeqCst))
        });
        Ok(WasmSidecar {
            name,
            task,
            stop,
            stopping,
            hears_stopping: prepared.hears_stopping,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the sidecar to end. Cancel-safe.
    pub async fn exited(&mut self) -> ExitInfo {
        match (&mut self.task).await {
            Ok(exit) => exit,
            // Aborted: stopped by force while waiting in the host.
            Err(_) => ExitInfo::killed(),
        }
    }

    /// Asks the sidecar to stop by `deadline` (its `lifecycle` `stopping` event); one that
    /// cannot hear it is stopped at once, as SIGTERM ends a process that does not handle it.
    /// Whether it was stopped by force.
    pub fn stopping(&self, deadline: tokio::time::Instant) -> bool {
        if !self.hears_stopping {
            self.kill();
            return true;
        }
        self.stopping.send_replace(Some(deadline));
        false
    }

    /// Forced stop: a guest computing is interrupted at its next epoch, one waiting in the
    /// host is dropped where it waits.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

fn exit_info(
    result: wasmtime::Result<Result<(), ()>>,
    logs: &Logs,
    name: &str,
    stopped: bool,
) -> ExitInfo {
    match result {
        Ok(Ok(())) => ExitInfo::exited(0),
        Ok(Err(())) => ExitInfo::exited(1),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                return ExitInfo::exited(exit.0);
            }
            if stopped {
                return ExitInfo::killed();
            }
            // A trap ends this sidecar only; its message goes where its output goes.
            logs.line(name, Stream::Stderr, &format!("wasm trap: {e:#}"));
            ExitInfo {
                code: 1,
                signal: None,
                reason: ExitReason::Trapped,
            }
        }
    }
}
