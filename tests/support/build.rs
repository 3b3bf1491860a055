//! Builds every guest in `guests/` for wasm32-wasip2, once per test run (cargo re-runs this only
//! when guests/ or wit/ change), and copies each component to `target/sidecars/NAME.wasm`.
//! Tests get the folder as `env!("WPOD_SIDECARS_DIR")`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = root.join("guests");
    // Outside guests/ so that building does not touch what this script watches.
    let target_dir = root.join("target/guests");
    let out_dir = root.join("target/sidecars");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's settings (flags, profile, target) are not the guests'.
    for (key, _) in env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUST") && key != "RUSTUP_HOME" && key != "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the guests");
    if !status.success() {
        panic!("building the guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)");
    }

    std::fs::create_dir_all(&out_dir).unwrap();
    let built = target_dir.join("wasm32-wasip2/release");
    for entry in std::fs::read_dir(&built).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            copy_if_changed(&path, &out_dir.join(path.file_name().unwrap()));
        }
    }
    // Five core instances, each growing its own memory by 30 MiB and touching all of it.
    write_if_changed(&out_dir.join("memory-hog.wasm"), &memory_hog(5, 480));
    build_python_guest(
        &guests.join("health-check-py"),
        &root.join("wit"),
        &out_dir.join("health-check-py.wasm"),
    );
    println!("cargo:rustc-env=WPOD_SIDECARS_DIR={}", out_dir.display());
}

/// The Python sidecar, with componentize-py (installed by .ci/setup); rebuilt only when its
/// sources or the WIT changed (it takes a quarter of a minute).
fn build_python_guest(dir: &Path, wit: &Path, out: &Path) {
    let newest_input = [dir.join("app.py"), wit.join("sidecar.wit")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    if let (Some(input), Some(built)) = (newest_input, built) {
        if built > input {
            return;
        }
    }
    let status = Command::new("componentize-py")
        .arg("-d")
        .arg(wit)
        .args([
            "-w",
            "wpod:sidecar/sidecar-basic",
            "componentize",
            "app",
            "-o",
        ])
        .arg(out)
        .current_dir(dir)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("componentize-py failed ({s}) building {}", dir.display()),
        Err(e) => panic!(
            "cannot run componentize-py ({e}): install it with `python3 -m pip install componentize-py==0.25.1` (bash .ci/setup does)"
        ),
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    write_if_changed(to, &std::fs::read(from).unwrap());
}

fn write_if_changed(to: &Path, new: &[u8]) {
    if std::fs::read(to).ok().as_deref() != Some(new) {
        std::fs::write(to, new).unwrap();
    }
}

/// A command component (it exports `wasi:cli/run`) made of `instances` core instances, each
/// with a memory of its own that it grows by `pages` (64 KiB each) and fills, one after the
/// other. No language toolchain makes such a component; a hostile author can, and a memory
/// limit that counted each memory on its own let it take `instances` times the limit.
fn memory_hog(instances: u32, pages: u32) -> Vec<u8> {
    use wasm_encoder::*;
    let run_type = |m: &mut Module| {
        let mut types = TypeSection::new();
        types.ty().function([], [ValType::I32]);
        m.section(&types);
    };
    // The module each instance runs: grow, fill, return 0.
    let mut hog = Module::new();
    run_type(&mut hog);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    hog.section(&funcs);
    let mut mems = MemorySection::new();
    mems.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    hog.section(&mems);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    hog.section(&exports);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instruction(&Instruction::I32Const(pages as i32));
    f.instruction(&Instruction::MemoryGrow(0));
    f.instruction(&Instruction::Drop);
    f.instruction(&Instruction::I32Const(0));
    f.instruction(&Instruction::I32Const(1));
    f.instruction(&Instruction::I32Const((pages * 65536) as i32));
    f.instruction(&Instruction::MemoryFill(0));
    f.instruction(&Instruction::I32Const(0));
    f.instruction(&Instruction::End);
    code.function(&f);
    hog.section(&code);
    // The driver calls every instance's `run`.
    let mut driver = Module::new();
    run_type(&mut driver);
    let mut imports = ImportSection::new();
    for k in 0..instances {
        imports.import(&format!("i{k}"), "run", EntityType::Function(0));
    }
    driver.section(&imports);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    driver.section(&funcs);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, instances);
    driver.section(&exports);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    for k in 0..instances {
        f.instruction(&Instruction::Call(k));
        f.instruction(&Instruction::Drop);
    }
    f.instruction(&Instruction::I32Const(0));
    f.instruction(&Instruction::End);
    code.function(&f);
    driver.section(&code);

    let mut c = Component::new();
    c.section(&ModuleSection(&hog));
    c.section(&ModuleSection(&driver));
    let mut ci = InstanceSection::new();
    for _ in 0..instances {
        ci.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    }
    let names: Vec<String> = (0..instances).map(|k| format!("i{k}")).collect();
    ci.instantiate(
        1,
        names
            .iter()
            .enumerate()
            .map(|(k, s)| (s.as_str(), ModuleArg::Instance(k as u32))),
    );
    c.section(&ci);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: instances,
        kind: ExportKind::Func,
        name: "run",
    });
    c.section(&aliases);
    let mut types = ComponentTypeSection::new();
    types.defined_type().result(None, None);
    types
        .function()
        .params(Vec::<(&str, ComponentValType)>::new())
        .result(Some(ComponentValType::Type(0)));
    c.section(&types);
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(0, 1, Vec::<CanonicalOption>::new());
    c.section(&canon);
    let mut inst = ComponentInstanceSection::new();
    inst.export_items([("run", ComponentExportKind::Func, 0)]);
    c.section(&inst);
    let mut exports = ComponentExportSection::new();
    exports.export(
        "wasi:cli/run@0.2.12",
        ComponentExportKind::Instance,
        0,
        None,
    );
    c.section(&exports);
    c.finish()
}
