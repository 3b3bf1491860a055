//! What a component imports and exports, read from its binary with wasmparser (no compilation,
//! so `wpod validate` can check grants cheaply), and `wpod inspect`'s report of it.

use std::path::{Path, PathBuf};

use super::ImportRule;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The message includes the OS error: no source, so the chain says it once.
    #[error("cannot read Wasm component: {0}")]
    Read(crate::files::ReadError),
    #[error("cannot load Wasm component {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
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

/// The top-level imports and exports of the component at `path` (read once per file by a
/// process: see `component::read_file`).
pub fn inspect(path: &Path) -> Result<ComponentReport, InspectError> {
    match crate::component::read_file(path) {
        Ok(file) => Ok(ComponentReport::of(file.interface)),
        Err(crate::component::ComponentFileError::Read(e)) => Err(InspectError::Read(e)),
        Err(crate::component::ComponentFileError::Interface(e)) => Err(InspectError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// The same for a component already in memory (`path` names it in errors).
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<ComponentReport, InspectError> {
    let interface = crate::component::interface(bytes).map_err(|e| InspectError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(ComponentReport::of(interface))
}

impl ComponentReport {
    /// Each import with the rule that grants it.
    pub fn of(interface: crate::component::Interface) -> Self {
        ComponentReport {
            imports: interface
                .imports
                .into_iter()
                .map(|name| Import {
                    rule: super::for_import(&name),
                    name,
                })
                .collect(),
            exports: interface.exports,
        }
    }
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imports:")?;
        for i in &self.imports {
            writeln!(f, "  {:<40} {}", i.name, i.rule)?;
        }
        writeln!(f, "exports:")?;
        for e in &self.exports {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ImportRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportRule::Always { what } => write!(f, "always granted: {what}"),
            ImportRule::Scoped { field, what } => write!(f, "scoped by {field}: {what}"),
            ImportRule::Requires { field, what } => write!(f, "needs {field}: {what}"),
            ImportRule::Never => {
                f.write_str("not granted by any Pod field: wpod refuses this component")
            }
        }
    }
}

impl ComponentReport {
    /// The imports no Pod field can grant.
    pub fn ungrantable(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter(|i| i.rule == ImportRule::Never)
            .map(|i| i.name.as_str())
            .collect()
    }

    /// What an upgrade changes, one line per import, with the Pod field each added import needs.
    pub fn diff_lines(diff: &crate::component::ImportDiff) -> Vec<String> {
        let mut out = Vec::new();
        for a in &diff.added {
            out.push(format!("  + {a:<40} {}", super::for_import(a)));
        }
        for r in &diff.removed {
            out.push(format!("  - {r}"));
        }
        for (old, new) in &diff.version_changed {
            out.push(format!(
                "  ~ {old} -> {new} (the same interface, another version)"
            ));
        }
        out
    }
}

impl From<crate::files::ReadError> for InspectError {
    fn from(e: crate::files::ReadError) -> Self {
        InspectError::Read(e)
    }
}
