//! The wasmtime Engine that every sidecar of every pod shares.

use wasmtime::{Config, Engine};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the wasmtime engine: {0:#}")]
    Create(wasmtime::Error),
}

/// An engine configured for sidecars: the component model, and epoch interruption (a guest in a
/// loop is preempted and can be stopped). Async support is always on in wasmtime 48.
pub fn new_engine() -> Result<Engine, EngineError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    Engine::new(&config).map_err(EngineError::Create)
}
