//! The `wpod` command: parses arguments, sets up logging, runs a subcommand, maps the outcome to
//! an exit code. Errors are printed with their whole chain.

mod bench;
mod cli;
mod images;
mod manage;
mod market;
mod scaffold;
mod table;
#[cfg(feature = "author-tools")]
mod wasm_tools;
#[cfg(not(feature = "author-tools"))]
#[path = "wasm_tools_disabled.rs"]
mod wasm_tools;
// The stand-in, compiled and called by the tests of the default build too (`scaffold`'s): CI
// builds only the default features, not runner/build.sh's wpod without them.
#[cfg(all(test, feature = "author-tools"))]
#[path = "wasm_tools_disabled.rs"]
mod wasm_tools_disabled;

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;

use cli::{Cli, Command};
use wpod::logs::OutputFormat;
use wpod::spec::SpecError;
use wpod::supervisor::events::{print_summary, Events};
use wpod::supervisor::pod::{Pod, PodError, PodOptions};

fn main() -> ExitCode {
    // Helper processes (when no `wpod-helper` of this build is installed beside wpod): fresh
    // single-threaded processes that never return, their arguments read as `wpod-helper`
    // reads them.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| wpod::helper::HelperCall::is_helper_subcommand(a))
    {
        wpod::helper_main::run(&args)
    }
    // Before any thread exists: growing it later waits for an RCU grace period.
    wpod::helper::grow_descriptor_table();
    let cli = Cli::parse();
    // An ordinary user's pods: in a delegated scope of the user's systemd when it runs, for
    // their cgroups (asked for while the process has one thread, before its namespaces).
    let mut scope_warning = None;
    if cli.command.runs_pods() && wpod::sandbox::rootless::needed() {
        scope_warning = wpod::sandbox::rootless::enter_systemd_scope();
    }
    // An ordinary user's wpod: into a user namespace of its own first, while it has one
    // thread (the kernel's condition).
    if cli.command.needs_user_namespace() && wpod::sandbox::rootless::needed() {
        if let Err(e) = wpod::sandbox::rootless::enter() {
            eprintln!("wpod: error: rootless wpod: {e}");
            return ExitCode::FAILURE;
        }
    }
    match &cli.command {
        // `wpod run` hosts sockets and pipes of its pod: a peer going away must be an error
        // there, never a signal that kills the pod's supervisor (Rust's default: ignored).
        Command::Run { .. }
        | Command::Bench { .. }
        | Command::Kube { .. }
        | Command::Sidecar { .. } => {}
        // The other commands print and end, as Unix tools do: `wpod ps | head` stops quietly
        // when head has read enough, instead of panicking on a closed stdout.
        _ => {
            // SAFETY: restoring a signal's default disposition, before any thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        }
    }
    let audit = matches!(cli.command, Command::Run { audit: true, .. });
    init_tracing(&cli.log_level, audit);
    manage::pass_on_log_level(&cli.log_level);
    if let Some(warning) = scope_warning {
        tracing::warn!("{warning}");
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Manifest problems are already in `file:line:col: field: message` form. Errors
            // carry registries' and containers' words (and a manifest's): each line escaped.
            match e.downcast_ref::<SpecError>() {
                Some(SpecError::Invalid(d)) => eprintln!("{}", market::safe_lines(&d.to_string())),
                _ => eprintln!("wpod: error: {}", market::safe_lines(&format!("{e:#}"))),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &tracing_subscriber::filter::Targets, audit: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // wpod's own log lines carry strings from registries and containers (errors, names): no
    // colour codes of ours, and every control character in them escaped, so none reaches the
    // terminal (or a log file someone `cat`s) as a sequence.
    let log = tracing_subscriber::fmt::layer()
        .with_writer(|| EscapingStderr)
        .with_ansi(false)
        .with_target(false)
        .with_filter(filter.clone());
    // `--audit`: which host interfaces each sidecar calls (the bindings' spans).
    let calls = audit.then(wpod::grants::calls::layer);
    tracing_subscriber::registry().with(log).with(calls).init();
}

/// stderr for log lines: each event arrives as one write ending in a newline; everything in
/// it but that newline is escaped.
struct EscapingStderr;

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let escaped = wpod::logs::escape_controls(body);
        std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            format!("{escaped}{newline}").as_bytes(),
        )?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate {
            files,
            objects,
            output,
        } => validate(&files, &objects, output),
        Command::Compile { files, output } => compile(&files, output),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut cli::Cli::command(),
                "wpod",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man_pages(&dir),
        Command::Pull {
            image,
            output,
            yes,
            allow_ungrantable,
            all,
        } => images::pull(
            &image,
            &market::ReviewOptions {
                yes,
                allow_ungrantable,
                all,
                output,
            },
        ),
        Command::Push {
            component,
            image,
            annotations,
            output,
        } => market::push(&component, &image, &annotations, output),
        Command::Sign { image, key, output } => market::sign(&image, &key, output),
        Command::Key {
            command:
                cli::KeyCommand::Generate {
                    name,
                    no_password,
                    output,
                },
        } => market::key_generate(&name, no_password, output),
        Command::Search { query, output } => market::search(&query, output),
        Command::Ps { all, output } => manage::ps(all, output),
        Command::Rm {
            pods,
            all,
            force,
            output,
        } => manage::rm_command(&pods, all, force, output),
        Command::Events {
            pod,
            follow,
            output,
        } => manage::events(&pod, follow, output),
        Command::Sidecar {
            command:
                cli::SidecarCommand::Run {
                    manifest,
                    objects,
                    container,
                    component,
                    component_digest,
                    manifest_digest,
                    state_dir,
                    termination_log,
                    precompiled,
                    mains,
                    artifact,
                    approvals,
                    argv,
                },
        } => sidecar_run(wpod::kube::sidecar::RunOptions {
            files: objects.with(&manifest),
            container,
            component,
            component_digest,
            manifest_digest,
            state_dir,
            termination_log,
            precompiled: Some(precompiled).filter(|d| d.is_dir()),
            argv,
            mains,
            artifact,
            approvals,
        }),
        Command::Sidecar {
            command: cli::SidecarCommand::Probe { state_dir },
        } => match wpod::kube::sidecar::probe(&state_dir) {
            Ok(r) => {
                println!("ready: {} ({})", r.container, r.digest);
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                println!("not ready: {why}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Kube {
            command: cli::KubeCommand::Play { file, objects },
        } => manage::run_detached(&objects.with(&file), cli::DEFAULT_BACKOFF.parse()?, false),
        Command::Kube {
            command: cli::KubeCommand::Down { file },
        } => manage::kube_down(&file),
        Command::Kube {
            command:
                cli::KubeCommand::Build {
                    component,
                    tag,
                    archive,
                    wpod,
                    output,
                },
        } => market::kube_build(
            &component,
            &tag,
            archive.as_deref(),
            wpod.as_deref(),
            output,
        ),
        Command::Kube {
            command:
                cli::KubeCommand::Generate {
                    file,
                    objects,
                    images,
                    policy,
                    approvals,
                    output,
                },
        } => {
            let options = wpod::kube::generate::GenerateOptions {
                files: objects.with(&file),
                images: images.into_iter().collect(),
                policy,
                approvals,
            };
            // A manifest's problems print as `wpod validate` prints them.
            let yaml = wpod::kube::generate::generate(&options).map_err(|e| match e {
                wpod::kube::generate::GenerateError::Manifest(spec) => anyhow::Error::new(spec),
                other => anyhow::Error::new(other),
            })?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{yaml}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Component {
            command: cli::ComponentCommand::New { module, output },
        } => scaffold::component_new(&module, &output),
        Command::Stop { pod, time, output } => manage::stop_command(&pod, time, output),
        Command::Logs {
            pod,
            container,
            follow,
            tail,
            since,
            raw,
            output,
        } => manage::logs(
            &pod,
            container.as_deref(),
            follow,
            tail,
            since.as_deref().map(manage::since).transpose()?,
            raw,
            output,
        ),
        Command::Apply {
            file,
            objects,
            dry_run,
            replace,
            output,
        } => match replace {
            true => manage::replace(&objects.with(&file), dry_run, output),
            false => manage::apply(&objects.with(&file), dry_run, output),
        },
        Command::Describe { pod, output } => manage::describe(&pod, output),
        Command::New { name, lang } => scaffold::new(&name, lang),
        Command::Save {
            images: names,
            output_dir,
            output,
        } => images::save(&names, &output_dir, output),
        Command::Load {
            dir,
            yes,
            allow_ungrantable,
            all,
            output,
        } => images::load(
            &dir,
            &market::ReviewOptions {
                yes,
                allow_ungrantable,
                all,
                output,
            },
        ),
        Command::Images { output } => images::list(output),
        Command::Rmi {
            images: names,
            output,
        } => images::remove(&names, output),
        Command::Image {
            command: cli::ImageCommand::Prune,
        } => images::prune(),
        Command::Pod {
            command: cli::PodCommand::Prune,
        } => manage::pod_prune(),
        Command::Volume {
            command: cli::VolumeCommand::Ls { output },
        } => manage::volume_list(output),
        Command::Volume {
            command: cli::VolumeCommand::Rm { names },
        } => manage::volume_remove(&names),
        Command::Inspect {
            target,
            output,
            json,
        } => {
            let output = if json { cli::Output::Json } else { output };
            // A path (or a .wasm name) is a file; anything else a reference on a registry.
            let path = Path::new(&target);
            if target.ends_with(".wasm") || path.exists() {
                inspect(path, output)
            } else {
                market::inspect_remote(&target, output)
            }
        }
        Command::Run {
            file,
            objects,
            backoff_base,
            detach: true,
            audit,
            ..
        } => manage::run_detached(&objects.with(&file), backoff_base, audit),
        Command::Run {
            file,
            objects,
            output,
            backoff_base,
            ready_fd,
            audit,
            ..
        } => run(
            &objects.with(&file),
            output,
            backoff_base.into(),
            ready_fd,
            audit,
        ),
        Command::Bench {
            component,
            runs,
            density,
            output,
            json,
        } => {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                bail!("wpod bench needs root: it creates a real pod sandbox");
            }
            // Before any thread exists: setting the environment is only safe then.
            let root = bench::private_root();
            std::env::set_var("WPOD_ROOT", &root);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(bench::run(&component, runs, density));
            drop(runtime);
            let _ = std::fs::remove_dir_all(&root);
            bench::print(&report?, json || output == cli::Output::Json);
            Ok(ExitCode::SUCCESS)
        }
        Command::PullForPod { request } => {
            let request: wpod::supervisor::images::PullRequest =
                serde_json::from_str(&request).context("read the pull request")?;
            let events = Events::new(&request.pod, OutputFormat::Json);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(wpod::supervisor::images::pull_only(&request, &events))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cleanup { pod } => {
            // Only a valid pod name becomes a path: `__cleanup ..` must not clear anything.
            let pod = wpod::spec::PodName::new(&pod).map_err(anyhow::Error::msg)?;
            // Taking the pod's lock clears whatever an earlier run left; releasing it removes the
            // rest. Its kept logs go too: this is the cleanup of a run that cannot be shown.
            let state = wpod::sandbox::state_dir::StateDir::acquire(&pod)?;
            let _ = std::fs::remove_dir_all(&state.logs);
            drop(state);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(
    files: &[std::path::PathBuf],
    objects: &cli::ObjectFiles,
    output: cli::Output,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut report = Vec::new();
    for file in files {
        let result = wpod::plan::load(&objects.with(file));
        if output == cli::Output::Json {
            report.push(match &result {
                Ok(plans) => serde_json::json!({
                    "file": file,
                    "valid": true,
                    "pods": plans.iter().map(|p| serde_json::json!({
                        "name": p.name(),
                        "containers": p.containers.len(),
                        "ignored": p.ignored.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                }),
                Err(SpecError::Invalid(d)) => serde_json::json!({
                    "file": file,
                    "valid": false,
                    "problems": d.0.iter().map(|p| serde_json::json!({
                        "file": p.file, "line": p.loc.line, "column": p.loc.col,
                        "field": p.path, "message": p.message,
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"file": file, "valid": false, "error": e.to_string()}),
            });
            failed |= result.is_err();
            continue;
        }
        match result {
            Ok(plans) => {
                for p in &plans {
                    for note in &p.ignored {
                        eprintln!("{}", market::safe(&format!("warning: {note}")));
                    }
                    let line = format!(
                        "{}: pod \"{}\" is valid ({} containers)",
                        file.display(),
                        p.name(),
                        p.containers.len()
                    );
                    println!("{}", market::safe(&line));
                }
            }
            Err(SpecError::Invalid(d)) => {
                eprintln!("{}", market::safe_lines(&d.to_string()));
                failed = true;
            }
            Err(e) => {
                eprintln!("wpod: error: {}", market::safe_lines(&e.to_string()));
                failed = true;
            }
        }
    }
    if output == cli::Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `wpod man DIR`: a page for wpod and one per command (`wpod-run.1`), as `git help` has
/// them; internal commands have none.
fn man_pages(dir: &Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let top = cli::Cli::command();
    let mut pages = vec![("wpod".to_string(), top.clone())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wpod-{}", sub.get_name());
        // The page's title is its display name; its synopsis, how it is typed.
        let cmd = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("wpod {}", sub.get_name()));
        pages.push((name, cmd));
    }
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        // Written beside, then renamed over the page: a link or a FIFO planted at the page's
        // name in a shared directory is replaced, never written through.
        let tmp = dir.join(format!(".{name}.1.{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &out))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `wpod compile FILE...`: each component into the cache, as its first run would put it.
fn compile(files: &[std::path::PathBuf], output: cli::Output) -> anyhow::Result<ExitCode> {
    use wpod::sidecars::Compiled;
    if let Some((root, owner)) = manage::foreign_state_root() {
        bail!(
            "wpod compile writes wpod's cache under {}, which is uid {owner}'s alone: run it as \
             that user, or unset WPOD_ROOT to fill your own cache",
            root.display()
        );
    }
    let observer = CompileProgress::new(output == cli::Output::Text);
    let mut failed = false;
    for file in files {
        let path = file.display().to_string();
        let shown = market::safe(&path);
        // Named as given here (the plan's message speaks of paths relative to a manifest).
        let result = match file.exists() {
            true => Ok(()),
            false => Err(anyhow::anyhow!("{path}: no such file")),
        }
        .and_then(|()| wpod::plan::image::check_component(&path, file).map_err(anyhow::Error::new))
        .and_then(|()| wpod::sidecars::compile(file, &observer).map_err(anyhow::Error::new));
        let record = match &result {
            Ok(Compiled::Cached) => {
                serde_json::json!({"file": file, "cached": true})
            }
            Ok(Compiled::Now { bytes, took }) => serde_json::json!({
                "file": file, "cached": false, "sizeBytes": bytes, "seconds": took.as_secs_f64()
            }),
            Err(e) => {
                failed = true;
                serde_json::json!({"file": file, "error": format!("{e:#}")})
            }
        };
        match (output, result) {
            (cli::Output::Json, _) => println!("{record}"),
            (cli::Output::Text, Ok(Compiled::Cached)) => {
                println!("{shown}: already compiled (in the cache)")
            }
            (cli::Output::Text, Ok(Compiled::Now { bytes, took })) => println!(
                "{shown}: compiled ({}) in {:.1}s",
                wpod::spec::quantity::show_bytes(bytes),
                took.as_secs_f64()
            ),
            (cli::Output::Text, Err(e)) => {
                eprintln!("wpod: error: {}", market::safe(&format!("{e:#}")))
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A spinner counting the seconds of a compilation on a terminal.
pub(crate) struct CompileProgress {
    spinner: std::sync::Mutex<Option<indicatif::ProgressBar>>,
    show: bool,
}

impl CompileProgress {
    pub(crate) fn new(text: bool) -> Self {
        use std::io::IsTerminal;
        CompileProgress {
            spinner: Default::default(),
            show: text && std::io::stderr().is_terminal(),
        }
    }
}

impl Drop for CompileProgress {
    /// A compilation that failed never says it finished: its spinner goes with the observer.
    fn drop(&mut self) {
        let spinner = self
            .spinner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = spinner.take() {
            s.finish_and_clear();
        }
    }
}

impl wpod::sidecars::CompileObserver for CompileProgress {
    fn compiling(&self, name: &str, _: &Path, bytes: u64) {
        if !self.show {
            return;
        }
        let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
            "compiling {} ({})",
            market::safe(name),
            wpod::spec::quantity::show_bytes(bytes)
        ));
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            spinner.set_style(style);
        }
        spinner.enable_steady_tick(std::time::Duration::from_millis(200));
        *self.spinner.lock().unwrap_or_else(|p| p.into_inner()) = Some(spinner);
    }

    fn compiled(&self, _: &str, _: &Path, _: std::time::Duration) {
        if let Some(s) = self
            .spinner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            s.finish_and_clear();
        }
    }
}

fn inspect(component: &Path, output: cli::Output) -> anyhow::Result<ExitCode> {
    let report = wpod::grants::inspect::inspect(component)?;
    if output == cli::Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        // Import and export names are the component's (its publisher's): escaped.
        print!("{}", market::report_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft limit on open files to the hard one, as container engines do: wpod holds the
/// pod's sockets, log files and every sidecar's handles, within the budget the plan shared
/// out of that hard limit (`plan::FdBudget`).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}

/// `wpod sidecar run`: the container's exit code; a sidecar refused at start says why on
/// stderr and in the termination message, and exits 128.
fn sidecar_run(options: wpod::kube::sidecar::RunOptions) -> anyhow::Result<ExitCode> {
    use wpod::kube::sidecar::{RunnerError, REFUSED};
    // The compile cache lives in the state directory: set before any thread starts.
    std::env::set_var("WPOD_ROOT", &options.state_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(wpod::sandbox::runtime::MAX_BLOCKING_THREADS)
        .thread_name("wpod-sidecar")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(wpod::kube::sidecar::run(&options));
    // A compile a SIGTERM interrupted is not waited for.
    runtime.shutdown_background();
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let message = match &e {
                RunnerError::Manifest(SpecError::Invalid(d)) => d.to_string(),
                e => format!("wpod sidecar: {}", wpod::error::chain(e)),
            };
            eprintln!("{}", market::safe_lines(&message));
            wpod::kube::sidecar::write_termination_log(&options.termination_log, &message);
            REFUSED
        }
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn run(
    files: &wpod::plan::ManifestFiles,
    output: cli::Output,
    backoff: std::time::Duration,
    ready_fd: Option<i32>,
    audit: bool,
) -> anyhow::Result<ExitCode> {
    // The kernel's wait before wpod's first cgroup move, while the pod is planned.
    wpod::sandbox::cgroups::prime_moves(&wpod::sys::Host::real());
    let plan = manage::one_pod(files, "wpod run runs")?;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "wpod run needs root: it creates namespaces, mounts and cgroups for the pod (try sudo)"
        );
    }
    let format = match (output, ready_fd) {
        // A detached pod prints nothing: its events go to its journal, its output to log files.
        (_, Some(_)) => OutputFormat::Silent,
        (cli::Output::Text, None) => OutputFormat::Text,
        (cli::Output::Json, None) => OutputFormat::Json,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wpod-runtime")
        .build()
        .context("cannot start the async runtime")?;
    let name = plan.name().to_string();
    let options = PodOptions {
        format,
        backoff,
        audit,
        // `wpod run -d` returns once the pod waits for its images, or has started.
        on_waiting: ready_fd.map(|fd| {
            Arc::new(move |why: &str| manage::tell_ready_fd(fd, &format!("waiting {why}\n")))
                as wpod::supervisor::pod::OnWaiting
        }),
    };
    let start_up = wpod::memory::StartUp::begin();
    let pod = runtime.block_on(async {
        raise_fd_limit();
        let events = Arc::new(Events::new(&name, format));
        Pod::start(plan, options, events)
            .await
            .map_err(|e| match e {
                // Located diagnostics print as `wpod validate` prints them.
                PodError::Invalid(d) => anyhow::Error::new(SpecError::Invalid(d)),
                e => anyhow::Error::new(e).context(format!("pod {name} failed to start")),
            })
    })?;
    let mut phase = pod.phase();
    // On the heap, so that it can wait across two `block_on`s.
    let mut ended = Box::pin(pod.wait());
    let ended_first = runtime.block_on(async {
        tokio::select! {
            result = &mut ended => Some(result),
            _ = phase.wait_for(|p| *p != wpod::supervisor::Phase::Starting) => None,
        }
    });
    // `wpod run -d` returns once every container has started or failed (podman's `kube play`
    // does so), or the pod ended first.
    if let Some(fd) = ready_fd {
        manage::tell_ready_fd(fd, "started\n");
    }
    let result = match ended_first {
        Some(result) => result,
        None => {
            // Here, out of the runtime's polls, the main thread's stack is at its shallowest:
            // what the start-up touched below goes back. The pod now mostly waits, for as long
            // as it runs.
            start_up.done();
            runtime.block_on(ended)
        }
    };
    print_summary(format, &name, &result.summary);
    Ok(ExitCode::from(u8::try_from(result.exit_code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    /// `--log-level` takes a level or levels by target, and refuses what is neither.
    #[test]
    fn log_levels_are_levels_or_levels_by_target() {
        use clap::Parser;
        use tracing::Level;
        let parse =
            |level: &str| crate::cli::Cli::try_parse_from(["wpod", "--log-level", level, "ps"]);
        let cli = parse("warn,wpod::sidecars=debug").expect("a filter");
        assert!(cli
            .log_level
            .would_enable("wpod::sidecars::engine", &Level::DEBUG));
        assert!(!cli.log_level.would_enable("wpod::plan", &Level::INFO));
        assert!(parse("debug")
            .expect("a level")
            .log_level
            .would_enable("wpod", &Level::DEBUG));
        for (wrong, says) in [
            ("wpod=loud", "`loud` is not a level"),
            // tracing would read these as everything at trace, and as a target.
            ("info,", "an empty part"),
            ("", "an empty part"),
            ("warning", "`warning` is not a level"),
            ("wpod[span]=debug", "is not a target"),
        ] {
            let error = parse(wrong).expect_err(wrong).to_string();
            assert!(
                error.contains("--log-level") && error.contains(says),
                "{error}"
            );
        }
        let spaced = parse(" info , wpod=DEBUG").expect("spaces and case");
        assert!(spaced.log_level.would_enable("wpod", &Level::DEBUG));
    }

    /// Completions for each shell, and a manual page per visible command (none for the
    /// internal ones), from the CLI's definition.
    #[test]
    fn completions_and_manual_pages_come_from_the_cli() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::Cli::command(), "wpod", &mut out);
            let script = String::from_utf8_lossy(&out);
            assert!(
                script.contains("apply") && script.contains("configmap"),
                "{shell}"
            );
        }
        let dir = std::env::temp_dir().join(format!("wpod-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        super::man_pages(&dir).expect("pages");
        let run = std::fs::read_to_string(dir.join("wpod-run.1")).expect("wpod-run.1");
        assert!(run.contains(r"\-\-configmap"), "{run}");
        assert!(dir.join("wpod.1").is_file());
        assert!(!dir.join("wpod-__holder.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
