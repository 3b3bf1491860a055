//! Reading a launch config (`config.json`) in a helper, without oci-spec's `Process`
//! deserializer.
//!
//! Why: that deserializer checks `process.execCPUAffinity` with a regex, so every binary that
//! reads a `Spec` links the regex crate and its Unicode tables: about 190 KB of relocated data
//! that each helper process (the holder, every shim, every exec probe or hook) copies and
//! relocates when it starts, of the 283 KB `wpod-helper` had. Here the config is read with
//! oci-spec's own types for every part but `process`, whose fields are read by
//! [`ProcessFields`] and set on an oci-spec `Process`; the result is the same `Spec`, which
//! [`LaunchSpec::from_oci`](super::launch::LaunchSpec::from_oci) checks as before. The shim
//! refuses `execCPUAffinity`, so its value is never parsed: present, it is refused by name here.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    Hooks, Linux, LinuxCapabilities, LinuxIOPriority, LinuxIdMapping, Mount, PosixRlimit, Process,
    Root, Scheduler, Solaris, Spec, User, Windows, VM, ZOS,
};
use serde::Deserialize;

use super::launch::LaunchError;

/// A runtime spec's top level, as the runtime spec names its fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    #[serde(default)]
    oci_version: String,
    root: Option<Root>,
    mounts: Option<Vec<Mount>>,
    process: Option<ProcessFields>,
    hostname: Option<String>,
    domainname: Option<String>,
    hooks: Option<Hooks>,
    annotations: Option<HashMap<String, String>>,
    linux: Option<Linux>,
    solaris: Option<Solaris>,
    windows: Option<Windows>,
    vm: Option<VM>,
    zos: Option<ZOS>,
    // Not runtime-spec fields, but oci-spec reads them, and the shim refuses them.
    uid_mappings: Option<Vec<LinuxIdMapping>>,
    gid_mappings: Option<Vec<LinuxIdMapping>>,
}

/// `process`, field by field: oci-spec's `Process` has the same names, types and required
/// fields (`user`, `cwd`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessFields {
    terminal: Option<bool>,
    console_size: Option<oci_spec::runtime::Box>,
    user: User,
    args: Option<Vec<String>>,
    command_line: Option<String>,
    env: Option<Vec<String>>,
    cwd: PathBuf,
    capabilities: Option<LinuxCapabilities>,
    rlimits: Option<Vec<PosixRlimit>>,
    no_new_privileges: Option<bool>,
    apparmor_profile: Option<String>,
    oom_score_adj: Option<i32>,
    selinux_label: Option<String>,
    io_priority: Option<LinuxIOPriority>,
    scheduler: Option<Scheduler>,
    /// Only whether it is there: the shim does not honour it.
    #[serde(rename = "execCPUAffinity")]
    exec_cpu_affinity: Option<serde::de::IgnoredAny>,
}

impl ProcessFields {
    fn into_process(self) -> Result<Process, LaunchError> {
        if self.exec_cpu_affinity.is_some() {
            return Err(LaunchError::Unsupported("process.execCPUAffinity".into()));
        }
        let mut p = Process::default();
        p.set_terminal(self.terminal)
            .set_console_size(self.console_size)
            .set_user(self.user)
            .set_args(self.args)
            .set_command_line(self.command_line)
            .set_env(self.env)
            .set_cwd(self.cwd)
            .set_capabilities(self.capabilities)
            .set_rlimits(self.rlimits)
            .set_no_new_privileges(self.no_new_privileges)
            .set_apparmor_profile(self.apparmor_profile)
            .set_oom_score_adj(self.oom_score_adj)
            .set_selinux_label(self.selinux_label)
            .set_io_priority(self.io_priority)
            .set_scheduler(self.scheduler)
            .set_exec_cpu_affinity(None);
        Ok(p)
    }
}

/// Failed to read a launch config: its JSON, or a field the shim refuses before anything
/// else is looked at.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("parse launch config: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// The runtime spec in `text`, as `serde_json::from_str::<Spec>` reads it.
pub fn spec(text: &str) -> Result<Spec, ReadError> {
    let fields: SpecFields = serde_json::from_str(text)?;
    let process = fields
        .process
        .map(ProcessFields::into_process)
        .transpose()?;
    let mut spec = Spec::default();
    spec.set_version(fields.oci_version)
        .set_root(fields.root)
        .set_mounts(fields.mounts)
        .set_process(process)
        .set_hostname(fields.hostname)
        .set_domainname(fields.domainname)
        .set_hooks(fields.hooks)
        .set_annotations(fields.annotations)
        .set_linux(fields.linux)
        .set_solaris(fields.solaris)
        .set_windows(fields.windows)
        .set_vm(fields.vm)
        .set_zos(fields.zos);
    #[allow(deprecated)] // Read so that the shim can refuse them, as it did.
    spec.set_uid_mappings(fields.uid_mappings)
        .set_gid_mappings(fields.gid_mappings);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with every field of `process` and of the top level set.
    const FULL: &str = r#"{
        "ociVersion": "1.2.0",
        "root": {"path": "/r", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
        "process": {
            "terminal": true,
            "consoleSize": {"height": 24, "width": 80},
            "user": {"uid": 1, "gid": 2, "umask": 18, "additionalGids": [3], "username": "u"},
            "args": ["sh", "-c", "true"],
            "commandLine": "sh",
            "env": ["A=1"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 5}],
            "noNewPrivileges": true,
            "apparmorProfile": "p",
            "oomScoreAdj": -5,
            "selinuxLabel": "l",
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 3},
            "scheduler": {"policy": "SCHED_OTHER", "nice": 1}
        },
        "hostname": "h",
        "domainname": "d",
        "hooks": {"prestart": [{"path": "/bin/true"}]},
        "annotations": {"io.wpod.pod": "web"},
        "linux": {"namespaces": [{"type": "mount"}], "maskedPaths": ["/proc/kcore"]},
        "vm": {"hypervisor": {"path": "/hv"}, "kernel": {"path": "/k"}},
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "unknownField": {"ignored": "as oci-spec ignores it"}
    }"#;

    #[test]
    fn a_config_reads_as_oci_spec_reads_it() {
        let ours = spec(FULL).unwrap();
        let theirs: Spec = serde_json::from_str(FULL).unwrap();
        assert_eq!(ours, theirs);
        let process = ours.process().as_ref().unwrap();
        assert_eq!(process.oom_score_adj(), Some(-5));
        assert_eq!(process.cwd(), &PathBuf::from("/srv"));
        // No process, no root: None, as oci-spec reads it (not its defaults).
        let bare = r#"{"ociVersion": "1.2.0"}"#;
        assert_eq!(
            spec(bare).unwrap(),
            serde_json::from_str::<Spec>(bare).unwrap()
        );
    }

    #[test]
    fn what_oci_spec_refuses_is_refused_and_exec_cpu_affinity_by_name() {
        // A process without its required cwd.
        let no_cwd = r#"{"process": {"user": {"uid": 0, "gid": 0}, "args": ["x"]}}"#;
        assert!(serde_json::from_str::<Spec>(no_cwd).is_err());
        assert!(matches!(spec(no_cwd), Err(ReadError::Json(_))));
        let affinity = r#"{"process": {"user": {"uid": 0, "gid": 0}, "cwd": "/",
            "execCPUAffinity": {"initial": "0-3", "final": "1"}}}"#;
        let e = spec(affinity).unwrap_err().to_string();
        assert_eq!(e, "process.execCPUAffinity is not supported by wpod's shim");
    }
}
