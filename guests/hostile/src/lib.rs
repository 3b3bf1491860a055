//! Hostile sidecars for the red-team suite (`tests/e2e/redteam.rs`): each argument is an attack
//! (`sockets:100000`, `line:64`, …), run in order, with what happened printed as
//! `ACTION ok: …` / `ACTION err: …` (and progress lines) so a test can check that wpod held.
//! The probe's actions (`connect:…`, `sleep:…`, `ready`, …) work too. `hostile` uses WASI only;
//! `hostile-main` adds attacks through `main-process` (a pod grants it with
//! `shareProcessNamespace: true`).

use std::io::Write;

pub const USAGE: &str = "attacks: sockets:N files:PATH:N line:MIB flood:MIB fill:PATH transfers:PORT:N; \
     hostile-main adds logs-open:NAME:N logs-churn:NAME:N logs-hoard:NAME:SECONDS";

/// The attacks every hostile guest knows; `None` when `verb` is not one of them.
pub fn attack(verb: &str, rest: &str) -> Option<Result<String, String>> {
    let result = match verb {
        "sockets" => sockets(rest),
        "files" => files(rest),
        "line" => line(rest),
        "flood" => flood(rest),
        "fill" => fill(rest),
        "transfers" => transfers(rest),
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

/// Starts host transfers (`wpod:sidecar/relay`) that never end until the host refuses one:
/// `N` connections to itself on `PORT` (a port it declares), each client's input relayed to
/// its server side's output, and nothing ever sent. Then it drops one and starts another, to
/// show the slot came back.
fn transfers(rest: &str) -> Result<String, String> {
    use wasi::sockets::instance_network::instance_network;
    use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    use wasi::sockets::tcp::TcpSocket;
    use wasi::sockets::tcp_create_socket::create_tcp_socket;
    let (port, n) = probe::split2(rest)?;
    let port: u16 = port.parse().map_err(|_| format!("{port} is not a port"))?;
    let n = count(n)?;
    fn e<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
        move |e| format!("{what}: {e:?}")
    }
    let network = instance_network();
    let address = |port| IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (127, 0, 0, 1) });
    let listener = create_tcp_socket(IpAddressFamily::Ipv4).map_err(e("socket"))?;
    listener.start_bind(&network, address(port)).map_err(e("bind"))?;
    listener.finish_bind().map_err(e("bind"))?;
    listener.start_listen().map_err(e("listen"))?;
    listener.finish_listen().map_err(e("listen"))?;
    // Everything the transfers use stays open: sockets, and the streams the host did not take.
    let mut held: Vec<TcpSocket> = Vec::new();
    let mut unused = Vec::new();
    let mut transfers = Vec::new();
    let mut connection = || -> Result<_, String> {
        let client = create_tcp_socket(IpAddressFamily::Ipv4).map_err(e("socket"))?;
        client.start_connect(&network, address(port)).map_err(e("connect"))?;
        client.subscribe().block();
        let (from, client_out) = client.finish_connect().map_err(e("connect"))?;
        listener.subscribe().block();
        let (server, server_in, to) = listener.accept().map_err(e("accept"))?;
        held.push(client);
        held.push(server);
        unused.push((client_out, server_in));
        Ok((from, to))
    };
    for i in 0..n {
        let (from, to) = connection()?;
        match wpod_sidecar::relay::start(from, to) {
            Ok(t) => transfers.push(t),
            Err(refused) => {
                println!("transfers: refused after {i}: {refused}");
                transfers.pop();
                let (from, to) = connection()?;
                return match wpod_sidecar::relay::start(from, to) {
                    Ok(_) => Err(format!("stopped after {i} transfers; one dropped, one more started")),
                    Err(e) => Err(format!("stopped after {i} transfers; one dropped, still refused: {e}")),
                };
            }
        }
    }
    Ok(format!("holding {n} transfers"))
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
