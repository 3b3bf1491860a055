//! The hostile sidecar with `main-process` attacks (imports that interface).

use probe::{main_process, split2};

fn main() {
    probe::main_with(|verb, rest| {
        hostile::attack(verb, rest).or_else(|| match verb {
            "logs-open" => Some(logs_open(rest)),
            "logs-churn" => Some(logs_churn(rest)),
            "logs-hoard" => Some(logs_hoard(rest)),
            _ => None,
        })
    });
}

/// Opens N streams of a container's whole history and keeps them.
fn logs_open(rest: &str) -> Result<String, String> {
    let (name, n) = split2(rest)?;
    let n: usize = n.parse().map_err(|_| "bad count")?;
    let mut held = Vec::new();
    for i in 0..n {
        match main_process::logs(name, main_process::LogStart::Beginning) {
            Ok(s) => held.push(s),
            Err(e) => return Err(format!("stopped after {i} streams: {e:?}")),
        }
    }
    Ok(format!("holding {} streams", held.len()))
}

/// Opens and drops a stream of the whole history N times, reading one line of each.
fn logs_churn(rest: &str) -> Result<String, String> {
    let (name, n) = split2(rest)?;
    let n: usize = n.parse().map_err(|_| "bad count")?;
    for _ in 0..n {
        let s = main_process::logs(name, main_process::LogStart::Beginning).map_err(|e| format!("{e:?}"))?;
        let _ = s.try_next(1);
    }
    Ok(format!("opened {n} streams"))
}

/// Holds a stream open for SECONDS asking for no lines at all (`next(0)`, `try-next(0)`), while
/// the container writes: lines it never takes must not pile up in wpod.
fn logs_hoard(rest: &str) -> Result<String, String> {
    let (name, secs) = split2(rest)?;
    let secs: u64 = secs.parse().map_err(|_| "bad seconds")?;
    let s = main_process::logs(name, main_process::LogStart::Now).map_err(|e| format!("{e:?}"))?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut calls = 0u64;
    while std::time::Instant::now() < end {
        let _ = s.try_next(0);
        let _ = s.next(0);
        calls += 2;
    }
    Ok(format!("{calls} calls taking nothing"))
}
