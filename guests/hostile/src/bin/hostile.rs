//! The hostile sidecar without `main-process`: WASI attacks, and the probe's actions.

fn main() {
    probe::main_with(hostile::attack);
}
