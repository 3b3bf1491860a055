//! The capability probe without `main-process`: WASI (network, files) and lifecycle only.

fn main() {
    probe::main_with(|_, _| None);
}
