//! log-peek: an async sidecar on wpod-sidecar and wstd. One task follows the main container's
//! output and keeps its latest line; another accepts connections and answers each with that
//! line, many at once; the main task waits for the pod's `stopping` event. All of them wait in
//! the same `wasi:io/poll` (wstd's reactor): sockets, the log stream and the pod's events.
//!
//! Configuration (env): `CONTAINER` (default: the first main container), `LISTEN` (default
//! `0.0.0.0:9500`; declare the port in the sidecar's `ports`). Needs `shareProcessNamespace:
//! true` (it reads the main container's output).

use std::cell::RefCell;
use std::rc::Rc;

use wstd::io::AsyncWrite;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;
use wpod_sidecar::{Event, LogStart};

#[wstd::main]
async fn main() -> std::io::Result<()> {
    let container = std::env::var("CONTAINER").ok().or_else(|| {
        wpod_sidecar::containers().first().map(|c| c.name.clone())
    });
    let Some(container) = container else {
        eprintln!("no main container to follow");
        std::process::exit(1);
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:9500".into());
    let latest: Rc<RefCell<String>> = Rc::default();

    let logs = match wpod_sidecar::main_logs(&container, LogStart::Beginning) {
        Ok(logs) => logs,
        Err(e) => {
            eprintln!("cannot follow {container}: {e:?}");
            std::process::exit(1);
        }
    };
    let seen = latest.clone();
    wstd::runtime::spawn(async move {
        loop {
            let lines = logs.next(64).await;
            let Some(last) = lines.last() else {
                println!("{container}'s output ended");
                return;
            };
            for l in &lines {
                println!("seen: {}", l.text);
            }
            *seen.borrow_mut() = last.text.clone();
        }
    })
    .detach();

    let listener = TcpListener::bind(&listen).await?;
    println!("serving the latest line on {listen}");
    let served = latest.clone();
    wstd::runtime::spawn(async move {
        let mut incoming = listener.incoming();
        while let Some(Ok(mut stream)) = incoming.next().await {
            let line = format!("{}\n", served.borrow());
            wstd::runtime::spawn(async move {
                let _ = stream.write_all(line.as_bytes()).await;
            })
            .detach();
        }
    })
    .detach();
    wpod_sidecar::ready();

    let mut events = wpod_sidecar::events();
    loop {
        match events.next().await {
            Event::Stopping(ms) => {
                println!("stopping with {ms} ms left; last line was {:?}", latest.borrow());
                // wstd's main returns only once every spawned task has: the accept loop never
                // does, so the sidecar ends here.
                std::process::exit(0);
            }
            Event::MainStarted(name) => println!("event: {name} started"),
            Event::MainExited((name, code)) => println!("event: {name} exited with {code}"),
        }
    }
}
