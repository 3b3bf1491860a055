//! What a component imports and exports, read from its binary with wasmparser (no compilation,
//! so `wpod validate` can check grants cheaply), and `wpod inspect`'s report of it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use wasmparser::{Parser, Payload};

use super::ImportRule;

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

/// The top-level imports and exports of the component at `path`.
pub fn inspect(path: &Path) -> Result<ComponentReport, InspectError> {
    let bytes = crate::files::read_regular(path, crate::files::MAX_COMPONENT_BYTES)?;
    inspect_bytes(path, &bytes)
}

/// The same for a component already in memory (`path` names it in errors).
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<ComponentReport, InspectError> {
    let parse_err = |message: String| InspectError::Parse {
        path: path.to_path_buf(),
        message,
    };
    if !wasmparser::Parser::is_component(bytes) {
        return Err(parse_err(
            "not a Wasm component (a core module or another file)".to_string(),
        ));
    }
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have their own imports; only the outermost count.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| parse_err(e.to_string()))? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let name = import
                        .map_err(|e| parse_err(e.to_string()))?
                        .name
                        .name
                        .to_string();
                    let rule = super::for_import(&name);
                    imports.push(Import { name, rule });
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(
                        export
                            .map_err(|e| parse_err(e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(ComponentReport { imports, exports })
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imports:")?;
        for i in &self.imports {
            let grant = match i.rule {
                ImportRule::Always { what } => format!("always granted: {what}"),
                ImportRule::Scoped { field, what } => format!("scoped by {field}: {what}"),
                ImportRule::Requires { field, what } => format!("needs {field}: {what}"),
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

impl From<crate::files::ReadError> for InspectError {
    fn from(e: crate::files::ReadError) -> Self {
        InspectError::Read(e)
    }
}
