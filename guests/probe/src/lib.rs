//! Test sidecars: each argument is an action (`connect:127.0.0.1:8080`, `read:/data/x`, …);
//! they run them in order and print `ACTION ok: …` or `ACTION err: …` for each, so a test can
//! check both that a grant works and that its absence is enforced. `probe` knows the WASI and
//! lifecycle actions; `main-probe` adds the `main-process` ones (and so imports that interface,
//! which a pod grants only with `shareProcessNamespace: true`). See `USAGE`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use wpod_sidecar::{lifecycle, main_process};

pub const USAGE: &str = "actions: connect:ADDR send:ADDR:TEXT blast:ADDR:MIB hold:ADDR:MS listen:PORT serve:PORT:TEXT park:PORT:MS read:PATH \
     write:PATH:TEXT symlink:TARGET:LINK ls:DIR resolve:HOST alloc:MIB spin trap ready sleep:MS \
     wait-main-started wait-stopping exit:CODE env:NAME; main-probe adds procs stats:NAME logs:NAME:N signal:NAME:SIG";

/// An action a binary adds to the common ones; `None` when it does not know the verb.
pub type Extra = fn(verb: &str, rest: &str) -> Option<Result<String, String>>;

/// Runs every argument as an action and prints the outcome of each.
pub fn main_with(extra: Extra) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("{USAGE}");
    }
    for action in &args {
        let (verb, rest) = action.split_once(':').unwrap_or((action, ""));
        let outcome = extra(verb, rest).unwrap_or_else(|| run(verb, rest));
        match outcome {
            Ok(msg) => println!("{action} ok: {msg}"),
            Err(msg) => println!("{action} err: {msg}"),
        }
    }
}

pub fn split2(s: &str) -> Result<(&str, &str), String> {
    s.rsplit_once(':').ok_or_else(|| format!("expected two parts in {s}"))
}

fn run(verb: &str, rest: &str) -> Result<String, String> {
    let e = |e: std::io::Error| e.to_string();
    match verb {
        "connect" => send(rest, "ping\n"),
        "blast" => {
            // blast:ADDR:MIB: connect and write MIB MiB (the egress benchmark's sender).
            let (addr, mib) = split2(rest)?;
            let mib: usize = mib.parse().map_err(|_| "bad size")?;
            let start = std::time::Instant::now();
            let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            let chunk = vec![0x5au8; 256 * 1024];
            for _ in 0..mib * 4 {
                s.write_all(&chunk).map_err(|e| e.to_string())?;
            }
            s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
            let mut end = [0u8; 1];
            let _ = s.read(&mut end);
            Ok(format!("sent {mib} MiB in {} ms", start.elapsed().as_millis()))
        }
        "send" => {
            let (addr, text) = split2(rest)?;
            send(addr, &format!("{text}\n"))
        }
        "listen" => TcpListener::bind(("0.0.0.0", rest.parse::<u16>().map_err(|e| e.to_string())?)).map(|_| "bound".to_string()).map_err(e),
        "serve" => {
            let (port, text) = split2(rest)?;
            let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>().map_err(|e| e.to_string())?)).map_err(e)?;
            println!("serve:{port} listening");
            for conn in listener.incoming() {
                let mut conn = conn.map_err(e)?;
                let _ = conn.write_all(format!("{text}\n").as_bytes());
            }
            Ok("done".into())
        }
        "hold" => {
            // hold:ADDR:MS: connect (retrying for 10 s while refused: the server may start
            // after this) and keep the connection open MS ms (a socket to look at).
            let (addr, ms) = split2(rest)?;
            let ms: u64 = ms.parse().map_err(|_| "bad time")?;
            let start = std::time::Instant::now();
            let s = loop {
                match TcpStream::connect(addr) {
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused && start.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    other => break other.map_err(e)?,
                }
            };
            println!("hold:{addr} connected");
            std::thread::sleep(Duration::from_millis(ms));
            drop(s);
            Ok("held".into())
        }
        "park" => {
            // park:PORT:MS: accept one connection and keep it open MS ms.
            let (port, ms) = split2(rest)?;
            let ms: u64 = ms.parse().map_err(|_| "bad time")?;
            let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>().map_err(|e| e.to_string())?)).map_err(e)?;
            println!("park:{port} listening");
            let (conn, _) = listener.accept().map_err(e)?;
            std::thread::sleep(Duration::from_millis(ms));
            drop(conn);
            Ok("parked".into())
        }
        "read" => std::fs::read_to_string(rest).map(|s| s.trim_end().to_string()).map_err(e),
        "write" => {
            let (path, text) = split2(rest)?;
            std::fs::write(path, text).map(|()| "written".into()).map_err(e)
        }
        "symlink" => {
            let (target, link) = split2(rest)?;
            symlink(target, link)
        }
        "ls" => {
            let mut names: Vec<String> = std::fs::read_dir(rest).map_err(e)?.filter_map(|d| d.ok()).map(|d| d.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            Ok(names.join(","))
        }
        "resolve" => (rest, 80).to_socket_addrs().map(|a| format!("{:?}", a.collect::<Vec<_>>())).map_err(e),
        "alloc" => {
            let mib: usize = rest.parse().map_err(|_| "bad size")?;
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve_exact(mib << 20).map_err(|e| e.to_string())?;
            v.resize(mib << 20, 1);
            Ok(format!("{} MiB", v.len() >> 20))
        }
        "spin" => {
            println!("spin started");
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "trap" => {
            println!("about to trap");
            std::process::abort()
        }
        "ready" => {
            lifecycle::ready();
            Ok("told the pod".into())
        }
        "sleep" => {
            std::thread::sleep(Duration::from_millis(rest.parse().map_err(|_| "bad ms")?));
            Ok("slept".into())
        }
        "wait-main-started" => loop {
            if let Some(lifecycle::Event::MainStarted(name)) = lifecycle::next_event(60_000) {
                return Ok(name);
            }
        },
        "wait-stopping" => loop {
            if let Some(lifecycle::Event::Stopping(ms)) = lifecycle::next_event(60_000) {
                return Ok(format!("stopping with {ms} ms left"));
            }
        },
        "exit" => std::process::exit(rest.parse().map_err(|_| "bad code")?),
        "env" => std::env::var(rest).map_err(|e| e.to_string()),
        _ => Err(format!("unknown action; {USAGE}")),
    }
}

fn send(addr: &str, text: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
}

/// Creates `link` (an absolute path inside one of the preopened volumes) pointing at `target`,
/// through the raw `wasi:filesystem` call, as any guest could.
fn symlink(target: &str, link: &str) -> Result<String, String> {
    for (dir, mount) in wasi::filesystem::preopens::get_directories() {
        if let Some(rel) = link.strip_prefix(&format!("{}/", mount.trim_end_matches('/'))) {
            return dir.symlink_at(target, rel).map(|()| "created".to_string()).map_err(|e| format!("{e:?}"));
        }
    }
    Err(format!("{link} is not inside a preopened directory"))
}
