//! The smallest wpod sidecar: a plain `wasm32-wasip2` program using only std (WASI imports).
//! It greets, shows the argv and environment the pod gave it, and lists its preopened volumes.

use std::env;

fn main() {
    let args: Vec<String> = env::args().collect();
    println!("hello from a Wasm sidecar; argv = {args:?}");
    for (k, v) in env::vars() {
        println!("env {k}={v}");
    }
    // Each volumeMount is a preopened directory at its mountPath; report the ones that exist.
    for path in args.iter().skip(1) {
        match std::fs::read_dir(path) {
            Ok(entries) => println!("{path}: {} entries", entries.count()),
            Err(e) => println!("{path}: {e}"),
        }
    }
}
