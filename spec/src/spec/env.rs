//! A container's environment and command line as the kubelet makes them
//! (`makeEnvironmentVariables`, `ExpandContainerCommandAndArgs`): `envFrom` first, then `env` in
//! order (a later variable overrides an earlier one), each value from its source (text with
//! `$(VAR)` references expanded against the variables defined before it, ConfigMap and Secret
//! keys, the downward API, resource limits); then `command` and `args` expanded against them
//! all. An image's own `Env` takes no part in the expansion, as in Kubernetes.
//!
//! What is known only once the pod's sandbox exists (its IP, the host's, its UID) is written as
//! a [`RuntimeField`] marker, which the container runtime fills in as it starts the container
//! ([`RuntimeFacts::fill`]). The markers hold NUL characters, which no manifest value may (see
//! `validate.rs`), so they never collide with what a user wrote.

use std::collections::BTreeMap;

use super::container::{Container, EnvValue, ResourceFieldRef};
use super::pod::Pod;
use super::quantity;

/// What a container's process is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// In definition order; each name once.
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
    pub args: Vec<String>,
}

/// A problem with one field of the container (`env[2].valueFrom.configMapKeyRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvProblem {
    /// Below the container's path.
    pub field: String,
    pub message: String,
}

/// What the host gives values that do not depend on the sandbox.
#[derive(Clone, Copy, Debug)]
pub struct HostFacts<'a> {
    /// `spec.nodeName`: the host's name.
    pub node_name: &'a str,
    /// Allocatable CPU and memory: a `resourceFieldRef` to a limit that is not set gives them,
    /// as the kubelet gives the node's.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Downward API values known only when the pod's sandbox exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeField {
    PodIp,
    HostIp,
    Uid,
}

impl RuntimeField {
    /// The marker that stands for the value until the container starts.
    pub fn marker(self) -> &'static str {
        match self {
            RuntimeField::PodIp => "\0wpod:status.podIP\0",
            RuntimeField::HostIp => "\0wpod:status.hostIP\0",
            RuntimeField::Uid => "\0wpod:metadata.uid\0",
        }
    }
}

/// The sandbox's values for the [`RuntimeField`] markers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFacts {
    pub pod_ip: String,
    pub host_ip: String,
    pub uid: String,
}

impl RuntimeFacts {
    /// `text` with every marker replaced by its value.
    pub fn fill(&self, text: &str) -> String {
        if !text.contains('\0') {
            return text.to_string();
        }
        text.replace(RuntimeField::PodIp.marker(), &self.pod_ip)
            .replace(RuntimeField::HostIp.marker(), &self.host_ip)
            .replace(RuntimeField::Uid.marker(), &self.uid)
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable's reference is replaced by its value, an
/// undefined one is left as written, `$$` is one `$` (so `$$(VAR)` is the text `$(VAR)`).
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'$' => {
                out.push(b'$');
                i += 2;
            }
            b'(' => match bytes[i + 2..].iter().position(|b| *b == b')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(value) => out.extend_from_slice(value.as_bytes()),
                        None => out.extend_from_slice(&bytes[i..i + 3 + len]),
                    }
                    i += 3 + len;
                }
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            other => {
                out.push(b'$');
                out.push(other);
                i += 2;
            }
        }
    }
    // Only whole UTF-8 sequences were copied or inserted.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The environment and command line of `container` (at `path` in `pod`), or every problem.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    host: &HostFacts<'_>,
) -> Result<Environment, Vec<EnvProblem>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    };
    for (i, from) in container.env_from.iter().enumerate() {
        let (kind, data) = if from.secret {
            (
                "Secret",
                pod.objects.secrets.get(&from.name).map(|s| &s.data),
            )
        } else {
            (
                "ConfigMap",
                pod.objects.config_maps.get(&from.name).map(|c| &c.data),
            )
        };
        let Some(data) = data else {
            if !from.optional {
                problems.push(missing(format!("envFrom[{i}]"), kind, &from.name));
            }
            continue;
        };
        for (key, value) in data {
            let name = format!("{}{key}", from.prefix);
            // The kubelet skips keys that are not variable names (with an event); wpod says
            // so before anything runs.
            match env_value(value) {
                Ok(v) if is_env_name(&name) => set(&mut vars, name, v),
                Ok(_) => problems.push(EnvProblem {
                    field: format!("envFrom[{i}]"),
                    message: format!(
                        "{kind} {}'s key \"{key}\" makes \"{name}\", which is not a variable name",
                        from.name
                    ),
                }),
                Err(m) => problems.push(EnvProblem {
                    field: format!("envFrom[{i}]"),
                    message: format!("{kind} {}'s key \"{key}\": {m}", from.name),
                }),
            }
        }
    }
    for (i, var) in container.env.iter().enumerate() {
        let field = |what: &str| format!("env[{i}].{what}");
        let value = match &var.value {
            EnvValue::Text(text) => Some(expand(text, |name| lookup(&vars, name))),
            // The whole maps are for volumes (Kubernetes' rule): a variable takes one key.
            EnvValue::Field(path)
                if path == "metadata.labels" || path == "metadata.annotations" =>
            {
                problems.push(EnvProblem {
                    field: field("valueFrom.fieldRef.fieldPath"),
                    message: format!(
                        "\"{path}\" is for a downwardAPI volume; a variable takes one key: {path}['KEY']"
                    ),
                });
                None
            }
            EnvValue::Field(path) => match field_value(pod, host, path) {
                Ok(v) => Some(v),
                Err(message) => {
                    problems.push(EnvProblem {
                        field: field("valueFrom.fieldRef.fieldPath"),
                        message,
                    });
                    None
                }
            },
            EnvValue::Resource(r) => match resource_value(pod, container, host, r) {
                Ok(v) => Some(v),
                Err(message) => {
                    problems.push(EnvProblem {
                        field: field("valueFrom.resourceFieldRef"),
                        message,
                    });
                    None
                }
            },
            EnvValue::ConfigMapKey(r) | EnvValue::SecretKey(r) => {
                let secret = matches!(var.value, EnvValue::SecretKey(_));
                let (kind, what, data) = if secret {
                    (
                        "Secret",
                        "secretKeyRef",
                        pod.objects.secrets.get(&r.name).map(|s| &s.data),
                    )
                } else {
                    (
                        "ConfigMap",
                        "configMapKeyRef",
                        pod.objects.config_maps.get(&r.name).map(|c| &c.data),
                    )
                };
                match data.map(|d| d.get(&r.key)) {
                    Some(Some(bytes)) => match env_value(bytes) {
                        Ok(v) => Some(v),
                        Err(m) => {
                            problems.push(EnvProblem {
                                field: field(&format!("valueFrom.{what}.key")),
                                message: m,
                            });
                            None
                        }
                    },
                    // Optional: the variable is left out.
                    _ if r.optional => None,
                    None => {
                        problems.push(missing(field(&format!("valueFrom.{what}")), kind, &r.name));
                        None
                    }
                    Some(None) => {
                        problems.push(EnvProblem {
                            field: field(&format!("valueFrom.{what}.key")),
                            message: format!(
                                "{kind} {} has no key \"{}\" (it has {}); set optional: true to \
                                 leave the variable out instead",
                                r.name,
                                r.key,
                                keys(data.into_iter().flat_map(|d| d.keys()))
                            ),
                        });
                        None
                    }
                }
            }
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let expand_all = |list: &[String]| {
        list.iter()
            .map(|s| expand(s, |name| lookup(&vars, name)))
            .collect()
    };
    Ok(Environment {
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        env: vars,
    })
}

/// A mount's `subPath`, its `subPathExpr` expanded against the container's variables (as
/// the kubelet expands it); an expansion that leaves the volume is refused.
pub fn sub_path(
    mount: &super::container::VolumeMount,
    env: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(path) = &mount.sub_path else {
        return Ok(None);
    };
    if !mount.sub_path_expr {
        return Ok(Some(path.clone()));
    }
    let expanded = expand(path, |name| lookup(env, name));
    if expanded.starts_with('/') || expanded.split('/').any(|c| c == "..") {
        return Err(format!(
            "subPathExpr \"{path}\" expands to \"{expanded}\", which leaves the volume"
        ));
    }
    Ok(Some(expanded))
}

fn lookup(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

fn keys<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "no keys".into()
    } else {
        list.join(", ")
    }
}

fn missing(field: String, kind: &str, name: &str) -> EnvProblem {
    EnvProblem {
        field,
        message: format!(
            "no {kind} named \"{name}\" in this file; add a `kind: {kind}` document with \
             metadata.name: {name}, or set optional: true"
        ),
    }
}

/// A ConfigMap or Secret value as an environment value: text without NUL.
fn env_value(bytes: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => Ok(s.to_string()),
        Ok(_) => Err("the value holds a NUL character, which an environment cannot".into()),
        Err(_) => Err("the value is not UTF-8 text; mount it as a file instead".into()),
    }
}

/// Kubernetes' rule for variable names: printable ASCII but `=`, not empty.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The downward API's value of `path` (checked when decoded) for `pod`.
pub fn field_value(pod: &Pod, host: &HostFacts<'_>, path: &str) -> Result<String, String> {
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let meta = &pod.metadata;
    Ok(match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => RuntimeField::Uid.marker().into(),
        "metadata.labels" => key_values(&meta.labels),
        "metadata.annotations" => key_values(&meta.annotations),
        "spec.nodeName" => host.node_name.to_string(),
        "spec.serviceAccountName" => pod
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => RuntimeField::PodIp.marker().into(),
        "status.hostIP" | "status.hostIPs" => RuntimeField::HostIp.marker().into(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                meta.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                meta.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return Err(format!("\"{path}\" is not a downward API field"));
            }
        }
    })
}

/// Labels or annotations as the downward API writes them (the kubelet's `FormatMap`):
/// `key="value"` lines, sorted, without a newline after the last.
fn key_values(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef`'s value: the limit or request in units of the divisor, rounded up
/// (`ceil`), as the kubelet's `ExtractContainerResourceValue`; an unset limit is the host's
/// capacity.
pub fn resource_value(
    pod: &Pod,
    own: &Container,
    host: &HostFacts<'_>,
    r: &ResourceFieldRef,
) -> Result<String, String> {
    let c = match &r.container_name {
        None => own,
        Some(name) => pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .find(|c| &c.name == name)
            .ok_or_else(|| format!("no container named \"{name}\" in this pod"))?,
    };
    let limits = &c.resources.limits;
    let requests = &c.resources.requests;
    let (amount, cpu) = match r.resource.as_str() {
        "limits.cpu" => (limits.cpu_millis.unwrap_or(host.cpu_millis), true),
        "limits.memory" => (limits.memory_bytes.unwrap_or(host.memory_bytes), false),
        // Kubernetes defaults a request to its limit.
        "requests.cpu" => (requests.cpu_millis.or(limits.cpu_millis).unwrap_or(0), true),
        "requests.memory" => (
            requests.memory_bytes.or(limits.memory_bytes).unwrap_or(0),
            false,
        ),
        other => return Err(format!("\"{other}\" is not a resource wpod gives")),
    };
    let text = r.divisor.as_deref().unwrap_or("1");
    let divisor = if cpu {
        quantity::cpu_millis(text)
    } else {
        quantity::bytes(text)
    }
    .map_err(|e| format!("divisor: {e}"))?;
    if divisor == 0 {
        return Err("divisor must be more than 0".into());
    }
    Ok(amount.div_ceil(divisor).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn vars<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            list.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// Kubernetes' own cases (third_party/forked/golang/expansion/expand_test.go).
    #[test]
    fn expands_as_kubernetes_does() {
        let m = vars(&[("VAR_A", "A"), ("VAR_B", "B"), ("VAR_EMPTY", "")]);
        for (input, want) in [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("$", "$"),
            ("f$(VAR_A)é$$", "fAé$"),
            ("$()", "$()"),
            ("$(VAR_A)$(VAR_A)$", "AA$"),
        ] {
            assert_eq!(expand(input, &m), want, "{input}");
        }
    }

    fn pod(yaml: &str) -> Pod {
        super::super::parse(Path::new("pod.yaml"), yaml)
            .expect("a valid manifest")
            .remove(0)
    }

    const HOST: HostFacts<'static> = HostFacts {
        node_name: "node-1",
        cpu_millis: 2000,
        memory_bytes: 8 << 30,
    };

    #[test]
    fn resolves_sources_in_order_and_expands_command_and_args() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: shop}}
spec:
  containers:
  - name: main
    command: ["$(GREETING)", "$$(LITERAL)"]
    args: ["--level=$(LEVEL)", "$(UNKNOWN)"]
    envFrom:
    - configMapRef: {name: settings}
    - prefix: S_
      secretRef: {name: creds}
    env:
    - {name: GREETING, value: "hello $(LEVEL)"}
    - {name: LEVEL, value: override}
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: APP
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CPUS
      valueFrom: {resourceFieldRef: {resource: limits.cpu}}
    - name: USER
      valueFrom: {secretKeyRef: {name: creds, key: user}}
    - name: ABSENT
      valueFrom: {configMapKeyRef: {name: settings, key: nope, optional: true}}
    resources: {limits: {memory: 100Mi, cpu: 1500m}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {LEVEL: debug}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {user: YWRtaW4=}
"#);
        let env = resolve(&p, &p.spec.containers[0], &HOST).expect("resolves");
        let get = |n: &str| lookup(&env.env, n);
        // GREETING saw LEVEL from the ConfigMap (defined before it), not the later override.
        assert_eq!(get("GREETING").as_deref(), Some("hello debug"));
        assert_eq!(get("LEVEL").as_deref(), Some("override"));
        assert_eq!(get("S_user").as_deref(), Some("admin"));
        assert_eq!(get("POD").as_deref(), Some("web"));
        assert_eq!(get("APP").as_deref(), Some("shop"));
        assert_eq!(get("IP").as_deref(), Some(RuntimeField::PodIp.marker()));
        assert_eq!(get("MEM_MI").as_deref(), Some("100"));
        // 1.5 cores, rounded up.
        assert_eq!(get("CPUS").as_deref(), Some("2"));
        assert_eq!(get("USER").as_deref(), Some("admin"));
        assert_eq!(get("ABSENT"), None);
        assert_eq!(env.command, ["hello debug", "$(LITERAL)"]);
        assert_eq!(env.args, ["--level=override", "$(UNKNOWN)"]);
        let facts = RuntimeFacts {
            pod_ip: "10.88.0.5".into(),
            ..RuntimeFacts::default()
        };
        assert_eq!(facts.fill(&get("IP").unwrap()), "10.88.0.5");
    }

    #[test]
    fn missing_objects_and_keys_are_named() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    command: [x]
    envFrom: [{configMapRef: {name: gone}}]
    env:
    - name: A
      valueFrom: {secretKeyRef: {name: creds, key: password}}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {user: admin}
"#);
        let problems = resolve(&p, &p.spec.containers[0], &HOST).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].field, "envFrom[0]");
        assert!(problems[0].message.contains("no ConfigMap named \"gone\""));
        assert_eq!(problems[1].field, "env[0].valueFrom.secretKeyRef.key");
        assert!(problems[1]
            .message
            .contains("has no key \"password\" (it has user)"));
        // A secret's value is never in a message.
        assert!(!problems[1].message.contains("admin"));
    }
}
