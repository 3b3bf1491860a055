//! `wpod inspect`: what a component imports and exports, and which Pod field grants each import.

use std::path::{Path, PathBuf};

use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::grants::{self, ImportRule};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot load Wasm component {}: {source:#}", path.display())]
    Load {
        path: PathBuf,
        source: wasmtime::Error,
    },
}

#[derive(Debug, Serialize)]
pub struct Import {
    pub name: String,
    #[serde(flatten)]
    pub rule: ImportRule,
}

/// A component's interface, as wpod sees it.
#[derive(Debug, Serialize)]
pub struct ComponentReport {
    pub imports: Vec<Import>,
    pub exports: Vec<String>,
}

impl ComponentReport {
    /// Imports that no Pod field can grant.
    pub fn ungrantable(&self) -> impl Iterator<Item = &Import> {
        self.imports.iter().filter(|i| i.rule == ImportRule::Never)
    }
}

pub fn inspect(engine: &Engine, path: &Path) -> Result<ComponentReport, InspectError> {
    let component = Component::from_file(engine, path).map_err(|source| InspectError::Load {
        path: path.to_path_buf(),
        source,
    })?;
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| Import {
            name: name.to_string(),
            rule: grants::for_import(name),
        })
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    Ok(ComponentReport { imports, exports })
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imports:")?;
        for i in &self.imports {
            let grant = match i.rule {
                ImportRule::Always { what } => format!("always granted: {what}"),
                ImportRule::ByField { field, what } => format!("granted by {field}: {what}"),
                ImportRule::Never => {
                    "not granted by any Pod field: wpod refuses this component".to_string()
                }
            };
            writeln!(f, "  {:<40} {grant}", i.name)?;
        }
        writeln!(f, "exports:")?;
        for e in &self.exports {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}
