//! What a Wasm component's binary says about itself, read with wasmparser without compiling it:
//! its top-level imports (exactly its permissions) and exports. Shared by `grants` (which maps
//! each import to the Pod field that grants it) and `oci` (which recomputes a downloaded
//! sidecar's imports instead of trusting the artifact's config).

use std::collections::BTreeSet;

use wasmparser::{Parser, Payload};

use crate::records::Records;

/// The first bytes of a Wasm component (a core module has version 1, layer 0).
pub const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The first bytes of a core Wasm module.
pub const MODULE_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// A component's outermost imports and exports, in binary order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("not a Wasm component (a core module or another file)")]
    NotComponent,
    #[error("{0}")]
    Parse(String),
}

/// Reads the outermost imports and exports of the component `bytes`. Nested modules and
/// components have their own imports; only the outermost ones are what the host must provide.
pub fn interface(bytes: &[u8]) -> Result<Interface, InterfaceError> {
    if !Parser::is_component(bytes) {
        return Err(InterfaceError::NotComponent);
    }
    let parse = |e: wasmparser::BinaryReaderError| InterfaceError::Parse(e.to_string());
    let mut out = Interface::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(parse)? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    out.imports
                        .push(import.map_err(parse)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    out.exports
                        .push(export.map_err(parse)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A component file as one read of it found it: what it imports and exports, and its bytes'
/// sha256 (what wpod's compile cache and `wpod apply` know a component by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentFile {
    pub interface: Interface,
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
    /// The same sha256, as bytes.
    pub sha256: [u8; 32],
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentFileError {
    #[error(transparent)]
    Read(crate::files::ReadError),
    #[error(transparent)]
    Interface(InterfaceError),
}

/// What this process read of each settled component file: a pod's supervisor plans every
/// apply from the whole manifest again, and loads what it planned, so without this each
/// unchanged component would be read and parsed at each `wpod apply`, and hashed again to
/// find its compiled code.
static FILES: crate::files::Remembered<ComponentFile> = crate::files::Remembered::new();

/// Reads the component at `path` (at most `MAX_COMPONENT_BYTES`), or recalls it: a file this
/// process, or one before it, read under this path with the same identity (see
/// `files::FileId`, `records`) is not read again.
pub fn read_file(path: &std::path::Path) -> Result<ComponentFile, ComponentFileError> {
    read_file_with(path, records)
}

/// The records of the state root's cache (none when it cannot be had: nothing is then
/// recalled); the state root is made, and checked to be wpod's own, as for any of its files.
/// Asked only when this process's own memory has no answer: a recall or a read follows.
fn records() -> Option<Records> {
    Records::in_dir(&crate::files::private_state_dir("cache").ok()?).ok()
}

fn read_file_with(
    path: &std::path::Path,
    records: impl Fn() -> Option<Records>,
) -> Result<ComponentFile, ComponentFileError> {
    if let Some((_, known)) = known_with(path, &records) {
        return Ok(known);
    }
    let (bytes, id, seen) =
        crate::files::read_regular_identified(path, crate::files::MAX_COMPONENT_BYTES)
            .map_err(ComponentFileError::Read)?;
    let sha256 = sha256(&bytes);
    let file = ComponentFile {
        interface: interface(&bytes).map_err(ComponentFileError::Interface)?,
        digest: format!("sha256:{}", hex::encode(sha256)),
        sha256,
        size: bytes.len() as u64,
    };
    FILES.put(id, seen, file.clone());
    if let Some(records) = records() {
        records.record(
            COMPONENT_FILE,
            path,
            id,
            seen,
            &Recorded::of(&file).to_text(),
        );
    }
    Ok(file)
}

/// What [`read_file`] found in the file `path` names, if this process (or, under this path,
/// one before it) read it as it is now, with the identity it was found under (one `stat`:
/// pair nothing else with it).
pub fn known(path: &std::path::Path) -> Option<(crate::files::FileId, ComponentFile)> {
    known_with(path, records)
}

fn known_with(
    path: &std::path::Path,
    records: impl FnOnce() -> Option<Records>,
) -> Option<(crate::files::FileId, ComponentFile)> {
    let seen = std::time::SystemTime::now();
    let id = crate::files::FileId::of_path(path)?;
    if let Some(file) = known_by(id) {
        return Some((id, file));
    }
    let file = Recorded::from_text(&records()?.recall(COMPONENT_FILE, path, id)?)?;
    FILES.put(id, seen, file.clone());
    Some((id, file))
}

/// The kind of record (`records`) of what [`read_file`] found in a component file. Each pod
/// has a supervisor of its own, and `wpod run -d` plans the pod in the CLI and again in the
/// supervisor: a Python sidecar's 20 MB were read and hashed twice per start.
const COMPONENT_FILE: &str = "component-file";

/// A [`ComponentFile`] as its record holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Recorded {
    digest: String,
    size: u64,
    imports: Vec<String>,
    exports: Vec<String>,
}

impl Recorded {
    fn of(file: &ComponentFile) -> Recorded {
        Recorded {
            digest: file.digest.clone(),
            size: file.size,
            imports: file.interface.imports.clone(),
            exports: file.interface.exports.clone(),
        }
    }

    fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The component file a record describes; `None` for anything else.
    fn from_text(text: &str) -> Option<ComponentFile> {
        let r: Recorded = serde_json::from_str(text).ok()?;
        let sha256: [u8; 32] = hex::decode(r.digest.strip_prefix("sha256:")?)
            .ok()?
            .try_into()
            .ok()?;
        Some(ComponentFile {
            interface: Interface {
                imports: r.imports,
                exports: r.exports,
            },
            digest: r.digest,
            sha256,
            size: r.size,
        })
    }
}

/// What [`read_file`] found in the file of identity `id`, if it read it: for a caller that
/// has the identity already (one `stat`, not two).
pub fn known_by(id: crate::files::FileId) -> Option<ComponentFile> {
    FILES.get(id)
}

/// The sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha256(bytes)))
}

/// `wasi:http/types@0.2.0` without its version: `wasi:http/types`.
pub fn unversioned(import: &str) -> &str {
    import.split_once('@').map_or(import, |(name, _)| name)
}

/// What an upgrade changes in a sidecar's imports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// (old, new): the same interface at another version.
    pub version_changed: Vec<(String, String)>,
}

impl ImportDiff {
    pub fn between(old: &[String], new: &[String]) -> ImportDiff {
        let old_set: BTreeSet<&str> = old.iter().map(String::as_str).collect();
        let new_set: BTreeSet<&str> = new.iter().map(String::as_str).collect();
        let mut diff = ImportDiff::default();
        let old_only: Vec<&str> = old_set.difference(&new_set).copied().collect();
        for n in new_set.difference(&old_set) {
            match old_only.iter().find(|o| unversioned(o) == unversioned(n)) {
                Some(o) => diff.version_changed.push((o.to_string(), n.to_string())),
                None => diff.added.push(n.to_string()),
            }
        }
        for o in old_only {
            if !diff.version_changed.iter().any(|(old, _)| old == o) {
                diff.removed.push(o.to_string());
            }
        }
        diff
    }

    /// The new version imports something the old one did not, other than what `harmless`
    /// says every sidecar has anyway (clocks, its own stdio): it may do more.
    pub fn increases(&self, harmless: impl Fn(&str) -> bool) -> bool {
        self.added.iter().any(|a| !harmless(a))
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.version_changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A settled component file is read once; rewritten, it is read again.
    #[test]
    fn a_component_file_is_read_once_until_it_changes() {
        let dir = wpod_test_support::TempDir::new("component-file");
        let path = dir.join("c.wasm");
        let written = std::time::Instant::now();
        std::fs::write(&path, COMPONENT_PREAMBLE).unwrap();
        let first = read_file_with(&path, || None).unwrap();
        assert_eq!(first.digest, sha256_digest(&COMPONENT_PREAMBLE));
        // (Unless this machine took longer than that to read it.)
        if written.elapsed() < crate::files::SETTLE {
            assert!(
                known_with(&path, || None).is_none(),
                "not remembered before it settled"
            );
        }
        std::thread::sleep(crate::files::SETTLE + std::time::Duration::from_millis(200));
        assert_eq!(read_file_with(&path, || None).unwrap(), first);
        assert_eq!(
            known_with(&path, || None).map(|(_, f)| f),
            Some(first.clone())
        );
        // Another component (a custom section added) in the same file.
        let mut other = COMPONENT_PREAMBLE.to_vec();
        other.extend_from_slice(&[0, 4, 1, b'x', b'y', b'z']);
        std::fs::write(&path, &other).unwrap();
        assert!(known_with(&path, || None).is_none(), "the file changed");
        assert_eq!(
            read_file_with(&path, || None).unwrap().digest,
            sha256_digest(&other)
        );
    }

    /// What a process read of a settled component file is recalled by the next one (a
    /// record under the path), until the file changes.
    #[test]
    fn a_component_file_read_by_another_process_is_recalled() {
        let dir = wpod_test_support::TempDir::new("component-record");
        let records = Records::in_dir(&dir).unwrap();
        let path = dir.join("c.wasm");
        std::fs::write(&path, COMPONENT_PREAMBLE).unwrap();
        std::thread::sleep(crate::files::SETTLE + std::time::Duration::from_millis(100));
        // Read and recorded; this process's own memory is not asked below (`known_by` would
        // answer first), the record is.
        let first = read_file_with(&path, || Records::in_dir(&dir).ok()).unwrap();
        let id = crate::files::FileId::of_path(&path).unwrap();
        let recorded = records.recall(COMPONENT_FILE, &path, id).expect("a record");
        assert_eq!(Recorded::from_text(&recorded), Some(first.clone()));
        // A file this process never read, recorded (as by another process): recalled, not read.
        let twin = dir.join("twin.wasm");
        std::fs::write(&twin, b"not even a component").unwrap();
        let twin_id = crate::files::FileId::of_path(&twin).unwrap();
        let later = std::time::SystemTime::now() + crate::files::SETTLE * 2;
        records.record(COMPONENT_FILE, &twin, twin_id, later, &recorded);
        assert_eq!(
            known_with(&twin, || Records::in_dir(&dir).ok()).map(|(_, f)| f),
            Some(first.clone())
        );
        // Another component in the same file: the record is not believed.
        let mut other = COMPONENT_PREAMBLE.to_vec();
        other.extend_from_slice(&[0, 4, 1, b'x', b'y', b'z']);
        std::fs::write(&path, &other).unwrap();
        let id = crate::files::FileId::of_path(&path).unwrap();
        assert_eq!(records.recall(COMPONENT_FILE, &path, id), None);
        assert_eq!(
            read_file_with(&path, || Records::in_dir(&dir).ok())
                .unwrap()
                .digest,
            sha256_digest(&other)
        );
        assert_eq!(Recorded::from_text("{}"), None);
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        assert!(matches!(
            interface(&MODULE_PREAMBLE),
            Err(InterfaceError::NotComponent)
        ));
        assert!(matches!(
            interface(b"hello"),
            Err(InterfaceError::NotComponent)
        ));
        assert_eq!(unversioned("wasi:io/streams@0.2.6"), "wasi:io/streams");
        assert_eq!(unversioned("env"), "env");
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_diff_tells_added_removed_and_version_changes_apart() {
        let old = s(&[
            "wasi:io/streams@0.2.0",
            "wasi:sockets/tcp@0.2.0",
            "wasi:clocks/wall-clock@0.2.0",
        ]);
        let new = s(&[
            "wasi:io/streams@0.2.3",
            "wasi:clocks/wall-clock@0.2.0",
            "wpod:sidecar/main-process@0.1.0",
        ]);
        let d = ImportDiff::between(&old, &new);
        assert_eq!(d.added, s(&["wpod:sidecar/main-process@0.1.0"]));
        assert_eq!(d.removed, s(&["wasi:sockets/tcp@0.2.0"]));
        assert_eq!(
            d.version_changed,
            vec![(
                "wasi:io/streams@0.2.0".into(),
                "wasi:io/streams@0.2.3".into()
            )]
        );
        assert!(d.increases(|_| false));
        assert!(!d.increases(|i| i.starts_with("wpod:")));
        let back = ImportDiff::between(&new, &new[..2]);
        assert!(
            !back.increases(|_| false),
            "removing an import needs no new approval"
        );
        assert!(ImportDiff::between(&old, &old).is_empty());
    }
}
