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
//! bounded:
//! - handles: the transfer keeps the two table entries its streams had ([`Held`]), so what
//!   the streams hold (descriptors) stays within the sidecar's handle quota;
//! - memory: a transfer reads at most what the output has room for, and at most [`CHUNK`],
//!   and writes it before it reads again (a short read copied out of its buffer), so it holds
//!   what it read and what its output still holds of the chunk before ([`TRANSFER_COST`]);
//!   transfers at once are limited by the sidecar's memory limit ([`RelayGrant`]);
//! - CPU and threads: the instance's transfers take turns ([`MOVERS`] at once) to move a chunk,
//!   so however many it starts they use the pod runtime's threads as two tasks would; each
//!   chunk and each wait count against the runtime's budget for a task's turn;
//! - work in flight: a transfer that ends, or is dropped, ends its streams' pending work (a
//!   file read on the blocking pool) first, as wasmtime does when a guest drops a stream.
//!
//! A transfer the guest drops stops before the drop returns; the instance ending (its table is
//! dropped with its store) aborts it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};

use super::bindings::relay;
use super::outcome::TaskOutcome;
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
/// Transfers of one instance moving a chunk at the same moment: its transfers take the pod
/// runtime's threads (two) as that many tasks would, however many it has.
pub const MOVERS: usize = 2;

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

/// One instance's relay state: the transfer slots it has left, and its turns to move a chunk.
pub struct RelayCtx {
    slots: Arc<Semaphore>,
    movers: Arc<Semaphore>,
    grant: RelayGrant,
}

impl RelayCtx {
    fn new(grant: RelayGrant) -> Self {
        RelayCtx {
            slots: Arc::new(Semaphore::new(grant.transfers)),
            movers: Arc::new(Semaphore::new(MOVERS)),
            grant,
        }
    }
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
        Ok(RelayCtx::new(*grant))
    }
}

/// How a transfer ended: the bytes moved, or why it stopped (said to the guest in words).
type Outcome = Result<u64, String>;

/// An entry of the instance's resource table kept for a stream a transfer took: the
/// transfer holds what the stream held (a socket's descriptor, a TLS session), so the
/// sidecar's handle quota, which bounds its descriptors, counts it as before.
pub struct Held;

/// The `transfer` resource. It holds its slot until the guest drops it, not only while it
/// runs: a slot comes back at a point the guest sees (its `drop`), never later.
pub struct Transfer {
    state: TaskOutcome<Outcome>,
    /// Dropped to tell a running transfer to stop: it then ends its streams' pending work
    /// before it ends.
    stop: Option<oneshot::Sender<()>>,
    held: Option<[Resource<Held>; 2]>,
    _slot: OwnedSemaphorePermit,
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for Transfer {
    async fn ready(&mut self) {
        self.state.ready().await
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

/// Moves what `from` gives to `to` until `from` ends (then flushes `to`), either fails, or
/// `stop` says the guest dropped the transfer; then ends both streams' pending work (a file
/// read on the blocking pool, a write in flight), as wasmtime does when a guest drops a stream
/// itself, so none of it outlives the transfer.
async fn pump(
    mut from: DynInputStream,
    mut to: DynOutputStream,
    movers: Arc<Semaphore>,
    stop: oneshot::Receiver<()>,
) -> Outcome {
    let outcome = tokio::select! {
        outcome = moves(&mut from, &mut to, &movers) => outcome,
        _ = stop => Err("stopped: the transfer was dropped".to_string()),
    };
    from.cancel().await;
    to.cancel().await;
    outcome
}

async fn moves(from: &mut DynInputStream, to: &mut DynOutputStream, movers: &Semaphore) -> Outcome {
    let mut moved: u64 = 0;
    loop {
        // One of the instance's few turns: however many transfers it has, they move chunks on
        // the runtime's threads as [`MOVERS`] tasks would (a guest is one), never more.
        let Ok(turn) = movers.acquire().await else {
            return Err("the instance has ended".into());
        };
        // Room in the output first: what is read is written at once, never held.
        let room = match to.check_write() {
            Ok(0) => {
                drop(turn);
                wait(to).await;
                continue;
            }
            Ok(n) => n,
            Err(e) => return Err(why("the output", moved, e)),
        };
        let data = match from.read(room.min(CHUNK)) {
            Ok(data) if data.is_empty() => {
                drop(turn);
                wait(from).await;
                continue;
            }
            Ok(data) => data,
            Err(StreamError::Closed) => {
                drop(turn);
                return finish(to, moved).await;
            }
            Err(e) => return Err(why("the input", moved, e)),
        };
        // A short read keeps the whole buffer it was read into (a TCP stream reads into one
        // of the size asked for), and outputs count what they queue by its length: copied, it
        // holds what it says.
        let data = match data.len() < CHUNK / 4 {
            true => Bytes::copy_from_slice(&data),
            false => data,
        };
        let len = data.len() as u64;
        to.write(data).map_err(|e| why("the output", moved, e))?;
        moved += len;
        drop(turn);
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
async fn finish(to: &mut DynOutputStream, moved: u64) -> Outcome {
    to.flush().map_err(|e| why("the output", moved, e))?;
    loop {
        match to.check_write() {
            Ok(0) => wait(to).await,
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
        let mut from = self.table.delete(from)?;
        let mut to = self.table.delete(to)?;
        let Ok(slot) = self.ctx.slots.clone().try_acquire_owned() else {
            // Refused, the streams are dropped as the guest's own drop would: their pending
            // work ended first.
            from.cancel().await;
            to.cancel().await;
            return Ok(Err(format!(
                "{} transfers are already under way, this sidecar's most ({} KiB each from an \
                 eighth of its limits.memory, at least {MIN_TRANSFERS}, at most {MAX_TRANSFERS}): \
                 drop one that has ended, or raise the container's resources.limits.memory",
                self.ctx.grant.transfers,
                TRANSFER_COST / 1024
            )));
        };
        // The two entries the streams had: past the quota, the guest traps, as for any handle.
        let held = [self.table.push(Held)?, self.table.push(Held)?];
        let (stop, stopped) = oneshot::channel();
        let movers = self.ctx.movers.clone();
        let transfer = Transfer {
            state: TaskOutcome::spawn(pump(from, to, movers, stopped)),
            stop: Some(stop),
            held: Some(held),
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
        let taken = self.table.get_mut(&this)?.state.take().await;
        Ok(taken.map(|outcome| {
            outcome.unwrap_or_else(|| Err("the transfer's outcome was already taken".into()))
        }))
    }

    async fn drop(&mut self, this: Resource<Transfer>) -> wasmtime::Result<()> {
        let mut transfer = self.table.delete(this)?;
        for held in transfer.held.take().into_iter().flatten() {
            self.table.delete(held)?;
        }
        // A transfer still running stops, and its streams' pending work ends, before the drop
        // returns (as a guest's drop of a stream waits for it); its slot is free then.
        drop(transfer.stop.take());
        transfer.state.ready().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream, MemoryInputPipe};

    /// A transfer's task as `start` makes it, with its stop signal and a turn of its own.
    fn spawn(
        from: DynInputStream,
        to: DynOutputStream,
    ) -> (tokio::task::JoinHandle<Outcome>, oneshot::Sender<()>) {
        let (stop, stopped) = oneshot::channel();
        let movers = Arc::new(Semaphore::new(MOVERS));
        (tokio::spawn(pump(from, to, movers, stopped)), stop)
    }

    /// A transfer's outcome, which must come within `secs` seconds (`why` it should).
    async fn ended(task: tokio::task::JoinHandle<Outcome>, secs: u64, why: &str) -> Outcome {
        tokio::time::timeout(Duration::from_secs(secs), task)
            .await
            .expect(why)
            .expect("the transfer's task panicked")
    }

    #[tokio::test]
    async fn a_transfer_moves_everything_in_order_then_says_how_much() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let from: DynInputStream = Box::new(MemoryInputPipe::new(data.clone()));
        let (writer, mut reader) = tokio::io::duplex(4096);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(4096, writer));
        let (task, _stop) = spawn(from, to);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got)
            .await
            .unwrap();
        assert_eq!(task.await.unwrap(), Ok(data.len() as u64));
        assert!(got == data, "the bytes arrived changed or reordered");
    }

    /// An output that takes 1 KiB at a time, counts the writes under way at once, and makes
    /// each last a millisecond of its thread.
    struct Counting {
        active: Arc<std::sync::atomic::AtomicUsize>,
        most: Arc<std::sync::atomic::AtomicUsize>,
        written: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[wasmtime_wasi_io::async_trait]
    impl wasmtime_wasi_io::poll::Pollable for Counting {
        async fn ready(&mut self) {}
    }

    impl wasmtime_wasi::p2::OutputStream for Counting {
        fn write(&mut self, bytes: Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.active.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            self.written.fetch_add(bytes.len(), SeqCst);
            self.active.fetch_sub(1, SeqCst);
            Ok(())
        }
        fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
            Ok(())
        }
        fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
            Ok(1024)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_instances_transfers_share_its_turns_and_all_finish() {
        // Eight transfers of one instance with one turn, on four threads: one moves a chunk
        // at a time, and every one of them finishes.
        let movers = Arc::new(Semaphore::new(1));
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..8 {
            let from: DynInputStream = Box::new(MemoryInputPipe::new(vec![1u8; 20 * 1024]));
            let to: DynOutputStream = Box::new(Counting {
                active: active.clone(),
                most: most.clone(),
                written: written.clone(),
            });
            let (stop, stopped) = oneshot::channel();
            stops.push(stop);
            tasks.push(tokio::spawn(pump(from, to, movers.clone(), stopped)));
        }
        for task in tasks {
            let outcome = ended(task, 20, "every transfer gets turns").await;
            assert_eq!(outcome, Ok(20 * 1024));
        }
        let (most, written) = (
            most.load(std::sync::atomic::Ordering::SeqCst),
            written.load(std::sync::atomic::Ordering::SeqCst),
        );
        assert_eq!(written, 8 * 20 * 1024);
        assert_eq!(most, 1, "{most} chunks were moved at once with one turn");
        assert_eq!(movers.available_permits(), 1, "every turn is given back");
    }

    #[tokio::test]
    async fn a_transfer_holds_one_chunk_while_its_output_has_no_room() {
        // The input has 1 MiB ready; nobody reads the output.
        let from: DynInputStream = Box::new(MemoryInputPipe::new(vec![7u8; 1 << 20]));
        let (writer, reader) = tokio::io::duplex(1024);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(1024, writer));
        let (task, _stop) = spawn(from, to);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !task.is_finished(),
            "nothing can end while the output is full"
        );
        // Its reader gone, the output fails: the transfer says so, with how far it got.
        drop(reader);
        let outcome = ended(task, 5, "a failed output ends the transfer").await;
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
            moved <= 3 * 1024,
            "moved {moved} into 1 KiB of room and 1 KiB of pipe: {e}"
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
        let (task, _stop) = spawn(from, to);
        let outcome = ended(task, 5, "a failed input ends the transfer").await;
        let e = outcome.expect_err("the input failed");
        assert!(e.starts_with("the input failed after 0 bytes"), "{e}");
    }

    /// An input that never ends and an output whose reader waits for its end.
    fn endless() -> (
        DynInputStream,
        DynOutputStream,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
    ) {
        let (never, idle) = tokio::io::duplex(64);
        let from: DynInputStream = Box::new(AsyncReadStream::new(idle));
        let (writer, reader) = tokio::io::duplex(1024);
        let to: DynOutputStream = Box::new(AsyncWriteStream::new(1024, writer));
        (from, to, never, reader)
    }

    async fn sees_the_end(reader: &mut tokio::io::DuplexStream) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(reader, &mut rest),
        )
        .await
        .expect("the output is dropped with the transfer: its reader sees the end");
        assert_eq!(read.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_stopped_transfer_ends_and_drops_its_streams() {
        let (from, to, _never, mut reader) = endless();
        let (task, stop) = spawn(from, to);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        drop(stop);
        let outcome = ended(task, 5, "a stopped transfer ends").await;
        assert!(outcome.unwrap_err().starts_with("stopped"));
        sees_the_end(&mut reader).await;
    }

    #[tokio::test]
    async fn an_aborted_transfer_gives_its_slot_back_and_drops_its_streams() {
        // The instance ending drops the transfer without a `drop` call: its task is aborted.
        let (from, to, _never, mut reader) = endless();
        let slots = Arc::new(Semaphore::new(1));
        let (stop, stopped) = oneshot::channel();
        let movers = Arc::new(Semaphore::new(MOVERS));
        let mut table = ResourceTable::new();
        let transfer = Transfer {
            state: TaskOutcome::spawn(pump(from, to, movers, stopped)),
            stop: Some(stop),
            held: Some([table.push(Held).unwrap(), table.push(Held).unwrap()]),
            _slot: slots.clone().try_acquire_owned().unwrap(),
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.available_permits(), 0);
        drop(transfer);
        assert_eq!(
            slots.available_permits(),
            1,
            "the slot is free once it is dropped"
        );
        sees_the_end(&mut reader).await;
    }

    #[tokio::test]
    async fn a_transfer_keeps_the_table_entries_of_the_streams_it_took() {
        // A table with room for exactly the two streams: the transfer takes them and needs
        // their two entries and one of its own.
        let mut table = ResourceTable::new();
        table.set_max_capacity(3);
        let (from, to, _never, _reader) = endless();
        let from = table.push(from).unwrap();
        let to = table.push(to).unwrap();
        let mut ctx = RelayCtx::new(RelayGrant { transfers: 4 });
        let mut view = RelayView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let transfer = relay::Host::start(&mut view, from, to)
            .await
            .unwrap()
            .unwrap();
        assert!(
            view.table.push(Held).is_err(),
            "the transfer holds what the streams held: the table is as full as before"
        );
        relay::HostTransfer::drop(&mut view, transfer)
            .await
            .unwrap();
        for _ in 0..3 {
            view.table
                .push(Held)
                .expect("all three entries are free again");
        }
    }

    #[tokio::test]
    async fn a_start_past_the_slots_is_refused_in_words_and_drops_the_streams() {
        let mut table = ResourceTable::new();
        let mut ctx = RelayCtx::new(RelayGrant { transfers: 1 });
        let mut view = RelayView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let (from, to, _never, _reader) = endless();
        let (from, to) = (view.table.push(from).unwrap(), view.table.push(to).unwrap());
        let _first = relay::Host::start(&mut view, from, to)
            .await
            .unwrap()
            .unwrap();
        let (from, to, _never2, mut reader2) = endless();
        let (from, to) = (view.table.push(from).unwrap(), view.table.push(to).unwrap());
        let refused = relay::Host::start(&mut view, from, to).await.unwrap();
        let e = refused.expect_err("one slot, two transfers");
        assert!(
            e.starts_with("1 transfers are already under way, this sidecar's most"),
            "{e}"
        );
        sees_the_end(&mut reader2).await;
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
