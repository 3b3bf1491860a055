//! Relay (always granted): the host moves bytes from one of a sidecar's input streams to one of
//! its output streams until the input ends, with no call into the sidecar per chunk.
//!
//! Why: a relaying sidecar (a TCP or TLS proxy) driving `splice` itself wakes for every chunk
//! of every connection, and each wake is a `poll` over all its connections' pollables: with
//! 100 keep-alive connections, tls-proxy spent most of its time there, not in TLS. A transfer
//! is a host task that reads what the input has and writes it to the output at once.
//!
//! It reaches nothing new: both streams are the sidecar's own (its sockets', its host TLS
//! sessions', its files'), taken from its resource table, and the transfer drops them when it
//! ends; the socket a stream belongs to stays the sidecar's. What it can cost the host is
//! bounded: a transfer reads at most what the output has room for, and at most [`CHUNK`], and
//! writes it before it reads again, so it holds one chunk at a time ([`TRANSFER_COST`] with the
//! output's own buffer); transfers at once are limited by the sidecar's memory limit
//! ([`RelayGrant`]). Its CPU is the host's time to move bytes the sidecar could move itself
//! with `splice`; each chunk and each wait count against the runtime's budget for a task's
//! turn, so a transfer never holds a thread.
//!
//! A transfer ends with its resource: dropping it, or the instance ending (its resource table
//! is dropped with its store), aborts the task.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

use super::bindings::relay;
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::spec::Diagnostic;

/// The most a transfer reads at once (a TLS record's plaintext).
pub const CHUNK: usize = 16 * 1024;
/// What a transfer may hold in the host: the chunk it read and what its output still holds
/// of the one before.
pub const TRANSFER_COST: u64 = 2 * CHUNK as u64;
/// Transfers one instance may have at once, whatever its memory limit.
pub const MAX_TRANSFERS: usize = 8192;
/// Transfers an instance may have at once, however small its memory limit.
pub const MIN_TRANSFERS: usize = 16;

pub struct Relay;

/// How many transfers one sidecar may have at once, decided from its memory limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayGrant {
    pub transfers: usize,
}

impl RelayGrant {
    /// An eighth of the limit, [`TRANSFER_COST`] each: what the host holds for a sidecar's
    /// transfers stays small beside what its TLS sessions may hold (tls.rs).
    pub fn for_memory_limit(limit: Option<u64>) -> Self {
        let transfers = match limit {
            Some(limit) => {
                ((limit / 8 / TRANSFER_COST) as usize).clamp(MIN_TRANSFERS, MAX_TRANSFERS)
            }
            None => MAX_TRANSFERS,
        };
        RelayGrant { transfers }
    }
}

/// One instance's relay state: the transfer slots it has left.
pub struct RelayCtx {
    slots: Arc<Semaphore>,
    grant: RelayGrant,
}

impl Capability for Relay {
    type Grant = RelayGrant;
    type State = RelayCtx;

    const IMPORTS: &'static [Import] = &[Import {
        interface: "wpod:sidecar/relay",
        rule: ImportRule::Always {
            what: "bytes moved by the host between streams the sidecar already holds",
        },
    }];

    fn resolve(sidecar: &Sidecar<'_>, _diags: &mut Vec<Diagnostic>) -> RelayGrant {
        RelayGrant::for_memory_limit(sidecar.container.resources.limits.memory_bytes)
    }

    fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: GrantHost>(t: &mut T) -> RelayView<'_> {
            let (states, table) = t.grant_states();
            RelayView {
                ctx: &mut states.relay,
                table,
            }
        }
        relay::add_to_linker::<T, HasRelay>(linker, view)
    }

    fn prepare(grant: &RelayGrant, _setup: &mut InstanceSetup<'_>) -> Result<RelayCtx, GrantError> {
        Ok(RelayCtx {
            slots: Arc::new(Semaphore::new(grant.transfers)),
            grant: *grant,
        })
    }
}

/// How a transfer ended: the bytes moved, or why it stopped (said to the guest in words).
type Outcome = Result<u64, String>;

/// A transfer's task, then its outcome until the guest takes it.
enum State {
    Running(AbortOnDropJoinHandle<Outcome>),
    Done(Outcome),
    Taken,
}

/// The `transfer` resource. It holds its slot until the guest drops it, not only while it
/// runs: a slot comes back at a point the guest sees (its `drop`), never later.
pub struct Transfer {
    state: State,
    _slot: OwnedSemaphorePermit,
}

impl Transfer {
    /// The outcome once the task has ended (`None` before), once.
    async fn get(&mut self) -> Option<Outcome> {
        if let State::Running(task) = &mut self.state {
            if !task.is_finished() {
                return None;
            }
            let outcome = task.await;
            self.state = State::Done(outcome);
        }
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Done(outcome) => Some(outcome),
            State::Taken => Some(Err("the transfer's outcome was already taken".into())),
            State::Running(_) => unreachable!("finished just above"),
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for Transfer {
    async fn ready(&mut self) {
        if let State::Running(task) = &mut self.state {
            let outcome = task.await;
            self.state = State::Done(outcome);
        }
    }
}

/// Why a stream stopped a transfer, for the guest.
fn why(side: &str, moved: u64, e: StreamError) -> String {
    match e {
        StreamError::Closed => format!("{side} closed after {moved} bytes"),
        StreamError::LastOperationFailed(e) => format!("{side} failed after {moved} bytes: {e:#}"),
        StreamError::Trap(e) => format!("{side} refused after {moved} bytes: {e:#}"),
    }
}

/// Moves what `from` gives to `to` until `from` ends, then flushes `to`.
async fn pump(mut from: DynInputStream, mut to: DynOutputStream) -> Outcome {
    let mut moved: u64 = 0;
    loop {
        // Room in the output first: what is read is written at once, never held.
        let room = loop {
            match to.check_write() {
                Ok(0) => wait(&mut to).await,
                Ok(n) => break n,
                Err(e) => return Err(why("the output", moved, e)),
            }
        };
        let data: Bytes = loop {
            match from.read(room.min(CHUNK)) {
                Ok(data) if data.is_empty() => wait(&mut from).await,
                Ok(data) => break data,
                Err(StreamError::Closed) => return finish(to, moved).await,
                Err(e) => return Err(why("the input", moved, e)),
            }
        };
        moved += data.len() as u64;
        to.write(data).map_err(|e| why("the output", moved, e))?;
        // Others on this runtime get their turn between chunks of a long transfer.
        tokio::task::consume_budget().await;
    }
}

/// Waits for a stream's readiness. Each wait counts against the runtime's budget for a task's
/// turn, so a stream that says it is ready when it is not cannot hold the thread.
async fn wait<P: wasmtime_wasi_io::poll::Pollable>(stream: &mut P) {
    tokio::task::consume_budget().await;
    stream.ready().await;
}

/// The input ended: flushes the output and waits for it to take everything.
async fn finish(mut to: DynOutputStream, moved: u64) -> Outcome {
    to.flush().map_err(|e| why("the output", moved, e))?;
    loop {
        match to.check_write() {
            Ok(0) => wait(&mut to).await,
            Ok(_) => return Ok(moved),
            Err(e) => return Err(why("the output", moved, e)),
        }
    }
}

/// The `relay` host: this capability's state and the instance's resource table.
pub struct RelayView<'a> {
    ctx: &'a mut RelayCtx,
    table: &'a mut ResourceTable,
}

struct HasRelay;

impl HasData for HasRelay {
    type Data<'a> = RelayView<'a>;
}

impl relay::Host for RelayView<'_> {
    async fn start(
        &mut self,
        from: Resource<DynInputStream>,
        to: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Result<Resource<Transfer>, String>> {
        // The streams are the transfer's either way: refused, it drops them, as a failed
        // `tls.accept` does.
        let from = self.table.delete(from)?;
        let to = self.table.delete(to)?;
        let Ok(slot) = self.ctx.slots.clone().try_acquire_owned() else {
            return Ok(Err(format!(
                "{} transfers are already under way, this sidecar's most (an eighth of limits.memory, {} KiB each)",
                self.ctx.grant.transfers,
                TRANSFER_COST / 1024
            )));
        };
        let task = wasmtime_wasi::runtime::spawn(pump(from, to));
        let transfer = Transfer {
            state: State::Running(task),
            _slot: slot,
        };
        Ok(Ok(self.table.push(transfer)?))
    }
}

impl relay::HostTransfer for RelayView<'_> {
    async fn subscribe(
        &mut self,
        this: Resource<Transfer>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi_io::poll::DynPollable>> {
        wasmtime_wasi_io::poll::subscribe(self.table, this)
    }

    async fn get(&mut self, this: Resource<Transfer>) -> wasmtime::Result<Option<Outcome>> {
        Ok(self.table.get_mut(&this)?.get().await)
    }

    async fn drop(&mut self, this: Resource<Transfer>) -> wasmtime::Result<()> {
        // A transfer still running is aborted with its task, which drops both streams; its
        // slot is free from here.
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream, MemoryInputPipe};

    #[tokio::test]
    async fn a_transfer_moves_everything_in_order_then_says_how_much() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let from: DynInputStream = Box::new(MemoryInputPipe::new(data.clone()));
        let (writer, mut reader) = tokio::io::duplex(4096);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(4096, writer));
        let task = tokio::spawn(pump(from, to));
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got)
            .await
            .unwrap();
        assert_eq!(task.await.unwrap(), Ok(data.len() as u64));
        assert!(got == data, "the bytes arrived changed or reordered");
    }

    #[tokio::test]
    async fn a_transfer_holds_one_chunk_while_its_output_has_no_room() {
        // The input has 1 MiB ready; nobody reads the output.
        let from: DynInputStream = Box::new(MemoryInputPipe::new(vec![7u8; 1 << 20]));
        let (writer, reader) = tokio::io::duplex(1024);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(1024, writer));
        let task = tokio::spawn(pump(from, to));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !task.is_finished(),
            "nothing can end while the output is full"
        );
        // Its reader gone, the output fails: the transfer says so, with how far it got.
        drop(reader);
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a failed output ends the transfer")
            .unwrap();
        let e = outcome.expect_err("the output failed");
        assert!(e.starts_with("the output "), "{e}");
        let moved: u64 = e
            .split(" after ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            moved <= 2 * 1024 + CHUNK as u64,
            "moved {moved} into 1 KiB of room: {e}"
        );
    }

    #[tokio::test]
    async fn an_input_that_fails_stops_the_transfer_and_says_so() {
        struct Broken;
        impl tokio::io::AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                )))
            }
        }
        let from: DynInputStream = Box::new(AsyncReadStream::new(Broken));
        let (writer, _reader) = tokio::io::duplex(1024);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(1024, writer));
        let outcome = tokio::time::timeout(Duration::from_secs(5), pump(from, to))
            .await
            .expect("a failed input ends the transfer");
        let e = outcome.expect_err("the input failed");
        assert!(e.starts_with("the input failed after 0 bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_dropped_transfer_stops_and_drops_its_streams() {
        // An input that never ends and an output whose reader waits for its end.
        let (_never, idle) = tokio::io::duplex(64);
        let from: DynInputStream = Box::new(AsyncReadStream::new(idle));
        let (writer, mut reader) = tokio::io::duplex(1024);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(1024, writer));
        let slots = Arc::new(Semaphore::new(1));
        let transfer = Transfer {
            state: State::Running(wasmtime_wasi::runtime::spawn(pump(from, to))),
            _slot: slots.clone().try_acquire_owned().unwrap(),
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.available_permits(), 0);
        drop(transfer);
        assert_eq!(
            slots.available_permits(),
            1,
            "the slot is free once the guest drops it"
        );
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest),
        )
        .await
        .expect("the output is dropped with the transfer: its reader sees the end");
        assert_eq!(read.unwrap(), 0);
    }

    #[test]
    fn transfers_at_once_follow_the_memory_limit() {
        let transfers = |limit| RelayGrant::for_memory_limit(limit).transfers;
        assert_eq!(transfers(Some(64 << 20)), 256);
        assert_eq!(transfers(Some(1 << 20)), MIN_TRANSFERS);
        assert_eq!(transfers(Some(1 << 40)), MAX_TRANSFERS);
        assert_eq!(transfers(None), MAX_TRANSFERS);
    }
}
