//! The capability probe with `main-process` actions (imports that interface).

use probe::{main_process, split2};

fn main() {
    probe::main_with(main_process_action);
}

fn main_process_action(verb: &str, rest: &str) -> Option<Result<String, String>> {
    match verb {
        "procs" | "stats" | "logs" | "signal" => Some(run(verb, rest)),
        _ => None,
    }
}

fn run(verb: &str, rest: &str) -> Result<String, String> {
    match verb {
        "procs" => Ok(main_process::containers().iter().map(|c| format!("{}={:?}/{}", c.name, c.state, c.pid)).collect::<Vec<_>>().join(",")),
        "stats" => main_process::stats(rest)
            .map(|s| format!("rss={} threads={} fds={} cpu_us={} vm={}", s.rss_bytes, s.threads, s.open_fds, s.cpu_user_us + s.cpu_system_us, s.vm_bytes))
            .map_err(|e| format!("{e:?}")),
        "logs" => {
            let (name, n) = split2(rest)?;
            let want: usize = n.parse().map_err(|_| "bad count")?;
            let stream = main_process::logs(name, main_process::LogStart::Beginning).map_err(|e| format!("{e:?}"))?;
            let mut got = Vec::new();
            while got.len() < want {
                let batch = stream.next(16);
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|l| l.text));
            }
            Ok(got.join("|"))
        }
        "signal" => {
            let (name, sig) = split2(rest)?;
            main_process::signal(name, sig.parse().map_err(|_| "bad signal")?).map(|()| "sent".into()).map_err(|e| format!("{e:?}"))
        }
        _ => unreachable!("filtered above"),
    }
}
