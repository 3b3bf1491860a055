//! What `wpod` tells a container shim to set up: written as JSON by the runtime, read by the shim
//! (`wpod __container FILE`). Everything is decided by the runtime; the shim only applies it.

use std::path::PathBuf;

use std::os::unix::process::CommandExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::helper::StepError;

use crate::sandbox::namespaces::NamespacePaths;

/// File descriptor number of the shim's report pipe (the lifeline is `helper::LIFELINE_FD`).
pub const REPORT_FD: i32 = 4;

/// Exit code of a shim that could not set the container up (as in podman/crun).
pub const EXIT_SETUP_FAILED: i32 = 125;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub pod: String,
    pub container: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub namespaces: NamespacePaths,
    pub rootfs: RootfsSpec,
    pub mounts: Vec<BindMount>,
    pub security: SecuritySpec,
    /// `cgroup.procs` files the shim joins before anything else, so the container is counted
    /// and limited from its first instruction.
    pub cgroup_procs: Vec<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// The read-only lower layers, topmost first: `/` for a host container, the directory of a
    /// rootfs image, or an OCI image's unpacked layers.
    pub lowers: Vec<PathBuf>,
    /// A directory the shim may mount over (a tmpfs holding the writable layer and the root).
    pub scratch: PathBuf,
    pub read_only: bool,
}

/// A volume bind-mounted into the container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BindMount {
    /// The volume, by descriptor: `/proc/<wpod>/fd/N` of the directory (or file) wpod opened
    /// when the pod started, so a path swapped for a symlink since leads nowhere new.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
    /// Symlinks inside are not followed: the volume is shared with a Wasm sidecar that may
    /// write links pointing out of it.
    pub no_follow_symlinks: bool,
    /// A hostPath of type CharDevice or BlockDevice: its device node must open (no `nodev`).
    pub device: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecuritySpec {
    pub uid: u32,
    pub gid: u32,
    /// The capability bounding set, e.g. `CAP_CHOWN`; everything else is dropped.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    /// The seccomp profile (`securityContext.seccompProfile`: RuntimeDefault unless
    /// Unconfined or Localhost), resolved and compiled by the shim; `None`: unconfined.
    pub seccomp: Option<crate::plan::seccomp::Profile>,
}

/// What a shim tells the runtime, one JSON object per line on [`REPORT_FD`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Report {
    /// The container's program was exec'ed; `pid` as seen from the host.
    Started { pid: i32 },
    /// Setting the container up failed at `step`.
    Failed { step: String, error: String },
}

impl LaunchSpec {
    /// The launch spec the runtime wrote for a helper (the shim, or `__exec`).
    pub fn read(path: &Path) -> Result<Self, StepError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StepError::io("read launch spec", path, e))?;
        serde_json::from_str(&text).map_err(|e| StepError::msg("parse launch spec", e))
    }

    /// Moves the calling process into the container's cgroups, so it is counted and limited
    /// from its next instruction.
    pub fn join_cgroups(&self) -> Result<(), StepError> {
        let me = std::process::id().to_string();
        for procs in &self.cgroup_procs {
            std::fs::write(procs, &me).map_err(|e| StepError::io("join cgroup", procs, e))?;
        }
        Ok(())
    }
}

/// Replaces the calling process with `argv` in the container's environment. Returns only on
/// failure, with the exit code a shell would give (127 for a missing program, 126 for one that
/// cannot run) and the error.
pub fn exec(argv: &[String], env: &[(String, String)]) -> (i32, StepError) {
    let Some((program, args)) = argv.split_first() else {
        return (EXIT_SETUP_FAILED, StepError::msg("exec", "empty command"));
    };
    let err = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    (code, StepError::msg(format!("exec {program}"), err))
}
