//! The Pod fields real manifests use (issue 26): the environment as the kubelet makes it
//! (`envFrom`, `valueFrom`, `$(VAR)`), ConfigMaps and Secrets written beside the pod, and the
//! scheduling fields one host ignores. Needs root.

use std::time::Duration;

use crate::pods::{assert_no_leftovers, TestPod};
use wpod_test_support::require_root;

const LONG: Duration = Duration::from_secs(60);

/// One file holds a pod, a ConfigMap and a Secret; the native container and the Wasm sidecar
/// both get their variables from them, from the downward API (the pod's IP filled in once the
/// sandbox exists) and from resource limits, with `$(VAR)` expanded in values, command and args
/// as the kubelet does.
#[test]
fn env_comes_from_config_maps_secrets_and_the_downward_api() {
    require_root("env_comes_from_config_maps_secrets_and_the_downward_api");
    let env = r#"
    envFrom:
    - configMapRef: {name: settings}
    - prefix: DB_
      secretRef: {name: creds}
    env:
    - {name: GREETING, value: "hello $(LEVEL), not $$(LEVEL)"}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: TEAM
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['team']"}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: POD_UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - {name: ADDRESS, value: "$(POD_IP):8080"}
    resources: {limits: {memory: 64Mi}}"#;
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: env-sources, labels: {{team: storage}}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sh, -c, 'echo "argv $(POD_NAME) $0"; env | sort | grep -E "^(LEVEL|DB_|GREETING|POD_|TEAM|MEM_MI|ADDRESS)"', "$(LEVEL)"]{env}
  - name: wasm
    image: SIDECARS/hello.wasm
    args: ["$(POD_NAME)"]{env}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data:
  LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
type: Opaque
data:
  password: czNjcjN0
stringData:
  user: admin
"#
    );
    let run = TestPod::new("env-sources", &manifest).run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    for (c, prefix) in [("main", ""), ("wasm", "env ")] {
        for want in [
            "LEVEL=debug",
            "DB_password=s3cr3t",
            "DB_user=admin",
            "GREETING=hello debug, not $(LEVEL)",
            "POD_NAME=env-sources",
            "TEAM=storage",
            "MEM_MI=64",
        ] {
            run.assert_line(c, &format!("{prefix}{want}"));
        }
        let value = |name: &str| {
            run.logs(c)
                .iter()
                .find_map(|l| {
                    l.strip_prefix(&format!("{prefix}{name}="))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| panic!("{c} has no {name}\n{}", run.dump()))
        };
        let ip: std::net::IpAddr = value("POD_IP")
            .parse()
            .unwrap_or_else(|e| panic!("{c}: POD_IP is not an address ({e})\n{}", run.dump()));
        assert_eq!(value("ADDRESS"), format!("{ip}:8080"), "{}", run.dump());
        let uid = value("POD_UID");
        assert_eq!(uid.len(), 36, "{c}: POD_UID {uid:?}\n{}", run.dump());
    }
    run.assert_line("main", "argv env-sources debug");
    run.assert_line("wasm", r#"argv = ["wasm", "env-sources"]"#);
    // Both containers see the one pod: one UID.
    let uids: Vec<String> = ["main", "wasm"]
        .iter()
        .map(|c| {
            run.logs(c)
                .iter()
                .find_map(|l| l.rsplit_once("POD_UID=").map(|(_, v)| v.to_string()))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(uids[0], uids[1], "{}", run.dump());
    assert_no_leftovers("env-sources");
}

/// Scheduling fields on one host (issue 26, item 16): those that mean nothing here are
/// accepted and each named once as ignored, with why (as `podman kube play` tolerates them);
/// a `nodeSelector` or required node affinity is checked against the host's labels (the
/// kubelet's well-known ones and `$WPOD_NODE_LABELS`), and refused with what the host has
/// when it could never be met.
#[test]
fn scheduling_fields_are_ignored_or_checked_against_the_hosts_labels() {
    let dir = std::env::temp_dir().join(format!("wpod-ignored-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("pod.yaml");
    let labels = dir.join("node-labels");
    std::fs::write(&labels, "# this host\ndisk=ssd\n").expect("write the labels");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: placed}\nspec:\n  nodeSelector: {disk: ssd, kubernetes.io/os: linux}\n  \
         tolerations: [{operator: Exists}]\n  priorityClassName: high\n  serviceAccountName: web\n  \
         affinity:\n    podAntiAffinity: {}\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
         nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: Exists}]}]\n  \
         containers:\n  - name: main\n    command: [\"true\"]\n",
    )
    .expect("write the manifest");
    let validate = |labels_file: &std::path::Path| {
        let mut cmd = crate::wpod();
        cmd.args(["validate", file.to_str().expect("a UTF-8 path")])
            .env("WPOD_NODE_LABELS", labels_file);
        cmd.output().expect("run wpod")
    };
    let out = validate(&labels);
    let err = crate::text(&out.stderr);
    assert!(out.status.success(), "{err}");
    for want in [
        "pod.yaml:6:3: spec.tolerations: ignored: a host has no taints to tolerate",
        "pod.yaml:7:3: spec.priorityClassName: ignored: there is no scheduler queue",
        "pod.yaml:10:5: spec.affinity.podAntiAffinity: ignored: there is one host",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
    // Without the label file the host has no disk=ssd: refused, saying what it has.
    let out = validate(&dir.join("no-such-file"));
    let err = crate::text(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("spec.nodeSelector.disk: the host has no label disk=ssd; this host has kubernetes.io/arch=amd64"),
        "{err}"
    );
}

/// Termination messages as the kubelet reads them (issue 26, item 7): the file at
/// `terminationMessagePath` (default `/dev/termination-log`, any path the container names), or
/// with `FallbackToLogsOnError` the end of an erroring container's output; in the `exited`
/// event (so `wpod describe` and `ps --output json` too).
#[test]
fn termination_messages_come_from_the_file_or_the_logs() {
    require_root("termination_messages_come_from_the_file_or_the_logs");
    let run = TestPod::new(
        "termination-messages",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: termination-messages}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [sh, -c, 'echo "disk full on /data" > /dev/termination-log; exit 3']
  - name: fallback
    # One stream: two pipes are read apart, so lines of stdout and stderr have no order.
    command: [sh, -c, 'echo "line one" >&2; echo "last words" >&2; exit 4']
    terminationMessagePolicy: FallbackToLogsOnError
  - name: custom
    command: [sh, -c, 'echo "done, cleanly" > /tmp/why']
    terminationMessagePath: /tmp/why
  - name: quiet
    command: [sh, -c, 'echo "not a message"; exit 5']
"#,
    )
    .run(LONG);
    let message = |c: &str| {
        run.events(Some(c))
            .iter()
            .find(|e| e["event"] == "exited")
            .map(|e| e["message"].clone())
            .unwrap_or_else(|| panic!("{c} never exited\n{}", run.dump()))
    };
    assert_eq!(message("main"), "disk full on /data\n", "{}", run.dump());
    assert_eq!(
        message("fallback"),
        "line one\nlast words\n",
        "{}",
        run.dump()
    );
    assert_eq!(message("custom"), "done, cleanly\n", "{}", run.dump());
    // The default policy (File) never takes the logs.
    assert!(message("quiet").is_null(), "{}", run.dump());
    assert_no_leftovers("termination-messages");
}

/// A pod-level `securityContext` (issue 26, item 10): its user and group under each
/// container's (which wins), its `supplementalGroups` and `fsGroup` in every process's groups,
/// its volumes given to the `fsGroup` (setgid, so new files are too; projected files readable
/// by it), and its sysctls set in the pod's own namespaces.
#[test]
fn a_pod_security_context_sets_users_groups_volume_ownership_and_sysctls() {
    require_root("a_pod_security_context_sets_users_groups_volume_ownership_and_sysctls");
    let run = TestPod::new(
        "pod-security",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: pod-security}
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    sysctls:
    - {name: net.ipv4.ip_local_port_range, value: "32768 33000"}
    - {name: kernel.shm_rmid_forced, value: "1"}
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      echo "uid $(id -u) gid $(id -g) groups $(id -G)"
      touch /data/made
      echo "data $(stat -c '%g %a' /data) made $(stat -c %g /data/made)"
      echo "secret $(stat -L -c '%g %a' /config/token) reads $(cat /config/token)"
      echo "ports $(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' ' ')"
      echo "shm $(cat /proc/sys/kernel/shm_rmid_forced)"
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: config, mountPath: /config}
  - name: root-here
    command: [sh, -c, 'echo "uid $(id -u)"; touch /config/planted 2>/dev/null && echo "config wrote" || echo "config read-only"']
    securityContext: {runAsUser: 0}
    # Mounted without readOnly: a Secret's volume is read-only all the same, even for root.
    volumeMounts: [{name: config, mountPath: /config}]
  volumes:
  - {name: data, emptyDir: {}}
  - name: config
    secret: {secretName: creds, defaultMode: 0400}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: t0k3n}
"#,
    )
    .run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let line = |c: &str, prefix: &str| {
        run.logs(c)
            .into_iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{c} printed no {prefix}\n{}", run.dump()))
    };
    let ids = line("main", "uid ");
    assert!(ids.starts_with("uid 1000 gid 3000 groups "), "{ids}");
    let groups: Vec<&str> = ids.rsplit("groups ").next().unwrap().split(' ').collect();
    assert!(
        groups.contains(&"2000") && groups.contains(&"4000"),
        "{ids}"
    );
    // The emptyDir belongs to the fsGroup, setgid: what the pod makes there does too.
    assert_eq!(
        line("main", "data "),
        "data 2000 2777 made 2000",
        "{}",
        run.dump()
    );
    // A 0400 Secret file is the group's to read (g+r), so uid 1000 reads it through fsGroup.
    assert_eq!(
        line("main", "secret "),
        "secret 2000 440 reads t0k3n",
        "{}",
        run.dump()
    );
    // A Secret's volume is mounted read-only, whatever the mount says.
    assert_eq!(
        line("root-here", "config "),
        "config read-only",
        "{}",
        run.dump()
    );
    assert_eq!(
        line("main", "ports "),
        "ports 32768 33000",
        "{}",
        run.dump()
    );
    assert_eq!(line("main", "shm "), "shm 1", "{}", run.dump());
    // The container's own runAsUser wins over the pod's.
    assert_eq!(line("root-here", "uid "), "uid 0", "{}", run.dump());
    // The host's own sysctl is untouched.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_ne!(
        host.split_whitespace().collect::<Vec<_>>(),
        ["32768", "33000"]
    );
    assert_no_leftovers("pod-security");
}

/// `subPath` and `subPathExpr` (issue 26, item 14): a directory or a file of a volume mounted
/// in place of its root, for native containers and Wasm sidecars, made when missing; a subPath
/// through a symlink a container planted is refused (the kubelet's protection), the
/// container failing to start rather than reaching what the link names.
#[test]
fn sub_paths_mount_part_of_a_volume_and_never_follow_a_link() {
    require_root("sub_paths_mount_part_of_a_volume_and_never_follow_a_link");
    let run = TestPod::new(
        "sub-paths",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sub-paths}
spec:
  restartPolicy: Never
  initContainers:
  - name: prepare
    command: [sh, -c, 'mkdir -p /data/app && echo hello > /data/app/greeting && echo "key: value" > /data/one.conf && ln -s /etc /data/escape']
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      echo "greeting $(cat /app/greeting)"
      echo "conf $(cat /etc/app.conf)"
      touch /made/x && echo "made $(ls /made)"
      echo "settings $(cat /etc/settings.conf)"
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: data, mountPath: /app, subPath: app}
    - {name: data, mountPath: /etc/app.conf, subPath: one.conf}
    - {name: data, mountPath: /made, subPathExpr: "pods/$(POD_NAME)"}
    # One key of a ConfigMap (a link into its ..data, wpod's own) as a file.
    - {name: config, mountPath: /etc/settings.conf, subPath: settings.conf}
  - name: wasm
    image: SIDECARS/hello.wasm
    args: ["/app"]
    volumeMounts: [{name: data, mountPath: /app, subPath: app, readOnly: true}]
  - name: escaper
    command: [ls, /mnt]
    volumeMounts: [{name: data, mountPath: /mnt, subPath: escape/ssh}]
  # A Wasm sidecar's preopen is held to the same: the link is not followed.
  - name: wasm-escaper
    image: SIDECARS/hello.wasm
    args: ["/mnt"]
    volumeMounts: [{name: data, mountPath: /mnt, subPath: escape}]
  volumes:
  - {name: data, emptyDir: {}}
  - {name: config, configMap: {name: settings}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {settings.conf: "mode=fast"}
"#,
    )
    .run(LONG);
    run.assert_line("main", "greeting hello");
    run.assert_line("main", "settings mode=fast");
    run.assert_line("main", "conf key: value");
    run.assert_line("main", "made x");
    run.assert_line("wasm", "/app: 1 entries");
    let failed: Vec<String> = run
        .events(Some("escaper"))
        .iter()
        .filter(|e| e["event"] == "failedToStart")
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        failed
            .iter()
            .any(|e| e.contains("subPath escape/ssh") && e.contains("a symlink is on its way")),
        "{failed:?}\n{}",
        run.dump()
    );
    let wasm_failed = run
        .events(Some("wasm-escaper"))
        .iter()
        .any(|e| e["event"] == "failedToStart");
    assert!(wasm_failed, "{}", run.dump());
    assert!(run.logs("wasm-escaper").is_empty(), "{}", run.dump());
    assert!(run.logs("escaper").is_empty(), "{}", run.dump());
    assert_no_leftovers("sub-paths");
}

/// Probes and stops (issue 26, item 17): an `httpGet` probe with `scheme: HTTPS` to a server
/// with a self-signed certificate (not verified, as the kubelet's), and `lifecycle.stopSignal`
/// (with `spec.os.name`) in place of SIGTERM.
#[test]
fn https_probes_and_a_stop_signal_of_the_containers_choosing() {
    require_root("https_probes_and_a_stop_signal_of_the_containers_choosing");
    let port = crate::free_port();
    let pod = TestPod::new(
        "https-probe",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: https-probe}}
spec:
  os: {{name: linux}}
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    command: [sh, -c]
    args:
    - |
      cd /tmp
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem -subj /CN=pod -days 1 2>/dev/null
      exec python3 -u -c '
      import http.server, ssl, signal, sys
      def bye(*a):
          print("got SIGUSR1, stopping", flush=True); sys.exit(0)
      signal.signal(signal.SIGUSR1, bye)
      class H(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              print("probe " + self.path, flush=True)
              self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
          def log_message(self, *a): pass
      s = http.server.HTTPServer(("127.0.0.1", {port}), H)
      ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("c.pem", "k.pem")
      s.socket = ctx.wrap_socket(s.socket, server_side=True)
      print("serving", flush=True); s.serve_forever()'
    readinessProbe:
      httpGet: {{path: /ready, port: {port}, scheme: HTTPS}}
      periodSeconds: 1
    lifecycle:
      stopSignal: SIGUSR1
"#
        ),
    );
    let running = pod.spawn();
    let run = running.wait_for("readiness over HTTPS", LONG, |r| {
        r.events(Some("main")).iter().any(|e| e["event"] == "ready")
    });
    run.assert_line("main", "probe /ready");
    let run = running.stop(LONG);
    run.assert_line("main", "got SIGUSR1, stopping");
    let exit = run
        .events(Some("main"))
        .into_iter()
        .find(|e| e["event"] == "exited")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exit["code"], 0, "{}", run.dump());
    assert_no_leftovers("https-probe");
}

/// ConfigMaps and Secrets in files of their own (issue 26, item 13), named with
/// `--configmap` as `podman kube play` names them: without them the pod is refused naming
/// what is missing, a Pod in such a file is refused, and `wpod apply --configmap` of a changed
/// ConfigMap rewrites the mounted file of the running pod.
#[test]
fn config_maps_and_secrets_come_from_files_named_beside_the_manifest() {
    require_root("config_maps_and_secrets_come_from_files_named_beside_the_manifest");
    let mut pod = TestPod::new(
        "cm-files",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: cm-files}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    command: [sh, -c, 'trap "exit 0" TERM; while true; do echo "level=$(cat /etc/settings/level) token=$TOKEN"; sleep 0.3; done']
    env:
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: creds, key: token}}
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
  volumes:
  - name: settings
    configMap: {name: settings}
"#,
    );
    let dir = pod.manifest.parent().unwrap().to_path_buf();
    let settings = dir.join("settings.yaml");
    let creds = dir.join("creds.yaml");
    let config_map = |level: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{level: {level}}}\n")
    };
    std::fs::write(&settings, config_map("info")).unwrap();
    std::fs::write(
        &creds,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {token: s3cret}\n",
    )
    .unwrap();
    let manifest = pod.manifest.to_str().unwrap().to_string();
    let both = format!("{},{}", settings.display(), creds.display());

    let out = crate::wpod_output(&["validate", &manifest]);
    let err = crate::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no ConfigMap named \"settings\""), "{err}");
    assert!(err.contains("no Secret named \"creds\""), "{err}");
    let out = crate::wpod_output(&["validate", "--configmap", &manifest, &manifest]);
    let err = crate::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("a Pod in a --configmap file"), "{err}");
    let out = crate::wpod_output(&["validate", "--configmap", &both, &manifest]);
    assert!(out.status.success(), "{}", crate::text(&out.stderr));

    pod.args = vec!["--configmap".into(), both];
    let running = pod.spawn();
    running.wait_for("the ConfigMap's file and the Secret's value", LONG, |r| {
        r.has_line("main", "level=info token=s3cret")
    });
    std::fs::write(&settings, config_map("debug")).unwrap();
    let out = crate::wpod_output(&[
        "apply",
        "--configmap",
        settings.to_str().unwrap(),
        "--configmap",
        creds.to_str().unwrap(),
        &manifest,
    ]);
    let said = crate::text(&out.stdout);
    assert!(out.status.success(), "{said}{}", crate::text(&out.stderr));
    assert!(
        said.contains("updated the files of volume settings"),
        "{said}"
    );
    running.wait_for("the changed ConfigMap", LONG, |r| {
        r.has_line("main", "level=debug token=s3cret")
    });
    running.stop(LONG);
    assert_no_leftovers("cm-files");
}

/// `grpc` probes (issue 26, item 17) against a real gRPC server (Debian's grpcio): the standard
/// health protocol's `SERVING` makes the container ready, a service that answers `NOT_SERVING`
/// fails liveness with the kubelet's words, and a server without the health service says so.
#[test]
fn grpc_probes_speak_the_standard_health_protocol() {
    require_root("grpc_probes_speak_the_standard_health_protocol");
    let (port, bare) = (crate::free_port(), crate::free_port());
    let pod = TestPod::new(
        "grpc-probe",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: grpc-probe}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: [/usr/bin/python3, -u, -c]
    args:
    - |
      import grpc, signal, sys
      from concurrent import futures
      signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
      def check(request, context):
          print("check [" + request.hex() + "]", flush=True)
          return b"\x08\x02" if request == b"\x0a\x02db" else b"\x08\x01"
      health = grpc.method_handlers_generic_handler(
          "grpc.health.v1.Health", {{"Check": grpc.unary_unary_rpc_method_handler(check)}})
      server = grpc.server(futures.ThreadPoolExecutor(2))
      server.add_generic_rpc_handlers((health,))
      server.add_insecure_port("127.0.0.1:{port}")
      server.start()
      other = grpc.server(futures.ThreadPoolExecutor(1))
      other.add_insecure_port("127.0.0.1:{bare}")
      other.start()
      print("serving", flush=True)
      server.wait_for_termination()
    readinessProbe:
      grpc: {{port: {port}}}
      periodSeconds: 1
  - name: db-watch
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
    livenessProbe:
      grpc: {{port: {port}, service: db}}
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 2
  - name: no-health
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
    readinessProbe:
      grpc: {{port: {bare}}}
      initialDelaySeconds: 2
      periodSeconds: 1
"#
        ),
    );
    let running = pod.spawn();
    let run = running.wait_for("the three probe outcomes", LONG, |r| {
        let has = |c: &str, kind: &str| r.events(Some(c)).iter().any(|e| e["event"] == kind);
        has("main", "ready") && has("db-watch", "unhealthy") && has("no-health", "probeFailed")
    });
    // The whole server's check carries an empty service name; the other names "db".
    run.assert_line("main", "check []");
    run.assert_line("main", "check [0a026462]");
    let message = |c: &str, kind: &str| {
        run.events(Some(c))
            .iter()
            .find(|e| e["event"] == kind)
            .and_then(|e| e["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let unhealthy = message("db-watch", "unhealthy");
    assert!(
        unhealthy.contains(r#"service unhealthy (responded with "NOT_SERVING")"#),
        "{unhealthy}\n{}",
        run.dump()
    );
    let bare_failure = message("no-health", "probeFailed");
    assert!(
        bare_failure.contains("does not implement the grpc health protocol"),
        "{bare_failure}\n{}",
        run.dump()
    );
    assert!(
        !run.events(Some("no-health"))
            .iter()
            .any(|e| e["event"] == "ready"),
        "{}",
        run.dump()
    );
    running.stop(LONG);
    assert_no_leftovers("grpc-probe");
}

/// A liveness probe's own `terminationGracePeriodSeconds` bounds the kill it decides, in place
/// of the pod's (30 s here): a container that ignores SIGTERM is killed about 2 s after it is
/// found unhealthy.
#[test]
fn a_probe_grace_period_shortens_the_kill_it_decides() {
    require_root("a_probe_grace_period_shortens_the_kill_it_decides");
    let pod = TestPod::new(
        "probe-grace",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probe-grace}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    command: [sh, -c, 'trap "" TERM; touch /tmp/up; while true; do sleep 0.1; done']
    livenessProbe:
      exec: {command: [sh, -c, "test ! -f /tmp/up"]}
      periodSeconds: 1
      failureThreshold: 1
      terminationGracePeriodSeconds: 2
"#,
    );
    let run = pod.run(LONG);
    let time = |kind: &str| {
        run.events(Some("main"))
            .iter()
            .find(|e| e["event"] == kind)
            .and_then(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
            .unwrap_or_else(|| panic!("no {kind} event\n{}", run.dump()))
    };
    let took = time("killed")
        .duration_since(time("unhealthy"))
        .unwrap_or_default();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "killed {took:?} after unhealthy\n{}",
        run.dump()
    );
    assert_no_leftovers("probe-grace");
}

/// An AppArmor profile the host cannot apply is refused, not ignored (issue 26, item 9), as
/// the kubelet refuses the pod: a container's own profile, the pod's it inherits, the older
/// annotation; `Unconfined` holds. (What is said depends on whether this host has AppArmor.)
#[test]
fn apparmor_profiles_the_host_cannot_apply_are_refused() {
    let file = wpod_test_support::repo_root().join("tests/manifests/host/apparmor.yaml");
    let out = crate::wpod_output(&["validate", file.to_str().expect("a UTF-8 path")]);
    let err = crate::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let why = if std::path::Path::new("/sys/kernel/security/apparmor").is_dir() {
        "wpod does not apply AppArmor profiles yet"
    } else {
        "AppArmor is not enabled on this host"
    };
    for (at, profile) in [
        (
            "metadata.annotations.container.apparmor.security.beta.kubernetes.io/legacy",
            "localhost/k8s-apparmor-example",
        ),
        (
            "spec.securityContext.appArmorProfile.type",
            "RuntimeDefault",
        ),
        (
            "spec.containers[0].securityContext.appArmorProfile.type",
            "Localhost k8s-apparmor-example-deny-write",
        ),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{at}: AppArmor profile {profile}: {why}"))),
            "{at}\n{err}"
        );
    }
    assert!(
        err.contains("spec.containers[4].securityContext.appArmorProfile.type: type Localhost needs localhostProfile"),
        "{err}"
    );
    // The pod-level line stands for the container that inherits it; `free` holds.
    assert_eq!(err.lines().count(), 4, "{err}");
}
