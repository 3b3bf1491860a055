//! The `bindgen!`s of wpod's own interfaces; WASI comes from wasmtime-wasi.
//!
//! `wit/sidecar.wit` is `wpod:sidecar@0.2.2`, what the capabilities implement (0.2.0 and 0.2.1
//! guests link to it: a minor version adds, as the TLS client and the relay did). A component
//! built against 0.1.0 (`wit/v0.1.0`) keeps running: its version is linked too, each function
//! a conversion of the 0.1.0 types around its 0.2.0 twin (`v0_1`). (0.1 and 0.2 are different
//! versions to the component model, which links a 0.x import only to the same minor version.)

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wpod:sidecar/imports",
    imports: { default: async | trappable | tracing },
    with: {
        "wpod:sidecar/main-process.log-stream": crate::process::LogStream,
        "wasi:io/poll": wasmtime_wasi_io::bindings::wasi::io::poll,
        "wasi:io/streams": wasmtime_wasi_io::bindings::wasi::io::streams,
        "wpod:sidecar/tls.server-identity": crate::tls::ServerIdentity,
        "wpod:sidecar/tls.future-server-streams": crate::tls::FutureServerStreams,
        "wpod:sidecar/tls.client-config": crate::tls::ClientConfig,
        "wpod:sidecar/tls.future-client-streams": crate::tls::FutureClientStreams,
        "wpod:sidecar/relay.transfer": crate::relay::Transfer,
    },
});

pub use self::wpod::sidecar::{lifecycle, main_process, relay, tls};

/// wpod:sidecar@0.1.0, linked beside 0.2 for the components built against it.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "wpod:sidecar/imports",
        imports: { default: async | trappable | tracing },
        with: {
            "wpod:sidecar/main-process.log-stream": crate::process::LogStream,
        },
    });

    pub use self::wpod::sidecar::{lifecycle, main_process};

    use super::{lifecycle as now, main_process as mp};

    impl From<mp::State> for main_process::State {
        fn from(s: mp::State) -> Self {
            match s {
                mp::State::Waiting => Self::Waiting,
                mp::State::Running => Self::Running,
                mp::State::Exited => Self::Exited,
            }
        }
    }

    impl From<mp::Info> for main_process::Info {
        fn from(i: mp::Info) -> Self {
            Self {
                name: i.name,
                pid: i.pid,
                state: i.state.into(),
                exit_code: i.exit_code,
                restarts: i.restarts,
            }
        }
    }

    impl From<mp::ProcessStats> for main_process::ProcessStats {
        fn from(s: mp::ProcessStats) -> Self {
            Self {
                cpu_user_us: s.cpu_user_us,
                cpu_system_us: s.cpu_system_us,
                rss_bytes: s.rss_bytes,
                vm_bytes: s.vm_bytes,
                threads: s.threads,
                open_fds: s.open_fds,
                read_bytes: s.read_bytes,
                write_bytes: s.write_bytes,
                uptime_seconds: s.uptime_seconds,
            }
        }
    }

    impl From<mp::LogLine> for main_process::LogLine {
        fn from(l: mp::LogLine) -> Self {
            Self {
                source: match l.source {
                    mp::StreamKind::Stdout => main_process::StreamKind::Stdout,
                    mp::StreamKind::Stderr => main_process::StreamKind::Stderr,
                },
                text: l.text,
                timestamp_ns: l.timestamp_ns,
            }
        }
    }

    impl From<main_process::LogStart> for mp::LogStart {
        fn from(s: main_process::LogStart) -> Self {
            match s {
                main_process::LogStart::Beginning => Self::Beginning,
                main_process::LogStart::Now => Self::Now,
            }
        }
    }

    impl From<mp::Error> for main_process::Error {
        fn from(e: mp::Error) -> Self {
            match e {
                mp::Error::NoSuchContainer(n) => Self::NoSuchContainer(n),
                mp::Error::NotRunning => Self::NotRunning,
                mp::Error::Denied(m) => Self::Denied(m),
                mp::Error::Io(m) => Self::Io(m),
            }
        }
    }

    impl From<now::Event> for lifecycle::Event {
        fn from(e: now::Event) -> Self {
            match e {
                now::Event::MainStarted(n) => Self::MainStarted(n),
                now::Event::MainExited(x) => Self::MainExited(x),
                now::Event::Stopping(ms) => Self::Stopping(ms),
            }
        }
    }
}
