//! The one wasmtime Engine every sidecar of every pod shares: the component model, async
//! (guests suspend on host I/O instead of blocking a thread), epoch interruption (a guest that
//! computes yields every tick and can be stopped), and the pooling allocator (instances come
//! from pre-reserved slots, so starting and restarting a sidecar is cheap).

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
        // A std guest has one core instance and memory, adapters and runtimes a few more.
        pool.total_core_instances(slots * 10);
        pool.total_memories(slots * 4);
        pool.total_tables(slots * 10);
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
    std::thread::Builder::new()
        .name("wpod-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| EngineError::Create(format!("cannot start the epoch ticker: {e}")))?;
    Ok((engine, capacity))
}

/// The engine, and its pool's size (`None`: allocating on demand).
static ENGINE: OnceLock<(Engine, Option<usize>)> = OnceLock::new();

/// The process-wide engine, created on first use with a pool for a pod of `sidecars` Wasm
/// containers at once ([`capacity_for`]); later calls get the same engine.
pub fn shared_for(sidecars: usize) -> Result<&'static Engine, EngineError> {
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
