//! Command-line types (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  wpod run examples/hello.yaml           run a pod in the foreground (Ctrl-C stops it)
  wpod run --output json pod.yaml        the same, with events as JSON lines
  wpod validate examples/*.yaml          report every problem in these manifests
  wpod inspect sidecar.wasm              show a component's imports and the grants they need
  wpod push exporter.wasm reg:5000/team/exporter:1.0
                                         publish a sidecar; `wpod sign`, `wpod search`, `wpod pull` it";

/// kubelet's first restart delay.
pub const DEFAULT_BACKOFF: &str = "10s";

#[derive(Debug, Parser)]
#[command(name = "wpod", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace, off), or levels by target such as
    /// `info,wpod::sidecars=debug`.
    // `Targets`, not `EnvFilter`: the same `target=level` directives without span and field
    // matching, whose regex engine put 190 KiB of relocated Unicode tables in every wpod
    // process (a detached pod's supervisor is one).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL", value_parser = log_levels)]
    pub log_level: tracing_subscriber::filter::Targets,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pod of a manifest in the foreground; exits with the main container's code.
    Run {
        /// Pod manifest (Kubernetes v1 Pod YAML).
        file: PathBuf,
        #[command(flatten)]
        objects: ObjectFiles,
        /// How to print pod events.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// First restart delay of kubelet's back-off (doubling up to 30x, reset after 60x of
        /// running): lower it to see restarts sooner, e.g. `1s`.
        #[arg(long, value_name = "DURATION", default_value = DEFAULT_BACKOFF)]
        backoff_base: humantime::Duration,
        /// Run the pod in the background (its own supervisor process, no daemon): prints the
        /// pod's name once it has started; `wpod ps`, `logs` and `stop` manage it.
        #[arg(short, long)]
        detach: bool,
        /// Record what each Wasm sidecar uses (connects, listens, lookups) as events, and end
        /// with the narrowest grant that allows it: write a sidecar's outbound rules from one
        /// trial run. Refusals are reported either way.
        #[arg(long)]
        audit: bool,
        /// Internal: the supervisor of a detached pod, telling its parent on this fd when the
        /// pod has started.
        #[arg(long, hide = true)]
        ready_fd: Option<i32>,
    },
    /// Check manifests and print every problem as file:line:col: field: message.
    Validate {
        /// Pod manifests.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        objects: ObjectFiles,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a Wasm sidecar's imports and exports, and the Pod field that grants each import:
    /// of a component file, or of a sidecar on a registry (from its config, before download).
    Inspect {
        /// A Wasm component (a path) or a sidecar reference (registry.example:5000/team/app:1.0).
        target: String,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// The same as --output json.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Compile Wasm components into wpod's cache ahead of their first run (a Python or
    /// JavaScript sidecar takes ten seconds or more; `wpod pull` does this for a sidecar).
    Compile {
        /// Wasm component files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Pull an image or a Wasm sidecar from its registry (or the mirror registries.conf names)
    /// into the store. For a sidecar, show what it may do and ask to approve it.
    Pull {
        /// An image reference: nginx, nginx:1.25, registry.example:5000/team/app@sha256:...
        image: String,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Approve the sidecar without asking (for scripts and CI).
        #[arg(long, short)]
        yes: bool,
        /// Approve a sidecar even if it imports what no Pod field grants (no pod can run it).
        #[arg(long)]
        allow_ungrantable: bool,
        /// List every import in the review, the always-granted ones too (folded otherwise).
        #[arg(long)]
        all: bool,
    },
    /// Publish a Wasm component to a registry as an OCI artifact; prints REF@sha256:...
    Push {
        /// The component (.wasm, built for wasm32-wasip2).
        component: PathBuf,
        /// Where to publish it: registry.example:5000/team/exporter:1.0
        image: String,
        /// An annotation on the manifest, e.g. org.opencontainers.image.description="Redis metrics".
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Sign an image or sidecar on its registry (cosign-compatible; the signature is stored at
    /// tag sha256-<digest>.sig). The key's password comes from WPOD_KEY_PASSWORD or COSIGN_PASSWORD.
    Sign {
        image: String,
        /// The private key (from `wpod key generate`, or cosign's).
        #[arg(long)]
        key: PathBuf,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Copy images and sidecars with their signatures from their registries into an OCI
    /// layout directory, for a host no registry reaches (`wpod load` reads it there).
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// The directory to write (new or empty). (`-o` is `--output`, as everywhere.)
        #[arg(
            short = 'd',
            long = "dir",
            visible_alias = "output-dir",
            value_name = "DIR"
        )]
        output_dir: PathBuf,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Load what `wpod save` wrote into the store, checked as a pull (trust policy, digests,
    /// each sidecar's review and approval).
    Load {
        dir: PathBuf,
        /// Approve the sidecars without asking.
        #[arg(long, short)]
        yes: bool,
        #[arg(long)]
        allow_ungrantable: bool,
        /// List every import in the reviews, the always-granted ones too.
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List the pods on this host and their containers: state, ready, restarts, image.
    Ps {
        /// Also the pods that have ended (their logs are kept until `wpod rm`).
        #[arg(short, long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change a running pod's Wasm sidecars to match the manifest (add, replace, remove) without
    /// touching its main container; a pod that is not running is started detached.
    Apply {
        /// Pod manifest (Kubernetes v1 Pod YAML).
        file: PathBuf,
        #[command(flatten)]
        objects: ObjectFiles,
        /// Check and prepare everything, say what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// For a change a running pod cannot take (a pod-level field, a native container):
        /// stop the pod (its grace period, as wpod stop) and run it again from the file, as
        /// `podman kube play --replace`; what it will do is said first.
        #[arg(long)]
        replace: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Make a sidecar project that builds with one command into a component wpod runs.
    New {
        /// The sidecar's directory (made, with its parents); its last part is the sidecar's
        /// name (its crate and container name): `my-sidecar`, `sidecars/my-sidecar`.
        name: PathBuf,
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
    },
    /// What `wasm-tools component` does for a sidecar built with clang (`wpod new --lang c`).
    Component {
        #[command(subcommand)]
        command: ComponentCommand,
    },
    /// Show a pod in detail: its containers' states, each sidecar's grants, its recent events.
    #[command(alias = "inspect-pod")]
    Describe {
        pod: String,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a pod's events, as `wpod run` prints them (`-o json`: as `wpod run --output json`
    /// does): -f follows them while it runs.
    Events {
        pod: String,
        #[arg(short, long)]
        follow: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// podman's names: `kube play FILE` runs the pod detached, `kube down FILE` stops and
    /// removes it.
    Kube {
        #[command(subcommand)]
        command: KubeCommand,
    },
    /// One Wasm sidecar as the process of a container already inside a pod (on Kubernetes:
    /// the runner container `wpod kube generate` writes), with the grants its Pod manifest
    /// gives it.
    Sidecar {
        #[command(subcommand)]
        command: SidecarCommand,
    },
    /// Remove ended pods: their kept logs and journal, and what a killed run left.
    Rm {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        pods: Vec<String>,
        /// Every pod that has ended (with --force, running ones too).
        #[arg(short, long)]
        all: bool,
        /// Stop a running pod first (as wpod stop), then remove it, as podman rm -f.
        #[arg(short, long)]
        force: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop a running pod from another shell: the same ordered termination as Ctrl-C.
    Stop {
        pod: String,
        /// Seconds to wait before killing what is left (a second stop request), as podman stop
        /// -t; without it, the pod's terminationGracePeriodSeconds applies.
        #[arg(short, long, value_name = "SECONDS")]
        time: Option<u64>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a container's output (from its log file): -f follows it while the pod runs.
    Logs {
        pod: String,
        /// The container (needed when the pod has more than one).
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only lines written since this long ago (`10m`, `1h 30m`) or this RFC 3339 time.
        #[arg(long, value_name = "DURATION|TIME")]
        since: Option<String>,
        /// Print the bytes as the container wrote them, control characters and escape
        /// sequences too (on a terminal they are shown escaped otherwise; into a pipe or a file
        /// they always go as stored).
        #[arg(long)]
        raw: bool,
        /// `json`: one JSON object per line (time, stream, line), as the log file holds it.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Signing keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Find Wasm sidecars on a registry: name, latest version, description, signature, the Pod
    /// fields each needs.
    Search {
        /// REGISTRY/TERM, e.g. 127.0.0.1:5000/exporter (REGISTRY/ lists all).
        query: String,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List the images in the store: name, digest, size, last use.
    Images {
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove images from the store (their layers go once no image uses them).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Image housekeeping.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The data of PersistentVolumeClaims, kept under wpod's state after their pods end.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Pod housekeeping.
    Pod {
        #[command(subcommand)]
        command: PodCommand,
    },
    /// Measure Wasm sidecar start (cold, warm, restart) and idle memory on a real pod (root).
    Bench {
        /// The guest to start: the `probe` sidecar (target/sidecars/probe.wasm).
        #[arg(long, default_value = "target/sidecars/probe.wasm")]
        component: PathBuf,
        /// Starts of each kind.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Idle sidecars for the memory figure.
        #[arg(long, default_value_t = 50)]
        density: usize,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// The same as --output json.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Print a shell completion script: `source <(wpod completion bash)`, or save it where
    /// your shell loads completions (e.g. /usr/share/bash-completion/completions/wpod).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write wpod's manual pages (wpod.1, wpod-run.1, ...) into DIR, e.g.
    /// /usr/local/share/man/man1.
    Man { dir: PathBuf },
    /// Internal: clear what a killed `wpod run` of this pod left (state, mounts, cgroups).
    #[command(name = "__cleanup", hide = true)]
    Cleanup { pod: String },
    /// Internal: `wpod apply`'s pulls, run by the pod's wpod as a process of their own outside
    /// the pod's cgroup (a JSON `PullRequest`); events as JSON lines on stdout.
    #[command(name = "__pull", hide = true)]
    PullForPod { request: String },
}

impl Command {
    /// Whether the command does what takes root (namespaces, mounts, chowns of pulled layers,
    /// removing a pod's files): an ordinary user's wpod runs it in a user namespace of its own
    /// (`wpod::sandbox::rootless`). The others read state and files the user owns.
    /// Whether the command runs pods (whose cgroups a rootless wpod asks systemd for).
    pub fn runs_pods(&self) -> bool {
        matches!(
            self,
            Command::Run { .. }
                | Command::Kube {
                    command: KubeCommand::Play { .. }
                }
        )
    }

    pub fn needs_user_namespace(&self) -> bool {
        matches!(
            self,
            Command::Run { .. }
                | Command::Pull { .. }
                | Command::Load { .. }
                | Command::Rm { .. }
                | Command::Stop { .. }
                | Command::Rmi { .. }
                | Command::Image { .. }
                | Command::Volume { .. }
                | Command::Pod { .. }
                | Command::Kube { .. }
                | Command::Cleanup { .. }
                | Command::PullForPod { .. }
        )
    }
}

/// The languages `wpod new` scaffolds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
    Go,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
            Lang::Go => "go",
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Make a core module (clang --target=wasm32-wasi -mexec-model=reactor, with the C
    /// bindings' component-type object linked in) a component, adapting its WASI preview1
    /// imports to WASI 0.2.
    New {
        /// The core module.
        module: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Where `wpod sidecar` keeps its readiness file and compile cache unless told.
pub const SIDECAR_STATE_DIR: &str = "/var/run/wpod";

// Parsed once per run: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Run the container NAME of the pod in --manifest, a Wasm sidecar, from --component: its
    /// grants are planned from the manifest as `wpod run` plans them, and a grant this
    /// container does not back (a volumeMount not mounted at its mountPath) is refused at
    /// start. Exits as the sidecar does (143 on SIGTERM unheard, 137 killed, 128 refused).
    Run {
        /// The Pod manifest the grants come from.
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        #[command(flatten)]
        objects: ObjectFiles,
        /// The sidecar's container name in the manifest.
        #[arg(long, value_name = "NAME")]
        container: String,
        /// The Wasm component to run.
        #[arg(long, value_name = "FILE")]
        component: PathBuf,
        /// The component's sha256 (`sha256:<hex>`): another file is refused before it runs.
        #[arg(long, value_name = "DIGEST")]
        component_digest: Option<String>,
        /// The manifest's sha256: another manifest is refused before anything is planned.
        #[arg(long, value_name = "DIGEST")]
        manifest_digest: Option<String>,
        /// A writable directory of this container's (an emptyDir): the readiness file and the
        /// compile cache.
        #[arg(long, value_name = "DIR", default_value = SIDECAR_STATE_DIR)]
        state_dir: PathBuf,
        /// Where the termination message goes, if the container has that file.
        #[arg(long, value_name = "FILE", default_value = "/dev/termination-log")]
        termination_log: PathBuf,
        /// Compiled code shipped with the component (runner/build-image.sh puts it in the
        /// image), tried before the cache; ignored where missing.
        #[arg(long, value_name = "DIR", default_value = "/wpod/precompiled")]
        precompiled: PathBuf,
        /// A main container of the pod (repeat for each): what the sidecar's main-process view
        /// shows, found through /proc when the pod shares its PID namespace.
        #[arg(long = "main", value_name = "NAME")]
        mains: Vec<String>,
        /// The registry artifact the component came from (REPO[:TAG]@sha256:...): the sidecar
        /// runs only while --approvals approves it.
        #[arg(long, value_name = "REF", requires = "approvals")]
        artifact: Option<String>,
        /// The approvals file (wpod's approvals.json format; on Kubernetes a ConfigMap) that
        /// --artifact is checked against at each start.
        #[arg(long, value_name = "FILE")]
        approvals: Option<PathBuf>,
        /// After `--`: the guest's argv as the container runtime expanded it; the guest's
        /// environment is then this container's (less WPOD_* settings). Without `--`, both
        /// come from the manifest.
        #[arg(last = true, value_name = "ARGV")]
        argv: Option<Vec<String>>,
    },
    /// Exit 0 once the sidecar this container runs has called ready() (its startupProbe).
    Probe {
        #[arg(long, value_name = "DIR", default_value = SIDECAR_STATE_DIR)]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// The same as `wpod run -d FILE`.
    Play {
        file: PathBuf,
        #[command(flatten)]
        objects: ObjectFiles,
    },
    /// Stop the file's pods and remove what they kept.
    Down { file: PathBuf },
    /// Build the runner image of a Wasm sidecar (this wpod, its libraries, the component and
    /// its compiled code; no shell; user 65532) and push it to a registry as `wpod push` does,
    /// or write it as an OCI archive; prints the digest-pinned reference for `kube generate`.
    Build {
        /// The sidecar's component.
        component: PathBuf,
        /// The image's name, REGISTRY/REPO:TAG.
        #[arg(short, long, value_name = "NAME")]
        tag: String,
        /// Write an OCI archive (`ctr images import`, `skopeo copy oci-archive:`) instead of
        /// pushing.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// The wpod binary to put in the image (default: this one).
        #[arg(long, value_name = "BIN")]
        wpod: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write the pod as plain Kubernetes YAML for a cluster: each Wasm sidecar a runner
    /// container (`wpod sidecar run` in the real pod, with the manifest's grants, least
    /// privileged), the manifest the runners read as an immutable ConfigMap. What cannot map is
    /// refused by name.
    Generate {
        file: PathBuf,
        #[command(flatten)]
        objects: ObjectFiles,
        /// The runner image of a Wasm sidecar, digest-pinned: NAME=REGISTRY/REPO@sha256:...
        /// (repeat for each sidecar).
        #[arg(long = "image", value_name = "NAME=IMAGE", value_parser = parse_image)]
        images: Vec<(String, String)>,
        /// A trust policy (containers-policy.json) to write as sigstore policy-controller
        /// ClusterImagePolicy documents for the pod's images.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The approvals (wpod's approvals.json) that a sidecar pulled from a registry must
        /// have, here and in the ConfigMap its runner checks at each start; default
        /// $WPOD_APPROVALS, else the state directory's.
        #[arg(long, value_name = "FILE")]
        approvals: Option<PathBuf>,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `NAME=IMAGE` of `--image`.
fn parse_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, image)) if !name.is_empty() && !image.is_empty() => {
            Ok((name.to_string(), image.to_string()))
        }
        _ => Err(format!(
            "{text:?}: give the container's name and its runner image, NAME=REGISTRY/REPO@sha256:..."
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write NAME.key (cosign's encrypted format) and NAME.pub (for policy.json's keyPath).
    /// The password comes from COSIGN_PASSWORD (or WPOD_KEY_PASSWORD), else it is asked for
    /// twice on the terminal, as cosign asks.
    Generate {
        name: String,
        /// Write the key without a password (anyone who reads NAME.key can sign).
        #[arg(long)]
        no_password: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Remove every pod that is not running: ended pods' kept logs and journal, and everything
    /// a killed run left (its network, mounts, cgroups, state).
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List the claims' volumes: name, size, whether a running pod uses it.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove claims' volumes and their data (refused while a running pod uses one).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Remove every blob and layer no stored image uses, and what killed pulls left.
    Prune,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// ConfigMaps, Secrets and PersistentVolumeClaims kept in files of their own, beside the Pod
/// manifest (podman kube play's `--configmap`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObjectFiles {
    /// A file of ConfigMap, Secret or PersistentVolumeClaim documents the pod uses (repeat the
    /// flag, or separate files with commas).
    #[arg(long = "configmap", value_name = "FILE", value_delimiter = ',')]
    pub config_maps: Vec<PathBuf>,
}

impl ObjectFiles {
    /// The manifest `file` with these objects.
    pub fn with(&self, file: &std::path::Path) -> wpod::plan::ManifestFiles {
        wpod::plan::ManifestFiles {
            manifest: file.to_path_buf(),
            objects: self.config_maps.clone(),
        }
    }
}

/// `--log-level`: a level, or levels by target, each part checked. tracing's own reading takes
/// an empty part (`info,`) as every target at trace, and a misspelt level (`warning`) as a
/// target, which silences everything else.
fn log_levels(text: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    let mut parts = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an empty part: separate levels with single commas".into());
        }
        let (target, level) = match part.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, part),
        };
        let level: tracing_subscriber::filter::LevelFilter = level
            .parse()
            .map_err(|e| format!("`{level}` is not a level: {e}"))?;
        let module_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        parts.push(match target {
            Some(target) if target.is_empty() || !target.chars().all(module_path) => {
                return Err(format!(
                    "`{target}` is not a target: a module path such as wpod::sidecars"
                ))
            }
            Some(target) => format!("{target}={level}"),
            None => level.to_string(),
        });
    }
    parts.join(",").parse().map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the definition (unique names, valid defaults) only when a command is parsed:
    /// every command at once, here.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
