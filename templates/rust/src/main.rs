//! {{name}}: a wpod sidecar. It follows the main container's output, reads its live
//! statistics, tells the pod it is ready, and stops cleanly when the pod stops: a starting
//! point. wpod-sidecar's documentation (wpod-sidecar/src/lib.rs) lists what else it can do.

use wpod_sidecar::{Event, LogStart};

#[wstd::main]
async fn main() {
    wpod_sidecar::ready();
    println!("{{name}}: ready");
    let Some(main) = wpod_sidecar::containers().first().map(|c| c.name.clone()) else {
        println!("{{name}}: the pod has no main container to watch");
        return;
    };
    // The first line the main container wrote (waiting for it without blocking the pod's
    // events: other tasks could serve sockets meanwhile, see wstd::runtime::spawn).
    match wpod_sidecar::main_logs(&main, LogStart::Beginning) {
        Ok(logs) => {
            if let Some(line) = logs.next(1).await.first() {
                println!("{{name}}: {main} said {:?}", line.text);
            }
        }
        Err(e) => println!("{{name}}: cannot read {main}'s output: {e:?}"),
    }
    wpod_sidecar::wait_running(&main, std::time::Duration::from_secs(5));
    match wpod_sidecar::stats(&main) {
        Ok(s) => println!(
            "{{name}}: {main} uses {} KiB of memory and {} threads",
            s.rss_bytes / 1024,
            s.threads
        ),
        Err(e) => println!("{{name}}: no statistics for {main}: {e:?}"),
    }
    let mut events = wpod_sidecar::events();
    loop {
        match events.next().await {
            Event::Stopping(ms) => {
                println!("{{name}}: stopping ({ms} ms left)");
                return;
            }
            Event::MainStarted(name) => println!("{{name}}: {name} started"),
            Event::MainExited((name, code)) => println!("{{name}}: {name} exited with {code}"),
        }
    }
}
