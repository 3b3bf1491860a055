//! compat-0-1: a sidecar built against `wpod:sidecar@0.1.0` (`wit/v0.1.0`), as every sidecar
//! was before 0.2.0: it reads the main container's state, says it is ready and waits for
//! `stopping` with 0.1.0's blocking `next-event`. The host links 0.1.0 beside 0.2.0 so that it
//! keeps running.

wit_bindgen::generate!({
    path: "../../wit/v0.1.0",
    world: "wpod:sidecar/imports",
    generate_all,
});

use wpod::sidecar::{lifecycle, main_process};

fn main() {
    for c in main_process::containers() {
        println!("compat 0.1.0: main container {} is {:?}", c.name, c.state);
    }
    lifecycle::ready();
    println!("compat 0.1.0: ready");
    loop {
        match lifecycle::next_event(1000) {
            Some(lifecycle::Event::Stopping(ms)) => {
                println!("compat 0.1.0: stopping with {ms} ms left");
                return;
            }
            Some(e) => println!("compat 0.1.0: event {e:?}"),
            None => {}
        }
    }
}
