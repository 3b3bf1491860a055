//! Pod networking (issue 24): pods on a CNI bridge with their own IPs, egress through NAT,
//! hostPorts in the kernel, `wpod.dev/network: none`, hostNetwork, the pod's DNS files, and
//! nothing left behind by killed runs or by many pods.
//!
//! Each test runs its pods in a "node" of its own: a network namespace with no default route,
//! so that its bridge, iptables rules and routes are its own and its pods' traffic has nowhere
//! to go but the node and the test hosts joined to it (198.51.100.0/24). The tests check that
//! before they send anything.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wpod_test_support::netns::{NetNs, RemoteHost};
use wpod_test_support::require_root;

use crate::pods::{assert_no_leftovers, PodRun, RunningPod, TestPod};

const LONG: Duration = Duration::from_secs(60);

/// A test's own node: a network namespace without a way out.
struct Node {
    ns: NetNs,
}

impl Node {
    fn new(tag: &str) -> Self {
        let node = Node {
            ns: NetNs::new(tag),
        };
        node.assert_no_way_out();
        node
    }

    /// Fails the test if the node could send anything past the hosts the test joined to it.
    fn assert_no_way_out(&self) {
        let out = self.ns.ip(&["route", "show", "default"]);
        assert!(
            out.stdout.is_empty(),
            "the test node {} has a default route: {}",
            self.ns.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn pod(&self, name: &str, yaml: &str) -> TestPod {
        let mut pod = TestPod::new(name, yaml);
        pod.netns = Some(self.ns.path());
        pod
    }

    /// `wpod ARGS` run in the node.
    fn wpod(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(crate::wpod_bin());
        cmd.args(args);
        self.ns.enter(&mut cmd);
        cmd.output().expect("run wpod")
    }

    /// What of the node's network state pods could leave: links, iptables rules (without
    /// counters) and the leases of `wpod` pods (those whose container id names one of `pods`).
    fn snapshot(&self, pods: &[&str]) -> Snapshot {
        let links = text(&self.ns.ip(&["-o", "link", "show"]).stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        let rules = text(&self.ns.sh("iptables-save && ip6tables-save").stdout)
            .lines()
            // A table is listed once something used it, with its built-in chains at ACCEPT:
            // that is the kernel's, not a rule anyone left.
            .filter(|l| !l.starts_with('#') && !l.starts_with('*') && *l != "COMMIT")
            .filter_map(|l| match l.strip_prefix(':') {
                // ":CHAIN POLICY [packets:bytes]": a chain someone made (policy "-"), or a
                // built-in one whose policy someone changed.
                Some(chain) => {
                    let chain = chain.split(" [").next().unwrap_or(chain);
                    (!chain.ends_with(" ACCEPT")).then(|| chain.to_string())
                }
                None => Some(l.to_string()),
            })
            .collect();
        Snapshot {
            links,
            rules,
            leases: leases_of(pods),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    links: BTreeSet<String>,
    rules: BTreeSet<String>,
    leases: BTreeSet<String>,
}

impl Snapshot {
    #[track_caller]
    fn assert_same(&self, after: &Snapshot, what: &str) {
        for (name, before, now) in [
            ("links", &self.links, &after.links),
            ("iptables rules", &self.rules, &after.rules),
            ("IPAM leases", &self.leases, &after.leases),
        ] {
            let gone: Vec<&String> = before.difference(now).collect();
            let new: Vec<&String> = now.difference(before).collect();
            assert!(
                gone.is_empty() && new.is_empty(),
                "{what}: {name} differ\n  left behind: {new:?}\n  gone: {gone:?}"
            );
        }
    }
}

/// The IPAM leases (host-local's files, named by IP) held by containers of `pods`.
fn leases_of(pods: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in std::fs::read_dir("/var/lib/cni/networks")
        .into_iter()
        .flatten()
        .flatten()
    {
        for lease in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = std::fs::read_to_string(lease.path()).unwrap_or_default();
            let id = id.lines().next().unwrap_or("");
            if pods.iter().any(|p| id.contains(&format!("-{p}-"))) {
                out.insert(format!("{} {id}", lease.path().display()));
            }
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP server answering every connection with the address it came from, run by python3 in
/// a namespace; killed (by PID) when dropped.
struct EchoPeer {
    child: Child,
}

impl EchoPeer {
    fn start(ns: &NetNs, port: u16) -> Self {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &echo_peer_script(port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ns.enter(&mut cmd);
        let child = cmd.spawn().expect("start the echo server");
        let peer = EchoPeer { child };
        // Listening before the test goes on.
        let start = Instant::now();
        while !ns
            .sh(&format!("ss -Htln 'sport = :{port}' | grep -q ."))
            .status
            .success()
        {
            assert!(start.elapsed() < LONG, "the echo server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python that answers each connection to PORT (on every address) with the peer's address.
fn echo_peer_script(port: u16) -> String {
    format!(
        "import socket\n\
         s = socket.create_server(('0.0.0.0', {port}))\n\
         while True:\n\
         \x20   c, a = s.accept()\n\
         \x20   c.sendall((a[0] + '\\n').encode())\n\
         \x20   c.close()\n"
    )
}

/// Shell that connects to HOST PORT until it answers, printing `peer-saw <address>` (what the
/// echo server saw) or `unreachable` after `tries` attempts.
fn dial_script(host: &str, port: u16, tries: u32) -> String {
    format!(
        "for i in $(seq {tries}); do \
           if out=$(python3 -c 'import socket; s = socket.create_connection((\"{host}\", {port}), timeout=2); print(s.recv(100).decode().strip())' 2>/dev/null); then \
             echo \"peer-saw $out\"; exit 0; fi; sleep 0.2; done; echo unreachable"
    )
}

/// The IP a pod reported in its `podStarted` event.
fn pod_ip(run: &PodRun) -> Option<String> {
    run.records
        .iter()
        .find(|r| r["event"] == "podStarted")
        .and_then(|r| r["ip"].as_str())
        .map(str::to_string)
}

/// SIGKILLs the pod's `wpod run`, then waits until `wpod ps` in the node says no wpod holds the
/// pod any more: what the next run and `wpod pod prune` go by.
fn kill_run(node: &Node, pod: &RunningPod) {
    pod.signal(libc::SIGKILL);
    let start = Instant::now();
    loop {
        let ps = node.wpod(&["ps", "--output", "json"]);
        let list: Value = serde_json::from_slice(&ps.stdout).unwrap_or_default();
        let held = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == pod.name.as_str())
            .cloned();
        if held.as_ref().is_some_and(|p| p["supervised"] == false) {
            return;
        }
        assert!(
            start.elapsed() < LONG,
            "wpod ps still shows {} supervised: {held:?}",
            pod.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_started(pod: &RunningPod) -> PodRun {
    pod.wait_for("the sandbox", LONG, |r| {
        r.records.iter().any(|e| e["event"] == "podStarted")
    })
}

fn echo_pod_yaml(name: &str, port: u16, ports: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\n\
         spec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: server\n    \
         command: [python3, -c, {script:?}]\n    ports: {ports}\n",
        script = echo_peer_script(port)
    )
}

#[test]
fn two_pods_reach_each_other_by_ip_and_ps_shows_both() {
    require_root("two_pods_reach_each_other_by_ip");
    let node = Node::new("p2p");
    let server = node.pod(
        "net-p2p-a",
        &echo_pod_yaml("net-p2p-a", 8080, "[{containerPort: 8080}]", ""),
    );
    let a = server.spawn();
    let a_ip = pod_ip(&wait_started(&a)).expect("pod a has an IP");
    let client = node.pod(
        "net-p2p-b",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: net-p2p-b}}\nspec:\n  containers:\n  \
             - name: client\n    command: [sh, -c, {script:?}]\n",
            script = format!(
                "ip -4 -o addr show dev eth0; ip route; {}; exec sleep 300",
                dial_script(&a_ip, 8080, 100)
            )
        ),
    );
    let b = client.spawn();
    let run = b.wait_for("b to dial a", LONG, |r| {
        r.has_line("client", "peer-saw") || r.has_line("client", "unreachable")
    });
    let b_ip = pod_ip(&run).expect("pod b has an IP");
    assert_ne!(a_ip, b_ip);
    // b's own eth0 carries its IP, with a default route to the bridge (and the node has none).
    run.assert_line("client", &format!("inet {b_ip}/"));
    run.assert_line("client", "default via");
    node.assert_no_way_out();
    // On one bridge: a sees b's own address, no NAT between pods.
    run.assert_line("client", &format!("peer-saw {b_ip}"));

    let ps = node.wpod(&["ps", "--output", "json"]);
    let list: Value = serde_json::from_slice(&ps.stdout).expect("ps JSON");
    let ip_of = |name: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["ip"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        ip_of("net-p2p-a").as_deref(),
        Some(a_ip.as_str()),
        "{list:#}"
    );
    assert_eq!(
        ip_of("net-p2p-b").as_deref(),
        Some(b_ip.as_str()),
        "{list:#}"
    );
    let text_ps = text(&node.wpod(&["ps"]).stdout);
    assert!(
        text_ps.contains(&a_ip) && text_ps.contains(&b_ip),
        "{text_ps}"
    );
    let describe = text(&node.wpod(&["describe", "net-p2p-a"]).stdout);
    assert!(
        describe.contains(&format!("IP:          {a_ip}")),
        "{describe}"
    );
    drop(a);
    drop(b);
    assert_no_leftovers("net-p2p-a");
    assert_no_leftovers("net-p2p-b");
}

#[test]
fn a_native_container_reaches_a_remote_host_masqueraded() {
    require_root("a_native_container_reaches_a_remote_host");
    let node = Node::new("egress");
    let remote = RemoteHost::new(Some(&node.ns));
    remote.assert_routed();
    node.assert_no_way_out();
    let _peer = EchoPeer::start(&remote.ns, 9000);
    let pod = node.pod(
        "net-egress",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: net-egress}}\nspec:\n  restartPolicy: Never\n  \
             containers:\n  - name: main\n    command: [sh, -c, {script:?}]\n",
            script = dial_script(&remote.addr.to_string(), 9000, 50)
        ),
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    // The remote host saw the node's address on its link, not the pod's.
    run.assert_line("main", &format!("peer-saw {}", remote.near));
    assert_no_leftovers("net-egress");
}

#[test]
fn host_ports_are_kernel_dnat_from_loopback_the_hosts_addresses_and_host_ip() {
    require_root("host_ports_are_kernel_dnat");
    let node = Node::new("dnat");
    let remote = RemoteHost::new(Some(&node.ns));
    let near = remote.near.to_string();
    let pod = node.pod(
        "net-dnat",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: net-dnat}}\nspec:\n  \
             terminationGracePeriodSeconds: 2\n  containers:\n  - name: any\n    \
             command: [python3, -c, {any:?}]\n    ports: [{{containerPort: 8080, hostPort: 18580}}]\n  \
             - name: one\n    command: [python3, -c, {one:?}]\n    \
             ports: [{{containerPort: 8081, hostPort: 18581, hostIP: {near}}}]\n",
            any = echo_peer_script(8080),
            one = echo_peer_script(8081),
        ),
    );
    let running = pod.spawn();
    wait_started(&running);
    let dial = |ns: &NetNs, host: &str, port: u16, tries: u32| {
        text(&ns.sh(&dial_script(host, port, tries)).stdout)
            .trim()
            .to_string()
    };
    // From the node's loopback and from its own address, and from another host.
    for (from, host) in [
        (&node.ns, "127.0.0.1"),
        (&node.ns, near.as_str()),
        (&remote.ns, near.as_str()),
    ] {
        let got = dial(from, host, 18580, 100);
        assert!(
            got.starts_with("peer-saw "),
            "hostPort 18580 at {host} from {}: {got}",
            from.name
        );
    }
    // hostIP: only there.
    assert!(dial(&remote.ns, &near, 18581, 100).starts_with("peer-saw "));
    assert_eq!(dial(&node.ns, "127.0.0.1", 18581, 3), "unreachable");
    // In the kernel: no process listens on the host ports (wpod only holds them bound).
    let listeners = text(
        &node
            .ns
            .sh("ss -Htln 'sport = :18580 or sport = :18581'")
            .stdout,
    );
    assert!(
        listeners.trim().is_empty(),
        "something listens: {listeners}"
    );
    drop(running);
    assert_no_leftovers("net-dnat");
    // The DNAT rules went with the pod.
    let rules = text(&node.ns.sh("iptables-save -t nat").stdout);
    assert!(!rules.contains("18580"), "{rules}");
}

#[test]
fn network_none_keeps_a_pod_on_its_loopback() {
    require_root("network_none_keeps_a_pod_on_its_loopback");
    let node = Node::new("none");
    let remote = RemoteHost::new(Some(&node.ns));
    let _peer = EchoPeer::start(&remote.ns, 9000);
    let pod = node.pod(
        "net-none",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: net-none\n  \
             annotations: {{wpod.dev/network: none}}\nspec:\n  restartPolicy: Never\n  \
             containers:\n  - name: main\n    command: [sh, -c, {script:?}]\n",
            script = format!(
                "ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' ' '; echo; {}",
                dial_script(&remote.addr.to_string(), 9000, 3)
            )
        ),
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(run.logs("main").first().map(String::as_str), Some("lo "));
    run.assert_line("main", "unreachable");
    assert_eq!(pod_ip(&run), None);
    let started = run
        .records
        .iter()
        .find(|r| r["event"] == "podStarted")
        .expect("podStarted");
    assert_eq!(started["network"], "loopback");
    assert_no_leftovers("net-none");
}

#[test]
fn host_network_pods_share_the_nodes_network() {
    require_root("host_network_pods_share_the_nodes_network");
    let node = Node::new("hostnet");
    let remote = RemoteHost::new(Some(&node.ns));
    let pod = node.pod(
        "net-hostnet",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: net-hostnet}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Never\n  containers:\n  - name: main\n    command: [ip, '-4', '-o', addr]\n",
    );
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    // The node's address on the link to the test host: the node's own namespace.
    run.assert_line("main", &format!("inet {}/30", remote.near));
    let started = run
        .records
        .iter()
        .find(|r| r["event"] == "podStarted")
        .expect("podStarted");
    assert_eq!(started["network"], "host");
    assert_no_leftovers("net-hostnet");
}

#[test]
fn a_pods_dns_files_follow_dns_policy_dns_config_and_host_aliases() {
    require_root("a_pods_dns_files_follow_dns_policy");
    let env = crate::images::ImageEnv::new("netdns");
    let pod = env.pod(
        "net-dns",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: net-dns}
spec:
  restartPolicy: Never
  hostname: web
  dnsPolicy: None
  dnsConfig:
    nameservers: [198.51.100.53]
    searches: [svc.example.test]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  hostAliases:
  - ip: 198.51.100.7
    hostnames: [collector.example.test, collector]
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'cat /etc/resolv.conf /etc/hosts; echo "hostname $(hostname)"']
"#,
    );
    // Pulled from the test's registry on its loopback: run where it is.
    let run = pod.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let ip = pod_ip(&run).expect("an IP");
    let logs = run.logs("main");
    for want in [
        "nameserver 198.51.100.53".to_string(),
        "search svc.example.test".to_string(),
        "options ndots:2 edns0".to_string(),
        format!("{ip}\tweb"),
        "198.51.100.7\tcollector.example.test\tcollector".to_string(),
        "hostname web".to_string(),
    ] {
        assert!(
            logs.contains(&want),
            "no line {want:?} in\n{}",
            logs.join("\n")
        );
    }
    env.assert_no_leftovers("net-dns");
}

#[test]
fn a_killed_run_leaves_nothing_once_the_pod_runs_again() {
    require_root("a_killed_run_leaves_nothing");
    let node = Node::new("killed");
    let name = "net-killed";
    let yaml = |cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    command: {cmd}\n    \
             ports: [{{containerPort: 8080, hostPort: 18590}}]\n"
        )
    };
    // A node that never ran a pod: the bridge, the plugins' chains and wpod's rule go with
    // the last pod, so this is what must be left.
    let before = node.snapshot(&[name]);

    let pod = node.pod(name, &yaml("[sleep, '300']"));
    let running = pod.spawn();
    wait_started(&running);
    kill_run(&node, &running);
    let during = node.snapshot(&[name]);
    assert_ne!(
        during, before,
        "the killed run left nothing to clean (no network?)"
    );

    // The next run of the pod deletes what the killed one left, then runs.
    let again = node.pod(name, &yaml("['true']"));
    let run = again.run(LONG);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(
        run.stderr.contains("killed run"),
        "no word of the recovery:\n{}",
        run.dump()
    );
    before.assert_same(&node.snapshot(&[name]), "after the next run");
    drop(running);
    assert_no_leftovers(name);

    // And wpod pod prune, for a pod that will not run again.
    let running = node.pod(name, &yaml("[sleep, '300']")).spawn();
    wait_started(&running);
    kill_run(&node, &running);
    let out = node.wpod(&["pod", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(name), "{}", text(&out.stdout));
    before.assert_same(&node.snapshot(&[name]), "after wpod pod prune");
    drop(running);
    assert_no_leftovers(name);
}

#[test]
fn fifty_pods_in_a_loop_leave_the_tables_as_they_were() {
    require_root("fifty_pods_in_a_loop");
    let node = Node::new("loop");
    let names: Vec<String> = (0..50).map(|i| format!("net-loop-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pod = |i: usize| {
        let name = &names[i];
        node.pod(
            name,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
                 containers:\n  - name: main\n    command: [ip, '-4', '-o', addr, show, dev, eth0]\n    \
                 ports: [{{containerPort: 8080, hostPort: {}}}]\n",
                18600 + i
            ),
        )
    };
    // As a node that never ran a pod.
    let before = node.snapshot(&refs);
    // Five at a time: the plugins' locks and the tables see concurrent pods too.
    let mut ips = BTreeSet::new();
    for batch in (0..50).collect::<Vec<_>>().chunks(5) {
        let pods: Vec<TestPod> = batch.iter().map(|&i| pod(i)).collect();
        let running: Vec<RunningPod> = pods.iter().map(TestPod::spawn).collect();
        for r in running {
            let run = r.wait(LONG);
            assert_eq!(run.code, Some(0), "{}", run.dump());
            let ip = pod_ip(&run).expect("an IP");
            assert!(
                run.logs("main")
                    .iter()
                    .any(|l| l.contains(&format!("inet {ip}/"))),
                "{}",
                run.dump()
            );
            ips.insert(ip);
        }
    }
    assert!(ips.len() >= 5, "{ips:?}");
    before.assert_same(&node.snapshot(&refs), "after 50 pods");
    for name in &names {
        assert_no_leftovers(name);
    }
}

/// A DNS server for one test host: answers A queries for `api.example.test` (with `addr`) and
/// `loop.example.test` (with 127.0.0.1), no data for other types, NXDOMAIN for other names;
/// every question it gets is appended to `log`.
struct DnsServer {
    child: Child,
    log: std::path::PathBuf,
}

impl DnsServer {
    fn start(ns: &NetNs, addr: std::net::Ipv4Addr, log: std::path::PathBuf) -> Self {
        let script = r#"
import socket, struct, sys
table = {"api.example.test": sys.argv[2], "loop.example.test": "127.0.0.1"}
log = open(sys.argv[1], "a", buffering=1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(512)
    tid = struct.unpack(">H", data[:2])[0]
    i, labels = 12, []
    while data[i]:
        n = data[i]; labels.append(data[i + 1:i + 1 + n].decode()); i += n + 1
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    question = data[12:i + 5]
    name = ".".join(labels).lower()
    log.write(f"{name} {qtype}\n")
    ip = table.get(name)
    if ip is None:
        s.sendto(struct.pack(">HHHHHH", tid, 0x8183, 1, 0, 0, 0) + question, peer)
    elif qtype == 1:
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
        s.sendto(struct.pack(">HHHHHH", tid, 0x8180, 1, 1, 0, 0) + question + answer, peer)
    else:
        s.sendto(struct.pack(">HHHHHH", tid, 0x8180, 1, 0, 0, 0) + question, peer)
"#;
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script, &log.display().to_string(), &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ns.enter(&mut cmd);
        let child = cmd.spawn().expect("start the DNS server");
        let start = Instant::now();
        while !ns.sh("ss -Huln 'sport = :53' | grep -q .").status.success() {
            assert!(start.elapsed() < LONG, "the DNS server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        DnsServer { child, log }
    }

    fn questions(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn denials(run: &PodRun, container: &str) -> Vec<String> {
    run.events(Some(container))
        .iter()
        .filter(|e| e["event"] == "denied")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_sidecar_reaches_what_its_outbound_rules_allow_and_every_refusal_is_an_event() {
    require_root("a_sidecar_reaches_what_its_outbound_rules_allow");
    let node = Node::new("outbound");
    let remote = RemoteHost::new(Some(&node.ns));
    remote.assert_routed();
    let _peer = EchoPeer::start(&remote.ns, 9000);
    let _other = EchoPeer::start(&remote.ns, 9001);
    let dns = DnsServer::start(
        &remote.ns,
        remote.addr,
        std::env::temp_dir().join(format!("wpod-e2e-dns-{}.log", std::process::id())),
    );
    let r = remote.addr;
    let actions = [
        "ready".to_string(),
        "wait-main-started".into(),
        "sleep:300".into(),
        // By hostAliases, and by DNS: allowed names, masqueraded to the test host.
        "connect:collector.example.test:9000".into(),
        "connect:api.example.test:9000".into(),
        // A name no rule allows is never asked for.
        "resolve:secret.attacker.test".into(),
        // DNS may not lead an allowed name to the pod's loopback.
        "resolve:loop.example.test".into(),
        // The address a lookup gave, on the rule's port only.
        format!("connect:{r}:9000"),
        format!("connect:{r}:9001"),
        // The loopback is narrowed to the loopback entry.
        "connect:127.0.0.1:18700".into(),
        "connect:127.0.0.1:18701".into(),
        // Read from a writable volume, never written: --audit suggests readOnly.
        "read:/scratch/seed".into(),
        // Listening on an undeclared port is refused, and reported.
        "listen:18702".into(),
        "sleep:300000".into(),
    ];
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: net-outbound
  annotations:
    wpod.dev/allowed-outbound.probe: "collector.example.test:9000, api.example.test:9000, loop.example.test:9000, localhost:18700"
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: None
  dnsConfig:
    nameservers: ["{r}"]
  hostAliases:
  - ip: "{r}"
    hostnames: [collector.example.test]
  initContainers:
  - name: probe
    restartPolicy: Always
    image: SIDECARS/probe.wasm
    args: {args}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  containers:
  - name: main
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    command: [python3, -u, -c]
    args:
    - |
      import socket, threading
      open("/scratch/seed", "w").write("seed")
      def serve(port):
          s = socket.create_server(("127.0.0.1", port))
          while True:
              c, _ = s.accept(); c.recv(100); c.sendall(b"pod-%d\n" % port); c.close()
      threading.Thread(target=serve, args=(18701,), daemon=True).start()
      serve(18700)
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
"#,
        args = serde_json::to_string(&actions).unwrap(),
    );
    let mut pod = node.pod("net-outbound", &yaml);
    pod.args = vec!["--audit".into()];
    let running = pod.spawn();
    let run = running.wait_for("the probe's actions", LONG, |r| {
        r.logs("probe")
            .iter()
            .any(|l| l.starts_with("listen:18702"))
    });
    let near = remote.near.to_string();
    let ok = |action: &str, want: &str| {
        let got = run.outcome("probe", action);
        assert!(
            got.starts_with("ok: ") && got.contains(want),
            "{action}: expected ok with {want:?}, got {got:?}\n{}",
            run.dump()
        );
    };
    let refused = |action: &str| {
        let got = run.outcome("probe", action);
        assert!(
            got.starts_with("err: "),
            "{action} must be refused, got {got:?}\n{}",
            run.dump()
        );
    };
    ok("connect:collector.example.test:9000", &near);
    ok("connect:api.example.test:9000", &near);
    refused("resolve:secret.attacker.test");
    refused("resolve:loop.example.test");
    ok(&format!("connect:{r}:9000"), &near);
    refused(&format!("connect:{r}:9001"));
    ok("connect:127.0.0.1:18700", "pod-18700");
    refused("connect:127.0.0.1:18701");
    refused("listen:18702");

    // The DNS server was asked for the allowed name, never for the refused one.
    let questions = dns.questions();
    assert!(questions.contains("api.example.test 1"), "{questions}");
    assert!(!questions.contains("attacker"), "{questions}");
    assert!(
        !questions.contains("collector"),
        "hostAliases answer without DNS: {questions}"
    );

    let field = "metadata.annotations[wpod.dev/allowed-outbound.probe]";
    let denied = denials(&run, "probe");
    for want in [
        format!("denied lookup of secret.attacker.test: not in {field}"),
        format!("denied connect to {r}:9001: not in {field}"),
        format!("denied connect to 127.0.0.1:18701: not in {field}"),
        "denied listen on 0.0.0.0:18702: not in spec.initContainers[0].ports".to_string(),
    ] {
        assert!(denied.contains(&want), "no event {want:?} in {denied:#?}");
    }
    assert!(
        denied
            .iter()
            .any(|d| d
                .starts_with("denied lookup of loop.example.test: DNS answered only 127.0.0.1")),
        "{denied:#?}"
    );
    // `wpod describe` counts them and shows the grant.
    let describe = text(&node.wpod(&["describe", "net-outbound"]).stdout);
    assert!(
        describe.contains("outbound: collector.example.test:9000, api.example.test:9000"),
        "{describe}"
    );
    assert!(describe.contains("Denied:    "), "{describe}");

    // --audit: the uses, then the narrowest grant when the pod ends.
    let run = running.stop(LONG);
    let audited: Vec<String> = run
        .events(Some("probe"))
        .iter()
        .filter(|e| e["event"] == "audited")
        .map(|e| {
            format!(
                "{} {}",
                e["class"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        audited.contains(&format!("connect {r}:9000")),
        "{audited:#?}"
    );
    assert!(
        audited.contains(&"lookup api.example.test".to_string()),
        "{audited:#?}"
    );
    let summary = run
        .events(Some("probe"))
        .into_iter()
        .find(|e| e["event"] == "auditSummary")
        .cloned()
        .unwrap_or_else(|| panic!("no audit summary\n{}", run.dump()));
    assert_eq!(
        summary["outbound"],
        serde_json::json!([
            "api.example.test:9000",
            "collector.example.test:9000",
            "localhost:18700"
        ]),
        "{summary}"
    );
    assert_eq!(summary["annotation"], "wpod.dev/allowed-outbound.probe");
    assert_eq!(
        summary["readOnly"],
        serde_json::json!(["scratch"]),
        "{summary}"
    );
    // Every host interface it called, from the bindings' own record of each call.
    let calls: Vec<&str> = summary["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    for want in [
        "wasi:sockets/tcp",
        "wasi:sockets/ip-name-lookup",
        "wasi:filesystem/types",
        "wpod:sidecar/lifecycle",
    ] {
        assert!(calls.contains(&want), "no {want} in {calls:?}");
    }
    assert!(
        !calls.contains(&"wasi:filesystem/types (writes)"),
        "{calls:?}"
    );
    assert_no_leftovers("net-outbound");
}

#[test]
fn a_sidecar_without_outbound_rules_reaches_nothing_past_the_pod() {
    require_root("a_sidecar_without_outbound_rules");
    let node = Node::new("nooutbound");
    let remote = RemoteHost::new(Some(&node.ns));
    let _peer = EchoPeer::start(&remote.ns, 9000);
    let r = remote.addr;
    let pod = node.pod(
        "net-no-outbound",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: net-no-outbound}}
spec:
  restartPolicy: Never
  hostAliases:
  - ip: "{r}"
    hostnames: [collector.example.test]
  containers:
  - name: probe
    image: SIDECARS/probe.wasm
    args: ["connect:{r}:9000", "connect:collector.example.test:9000", "exit:0"]
"#
        ),
    );
    let run = pod.run(LONG);
    for action in [
        format!("connect:{r}:9000"),
        "connect:collector.example.test:9000".into(),
    ] {
        let got = run.outcome("probe", &action);
        assert!(got.starts_with("err: "), "{action}: {got}\n{}", run.dump());
    }
    let denied = denials(&run, "probe");
    let field = "metadata.annotations[wpod.dev/allowed-outbound.probe]";
    assert!(
        denied.contains(&format!("denied connect to {r}:9000: not in {field}")),
        "{denied:#?}"
    );
    assert!(
        denied.contains(&format!(
            "denied lookup of collector.example.test: not in {field}"
        )),
        "{denied:#?}"
    );
    assert_no_leftovers("net-no-outbound");
}

/// A TLS server on a test host that appends every line it receives to a file (python3's ssl).
struct TlsCollector {
    child: Child,
    received: std::path::PathBuf,
}

impl TlsCollector {
    fn start(ns: &NetNs, port: u16, ca: &wpod_test_support::tlsca::TestCa) -> Self {
        let received = ca.dir.join("received.txt");
        let script = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
out = open(sys.argv[3], "a", buffering=1)
s = socket.create_server(("0.0.0.0", int(sys.argv[4])))
def serve(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            for line in t.makefile("r"):
                out.write(line)
    except Exception as e:
        out.write(f"! {e}\n")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script])
            .arg(ca.leaf_cert())
            .arg(ca.leaf_key())
            .arg(&received)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ns.enter(&mut cmd);
        let child = cmd.spawn().expect("start the TLS collector");
        let start = Instant::now();
        while !ns
            .sh(&format!("ss -Htln 'sport = :{port}' | grep -q ."))
            .status
            .success()
        {
            assert!(start.elapsed() < LONG, "the TLS collector never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsCollector { child, received }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.received).unwrap_or_default()
    }
}

impl Drop for TlsCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_log_shipper_ships_over_tls_to_a_remote_collector_only_when_allowed() {
    require_root("the_log_shipper_ships_over_tls");
    let node = Node::new("tlsship");
    let remote = RemoteHost::new(Some(&node.ns));
    remote.assert_routed();
    let dir = std::env::temp_dir().join(format!("wpod-e2e-tlsship-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = wpod_test_support::tlsca::TestCa::new(&dir, &["DNS:collector.example.test"]);
    let collector = TlsCollector::start(&remote.ns, 8443, &ca);
    // Another CA, which did not sign the collector's certificate.
    let other = wpod_test_support::tlsca::TestCa::new(&dir.join("other"), &["DNS:other.test"]);
    std::fs::copy(other.bundle(), dir.join("other-ca.crt")).expect("copy the other CA");
    let r = remote.addr;
    let shipper = |name: &str, ca_file: &str| {
        format!(
            r#"  - name: {name}
    restartPolicy: Always
    image: SIDECARS/log-shipper.wasm
    env:
    - {{name: FILES, value: "app=/logs/app.log"}}
    - {{name: SINK, value: "tls://collector.example.test:8443"}}
    - {{name: TLS_CA, value: /ca/{ca_file}}}
    - {{name: INTERVAL_MS, value: "50"}}
    volumeMounts:
    - {{name: logs, mountPath: /logs}}
    - {{name: ca, mountPath: /ca, readOnly: true}}
"#
        )
    };
    let pod = node.pod(
        "net-tlsship",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: net-tlsship
  annotations:
    wpod.dev/allowed-outbound.shipper: "collector.example.test:8443"
    wpod.dev/allowed-outbound.mistrusting: "collector.example.test:8443"
spec:
  terminationGracePeriodSeconds: 2
  hostAliases:
  - ip: "{r}"
    hostnames: [collector.example.test]
  initContainers:
{allowed}{denied}{mistrusting}  containers:
  - name: main
    command: [sh, -c, 'for i in 1 2 3; do echo "shipped-over-tls-$i" >> /logs/app.log; done; exec sleep 300']
    volumeMounts: [{{name: logs, mountPath: /logs}}]
  volumes:
  - {{name: logs, emptyDir: {{}}}}
  - name: ca
    hostPath: {{path: "{ca_dir}", type: Directory}}
"#,
            allowed = shipper("shipper", "ca.crt"),
            denied = shipper("unlisted", "ca.crt"),
            mistrusting = shipper("mistrusting", "other-ca.crt"),
            ca_dir = dir.display(),
        ),
    );
    let running = pod.spawn();
    let start = Instant::now();
    while !collector.received().contains("app shipped-over-tls-3") {
        if start.elapsed() > LONG {
            panic!(
                "the collector got {:?}\n{}",
                collector.received(),
                running.output().dump()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = collector.received();
    for i in 1..=3 {
        // Once each: the shipper without outbound rules delivered nothing.
        assert_eq!(
            got.matches(&format!("app shipped-over-tls-{i}\n")).count(),
            1,
            "{got}"
        );
    }
    let run = running.wait_for("the unlisted shipper's denial", LONG, |r| {
        !denials(r, "unlisted").is_empty()
    });
    assert_eq!(
        denials(&run, "unlisted")[0],
        "denied lookup of collector.example.test: not in metadata.annotations[wpod.dev/allowed-outbound.unlisted]"
    );
    assert!(denials(&run, "shipper").is_empty(), "{}", run.dump());
    // The host verified the collector's certificate: a CA that did not sign it is refused.
    // (Both CAs are named alike: the signature is what fails.)
    running.wait_for("the mistrusting shipper's refusal", LONG, |r| {
        r.has_line("mistrusting", "TLS handshake: invalid peer certificate")
    });
    drop(running);
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_leftovers("net-tlsship");
}

/// Sends a TCP SYN from the pod's eth0 to 127.0.0.1:PORT through the gateway, as raw frames
/// (CAP_NET_RAW, which containers have by default), and reports whether a SYN-ACK came back:
/// CVE-2020-8558's way to the node's loopback services once `route_localnet` is on.
const LOCALNET_PROBE: &str = r#"
import json, os, socket, struct, subprocess, sys, time
port = int(sys.argv[1])
gw = json.loads(subprocess.check_output(["ip", "-j", "route", "show", "default"]))[0]["gateway"]
# A datagram to the gateway makes the kernel resolve its MAC (ARP).
for _ in range(50):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (gw, 9))
    time.sleep(0.1)
    neigh = [n for n in json.loads(subprocess.check_output(["ip", "-j", "neigh", "show", gw])) if n.get("lladdr")]
    if neigh:
        break
gw_mac = bytes.fromhex(neigh[0]["lladdr"].replace(":", ""))
me = json.loads(subprocess.check_output(["ip", "-j", "-4", "addr", "show", "dev", "eth0"]))[0]["addr_info"][0]["local"]
my_mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
src, dst = socket.inet_aton(me), socket.inet_aton("127.0.0.1")
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
raw.bind(("eth0", 0))
raw.settimeout(0.1)
def attempt(sport):
    tcp = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    for _ in range(5):
        raw.send(gw_mac + my_mac + b"\x08\x00" + ip + tcp)
        end = time.time() + 0.4
        while time.time() < end:
            try:
                f = raw.recv(2048)
            except socket.timeout:
                continue
            if f[23] == 6 and f[26:30] == dst:
                fs, fd = struct.unpack("!HH", f[34:38])
                if fs == port and fd == sport and f[47] & 0x12 == 0x12:
                    return "synack"
    return "nothing"
print("first:", attempt(41001), flush=True)
while not os.path.exists("/ctl/go"):
    time.sleep(0.1)
print("second:", attempt(41002), flush=True)
time.sleep(300)
"#;

#[test]
fn a_pod_never_reaches_the_nodes_loopback_services() {
    require_root("a_pod_never_reaches_the_nodes_loopback_services");
    let node = Node::new("localnet");
    // A service on the node's loopback only.
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import socket\ns = socket.create_server(('127.0.0.1', 18800))\nwhile True:\n    c, _ = s.accept(); c.close()\n",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    node.ns.enter(&mut cmd);
    let mut service = cmd.spawn().expect("the node's loopback service");
    let ctl = std::env::temp_dir().join(format!("wpod-e2e-localnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctl);
    std::fs::create_dir_all(&ctl).expect("control dir");
    // A hostPort: portmap's snat turns route_localnet on for the bridge.
    let pod = node.pod(
        "net-localnet",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: net-localnet}}\nspec:\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
             command: [python3, -c, {script:?}, '18800']\n    \
             ports: [{{containerPort: 8080, hostPort: 18801}}]\n    \
             volumeMounts: [{{name: ctl, mountPath: /ctl}}]\n  volumes:\n  - name: ctl\n    \
             hostPath: {{path: {ctl:?}, type: Directory}}\n",
            script = LOCALNET_PROBE,
            ctl = ctl.display().to_string(),
        ),
    );
    let running = pod.spawn();
    let run = running.wait_for("the first attempt", LONG, |r| r.has_line("main", "first:"));
    let route_localnet = text(
        &node
            .ns
            .sh("cat /proc/sys/net/ipv4/conf/wpod0/route_localnet")
            .stdout,
    );
    assert_eq!(
        route_localnet.trim(),
        "1",
        "portmap did not turn route_localnet on"
    );
    run.assert_line("main", "first: nothing");
    // Without wpod's rule the same frames get an answer: the probe is real.
    node.ns.sh(
        "iptables -D INPUT -i wpod0 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
    );
    std::fs::write(ctl.join("go"), "").expect("go");
    let run = running.wait_for("the second attempt", LONG, |r| {
        r.has_line("main", "second:")
    });
    run.assert_line("main", "second: synack");
    drop(running);
    let _ = service.kill();
    let _ = service.wait();
    let _ = std::fs::remove_dir_all(&ctl);
    assert_no_leftovers("net-localnet");
}
