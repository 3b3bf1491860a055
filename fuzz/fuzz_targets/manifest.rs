//! The manifest loader: YAML text -> typed, validated Pods (`wpod::spec::parse`) -> plans
//! (`wpod::plan::plan`). Errors are expected answers; a panic, abort, stack overflow, leak or
//! hang is a finding.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The component header `plan` checks an `image: *.wasm` for.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Where the fuzzed manifest "lives". The file itself never exists (only its text is parsed),
/// but its directory does, laid out like the repository around `examples/`, so that the seeds'
/// `image: ../target/sidecars/NAME.wasm` and `image: .` resolve and `plan` gets past image
/// resolution into the sidecar and rootfs paths instead of stopping at "not found".
fn manifest_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = std::env::temp_dir().join("wpod-fuzz-fixture");
        let examples = root.join("examples");
        let sidecars = root.join("target/sidecars");
        std::fs::create_dir_all(&examples).expect("create fixture dir");
        std::fs::create_dir_all(&sidecars).expect("create fixture dir");
        for name in [
            "config-reloader", "hello", "log-shipper", "log-tail", "main-probe", "poller",
            "probe", "proc-monitor", "redis-exporter", "tls-proxy", "sidecar",
        ] {
            std::fs::write(sidecars.join(format!("{name}.wasm")), COMPONENT_PREAMBLE)
                .expect("write fixture component");
        }
        examples.join("pod.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pods) = wpod::spec::parse(manifest_path(), text) {
        for pod in &pods {
            let _ = wpod::plan::plan(pod);
        }
    }
});
