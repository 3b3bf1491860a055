//! The base grant every sidecar has: I/O streams, clocks, randomness, and the command-line
//! world of a program: argv from `command` + `args`, `env`, an exit code, stdin closed, no
//! terminal, and stdout/stderr split into lines and recorded in the pod's logs under the
//! sidecar's name, like a native container's output (bounded the same way: see `logs.rs`).

use std::sync::Arc;

use tokio::io::AsyncWrite;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use super::{Capability, GrantError, GrantHost, Import, ImportRule, InstanceSetup, Sidecar};
use crate::logs::{LogWriter, Logs, Stream};
use crate::spec::Diagnostic;

pub struct Wasi;

/// What the program is started with.
#[derive(Clone, Debug, Default)]
pub struct WasiGrant {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// `wasi:io`'s host state is the resource table itself.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

impl Capability for Wasi {
    type Grant = WasiGrant;
    type State = ();

    const IMPORTS: &'static [Import] = &[
        Import {
            interface: "wasi:io",
            rule: ImportRule::Always {
                what: "I/O streams, clocks and randomness",
            },
        },
        Import {
            interface: "wasi:clocks",
            rule: ImportRule::Always {
                what: "I/O streams, clocks and randomness",
            },
        },
        Import {
            interface: "wasi:random",
            rule: ImportRule::Always {
                what: "I/O streams, clocks and randomness",
            },
        },
        Import {
            interface: "wasi:cli/environment",
            rule: ImportRule::Always {
                what: "env, and command/args as argv",
            },
        },
        Import {
            interface: "wasi:cli/exit",
            rule: ImportRule::Always {
                what: "exit with a code",
            },
        },
        Import {
            interface: "wasi:cli/stdin",
            rule: ImportRule::Always {
                what: "stdin (always closed)",
            },
        },
        Import {
            interface: "wasi:cli/stdout",
            rule: ImportRule::Always {
                what: "stdout/stderr into the pod's logs",
            },
        },
        Import {
            interface: "wasi:cli/stderr",
            rule: ImportRule::Always {
                what: "stdout/stderr into the pod's logs",
            },
        },
        Import {
            interface: "wasi:cli",
            rule: ImportRule::Always {
                what: "no terminal (never a tty)",
            },
        },
    ];

    /// argv: `command` + `args`; with no `command`, the container's name stands as argv[0].
    /// The environment and the command line are the kubelet's (`envFrom`, `valueFrom`,
    /// `$(VAR)`), as for a native container.
    fn resolve(sidecar: &Sidecar<'_>, diags: &mut Vec<Diagnostic>) -> WasiGrant {
        let c = sidecar.container;
        let own = match crate::spec::env::resolve(sidecar.pod, c, sidecar.host) {
            Ok(own) => own,
            Err(problems) => {
                diags.extend(
                    problems
                        .into_iter()
                        .map(|p| sidecar.diag(&p.field, p.message)),
                );
                Default::default()
            }
        };
        let head = if own.command.is_empty() {
            vec![c.name.clone()]
        } else {
            own.command
        };
        WasiGrant {
            argv: head.into_iter().chain(own.args).collect(),
            env: own.env,
        }
    }

    fn add_to_linker<T: GrantHost>(l: &mut Linker<T>) -> wasmtime::Result<()> {
        use wasmtime_wasi_io::bindings::wasi::io;
        io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
        io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
        io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
        clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
        clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
        random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
        random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
        random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
        cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        Ok(())
    }

    fn prepare(grant: &WasiGrant, setup: &mut InstanceSetup<'_>) -> Result<(), GrantError> {
        let argv: Vec<String> = grant.argv.iter().map(|a| setup.facts.fill(a)).collect();
        setup.wasi.args(&argv);
        for (k, v) in &grant.env {
            setup.wasi.env(k, setup.facts.fill(v));
        }
        let output = |stream| LogOutput {
            logs: setup.logs.clone(),
            container: setup.name.to_string(),
            stream,
        };
        let (stdout, stderr) = (output(Stream::Stdout), output(Stream::Stderr));
        setup.wasi.stdout(stdout).stderr(stderr);
        Ok(())
    }
}

/// A sidecar's stdout or stderr: each write goes to the pod's logs.
pub struct LogOutput {
    pub logs: Arc<Logs>,
    pub container: String,
    pub stream: Stream,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LogWriter::new(
            self.logs.clone(),
            &self.container,
            self.stream,
        ))
    }
}
