//! Where the scheduler would place the pod, on one host: the host is the only node, with the
//! labels a kubelet gives its node (`kubernetes.io/hostname`, `kubernetes.io/os`,
//! `kubernetes.io/arch`) and those of a documented file (`/etc/wpod/node-labels`, or
//! `$WPOD_NODE_LABELS`: `key=value` lines). A pod's `nodeSelector` and required node affinity
//! are checked against them: one the host does not meet could never be scheduled here, and is
//! refused with what the host has, instead of waiting forever as a Pending pod.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::spec::{Diagnostic, NodeSelectorTerm, Pod};

/// This host as a node: its name and labels.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Where more labels are read from.
    pub labels_file: PathBuf,
}

/// The file of the host's own labels.
pub fn labels_file() -> PathBuf {
    std::env::var_os("WPOD_NODE_LABELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/wpod/node-labels"))
}

impl Node {
    /// This host: the kubelet's well-known labels, then the file's (which may add to them or
    /// override them).
    pub fn here(hostname: &str) -> Node {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut labels = BTreeMap::from([
            (
                "kubernetes.io/hostname".to_string(),
                hostname.to_lowercase(),
            ),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
        ]);
        let file = labels_file();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.split_once('=') {
                    Some((k, v)) => {
                        labels.insert(k.trim().to_string(), v.trim().to_string());
                    }
                    None => {
                        tracing::warn!(file = %file.display(), line, "not a key=value label; ignored")
                    }
                }
            }
        }
        Node {
            name: hostname.to_lowercase(),
            labels,
            labels_file: file,
        }
    }

    fn meets(&self, term: &NodeSelectorTerm) -> bool {
        term.match_expressions
            .iter()
            .all(|r| r.holds(self.labels.get(&r.key).map(String::as_str)))
            && term.match_fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then_some(self.name.as_str());
                r.holds(value)
            })
    }

    fn has(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The pod's node requirements against `node`; what it does not meet, located.
pub fn check(pod: &Pod, node: &Node, diags: &mut Vec<Diagnostic>) {
    let why = |what: String| {
        format!(
            "{what}; this host has {} (add labels to {}): on one host the pod could never be scheduled",
            node.has(),
            node.labels_file.display()
        )
    };
    for (key, value) in &pod.spec.node_selector {
        if node.labels.get(key) != Some(value) {
            diags.push(pod.source.diag(
                format!("spec.nodeSelector.{key}"),
                why(format!("the host has no label {key}={value}")),
            ));
        }
    }
    let terms = &pod.spec.required_node_terms;
    if !terms.is_empty() && !terms.iter().any(|t| node.meets(t)) {
        diags.push(pod.source.diag(
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            why("the host meets none of the nodeSelectorTerms".to_string()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pod(spec: &str) -> Pod {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: placed}}\nspec:\n{spec}  containers:\n  - name: main\n    command: [x]\n"
        );
        crate::spec::parse(Path::new("pod.yaml"), &yaml)
            .expect("a valid pod")
            .remove(0)
    }

    fn node() -> Node {
        Node {
            name: "host-1".into(),
            labels: BTreeMap::from([
                ("kubernetes.io/hostname".into(), "host-1".into()),
                ("kubernetes.io/os".into(), "linux".into()),
                ("disk".into(), "ssd".into()),
                ("cores".into(), "8".into()),
            ]),
            labels_file: "/etc/wpod/node-labels".into(),
        }
    }

    fn refusals(spec: &str) -> Vec<String> {
        let mut diags = Vec::new();
        check(&pod(spec), &node(), &mut diags);
        diags.into_iter().map(|d| d.path).collect()
    }

    #[test]
    fn selectors_and_required_affinity_are_met_or_refused() {
        assert!(refusals("  nodeSelector: {disk: ssd, kubernetes.io/os: linux}\n").is_empty());
        assert_eq!(
            refusals("  nodeSelector: {disk: hdd}\n"),
            ["spec.nodeSelector.disk"]
        );
        let affinity = |exprs: &str| {
            format!(
                "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n{exprs}"
            )
        };
        // Terms are ORed, expressions ANDed.
        let met = affinity(
            "        - matchExpressions: [{key: gpu, operator: Exists}]\n        - matchExpressions: [{key: disk, operator: In, values: [ssd, nvme]}, {key: cores, operator: Gt, values: [\"4\"]}]\n",
        );
        assert!(refusals(&met).is_empty());
        let unmet = affinity(
            "        - matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]\n        - matchFields: [{key: metadata.name, operator: In, values: [other-host]}]\n",
        );
        assert_eq!(
            refusals(&unmet),
            ["spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"]
        );
        let by_name = affinity(
            "        - matchFields: [{key: metadata.name, operator: In, values: [host-1]}]\n",
        );
        assert!(refusals(&by_name).is_empty());
    }
}
