//! Wasm sidecars: components run in wasmtime with only the capabilities the pod grants.
//!
//! Before the pod starts, each sidecar is *prepared* (compiled or loaded from the cache, linked,
//! pre-instantiated: a refused import fails here). Each start then builds a fresh store whose
//! WASI context is assembled from the grants (`grants/`), and runs `wasi:cli/run` on the pod's
//! own runtime (`runtime.rs`), so that its sockets live in the pod's network namespace.

pub mod bindings;
pub mod cache;
pub mod engine;
pub mod grants;
pub mod inspect;
pub mod limits;
pub mod procstat;
pub mod runtime;
pub mod stdio;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::containers::ExitInfo;
use crate::logs::{Logs, Stream};
use crate::plan::{ContainerPlan, Image};
use crate::sandbox::volumes::PodVolumes;
use crate::spec::Pod;
use crate::supervisor::state::{PodEvent, PodState};
use grants::fs::FsGrant;
use grants::net::NetGrant;
use grants::process::{ProcessGrant, ProcessHost};

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

/// Everything a running sidecar's host functions reach: its store's data.
pub struct SidecarState {
    pub name: String,
    wasi: WasiCtx,
    pub table: ResourceTable,
    limits: limits::SidecarLimits,
    pub process: ProcessHost,
    pub events: broadcast::Receiver<PodEvent>,
    /// Set when this sidecar's turn to stop comes: the deadline it has.
    pub stopping: watch::Receiver<Option<tokio::time::Instant>>,
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
fn linker(engine: &Engine) -> Result<&'static Linker<SidecarState>, String> {
    static LINKER: OnceLock<Linker<SidecarState>> = OnceLock::new();
    if let Some(l) = LINKER.get() {
        return Ok(l);
    }
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
    bindings::Imports::add_to_linker::<SidecarState, HasSelf<SidecarState>>(&mut linker, |s| s)
        .map_err(|e| format!("{e:#}"))?;
    Ok(LINKER.get_or_init(|| linker))
}

/// A sidecar compiled, linked and pre-instantiated, ready to start (and restart) quickly.
#[derive(Clone)]
pub struct PreparedSidecar {
    pub plan: ContainerPlan,
    pre: CommandPre<SidecarState>,
    /// Whether the compiled component came from the cache.
    pub cached: bool,
    /// It imports `lifecycle.ready`: as a native sidecar it counts as started only once it
    /// calls it.
    pub signals_readiness: bool,
}

impl PreparedSidecar {
    pub fn prepare(plan: &ContainerPlan) -> Result<Self, SidecarError> {
        let Image::Wasm(path) = &plan.image else {
            return Err(SidecarError::Link {
                container: plan.name().into(),
                message: "not a Wasm component".into(),
            });
        };
        let engine = engine::shared()?;
        let (component, source) = cache::load(engine, path)?;
        let link_err = |message: String| SidecarError::Link {
            container: plan.name().to_string(),
            message,
        };
        let linker = linker(engine).map_err(link_err)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| link_err(format!("cannot link the component: {e:#}")))?;
        let pre = CommandPre::new(pre).map_err(|e| {
            link_err(format!(
                "not a command component (no wasi:cli/run export): {e:#}"
            ))
        })?;
        let signals_readiness = imports_ready(engine, &component);
        Ok(PreparedSidecar {
            plan: plan.clone(),
            pre,
            cached: source == cache::Source::Cache,
            signals_readiness,
        })
    }

    pub fn name(&self) -> &str {
        self.plan.name()
    }
}

/// Everything wpod does with a component's bytes before a pod may run it, without the pod:
/// read its imports and exports, compile it, link it against WASI and wpod's interfaces and
/// check that it is a command. The component loader the fuzzer drives; `Ok` means "would run".
pub fn check_component_bytes(bytes: &[u8]) -> Result<(), String> {
    let report = inspect::inspect_bytes(std::path::Path::new("component.wasm"), bytes)
        .map_err(|e| e.to_string())?;
    if report
        .imports
        .iter()
        .any(|i| i.rule == grants::ImportRule::Never)
    {
        return Err("imports something no Pod field grants".into());
    }
    let engine = engine::shared().map_err(|e| e.to_string())?;
    let component =
        wasmtime::component::Component::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
    let pre = linker(engine)?
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:#}"))?;
    CommandPre::new(pre).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

/// Whether the component imports `lifecycle.ready` (an imported instance lists only the
/// functions the guest actually uses).
fn imports_ready(engine: &Engine, component: &wasmtime::component::Component) -> bool {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let found = ty
        .imports(engine)
        .find(|(name, _)| name.starts_with("wpod:sidecar/lifecycle@"));
    match found {
        Some((_, ext)) => match ext.ty {
            ComponentItem::ComponentInstance(instance) => {
                instance.exports(engine).any(|(name, _)| name == "ready")
            }
            _ => false,
        },
        None => false,
    }
}

/// What a starting sidecar needs from its pod.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub runtime: tokio::runtime::Handle,
    pub state: Arc<PodState>,
    pub logs: Arc<Logs>,
    pub volumes: &'a PodVolumes,
    /// Entries each sidecar's resource table may hold (its handles quota).
    pub max_handles: u64,
}

/// A running sidecar.
pub struct WasmSidecar {
    name: String,
    task: JoinHandle<ExitInfo>,
    stop: Arc<AtomicBool>,
    stopping: watch::Sender<Option<tokio::time::Instant>>,
}

/// argv: `command` + `args`; with no `command`, the container's name stands as argv[0].
fn argv(plan: &ContainerPlan) -> Vec<String> {
    let c = &plan.spec;
    let head = if c.command.is_empty() {
        vec![c.name.clone()]
    } else {
        c.command.clone()
    };
    head.into_iter().chain(c.args.iter().cloned()).collect()
}

impl WasmSidecar {
    pub fn start(prepared: &PreparedSidecar, ctx: &PodContext<'_>) -> Result<Self, SidecarError> {
        let c = &prepared.plan.spec;
        let name = c.name.clone();
        let start_err = |message: String| SidecarError::Start {
            container: name.clone(),
            message,
        };

        let mut builder = WasiCtxBuilder::new();
        builder.args(&argv(&prepared.plan));
        for e in &c.env {
            builder.env(&e.name, &e.value);
        }
        builder.stdout(stdio::LogOutput {
            logs: ctx.logs.clone(),
            container: name.clone(),
            stream: Stream::Stdout,
        });
        builder.stderr(stdio::LogOutput {
            logs: ctx.logs.clone(),
            container: name.clone(),
            stream: Stream::Stderr,
        });
        NetGrant::from_container(c).apply(&mut builder);
        FsGrant::from_container(c, ctx.volumes)
            .and_then(|g| g.apply(&mut builder))
            .map_err(start_err)?;

        let (stopping, stopping_rx) = watch::channel(None);
        let limits = limits::SidecarLimits::new(c.resources.limits.memory_bytes);
        // Every socket, file, stream and pollable the guest holds is an entry of its table:
        // bounding the table bounds the host resources it can hold (`wpod.dev/sidecar-max-handles`).
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(ctx.max_handles).unwrap_or(usize::MAX));
        let state = SidecarState {
            name: name.clone(),
            wasi: builder.build(),
            table,
            limits,
            process: ProcessHost {
                grant: ProcessGrant::from_pod(ctx.pod, c),
                pod: ctx.state.clone(),
                logs: ctx.logs.clone(),
                open_streams: 0,
            },
            events: ctx.state.subscribe(),
            stopping: stopping_rx,
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
            Err(_) => ExitInfo {
                code: 137,
                signal: Some(libc::SIGKILL),
                reason: "Error",
            },
        }
    }

    /// Asks the sidecar to stop by `deadline` (its `lifecycle` `stopping` event).
    pub fn stopping(&self, deadline: tokio::time::Instant) {
        self.stopping.send_replace(Some(deadline));
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
        Ok(Ok(())) => ExitInfo {
            code: 0,
            signal: None,
            reason: "Completed",
        },
        Ok(Err(())) => ExitInfo {
            code: 1,
            signal: None,
            reason: "Error",
        },
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                let code = exit.0;
                return ExitInfo {
                    code,
                    signal: None,
                    reason: if code == 0 { "Completed" } else { "Error" },
                };
            }
            if stopped {
                return ExitInfo {
                    code: 137,
                    signal: Some(libc::SIGKILL),
                    reason: "Error",
                };
            }
            // A trap ends this sidecar only; its message goes where its output goes.
            logs.line(name, Stream::Stderr, &format!("wasm trap: {e:#}"));
            ExitInfo {
                code: 1,
                signal: None,
                reason: "Trapped",
            }
        }
    }
}
