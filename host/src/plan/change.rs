//! What `wpod apply` may change in a running pod, decided by comparing two plans: Wasm sidecars
//! are added, replaced or removed; everything else is immutable while the pod runs, as
//! Kubernetes holds a Pod's fields immutable, and a change to it is refused naming each field.

use std::collections::BTreeSet;

use serde_json::Value;

use std::net::{IpAddr, Ipv4Addr};

use super::{ContainerPlan, PodPlan, PortMapping};
use crate::spec::{Diagnostic, Diagnostics, Role};

/// A change a running pod can take: its Wasm sidecars, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodChange {
    /// Sidecars new in the manifest.
    pub added: Vec<String>,
    /// Sidecars whose manifest entry (or component) changed, with the fields that did.
    pub replaced: Vec<(String, Vec<String>)>,
    /// Sidecars gone from the manifest.
    pub removed: Vec<String>,
    /// Projected volumes whose files changed (a ConfigMap or Secret of the file did): written
    /// again in place while the pod runs, as the kubelet updates them.
    pub refreshed: Vec<String>,
}

impl PodChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.replaced.is_empty()
            && self.removed.is_empty()
            && self.refreshed.is_empty()
    }

    /// Whether containers start or stop (a change of files alone touches none).
    pub fn touches_containers(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }

    /// Names of the sidecars to start: added and replaced.
    pub fn to_start(&self) -> Vec<String> {
        self.replaced
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.added.iter().cloned())
            .collect()
    }

    /// Names of the sidecars to stop: replaced and removed.
    pub fn to_stop(&self) -> Vec<String> {
        self.replaced
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.removed.iter().cloned())
            .collect()
    }
}

/// What the pod's sandbox fixed when it started, which no live change can alter.
#[derive(Clone, Debug, Default)]
pub struct StartedWith {
    /// The hostPorts it publishes (until the pod ends).
    pub published: Vec<PortMapping>,
    /// The volumes its native containers mount `nosymfollow` (some sidecar could write them).
    pub nosymfollow: BTreeSet<String>,
}

impl StartedWith {
    pub fn of(plan: &PodPlan) -> Self {
        StartedWith {
            published: plan.port_mappings.clone(),
            nosymfollow: plan.nosymfollow_volumes.clone(),
        }
    }
}

/// Compares the running pod's plan with a new one. Every refused change is reported, located
/// in the new manifest.
pub fn compare(
    old: &PodPlan,
    new: &PodPlan,
    started_with: &StartedWith,
) -> Result<PodChange, Diagnostics> {
    let published = &started_with.published;
    let mut diags = Vec::new();
    let refuse = |diags: &mut Vec<Diagnostic>, field: String, why: &str| {
        diags.push(new.pod.source.diag(field, why.to_string()));
    };
    if old.name != new.name {
        refuse(
            &mut diags,
            "metadata.name".into(),
            &format!(
                "the running pod is \"{}\"; a manifest for another pod cannot be applied to it",
                old.name()
            ),
        );
        return Err(Diagnostics(diags));
    }
    // Pod-level fields: everything but the containers, whose own rules follow.
    let pod_fields = |p: &PodPlan| {
        let mut spec = serde_json::to_value(&p.pod.spec).unwrap_or_default();
        if let Some(o) = spec.as_object_mut() {
            o.remove("containers");
            o.remove("initContainers");
        }
        let annotations = serde_json::to_value(&p.pod.metadata.annotations).unwrap_or_default();
        (spec, annotations)
    };
    let ((old_spec, old_ann), (new_spec, new_ann)) = (pod_fields(old), pod_fields(new));
    for field in changed_fields("spec", &old_spec, &new_spec) {
        refuse(
            &mut diags,
            field,
            "a pod-level field cannot change while the pod runs; stop the pod and run it again",
        );
    }
    if old_ann != new_ann {
        refuse(
            &mut diags,
            "metadata.annotations".into(),
            "the pod's annotations (wpod's settings) cannot change while it runs; stop the pod and run it again",
        );
    }

    // The main container (the first regular one) is the pod's: its exit code is the pod's.
    let main = |p: &PodPlan| {
        p.containers
            .iter()
            .find(|c| c.role == Role::Regular)
            .map(|c| c.name().to_string())
    };
    let old_main = main(old);
    if old_main != main(new) {
        refuse(
            &mut diags,
            "spec.containers[0]".into(),
            &format!(
                "the main container \"{}\" must stay the first in spec.containers while the pod runs",
                old_main.as_deref().unwrap_or("")
            ),
        );
    }
    let mut change = PodChange::default();
    for c in &new.containers {
        match old.containers.iter().find(|o| o.name() == c.name()) {
            None if !c.image.is_wasm() => refuse(
                &mut diags,
                c.path.clone(),
                &format!(
                    "container \"{}\" is new, but only Wasm sidecars can be added to a running pod; stop the pod and run it again",
                    c.name()
                ),
            ),
            None if c.role == Role::Init => refuse(
                &mut diags,
                c.path.clone(),
                &format!(
                    "init container \"{}\" is new, but init containers run only before the pod starts; give it restartPolicy: Always to add it as a sidecar",
                    c.name()
                ),
            ),
            None => {
                check_ports(new, c, published, &mut diags);
                change.added.push(c.name().to_string());
            }
            Some(o) => compare_container(new, o, c, published, &mut change, &mut diags),
        }
    }
    for o in &old.containers {
        if new.containers.iter().any(|c| c.name() == o.name()) {
            continue;
        }
        if o.image.is_wasm() && o.role != Role::Init {
            change.removed.push(o.name().to_string());
        } else {
            let list = match o.role {
                Role::Regular => "spec.containers",
                _ => "spec.initContainers",
            };
            refuse(
                &mut diags,
                list.into(),
                &format!(
                    "container \"{}\" ({}) is gone from the manifest, but only Wasm sidecars can be removed from a running pod",
                    o.name(),
                    o.path
                ),
            );
        }
    }
    // ConfigMaps and Secrets may change while the pod runs: their volumes are written again.
    for v in &new.volumes {
        let (super::VolumeKind::Files(files), Some(old)) =
            (&v.kind, old.volumes.iter().find(|o| o.name == v.name))
        else {
            continue;
        };
        if !matches!(&old.kind, super::VolumeKind::Files(f) if f == files) {
            change.refreshed.push(v.name.clone());
        }
    }
    // Native containers mount the volumes a sidecar may write `nosymfollow`, decided when they
    // started: a sidecar may not gain write access to another volume under them.
    for volume in new.nosymfollow_volumes.difference(&old.nosymfollow_volumes) {
        let writer = new
            .containers
            .iter()
            .filter(|c| c.image.is_wasm())
            .find_map(|c| {
                c.spec
                    .volume_mounts
                    .iter()
                    .position(|m| &m.name == volume && !m.read_only)
                    .map(|i| format!("{}.volumeMounts[{i}].readOnly", c.path))
            });
        refuse(
            &mut diags,
            writer.unwrap_or_else(|| "spec.volumes".into()),
            &format!(
                "no sidecar could write volume \"{volume}\" when the pod started, so its native containers mount it without protection from a sidecar's symlinks; mount it readOnly, or stop the pod and run it again"
            ),
        );
    }
    if diags.is_empty() {
        Ok(change)
    } else {
        diags.sort_by_key(|d| d.loc);
        Err(Diagnostics(diags))
    }
}

/// One container in both plans: unchanged, a Wasm sidecar to replace, or a refused change.
fn compare_container(
    new_plan: &PodPlan,
    old: &ContainerPlan,
    new: &ContainerPlan,
    published: &[PortMapping],
    change: &mut PodChange,
    diags: &mut Vec<Diagnostic>,
) {
    let refuse = |diags: &mut Vec<Diagnostic>, field: String, why: String| {
        diags.push(new_plan.pod.source.diag(field, why));
    };
    if old.role != new.role {
        refuse(
            diags,
            new.path.clone(),
            format!(
                "container \"{}\" moved from {} to {}; a container's place in the pod cannot change while it runs",
                new.name(),
                old.path,
                new.path
            ),
        );
        return;
    }
    let old_spec = serde_json::to_value(&old.spec).unwrap_or_default();
    let new_spec = serde_json::to_value(&new.spec).unwrap_or_default();
    let mut fields = changed_fields(&new.path, &old_spec, &new_spec);
    // The same reference can name another component: a tag moved, a digest pinned.
    if old.image != new.image && !fields.iter().any(|f| f.ends_with(".image")) {
        fields.push(format!("{}.image", new.path));
    }
    if fields.is_empty() {
        return;
    }
    let is_main = new.role == Role::Regular
        && new_plan
            .containers
            .iter()
            .find(|c| c.role == Role::Regular)
            .is_some_and(|m| m.name() == new.name());
    if !(old.image.is_wasm() && new.image.is_wasm()) || new.role == Role::Init || is_main {
        let what = if new.role == Role::Init {
            "an init container"
        } else if !(old.image.is_wasm() && new.image.is_wasm()) {
            "a native container"
        } else {
            "the pod's main container"
        };
        for field in fields {
            refuse(
                diags,
                field,
                format!(
                    "container \"{}\" is {what}: it cannot change while the pod runs (only Wasm sidecars can); stop the pod and run it again",
                    new.name()
                ),
            );
        }
        return;
    }
    check_ports(new_plan, new, published, diags);
    let prefix = format!("{}.", new.path);
    let short = fields
        .iter()
        .map(|f| f.strip_prefix(&prefix).unwrap_or(f).to_string())
        .collect();
    change.replaced.push((new.name().to_string(), short));
}

/// hostPorts are published by the sandbox when the pod starts: a sidecar may use those (its
/// own, or a removed one's), no others.
fn check_ports(
    new_plan: &PodPlan,
    new: &ContainerPlan,
    published: &[PortMapping],
    diags: &mut Vec<Diagnostic>,
) {
    let pod_ip = |ip: &Option<String>| {
        ip.as_deref()
            .map_or(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |ip| {
                ip.parse().ok()
            })
    };
    for (i, p) in new.spec.ports.iter().enumerate() {
        let Some(host_port) = p.host_port else {
            continue;
        };
        let known = published.iter().any(|m| {
            m.host_port == host_port
                && m.container_port == p.container_port
                && Some(m.host_ip) == pod_ip(&p.host_ip)
        });
        if !known {
            diags.push(new_plan.pod.source.diag(
                format!("{}.ports[{i}].hostPort", new.path),
                format!(
                    "hostPort {host_port} -> {} was not published when the pod started; hostPorts are published only then (containerPort can change); stop the pod and run it again",
                    p.container_port
                ),
            ));
        }
    }
}

/// Whether `new` is `old` unchanged (the same name and manifest fields): what `wpod apply`
/// leaves running as it runs, without pulling its image again (as the kubelet does).
pub fn unchanged(old: &ContainerPlan, new: &ContainerPlan) -> bool {
    old.name() == new.name()
        && serde_json::to_value(&old.spec).ok() == serde_json::to_value(&new.spec).ok()
}

/// The fields under `path` that differ between `a` and `b`: an object's keys one by one (a
/// key missing on one side is a change), anything else as a whole.
fn changed_fields(path: &str, a: &Value, b: &Value) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .filter(|k| x.get(*k) != y.get(*k))
                .map(|k| format!("{path}.{k}"))
                .collect()
        }
        _ if a == b => Vec::new(),
        _ => vec![path.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(yaml: &str) -> PodPlan {
        let pods = crate::spec::parse(Path::new("pod.yaml"), yaml).expect("parses");
        super::super::plan(&pods[0]).unwrap_or_else(|d| panic!("{d}"))
    }

    const BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - {name: main, command: [sleep, "60"]}
"#;

    #[test]
    fn native_changes_are_refused_naming_each_field() {
        let old = plan(BASE);
        let new = plan(&BASE.replace(
            "[sleep, \"60\"]",
            "[sleep, \"61\"]}\n  - {name: extra, command: [\"true\"]",
        ));
        let err = compare(&old, &new, &StartedWith::of(&old))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.containers[0].command"), "{err}");
        assert!(err.contains("native container"), "{err}");
        assert!(err.contains("container \"extra\" is new"), "{err}");
    }

    #[test]
    fn pod_level_fields_and_another_pod_are_refused() {
        let old = plan(BASE);
        let grace = plan(&BASE.replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 3\n"));
        let err = compare(&old, &grace, &StartedWith::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.terminationGracePeriodSeconds"), "{err}");
        let other = plan(&BASE.replace("name: p}", "name: q}"));
        let err = compare(&old, &other, &StartedWith::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata.name"), "{err}");
        assert!(compare(&old, &plan(BASE), &StartedWith::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn changed_fields_names_keys() {
        let a = serde_json::json!({"image": "a", "env": [1], "args": []});
        let b = serde_json::json!({"image": "b", "env": [1], "ports": []});
        assert_eq!(
            changed_fields("c", &a, &b),
            vec!["c.args", "c.image", "c.ports"]
        );
    }
}
