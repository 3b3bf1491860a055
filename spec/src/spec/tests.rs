use std::path::Path;

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("pod.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(SpecError::Invalid(d)) => d.0.iter().map(|d| d.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

const GOOD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: proxy
    image: proxy.wasm
    restartPolicy: Always
  containers:
  - name: nginx
    command: [nginx, -g, 'daemon off;']
    ports:
    - containerPort: 80
      hostPort: 8080
    env:
    - {name: MODE, value: prod}
    volumeMounts:
    - {name: logs, mountPath: /var/log/nginx}
    resources:
      limits: {memory: 128Mi, cpu: 500m}
    readinessProbe:
      httpGet: {path: /, port: 80}
  volumes:
  - name: logs
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
";

#[test]
fn parses_a_full_pod() {
    let pods = parse(Path::new("pod.yaml"), GOOD).unwrap();
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod.metadata.name, "web");
    assert_eq!(pod.hostname(), "web");
    assert!(pod.spec.share_process_namespace);
    assert_eq!(pod.spec.restart_policy, RestartPolicy::Always);
    let c = &pod.spec.containers[0];
    assert_eq!(c.command, ["nginx", "-g", "daemon off;"]);
    assert_eq!(c.ports[0].host_port, Some(8080));
    assert_eq!(c.ports[0].protocol, Protocol::Tcp);
    assert_eq!(c.resources.limits.memory_bytes, Some(128 << 20));
    assert_eq!(c.resources.limits.cpu_millis, Some(500));
    assert_eq!(c.readiness_probe.as_ref().unwrap().period_seconds, 10);
    let VolumeSource::EmptyDir(e) = &pod.spec.volumes[0].source else {
        panic!("not emptyDir")
    };
    assert_eq!(
        (e.medium, e.size_limit_bytes),
        (StorageMedium::Memory, Some(64 << 20))
    );
    assert_eq!(
        pod.spec.init_containers[0].restart_policy,
        Some(RestartPolicy::Always)
    );
    // Locations are kept for checks made after decoding.
    assert_eq!(
        pod.source.locate("spec.containers[0].ports[0].hostPort"),
        Loc { line: 18, col: 17 }
    );
}

#[test]
fn unknown_fields_suggest_the_closest_name() {
    let text = GOOD.replace("    command:", "    comand:");
    assert_eq!(
        errors(&text),
        // The root cause once: not also "command: required".
        ["pod.yaml:15:5: spec.containers[0].comand: unknown field \"comand\"; did you mean \"command\"?"]
    );
}

#[test]
fn kubernetes_fields_wpod_lacks_are_named() {
    let text = GOOD.replace("  shareProcessNamespace: true", "  runtimeClassName: kata");
    assert_eq!(
        errors(&text),
        ["pod.yaml:7:3: spec.runtimeClassName: field \"runtimeClassName\" is valid in Kubernetes but not supported by wpod yet; remove it"]
    );
    // Scheduling fields mean nothing on one host: accepted, and listed as ignored with why.
    let text = GOOD.replace(
        "  shareProcessNamespace: true",
        "  nodeSelector: {disk: ssd}\n  tolerations: [{operator: Exists}]",
    );
    let pods = super::parse(Path::new("pod.yaml"), &text).expect("accepted");
    let ignored: Vec<String> = pods[0]
        .spec
        .ignored
        .iter()
        .map(|i| format!("{}: {}", i.path, i.why))
        .collect();
    // (A nodeSelector is checked against the host's labels, by the plan.)
    assert_eq!(
        ignored,
        ["spec.tolerations: a host has no taints to tolerate"]
    );
    assert_eq!(
        pods[0].spec.node_selector.get("disk").map(String::as_str),
        Some("ssd")
    );
}

#[test]
fn reports_every_problem_at_once() {
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  restartPolicy: Sometimes
  containers:
  - name: a
    command: [x]
    ports: [{containerPort: 80}]
    volumeMounts: [{name: dat, mountPath: /d}]
  - name: a
    command: [y]
    ports: [{containerPort: 80}]
    resources: {limits: {memory: lots}}
  volumes: [{name: data, emptyDir: {}}]
";
    let e = errors(text);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert!(
        e[0].starts_with("pod.yaml:3:18: metadata.name: invalid name \"Bad_Name\""),
        "{}",
        e[0]
    );
    assert!(e[1].starts_with("pod.yaml:5:18: spec.restartPolicy: unsupported value \"Sometimes\""));
    assert!(e[2].contains("spec.containers[0].volumeMounts[0].name: volume \"dat\" is not defined in spec.volumes; did you mean \"data\"?"));
    assert!(
        e[3].starts_with("pod.yaml:11:11: spec.containers[1].name: duplicate container name \"a\"")
    );
    assert!(e[4].starts_with("pod.yaml:13:29: spec.containers[1].ports[0].containerPort: port 80/TCP is already declared"));
    assert!(e[5].starts_with("pod.yaml:14:34: spec.containers[1].resources.limits.memory: \"lots\" is not a valid quantity"));
}

#[test]
fn wrong_types_name_what_was_expected() {
    let text = GOOD.replace("hostPort: 8080", "hostPort: eighty").replace(
        "shareProcessNamespace: true",
        "shareProcessNamespace: yes please",
    );
    assert_eq!(
        errors(&text),
        [
            "pod.yaml:7:26: spec.shareProcessNamespace: expected true or false, found a string",
            "pod.yaml:18:17: spec.containers[0].ports[0].hostPort: expected an integer, found a string",
        ]
    );
}

#[test]
fn only_pods_run_and_documents_are_separate() {
    let text = format!("{GOOD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec: {{replicas: 2}}\n");
    assert_eq!(
        errors(&text),
        ["pod.yaml:32:7: kind: kind \"Deployment\" is not supported: wpod runs `kind: Pod` documents, with the ConfigMap, Secret, PersistentVolumeClaim they use"]
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    let e = errors("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("pod.yaml:5:1: invalid YAML:"), "{}", e[0]);
}

#[test]
fn init_container_rules() {
    let text = GOOD.replace(
        "    restartPolicy: Always\n",
        "    restartPolicy: OnFailure\n    livenessProbe: {tcpSocket: {port: 1}}\n",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("spec.initContainers[0].restartPolicy: unsupported value \"OnFailure\""));
    assert!(
        e[1].contains("spec.initContainers[0].livenessProbe: init containers run to completion")
    );
}

#[test]
fn probes_and_ports_are_checked() {
    let text = GOOD
        .replace(
            "httpGet: {path: /, port: 80}",
            "httpGet: {path: /, port: web}\n      periodSeconds: 0",
        )
        .replace(
            "      hostPort: 8080",
            "      hostPort: 8080\n      protocol: SCTP",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].contains("ports[0].protocol: SCTP is not supported"));
    assert!(e[1].contains("readinessProbe.httpGet.port: no port named \"web\""));
    assert!(e[2].contains("readinessProbe.periodSeconds: must be at least 1"));
}

#[test]
fn args_alone_are_a_host_containers_argv() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  containers:\n  - name: client\n    args: [sh, -c, 'echo hi']\n";
    let pods = parse(Path::new("pod.yaml"), text).expect("args alone are enough");
    assert_eq!(pods[0].spec.containers[0].args, ["sh", "-c", "echo hi"]);
}
