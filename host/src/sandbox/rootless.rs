//! Rootless wpod: an ordinary user's `wpod` moves itself into a user namespace of its own before
//! it does anything privileged, as podman's rootless mode does. In it the user is root: wpod
//! makes its pods' namespaces, mounts their overlays and chowns pulled layers exactly as it does
//! as root, and the kernel allows all of it only over what that namespace owns.
//!
//! The namespace maps ID 0 to the user's own UID and GID, and IDs 1-65536 to the user's first
//! subordinate range of at least that size (`/etc/subuid`, `/etc/subgid`; `useradd` gives every
//! user one). Only the setuid tools `newuidmap` and `newgidmap` (Debian's `uidmap`) may write
//! such maps, and only from outside the namespace: so the process forks a helper first, moves
//! itself into the new namespace, and the helper maps it. The process keeps its PID, its terminal
//! and its signals; nothing stays behind to wait for it.
//!
//! It then takes a mount namespace of its own, so that what it mounts for its pods is seen by
//! them alone (and goes when they do).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Uid};

use crate::files::ROOTLESS_ENV;

/// IDs mapped besides the user's own: 1-65536, so that every ID a Kubernetes pod uses
/// (0-65535, and the pause user 65535 wpod's holder runs as) exists in the namespace.
pub const SUBORDINATE_IDS: u32 = 65536;

/// Where the programs a rootless wpod runs (the map tools, pasta) are looked for: never
/// `$PATH`, as the map tools run setuid for this user.
const SYSTEM_DIRS: [&str; 5] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];

/// The program `name` in [`SYSTEM_DIRS`], if installed.
pub fn installed(name: &str) -> Option<PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(
        "{}: no range of {SUBORDINATE_IDS} or more subordinate IDs for user {user} (uid \
         {uid}): a rootless wpod maps its pods' IDs 1-{SUBORDINATE_IDS} to one; as root, add \
         one (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}), or run \
         wpod as root",
        file.display()
    )]
    NoRange {
        file: PathBuf,
        user: String,
        uid: u32,
    },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{tool} is not installed (looked in /usr/bin, /bin, /usr/sbin, /sbin, /usr/local/bin): a \
         rootless wpod \
         maps its user namespace with it; install Debian's package uidmap (apt install uidmap), \
         or run wpod as root"
    )]
    NoTool { tool: &'static str },
    #[error("{tool} {args}: {message}")]
    Map {
        tool: &'static str,
        args: String,
        message: String,
    },
    #[error(
        "{call}: {source}{}",
        if *source == nix::Error::EPERM || *source == nix::Error::ENOSPC {
            " (does this kernel allow user namespaces to ordinary users? see \
             /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone)"
        } else {
            ""
        }
    )]
    Sys {
        call: &'static str,
        #[source]
        source: nix::Error,
    },
}

fn sys(call: &'static str) -> impl FnOnce(nix::Error) -> RootlessError {
    move |source| RootlessError::Sys { call, source }
}

/// A range of subordinate IDs: host IDs `first..first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: u32,
    pub count: u32,
}

/// The user's first range in `text` (`/etc/subuid` format: `name-or-id:first:count` per line)
/// of at least [`SUBORDINATE_IDS`] IDs.
pub fn find_range(text: &str, user: &str, id: u32) -> Option<Range> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
        if owner != user && owner.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let range = Range {
            first: first.parse().ok()?,
            count: count.parse().ok()?,
        };
        (range.count >= SUBORDINATE_IDS).then_some(range)
    })
}

fn read_range(file: &Path, user: &str, id: u32) -> Result<Range, RootlessError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(RootlessError::Read {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    find_range(&text, user, id).ok_or_else(|| RootlessError::NoRange {
        file: file.to_path_buf(),
        user: user.to_string(),
        uid: id,
    })
}

fn tool(name: &'static str) -> Result<PathBuf, RootlessError> {
    installed(name).ok_or(RootlessError::NoTool { tool: name })
}

/// The map a tool writes for process `pid`: `0 -> own`, `1.. -> range`.
fn map_args(pid: i32, own: u32, range: Range) -> Vec<String> {
    [pid as u32, 0, own, 1, 1, range.first, SUBORDINATE_IDS]
        .iter()
        .map(u32::to_string)
        .collect()
}

/// Whether this process is an ordinary user's wpod that has not entered its namespace yet.
pub fn needed() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// Moves this process into a user namespace of its own (and a mount namespace), as described
/// above; afterwards it is root there and [`crate::files::rootless_uid`] says whose wpod it is.
/// Must be called while the process has one thread: the kernel refuses a new user namespace to
/// a threaded process.
pub fn enter() -> Result<(), RootlessError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let uids = read_range(Path::new("/etc/subuid"), &user, uid.as_raw())?;
    let gids = read_range(Path::new("/etc/subgid"), &user, uid.as_raw())?;
    let newuidmap = tool("newuidmap")?;
    let newgidmap = tool("newgidmap")?;
    // The state root is the user's (worked out now, while HOME and the UID are the user's):
    // everything started inside is told it.
    let root = crate::files::state_root();
    let me = nix::unistd::getpid().as_raw();
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    let (done_r, done_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    // SAFETY: the process has one thread (the caller's promise), so the child may allocate and
    // spawn as any process does; it leaves through `_exit`, never returning into main.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(go_w);
            drop(done_r);
            let mut go = [0u8; 1];
            let mut from_parent = std::fs::File::from(go_r);
            let answer = match from_parent.read(&mut go) {
                // The parent is in its namespace: map it.
                Ok(1) => map(&newuidmap, "newuidmap", me, uid.as_raw(), uids)
                    .and_then(|()| map(&newgidmap, "newgidmap", me, gid.as_raw(), gids))
                    .err()
                    .unwrap_or_else(|| MAPPED.to_string()),
                _ => "the process to map went away".to_string(),
            };
            let _ = std::fs::File::from(done_w).write_all(answer.as_bytes());
            // SAFETY: ends the forked helper without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(done_w);
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(sys(
                "unshare(CLONE_NEWUSER) (a user namespace for rootless wpod)",
            ));
            if unshared.is_ok() {
                let _ = std::fs::File::from(go_w).write_all(b"1");
            } else {
                drop(go_w);
            }
            let mut answer = String::new();
            let _ = std::fs::File::from(done_r).read_to_string(&mut answer);
            let _ = nix::sys::wait::waitpid(child, None);
            unshared?;
            if answer != MAPPED {
                return Err(answer_error(&answer));
            }
        }
    }
    // Root of the namespace now (the user's UID maps to 0): take it for real and for the
    // files this process makes.
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(sys("setresgid(0)"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(sys("setresuid(0)"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    // Nothing mounted for the pods propagates back to the user's own mount namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("mount / MS_REC|MS_SLAVE"))?;
    // SAFETY: the process still has one thread.
    std::env::set_var("WPOD_ROOT", &root);
    std::env::set_var(ROOTLESS_ENV, uid.as_raw().to_string());
    Ok(())
}

/// Set by the user to `0` (or `false`, `no`), it keeps wpod from asking systemd for a scope.
pub const SCOPE_ENV: &str = "WPOD_SYSTEMD_SCOPE";

/// How long the user's systemd has to answer, and then to move wpod into the scope.
const SCOPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An ordinary user's `wpod run`, when the user's systemd manager answers on the user's D-Bus
/// and the process's cgroup is not the user's: asks the manager for a transient scope with
/// `Delegate=yes` holding this process (`StartTransientUnit`, through `busctl`, as podman's
/// rootless pods ask through D-Bus), and waits until it is in it. The scope's cgroup is then
/// the user's, and the pod's cgroups and limits go under it. Returns what to warn of when the
/// manager was asked and it did not work (the pod then runs without limits); `None` when wpod is
/// in the scope, or did not ask.
pub fn enter_systemd_scope() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let pid = std::process::id();
    let opted_out = std::env::var(SCOPE_ENV)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"));
    let args = systemd_scope_call(
        opted_out,
        bus,
        installed("busctl"),
        unified_hierarchy(),
        &cgroup,
        &super::cgroups::Ownership::real(),
        pid,
    )?;
    // One bound for the call and the move, however systemd answers.
    let deadline = std::time::Instant::now() + SCOPE_TIMEOUT;
    let asked = Command::new(&args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .output();
    let failed = |why: String| {
        Some(format!(
            "cannot get a delegated scope from the user's systemd ({why}): no cgroup is this \
             user's (WPOD_SYSTEMD_SCOPE=0 keeps wpod from asking)"
        ))
    };
    let job = match asked {
        // `o "/org/freedesktop/systemd1/job/N"`: the job that makes the scope.
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split('"')
            .nth(1)
            .map(str::to_string),
        Ok(out) => {
            return failed(format!(
                "busctl: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(e) => return failed(format!("busctl: {e}")),
    };
    // The manager moves the process when it runs the job: wait for that, or for the job to
    // end without it (systemd could not move it: the job is gone, wpod is where it was).
    // (In any hierarchy systemd keeps units in: the unified one, or on a v1 host its own.)
    let scope = format!("/wpod-{pid}.scope");
    let in_scope = || {
        std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .any(|l| l.ends_with(&scope))
    };
    let mut job_checked = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        if in_scope() {
            return None;
        }
        if let Some(job) = job.as_deref() {
            if job_checked.elapsed() > std::time::Duration::from_millis(50) {
                job_checked = std::time::Instant::now();
                if !job_pending(&args[0], job) && !in_scope() {
                    return failed(format!(
                        "systemd's job ended without moving wpod into wpod-{pid}.scope; \
                         journalctl --user -u wpod-{pid}.scope may say why"
                    ));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    failed(format!(
        "wpod was not moved into wpod-{pid}.scope within {SCOPE_TIMEOUT:?}"
    ))
}

/// Whether the user's systemd still has the job `job` (an object path) to run: a job's
/// object goes when the job ends.
fn job_pending(busctl: &std::ffi::OsStr, job: &str) -> bool {
    Command::new(busctl)
        .args([
            "--user",
            "--timeout=1",
            "get-property",
            "org.freedesktop.systemd1",
            job,
        ])
        .args(["org.freedesktop.systemd1.Job", "State"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `busctl` call that asks the user's systemd manager for a scope `wpod-PID.scope` with
/// `Delegate=yes` holding process `pid` (collected even when it fails), or `None` when wpod
/// should not ask: `opted_out` (the user said not to), no user `bus`, no `busctl`, or the
/// process's cgroup in the `unified` hierarchy (`own_cgroup`: its `/proc/self/cgroup`) is
/// delegated to the user already ([`super::cgroups::delegated_v2`]).
fn systemd_scope_call(
    opted_out: bool,
    bus: bool,
    busctl: Option<PathBuf>,
    unified: Option<&Path>,
    own_cgroup: &str,
    ownership: &super::cgroups::Ownership,
    pid: u32,
) -> Option<Vec<std::ffi::OsString>> {
    if opted_out || !bus {
        return None;
    }
    let busctl = busctl?;
    let own = own_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/'));
    if let (Some(unified), Some(own)) = (unified, own) {
        if super::cgroups::delegated_v2(&unified.join(own), ownership) {
            return None;
        }
    }
    let mut args: Vec<std::ffi::OsString> = vec![busctl.into()];
    args.extend(
        [
            "--user",
            &format!("--timeout={}", SCOPE_TIMEOUT.as_secs()),
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            &format!("wpod-{pid}.scope"),
            "fail",
            "4",
            "PIDs",
            "au",
            "1",
            &pid.to_string(),
            "Delegate",
            "b",
            "true",
            "Description",
            "s",
            "wpod run",
            "CollectMode",
            "s",
            "inactive-or-failed",
            "0",
        ]
        .map(std::ffi::OsString::from),
    );
    Some(args)
}

/// Where the unified cgroup hierarchy is mounted, in which systemd keeps its units (on a hybrid
/// host, beside the v1 controllers).
fn unified_hierarchy() -> Option<&'static Path> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|m| m.join("cgroup.procs").exists() && m.join("cgroup.subtree_control").exists())
}

/// The helper's answer when both maps are written.
const MAPPED: &str = "mapped";

/// Runs one map tool for `pid`; the error is the tool's own words.
fn map(tool: &Path, name: &'static str, pid: i32, own: u32, range: Range) -> Result<(), String> {
    let args = map_args(pid, own, range);
    let out = Command::new(tool)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{name}\n{}\n{e}", args.join(" ")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{name}\n{}\n{} ({})",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )),
    }
}

/// The helper's answer (`tool\nargs\nmessage`) as an error.
fn answer_error(answer: &str) -> RootlessError {
    if answer.is_empty() {
        return RootlessError::Map {
            tool: "newuidmap",
            args: String::new(),
            message: "the helper that runs it ended without an answer".into(),
        };
    }
    let mut parts = answer.splitn(3, '\n');
    let tool = match parts.next() {
        Some("newgidmap") => "newgidmap",
        _ => "newuidmap",
    };
    RootlessError::Map {
        tool,
        args: parts.next().unwrap_or_default().to_string(),
        message: parts.next().unwrap_or(answer).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_users_first_range_big_enough() {
        let text = "alice:100000:65536\nbob:165536:1000\nbob:200000:65536\n1003:300000:70000\n";
        let range = |user, id| find_range(text, user, id);
        assert_eq!(
            range("alice", 1001),
            Some(Range {
                first: 100000,
                count: 65536
            })
        );
        // bob's first range is too small for a pod's IDs: his second one is taken.
        assert_eq!(range("bob", 1002).map(|r| r.first), Some(200000));
        // By UID as well as by name.
        assert_eq!(range("carol", 1003).map(|r| r.first), Some(300000));
        assert_eq!(range("dave", 1004), None);
        assert_eq!(find_range("alice:x:65536\nalice:1", "alice", 1), None);
    }

    #[test]
    fn maps_root_to_the_user_and_the_rest_to_the_range() {
        let args = map_args(
            42,
            1001,
            Range {
                first: 100000,
                count: 70000,
            },
        );
        assert_eq!(args, ["42", "0", "1001", "1", "1", "100000", "65536"]);
    }

    /// A user's `wpod run` asks the user's systemd for a delegated scope only when it can
    /// (a user bus, busctl), unless told not to, and when its cgroup is not the user's already.
    #[test]
    fn asks_systemd_for_a_scope_only_when_it_helps() {
        let busctl = Some(PathBuf::from("/usr/bin/busctl"));
        let unified = Some(Path::new("/sys/fs/cgroup/unified"));
        let own = "1:memory:/x\n0::/user.slice/session-2.scope\n";
        let nothing_is_mine = |_: &Path| false;
        let ask = |opted_out, bus, busctl: &Option<PathBuf>, writable: &dyn Fn(&Path) -> bool| {
            let ownership = super::super::cgroups::Ownership {
                writable,
                marked: &|p: &Path| p.ends_with("session-2.scope"),
            };
            systemd_scope_call(opted_out, bus, busctl.clone(), unified, own, &ownership, 42)
        };
        assert_eq!(
            ask(true, true, &busctl, &nothing_is_mine),
            None,
            "opted out"
        );
        assert_eq!(ask(false, false, &busctl, &nothing_is_mine), None, "no bus");
        assert_eq!(ask(false, true, &None, &nothing_is_mine), None, "no busctl");
        let session = Path::new("/sys/fs/cgroup/unified/user.slice/session-2.scope");
        assert_eq!(
            ask(false, true, &busctl, &|p: &Path| p.starts_with(session)),
            None,
            "in a cgroup delegated to the user already (systemd marked it)"
        );
        let args = ask(false, true, &busctl, &nothing_is_mine).expect("a scope to ask for");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "/usr/bin/busctl --user --timeout=5 call org.freedesktop.systemd1 \
             /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager StartTransientUnit \
             ssa(sv)a(sa(sv)) wpod-42.scope fail 4 PIDs au 1 42 Delegate b true Description s \
             wpod run CollectMode s inactive-or-failed 0"
        );
    }
}
