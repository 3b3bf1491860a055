//! The helper processes' entry point: `wpod-helper` (`helper_bin.rs`), and `wpod` itself when
//! it runs its helpers from its own binary (see `wpod_spec::helper`). Arguments are read by
//! hand ([`HelperCall::parse`]), not by the CLI's parser, so the helper binary carries none of
//! the CLI.

use std::ffi::OsString;

use crate::helper::{HelperCall, BUILD_ID_ARG};

/// Exit code for arguments no `wpod` writes.
const EXIT_USAGE: i32 = 2;

/// Runs the helper `args` (without the program name) ask for; never returns.
pub fn run(args: &[OsString]) -> ! {
    if matches!(args, [only] if only == BUILD_ID_ARG) {
        println!("{}", crate::sandbox::build_id());
        std::process::exit(0);
    }
    let call = HelperCall::parse(args);
    if let Ok(call) = &call {
        crate::helper::set_process_name(call.process_name());
    }
    match call {
        Ok(HelperCall::Holder {
            hostname,
            pod_proc,
            host_network,
            userns,
        }) => crate::sandbox::holder::main(&hostname, pod_proc.as_deref(), host_network, userns),
        Ok(HelperCall::Container { launch_spec }) => crate::containers::shim::main(&launch_spec),
        Ok(HelperCall::Exec {
            launch_spec,
            pid,
            argv,
        }) => crate::containers::exec::main(&launch_spec, pid, &argv),
        Err(e) => {
            eprintln!(
                "wpod-helper: {e} (helpers are started by wpod run; {BUILD_ID_ARG} prints the build)"
            );
            std::process::exit(EXIT_USAGE)
        }
    }
}
