//! wpod: run a Kubernetes Pod on one Linux host; the main container is a native process in real
//! pod namespaces, its sidecars are WebAssembly components that get only what the pod grants.
//!
//! The modules follow the data flow: `spec` (manifest → typed, validated Pod) → `plan` (what to
//! create, in which order, with which grants) → `sandbox` (namespaces, volumes, cgroups) →
//! `containers` (native processes) / `sidecars` (Wasm components) → `supervisor` (lifecycle).

pub mod bench;
pub mod containers;
pub mod helper;
pub mod logs;
pub mod plan;
pub mod sandbox;
pub mod sidecars;
pub mod spec;
pub mod supervisor;

use std::path::Path;

/// Loads, validates and plans every pod of a manifest: what `wpod run` does before starting
/// anything, and what `wpod validate` checks. All problems of the file come back at once.
pub fn load_plan(path: &Path) -> Result<Vec<plan::PodPlan>, spec::SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| spec::SpecError::Read {
        path: path.to_path_buf(),
        source,
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
