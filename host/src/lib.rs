//! wpod: run a Kubernetes Pod on one Linux host; the main container is a native process in real
//! pod namespaces, its sidecars are WebAssembly components that get only what the pod grants.
//!
//! The modules are layers, and a module imports only lower ones (the `layering` test checks):
//!
//! 1. `component`, `error`, `files`, `mounts`, `status`: vocabulary with no wpod dependencies
//!    (a component's imports and exports, printing error chains, reading files and where wpod
//!    keeps its state, the mount table, the live pod status); above them `helper`: helper
//!    processes and their step errors (wpod runs them from a view made in its state directory).
//! 2. `spec`: manifest → typed, validated Pod, every string enum decoded once.
//! 3. `logs`: container output.
//! 4. `grants`: one module per capability a Wasm sidecar can be granted; `oci`: images and
//!    sidecars on registries (names, the store, pulls, signatures and the trust policy,
//!    approvals, push/search, layout directories).
//! 5. `plan`: Pod → PodPlan, every decision made once (roles, restart policies, grants, ports).
//! 6. `sandbox`: namespaces, volumes, cgroups, ports, the state directory.
//! 7. `containers` (native processes) | `sidecars` (Wasm components), side by side.
//! 8. `supervisor`: the pod's lifecycle; then the CLI (`main.rs`).

pub mod component;
pub mod containers;
pub mod error;
pub mod files;
pub mod grants;
pub mod helper;
pub mod logs;
pub mod mounts;
pub mod oci;
pub mod plan;
pub mod sandbox;
pub mod sidecars;
pub mod spec;
pub mod status;
pub mod supervisor;
pub mod sys;

#[cfg(test)]
mod layering {
    //! The layers point one way: a module may import only modules of lower layers. This reads
    //! the sources, so a new upward import fails here with the file that makes it.

    use std::collections::BTreeSet;
    use std::path::Path;

    /// Top-level modules by layer, lowest first. Modules of one layer never import each other.
    const LAYERS: &[&[&str]] = &[
        &["component", "error", "files", "mounts", "status", "sys"],
        &["helper"],
        &["spec"],
        &["logs"],
        &["grants", "oci"],
        &["plan"],
        &["sandbox"],
        &["containers", "sidecars"],
        &["supervisor"],
    ];

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level names a path after `crate::` reaches: `plan::X` → `plan`; `{plan::X,
    /// spec::{Y, Z}}` → `plan`, `spec`.
    fn imported(after: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let Some(group) = after.strip_prefix('{') else {
            return vec![ident(after)];
        };
        let mut names = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(ident(&group[start..i]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(ident(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        names.retain(|n| !n.is_empty());
        names
    }

    #[test]
    fn grouped_and_item_imports_are_seen() {
        assert_eq!(imported("plan::PodPlan;"), ["plan"]);
        assert_eq!(
            imported("{plan::X, spec::{Y, Z},\n  logs};"),
            ["plan", "spec", "logs"]
        );
        assert_eq!(imported("load_plan(&f)"), ["load_plan"]);
        assert_eq!(layer("load_plan"), None);
    }

    #[test]
    fn modules_import_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = BTreeSet::new();
        for file in files {
            let rel = file.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|s| s.trim_end_matches(".rs").to_string())
                .expect("a name");
            let Some(from) = layer(&top) else {
                continue; // lib.rs, main.rs and the CLI sit above everything
            };
            let text = std::fs::read_to_string(&file).expect("read source");
            for (i, _) in text.match_indices("crate::") {
                for name in imported(&text[i + 7..]) {
                    if name == top {
                        continue;
                    }
                    match layer(&name) {
                        Some(to) if to < from => {}
                        // Anything else under `crate::` is of a layer above (lib.rs's own
                        // items sit above every module).
                        _ => {
                            wrong.insert(format!("{} imports crate::{name}", rel.display()));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
    }
}
