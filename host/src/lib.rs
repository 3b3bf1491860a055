//! wpod: run a Kubernetes Pod on one Linux host; the main container is a native process in real
//! pod namespaces, its sidecars are WebAssembly components that get only what the pod grants.
//!
//! The modules follow the data flow: `spec` (manifest → typed, validated Pod) → `plan` (what to
//! create, in which order, with which grants) → `sandbox` (namespaces, volumes, cgroups) →
//! `containers` (native processes) / `sidecars` (Wasm components) → `supervisor` (lifecycle).

pub mod bench;
pub mod containers;
pub mod files;
pub mod helper;
pub mod logs;
pub mod mounts;
pub mod plan;
pub mod sandbox;
pub mod sidecars;
pub mod spec;
pub mod supervisor;

use std::path::Path;

/// Loads, validates and plans every pod of a manifest: what `wpod run` does before starting
/// anything, and what `wpod validate` checks. All problems of the file come back at once.
pub fn load_plan(path: &Path) -> Result<Vec<plan::PodPlan>, spec::SpecError> {
    let bytes = files::read_regular(path, files::MAX_MANIFEST_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        spec::SpecError::Invalid(spec::Diagnostics(vec![spec::Diagnostic {
            file: path.to_path_buf(),
            loc: spec::Loc { line: 1, col: 1 },
            path: String::new(),
            message: "the file is not UTF-8 text; a manifest is YAML in UTF-8".to_string(),
        }]))
    })?;
    let (pods, mut diags) = spec::parse_all(path, &text);
    let mut plans = Vec::new();
    for pod in &pods {
        match plan::plan(pod) {
            Ok(p) => plans.push(p),
            Err(mut d) => diags.append(&mut d.0),
        }
    }
    if diags.is_empty() {
        Ok(plans)
    } else {
        spec::sort_diagnostics(&mut diags);
        Err(spec::SpecError::Invalid(spec::Diagnostics(diags)))
    }
}
