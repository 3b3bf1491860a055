//! The one wasmtime Engine every sidecar of every pod shares: the component model, async
//! (guests suspend on host I/O instead of blocking a thread), epoch interruption (a guest that
//! computes yields every tick and can be stopped), and the pooling allocator (instances come
//! from pre-reserved slots, so starting and restarting a sidecar is cheap).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the longest a guest runs without yielding to others.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest pool: a pod's limit (planning checks it), and half again for `wpod apply`,
/// whose new sidecars start before the ones they replace have stopped.
pub const MAX_SIDECARS: usize = crate::plan::MAX_WASM_CONTAINERS * 3 / 2;
/// The smallest pool: room for `wpod apply` to add sidecars to a pod that started with few.
pub const MIN_SIDECARS: usize = 128;
/// Linear memories and tables the pool holds for each of its slots.
pub const MEMORIES_PER_SLOT: u32 = 2;
pub const TABLES_PER_SLOT: u32 = 4;

/// Slots for a pod that runs `sidecars` Wasm containers at once: twice that (room to add and
/// replace), at least [`MIN_SIDECARS`], at most [`MAX_SIDECARS`]. A slot reserves address space
/// for its linear memories (4 GiB each, never committed) and maps its tables and its stack (about
/// 2.6 MiB, touched only as used but counted by a host that does not overcommit), so the pool is
/// sized to the pod rather than to the largest pod.
pub fn capacity_for(sidecars: usize) -> usize {
    sidecars.saturating_mul(2).clamp(MIN_SIDECARS, MAX_SIDECARS)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the wasmtime engine: {0}")]
    Create(String),
}

fn config(pool_slots: Option<u32>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if let Some(slots) = pool_slots {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots);
        // Core instances are only counted. Memories and tables have slots, and each slot costs
        // the pool's bookkeeping (28-56 bytes of malloc'd state, paid by the first sidecar of a
        // pod for the whole pool) and address space. Every component in `guests/` has one
        // memory and at most two tables (componentize-py's Python, 14 core modules, too). A
        // pool holds twice the pod's sidecars, so each running sidecar has 4 memories and 8
        // tables on average up to 768 sidecars; at the 1536-slot cap, 3 and 6 for a pod of 1024,
        // 2 and 4 while an apply fills it. Only the slots are checked before a start: a pod of
        // components that need more than that on average has its last ones fail to start, and
        // say which resource ran out. (Were 4 and 10: 70 KiB more for the first sidecar.)
        pool.total_core_instances(slots * 10);
        pool.total_memories(slots * MEMORIES_PER_SLOT);
        pool.total_tables(slots * TABLES_PER_SLOT);
        pool.total_stacks(slots);
        pool.max_memories_per_component(16);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Creates an engine (pooling with `slots` when the host allows its reservations, else
/// allocating on demand, unbounded) and starts its epoch ticker.
fn new_engine(slots: usize) -> Result<(Engine, Option<usize>), EngineError> {
    let slots32 = u32::try_from(slots).unwrap_or(u32::MAX);
    let (engine, capacity) = match Engine::new(&config(Some(slots32))) {
        Ok(e) => (e, Some(slots)),
        Err(e) => {
            tracing::warn!(error = %e, "the pooling allocator is unavailable here; allocating sidecars on demand");
            let engine =
                Engine::new(&config(None)).map_err(|e| EngineError::Create(format!("{e:#}")))?;
            (engine, None)
        }
    };
    let ticker = engine.weak();
    let thread = std::thread::Builder::new()
        .name("wpod-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
                if TICKS.tick() == Tick::Park {
                    std::thread::park();
                    TICKS.woken();
                }
            }
        })
        .map_err(|e| EngineError::Create(format!("cannot start the epoch ticker: {e}")))?;
    let _ = TICKER.set(thread.thread().clone());
    Ok((engine, capacity))
}

/// The epoch only matters while a guest runs Wasm code: a guest waiting in a host call (for a
/// socket, a timer, `next-event`) is not interrupted by it. So the ticker stops after
/// [`IDLE_TICKS`] ticks in which no guest entered Wasm, and the next guest to enter starts it
/// again: an idle pod's wpod no longer wakes 100 times a second (0.5% of a core per pod,
/// measured; 200 idle pods kept one core busy). A guest that computes is still interrupted
/// within a tick: it re-enters Wasm after every yield, which keeps the ticker going, and a guest
/// that enters while the ticker stopped wakes it as it enters ([`new_store`]).
pub const IDLE_TICKS: u32 = 10;

static TICKS: Ticks = Ticks::new();
static TICKER: OnceLock<std::thread::Thread> = OnceLock::new();

/// A store for a guest that runs: the only way wpod makes one. Its guest keeps the epoch
/// ticking while it runs Wasm ([`keep_ticking_while_running`]); a store without that would let
/// a guest that enters Wasm while the ticker sleeps run uninterrupted (never yield to the
/// others, never stop when asked).
pub fn new_store<T: 'static>(engine: &Engine, data: T) -> wasmtime::Store<T> {
    let mut store = wasmtime::Store::new(engine, data);
    keep_ticking_while_running(&mut store);
    store
}

/// Wakes the ticker when `store`'s guest enters Wasm after a tick without any entry. The hook
/// runs at each entry into Wasm (a call, or a return from the host): a load of one shared flag,
/// and a store and a wake-up only for the first entry after a tick.
fn keep_ticking_while_running<T>(store: &mut wasmtime::Store<T>) {
    store.call_hook(|_, hook| {
        if hook.exiting_host() && TICKS.entered() {
            if let Some(ticker) = TICKER.get() {
                ticker.unpark();
            }
        }
        Ok(())
    });
}

/// What the ticker does after a tick.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    Again,
    Park,
}

/// The ticker's bookkeeping, apart from its thread (so that tests can drive it).
struct Ticks {
    /// A guest entered Wasm since the last tick.
    entered: AtomicBool,
    /// The ticker stopped, or is about to: an entering guest must wake it.
    parked: AtomicBool,
    /// Ticks in a row in which no guest entered Wasm (the ticker's thread alone writes it).
    idle: AtomicU32,
}

impl Ticks {
    const fn new() -> Self {
        Ticks {
            entered: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            idle: AtomicU32::new(0),
        }
    }

    /// A guest enters Wasm. True when the ticker must be woken.
    fn entered(&self) -> bool {
        // Read first: a flag already set is not written again, so that guests on several
        // threads entering many times a tick share the line rather than bounce it. (Read in
        // sequence with the ticker's swap, so a `true` it cleared is not seen; a plain load
        // on x86.)
        if self.entered.load(Ordering::SeqCst) {
            return false;
        }
        self.entered.store(true, Ordering::SeqCst);
        self.parked.load(Ordering::SeqCst)
    }

    /// A tick passed: park the ticker after [`IDLE_TICKS`] without an entry. The ticker says
    /// it parks before it checks a last time, and an entering guest sets its flag before it
    /// checks whether the ticker parked (both sequentially consistent): so either the ticker
    /// sees the entry and ticks on, or the guest sees it parked and wakes it (an unpark before
    /// the park makes the park return at once).
    fn tick(&self) -> Tick {
        if self.entered.swap(false, Ordering::SeqCst) {
            self.idle.store(0, Ordering::Relaxed);
            return Tick::Again;
        }
        let idle = self.idle.load(Ordering::Relaxed) + 1;
        self.idle.store(idle, Ordering::Relaxed);
        if idle < IDLE_TICKS {
            return Tick::Again;
        }
        self.parked.store(true, Ordering::SeqCst);
        if self.entered.load(Ordering::SeqCst) {
            self.parked.store(false, Ordering::SeqCst);
            return Tick::Again;
        }
        Tick::Park
    }

    /// The ticker woke (a guest entered, or a spurious wake-up: a tick costs nothing then).
    fn woken(&self) {
        self.parked.store(false, Ordering::SeqCst);
        self.idle.store(0, Ordering::Relaxed);
    }
}

/// The engine, and its pool's size (`None`: allocating on demand).
static ENGINE: OnceLock<(Engine, Option<usize>)> = OnceLock::new();

/// The process-wide engine, created on first use with a pool for a pod of `sidecars` Wasm
/// containers at once ([`capacity_for`]); later calls get the same engine.
pub fn shared_for(sidecars: usize) -> Result<&'static Engine, EngineError> {
    if let Some((e, _)) = ENGINE.get() {
        return Ok(e);
    }
    // One creator at a time: two would each start a ticker, and the guests' hook could then
    // wake the one whose engine was dropped, leaving the real one asleep.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((e, _)) = ENGINE.get() {
        return Ok(e);
    }
    let created = new_engine(capacity_for(sidecars))?;
    Ok(&ENGINE.get_or_init(|| created).0)
}

/// The process-wide engine (a pool of [`MIN_SIDECARS`] if it is created here).
pub fn shared() -> Result<&'static Engine, EngineError> {
    shared_for(0)
}

/// The process-wide engine if something made it already (it is not made here: its pool and
/// epoch thread are for a process that runs sidecars).
pub fn existing() -> Option<&'static Engine> {
    ENGINE.get().map(|(e, _)| e)
}

/// How many sidecars the process's pool holds at once; `None` when there is no engine yet or it
/// allocates on demand.
pub fn capacity() -> Option<usize> {
    ENGINE.get().and_then(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_parks_only_after_idle_ticks_and_an_entry_wakes_it() {
        let ticks = Ticks::new();
        // A guest that keeps entering keeps the ticker going.
        for _ in 0..3 * IDLE_TICKS {
            assert!(!ticks.entered(), "woken while ticking");
            assert_eq!(ticks.tick(), Tick::Again);
        }
        // No entry: it parks at the IDLE_TICKS-th tick, not before.
        for _ in 1..IDLE_TICKS {
            assert_eq!(ticks.tick(), Tick::Again);
        }
        assert_eq!(ticks.tick(), Tick::Park);
        // The first guest to enter wakes it; the others of the same tick do not again.
        assert!(ticks.entered());
        assert!(!ticks.entered());
        ticks.woken();
        assert_eq!(ticks.tick(), Tick::Again);
        for _ in 1..IDLE_TICKS {
            assert_eq!(ticks.tick(), Tick::Again);
        }
        // An entry just before the tick that would park: it ticks on, counting from zero.
        assert!(!ticks.entered());
        assert_eq!(ticks.tick(), Tick::Again);
        assert_eq!(ticks.idle.load(Ordering::Relaxed), 0);
        assert!(!ticks.parked.load(Ordering::SeqCst));
    }
}
