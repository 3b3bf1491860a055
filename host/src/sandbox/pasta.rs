//! A rootless pod's network (`plan::Network::Pasta`): pasta (Debian's `passt`, podman's
//! rootless default) joins the pod's network namespace to the host's network without privilege.
//! It copies the host's address and routes into the namespace, and makes the pod's connections
//! from its own sockets, in the user's name; the gateway's address reaches the host's loopback.
//! hostPorts are forwarded by wpod (`ports`), as for a pod off the network.
//!
//! pasta runs in the foreground, a child of a thread of wpod's that waits for it, with
//! `PR_SET_PDEATHSIG`: it ends with the pod, or with wpod however wpod ends. It is told the
//! namespace through a bind mount in the pod's state directory (it drops its capabilities
//! before it opens it, so `/proc/PID/ns/net` of the pod's holder is closed to it), and it writes
//! its PID file once the namespace's interface is configured: the pod waits for that file.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

/// How long pasta may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of pasta's error output kept for a message.
const MAX_MESSAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PastaError {
    #[error(
        "pasta is not installed (looked in /usr/bin, /bin, /usr/sbin, /sbin, /usr/local/bin): a \
         rootless pod's network needs it; install Debian's package passt (apt install passt), or keep the pod \
         off the network (metadata.annotations[wpod.dev/network]: none)"
    )]
    NotInstalled,
    #[error("{step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} {}: {source}", path.display())]
    Sys {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("pasta ({}) failed: {message}{}", command, hint(message))]
    Failed { command: String, message: String },
}

/// What to do about the failures pasta reports in words that do not say it.
fn hint(message: &str) -> &'static str {
    if message.contains("External interface not usable") {
        "; pasta copies the host's address and routes, and this host has no interface with a \
         default route: give it one, or keep the pod off the network \
         (metadata.annotations[wpod.dev/network]: none)"
    } else if message.contains("tun socket") || message.contains("/dev/net/tun") {
        "; pasta opens /dev/net/tun as this user: it must be usable by every user (crw-rw-rw-, \
         as Debian's udev makes it): chmod 0666 /dev/net/tun"
    } else {
        ""
    }
}

/// The pod's pasta, stopped (and the namespace's bind mount removed) when dropped.
pub struct Pasta {
    pidfd: Option<OwnedFd>,
    waiter: Option<std::thread::JoinHandle<()>>,
    pin: PathBuf,
}

impl Pasta {
    /// Starts pasta on the network namespace at `netns` (the holder's) and waits until the
    /// namespace is configured. `dir`: the pod's state directory, for the bind mount and
    /// pasta's PID file and error output.
    pub fn attach(netns: &Path, dir: &Path) -> Result<Self, PastaError> {
        let program = super::rootless::installed("pasta").ok_or(PastaError::NotInstalled)?;
        let io = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source| PastaError::Io { step, path, source }
        };
        let pin = dir.join("pasta-netns");
        let pid_file = dir.join("pasta.pid");
        let err_file = dir.join("pasta.err");
        for stale in [&pid_file, &err_file] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", stale)(e))
                }
                _ => {}
            }
        }
        std::fs::File::create(&pin).map_err(io("create", &pin))?;
        nix::mount::mount(
            Some(netns),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| PastaError::Sys {
            step: "bind-mount the pod's network namespace on",
            path: pin.clone(),
            source,
        })?;
        // From here on, dropping `pasta` unmounts the pin.
        let mut pasta = Pasta {
            pidfd: None,
            waiter: None,
            pin,
        };
        let errors = std::fs::File::create(&err_file).map_err(io("create", &err_file))?;
        let mut command = Command::new(&program);
        command
            .args(["--config-net", "--quiet", "--foreground", "--netns-only"])
            .arg("--netns")
            .arg(&pasta.pin)
            .arg("--pid")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors);
        // SAFETY: prctl is async-signal-safe; it only sets the child's death signal.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = format!("{} --netns {}", program.display(), pasta.pin.display());
        // The thread that starts pasta waits for it: the death signal follows the thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("pasta".into())
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    // Opened before the child can be reaped: the descriptor names pasta even
                    // once its PID is free again.
                    let _ = tx.send(pidfd_open(child.id() as i32));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(io("start a thread for", &program))?;
        pasta.waiter = Some(waiter);
        pasta.pidfd = rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("its thread ended")))
            .map(Some)
            .map_err(io("run", &program))?;
        let start = Instant::now();
        loop {
            if std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
                tracing::debug!("pasta configured the pod's network");
                return Ok(pasta);
            }
            let ended = pasta.waiter.as_ref().is_some_and(|w| w.is_finished());
            if ended || start.elapsed() > READY_TIMEOUT {
                let mut message = read_errors(&err_file);
                if !ended {
                    message = format!(
                        "not ready after {}s{}",
                        READY_TIMEOUT.as_secs(),
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(": {message}")
                        }
                    );
                } else if message.is_empty() {
                    message = "it ended without saying why".into();
                }
                return Err(PastaError::Failed {
                    command: shown,
                    message,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The pod's address as pasta configured it (the first IPv4 address of the namespace that is not
/// a loopback one), read from a thread that joins the namespace (`netns`: a descriptor of it).
pub fn address(netns: &OwnedFd) -> Option<std::net::IpAddr> {
    let fd = netns.try_clone().ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback()).then_some(std::net::IpAddr::V4(ip))
        })
    })
    .join()
    .ok()
    .flatten()
}

/// A descriptor of process `pid` (`pidfd_open`).
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    match fd {
        -1 => Err(std::io::Error::last_os_error()),
        // SAFETY: the descriptor is new and ours alone.
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
    }
}

/// pasta's error output, without its notes that syslog is absent.
fn read_errors(file: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(file) {
        let _ = f.take(MAX_MESSAGE).read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Drop for Pasta {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.pidfd {
            // SAFETY: a signal to the process the descriptor names (none if it has ended);
            // pasta keeps nothing that a SIGKILL would lose.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
        // pasta held the namespace open through the pin: detach it, then remove it.
        if let Err(e) = nix::mount::umount2(&self.pin, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmount {}: {e}", self.pin.display());
        }
        let _ = std::fs::remove_file(&self.pin);
    }
}
