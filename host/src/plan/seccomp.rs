//! Seccomp profiles as data, in the format Docker, podman and the kubelet's `Localhost`
//! profiles use (moby's `seccomp.Seccomp`: the OCI `linux.seccomp` object plus `archMap` and
//! rules that apply only with some capabilities, on some architectures or from some kernel).
//!
//! `RuntimeDefault` is moby's default profile itself (`seccomp-default.json`, from
//! github.com/moby/profiles, `seccomp/default.json` at tag `seccomp/v0.2.3`, Apache-2.0);
//! `Localhost` profiles are read from [`localhost_root`]. [`Profile::resolve`] applies a
//! profile to one container on this host, as moby's `setupSeccomp` does: what is left is the
//! OCI runtime spec's `linux.seccomp` (a default action and plain rules), which goes into the
//! container's launch config and `containers::seccomp` compiles.
//!
//! Parsing is strict (unknown fields are refused): for a security filter a misspelt
//! `exludes` must fail closed, not silently allow.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::{Deserialize, Serialize};

/// moby's default profile.
const RUNTIME_DEFAULT: &str = include_str!("seccomp-default.json");

/// The largest profile read.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// What a profile does on a matching call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// How an argument is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    /// `(arg & value) == valueTwo`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    pub index: u8,
    pub value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_two: Option<u64>,
    pub op: Op,
}

/// A profile as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub default_action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// containers/common's spelling of the errno's name, beside the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno: Option<String>,
    /// Go writes `null` for an empty list: every list is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<Rule>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The old single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Arg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

/// When a rule applies: all of `includes`, none of `excludes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Kernel spelling (`CAP_SYS_ADMIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// libseccomp's names (`amd64`, `arm64`, `x86`, `s390x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    /// `MAJOR.MINOR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl From<Action> for LinuxSeccompAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Allow => LinuxSeccompAction::ScmpActAllow,
            Action::Errno => LinuxSeccompAction::ScmpActErrno,
            Action::Kill => LinuxSeccompAction::ScmpActKill,
            Action::KillThread => LinuxSeccompAction::ScmpActKillThread,
            Action::KillProcess => LinuxSeccompAction::ScmpActKillProcess,
            Action::Trap => LinuxSeccompAction::ScmpActTrap,
            Action::Trace => LinuxSeccompAction::ScmpActTrace,
            Action::Log => LinuxSeccompAction::ScmpActLog,
            Action::Notify => LinuxSeccompAction::ScmpActNotify,
        }
    }
}

impl From<&Arg> for LinuxSeccompArg {
    fn from(a: &Arg) -> Self {
        let op = match a.op {
            Op::Ne => LinuxSeccompOperator::ScmpCmpNe,
            Op::Lt => LinuxSeccompOperator::ScmpCmpLt,
            Op::Le => LinuxSeccompOperator::ScmpCmpLe,
            Op::Eq => LinuxSeccompOperator::ScmpCmpEq,
            Op::Ge => LinuxSeccompOperator::ScmpCmpGe,
            Op::Gt => LinuxSeccompOperator::ScmpCmpGt,
            Op::MaskedEq => LinuxSeccompOperator::ScmpCmpMaskedEq,
        };
        let mut arg = LinuxSeccompArgBuilder::default()
            .index(usize::from(a.index))
            .value(a.value)
            .op(op);
        if let Some(two) = a.value_two {
            arg = arg.value_two(two);
        }
        // The builder fails only on a missing field, and every field has a default.
        arg.build()
            .expect("every field of LinuxSeccompArg has a default")
    }
}

/// libseccomp's name of this machine's architecture, as profiles' `arches` spell it.
pub const NATIVE_ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    std::env::consts::ARCH
};

/// What is wrong with a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("not a seccomp profile: {0}")]
    Parse(String),
    #[error("both architectures and archMap are given; write one")]
    Architectures,
    #[error("SCMP_ACT_NOTIFY and listenerPath need a seccomp agent, which wpod does not run")]
    Notify,
    #[error("filter flags ({0}) are not supported by wpod")]
    Flags(String),
    #[error("a rule gives both name and names; write names")]
    Names,
    #[error("minKernel \"{0}\" is not MAJOR.MINOR (such as 4.8)")]
    MinKernel(String),
    /// ERRNO 0 makes a call return success without doing anything: a dropped setuid or
    /// capset would leave the container its privileges.
    #[error("{0}: SCMP_ACT_ERRNO with errnoRet 0 makes a call seem to succeed without doing anything; use SCMP_ACT_ALLOW, or an error number such as 1 (EPERM)")]
    ErrnoZero(String),
    #[error(
        "{0}: an errno name without errnoRet; give the number (errnoRet), as the OCI format does"
    )]
    ErrnoName(String),
}

impl Profile {
    /// Parses and checks a profile (JSON).
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let profile: Profile =
            serde_json::from_str(text).map_err(|e| ProfileError::Parse(e.to_string()))?;
        if profile
            .architectures
            .as_ref()
            .is_some_and(|a| !a.is_empty())
            && profile.arch_map.as_ref().is_some_and(|m| !m.is_empty())
        {
            return Err(ProfileError::Architectures);
        }
        if profile.listener_path.is_some() || profile.default_action == Action::Notify {
            return Err(ProfileError::Notify);
        }
        if let Some(flags) = profile.flags.as_ref().filter(|f| !f.is_empty()) {
            return Err(ProfileError::Flags(flags.join(", ")));
        }
        let errno = |what: &str, action: Action, number: Option<u32>, name: &Option<String>| {
            if action == Action::Errno && number == Some(0) {
                return Err(ProfileError::ErrnoZero(what.to_string()));
            }
            if name.is_some() && number.is_none() {
                return Err(ProfileError::ErrnoName(what.to_string()));
            }
            Ok(())
        };
        errno(
            "defaultAction",
            profile.default_action,
            profile.default_errno_ret,
            &profile.default_errno,
        )?;
        for r in profile.syscalls.iter().flatten() {
            if r.action == Action::Notify {
                return Err(ProfileError::Notify);
            }
            let what = r
                .names
                .as_ref()
                .map(|n| n.join(", "))
                .or_else(|| r.name.clone())
                .unwrap_or_default();
            errno(&what, r.action, r.errno_ret, &r.errno)?;
            if r.name.is_some() && r.names.as_ref().is_some_and(|n| !n.is_empty()) {
                return Err(ProfileError::Names);
            }
            for f in [&r.includes, &r.excludes].into_iter().flatten() {
                if let Some(v) = &f.min_kernel {
                    min_kernel(v)?;
                }
            }
        }
        Ok(profile)
    }

    /// `RuntimeDefault`: moby's default profile.
    pub fn runtime_default() -> Profile {
        // The file is part of wpod; a test parses it.
        Profile::parse(RUNTIME_DEFAULT).unwrap_or_else(|e| panic!("seccomp-default.json: {e}"))
    }

    /// The profile for a container on this host, as moby's `setupSeccomp`: a rule applies
    /// when `includes` holds entirely (every capability in `capabilities`, the architecture
    /// among its `arches`, the kernel at least its `minKernel`) and `excludes` does not hold
    /// in any part. `arch` is libseccomp's name of the native architecture; `kernel` is
    /// `None` when unknown (then no `minKernel` is met).
    pub fn resolve(
        &self,
        arch: &str,
        capabilities: &[String],
        kernel: Option<(u32, u32)>,
    ) -> LinuxSeccomp {
        let has = |c: &String| capabilities.contains(c);
        // Checked by `parse`.
        let at_least = |v: &str| min_kernel(v).is_ok_and(|want| kernel.is_some_and(|k| k >= want));
        let mut rules = Vec::new();
        for r in self.syscalls.iter().flatten() {
            if let Some(x) = &r.excludes {
                if x.arches.iter().flatten().any(|a| a == arch)
                    || x.caps.iter().flatten().any(has)
                    || x.min_kernel.as_deref().is_some_and(at_least)
                {
                    continue;
                }
            }
            if let Some(i) = &r.includes {
                if i.arches
                    .as_ref()
                    .is_some_and(|a| !a.is_empty() && !a.iter().any(|a| a == arch))
                    || !i.caps.iter().flatten().all(has)
                    || i.min_kernel.as_deref().is_some_and(|v| !at_least(v))
                {
                    continue;
                }
            }
            let names = match &r.name {
                Some(one) => vec![one.clone()],
                None => r.names.clone().unwrap_or_default(),
            };
            let mut rule = LinuxSyscall::default();
            rule.set_names(names)
                .set_action(r.action.into())
                .set_errno_ret(r.errno_ret)
                .set_args(
                    r.args
                        .as_ref()
                        .filter(|a| !a.is_empty())
                        .map(|a| a.iter().map(LinuxSeccompArg::from).collect()),
                );
            rules.push(rule);
        }
        // Only the native ABI is filtered (`containers::seccomp`): no `architectures`, as
        // runc reads an empty list.
        let mut resolved = LinuxSeccomp::default();
        resolved
            .set_default_action(self.default_action.into())
            .set_default_errno_ret(self.default_errno_ret)
            .set_syscalls(Some(rules));
        resolved
    }

    /// [`Self::resolve`] for a container on this machine: its architecture, its kernel.
    pub fn resolve_here(&self, capabilities: &[String]) -> LinuxSeccomp {
        self.resolve(NATIVE_ARCH, capabilities, kernel_release())
    }
}

/// The running kernel's `(major, minor)`, `None` when uname cannot tell (then no rule that
/// needs a minimum kernel applies, as upstream).
pub fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates the field, which was zeroed besides.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    parse_release(&release)
}

/// `"6.8.0-45-generic"` -> `(6, 8)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn min_kernel(v: &str) -> Result<(u32, u32), ProfileError> {
    let bad = || ProfileError::MinKernel(v.to_string());
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    let k = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    match k {
        (0, 0) => Err(bad()),
        k => Ok(k),
    }
}

/// Where `Localhost` profiles are: `$WPOD_SECCOMP_ROOT`, else `/etc/wpod/seccomp` (the
/// kubelet's is `/var/lib/kubelet/seccomp`).
pub fn localhost_root() -> PathBuf {
    std::env::var_os("WPOD_SECCOMP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/wpod/seccomp"))
}

/// Why a `Localhost` profile cannot be used; the message of the field's diagnostic.
#[derive(Debug, thiserror::Error)]
pub enum LocalhostError {
    #[error(
        "\"{relative}\" must be a relative path under the profile root ({}) that does not \
         leave it (no .. and not absolute)",
        root.display()
    )]
    Outside { relative: String, root: PathBuf },
    #[error("{}: {}", path.display(), crate::error::chain(source))]
    Read {
        path: PathBuf,
        source: crate::files::ReadError,
    },
    #[error("{}: not UTF-8", path.display())]
    NotText { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Profile { path: PathBuf, source: ProfileError },
}

/// Reads the `Localhost` profile `relative` (a path under [`localhost_root`] that only
/// descends, as Kubernetes requires).
pub fn read_localhost(relative: &str) -> Result<Profile, LocalhostError> {
    let path = Path::new(relative);
    if relative.is_empty()
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(LocalhostError::Outside {
            relative: relative.to_string(),
            root: localhost_root(),
        });
    }
    let full = localhost_root().join(path);
    let bytes = crate::files::read_regular(&full, MAX_PROFILE_BYTES).map_err(|source| {
        LocalhostError::Read {
            path: full.clone(),
            source,
        }
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| LocalhostError::NotText { path: full.clone() })?;
    Profile::parse(&text).map_err(|source| LocalhostError::Profile { path: full, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    fn rules(r: &LinuxSeccomp) -> &[LinuxSyscall] {
        r.syscalls().as_deref().unwrap_or_default()
    }

    fn names(r: &LinuxSeccomp) -> Vec<&str> {
        rules(r)
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn the_default_profile_resolves_as_moby_does() {
        let p = Profile::runtime_default();
        assert_eq!(p.default_action, Action::Errno);
        assert_eq!(p.default_errno_ret, Some(1));
        let plain = p.resolve("amd64", &caps(&["CAP_KILL"]), Some((6, 1)));
        let allowed = names(&plain);
        for name in ["read", "openat", "arch_prctl", "ptrace"] {
            assert!(allowed.contains(&name), "{name} not allowed");
        }
        for name in [
            "mount",
            "unshare",
            "bpf",
            "reboot",
            "sync_file_range2",
            "lsm_set_self_attr",
        ] {
            assert!(!allowed.contains(&name), "{name} allowed");
        }
        // Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 ENOSYS.
        assert!(rules(&plain).iter().any(|r| r.names() == &["clone3"]
            && r.action() == LinuxSeccompAction::ScmpActErrno
            && r.errno_ret() == Some(38)));
        let clone_flags = Arg {
            index: 0,
            value: 0x7E02_0000,
            value_two: None,
            op: Op::MaskedEq,
        };
        assert!(rules(&plain).iter().any(|r| r.names() == &["clone"]
            && r.args().as_deref() == Some(&[LinuxSeccompArg::from(&clone_flags)][..])));
        // ptrace only from 4.8.
        assert!(!names(&p.resolve("amd64", &[], Some((4, 4)))).contains(&"ptrace"));
        assert!(!names(&p.resolve("amd64", &[], None)).contains(&"ptrace"));
        // With CAP_SYS_ADMIN: mount allowed, and neither clone rule nor clone3's ENOSYS.
        let admin = p.resolve("amd64", &caps(&["CAP_SYS_ADMIN"]), Some((6, 1)));
        assert!(names(&admin).contains(&"mount"));
        assert!(!rules(&admin)
            .iter()
            .any(|r| r.names() == &["clone3"] && r.action() == LinuxSeccompAction::ScmpActErrno));
        // Another architecture's rules only there.
        assert!(names(&p.resolve("arm64", &[], Some((6, 1)))).contains(&"sync_file_range2"));
        assert!(!names(&p.resolve("arm64", &[], Some((6, 1)))).contains(&"arch_prctl"));
    }

    #[test]
    fn profiles_are_parsed_strictly() {
        let ok = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        assert!(Profile::parse(ok).is_ok());
        for (bad, says) in [
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","exludes":{}}]}"#,
                "unknown field `exludes`",
            ),
            (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, "agent"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x"}"#,
                "agent",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"]}"#,
                "flags",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                "archMap",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "name and names",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"four"}}]}"#,
                "MAJOR.MINOR",
            ),
            (r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "unknown variant"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["setuid"],"action":"SCMP_ACT_ERRNO","errnoRet":0}]}"#,
                "setuid: SCMP_ACT_ERRNO with errnoRet 0",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrno":"ENOSYS"}"#,
                "errno name without errnoRet",
            ),
        ] {
            let e = Profile::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn localhost_paths_stay_under_the_root() {
        for bad in ["", "/etc/passwd", "../x.json", "profiles/../../x.json"] {
            let e = read_localhost(bad).unwrap_err();
            assert!(matches!(e, LocalhostError::Outside { .. }), "{bad}: {e}");
            assert!(
                e.to_string()
                    .contains("relative path under the profile root"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("5"), None);
        assert_eq!(parse_release(""), None);
        assert!(kernel_release().is_some_and(|k| k >= (3, 0)));
    }
}
