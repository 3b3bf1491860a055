//! The hostile sidecar with `main-process` attacks (imports that interface).

use probe::{main_process, split2};

fn main() {
    probe::main_with(|verb, rest| {
        hostile::attack(verb, rest).or_else(|| match verb {
            "logs-open" => Some(logs_open(rest)),
            "logs-churn" => Some(logs_churn(rest)),
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
