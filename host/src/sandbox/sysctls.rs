//! A pod's `securityContext.sysctls`: namespaced sysctls (Kubernetes' safe set, checked when
//! the file is read), written from a thread that joined the pod's network and IPC namespaces,
//! since `/proc/sys/net` and the IPC sysctls are those of the namespace of the task that writes.

use std::os::fd::AsFd;

use nix::sched::{setns, CloneFlags};

use super::namespaces::NamespacePaths;
use super::SandboxError;

/// Sets each `(name, value)` in the pod's namespaces.
pub fn set(paths: &NamespacePaths, sysctls: &[(String, String)]) -> Result<(), SandboxError> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).map_err(|e| SandboxError::io("open the pod's namespace", p, e))
    };
    let (net, ipc) = (open(&paths.net)?, open(&paths.ipc)?);
    let sysctls = sysctls.to_vec();
    let thread = std::thread::Builder::new()
        .name("wpod-sysctls".into())
        .spawn(move || -> Result<(), SandboxError> {
            super::namespaces::join_net(net.as_fd()).map_err(|e| {
                SandboxError::sys(
                    "join the pod's network namespace",
                    std::path::Path::new("net"),
                    e,
                )
            })?;
            setns(ipc.as_fd(), CloneFlags::CLONE_NEWIPC).map_err(|e| {
                SandboxError::sys(
                    "join the pod's IPC namespace",
                    std::path::Path::new("ipc"),
                    e,
                )
            })?;
            for (name, value) in &sysctls {
                let file = std::path::PathBuf::from("/proc/sys").join(name.replace('.', "/"));
                std::fs::write(&file, value).map_err(|e| {
                    SandboxError::io(format!("set sysctl {name}={value}"), &file, e)
                })?;
            }
            Ok(())
        })
        .map_err(|e| SandboxError::step("start the sysctl thread", e))?;
    thread
        .join()
        .map_err(|_| SandboxError::step("set the pod's sysctls", "the thread panicked"))?
}
