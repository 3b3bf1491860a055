//! Wasm sidecars: components run in wasmtime with only the capabilities the pod grants.
//!
//! Before the pod starts, each sidecar is *prepared* (compiled or loaded from the cache, linked,
//! pre-instantiated: a refused import fails here). Each start then builds a fresh store whose
//! host state each capability prepares from the grants the plan resolved (`crate::grants`), and
//! runs `wasi:cli/run` on the pod's own runtime (`sandbox::runtime`), so that its sockets live in the
//! pod's network namespace.

pub mod cache;
pub mod components;
pub mod engine;
pub mod limits;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::grants::{self, GrantHost, GrantStates, InstanceSetup, OpenVolumes};
use crate::logs::{Logs, Stream};
use crate::plan::{ContainerPlan, Image, PodPlan, WasmComponent};
use crate::status::{ExitInfo, ExitReason, PodState};
use components::LoadedComponent;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("sidecar {container}: {message}")]
    Link { container: String, message: String },
    #[error("sidecar {container}")]
    Grant {
        container: String,
        #[source]
        source: crate::grants::GrantError,
    },
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

    fn fs_parts(
        &mut self,
    ) -> (
        wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
        &mut GrantStates,
    ) {
        (
            wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            &mut self.grants,
        )
    }

    fn sockets_parts(
        &mut self,
    ) -> (
        wasmtime_wasi::sockets::WasiSocketsCtxView<'_>,
        &mut GrantStates,
    ) {
        (
            wasmtime_wasi::sockets::WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
            &mut self.grants,
        )
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

/// A sidecar ready to start (and restart) quickly: its plan (with its grants), and its component
/// compiled, linked and pre-instantiated (shared with every container that runs the same file).
#[derive(Clone)]
pub struct PreparedSidecar {
    /// Shared with the supervisor's member for the container (about 3 KiB a copy; the pod's
    /// plan holds another).
    pub plan: Arc<ContainerPlan>,
    pub component: Arc<LoadedComponent>,
}

impl PreparedSidecar {
    pub fn prepare(plan: &ContainerPlan) -> Result<Self, SidecarError> {
        let wasm = wasm_image(plan)?;
        let component = components::load(
            engine::shared()?,
            &wasm.path,
            wasm.digest.as_ref(),
            plan.name(),
        )?;
        Self::with_component(plan, component)
    }

    /// Loads the component `plan` runs from its compiled cache entry, ahead of the change
    /// that starts it: `wpod apply` loads the new sidecars' components as it reads the
    /// manifest, on the same thread, and prepares them with [`PreparedSidecar::preloaded`].
    /// Only a sound cache entry is loaded, and only in a process that runs sidecars already
    /// (has the engine): a change that is then refused pays for no compile and leaves no
    /// engine behind. `None` otherwise, for a pulled component (its digest is checked as
    /// [`Self::prepare`] loads it), or when anything fails (the prepare then loads it and says
    /// why).
    pub fn preload(plan: &ContainerPlan) -> Option<Preloaded> {
        let wasm = wasm_image(plan).ok().filter(|w| w.digest.is_none())?;
        let engine = engine::existing()?;
        let component = components::locate(engine, &wasm.path, None)
            .ok()?
            .finish_from_cache(engine, plan.name())?;
        Some(Preloaded {
            wasm: wasm.clone(),
            component,
        })
    }

    /// `plan` prepared with a component `preloaded` for its very file, if there is one: no
    /// I/O, so it needs no thread of its own.
    pub fn preloaded(
        plan: &ContainerPlan,
        preloaded: &[Preloaded],
    ) -> Option<Result<Self, SidecarError>> {
        let wasm = wasm_image(plan).ok()?;
        let found = preloaded.iter().find(|p| p.wasm == *wasm)?;
        Some(Self::with_component(plan, found.component.clone()))
    }

    fn with_component(
        plan: &ContainerPlan,
        component: Arc<LoadedComponent>,
    ) -> Result<Self, SidecarError> {
        wasm_image(plan)?;
        Ok(PreparedSidecar {
            plan: Arc::new(plan.clone()),
            component,
        })
    }

    pub fn name(&self) -> &str {
        self.plan.name()
    }

    /// The sha256 of the component's bytes (`sha256:<hex>`).
    pub fn digest(&self) -> &str {
        &self.component.digest
    }
}

fn not_wasm(plan: &ContainerPlan) -> SidecarError {
    SidecarError::Link {
        container: plan.name().into(),
        message: "not a Wasm component".into(),
    }
}

fn wasm_image(plan: &ContainerPlan) -> Result<&crate::plan::WasmComponent, SidecarError> {
    match (&plan.image, &plan.grants) {
        (Image::Wasm(wasm), Some(_)) => Ok(wasm),
        _ => Err(not_wasm(plan)),
    }
}

/// A component loaded by [`PreparedSidecar::preload`] for the file `wasm` names.
pub struct Preloaded {
    wasm: crate::plan::WasmComponent,
    component: Arc<LoadedComponent>,
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
/// pod: a component that cannot run fails here. By container index; `None` for native
/// containers.
pub fn prepare_all(plan: &PodPlan) -> Result<Vec<Option<PreparedSidecar>>, SidecarError> {
    prepare(plan, &Unobserved)
}

/// [`prepare_all`], telling `observer` of each compile. `wpod run` calls it beside the
/// sandbox's creation, before its runtime joins the pod's cgroup (a compile's memory is not the
/// pod's).
pub fn prepare(
    plan: &PodPlan,
    observer: &dyn CompileObserver,
) -> Result<Vec<Option<PreparedSidecar>>, SidecarError> {
    Preparation::begin(plan, observer)?.finish()
}

/// Told when a component is compiled rather than loaded from the cache: the first run of a
/// new component takes seconds (a Python or JavaScript one, ten or more), which a user should
/// not wait through in silence.
pub trait CompileObserver: Sync {
    /// `path` (of `bytes`), for `container`, is about to be compiled.
    fn compiling(&self, container: &str, path: &Path, bytes: u64);
    /// It was compiled (and cached) in `took`.
    fn compiled(&self, container: &str, path: &Path, took: std::time::Duration);
}

/// Nobody to tell.
pub struct Unobserved;

impl CompileObserver for Unobserved {
    fn compiling(&self, _: &str, _: &Path, _: u64) {}
    fn compiled(&self, _: &str, _: &Path, _: std::time::Duration) {}
}

/// What `wpod compile` did for one component.
pub enum Compiled {
    /// The cache had it.
    Cached,
    /// Compiled now (and cached), `bytes` of component in `took`.
    Now {
        bytes: u64,
        took: std::time::Duration,
    },
}

/// Puts `path`'s compiled code in the cache ahead of its first run (`wpod compile`, `wpod
/// pull`), with the engine pods use; `observer` is told before and after a compilation.
pub fn compile(path: &Path, observer: &dyn CompileObserver) -> Result<Compiled, SidecarError> {
    let engine = engine::shared()?;
    let located = cache::locate(engine, path, None)?;
    if located.is_cached() {
        return Ok(Compiled::Cached);
    }
    let name = crate::plan::image::file_label(path);
    observer.compiling(&name, path, located.size());
    let started = std::time::Instant::now();
    located.load(engine)?;
    let took = started.elapsed();
    observer.compiled(&name, path, took);
    Ok(Compiled::Now {
        bytes: located.size(),
        took,
    })
}

/// The pod's sidecars on their way to being prepared: every component read, hashed and, when
/// the cache lacks it, compiled; then their code loaded, linked and pre-instantiated. Each
/// distinct component (file and reviewed digest) is loaded once, distinct ones on threads of
/// their own.
struct Preparation<'a> {
    plan: &'a PodPlan,
    /// Per distinct component: the containers (by index) that run it, and its loading.
    components: Vec<(Vec<usize>, components::Loading)>,
}

impl<'a> Preparation<'a> {
    /// Reads and hashes every component, and compiles those the cache lacks.
    fn begin(plan: &'a PodPlan, observer: &dyn CompileObserver) -> Result<Self, SidecarError> {
        let mut groups: Vec<(&WasmComponent, Vec<usize>)> = Vec::new();
        for (i, c) in plan.containers.iter().enumerate() {
            if c.grants.is_none() {
                continue;
            }
            let wasm = wasm_image(c)?;
            match groups.iter_mut().find(|(w, _)| *w == wasm) {
                Some((_, members)) => members.push(i),
                None => groups.push((wasm, vec![i])),
            }
        }
        if groups.is_empty() {
            // No engine (its instance pool and epoch thread) for a pod without sidecars.
            return Ok(Preparation {
                plan,
                components: Vec::new(),
            });
        }
        let engine = engine::shared_for(plan.wasm_containers_at_once())?;
        let loadings = on_threads(groups.iter().collect(), |(wasm, members)| {
            let container = plan.containers[members[0]].name();
            let loading = components::locate(engine, &wasm.path, wasm.digest.as_ref())?;
            if loading.is_cached() {
                return Ok(loading);
            }
            observer.compiling(container, &wasm.path, loading.size().unwrap_or(0));
            let started = std::time::Instant::now();
            let done = loading
                .finish(engine, container)
                .map(components::Loading::Done)?;
            observer.compiled(container, &wasm.path, started.elapsed());
            Ok(done)
        })?;
        Ok(Preparation {
            plan,
            components: groups.into_iter().map(|(_, m)| m).zip(loadings).collect(),
        })
    }

    /// Loads the cached code, links and pre-instantiates; by container index, `None` for
    /// native containers.
    fn finish(self) -> Result<Vec<Option<PreparedSidecar>>, SidecarError> {
        let plan = self.plan;
        if self.components.is_empty() {
            return Ok(vec![None; plan.containers.len()]);
        }
        let engine = engine::shared()?;
        let (members, loadings): (Vec<_>, Vec<_>) = self.components.into_iter().unzip();
        let work: Vec<_> = members.iter().zip(loadings).collect();
        let loaded = on_threads(work, |(members, loading)| {
            loading.finish(engine, plan.containers[members[0]].name())
        })?;
        let mut prepared: Vec<Option<PreparedSidecar>> = vec![None; plan.containers.len()];
        for (members, component) in members.iter().zip(loaded) {
            for &i in members {
                prepared[i] = Some(PreparedSidecar::with_component(
                    &plan.containers[i],
                    component.clone(),
                )?);
            }
        }
        Ok(prepared)
    }
}

/// `f` over `items`, on as many threads as the host has cores (results in order; the first
/// error wins). Each may compile with Cranelift, itself parallel: more threads would only queue.
fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> Result<R, SidecarError> + Sync,
) -> Result<Vec<R>, SidecarError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() <= 1 || threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    for item in items {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < per_thread => chunk.push(item),
            _ => chunks.push(vec![item]),
        }
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// What a starting sidecar needs from its pod.
pub struct PodContext<'a> {
    pub runtime: tokio::runtime::Handle,
    pub state: Arc<PodState>,
    pub logs: Arc<Logs>,
    pub volumes: &'a dyn OpenVolumes,
    /// Entries each sidecar's resource table may hold (its handles quota).
    pub max_handles: u64,
    /// The pod's addresses and resolver.
    pub network: Arc<grants::net::PodNet>,
    /// Where refusals and audited uses go.
    pub reports: Arc<grants::report::Reporter>,
    /// The downward API's values the sandbox knows (the pod's IP).
    pub facts: Arc<crate::spec::env::RuntimeFacts>,
}

/// A running sidecar.
pub struct WasmSidecar {
    name: String,
    task: JoinHandle<ExitInfo>,
    stop: Arc<AtomicBool>,
    stopping: watch::Sender<Option<tokio::time::Instant>>,
    hears_stopping: bool,
    /// Stopped at once because it cannot hear `stopping`: it ends as a process ends on a
    /// SIGTERM it does not handle (143), not as one killed at the end of the grace period.
    stopped_unheard: AtomicBool,
}

impl WasmSidecar {
    pub fn start(prepared: &PreparedSidecar, ctx: &PodContext<'_>) -> Result<Self, SidecarError> {
        let plan = &prepared.plan;
        let name = plan.name.clone();
        let (stopping, stopping_rx) = watch::channel(None);
        let mut builder = WasiCtxBuilder::new();
        let mut setup = InstanceSetup {
            name: &name,
            wasi: &mut builder,
            volumes: ctx.volumes,
            status: &ctx.state,
            logs: &ctx.logs,
            stopping: stopping_rx,
            network: &ctx.network,
            reports: &ctx.reports,
            facts: &ctx.facts,
        };
        let grants = plan
            .grants
            .as_ref()
            .ok_or_else(|| not_wasm(plan))?
            .prepare(&mut setup)
            .map_err(|source| SidecarError::Grant {
                container: name.clone(),
                source,
            })?;
        // Every socket, file, stream and pollable the guest holds is an entry of its table:
        // bounding the table bounds the host resources it can hold (`wpod.dev/sidecar-max-handles`).
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(ctx.max_handles).unwrap_or(usize::MAX));
        let state = SidecarState {
            wasi: builder.build(),
            table,
            grants,
            limits: limits::SidecarLimits::new(plan.limits.memory_bytes),
        };
        let engine = engine::shared()?;
        let stop = Arc::new(AtomicBool::new(false));
        let pre = prepared.component.pre.clone();
        let logs = ctx.logs.clone();
        let task_name = name.clone();
        let stopped = stop.clone();
        let task = ctx.runtime.spawn(
            async move {
                let mut store = engine::new_store(engine, state);
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
            }
            // Under --audit, host calls are attributed to the sidecar by this span.
            .instrument(tracing::trace_span!(
                crate::grants::calls::SIDECAR_SPAN,
                container = %name
            )),
        );
        Ok(WasmSidecar {
            name,
            task,
            stop,
            stopping,
            hears_stopping: prepared.component.hears_stopping,
            stopped_unheard: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it has not ended yet.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Waits for the sidecar to end. Cancel-safe.
    pub async fn exited(&mut self) -> ExitInfo {
        let exit = match (&mut self.task).await {
            Ok(exit) => exit,
            // Aborted: stopped by force while waiting in the host.
            Err(_) => ExitInfo::killed(),
        };
        if self.stopped_unheard.load(Ordering::SeqCst) && exit.signal == Some(libc::SIGKILL) {
            return ExitInfo::terminated();
        }
        exit
    }

    /// Asks the sidecar to stop by `deadline` (its `lifecycle` `stopping` event); one that
    /// cannot hear it is stopped at once, as SIGTERM ends a process that does not handle it.
    /// Whether it was stopped by force.
    pub fn stopping(&self, deadline: tokio::time::Instant) -> bool {
        if !self.hears_stopping {
            self.stopped_unheard.store(true, Ordering::SeqCst);
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
            if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                // Planning and `wpod apply` keep a pod's sidecars within its slots; memories and
                // tables are held to the pool's share a slot on average only (`engine`).
                logs.line(
                    name,
                    Stream::Stderr,
                    &format!(
                        "cannot start: this pod's sidecar pool is full ({full}). It was sized \
                         when the pod started, with {} linear memories and {} tables a slot: \
                         restarting the pod sizes it for the sidecars it then has; components \
                         that need more memories or tables than that belong in a pod of their own",
                        engine::MEMORIES_PER_SLOT,
                        engine::TABLES_PER_SLOT
                    ),
                );
                return ExitInfo::exited(1);
            }
            // A trap ends this sidecar only; its message goes where its output goes.
            logs.line(name, Stream::Stderr, &format!("wasm trap: {e:#}"));
            ExitInfo {
                code: 1,
                signal: None,
                reason: ExitReason::Trapped,
                message: Some(format!("wasm trap: {e:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that imports `interface` as an instance exporting `ready: func()`.
    fn importing_ready(interface: &str) -> Vec<u8> {
        use wasm_encoder::{
            Component, ComponentFuncTypeEncoder, ComponentImportSection, ComponentTypeRef,
            ComponentTypeSection, InstanceType,
        };
        let mut instance = InstanceType::new();
        {
            let mut f: ComponentFuncTypeEncoder<'_> = instance.ty().function();
            f.params(std::iter::empty::<(&str, wasm_encoder::ComponentValType)>())
                .result(None);
        }
        instance.export("ready", ComponentTypeRef::Func(0));
        let mut types = ComponentTypeSection::new();
        types.instance(&instance);
        let mut imports = ComponentImportSection::new();
        imports.import(interface, ComponentTypeRef::Instance(0));
        let mut component = Component::new();
        component.section(&types);
        component.section(&imports);
        component.finish()
    }

    #[test]
    fn components_built_against_an_earlier_0_2_link_to_0_2_2() {
        let engine = engine::shared().unwrap();
        let linker = linker(engine).unwrap();
        let link = |interface: &str| {
            let bytes = importing_ready(interface);
            let component = wasmtime::component::Component::new(engine, &bytes).unwrap();
            linker.instantiate_pre(&component).map(|_| ())
        };
        link("wpod:sidecar/lifecycle@0.2.0").expect("0.2.0 links to 0.2.2");
        link("wpod:sidecar/lifecycle@0.2.1").expect("0.2.1 links to 0.2.2");
        link("wpod:sidecar/lifecycle@0.2.2").expect("0.2.2");
        link("wpod:sidecar/lifecycle@0.1.0").expect("0.1.0 has its own bindings");
        assert!(
            link("wpod:sidecar/lifecycle@0.3.0").is_err(),
            "0.3 is not 0.2"
        );
    }
}
