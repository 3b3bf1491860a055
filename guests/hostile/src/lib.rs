//! Hostile sidecars for the red-team suite (`tests/e2e/redteam.rs`): each argument is an attack
//! (`sockets:100000`, `line:64`, …), run in order, with what happened printed as
//! `ACTION ok: …` / `ACTION err: …` (and progress lines) so a test can check that wpod held.
//! The probe's actions (`connect:…`, `sleep:…`, `ready`, …) work too. `hostile` uses WASI only;
//! `hostile-main` adds attacks through `main-process` (a pod grants it with
//! `shareProcessNamespace: true`).

use std::io::Write;

pub const USAGE: &str = "attacks: sockets:N files:PATH:N line:MIB flood:MIB fill:PATH; \
     hostile-main adds logs-open:NAME:N logs-churn:NAME:N logs-hoard:NAME:SECONDS";

/// The attacks every hostile guest knows; `None` when `verb` is not one of them.
pub fn attack(verb: &str, rest: &str) -> Option<Result<String, String>> {
    let result = match verb {
        "sockets" => sockets(rest),
        "files" => files(rest),
        "line" => line(rest),
        "flood" => flood(rest),
        "fill" => fill(rest),
        _ => return None,
    };
    Some(result)
}

fn count(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("{s} is not a count"))
}

/// Takes as many TCP sockets as it may (each is a descriptor of the wpod process) and never
/// gives them back, whatever it does next.
fn sockets(rest: &str) -> Result<String, String> {
    use wasi::sockets::network::IpAddressFamily;
    use wasi::sockets::tcp_create_socket::create_tcp_socket;
    let n = count(rest)?;
    for i in 0..n {
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Ok(s) => std::mem::forget(s),
            Err(e) => return Err(format!("stopped after {i} sockets: {e:?}")),
        }
        if (i + 1) % 256 == 0 {
            println!("holding {} sockets", i + 1);
        }
    }
    Ok(format!("holding {n} sockets"))
}

/// Opens the same file `N` times and keeps every handle.
fn files(rest: &str) -> Result<String, String> {
    let (path, n) = probe::split2(rest)?;
    let n = count(n)?;
    let mut held = Vec::new();
    for i in 0..n {
        match std::fs::File::open(path) {
            Ok(f) => held.push(f),
            Err(e) => return Err(format!("stopped after {i} files: {e}")),
        }
    }
    Ok(format!("holding {} files", held.len()))
}

/// One line of MIB mebibytes, written in 64 KiB pieces, without a newline until the end.
fn line(rest: &str) -> Result<String, String> {
    let mib = count(rest)?;
    let chunk = vec![b'x'; 64 << 10];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        out.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    out.write_all(b"\n").map_err(|e| e.to_string())?;
    Ok(format!("wrote a line of {mib} MiB"))
}

/// MIB mebibytes of short lines, as fast as it can.
fn flood(rest: &str) -> Result<String, String> {
    let mib = count(rest)?;
    let line = format!("{}\n", "flood ".repeat(16));
    let lines = (mib << 20) / line.len();
    let start = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    for _ in 0..lines {
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(format!("flooded {mib} MiB in {} ms", start.elapsed().as_millis()))
}

/// Writes 1 MiB pieces to PATH until the volume refuses.
fn fill(rest: &str) -> Result<String, String> {
    let mut f = std::fs::File::create(rest).map_err(|e| e.to_string())?;
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => return Ok(format!("wrote {} MiB, then: {e}", written >> 20)),
        }
        if written >= 512 << 20 {
            break;
        }
    }
    Ok(format!("wrote {} MiB without being stopped", written >> 20))
}
