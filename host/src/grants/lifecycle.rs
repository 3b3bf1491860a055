//! Lifecycle (always granted): a sidecar says when it is ready, and waits for pod events.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::sidecars::bindings::lifecycle::{self, Event};
use crate::sidecars::SidecarState;
use crate::supervisor::state::PodEvent;

impl lifecycle::Host for SidecarState {
    async fn ready(&mut self) -> wasmtime::Result<()> {
        self.process.pod.set_ready(&self.name);
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
