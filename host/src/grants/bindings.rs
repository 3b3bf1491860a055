//! The one `bindgen!` of wpod's own interfaces (`wit/sidecar.wit`, world `imports`); WASI comes
//! from wasmtime-wasi.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wpod:sidecar/imports",
    imports: { default: async | trappable },
    with: {
        "wpod:sidecar/main-process.log-stream": crate::grants::process::LogStream,
    },
});

pub use self::wpod::sidecar::{lifecycle, main_process};
