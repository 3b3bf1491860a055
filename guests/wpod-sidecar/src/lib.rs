//! wpod-sidecar: Rust bindings of wpod's own sidecar interfaces (`wit/sidecar.wit`, world
//! `wpod:sidecar/imports`), generated once here for the Rust guests of this workspace instead of
//! by a `wit_bindgen::generate!` in each of them: [`lifecycle`] (`ready()`, `next_event()`) and
//! [`main_process`] (the main containers' state, stats, logs and signals).
//!
//! Depending on it adds no imports by itself: a guest's component imports only the functions
//! that guest calls (the host tells from its imports whether it calls `lifecycle.ready`, and a
//! guest that never calls `main_process` runs in a pod that does not grant it).
//!
//! A guest that only uses WASI through std (`std::net`, `std::fs`, env, args) does not need this
//! crate: std already supplies the WASI imports and the `wasi:cli/run` export.

// The `imports` world has only wpod's interfaces; std brings WASI and `run`.
wit_bindgen::generate!({
    path: "../../wit",
    world: "wpod:sidecar/imports",
    generate_all,
});

pub use wpod::sidecar::{lifecycle, main_process};
