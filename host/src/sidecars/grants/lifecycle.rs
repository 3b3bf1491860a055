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
        let wait = tokio::time::timeout(Duration::from_millis(timeout_ms), async {
            loop {
                match self.events.recv().await {
                    Ok(e) => return Some(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let event = match wait.await {
            Ok(Some(e)) => e,
            _ => return Ok(None),
        };
        Ok(Some(match event {
            PodEvent::MainStarted(name) => Event::MainStarted(name),
            PodEvent::MainExited(name, code) => Event::MainExited((name, code)),
            PodEvent::Stopping { deadline } => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Event::Stopping(left.as_millis() as u64)
            }
        }))
    }
}
