//! Located problems in a manifest: `file:line:col: field.path: message`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in the manifest file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

/// One problem found in a manifest, with where it is and (in the message) how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub loc: Loc,
    /// Kubernetes-style field path, e.g. `spec.containers[0].image`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.loc.line,
            self.loc.col
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        // One line per problem: a value quoted from the manifest (an image path with a line
        // break) must not start a line that reads as another diagnostic. (The CLI escapes the
        // other control characters as it prints each line.)
        if self.message.contains(['\n', '\r']) {
            f.write_str(&self.message.replace('\n', "\\n").replace('\r', "\\r"))
        } else {
            f.write_str(&self.message)
        }
    }
}

/// Every problem found in one manifest file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Where each field of a document was written, so checks made after decoding (duplicate names,
/// image resolution, grants) can still point at a line.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    pub file: PathBuf,
    locs: HashMap<String, Loc>,
    /// Location of the document's first node, the fallback for paths that were never written.
    pub doc: Loc,
}

impl SourceMap {
    pub fn new(file: &Path, doc: Loc) -> Self {
        SourceMap {
            file: file.to_path_buf(),
            locs: HashMap::new(),
            doc,
        }
    }

    pub fn record(&mut self, path: &str, loc: Loc) {
        self.locs.entry(path.to_string()).or_insert(loc);
    }

    /// Whether `path` was written in the manifest (as opposed to defaulted).
    pub fn has(&self, path: &str) -> bool {
        self.locs.contains_key(path)
    }

    /// The location of `path`, or of its nearest written parent (a missing field is reported at
    /// the object that should hold it).
    pub fn locate(&self, path: &str) -> Loc {
        let mut p = path;
        loop {
            if let Some(loc) = self.locs.get(p) {
                return *loc;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.doc,
            }
        }
    }

    /// A diagnostic located at `path`.
    pub fn diag(&self, path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let path = path.into();
        Diagnostic {
            file: self.file.clone(),
            loc: self.locate(&path),
            path,
            message: message.into(),
        }
    }
}
