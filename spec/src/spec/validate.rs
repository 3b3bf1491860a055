//! Semantic checks on a decoded Pod: the rules the Kubernetes API server applies, plus wpod's own.

use std::collections::{HashMap, HashSet};

use super::container::{Container, Handler, Probe};
use super::decode::{did_you_mean, IntOrString};
use super::diag::Diagnostic;
use super::enums::{Protocol, Role};
use super::names::{dns1123_label, port_name, PodName};
use super::pod::{Annotations, Pod, VolumeSource};

/// Adds one diagnostic per broken rule; never stops at the first.
pub(super) fn check(pod: &Pod, out: &mut Vec<Diagnostic>) {
    let mut c = Checker { pod, out };
    c.metadata();
    c.pod_spec();
    c.volumes();
    c.containers();
    c.ports();
    c.pod_resources();
}

struct Checker<'a> {
    pod: &'a Pod,
    out: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Whether decoding already reported a problem at or under `path` (then a second complaint
    /// about the same field, e.g. "empty" after "expected a string", would only be noise).
    fn reported(&self, path: &str) -> bool {
        self.out.iter().any(|d| {
            d.path == path
                || d.path.starts_with(&format!("{path}["))
                || d.path.starts_with(&format!("{path}."))
        })
    }

    /// Whether a field of the object at `path` was reported as a misspelling of `field`: then
    /// what follows from `field` missing is not said again (the root cause is said once).
    fn misspelled(&self, path: &str, field: &str) -> bool {
        let prefix = format!("{path}.");
        let hint = format!("did you mean \"{field}\"?");
        self.out
            .iter()
            .any(|d| d.path.starts_with(&prefix) && d.message.ends_with(&hint))
    }

    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let d = self.pod.source.diag(path, message);
        self.out.push(d);
    }

    fn metadata(&mut self) {
        for (key, message) in Annotations::read(&self.pod.metadata.annotations).1 {
            self.err(format!("metadata.annotations.{key}"), message);
        }
        let name = &self.pod.metadata.name;
        if self.reported("metadata.name") {
            return;
        }
        if let Err(e) = PodName::new(name) {
            self.err("metadata.name", e);
        } else if self.pod.spec.hostname.is_none() && name.len() > 63 {
            // The pod's hostname is its name unless spec.hostname says otherwise, and a hostname
            // has at most 63 characters.
            self.err(
                "metadata.name",
                format!(
                    "a name of {} characters cannot be the pod's hostname (at most 63): set \
                     spec.hostname, or use a shorter name",
                    name.len()
                ),
            );
        }
    }

    fn pod_spec(&mut self) {
        let spec = &self.pod.spec;
        if let Some(h) = &spec.hostname {
            if let Err(e) = dns1123_label(h) {
                self.err("spec.hostname", e);
            }
        }
        if spec.termination_grace_period_seconds < 0 {
            self.err(
                "spec.terminationGracePeriodSeconds",
                "must be zero or more seconds",
            );
        }
        // A missing `containers` is reported by the decoder; this catches `containers: []`.
        if spec.containers.is_empty() && self.pod.source.has("spec.containers") {
            self.err("spec.containers", "at least one container is required");
        }
        self.dns();
        self.host_aliases();
        if spec.host_network && spec.host_users == Some(false) {
            // As the API server: the host's network namespace belongs to the host's users.
            self.err(
                "spec.hostUsers",
                "a pod in a user namespace of its own cannot use the host's network \
                 (hostNetwork: true); remove one of them",
            );
        }
        if spec.host_network && self.pod.annotations().network_none {
            self.err(
                "spec.hostNetwork",
                format!(
                    "a pod on the host's network cannot also be kept off the network \
                     ({}: none); remove one of them",
                    super::pod::NETWORK_ANNOTATION
                ),
            );
        }
    }

    /// `dnsPolicy` and `dnsConfig`, with the API server's limits.
    fn dns(&mut self) {
        let spec = &self.pod.spec;
        let config = spec.dns_config.clone().unwrap_or_default();
        if spec.dns_policy == super::enums::DnsPolicy::None && config.nameservers.is_empty() {
            self.err(
                "spec.dnsConfig.nameservers",
                "dnsPolicy None needs at least one nameserver in dnsConfig: add one, or use \
                 dnsPolicy Default",
            );
        }
        if config.nameservers.len() > 3 {
            self.err(
                "spec.dnsConfig.nameservers",
                "at most 3 nameservers (the resolver reads no more)",
            );
        }
        for (i, ns) in config.nameservers.iter().enumerate() {
            if ns.parse::<std::net::IpAddr>().is_err() {
                self.err(
                    format!("spec.dnsConfig.nameservers[{i}]"),
                    format!("\"{ns}\" is not an IP address"),
                );
            }
        }
        if config.searches.len() > 32 {
            self.err("spec.dnsConfig.searches", "at most 32 search domains");
        }
        let total: usize = config.searches.iter().map(|s| s.len() + 1).sum();
        if total > 2048 {
            self.err(
                "spec.dnsConfig.searches",
                "the search domains may have at most 2048 characters together",
            );
        }
        for (i, s) in config.searches.iter().enumerate() {
            if let Err(e) = super::names::dns1123_subdomain(s.trim_end_matches('.')) {
                self.err(format!("spec.dnsConfig.searches[{i}]"), e);
            }
        }
        for (i, o) in config.options.iter().enumerate() {
            if o.name.is_empty() || o.name.contains(char::is_whitespace) {
                self.err(
                    format!("spec.dnsConfig.options[{i}].name"),
                    "an option's name is one word, such as ndots",
                );
            }
            if o.value
                .as_deref()
                .is_some_and(|v| v.contains(char::is_whitespace))
            {
                self.err(
                    format!("spec.dnsConfig.options[{i}].value"),
                    "an option's value is one word",
                );
            }
        }
    }

    /// `hostAliases`: an IP address and DNS names each.
    fn host_aliases(&mut self) {
        for (i, a) in self.pod.spec.host_aliases.iter().enumerate() {
            let path = format!("spec.hostAliases[{i}]");
            if a.ip.parse::<std::net::IpAddr>().is_err() {
                self.err(
                    format!("{path}.ip"),
                    format!("\"{}\" is not an IP address", a.ip),
                );
            }
            if a.hostnames.is_empty() {
                self.err(format!("{path}.hostnames"), "at least one hostname");
            }
            for (j, h) in a.hostnames.iter().enumerate() {
                if let Err(e) = super::names::dns1123_subdomain(h) {
                    self.err(format!("{path}.hostnames[{j}]"), e);
                }
            }
        }
    }

    fn volumes(&mut self) {
        let mut seen = HashSet::new();
        for (i, v) in self.pod.spec.volumes.iter().enumerate() {
            let path = format!("spec.volumes[{i}]");
            if let Err(e) = dns1123_label(&v.name) {
                self.err(format!("{path}.name"), e);
            } else if !seen.insert(v.name.as_str()) {
                self.err(
                    format!("{path}.name"),
                    format!("duplicate volume name \"{}\"", v.name),
                );
            }
            match &v.source {
                VolumeSource::EmptyDir(_)
                | VolumeSource::Projected(_)
                | VolumeSource::Claim(_)
                | VolumeSource::Image(_) => {}
                VolumeSource::HostPath(h) => {
                    if !h.path.starts_with('/') {
                        self.err(format!("{path}.hostPath.path"), "must be an absolute path");
                    }
                    if h.path.split('/').any(|seg| seg == "..") {
                        self.err(format!("{path}.hostPath.path"), "must not contain '..'");
                    }
                    self.c_string(&format!("{path}.hostPath.path"), &h.path);
                }
            }
        }
    }

    fn containers(&mut self) {
        let mut names: HashMap<&str, String> = HashMap::new();
        let pod = self.pod;
        for (path, role, c) in pod.containers_in_order() {
            if !c.name.is_empty() {
                if let Err(e) = dns1123_label(&c.name) {
                    self.err(format!("{path}.name"), e);
                } else if let Some(first) = names.get(c.name.as_str()) {
                    self.err(
                        format!("{path}.name"),
                        format!("duplicate container name \"{}\" (first used at {first}); names must be unique across containers and initContainers", c.name),
                    );
                } else {
                    names.insert(&c.name, path.clone());
                }
            }
            self.container(&path, c, role);
        }
    }

    fn container(&mut self, path: &str, c: &Container, role: Role) {
        // `args` alone is the argv, as for an image without an Entrypoint.
        if c.image.is_none()
            && c.command.is_empty()
            && c.args.is_empty()
            && !self.reported(&format!("{path}.command"))
            && !self.misspelled(path, "command")
            && !self.misspelled(path, "args")
        {
            self.err(
                format!("{path}.command"),
                "required when image is omitted: a container without an image runs its command on the host filesystem",
            );
        }
        let tm = &c.termination_message_path;
        if !tm.starts_with('/') || tm.split('/').any(|s| s == "..") || tm == "/" {
            self.err(
                format!("{path}.terminationMessagePath"),
                "must be an absolute path to a file, without \"..\"",
            );
        }
        self.c_string(&format!("{path}.terminationMessagePath"), tm);
        if c.lifecycle
            .as_ref()
            .is_some_and(|l| l.stop_signal.is_some())
            && self.pod.spec.os.is_none()
        {
            self.err(
                format!("{path}.lifecycle.stopSignal"),
                "needs spec.os.name (Kubernetes' rule): add `os: {name: linux}` to the pod's spec",
            );
        }
        if let Some(w) = &c.working_dir {
            if !w.starts_with('/') {
                self.err(format!("{path}.workingDir"), "must be an absolute path");
            }
            self.c_string(&format!("{path}.workingDir"), w);
        }
        for (field, values) in [("command", &c.command), ("args", &c.args)] {
            for (i, v) in values.iter().enumerate() {
                self.c_string(&format!("{path}.{field}[{i}]"), v);
            }
        }
        for (i, e) in c.env.iter().enumerate() {
            if let super::container::EnvValue::Text(value) = &e.value {
                self.c_string(&format!("{path}.env[{i}].value"), value);
            }
        }
        match (c.restart_policy, role) {
            (None, _) | (Some(_), Role::NativeSidecar) => {}
            (Some(p), Role::Init) => {
                self.err(format!("{path}.restartPolicy"), format!("unsupported value \"{p}\": an init container takes only Always (which makes it a native sidecar)"));
            }
            (Some(_), Role::Regular) => {
                self.err(format!("{path}.restartPolicy"), "only init containers take restartPolicy (Always makes a native sidecar); set spec.restartPolicy for regular containers");
            }
        }
        if role == Role::Init {
            for (field, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    self.err(format!("{path}.{field}"), "init containers run to completion and take no probes or lifecycle hooks; add restartPolicy: Always to make this a native sidecar");
                }
            }
        }
        for (i, e) in c.env.iter().enumerate() {
            if e.name.is_empty()
                || e.name.contains('=')
                || !e.name.chars().all(|ch| ch.is_ascii_graphic())
            {
                self.err(format!("{path}.env[{i}].name"), format!("invalid environment variable name \"{}\": use printable characters without '='", e.name));
            }
        }
        self.mounts(path, c);
        self.resources(path, c);
        self.security(path, c);
        for (field, probe) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                self.probe(&format!("{path}.{field}"), field, p, c);
            }
        }
        if let Some(l) = &c.lifecycle {
            for (field, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
                if let Some(h) = h {
                    self.handler(&format!("{path}.lifecycle.{field}"), h, c);
                }
            }
        }
    }

    /// Arguments, environment and paths reach the kernel as C strings, which end at a NUL.
    fn c_string(&mut self, path: &str, value: &str) {
        if value.contains('\0') {
            self.err(
                path,
                "must not contain a NUL character (\\0): programs receive their arguments, \
                 environment and paths as C strings",
            );
        }
    }

    fn mounts(&mut self, path: &str, c: &Container) {
        let volumes: Vec<&str> = self
            .pod
            .spec
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        let mut paths = HashSet::new();
        // A volume whose name could not be read is said once, at the volume, not again at
        // each mount of it.
        let volume_refused = self.pod.spec.volumes.iter().any(|v| v.name.is_empty());
        for (i, m) in c.volume_mounts.iter().enumerate() {
            let mpath = format!("{path}.volumeMounts[{i}]");
            if !m.name.is_empty() && !volumes.contains(&m.name.as_str()) && !volume_refused {
                let hint = match did_you_mean(&m.name, &volumes) {
                    Some(s) => format!("; did you mean \"{s}\"?"),
                    None if volumes.is_empty() => "; define it under spec.volumes".to_string(),
                    None => format!("; defined volumes: {}", volumes.join(", ")),
                };
                self.err(
                    format!("{mpath}.name"),
                    format!("volume \"{}\" is not defined in spec.volumes{hint}", m.name),
                );
            }
            if !m.mount_path.is_empty() {
                self.c_string(&format!("{mpath}.mountPath"), &m.mount_path);
                if !m.mount_path.starts_with('/') {
                    self.err(format!("{mpath}.mountPath"), "must be an absolute path");
                } else if m.mount_path.trim_matches('/').is_empty() {
                    self.err(
                        format!("{mpath}.mountPath"),
                        "must not be /: a volume cannot replace the container's root; mount it \
                         at a directory such as /data",
                    );
                } else if !paths.insert(m.mount_path.trim_end_matches('/')) {
                    self.err(
                        format!("{mpath}.mountPath"),
                        format!("\"{}\" is mounted twice in this container", m.mount_path),
                    );
                }
                if m.mount_path.split('/').any(|seg| seg == "..") {
                    self.err(format!("{mpath}.mountPath"), "must not contain '..'");
                }
            }
        }
    }

    fn resources(&mut self, path: &str, c: &Container) {
        let (l, r) = (&c.resources.limits, &c.resources.requests);
        if let (Some(lim), Some(req)) = (l.cpu_millis, r.cpu_millis) {
            if req > lim {
                self.err(
                    format!("{path}.resources.requests.cpu"),
                    "must be less than or equal to the cpu limit",
                );
            }
        }
        if let (Some(lim), Some(req)) = (l.memory_bytes, r.memory_bytes) {
            if req > lim {
                self.err(
                    format!("{path}.resources.requests.memory"),
                    "must be less than or equal to the memory limit",
                );
            }
        }
        if l.memory_bytes == Some(0) {
            self.err(
                format!("{path}.resources.limits.memory"),
                "must be greater than zero",
            );
        }
    }

    fn security(&mut self, path: &str, c: &Container) {
        let Some(sc) = &c.security_context else {
            return;
        };
        if sc.privileged {
            self.err(format!("{path}.securityContext.privileged"), "privileged containers are not supported by wpod; add the capabilities the container needs instead");
        }
    }

    fn probe(&mut self, path: &str, field: &str, p: &Probe, c: &Container) {
        for (name, v) in [
            ("periodSeconds", p.period_seconds),
            ("timeoutSeconds", p.timeout_seconds),
            ("successThreshold", p.success_threshold),
            ("failureThreshold", p.failure_threshold),
        ] {
            if v == 0 {
                self.err(format!("{path}.{name}"), "must be at least 1");
            }
        }
        if field == "readinessProbe" && p.termination_grace_period_seconds.is_some() {
            self.err(
                format!("{path}.terminationGracePeriodSeconds"),
                "a readiness probe kills nothing; set it on a liveness or startup probe",
            );
        }
        if field != "readinessProbe" && p.success_threshold > 1 {
            self.err(
                format!("{path}.successThreshold"),
                format!("must be 1 for a {field}"),
            );
        }
        self.handler(path, &p.handler, c);
    }

    fn handler(&mut self, path: &str, h: &Handler, c: &Container) {
        match h {
            Handler::HttpGet(g) => {
                self.port_ref(&format!("{path}.httpGet.port"), &g.port, c);
                // The request is written as text: a line break would smuggle in headers.
                let mut texts = vec![(format!("{path}.httpGet.path"), &g.path)];
                for (i, h) in g.http_headers.iter().enumerate() {
                    texts.push((format!("{path}.httpGet.httpHeaders[{i}].name"), &h.name));
                    texts.push((format!("{path}.httpGet.httpHeaders[{i}].value"), &h.value));
                }
                for (field, text) in texts {
                    if text.contains(['\r', '\n', '\0']) {
                        self.err(field, "must not contain line breaks or NUL characters");
                    }
                }
                match g.scheme.as_str() {
                    "HTTP" | "HTTPS" => {}
                    other => self.err(
                        format!("{path}.httpGet.scheme"),
                        format!("unsupported value \"{other}\": use HTTP or HTTPS"),
                    ),
                }
            }
            Handler::TcpSocket(t) => self.port_ref(&format!("{path}.tcpSocket.port"), &t.port, c),
            Handler::Exec(e)
                if e.command.is_empty() && !self.reported(&format!("{path}.exec.command")) =>
            {
                self.err(format!("{path}.exec.command"), "must name a command to run");
            }
            Handler::Exec(e) => {
                for (i, arg) in e.command.iter().enumerate() {
                    self.c_string(&format!("{path}.exec.command[{i}]"), arg);
                }
            }
            Handler::Sleep(_) => {}
            Handler::Grpc(g) => {
                let port = format!("{path}.grpc.port");
                if !self.reported(&port) && !(1..=65535).contains(&g.port) {
                    self.err(
                        port,
                        format!(
                            "{} is not a valid port: use 1-65535 (a gRPC probe takes a number, not a port name)",
                            g.port
                        ),
                    );
                }
                // Sent as protobuf bytes, not text, but a NUL has no place in a service name.
                if g.service.contains('\0') {
                    self.err(
                        format!("{path}.grpc.service"),
                        "must not contain NUL characters",
                    );
                }
            }
        }
    }

    /// A probe's port: a number, or the name of one of the container's ports.
    fn port_ref(&mut self, path: &str, port: &IntOrString, c: &Container) {
        match port {
            IntOrString::Int(n) if !(1..=65535).contains(n) => {
                self.err(
                    path,
                    format!("{n} is not a valid port: use 1-65535 or a port name"),
                );
            }
            IntOrString::String(name)
                if !c.ports.iter().any(|p| p.name.as_deref() == Some(name)) =>
            {
                self.err(
                    path,
                    format!("no port named \"{name}\" in this container's ports"),
                );
            }
            _ => {}
        }
    }

    /// Pod-level `resources` as the API server checks them (KEP-2837): the pod's requests are
    /// at most its limits, and no container's limit is above the pod's. (That the containers'
    /// requests fit in the pod's is the plan's fit check: it knows which run at once.)
    fn pod_resources(&mut self) {
        use super::quantity::{show_bytes, show_cpu};
        type Of = fn(&super::ResourceList) -> Option<u64>;
        type Show = fn(u64) -> String;
        let pod = self.pod;
        let level = &pod.spec.resources;
        let resources: [(&str, Of, Show); 2] = [
            ("cpu", |l| l.cpu_millis, show_cpu),
            ("memory", |l| l.memory_bytes, show_bytes),
        ];
        for (name, of, show) in resources {
            let Some(limit) = of(&level.limits) else {
                continue;
            };
            if let Some(request) = of(&level.requests).filter(|r| *r > limit) {
                self.err(
                    format!("spec.resources.requests.{name}"),
                    format!(
                        "{} is more than the pod's {name} limit of {}; a request is at most its limit",
                        show(request),
                        show(limit)
                    ),
                );
            }
            for (cpath, c) in pod.all_containers() {
                if let Some(own) = of(&c.resources.limits).filter(|l| *l > limit) {
                    self.err(
                        format!("{cpath}.resources.limits.{name}"),
                        format!(
                            "{} is more than the pod's {name} limit of {} (spec.resources.limits); \
                             a container's limit must fit in the pod's",
                            show(own),
                            show(limit)
                        ),
                    );
                }
            }
        }
    }

    /// All containers share the pod's network namespace, so ports are unique across the pod.
    fn ports(&mut self) {
        let mut container_ports: HashMap<(u16, Protocol), String> = HashMap::new();
        let mut host_ports: HashMap<(u16, Protocol), String> = HashMap::new();
        let pod = self.pod;
        for (cpath, c) in pod.all_containers() {
            let mut names = HashSet::new();
            for (i, p) in c.ports.iter().enumerate() {
                let path = format!("{cpath}.ports[{i}]");
                if p.container_port == 0 && !self.reported(&format!("{path}.containerPort")) {
                    self.err(
                        format!("{path}.containerPort"),
                        "must be between 1 and 65535",
                    );
                }
                if let Some(name) = &p.name {
                    if let Err(e) = port_name(name) {
                        self.err(format!("{path}.name"), e);
                    } else if !names.insert(name.as_str()) {
                        self.err(
                            format!("{path}.name"),
                            format!("duplicate port name \"{name}\""),
                        );
                    }
                }
                // A protocol the decoder refused would only make false duplicates.
                let refused = self.reported(&format!("{path}.protocol"));
                if p.container_port != 0 && !refused {
                    let key = (p.container_port, p.protocol);
                    if let Some(first) = container_ports.get(&key) {
                        self.err(
                            format!("{path}.containerPort"),
                            format!("port {}/{} is already declared at {first}; containers of a pod share one network namespace", key.0, key.1),
                        );
                    } else {
                        container_ports.insert(key, path.clone());
                    }
                }
                if let Some(ip) = &p.host_ip {
                    // Fail closed: a hostIP that is not an address must not become 0.0.0.0.
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        self.err(
                            format!("{path}.hostIP"),
                            format!("\"{ip}\" is not an IP address: write one such as 127.0.0.1 (names such as localhost are not resolved)"),
                        );
                    }
                }
                if let (true, Some(hp)) = (pod.spec.host_network, p.host_port) {
                    if hp != p.container_port {
                        self.err(
                            format!("{path}.hostPort"),
                            format!(
                                "must match containerPort ({}) on the host's network \
                                 (spec.hostNetwork: the container listens on the host itself)",
                                p.container_port
                            ),
                        );
                    }
                }
                if let Some(hp) = p.host_port {
                    let key = (hp, p.protocol);
                    if hp == 0 && !self.reported(&format!("{path}.hostPort")) {
                        self.err(format!("{path}.hostPort"), "must be between 1 and 65535");
                    } else if refused {
                    } else if let Some(first) = host_ports.get(&key) {
                        self.err(
                            format!("{path}.hostPort"),
                            format!("host port {hp}/{} is already published at {first}", key.1),
                        );
                    } else {
                        host_ports.insert(key, path.clone());
                    }
                }
            }
        }
    }
}
