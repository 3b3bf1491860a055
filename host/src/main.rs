//! The `wpod` command: parses arguments, sets up logging, runs a subcommand, maps the outcome to
//! an exit code. Errors are printed with their whole chain.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;

use cli::{Cli, Command};
use wpod::spec::SpecError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Manifest problems are already in `file:line:col: field: message` form.
            match e.downcast_ref::<SpecError>() {
                Some(SpecError::Invalid(d)) => eprintln!("{d}"),
                _ => eprintln!("wpod: error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { files } => validate(&files),
        Command::Inspect { component, json } => inspect(&component, json),
        Command::Run { file, output } => run(&file, output),
    }
}

fn validate(files: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for file in files {
        match wpod::load_plan(file) {
            Ok(plans) => {
                for p in &plans {
                    println!(
                        "{}: pod \"{}\" is valid ({} containers)",
                        file.display(),
                        p.name(),
                        p.containers.len()
                    );
                }
            }
            Err(SpecError::Invalid(d)) => {
                eprintln!("{d}");
                failed = true;
            }
            Err(e) => {
                eprintln!("wpod: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn inspect(component: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let engine = wpod::sidecars::engine::new_engine()?;
    let report = wpod::sidecars::inspect::inspect(&engine, component)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run(file: &Path, _output: cli::Output) -> anyhow::Result<ExitCode> {
    let mut plans = wpod::load_plan(file)?;
    if plans.len() != 1 {
        bail!(
            "{}: wpod run runs one pod, but the file holds {} Pod documents",
            file.display(),
            plans.len()
        );
    }
    let _plan = plans.remove(0);
    bail!("running pods is not implemented yet")
}
