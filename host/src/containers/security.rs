//! Privileges of a container process, applied in the container just before exec: the
//! capability bounding set of a container runtime, user and group, `no_new_privs`.

use std::collections::HashSet;
use std::str::FromStr;

use std::os::fd::BorrowedFd;

use caps::{CapSet, Capability};
use nix::sched::CloneFlags;
use nix::unistd::{setgid, setgroups, setresgid, setresuid, setuid, Gid, Uid};

use super::launch::SecuritySpec;
use crate::helper::StepError;

pub use crate::plan::native::{capability_set, DEFAULT_CAPABILITIES};

/// The container's seccomp program, built before forking (it allocates), or `None` when the
/// container runs unconfined.
pub(super) fn seccomp_program(
    sec: &SecuritySpec,
) -> Result<Option<seccompiler::BpfProgram>, StepError> {
    let Some(seccomp) = &sec.seccomp else {
        return Ok(None);
    };
    super::seccomp::program(seccomp)
        .map(Some)
        .map_err(|e| StepError::msg("build the seccomp filter", e))
}

/// Joins the pod's own user namespace (`hostUsers: false`) and becomes its root: from here on
/// every capability the process holds counts there only, and the container's user and groups
/// are the pod's IDs.
pub(super) fn join_user_namespace(userns: BorrowedFd<'_>) -> Result<(), StepError> {
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| StepError::msg("join the pod's user namespace (setns)", e.desc()))?;
    become_root_of_user_namespace()
}

/// After joining a user namespace, the process is still the host's root, which that namespace
/// does not map. Becoming its root first makes the change to the container's user follow the
/// usual rule: leaving root (0) clears the capabilities, as it would on the host.
pub(crate) fn become_root_of_user_namespace() -> Result<(), StepError> {
    let root =
        |e: nix::Error| StepError::msg("become the root of the pod's user namespace", e.desc());
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(root)?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(root)
}

/// Installs the seccomp filter, then applies the rest of `sec`. The filter goes first, while
/// the process still holds CAP_SYS_ADMIN (so it needs no `no_new_privs`); everything after it
/// (dropping capabilities, changing user, exec) is allowed by the filter.
pub(super) fn confine(
    sec: &SecuritySpec,
    seccomp: Option<&seccompiler::BpfProgram>,
) -> Result<(), StepError> {
    if let Some(program) = seccomp {
        super::seccomp::install(program).map_err(|e| StepError::msg("install seccomp", e))?;
    }
    apply(sec)
}

/// Applies `sec` to the calling process (the container, about to exec).
fn apply(sec: &SecuritySpec) -> Result<(), StepError> {
    let mut keep = HashSet::new();
    for name in &sec.capabilities {
        let cap = Capability::from_str(name)
            .map_err(|e| StepError::msg("parse capabilities", format!("{name}: {e}")))?;
        keep.insert(cap);
    }
    // The bounding set limits what any later exec can ever hold; dropping needs CAP_SETPCAP,
    // so it comes before changing user.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| StepError::msg("drop capabilities", e.to_string()))?;
        }
    }
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| StepError::msg("clear inheritable capabilities", e.to_string()))?;
    let _ = caps::clear(None, CapSet::Ambient); // absent on old kernels

    let groups: Vec<Gid> = sec
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).map_err(|e| StepError::msg("setgroups", e.to_string()))?;
    setgid(Gid::from_raw(sec.gid))
        .map_err(|e| StepError::msg(format!("setgid {}", sec.gid), e.to_string()))?;
    // For a non-root user the kernel clears the permitted and effective sets here.
    setuid(Uid::from_raw(sec.uid))
        .map_err(|e| StepError::msg(format!("setuid {}", sec.uid), e.to_string()))?;
    if sec.uid == 0 {
        caps::set(None, CapSet::Effective, &keep)
            .map_err(|e| StepError::msg("set effective capabilities", e.to_string()))?;
        caps::set(None, CapSet::Permitted, &keep)
            .map_err(|e| StepError::msg("set permitted capabilities", e.to_string()))?;
    } else {
        // The kernel has cleared them (the change from root did); said, not assumed.
        caps::clear(None, CapSet::Effective)
            .map_err(|e| StepError::msg("clear effective capabilities", e.to_string()))?;
        caps::clear(None, CapSet::Permitted)
            .map_err(|e| StepError::msg("clear permitted capabilities", e.to_string()))?;
    }
    if sec.no_new_privs {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(StepError::msg(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Capabilities, Capability as Cap};

    #[test]
    fn capability_set_follows_add_and_drop() {
        let caps = |add: &[&str], drop: &[&str]| {
            let parse = |v: &[&str]| v.iter().filter_map(|x| Cap::parse(x)).collect::<Vec<_>>();
            Capabilities {
                add: parse(add),
                drop: parse(drop),
            }
        };
        let all_dropped = capability_set(&caps(&["NET_ADMIN"], &["ALL"]));
        assert_eq!(all_dropped, ["CAP_NET_ADMIN"]);
        let defaults = capability_set(&caps(&[], &["KILL", "CAP_NET_RAW"]));
        assert!(defaults.contains(&"CAP_CHOWN".to_string()));
        assert!(!defaults.contains(&"CAP_KILL".to_string()));
        assert!(!defaults.contains(&"CAP_NET_RAW".to_string()));
        assert!(!defaults.contains(&"CAP_SYS_ADMIN".to_string()));
    }
}
