//! Lifecycle (always granted): a sidecar says when it is ready, and waits for pod events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use wasmtime::component::{HasSelf, Linker};

use super::bindings::lifecycle::{self, Event};
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::Diagnostic;
use crate::status::{PodEvent, PodState};

pub struct Lifecycle;

/// What `ready` and `next-event` reach in one instance.
pub struct LifecycleCtx {
    name: String,
    pod: Arc<PodState>,
    events: broadcast::Receiver<PodEvent>,
    stopping: watch::Receiver<Option<tokio::time::Instant>>,
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
        lifecycle::add_to_linker::<T, HasSelf<LifecycleCtx>>(linker, |t| {
            &mut t.grant_states().0.lifecycle
        })
    }

    fn prepare(_grant: &(), setup: &mut InstanceSetup<'_>) -> Result<LifecycleCtx, GrantError> {
        Ok(LifecycleCtx {
            name: setup.name.to_string(),
            pod: setup.status.clone(),
            events: setup.status.subscribe(),
            stopping: setup.stopping.clone(),
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

/// Whether the component can hear the `stopping` event (it imports `lifecycle.next-event`). One
/// that cannot has no way to stop politely, as a process without a SIGTERM handler: it is
/// stopped at once rather than at the end of the grace period.
pub fn hears_stopping(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> bool {
    imports_lifecycle_function(engine, component, "next-event")
}

fn imports_lifecycle_function(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    function: &str,
) -> bool {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let found = ty
        .imports(engine)
        .find(|(name, _)| name.starts_with("wpod:sidecar/lifecycle@"));
    match found {
        Some((_, ext)) => match ext.ty {
            ComponentItem::ComponentInstance(instance) => {
                instance.exports(engine).any(|(name, _)| name == function)
            }
            _ => false,
        },
        None => false,
    }
}

impl lifecycle::Host for LifecycleCtx {
    async fn ready(&mut self) -> wasmtime::Result<()> {
        self.pod.set_ready(&self.name);
        Ok(())
    }

    async fn next_event(&mut self, timeout_ms: u64) -> wasmtime::Result<Option<Event>> {
        let stopping_now = |s: &Self| {
            (*s.stopping.borrow()).map(|deadline| {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Event::Stopping(left.as_millis() as u64)
            })
        };
        // Once asked to stop, every call says so.
        if let Some(e) = stopping_now(self) {
            return Ok(Some(e));
        }
        let timeout = tokio::time::sleep(Duration::from_millis(timeout_ms));
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                _ = &mut timeout => return Ok(None),
                changed = self.stopping.changed() => {
                    if changed.is_err() {
                        // The pod is gone; wait out the timeout.
                        (&mut timeout).await;
                        return Ok(None);
                    }
                    if let Some(e) = stopping_now(self) {
                        return Ok(Some(e));
                    }
                }
                event = self.events.recv() => match event {
                    Ok(PodEvent::MainStarted(name)) => return Ok(Some(Event::MainStarted(name))),
                    Ok(PodEvent::MainExited(name, code)) => return Ok(Some(Event::MainExited((name, code)))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut timeout).await;
                        return Ok(None);
                    }
                },
            }
        }
    }
}
