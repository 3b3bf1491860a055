//! `wpod new NAME --lang rust|python|js|c|go`: a sidecar project that builds with one command into a
//! component wpod runs, as `cargo new` or `spin new` make one. Each project carries what it
//! needs to build offline: wpod's interfaces (`wit/`, the version this wpod links) and the
//! language's SDK (`guests/wpod-sidecar` for Rust, `wpod_sidecar.py` for Python,
//! `wpod-sidecar.js` and `wpod-main.js` for JavaScript, `wpod_sidecar.{h,c}` and the generated bindings for C, `wpod/wpod.go` for Go); the
//! templates live in `templates/`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::Lang;
use crate::wasm_tools;

/// wpod's interfaces, as every project gets them.
const WIT: &[(&str, &str)] = &[
    ("wit/sidecar.wit", include_str!("../../wit/sidecar.wit")),
    ("wit/deps/cli.wit", include_str!("../../wit/deps/cli.wit")),
    (
        "wit/deps/clocks.wit",
        include_str!("../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../wit/deps/filesystem.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../wit/deps/sockets.wit"),
    ),
];

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    // The versions the tests built: the first build needs no crates.io index to resolve.
    (
        "Cargo.lock",
        include_str!("../../templates/rust/Cargo.lock"),
    ),
    (
        "src/main.rs",
        include_str!("../../templates/rust/src/main.rs"),
    ),
    ("Makefile", include_str!("../../templates/rust/Makefile")),
    ("pod.yaml", include_str!("../../templates/rust/pod.yaml")),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (".gitignore", "/target\n*.wasm\n"),
    ("wpod-sidecar/Cargo.toml", RUST_SDK_MANIFEST),
    (
        "wpod-sidecar/src/lib.rs",
        include_str!("../../guests/wpod-sidecar/src/lib.rs"),
    ),
];

/// The Rust SDK's manifest outside wpod's guests workspace.
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "wpod-sidecar"
description = "Write wpod sidecars in Rust (copied from wpod's guests/wpod-sidecar by wpod new)"
version = "{{wit_version}}"
edition = "2021"

[lib]
path = "src/lib.rs"

[features]
async = ["dep:wstd"]

[dependencies]
wit-bindgen = "0.63"
wasip2 = "1.0.4"
wstd = { version = "0.5.6", optional = true }
"#;

const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("../../templates/js/app.js")),
    (
        "wpod-sidecar.js",
        include_str!("../../templates/js/wpod-sidecar.js"),
    ),
    // The main-process helpers, apart: an app that imports them builds against world `sidecar`.
    (
        "wpod-main.js",
        include_str!("../../templates/js/wpod-main.js"),
    ),
    (
        "package.json",
        include_str!("../../templates/js/package.json"),
    ),
    ("pod.yaml", include_str!("../../templates/js/pod.yaml")),
    ("README.md", include_str!("../../templates/js/README.md")),
    (".gitignore", "*.wasm\nnode_modules/\n"),
];

const C: &[(&str, &str)] = &[
    ("main.c", include_str!("../../templates/c/main.c")),
    (
        "wpod_sidecar.h",
        include_str!("../../templates/c/wpod_sidecar.h"),
    ),
    (
        "wpod_sidecar.c",
        include_str!("../../templates/c/wpod_sidecar.c"),
    ),
    ("Makefile", include_str!("../../templates/c/Makefile")),
    ("pod.yaml", include_str!("../../templates/c/pod.yaml")),
    ("README.md", include_str!("../../templates/c/README.md")),
    (".gitignore", "*.wasm\n"),
];

const GO: &[(&str, &str)] = &[
    ("main.go", include_str!("../../templates/go/main.go")),
    (
        "wpod/wpod.go",
        include_str!("../../templates/go/wpod/wpod.go"),
    ),
    ("go.mod", include_str!("../../templates/go/go.mod")),
    ("Makefile", include_str!("../../templates/go/Makefile")),
    ("pod.yaml", include_str!("../../templates/go/pod.yaml")),
    ("README.md", include_str!("../../templates/go/README.md")),
    (".gitignore", "*.wasm\n"),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py")),
    (
        "wpod_sidecar.py",
        include_str!("../../templates/python/wpod_sidecar.py"),
    ),
    ("pod.yaml", include_str!("../../templates/python/pod.yaml")),
    (
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
    (".gitignore", "*.wasm\n__pycache__/\n"),
];

/// The version of wpod's interfaces this wpod links (and links 0.1.0 beside).
fn wit_version() -> &'static str {
    WIT[0]
        .1
        .lines()
        .find_map(|l| l.strip_prefix("package wpod:sidecar@"))
        .and_then(|v| v.strip_suffix(';'))
        .unwrap_or("0.2.0")
}

/// `wpod new PATH`: the project in directory `PATH` (made, with its parents, as `cargo new`
/// makes them), named after its last component.
pub fn new(path: &Path, lang: Lang) -> anyhow::Result<ExitCode> {
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(n) => n,
        None => bail!(
            "{}: name the sidecar's directory, e.g. wpod new sidecars/my-sidecar",
            path.display()
        ),
    };
    check_name(name, lang)?;
    let dir = path;
    let shown = dir.display();
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Made here, or refused: never into a directory that was already there.
    if let Err(e) = std::fs::create_dir(dir) {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!("{shown} already exists; choose another name or remove it");
        }
        return Err(e).with_context(|| format!("cannot create {shown}"));
    }
    if let Err(e) = write_project(dir, name, lang) {
        let _ = std::fs::remove_dir_all(dir);
        return Err(e);
    }
    let build = match lang {
        Lang::Python => {
            format!(
                "componentize-py -d wit -w wpod:sidecar/sidecar componentize app -o {name}.wasm"
            )
        }
        Lang::Js => "npm install && npm run build".to_string(),
        Lang::Rust | Lang::C | Lang::Go => "make".to_string(),
    };
    println!("Created sidecar {name} ({lang}) in {shown}");
    println!("  build: cd {shown} && {build}   (-> {name}.wasm beside pod.yaml)");
    println!("  run:   wpod run {shown}/pod.yaml   (as root)");
    Ok(ExitCode::SUCCESS)
}

/// Writes the project's files into `dir` (just made, empty).
fn write_project(dir: &Path, name: &str, lang: Lang) -> anyhow::Result<()> {
    let files: Vec<(&str, &str)> = match lang {
        Lang::Rust => RUST.iter().chain(WIT).copied().collect(),
        Lang::Python => PYTHON.iter().chain(WIT).copied().collect(),
        Lang::Js => JS.iter().chain(WIT).copied().collect(),
        Lang::C => C.iter().chain(WIT).copied().collect(),
        Lang::Go => GO.iter().chain(WIT).copied().collect(),
    };
    for (path, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{wit_version}}", wit_version())
            // The SDK's bindings, one directory up from the project's wit/.
            .replace("path: \"../../wit\"", "path: \"../wit\"");
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if lang == Lang::C {
        // What `wit-bindgen c --world sidecar wit/` writes, from the same WIT.
        let bindings = dir.join("bindings");
        std::fs::create_dir_all(&bindings)
            .with_context(|| format!("cannot create {}", bindings.display()))?;
        for (name, bytes) in wasm_tools::c_bindings(WIT)? {
            let path = bindings.join(name);
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// `wpod component new MODULE -o OUTPUT`.
pub fn component_new(module: &Path, output: &Path) -> anyhow::Result<ExitCode> {
    let core =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let component =
        wasm_tools::component_new(&core, WIT).with_context(|| format!("{}", module.display()))?;
    std::fs::write(output, component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Names Cargo refuses for a package or a binary, or that the project's own SDK takes.
const RESERVED_RUST: &[&str] = &[
    "build",
    "deps",
    "examples",
    "incremental",
    "test",
    "std",
    "core",
    "alloc",
    "proc-macro",
    "wpod-sidecar",
    "self",
    "super",
    "crate",
    "fn",
    "mod",
    "use",
    "impl",
    "let",
    "loop",
    "match",
    "type",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "for",
    "if",
    "in",
    "ref",
    "return",
    "static",
    "struct",
    "trait",
    "true",
    "false",
    "unsafe",
    "enum",
    "extern",
    "const",
    "else",
    "break",
    "continue",
    "move",
    "mut",
    "pub",
    "as",
];

/// A sidecar's name is its container's: a DNS label (lowercase letters, digits and '-'), which
/// is also a valid crate name unless Cargo reserves it.
fn check_name(name: &str, lang: Lang) -> anyhow::Result<()> {
    if lang == Lang::Rust && RESERVED_RUST.contains(&name) {
        bail!("{name:?} is reserved for a Rust package (by Cargo, or by the project's own wpod-sidecar); choose another name");
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-');
    if !ok {
        bail!(
            "{name:?} is not a valid sidecar name: use lowercase letters, digits and '-', starting with a letter (it names the container in the pod)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_version() {
        assert!(check_name("log-peek", Lang::Rust).is_ok());
        for bad in ["", "Peek", "9lives", "a_b", "x-", "../x"] {
            assert!(check_name(bad, Lang::Python).is_err(), "{bad}");
        }
        for reserved in ["build", "wpod-sidecar", "fn"] {
            assert!(check_name(reserved, Lang::Rust).is_err(), "{reserved}");
            assert!(check_name(reserved, Lang::Js).is_ok(), "{reserved}");
        }
        assert!(wit_version().starts_with("0."), "{}", wit_version());
    }

    /// `wpod new sidecars/x` makes the parents and names the sidecar `x`; every language's
    /// pod runs the component its build writes beside pod.yaml.
    #[test]
    fn a_path_names_the_directory_and_its_last_part_the_sidecar() {
        let base = std::env::temp_dir().join(format!("wpod-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::Go] {
            let dir = base.join(format!("sidecars/{lang}")).join("my-car");
            new(&dir, lang).expect("made");
            let pod = std::fs::read_to_string(dir.join("pod.yaml")).expect("pod.yaml");
            assert!(pod.contains("name: my-car"), "{lang}: {pod}");
            assert!(pod.contains("image: my-car.wasm"), "{lang}: {pod}");
            assert!(new(&dir, lang).is_err(), "{lang}: made twice");
        }
        let _ = std::fs::remove_dir_all(&base);
        assert!(new(Path::new("/"), Lang::Rust).is_err());
    }

    #[test]
    #[cfg(feature = "author-tools")]
    fn c_bindings_of_wpods_world() {
        let files = wasm_tools::c_bindings(WIT).expect("bindings");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["sidecar.c", "sidecar.h", "sidecar_component_type.o"],
            "{names:?}"
        );
        let header = String::from_utf8_lossy(&files[1].1);
        // What the C SDK (templates/c/wpod_sidecar.c) calls.
        for f in [
            "wpod_sidecar_lifecycle_ready(void)",
            "bool wpod_sidecar_main_process_stats(sidecar_string_t *name",
            "wpod_sidecar_main_process_method_log_stream_next(",
            "bool exports_wasi_cli_run_run(void)",
        ] {
            assert!(header.contains(f), "sidecar.h lacks {f}");
        }
    }

    #[test]
    #[cfg(feature = "author-tools")]
    fn component_new_wants_a_core_module() {
        for not_module in [&b"not wasm"[..], &wpod::component::COMPONENT_PREAMBLE[..]] {
            let e = wasm_tools::component_new(not_module, WIT).unwrap_err();
            assert!(e.to_string().contains("not a core Wasm module"), "{e}");
        }
    }

    /// A wpod built without the author tools (runner/build.sh's) names the feature, called as
    /// the commands above call the real ones.
    #[test]
    #[cfg(feature = "author-tools")]
    fn without_the_author_tools_both_commands_name_the_feature() {
        use crate::wasm_tools_disabled as disabled;
        let c = disabled::c_bindings(WIT).map(drop).unwrap_err();
        let component = disabled::component_new(b"\0asm\x01\0\0\0", WIT)
            .map(drop)
            .unwrap_err();
        for e in [c, component] {
            assert!(e.to_string().contains("cargo feature author-tools"), "{e}");
        }
    }

    /// Every file of wit/ goes into a project (a new WASI deps file would otherwise be missing).
    #[test]
    fn every_wit_file_is_copied() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = ["", "deps"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(root.join(sub)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wit"))
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .map(|p| format!("wit/{p}"))
            .collect();
        on_disk.sort();
        let mut copied: Vec<String> = WIT.iter().map(|(p, _)| p.to_string()).collect();
        copied.sort();
        assert_eq!(on_disk, copied);
    }
}
