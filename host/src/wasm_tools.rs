//! What `wit-bindgen c` and `wasm-tools component new` do for a C sidecar, built into wpod so a
//! C author needs only Debian's clang: the C bindings of wpod's `sidecar` world (at `wpod new
//! --lang c`), and a core module made a component with WASI's preview1 adapter (`wpod component
//! new`). The versions are the ones on wasmtime's wit-parser, so the components they make are
//! exactly what this wpod links.

use wit_bindgen_core::wit_parser::Resolve;

/// wpod's interfaces and the WASI packages they use, as `wpod new` writes them.
pub type WitFiles<'a> = &'a [(&'a str, &'a str)];

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("wpod's WIT ({path}): {message}")]
    Wit { path: String, message: String },
    #[error("C bindings: {0}")]
    Bindings(String),
    #[error(
        "not a core Wasm module: build it with clang --target=wasm32-wasi -mexec-model=reactor \
         (a file that is already a component needs no `component new`)"
    )]
    NotModule,
    #[error("making the component: {0:#}")]
    Encode(anyhow::Error),
}

/// wpod's package resolved with its WASI dependencies: the resolve and wpod's package.
fn resolve_wit(
    wit: WitFiles<'_>,
) -> Result<(Resolve, wit_bindgen_core::wit_parser::PackageId), ToolError> {
    let mut resolve = Resolve::default();
    let mut ours = None;
    // Dependencies first, in their own order: each package resolves against those pushed.
    const ORDER: [&str; 7] = ["io", "clocks", "random", "filesystem", "sockets", "cli", ""];
    let rank = |path: &str| {
        ORDER
            .iter()
            .position(|dep| path.ends_with(&format!("deps/{dep}.wit")))
            .unwrap_or(ORDER.len())
    };
    let mut ordered: Vec<&(&str, &str)> = wit.iter().collect();
    ordered.sort_by_key(|(path, _)| rank(path));
    for (path, text) in ordered {
        let id = resolve.push_str(path, text).map_err(|e| ToolError::Wit {
            path: path.to_string(),
            message: format!("{e:#}"),
        })?;
        if !path.contains("/deps/") {
            ours = Some(id);
        }
    }
    let package = ours.ok_or_else(|| ToolError::Bindings("no wpod:sidecar package".into()))?;
    Ok((resolve, package))
}

/// The C files of wpod's `sidecar` world (`sidecar.h`, `sidecar.c`, `sidecar_component_type.o`),
/// generated from `wit` (wpod's package and its WASI dependencies; no other version of wpod's
/// package, whose names would get a version infix).
pub fn c_bindings(wit: WitFiles<'_>) -> Result<Vec<(String, Vec<u8>)>, ToolError> {
    let (mut resolve, package) = resolve_wit(wit)?;
    let world = resolve
        .select_world(&[package], Some("sidecar"))
        .map_err(|e| ToolError::Bindings(format!("{e:#}")))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| ToolError::Bindings(format!("{e:#}")))?;
    Ok(files
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect())
}

/// What a core module says about how it runs.
struct ModuleShape {
    /// It exports `_start` and no `wasi:cli/run`: a command (Go's wasip1 output), run through
    /// the command adapter, whose `run` calls `_start`.
    command: bool,
    /// It carries a `component-type` section (the C bindings' object): its imports are typed.
    typed: bool,
}

fn module_shape(core: &[u8]) -> Result<ModuleShape, ToolError> {
    let mut shape = ModuleShape {
        command: false,
        typed: false,
    };
    let mut run_export = false;
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        match payload.map_err(|e| ToolError::Encode(e.into()))? {
            wasmparser::Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| ToolError::Encode(e.into()))?;
                    shape.command |= export.name == "_start";
                    run_export |= export.name.starts_with("wasi:cli/run@");
                }
            }
            wasmparser::Payload::CustomSection(c) if c.name().starts_with("component-type") => {
                shape.typed = true
            }
            _ => {}
        }
    }
    shape.command &= !run_export;
    Ok(shape)
}

/// A core module made a component: its WASI preview1 imports adapted to WASI 0.2. A reactor
/// (clang's, with the C bindings' component-type object linked in) exports `wasi:cli/run`
/// itself; a command (Go's `GOOS=wasip1`) gets it from the command adapter, which calls
/// `_start`. A module without type information for its imports (Go's `go:wasmimport`) is
/// typed by wpod's `imports` world from `wit`, as `wasm-tools component embed` would.
pub fn component_new(core: &[u8], wit: WitFiles<'_>) -> Result<Vec<u8>, ToolError> {
    if !core.starts_with(&wpod::component::MODULE_PREAMBLE) {
        return Err(ToolError::NotModule);
    }
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let shape = module_shape(core)?;
    let mut module = core.to_vec();
    if !shape.typed {
        let (resolve, package) = resolve_wit(wit)?;
        let world = resolve
            .select_world(&[package], Some("imports"))
            .map_err(|e| ToolError::Bindings(format!("{e:#}")))?;
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .map_err(ToolError::Encode)?;
    }
    let adapter = match shape.command {
        true => WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        false => WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter))
        .map(|e| e.validate(true))
        .and_then(|mut e| e.encode())
        .map_err(ToolError::Encode)
}
