//! `spec.hostUsers`: whether the pod runs in the host's user namespace (its root is the host's
//! root, with a bounded set of capabilities) or in one of its own, where its IDs 0-65535 are an
//! unprivileged range of the host's (the sandbox leases it: `sandbox::userns`).
//!
//! The pod's own field wins; a pod that does not set it takes the host's default: the word
//! `false` or `true` in `$WPOD_HOST_USERS`, else in `/etc/wpod/host-users`, else `true` (the
//! host's users, as Kubernetes' own default). A pod on the host's network keeps the host's
//! users whatever the default says: the API server refuses `hostUsers: false` with it.

use std::path::PathBuf;

use crate::spec::{Diagnostic, Pod};

/// How many IDs a pod's user namespace maps: 0-65535, as the kubelet gives a pod.
pub const IDS_PER_POD: u32 = 65536;

/// The file of the host's default.
pub fn default_file() -> PathBuf {
    PathBuf::from("/etc/wpod/host-users")
}

/// The host's default for pods that do not set `hostUsers`, and where it was read (for
/// messages); a value that is neither `true` nor `false` is an error naming where it is.
pub fn host_default() -> Result<(bool, String), String> {
    let (text, source) = match std::env::var("WPOD_HOST_USERS") {
        Ok(v) => (v, "$WPOD_HOST_USERS".to_string()),
        Err(_) => {
            let file = default_file();
            match std::fs::read_to_string(&file) {
                Ok(v) => (v, file.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((true, "the built-in default".into()))
                }
                Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
            }
        }
    };
    let word = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    match word {
        "true" => Ok((true, source)),
        "false" => Ok((false, source)),
        other => Err(format!(
            "{source} says {other:?}: write true (pods share the host's users) or false \
             (each pod gets a user namespace of its own)"
        )),
    }
}

/// Whether the pod gets a user namespace of its own, with its IDs checked against the range
/// it will map (each located in `diags`).
pub fn user_namespace(
    pod: &Pod,
    default: Result<(bool, String), String>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let own = match pod.spec.host_users {
        Some(host_users) => !host_users,
        None if pod.spec.host_network => false,
        None => match default {
            Ok((host_users, _)) => !host_users,
            Err(e) => {
                diags.push(pod.source.diag("spec.hostUsers", e));
                return false;
            }
        },
    };
    if own {
        check_ids(pod, false, diags);
    }
    own
}

/// A rootless wpod's pod: it runs in the user's own user namespace, whose IDs 0-65536 are the
/// user and the user's subordinate range (`sandbox::rootless`), so it cannot have one of its own
/// (`hostUsers: false`), and every ID it names must be in that namespace.
pub fn check_rootless(pod: &Pod, own: bool, diags: &mut Vec<Diagnostic>) {
    match own {
        true => diags.push(pod.source.diag(
            "spec.hostUsers",
            "a rootless wpod cannot give a pod a user namespace of its own: its pods already \
             run in the user's, where their root is the user and their other IDs the user's \
             subordinate ones; remove hostUsers: false, or run the pod as root",
        )),
        false => check_ids(pod, true, diags),
    }
}

/// Every ID the manifest names must be inside the pod's range (as the kubelet refuses a
/// `runAsUser` it cannot map).
/// `rootless`: the namespace is a rootless wpod's, not the pod's own.
fn check_ids(pod: &Pod, rootless: bool, diags: &mut Vec<Diagnostic>) {
    let (whose, fix) = match rootless {
        false => ("the pod's user namespace", " (hostUsers: false)"),
        true => ("the user namespace of a rootless wpod", ""),
    };
    let other = match rootless {
        false => "hostUsers: true",
        true => "run the pod as root",
    };
    let mut check = |path: String, id: Option<u32>| {
        if let Some(id) = id.filter(|id| *id >= IDS_PER_POD) {
            diags.push(pod.source.diag(
                path,
                format!(
                    "{id} is outside {whose}, which maps IDs 0-{}{fix}; use an ID below \
                     {IDS_PER_POD}, or {other}",
                    IDS_PER_POD - 1
                ),
            ));
        }
    };
    let sc = &pod.spec.security_context;
    check("spec.securityContext.runAsUser".into(), sc.run_as_user);
    check("spec.securityContext.runAsGroup".into(), sc.run_as_group);
    check("spec.securityContext.fsGroup".into(), sc.fs_group);
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        check(
            format!("spec.securityContext.supplementalGroups[{i}]"),
            Some(*g),
        );
    }
    for (path, _, c) in pod.containers_in_order() {
        if let Some(sc) = &c.security_context {
            check(format!("{path}.securityContext.runAsUser"), sc.run_as_user);
            check(
                format!("{path}.securityContext.runAsGroup"),
                sc.run_as_group,
            );
        }
    }
}

/// A container's IDs once its image's `USER` is resolved (the manifest's were checked by
/// [`user_namespace`]): refused, located at the field that would fix it, when the pod's user
/// namespace does not map them.
pub fn check_process(
    path: &str,
    p: &super::native::NativeProcess,
) -> Result<(), super::native::Refusal> {
    for (id, field) in [(p.uid, "runAsUser"), (p.gid, "runAsGroup")] {
        if id >= IDS_PER_POD {
            return Err((
                format!("{path}.securityContext.{field}"),
                format!(
                    "the image's user runs as {id}, outside the pod's user namespace, which \
                     maps IDs 0-{} (hostUsers: false): set {field} below {IDS_PER_POD}, or use \
                     hostUsers: true",
                    IDS_PER_POD - 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        let mut pods =
            crate::spec::parse(std::path::Path::new("pod.yaml"), yaml).expect("a valid pod");
        pods.remove(0)
    }

    const BASE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n";

    #[test]
    fn the_pods_field_wins_over_the_hosts_default() {
        let mut diags = Vec::new();
        let own = pod(&format!(
            "{BASE}  hostUsers: false\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert!(user_namespace(&own, Ok((true, "t".into())), &mut diags));
        let host = pod(&format!(
            "{BASE}  hostUsers: true\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert!(!user_namespace(&host, Ok((false, "t".into())), &mut diags));
        let unset = pod(&format!("{BASE}  containers: [{{name: a, image: x}}]\n"));
        assert!(user_namespace(&unset, Ok((false, "t".into())), &mut diags));
        assert!(!user_namespace(&unset, Ok((true, "t".into())), &mut diags));
        // The host's network keeps the host's users, whatever the default.
        let host_net = pod(&format!(
            "{BASE}  hostNetwork: true\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert!(!user_namespace(
            &host_net,
            Ok((false, "t".into())),
            &mut diags
        ));
        assert!(diags.is_empty(), "{diags:?}");
        // A default that is neither word is refused, naming where it was read.
        assert!(!user_namespace(
            &unset,
            Err("/etc/x says \"no\"".into()),
            &mut diags
        ));
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("/etc/x"), "{diags:?}");
    }

    #[test]
    fn a_rootless_wpod_refuses_a_user_namespace_of_the_pods_own_and_unmapped_ids() {
        let own = pod(&format!(
            "{BASE}  hostUsers: false\n  containers: [{{name: a, image: x}}]\n"
        ));
        let mut diags = Vec::new();
        check_rootless(&own, true, &mut diags);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].path, "spec.hostUsers");
        assert!(
            diags[0].message.contains("remove hostUsers: false"),
            "{diags:?}"
        );
        let far = pod(&format!(
            "{BASE}  containers:\n  - name: a\n    image: x\n    securityContext: {{runAsUser: 70000}}\n"
        ));
        let mut diags = Vec::new();
        check_rootless(&far, false, &mut diags);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(
            diags[0].message,
            "70000 is outside the user namespace of a rootless wpod, which maps IDs 0-65535; \
             use an ID below 65536, or run the pod as root"
        );
    }

    #[test]
    fn ids_outside_the_range_are_refused_where_they_are_written() {
        let p = pod(&format!(
            "{BASE}  hostUsers: false\n  securityContext: {{fsGroup: 70000, supplementalGroups: [5, 65536]}}\n  containers:\n  - name: a\n    image: x\n    securityContext: {{runAsUser: 65535, runAsGroup: 100000}}\n"
        ));
        let mut diags = Vec::new();
        assert!(user_namespace(&p, Ok((true, "t".into())), &mut diags));
        let paths: Vec<&str> = diags.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.securityContext.fsGroup",
                "spec.securityContext.supplementalGroups[1]",
                "spec.containers[0].securityContext.runAsGroup",
            ]
        );
        assert!(diags[0].message.contains("0-65535"), "{diags:?}");
    }

    /// An image's USER outside the range is refused at the field that fixes it.
    #[test]
    fn an_images_user_outside_the_range_is_refused_at_run_as_user() {
        let pods = crate::spec::parse(
            std::path::Path::new("pod.yaml"),
            &format!(
                "{BASE}  hostUsers: false\n  containers: [{{name: a, image: /, command: [sh]}}]\n"
            ),
        )
        .expect("a valid pod");
        let plan = crate::plan::plan(&pods[0])
            .expect("a valid pod")
            .with_native_processes(&[])
            .expect("planned");
        let mut p = plan.containers[0].process.clone().expect("a process");
        assert_eq!(check_process("spec.containers[0]", &p), Ok(()));
        p.uid = 70000;
        let (field, why) = check_process("spec.containers[0]", &p).unwrap_err();
        assert_eq!(field, "spec.containers[0].securityContext.runAsUser");
        assert!(
            why.contains("70000") && why.contains("hostUsers: true"),
            "{why}"
        );
        p.uid = 0;
        p.gid = 65536;
        let (field, _) = check_process("spec.containers[0]", &p).unwrap_err();
        assert_eq!(field, "spec.containers[0].securityContext.runAsGroup");
    }
}
