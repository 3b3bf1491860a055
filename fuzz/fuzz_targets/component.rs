//! The component loader: bytes -> refused, or inspected, compiled (Cranelift), linked against
//! WASI and wpod's interfaces and checked to be a command (`wpod::sidecars::check_component_bytes`).
//! `Err` is an expected answer; a panic, abort, leak or hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wpod::sidecars::check_component_bytes(data);
});
