"""bench/net.sh's measures (see its header): pod to pod against a bare veth pair, the network's
setup cost against podman's, and a Wasm sidecar's egress against a native container's.

Run by bench/net.sh inside a network namespace of its own: argv = WPOD WORK ROUNDS SECONDS
PROBE_WASM. One JSON object per run on stdout, progress on stderr."""

import json
import os
import subprocess
import sys
import time

WPOD, WORK, ROUNDS, SECONDS, PROBE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
BENCH = os.path.join(WORK, "bench")
REMOTE = "198.51.100.2"
EGRESS_MIB = 1024


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(**row):
    print(json.dumps(row), flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def wpod(*args, check=True):
    r = subprocess.run([WPOD, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"wpod {' '.join(args)}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_conf(tag, site):
    return write(os.path.join(BENCH, f"nginx-{tag}.conf"), f"""worker_processes 1;
pid /tmp/wpb-nginx-{tag}.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server {{
    listen 8080 backlog=4096;
    root {site};
  }}
}}
""")


def pod_state(name):
    for p in json.loads(wpod("ps", "--output", "json").stdout):
        if p["name"] == name:
            return p
    return None


def start_pod(name, yaml):
    path = write(os.path.join(WORK, f"{name}.yaml"), yaml)
    wpod("run", "-d", path)
    for _ in range(200):
        p = pod_state(name)
        running = [c for c in (p or {}).get("containers", []) if c["state"] == "running" and c.get("pid")]
        if p and p.get("ip") and running:
            return p["ip"], running[0]["pid"]
        time.sleep(0.1)
    raise SystemExit(f"pod {name} did not start: {wpod('logs', name, check=False).stdout}")


def stop_pod(name):
    wpod("stop", name, check=False)
    wpod("rm", name, check=False)


REPORT_LUA = write(os.path.join(BENCH, "report.lua"), """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "p50_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50)))
end
""")


def wrk(prefix, url):
    cmd = prefix + ["wrk", "-t", "1", "-c", "1", "-d", f"{SECONDS}s", "--timeout", "10s", "-s", REPORT_LUA, url]
    out = sh(*cmd).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    return json.loads(line[8:])


def pod_to_pod():
    # nginx's workers (www-data when started by root outside a pod) read the site.
    os.chmod(WORK, 0o755)
    site = os.path.join(BENCH, "site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "1k"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(site, "1m"), "wb") as f:
        f.write(os.urandom(1 << 20))
    nginx_conf("pod", "/bench/site")
    veth_conf = nginx_conf("veth", site)
    _, client_pid = start_pod("wpb-client", """apiVersion: v1
kind: Pod
metadata: {name: wpb-client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    command: [sleep, "100000"]
""")
    server_ip, _ = start_pod("wpb-server", f"""apiVersion: v1
kind: Pod
metadata: {{name: wpb-server}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: nginx
    command: [nginx, -c, /bench/nginx-pod.conf, -g, "daemon off;"]
    ports: [{{containerPort: 8080}}]
    volumeMounts: [{{name: bench, mountPath: /bench, readOnly: true}}]
  volumes:
  - name: bench
    hostPath: {{path: {BENCH}, type: Directory}}
""")
    # The bare veth pair: the same nginx and wrk, no bridge, no NAT, no firewall rules.
    for ns in ("wpb-a", "wpb-b"):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "wpb-va", "netns", "wpb-a", "type", "veth", "peer", "name", "wpb-vb", "netns", "wpb-b")
    sh("ip", "-n", "wpb-a", "addr", "add", "10.199.0.1/30", "dev", "wpb-va")
    sh("ip", "-n", "wpb-b", "addr", "add", "10.199.0.2/30", "dev", "wpb-vb")
    sh("ip", "-n", "wpb-a", "link", "set", "wpb-va", "up")
    sh("ip", "-n", "wpb-b", "link", "set", "wpb-vb", "up")
    veth_nginx = subprocess.Popen(["ip", "netns", "exec", "wpb-b", "nginx", "-c", veth_conf, "-g", "daemon off;"])
    client = ["nsenter", f"--net=/proc/{client_pid}/ns/net"]
    veth = ["ip", "netns", "exec", "wpb-a"]
    for prefix, url in ((client, f"http://{server_ip}:8080/1k"), (veth, "http://10.199.0.2:8080/1k")):
        for _ in range(100):
            if subprocess.run(prefix + ["curl", "-sf", "-o", "/dev/null", url]).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"nothing answers at {url}")
    paths = {"wpod pod to pod (CNI bridge)": (client, server_ip), "bare veth pair": (veth, "10.199.0.2")}
    try:
        for rnd in range(ROUNDS):
            order = list(paths)[rnd % 2:] + list(paths)[:rnd % 2]
            for tool in order:
                prefix, ip = paths[tool]
                ref = tool.startswith("wpod")
                small = wrk(prefix, f"http://{ip}:8080/1k")
                secs = small["duration_us"] / 1e6
                emit(tool=tool, measure="pod to pod: keep-alive 1 KiB, 1 conn", value=round(small["requests"] / secs, 1),
                     unit="req/s", run=rnd, better="higher", ref=ref, errors=small["errors"])
                emit(tool=tool, measure="pod to pod: request/response latency p50", value=small["p50_us"],
                     unit="us", run=rnd, better="lower", ref=ref)
                bulk = wrk(prefix, f"http://{ip}:8080/1m")
                mib = bulk["bytes"] / (bulk["duration_us"] / 1e6) / (1 << 20)
                emit(tool=tool, measure="pod to pod: keep-alive 1 MiB, 1 conn", value=round(mib, 1),
                     unit="MiB/s", run=rnd, better="higher", ref=ref, errors=bulk["errors"])
                say(f"  round {rnd}: {tool}: {small['requests'] / secs:.0f} req/s, p50 {small['p50_us']} us, {mib:.0f} MiB/s")
    finally:
        veth_nginx.terminate()
        veth_nginx.wait()
        stop_pod("wpb-client")
        stop_pod("wpb-server")
        for ns in ("wpb-a", "wpb-b"):
            subprocess.run(["ip", "netns", "del", ns])


def setup_cost():
    # podman: a busybox image in a private store, which is its infra container's too.
    rootfs = os.path.join(WORK, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"), exist_ok=True)
    sh("cp", "/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "true", "sleep"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    sh("tar", "-C", rootfs, "-cf", os.path.join(WORK, "rootfs.tar"), ".")
    # podman writes its kube network's configuration here, not into /etc/cni/net.d.
    conf = write(os.path.join(WORK, "containers.conf"), f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
infra_image = "localhost/wpb:latest"
[network]
network_config_dir = "{os.path.join(WORK, 'podman-cni')}"
""")
    leases = "/var/lib/cni/networks/podman-default-kube-network"
    had_leases = os.path.exists(leases)
    env = dict(os.environ, CONTAINERS_CONF=conf)
    podman = ["podman", "--root", os.path.join(WORK, "podroot"), "--runroot", os.path.join(WORK, "podrun"),
              "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
    subprocess.run(podman + ["import", "--change", 'CMD ["/bin/sleep", "2147483647"]',
                             os.path.join(WORK, "rootfs.tar"), "localhost/wpb:latest"],
                   check=True, capture_output=True, env=env)
    kube = write(os.path.join(WORK, "podman-pod.yaml"), """apiVersion: v1
kind: Pod
metadata: {name: wpb-setup}
spec:
  containers:
  - name: main
    image: localhost/wpb:latest
    command: ["/bin/sleep", "100000"]
""")
    pod = lambda host: write(os.path.join(WORK, f"setup-{host}.yaml"), f"""apiVersion: v1
kind: Pod
metadata:
  name: wpb-setup
spec:
  terminationGracePeriodSeconds: 0
  hostNetwork: {'true' if host else 'false'}
  containers:
  - name: main
    command: [sleep, "100000"]
""")

    def timed(cmds, env=None):
        start = time.perf_counter()
        for c in cmds:
            r = subprocess.run(c, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(c)}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return (time.perf_counter() - start) * 1000

    # Each: (start to running, stop and remove). podman's pod goes with `pod rm -f -t 0`
    # (`kube down` waits for a SIGTERM the infra's PID 1 ignores).
    rm = podman + ["pod", "rm", "-f", "-t", "0", "wpb-setup"]
    variants = {
        "wpod (CNI)": (lambda: timed([[WPOD, "run", "-d", pod(False)]]),
                       lambda: timed([[WPOD, "stop", "-t", "0", "wpb-setup"], [WPOD, "rm", "wpb-setup"]])),
        "wpod (hostNetwork)": (lambda: timed([[WPOD, "run", "-d", pod(True)]]),
                               lambda: timed([[WPOD, "stop", "-t", "0", "wpb-setup"], [WPOD, "rm", "wpb-setup"]])),
        "podman (CNI)": (lambda: timed([podman + ["kube", "play", kube]], env), lambda: timed([rm], env)),
        "podman (host network)": (lambda: timed([podman + ["kube", "play", "--network", "host", kube]], env),
                                  lambda: timed([rm], env)),
    }
    # A first of each, not measured: caches, the bridges and chains of both.
    for up, down in variants.values():
        up()
        down()
    for rnd in range(ROUNDS * 2):
        names = list(variants)
        order = names[rnd % 4:] + names[:rnd % 4]
        got = {}
        for name in order:
            up, down = variants[name]
            got[name] = (up(), down())
        for name, (up_ms, down_ms) in got.items():
            ref = name == "wpod (CNI)"
            emit(tool=name, measure="setup: start a pod, to running", value=round(up_ms, 1), unit="ms",
                 run=rnd, better="lower", ref=ref)
            emit(tool=name, measure="setup: stop and remove a pod", value=round(down_ms, 1), unit="ms",
                 run=rnd, better="lower", ref=ref)
        for tool, cni, host in (("wpod (CNI ADD + DEL)", "wpod (CNI)", "wpod (hostNetwork)"),
                                ("podman (CNI)", "podman (CNI)", "podman (host network)")):
            emit(tool=tool, measure="setup: what the network adds to a pod's start and removal", unit="ms",
                 run=rnd, value=round(sum(got[cni]) - sum(got[host]), 1), better="lower", ref=tool.startswith("wpod"))
        say(f"  round {rnd}: " + ", ".join(f"{k} {u:.0f}+{d:.0f} ms" for k, (u, d) in got.items()))
    # host-local's directory of podman's network (no lease left: only its lock and marker).
    if not had_leases and os.path.isdir(leases) and all(
            n == "lock" or n.startswith("last_reserved_ip") for n in os.listdir(leases)):
        subprocess.run(["rm", "-rf", leases])


SINK = """
import json, socket, sys, time
s = socket.create_server(("0.0.0.0", 9000))
buf = bytearray(4 << 20)
while True:
    c, _ = s.accept()
    n, first = 0, None
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        if first is None:
            first = time.perf_counter()
        n += k
    last = time.perf_counter()
    c.close()
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps({"bytes": n, "seconds": last - (first or last)}) + "\\n")
"""


def egress():
    sh("ip", "netns", "add", "wpb-remote")
    sh("ip", "-n", "wpb-remote", "link", "set", "lo", "up")
    sh("ip", "link", "add", "wpb-r0", "type", "veth", "peer", "name", "eth0", "netns", "wpb-remote")
    sh("ip", "addr", "add", "198.51.100.1/30", "dev", "wpb-r0")
    sh("ip", "link", "set", "wpb-r0", "up")
    sh("ip", "-n", "wpb-remote", "addr", "add", f"{REMOTE}/30", "dev", "eth0")
    sh("ip", "-n", "wpb-remote", "link", "set", "eth0", "up")
    sh("ip", "-n", "wpb-remote", "route", "add", "default", "via", "198.51.100.1")
    received = os.path.join(WORK, "received.jsonl")
    sink = subprocess.Popen(["ip", "netns", "exec", "wpb-remote", "python3", "-c", SINK, received])
    time.sleep(0.5)
    native = write(os.path.join(WORK, "egress-native.yaml"), f"""apiVersion: v1
kind: Pod
metadata: {{name: wpb-egress-native}}
spec:
  restartPolicy: Never
  containers:
  - name: sender
    command: [python3, -c, "import socket\\ns = socket.create_connection(('{REMOTE}', 9000))\\nb = bytes(256 << 10)\\nfor _ in range({EGRESS_MIB} * 4): s.sendall(b)\\ns.shutdown(socket.SHUT_WR)\\ns.recv(1)"]
""")
    wasm = write(os.path.join(WORK, "egress-wasm.yaml"), f"""apiVersion: v1
kind: Pod
metadata:
  name: wpb-egress-wasm
  annotations: {{wpod.dev/allowed-outbound.sender: "{REMOTE}:9000"}}
spec:
  restartPolicy: Never
  containers:
  - name: sender
    image: {PROBE}
    args: ["blast:{REMOTE}:9000:{EGRESS_MIB}"]
""")
    variants = {"Wasm sidecar (probe blast, Rust std)": wasm, "native container (python3 sendall)": native}

    def one(path):
        before = sum(1 for _ in open(received)) if os.path.exists(received) else 0
        out = subprocess.run([WPOD, "run", "--output", "json", path], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{path}: {out.stdout}{out.stderr}")
        for _ in range(100):
            lines = open(received).read().splitlines() if os.path.exists(received) else []
            if len(lines) > before:
                r = json.loads(lines[before])
                if r["bytes"] != EGRESS_MIB << 20:
                    raise SystemExit(f"{path}: the sink got {r['bytes']} bytes")
                return r["bytes"] / r["seconds"] / (1 << 20)
            time.sleep(0.05)
        raise SystemExit(f"{path}: the sink got nothing")

    try:
        for rnd in range(ROUNDS):
            names = list(variants)
            order = names[rnd % 2:] + names[:rnd % 2]
            for name in order:
                mib = one(variants[name])
                emit(tool=name, measure=f"egress: {EGRESS_MIB} MiB to a remote host through the pod's NAT",
                     value=round(mib, 1), unit="MiB/s", run=rnd, better="higher", ref=name.startswith("Wasm"))
                say(f"  round {rnd}: {name}: {mib:.0f} MiB/s")
    finally:
        sink.terminate()
        sink.wait()
        subprocess.run(["ip", "netns", "del", "wpb-remote"])


say("net: pod to pod")
pod_to_pod()
say("net: setup")
setup_cost()
say("net: egress")
egress()
