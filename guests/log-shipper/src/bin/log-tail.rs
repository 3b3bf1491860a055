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
    log_shipper::run(move |out| {
        // Take what each container has written while the outbox can hold it; what is left
        // waits in wpod's buffer for the next pass (these lines have no file to come back to).
        let mut shipped = false;
        for (name, s) in &streams {
            while out.has_room_for_stream() {
                let lines = s.try_next(256);
                if lines.is_empty() {
                    break;
                }
                shipped = true;
                for l in lines {
                    out.ship(name, &l.text);
                }
            }
        }
        shipped
    });
}
