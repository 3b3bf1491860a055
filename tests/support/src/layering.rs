//! The layering check both crates of wpod run in a unit test: a module may import only
//! modules of lower layers. It reads the sources, so a new upward import fails the test with
//! the file that makes it. (The crates themselves keep `wpod-spec` below `wpod`: the compiler
//! checks that; this checks the layers inside each crate.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
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
pub fn imported(after: &str) -> Vec<String> {
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

/// Every import under `src` against `layers` (top-level modules by layer, lowest first;
/// modules of one layer never import each other): `FILE imports crate::NAME` for each that
/// points up or sideways, or to a name that is no module of a lower layer (the crate root's
/// own items sit above every module). `below` are names re-exported from a crate below, which
/// any module may use.
pub fn violations(src: &Path, layers: &[&[&str]], below: &[&str]) -> BTreeSet<String> {
    let layer = |module: &str| layers.iter().position(|l| l.contains(&module));
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut wrong = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
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
                if name == top || below.contains(&name.as_str()) {
                    continue;
                }
                match layer(&name) {
                    Some(to) if to < from => {}
                    _ => {
                        wrong.insert(format!("{} imports crate::{name}", rel.display()));
                    }
                }
            }
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_and_item_imports_are_seen() {
        assert_eq!(imported("plan::PodPlan;"), ["plan"]);
        assert_eq!(
            imported("{plan::X, spec::{Y, Z},\n  logs};"),
            ["plan", "spec", "logs"]
        );
        assert_eq!(imported("load_plan(&f)"), ["load_plan"]);
    }
}
