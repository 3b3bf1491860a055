//! Live statistics of a process, read from its /proc entries.

use std::io;

use super::bindings::main_process::ProcessStats as Stats;

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Reads `/proc/PID/{stat,status,io,fd}`.
pub fn read(pid: i32) -> io::Result<Stats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is f[N - 3].
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = clock_ticks();
    let status = Status::read(&pid.to_string())?;
    let kb = |key: &str| status.number(key).unwrap_or(0) * 1024;
    let io_text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let io_field = |key: &str| {
        io_text
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    // The descriptors (and the io counters above) need ptrace's access to the process, which
    // wpod in a pod has and a runner container watching another container's process has not:
    // then they read 0, and the rest (readable by any process of the namespace) stays true.
    let open_fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds.count() as u32,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => 0,
        Err(e) => return Err(e),
    };
    let uptime_host = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let started = field(22) as f64 / ticks as f64;
    Ok(Stats {
        cpu_user_us: field(14) * 1_000_000 / ticks,
        cpu_system_us: field(15) * 1_000_000 / ticks,
        rss_bytes: kb("VmRSS:"),
        vm_bytes: kb("VmSize:"),
        threads: field(20) as u32,
        open_fds,
        read_bytes: io_field("read_bytes:"),
        write_bytes: io_field("write_bytes:"),
        uptime_seconds: (uptime_host - started).max(0.0) as u64,
    })
}

/// A process's parent and start time, from `/proc/PID/stat`: what names one process (a PID
/// alone may be reused).
#[derive(Debug, PartialEq)]
pub struct Stat {
    pub ppid: i32,
    /// Start time in clock ticks after boot (field 22): with the PID, names one process.
    pub start: u64,
}

impl Stat {
    pub fn parse(text: &str) -> Option<Stat> {
        // The command name (field 2) is in parentheses and may hold anything: count after it.
        let fields: Vec<&str> = text
            .get(text.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        // `fields[0]` is field 3 (state): field N is fields[N - 3].
        Some(Stat {
            ppid: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    pub fn of(pid: i32) -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }
}

/// `/proc/PID/status` of one process (`self` for wpod): the one reader of that file.
pub struct Status(String);

impl Status {
    pub fn read(pid: &str) -> std::io::Result<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/status")).map(Status)
    }

    /// The fields of line `key` (`"NSpid:"`), split on whitespace.
    pub fn fields<'a>(&'a self, key: &str) -> Option<impl Iterator<Item = &'a str>> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::split_whitespace)
    }

    /// The first number of line `key` (`"VmRSS:"` gives kB).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.fields(key)?.next()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let s = super::read(std::process::id() as i32).unwrap();
        assert!(s.rss_bytes > 0 && s.threads >= 1 && s.open_fds >= 3);
    }
}
