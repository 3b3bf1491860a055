//! Like log-shipper, and also ships the stdout/stderr of main containers through
//! `main-process` (needs `shareProcessNamespace: true`): `FOLLOW` = comma-separated container
//! names (default: all main containers), each line labelled with the container's name.

use log_shipper::main_process::{self, LogStart};

fn main() {
    let wanted: Vec<String> = log_shipper::env("FOLLOW", "").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let names: Vec<String> = if wanted.is_empty() { main_process::containers().into_iter().map(|c| c.name).collect() } else { wanted };
    let mut streams = Vec::new();
    for name in names {
        match main_process::logs(&name, LogStart::Beginning) {
            Ok(s) => streams.push((name, s)),
            Err(e) => eprintln!("cannot follow {name}: {e:?}"),
        }
    }
    log_shipper::run(move || {
        let mut out = Vec::new();
        for (name, s) in &streams {
            out.extend(s.try_next(256).into_iter().map(|l| (name.clone(), l.text)));
        }
        out
    });
}
