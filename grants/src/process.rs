//! Main-process grant: with `shareProcessNamespace: true` a sidecar may read the pod's main
//! containers (state, live stats from /proc, their stdout/stderr); with
//! `securityContext.capabilities.add: [KILL]` as well it may signal them, and only them.

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::broadcast;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::main_process::{
    self, Error, Info, LogLine, LogStart, ProcessStats as Stats, State, StreamKind,
};
use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::logs::{self, Logs};
use crate::spec::{Capability as LinuxCapability, Diagnostic};
use crate::status::{MainState, MainStatus, PodState};

pub struct MainProcess;

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessGrant {
    pub read: bool,
    pub signal: bool,
    /// Whether the main containers' output can be given: a wpod pod holds it; a runner
    /// container on Kubernetes does not (the kubelet keeps it), so its plan turns this off.
    pub output: bool,
}

impl Capability for MainProcess {
    type Grant = ProcessGrant;
    type State = ProcessCtx;

    const IMPORTS: &'static [Import] = &[Import {
        interface: "wpod:sidecar/main-process",
        rule: ImportRule::Requires {
            field: "spec.shareProcessNamespace: true",
            what: "the main containers' state, stats and output; signals also need securityContext.capabilities.add: [KILL]",
        },
    }];

    fn resolve(sidecar: &Sidecar<'_>, _diags: &mut Vec<Diagnostic>) -> ProcessGrant {
        let read = sidecar.pod.spec.share_process_namespace;
        let kill_cap = sidecar
            .container
            .security_context
            .as_ref()
            .is_some_and(|sc| sc.capabilities.add.contains(&LinuxCapability::KILL));
        ProcessGrant {
            read,
            signal: read && kill_cap,
            output: read,
        }
    }

    fn grants_required(grant: &ProcessGrant) -> bool {
        grant.read
    }

    fn add_to_linker<T: GrantHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: GrantHost>(t: &mut T) -> ProcessView<'_> {
            let (states, table) = t.grant_states();
            ProcessView {
                ctx: &mut states.process,
                table,
            }
        }
        main_process::add_to_linker::<T, HasProcess>(linker, view)?;
        super::bindings::v0_1::main_process::add_to_linker::<T, HasProcess>(linker, view)
    }

    fn prepare(
        grant: &ProcessGrant,
        setup: &mut InstanceSetup<'_>,
    ) -> Result<ProcessCtx, GrantError> {
        Ok(ProcessCtx {
            grant: *grant,
            pod: setup.status.clone(),
            logs: setup.logs.clone(),
            open_streams: 0,
        })
    }
}

/// Log streams a sidecar may hold open at once: each shares the container's history (bounded
/// by `logs::HISTORY_BYTES`) rather than copying it, and this bounds the rest.
pub const MAX_LOG_STREAMS: usize = 16;

/// What the `main-process` functions reach in one instance.
pub struct ProcessCtx {
    pub grant: ProcessGrant,
    pub pod: Arc<PodState>,
    pub logs: Arc<Logs>,
    /// Log streams open now.
    pub open_streams: usize,
}

/// The `main-process` host: this capability's state and the instance's resource table.
pub struct ProcessView<'a> {
    ctx: &'a mut ProcessCtx,
    table: &'a mut ResourceTable,
}

struct HasProcess;

impl HasData for HasProcess {
    type Data<'a> = ProcessView<'a>;
}

/// An open subscription to a container's output.
pub struct LogStream {
    container: String,
    backlog: std::collections::VecDeque<Arc<logs::Line>>,
    live: broadcast::Receiver<Arc<logs::Line>>,
    pod: Arc<PodState>,
}

impl LogStream {
    /// Waits until a line is waiting in the backlog, or the container has exited (or its feed
    /// closed) with none left: what `next` blocks on and what `subscribe`'s pollable means.
    async fn wait(&mut self) {
        loop {
            if !self.backlog.is_empty() {
                return;
            }
            let exited = self
                .pod
                .main(&self.container)
                .is_none_or(|m| m.state == MainState::Exited);
            if exited {
                return;
            }
            // Wake up for a line, or now and then to notice that the container ended.
            match tokio::time::timeout(Duration::from_millis(200), self.live.recv()).await {
                Ok(Ok(line)) => self.backlog.push_back(line),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            }
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for LogStream {
    async fn ready(&mut self) {
        self.wait().await
    }
}

fn denied(what: &str) -> Error {
    Error::Denied(format!(
        "{what}: set spec.shareProcessNamespace: true to grant it"
    ))
}

fn info(m: &MainStatus) -> Info {
    Info {
        name: m.name.clone(),
        pid: pod_pid(m.pid),
        state: match m.state {
            MainState::Waiting => State::Waiting,
            MainState::Running => State::Running,
            MainState::Exited => State::Exited,
        },
        exit_code: m.exit_code,
        restarts: m.restarts,
    }
}

/// The PID as the pod's PID namespace sees it (last field of NSpid).
fn pod_pid(host_pid: i32) -> u32 {
    if host_pid <= 0 {
        return 0;
    }
    super::procstat::Status::read(&host_pid.to_string())
        .ok()
        .and_then(|s| s.fields("NSpid:")?.last()?.parse().ok())
        .unwrap_or(0)
}

impl ProcessCtx {
    fn running(&self, name: &str) -> Result<MainStatus, Error> {
        if !self.grant.read {
            return Err(denied("reading the main process"));
        }
        let m = self
            .pod
            .main(name)
            .ok_or_else(|| Error::NoSuchContainer(name.to_string()))?;
        if m.state != MainState::Running || m.pid <= 0 {
            return Err(Error::NotRunning);
        }
        Ok(m)
    }
}

/// Signals the main container's process `m`. A process wpod started is its child, and its PID
/// stays its own until wpod reaps it. A process found (a runner container's view) is no
/// one's child here: it is pinned by a pidfd and checked to be the one found (its start
/// time) before the signal goes through that pidfd, so a PID reused meanwhile is never hit.
fn send_signal(m: &MainStatus, sig: Signal) -> Result<(), Error> {
    let Some(start) = m.start else {
        return kill(Pid::from_raw(m.pid), sig).map_err(|e| Error::Io(e.desc().to_string()));
    };
    // SAFETY: pidfd_open with plain integers; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, m.pid, 0) };
    if fd < 0 {
        return Err(Error::NotRunning);
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    if super::procstat::Stat::of(m.pid).map(|s| s.start) != Some(start) {
        return Err(Error::NotRunning);
    }
    // SAFETY: pidfd_send_signal on the descriptor above, without siginfo.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match sent {
        0 => Ok(()),
        _ => Err(Error::Io(std::io::Error::last_os_error().to_string())),
    }
}

fn to_wit(l: &logs::Line) -> LogLine {
    LogLine {
        source: match l.stream {
            logs::Stream::Stdout => StreamKind::Stdout,
            logs::Stream::Stderr => StreamKind::Stderr,
        },
        text: l.text.clone(),
        timestamp_ns: l.timestamp_ns,
    }
}

impl main_process::Host for ProcessView<'_> {
    async fn containers(&mut self) -> wasmtime::Result<Vec<Info>> {
        if !self.ctx.grant.read {
            return Ok(Vec::new());
        }
        Ok(self.ctx.pod.mains().iter().map(info).collect())
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Result<Info, Error>> {
        if !self.ctx.grant.read {
            return Ok(Err(denied("reading the main process")));
        }
        Ok(self
            .ctx
            .pod
            .main(&name)
            .map(|m| info(&m))
            .ok_or(Error::NoSuchContainer(name)))
    }

    async fn stats(&mut self, name: String) -> wasmtime::Result<Result<Stats, Error>> {
        let main = match self.ctx.running(&name) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let stats = super::procstat::read(main.pid).map_err(|e| Error::Io(e.to_string()));
        // A process found (not started) may have ended and its PID gone to another since it
        // was seen: the statistics count only if it is still the one found.
        if let Some(start) = main.start {
            if super::procstat::Stat::of(main.pid).map(|s| s.start) != Some(start) {
                return Ok(Err(Error::NotRunning));
            }
        }
        Ok(stats)
    }

    async fn logs(
        &mut self,
        name: String,
        start: LogStart,
    ) -> wasmtime::Result<Result<Resource<LogStream>, Error>> {
        if !self.ctx.grant.read {
            return Ok(Err(denied("reading the main process's output")));
        }
        if self.ctx.pod.main(&name).is_none() {
            return Ok(Err(Error::NoSuchContainer(name)));
        }
        if !self.ctx.grant.output {
            return Ok(Err(Error::Denied(
                "the main containers' output is not visible here: a sidecar in a container of \
                 its own (wpod sidecar run) sees their processes, not what they write (on \
                 Kubernetes the kubelet keeps it: kubectl logs)"
                    .into(),
            )));
        }
        if self.ctx.open_streams >= MAX_LOG_STREAMS {
            return Ok(Err(Error::Io(format!(
                "at most {MAX_LOG_STREAMS} log streams may be open at once; drop one first"
            ))));
        }
        let (past, live) = self.ctx.logs.subscribe(&name, start == LogStart::Beginning);
        let stream = LogStream {
            container: name,
            backlog: past.into(),
            live,
            pod: self.ctx.pod.clone(),
        };
        let handle = self.table.push(stream)?;
        self.ctx.open_streams += 1;
        Ok(Ok(handle))
    }

    async fn signal(&mut self, name: String, signal: u32) -> wasmtime::Result<Result<(), Error>> {
        let main = match self.ctx.running(&name) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        if !self.ctx.grant.signal {
            return Ok(Err(Error::Denied(
                "signals need securityContext.capabilities.add: [KILL] on this sidecar".into(),
            )));
        }
        let sig = match i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
        {
            Some(s) => s,
            None => return Ok(Err(Error::Io(format!("{signal} is not a signal number")))),
        };
        Ok(send_signal(&main, sig))
    }
}

impl main_process::HostLogStream for ProcessView<'_> {
    async fn next(
        &mut self,
        stream: Resource<LogStream>,
        max: u32,
    ) -> wasmtime::Result<Vec<LogLine>> {
        let s = self.table.get_mut(&stream)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let lines = drain(s, max);
        if !lines.is_empty() {
            return Ok(lines);
        }
        s.wait().await;
        Ok(drain(s, max))
    }

    async fn try_next(
        &mut self,
        stream: Resource<LogStream>,
        max: u32,
    ) -> wasmtime::Result<Vec<LogLine>> {
        let s = self.table.get_mut(&stream)?;
        Ok(drain(s, max))
    }

    async fn subscribe(
        &mut self,
        stream: Resource<LogStream>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi_io::poll::DynPollable>> {
        wasmtime_wasi_io::poll::subscribe(self.table, stream)
    }

    async fn drop(&mut self, stream: Resource<LogStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        self.ctx.open_streams = self.ctx.open_streams.saturating_sub(1);
        Ok(())
    }
}

/// wpod:sidecar@0.1.0's `main-process`: the same functions, in 0.1.0's types.
mod v0_1 {
    use wasmtime::component::Resource;

    use super::{LogStream, ProcessView};
    use crate::bindings::v0_1::main_process::{self as old, Error, Info, LogLine};

    fn result<T, U: Into<T>>(
        r: Result<U, crate::bindings::main_process::Error>,
    ) -> Result<T, Error> {
        r.map(Into::into).map_err(Into::into)
    }

    impl old::Host for ProcessView<'_> {
        async fn containers(&mut self) -> wasmtime::Result<Vec<Info>> {
            Ok(super::main_process::Host::containers(self)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        }

        async fn get(&mut self, name: String) -> wasmtime::Result<Result<Info, Error>> {
            Ok(result(super::main_process::Host::get(self, name).await?))
        }

        async fn stats(
            &mut self,
            name: String,
        ) -> wasmtime::Result<Result<old::ProcessStats, Error>> {
            Ok(result(super::main_process::Host::stats(self, name).await?))
        }

        async fn logs(
            &mut self,
            name: String,
            start: old::LogStart,
        ) -> wasmtime::Result<Result<Resource<LogStream>, Error>> {
            Ok(super::main_process::Host::logs(self, name, start.into())
                .await?
                .map_err(Into::into))
        }

        async fn signal(
            &mut self,
            name: String,
            signal: u32,
        ) -> wasmtime::Result<Result<(), Error>> {
            Ok(super::main_process::Host::signal(self, name, signal)
                .await?
                .map_err(Into::into))
        }
    }

    impl old::HostLogStream for ProcessView<'_> {
        async fn next(
            &mut self,
            stream: Resource<LogStream>,
            max: u32,
        ) -> wasmtime::Result<Vec<LogLine>> {
            Ok(super::main_process::HostLogStream::next(self, stream, max)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        }

        async fn try_next(
            &mut self,
            stream: Resource<LogStream>,
            max: u32,
        ) -> wasmtime::Result<Vec<LogLine>> {
            Ok(
                super::main_process::HostLogStream::try_next(self, stream, max)
                    .await?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            )
        }

        async fn drop(&mut self, stream: Resource<LogStream>) -> wasmtime::Result<()> {
            super::main_process::HostLogStream::drop(self, stream).await
        }
    }
}

/// Lines one `next`/`try-next` call returns at most, whatever `max` asks.
const MAX_LINES_PER_CALL: usize = 1024;

/// Up to `max` lines: the history first, then what came live. Nothing is moved anywhere to
/// wait: lines a reader does not take stay in the feed, where a slow reader skips ahead rather
/// than making wpod hold them.
fn drain(s: &mut LogStream, max: u32) -> Vec<LogLine> {
    let want = (max as usize).min(MAX_LINES_PER_CALL);
    let mut out = Vec::new();
    while out.len() < want {
        let Some(line) = s.backlog.pop_front() else {
            break;
        };
        out.push(to_wit(&line));
    }
    while out.len() < want {
        match s.live.try_recv() {
            Ok(line) => out.push(to_wit(&line)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pid: i32, start: u64) -> MainStatus {
        MainStatus {
            name: "main".into(),
            pid,
            state: MainState::Running,
            exit_code: None,
            restarts: 0,
            start: Some(start),
        }
    }

    /// A process found (not started) is signalled only while it is the one found: a start time
    /// that differs (its PID reused by a later process) is `not-running`, and nothing is sent.
    #[test]
    fn a_found_process_is_signalled_only_if_it_is_still_the_one_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let start = crate::procstat::Stat::of(pid).expect("stat").start;
        assert!(matches!(
            send_signal(&found(pid, start + 1), Signal::SIGTERM),
            Err(Error::NotRunning)
        ));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "nothing was sent"
        );
        send_signal(&found(pid, start), Signal::SIGTERM).expect("sent");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Gone (reaped): not running, not an error of the host.
        assert!(matches!(
            send_signal(&found(pid, start), Signal::SIGTERM),
            Err(Error::NotRunning)
        ));
    }
}
