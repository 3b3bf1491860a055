//! Lifecycle (always granted): a sidecar says when it is ready, and waits for pod events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::lifecycle::{self, Event};
use super::bindings::v0_1::lifecycle as old;
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::Diagnostic;
use crate::status::{PodEvent, PodState};

pub struct Lifecycle;

/// What `ready` and the events reach in one instance.
pub struct LifecycleCtx {
    name: String,
    pod: Arc<PodState>,
    queue: Arc<tokio::sync::Mutex<EventQueue>>,
}

impl Capability for Lifecycle {
    type Grant = ();
    type State = LifecycleCtx;

    const IMPORTS: &'static [Import] = &[Import {
        interface: "wpod:sidecar/lifecycle",
        rule: ImportRule::Always {
            what: "ready() and pod lifecycle events",
        },
    }];

    fn resolve(_sidecar: &Sidecar<'_>, _diags: &mut Vec<Diagnostic>) {}

    fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: GrantHost>(t: &mut T) -> LifecycleView<'_> {
            let (states, table) = t.grant_states();
            LifecycleView {
                ctx: &mut states.lifecycle,
                table,
            }
        }
        lifecycle::add_to_linker::<T, HasLifecycle>(linker, view)?;
        old::add_to_linker::<T, HasLifecycle>(linker, view)
    }

    fn prepare(_grant: &(), setup: &mut InstanceSetup<'_>) -> Result<LifecycleCtx, GrantError> {
        Ok(LifecycleCtx {
            name: setup.name.to_string(),
            pod: setup.status.clone(),
            queue: Arc::new(tokio::sync::Mutex::new(EventQueue {
                events: setup.status.subscribe(),
                stopping: setup.stopping.clone(),
                pending: None,
            })),
        })
    }
}

/// Whether a component imports `lifecycle.ready` (an imported instance lists only the
/// functions the guest actually uses): as a native sidecar it then counts as started only once
/// it calls it.
pub fn signals_readiness(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> bool {
    imports_lifecycle_function(engine, component, "ready")
}

/// Whether the component can hear the `stopping` event (it imports `lifecycle.next-event` or
/// `try-next-event`). One that cannot has no way to stop politely, as a process without a
/// SIGTERM handler: it is stopped at once rather than at the end of the grace period.
pub fn hears_stopping(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> bool {
    imports_lifecycle_function(engine, component, "next-event")
        || imports_lifecycle_function(engine, component, "try-next-event")
}

fn imports_lifecycle_function(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    function: &str,
) -> bool {
    use wasmtime::component::types::ComponentItem;
    // Any version's: a component may import 0.1.0's and 0.2.0's side by side.
    let ty = component.component_type();
    let found = ty
        .imports(engine)
        .filter(|(name, _)| name.starts_with("wpod:sidecar/lifecycle@"))
        .any(|(_, ext)| match ext.ty {
            ComponentItem::ComponentInstance(instance) => {
                instance.exports(engine).any(|(name, _)| name == function)
            }
            _ => false,
        });
    found
}

/// The events an instance has not taken yet, shared by its `lifecycle` functions and the
/// pollable `subscribe` returns.
pub struct EventQueue {
    events: broadcast::Receiver<PodEvent>,
    stopping: watch::Receiver<Option<tokio::time::Instant>>,
    /// An event the pollable received before the guest asked for it.
    pending: Option<Event>,
}

impl EventQueue {
    /// The `stopping` event, once the pod is stopping: every call says so from then on.
    fn stopping_now(&self) -> Option<Event> {
        (*self.stopping.borrow()).map(|deadline| {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            Event::Stopping(left.as_millis() as u64)
        })
    }

    fn take(&mut self) -> Option<Event> {
        if let Some(e) = self.stopping_now() {
            return Some(e);
        }
        if let Some(e) = self.pending.take() {
            return Some(e);
        }
        loop {
            match self.events.try_recv() {
                Ok(e) => return Some(to_wit(e)),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits until `take` has an event. Never returns when the pod's feeds are gone.
    async fn wait(&mut self) {
        if self.pending.is_some() || self.stopping_now().is_some() {
            return;
        }
        loop {
            tokio::select! {
                changed = self.stopping.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    if self.stopping_now().is_some() {
                        return;
                    }
                }
                event = self.events.recv() => match event {
                    Ok(e) => {
                        self.pending = Some(to_wit(e));
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
                },
            }
        }
    }
}

fn to_wit(e: PodEvent) -> Event {
    match e {
        PodEvent::MainStarted(name) => Event::MainStarted(name),
        PodEvent::MainExited(name, code) => Event::MainExited((name, code)),
    }
}

/// The pollable of `subscribe`: ready when the queue has an event. It waits holding the queue,
/// so of two such pollables in one `poll` only the first can report ready (one subscription
/// at a time is what the SDKs keep).
struct EventsReady(Arc<tokio::sync::Mutex<EventQueue>>);

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for EventsReady {
    async fn ready(&mut self) {
        self.0.lock().await.wait().await
    }
}

/// The `lifecycle` host: this capability's state and the instance's resource table.
pub struct LifecycleView<'a> {
    ctx: &'a mut LifecycleCtx,
    table: &'a mut ResourceTable,
}

struct HasLifecycle;

impl HasData for HasLifecycle {
    type Data<'a> = LifecycleView<'a>;
}

impl lifecycle::Host for LifecycleView<'_> {
    async fn ready(&mut self) -> wasmtime::Result<()> {
        self.ctx.pod.set_ready(&self.ctx.name);
        Ok(())
    }

    async fn next_event(&mut self, timeout_ms: u64) -> wasmtime::Result<Option<Event>> {
        let mut queue = self.ctx.queue.lock().await;
        if let Some(e) = queue.take() {
            return Ok(Some(e));
        }
        let waited = tokio::time::timeout(Duration::from_millis(timeout_ms), queue.wait()).await;
        Ok(waited.ok().and_then(|()| queue.take()))
    }

    async fn try_next_event(&mut self) -> wasmtime::Result<Option<Event>> {
        Ok(self.ctx.queue.lock().await.take())
    }

    async fn subscribe(
        &mut self,
    ) -> wasmtime::Result<Resource<wasmtime_wasi_io::poll::DynPollable>> {
        let ready = self.table.push(EventsReady(self.ctx.queue.clone()))?;
        wasmtime_wasi_io::poll::subscribe(self.table, ready)
    }
}

/// wpod:sidecar@0.1.0's `lifecycle`: the same functions, in 0.1.0's types.
impl old::Host for LifecycleView<'_> {
    async fn ready(&mut self) -> wasmtime::Result<()> {
        lifecycle::Host::ready(self).await
    }

    async fn next_event(&mut self, timeout_ms: u64) -> wasmtime::Result<Option<old::Event>> {
        Ok(lifecycle::Host::next_event(self, timeout_ms)
            .await?
            .map(Into::into))
    }
}
