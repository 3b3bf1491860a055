//! A container of a Pod, with the Kubernetes field names and meanings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decode::{did_you_mean, loc_of, Decode, Decoder, IntOrString, Node};
use super::enums::{Capability, Protocol, PullPolicy, RestartPolicy, SeccompProfile, CAPABILITIES};
use super::quantity;

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    /// Absent: a program already on the host (wpod's one departure from Kubernetes).
    pub image: Option<String>,
    pub image_pull_policy: Option<PullPolicy>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub ports: Vec<ContainerPort>,
    pub volume_mounts: Vec<VolumeMount>,
    pub resources: Resources,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    pub lifecycle: Option<Lifecycle>,
    pub security_context: Option<SecurityContext>,
    /// Only on init containers, and only `Always`: makes it a native sidecar.
    pub restart_policy: Option<RestartPolicy>,
    /// Where the container may write why it ended (`/dev/termination-log`).
    pub termination_message_path: String,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: without a message, an error exit
    /// takes the end of the container's output as its message.
    pub termination_message_fallback: bool,
}

impl Decode for Container {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&["resizePolicy", "restartPolicyRules", "volumeDevices"]);
            // `false` is what Kubernetes defaults them to (generated manifests write it); a
            // terminal or an open stdin is what wpod does not give a container.
            for field in ["stdin", "stdinOnce", "tty"] {
                let at = f.child(field);
                if f.opt::<bool>(field) == Some(true) {
                    let loc = f.d.map.locate(&at);
                    f.d.error_at(
                        loc,
                        &at,
                        "wpod gives a container no terminal and no stdin to attach to (its stdin \
                         is /dev/null); remove it (wpod logs -f follows the container's output)",
                    );
                }
            }
            Container {
                name: f.req("name").unwrap_or_default(),
                image: f.opt("image"),
                image_pull_policy: f.opt("imagePullPolicy"),
                command: f.list("command"),
                args: f.list("args"),
                working_dir: f.opt("workingDir"),
                env: f.list("env"),
                env_from: f.list("envFrom"),
                ports: f.list("ports"),
                volume_mounts: f.list("volumeMounts"),
                resources: f.opt("resources").unwrap_or_default(),
                liveness_probe: f.opt("livenessProbe"),
                readiness_probe: f.opt("readinessProbe"),
                startup_probe: f.opt("startupProbe"),
                lifecycle: f.opt("lifecycle"),
                security_context: f.opt("securityContext"),
                restart_policy: f.opt("restartPolicy"),
                termination_message_path: f
                    .opt("terminationMessagePath")
                    .unwrap_or_else(|| "/dev/termination-log".into()),
                termination_message_fallback: match f
                    .opt::<String>("terminationMessagePolicy")
                    .as_deref()
                {
                    None | Some("File") => false,
                    Some("FallbackToLogsOnError") => true,
                    Some(other) => {
                        let p = f.child("terminationMessagePolicy");
                        let loc = f.d.map.locate(&p);
                        f.d.error_at(
                            loc,
                            &p,
                            format!("unsupported value \"{other}\": write File or FallbackToLogsOnError"),
                        );
                        false
                    }
                },
            }
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EnvVar {
    pub name: String,
    /// `value` (with `$(VAR)` references), or where `valueFrom` takes it.
    pub value: EnvValue,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    Text(String),
    /// `fieldRef.fieldPath`: `metadata.name`, `metadata.labels['k']`, `status.podIP`...
    Field(String),
    /// `resourceFieldRef`: a container's limit or request, in units of `divisor`.
    Resource(ResourceFieldRef),
    ConfigMapKey(KeyRef),
    SecretKey(KeyRef),
}

/// A key of a ConfigMap or Secret (`configMapKeyRef`, `secretKeyRef`).
#[derive(Clone, Debug, Serialize)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
    /// Absent object or key: the variable is left out instead of failing the pod.
    pub optional: bool,
}

/// `resourceFieldRef`: `limits.cpu`, `limits.memory`, `requests.cpu`, `requests.memory`
/// (and `limits.ephemeral-storage`, `requests.ephemeral-storage`) of a container.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFieldRef {
    /// Required in a downwardAPI volume; in `env`, the container itself when absent.
    pub container_name: Option<String>,
    pub resource: String,
    /// The unit: `1` by default (cores, bytes), `1m`, `1Mi`...
    pub divisor: Option<String>,
}

impl Decode for EnvVar {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let (name, value, from) = d.object(node, path, |f| {
            let name: String = f.req("name").unwrap_or_default();
            let value: Option<String> = f.opt("value");
            let from: Option<EnvVarSource> = f.opt("valueFrom");
            (name, value, from)
        })?;
        let value = match (value, from) {
            (Some(_), Some(_)) => {
                d.error_at(loc, path, "has both value and valueFrom; give one of them");
                return None;
            }
            (Some(text), None) => EnvValue::Text(text),
            (None, Some(EnvVarSource(v))) => v,
            // Kubernetes: a variable without a value is set to the empty string.
            (None, None) => EnvValue::Text(String::new()),
        };
        Some(EnvVar { name, value })
    }
}

/// `valueFrom`: exactly one of its sources.
struct EnvVarSource(EnvValue);

impl Decode for EnvVarSource {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        const SOURCES: [&str; 4] = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ];
        d.object(node, path, |f| {
            f.unsupported(&["fileKeyRef"]);
            if SOURCES.iter().filter(|s| f.has(s)).count() != 1 {
                let loc = f.d.map.locate(path);
                f.d.error_at(
                    loc,
                    path,
                    "give exactly one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef",
                );
                f.skip_rest();
                return None;
            }
            // One of them: a problem inside it is its own.
            if let Some(FieldRef(p)) = f.opt("fieldRef") {
                return Some(EnvValue::Field(p));
            }
            if let Some(r) = f.opt("resourceFieldRef") {
                return Some(EnvValue::Resource(r));
            }
            if let Some(r) = f.opt("configMapKeyRef") {
                return Some(EnvValue::ConfigMapKey(r));
            }
            f.opt("secretKeyRef").map(EnvValue::SecretKey)
        })?
        .map(EnvVarSource)
    }
}

/// The downward API fields a container's environment may read (Kubernetes' list).
pub const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['KEY']",
    "metadata.annotations['KEY']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// `fieldRef`: its `fieldPath`, checked against [`ENV_FIELDS`].
pub struct FieldRef(pub String);

impl Decode for FieldRef {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let field_path = format!("{path}.fieldPath");
        let p = d.object(node, path, |f| {
            let _: Option<String> = f.opt("apiVersion");
            f.req::<String>("fieldPath")
        })??;
        let keyed = |prefix: &str| {
            p.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix("['"))
                .and_then(|r| r.strip_suffix("']"))
                .is_some_and(|k| !k.is_empty())
        };
        let known = ENV_FIELDS.iter().any(|f| !f.contains('[') && *f == p)
            || keyed("metadata.labels")
            || keyed("metadata.annotations")
            || p == "metadata.labels"
            || p == "metadata.annotations";
        if !known {
            let loc = d.map.locate(&field_path);
            d.error_at(
                loc,
                &field_path,
                format!(
                    "\"{p}\" is not a field the downward API gives; use one of {}",
                    ENV_FIELDS.join(", ")
                ),
            );
            return None;
        }
        Some(FieldRef(p))
    }
}

impl Decode for ResourceFieldRef {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let resource_path = format!("{path}.resource");
        let r = d.object(node, path, |f| ResourceFieldRef {
            container_name: f.opt("containerName"),
            resource: f.req("resource").unwrap_or_default(),
            // A quantity written as a number (`divisor: 1`) is its text.
            divisor: f.opt::<super::decode::Quantity>("divisor").map(|q| q.0),
        })?;
        const RESOURCES: &[&str] = &[
            "limits.cpu",
            "limits.memory",
            "limits.ephemeral-storage",
            "requests.cpu",
            "requests.memory",
            "requests.ephemeral-storage",
        ];
        if !RESOURCES.contains(&r.resource.as_str()) {
            let loc = d.map.locate(&resource_path);
            d.error_at(
                loc,
                &resource_path,
                format!(
                    "\"{}\" is not a resource; use one of {}",
                    r.resource,
                    RESOURCES.join(", ")
                ),
            );
            return None;
        }
        Some(r)
    }
}

impl Decode for KeyRef {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| KeyRef {
            name: f.req("name").unwrap_or_default(),
            key: f.req("key").unwrap_or_default(),
            optional: f.opt("optional").unwrap_or(false),
        })
    }
}

/// `envFrom`: every key of a ConfigMap or Secret as a variable, after `prefix`.
#[derive(Clone, Debug, Serialize)]
pub struct EnvFromSource {
    pub prefix: String,
    /// `true`: a Secret; `false`: a ConfigMap.
    pub secret: bool,
    pub name: String,
    pub optional: bool,
}

impl Decode for EnvFromSource {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let (prefix, cm, secret) = d.object(node, path, |f| {
            let prefix: Option<String> = f.opt("prefix");
            let cm: Option<ObjectRef> = f.opt("configMapRef");
            let secret: Option<ObjectRef> = f.opt("secretRef");
            (prefix.unwrap_or_default(), cm, secret)
        })?;
        let (r, is_secret) = match (cm, secret) {
            (Some(r), None) => (r, false),
            (None, Some(r)) => (r, true),
            _ => {
                d.error_at(loc, path, "give exactly one of configMapRef or secretRef");
                return None;
            }
        };
        Some(EnvFromSource {
            prefix,
            secret: is_secret,
            name: r.name,
            optional: r.optional,
        })
    }
}

/// `configMapRef`/`secretRef` of `envFrom`.
struct ObjectRef {
    name: String,
    optional: bool,
}

impl Decode for ObjectRef {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ObjectRef {
            name: f.req("name").unwrap_or_default(),
            optional: f.opt("optional").unwrap_or(false),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub host_ip: Option<String>,
    /// TCP (default) or UDP.
    pub protocol: Protocol,
}

impl Decode for ContainerPort {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ContainerPort {
            name: f.opt("name"),
            container_port: f.req("containerPort").unwrap_or_default(),
            host_port: f.opt("hostPort"),
            host_ip: f.opt("hostIP"),
            protocol: f.opt("protocol").unwrap_or(Protocol::Tcp),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    /// `subPath` (or `subPathExpr`, its `$(VAR)` references still to expand): a path inside
    /// the volume, mounted in place of its root.
    pub sub_path: Option<String>,
    /// Whether `sub_path` came from `subPathExpr`.
    pub sub_path_expr: bool,
}

impl Decode for VolumeMount {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&["mountPropagation", "recursiveReadOnly"]);
            let sub_path: Option<String> = f.opt("subPath");
            let expr: Option<String> = f.opt("subPathExpr");
            let both = sub_path.is_some() && expr.is_some();
            if both {
                let p = f.child("subPathExpr");
                let loc = f.d.map.locate(&p);
                f.d.error_at(loc, &p, "give subPath or subPathExpr, not both");
            }
            for (field, value) in [("subPath", &sub_path), ("subPathExpr", &expr)] {
                let Some(v) = value else { continue };
                if v.starts_with('/') || v.split('/').any(|c| c == "..") || v.contains('\0') {
                    let p = f.child(field);
                    let loc = f.d.map.locate(&p);
                    f.d.error_at(
                        loc,
                        &p,
                        format!(
                            "\"{v}\" must be a relative path inside the volume, without \"..\""
                        ),
                    );
                }
            }
            VolumeMount {
                name: f.req("name").unwrap_or_default(),
                mount_path: f.req("mountPath").unwrap_or_default(),
                read_only: f.opt("readOnly").unwrap_or(false),
                sub_path_expr: expr.is_some() && !both,
                sub_path: sub_path.or(expr).filter(|s| !s.is_empty()),
            }
        })
    }
}

/// `resources.limits` / `resources.requests`, parsed. wpod knows `cpu` and `memory`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resources {
    pub limits: ResourceList,
    pub requests: ResourceList,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ResourceList {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

impl Decode for Resources {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&["claims"]);
            Resources {
                limits: f.opt("limits").unwrap_or_default(),
                requests: f.opt("requests").unwrap_or_default(),
            }
        })
    }
}

impl Decode for ResourceList {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let raw = BTreeMap::<String, String>::decode(d, node, path)?;
        let mut list = ResourceList::default();
        for (name, text) in raw {
            let field = format!("{path}.{name}");
            let loc = d.map.locate(&field);
            match name.as_str() {
                "cpu" => match quantity::cpu_millis(&text) {
                    Ok(v) => list.cpu_millis = Some(v),
                    Err(e) => d.error_at(loc, &field, e.to_string()),
                },
                "memory" => match quantity::bytes(&text) {
                    Ok(v) => list.memory_bytes = Some(v),
                    Err(e) => d.error_at(loc, &field, e.to_string()),
                },
                other => d.error_at(
                    loc,
                    &field,
                    format!("resource \"{other}\" is not supported by wpod; supported resources: cpu, memory"),
                ),
            }
        }
        Some(list)
    }
}

/// A startup, readiness or liveness probe.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub handler: Handler,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The grace period of a kill this probe decides (liveness and startup), in place of the
    /// pod's.
    pub termination_grace_period_seconds: Option<u64>,
}

impl Decode for Probe {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let mut handlers = Vec::new();
        let probe = d.object(node, path, |f| {
            handlers = read_handlers(f);
            // gRPC is a probe action only (Kubernetes has no gRPC hook).
            if let Some(g) = f.opt("grpc") {
                handlers.push(Handler::Grpc(g));
            }
            let grace_path = f.child("terminationGracePeriodSeconds");
            let grace: Option<i64> = f.opt("terminationGracePeriodSeconds");
            if grace.is_some_and(|g| g < 1) {
                let loc = f.d.map.locate(&grace_path);
                f.d.error_at(loc, &grace_path, "must be at least 1");
            }
            // Kubernetes' defaults.
            Probe {
                handler: Handler::TcpSocket(TcpSocketAction {
                    port: IntOrString::Int(0),
                    host: None,
                }),
                initial_delay_seconds: f.opt("initialDelaySeconds").unwrap_or(0),
                period_seconds: f.opt("periodSeconds").unwrap_or(10),
                timeout_seconds: f.opt("timeoutSeconds").unwrap_or(1),
                success_threshold: f.opt("successThreshold").unwrap_or(1),
                failure_threshold: f.opt("failureThreshold").unwrap_or(3),
                termination_grace_period_seconds: grace.filter(|g| *g >= 1).map(|g| g as u64),
            }
        })?;
        let handler = one_handler(d, loc, path, handlers, "exec, grpc, httpGet or tcpSocket")?;
        Some(Probe { handler, ..probe })
    }
}

/// What a probe or a lifecycle hook does.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Handler {
    Exec(ExecAction),
    HttpGet(HttpGetAction),
    TcpSocket(TcpSocketAction),
    Sleep(SleepAction),
    /// Probes only: the standard gRPC health protocol (`grpc.health.v1.Health/Check`).
    Grpc(GrpcAction),
}

fn read_handlers(f: &mut super::decode::Fields<'_, '_>) -> Vec<Handler> {
    let mut found = Vec::new();
    if let Some(h) = f.opt("exec") {
        found.push(Handler::Exec(h));
    }
    if let Some(h) = f.opt("httpGet") {
        found.push(Handler::HttpGet(h));
    }
    if let Some(h) = f.opt("tcpSocket") {
        found.push(Handler::TcpSocket(h));
    }
    found
}

fn one_handler(
    d: &mut Decoder,
    loc: super::diag::Loc,
    path: &str,
    mut handlers: Vec<Handler>,
    choices: &str,
) -> Option<Handler> {
    if handlers.len() == 1 {
        return handlers.pop();
    }
    // An action that could not be read (an unknown or misspelled field, a bad value in one)
    // was said already: "no action" would only repeat it. (A bad period is no such excuse.)
    let under = format!("{path}.");
    let unreadable_action = d.diags.iter().any(|x| {
        x.path.strip_prefix(&under).is_some_and(|rest| {
            let field = rest.split(['.', '[']).next().unwrap_or_default();
            ["exec", "httpGet", "tcpSocket", "grpc", "sleep"].contains(&field)
                || x.message.starts_with("unknown field")
                || x.message.contains("not supported by wpod")
        })
    });
    if handlers.is_empty() && unreadable_action {
        return None;
    }
    let what = if handlers.is_empty() {
        "no action"
    } else {
        "more than one action"
    };
    d.error_at(
        loc,
        path,
        format!("has {what}; give exactly one of {choices}"),
    );
    None
}

#[derive(Clone, Debug, Serialize)]
pub struct ExecAction {
    pub command: Vec<String>,
}

impl Decode for ExecAction {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| ExecAction {
            command: f.req("command").unwrap_or_default(),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    pub path: String,
    pub port: IntOrString,
    pub host: Option<String>,
    /// HTTP or HTTPS.
    pub scheme: String,
    pub http_headers: Vec<HttpHeader>,
}

impl Decode for HttpGetAction {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| HttpGetAction {
            path: f.opt("path").unwrap_or_else(|| "/".to_string()),
            port: f.req("port").unwrap_or(IntOrString::Int(0)),
            host: f.opt("host"),
            scheme: f.opt("scheme").unwrap_or_else(|| "HTTP".to_string()),
            http_headers: f.list("httpHeaders"),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

impl Decode for HttpHeader {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| HttpHeader {
            name: f.req("name").unwrap_or_default(),
            value: f.req("value").unwrap_or_default(),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TcpSocketAction {
    pub port: IntOrString,
    pub host: Option<String>,
}

impl Decode for TcpSocketAction {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| TcpSocketAction {
            port: f.req("port").unwrap_or(IntOrString::Int(0)),
            host: f.opt("host"),
        })
    }
}

/// A gRPC health check of the pod's loopback. Kubernetes takes a port number only (no name).
#[derive(Clone, Debug, Serialize)]
pub struct GrpcAction {
    pub port: i64,
    /// The service name sent in the check; empty asks about the server as a whole.
    pub service: String,
}

impl Decode for GrpcAction {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| GrpcAction {
            port: f.req("port").unwrap_or_default(),
            service: f.opt("service").unwrap_or_default(),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SleepAction {
    pub seconds: u32,
}

impl Decode for SleepAction {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| SleepAction {
            seconds: f.req("seconds").unwrap_or_default(),
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub post_start: Option<Handler>,
    pub pre_stop: Option<Handler>,
    /// `stopSignal`: the polite stop's signal, in place of the image's `StopSignal` (needs
    /// `spec.os.name`, as in Kubernetes).
    pub stop_signal: Option<String>,
}

/// The signals `lifecycle.stopSignal` takes: those wpod's shim passes on to a container (a
/// stop signal it did not pass on would never arrive). Kubernetes takes every Linux signal.
pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH",
];

impl Decode for Lifecycle {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            let signal_path = f.child("stopSignal");
            let stop_signal: Option<String> = f.opt("stopSignal");
            if let Some(s) = &stop_signal {
                if !STOP_SIGNALS.contains(&s.as_str()) {
                    let loc = f.d.map.locate(&signal_path);
                    f.d.error_at(
                        loc,
                        &signal_path,
                        format!(
                            "\"{s}\" is not a signal wpod passes on to a container; write one of {}",
                            STOP_SIGNALS.join(", ")
                        ),
                    );
                }
            }
            Lifecycle {
                post_start: f.opt::<Hook>("postStart").map(|h| h.0),
                pre_stop: f.opt::<Hook>("preStop").map(|h| h.0),
                stop_signal,
            }
        })
    }
}

/// A lifecycle hook: like a probe's action, plus `sleep`.
struct Hook(Handler);

impl Decode for Hook {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let loc = loc_of(node);
        let mut handlers = Vec::new();
        d.object(node, path, |f| {
            handlers = read_handlers(f);
            if let Some(s) = f.opt("sleep") {
                handlers.push(Handler::Sleep(s));
            }
        })?;
        one_handler(d, loc, path, handlers, "exec, httpGet, tcpSocket or sleep").map(Hook)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub capabilities: Capabilities,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: Option<bool>,
    pub read_only_root_filesystem: bool,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    /// `seccompProfile.type`: RuntimeDefault (wpod's default), Unconfined or Localhost.
    pub seccomp_profile: Option<SeccompProfile>,
    /// `seccompProfile.localhostProfile`: set exactly when the type is Localhost.
    pub seccomp_localhost_profile: Option<String>,
    /// `appArmorProfile`: checked against the host (the plan refuses what it cannot apply).
    pub app_armor: Option<AppArmorProfile>,
}

/// `appArmorProfile`: `RuntimeDefault`, `Unconfined` or `Localhost` (with its profile's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppArmorProfile {
    pub kind: String,
    pub localhost_profile: Option<String>,
}

impl Decode for AppArmorProfile {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let p = d.object(node, path, |f| AppArmorProfile {
            kind: f.req("type").unwrap_or_default(),
            localhost_profile: f.opt("localhostProfile"),
        })?;
        let type_path = format!("{path}.type");
        let problem = match (p.kind.as_str(), &p.localhost_profile) {
            ("Localhost", None) => {
                Some("type Localhost needs localhostProfile: the loaded profile's name")
            }
            ("RuntimeDefault" | "Unconfined", Some(_)) => {
                Some("localhostProfile is only for type: Localhost")
            }
            ("Localhost" | "RuntimeDefault" | "Unconfined", _) => None,
            _ => Some("unsupported value: write RuntimeDefault, Unconfined or Localhost"),
        };
        if let Some(why) = problem {
            let loc = d.map.locate(&type_path);
            d.error_at(loc, &type_path, why);
            return None;
        }
        Some(p)
    }
}

impl Decode for SecurityContext {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&["procMount", "seLinuxOptions", "windowsOptions"]);
            let seccomp = f.opt::<SeccompProfileField>("seccompProfile");
            let app_armor = f.opt::<AppArmorProfile>("appArmorProfile");
            SecurityContext {
                app_armor,
                capabilities: f.opt("capabilities").unwrap_or_default(),
                run_as_user: f.opt("runAsUser"),
                run_as_group: f.opt("runAsGroup"),
                run_as_non_root: f.opt("runAsNonRoot"),
                read_only_root_filesystem: f.opt("readOnlyRootFilesystem").unwrap_or(false),
                privileged: f.opt("privileged").unwrap_or(false),
                allow_privilege_escalation: f.opt("allowPrivilegeEscalation"),
                seccomp_profile: seccomp.as_ref().and_then(|p| p.kind),
                seccomp_localhost_profile: seccomp.and_then(|p| p.localhost_profile),
            }
        })
    }
}

/// A pod's `securityContext`: defaults for its containers' (which override them, as in
/// Kubernetes), and what only a pod has: the groups of every container's processes and the
/// ownership of its volumes (`fsGroup`), and namespaced sysctls.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// `appArmorProfile`: each container's unless its own sets one.
    pub app_armor: Option<AppArmorProfile>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: Option<bool>,
    pub seccomp_profile: Option<SeccompProfile>,
    pub seccomp_localhost_profile: Option<String>,
    /// A group every container's processes belong to, and that owns the pod's volumes
    /// (emptyDirs, projected volumes, claims; not hostPaths), group-writable, setgid.
    pub fs_group: Option<u32>,
    /// `OnRootMismatch`: a volume whose root already has the group and mode is not walked.
    pub fs_group_on_root_mismatch: bool,
    /// More groups for every container's processes.
    pub supplemental_groups: Vec<u32>,
    /// Namespaced sysctls of Kubernetes' safe set, set in the pod's namespaces.
    pub sysctls: Vec<(String, String)>,
}

/// The sysctls Kubernetes deems safe (namespaced, and unable to affect other pods): a pod may
/// set these without the kubelet's `--allowed-unsafe-sysctls`.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

impl Decode for PodSecurityContext {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        d.object(node, path, |f| {
            f.unsupported(&[
                "seLinuxChangePolicy",
                "seLinuxOptions",
                "supplementalGroupsPolicy",
                "windowsOptions",
            ]);
            let seccomp = f.opt::<SeccompProfileField>("seccompProfile");
            let policy_path = f.child("fsGroupChangePolicy");
            let on_root_mismatch = match f.opt::<String>("fsGroupChangePolicy").as_deref() {
                None | Some("Always") => false,
                Some("OnRootMismatch") => true,
                Some(other) => {
                    let loc = f.d.map.locate(&policy_path);
                    f.d.error_at(
                        loc,
                        &policy_path,
                        format!("unsupported value \"{other}\": write Always or OnRootMismatch"),
                    );
                    false
                }
            };
            let sysctls_path = f.child("sysctls");
            let sysctls: Vec<Sysctl> = f.list("sysctls");
            for (i, s) in sysctls.iter().enumerate() {
                // Kubernetes writes either separator: `net.ipv4.x` or `net/ipv4/x`.
                let name = s.name.replace('/', ".");
                if !SAFE_SYSCTLS.contains(&name.as_str()) {
                    let at = format!("{sysctls_path}[{i}].name");
                    let loc = f.d.map.locate(&at);
                    f.d.error_at(
                        loc,
                        &at,
                        format!(
                            "\"{}\" is not a safe sysctl (one the pod's own namespaces hold, as Kubernetes lists them); use one of {}",
                            s.name,
                            SAFE_SYSCTLS.join(", ")
                        ),
                    );
                }
            }
            PodSecurityContext {
                app_armor: f.opt("appArmorProfile"),
                run_as_user: f.opt("runAsUser"),
                run_as_group: f.opt("runAsGroup"),
                run_as_non_root: f.opt("runAsNonRoot"),
                seccomp_profile: seccomp.as_ref().and_then(|p| p.kind),
                seccomp_localhost_profile: seccomp.and_then(|p| p.localhost_profile),
                fs_group: f.opt("fsGroup"),
                fs_group_on_root_mismatch: on_root_mismatch,
                supplemental_groups: f.list("supplementalGroups"),
                sysctls: sysctls
                    .into_iter()
                    .map(|s| (s.name.replace('/', "."), s.value))
                    .collect(),
            }
        })
    }
}

struct Sysctl {
    name: String,
    value: String,
}

impl Decode for Sysctl {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let s = d.object(node, path, |f| Sysctl {
            name: f.req("name").unwrap_or_default(),
            value: f.req("value").unwrap_or_default(),
        })?;
        // Written to a /proc/sys file: one line, no NUL.
        if s.value.contains(['\n', '\0']) {
            let at = format!("{path}.value");
            let loc = d.map.locate(&at);
            d.error_at(loc, &at, "must be one line without NUL characters");
            return None;
        }
        Some(s)
    }
}

/// `securityContext.seccompProfile`.
struct SeccompProfileField {
    kind: Option<SeccompProfile>,
    localhost_profile: Option<String>,
}

impl Decode for SeccompProfileField {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let field = d.object(node, path, |f| SeccompProfileField {
            kind: f.req("type"),
            localhost_profile: f.opt("localhostProfile"),
        })?;
        // Kubernetes: localhostProfile is required with Localhost, and only then allowed.
        let localhost = field.kind == Some(SeccompProfile::Localhost);
        if localhost != field.localhost_profile.is_some() {
            let at = format!("{path}.localhostProfile");
            let loc = d.map.locate(&at);
            let loc = if field.localhost_profile.is_some() {
                loc
            } else {
                loc_of(node)
            };
            d.error_at(
                loc,
                &at,
                match localhost {
                    true => "type Localhost needs localhostProfile: the profile's path under the host's profile root, such as profiles/audit.json",
                    false => "localhostProfile is only for type: Localhost",
                },
            );
        }
        Some(field)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Capabilities {
    pub add: Vec<Capability>,
    pub drop: Vec<Capability>,
}

impl Decode for Capabilities {
    fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Self> {
        let (add, drop) = d.object(node, path, |f| {
            (f.list::<String>("add"), f.list::<String>("drop"))
        })?;
        Some(Capabilities {
            add: capability_names(d, &format!("{path}.add"), &add, false),
            drop: capability_names(d, &format!("{path}.drop"), &drop, true),
        })
    }
}

/// The capabilities of an `add` or `drop` list; an unknown name is reported (with a "did you
/// mean") and left out. `ALL` is a capability only where it may be dropped.
fn capability_names(d: &mut Decoder, path: &str, names: &[String], drop: bool) -> Vec<Capability> {
    let mut out = Vec::new();
    for (i, text) in names.iter().enumerate() {
        match Capability::parse(text) {
            Some(Capability::All) if !drop => {}
            Some(cap) => {
                out.push(cap);
                continue;
            }
            None => {}
        }
        let name = text.strip_prefix("CAP_").unwrap_or(text);
        let hint = did_you_mean(name, CAPABILITIES)
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        let field = format!("{path}[{i}]");
        let loc = d.map.locate(&field);
        d.error_at(loc, &field, format!("unknown capability \"{text}\"{hint}"));
    }
    out
}
