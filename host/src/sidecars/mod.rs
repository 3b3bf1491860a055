//! Wasm sidecars: components run in wasmtime with only the capabilities the pod grants.

pub mod engine;
pub mod grants;
pub mod inspect;
