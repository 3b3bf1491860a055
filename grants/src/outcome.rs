//! A host task a guest waits on through a pollable (a TLS handshake, a relay transfer), then its
//! outcome until the guest takes it, once. Dropping it aborts a task still running.

use std::future::Future;

use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

pub enum TaskOutcome<T> {
    Running(AbortOnDropJoinHandle<T>),
    Done(T),
    Taken,
}

impl<T: Send + 'static> TaskOutcome<T> {
    /// Starts `task` on the runtime of the calling host function.
    pub fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        TaskOutcome::Running(wasmtime_wasi::runtime::spawn(task))
    }

    /// Waits until the task has ended (a pollable's `ready`).
    pub async fn ready(&mut self) {
        if let TaskOutcome::Running(task) = self {
            let outcome = task.await;
            *self = TaskOutcome::Done(outcome);
        }
    }

    /// `None` while the task runs; then its outcome, once (`Some(Some(..))`), even if no
    /// `ready` saw it end; `Some(None)` once it was taken.
    pub async fn take(&mut self) -> Option<Option<T>> {
        if let TaskOutcome::Running(task) = self {
            if !task.is_finished() {
                return None;
            }
        }
        self.ready().await;
        match std::mem::replace(self, TaskOutcome::Taken) {
            TaskOutcome::Done(outcome) => Some(Some(outcome)),
            TaskOutcome::Taken => Some(None),
            TaskOutcome::Running(_) => unreachable!("ended just above"),
        }
    }
}
