//! The one wasmtime Engine every sidecar of every pod shares: the component model, async
//! (guests suspend on host I/O instead of blocking a thread), epoch interruption (a guest that
//! computes yields every tick and can be stopped), and the pooling allocator (instances come
//! from pre-reserved slots, so starting and restarting a sidecar is cheap).

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the longest a guest runs without yielding to others.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sidecars alive at once in one wpod process (the pool's size): a pod's limit, which planning
/// checks. Half again for `wpod apply`, whose new sidecars start before the ones they replace
/// have stopped. A slot is reserved address space (its linear memories', tables' and stack's),
/// so an unused one costs no memory.
pub const MAX_SIDECARS: u32 = (crate::plan::MAX_WASM_CONTAINERS as u32) * 3 / 2;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the wasmtime engine: {0}")]
    Create(String),
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_SIDECARS);
        // A std guest has one core instance and memory, adapters and runtimes a few more.
        pool.total_core_instances(MAX_SIDECARS * 10);
        pool.total_memories(MAX_SIDECARS * 4);
        pool.total_tables(MAX_SIDECARS * 10);
        pool.total_stacks(MAX_SIDECARS);
        pool.max_memories_per_component(16);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Creates an engine (pooling when the host allows its reservations) and starts its epoch ticker.
fn new_engine() -> Result<Engine, EngineError> {
    let engine = match Engine::new(&config(true)) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "the pooling allocator is unavailable here; allocating sidecars on demand");
            Engine::new(&config(false)).map_err(|e| EngineError::Create(format!("{e:#}")))?
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
    Ok(engine)
}

/// The process-wide engine, created on first use.
pub fn shared() -> Result<&'static Engine, EngineError> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e);
    }
    let engine = new_engine()?;
    Ok(ENGINE.get_or_init(|| engine))
}
