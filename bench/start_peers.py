"""bench/start-peers.sh's runner: spawn-to-first-connect of one container or sidecar, each tool in
turn per round (the order rotating), one JSON line per run on stdout, progress on stderr.

Argument: one JSON object from start-peers.sh: wpod, work, rounds, port, bench_runs, mntns (the
mount namespace crun runs in), bundle, podman (argv prefix), image, client (the client's argv),
probe (probe.wasm)."""

import ctypes
import json
import os
import socket
import subprocess
import sys
import time

cfg = json.loads(sys.argv[1])
WPOD, WORK, ROUNDS, PORT = cfg["wpod"], cfg["work"], int(cfg["rounds"]), int(cfg["port"])
ENV = {**os.environ, "WPOD_ROOT": f"{WORK}/wpodroot"}
CLIENT = cfg["client"]  # bash -c 'exec 3<>/dev/tcp/127.0.0.1/PORT'
LOG = open(f"{WORK}/spawn.log", "ab")
MEASURE = "start: spawn to first connect"
POD_MEASURE = "start: wpod run of a pod to its sidecar's first connect"
AFTER_MEASURE = "start: pod's listener bound to its sidecar's first connect"

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000


def emit(tool, measure, value, run, unit="ms", better="lower", **extra):
    row = {"tool": tool, "measure": measure, "value": round(value, 3), "unit": unit, "run": run,
           "better": better, **extra}
    print(json.dumps(row), flush=True)
    print(f"  round {run}: {tool}: {value:.2f} {unit}", file=sys.stderr, flush=True)


def in_mntns():
    """preexec_fn: join the private mount namespace where the cgroup2 hierarchy is unmounted."""
    fd = os.open(cfg["mntns"], os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNS) != 0:
        os._exit(121)
    os.close(fd)


def nothing():
    """preexec_fn of every other tool, so that all of them are spawned the same way (fork+exec)."""


def spawn_to_accept(argv, preexec=nothing, timeout=60):
    """ms from spawning argv until the listener accepts its connection; waits for it to exit."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PORT))
    srv.listen(64)
    srv.settimeout(timeout)
    try:
        t0 = time.time_ns()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=LOG, stderr=LOG, preexec_fn=preexec)
        try:
            c, _ = srv.accept()
        except socket.timeout:
            p.kill()
            p.wait()
            raise RuntimeError(f"no connection within {timeout}s from {argv} (see {WORK}/spawn.log)")
        t1 = time.time_ns()
        c.close()
    finally:
        srv.close()
    if p.wait(timeout=timeout) != 0:
        raise RuntimeError(f"{argv} exited with {p.returncode} (see {WORK}/spawn.log)")
    return (t1 - t0) / 1e6


_n = 0


def uid():
    global _n
    _n += 1
    return f"wpodbench-{os.getpid()}-{_n}"


def tool_process():
    return spawn_to_accept(CLIENT)


def tool_runc():
    return spawn_to_accept(["runc", "run", "-b", cfg["bundle"], uid()])


def tool_crun():
    return spawn_to_accept(["crun", "run", "-b", cfg["bundle"], uid()], preexec=in_mntns)


def tool_podman():
    return spawn_to_accept(cfg["podman"] + ["run", "--rm", "--network", "host", "--ulimit", "nofile=1024:1024",
                                            "--ulimit", "nproc=4096:4096", cfg["image"]] + CLIENT)


# --- wpod ------------------------------------------------------------------------------------

def fresh_component(tag):
    """probe.wasm with a custom section of its own: other bytes, so no cache entry matches (cold)."""
    data = open(cfg["probe"], "rb").read()
    name = b"wpod-bench-nonce"
    payload = f"{tag}-{time.time_ns()}".encode()
    body = bytes([len(name)]) + name + payload
    size, leb = len(body), b""
    while True:
        byte = size & 0x7F
        size >>= 7
        leb += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    path = f"{WORK}/pods/cold-{tag}.wasm"
    with open(path, "wb") as f:
        f.write(data + b"\x00" + leb + body)
    return path


def run(argv, **kw):
    return subprocess.run(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=LOG, **kw)


def read_lines(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def apply_pod(component, with_client):
    """The running pod `startbench` (a native listener main container), with or without the
    Wasm client sidecar."""
    client = f"""
  - name: client
    image: {component}
    args: ["connect:127.0.0.1:{PORT}", "ready", "wait-stopping"]""" if with_client else ""
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: startbench}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: listener
    command: [python3, /b/listen.py, "{PORT}", /b/apply]
    volumeMounts: [{{name: b, mountPath: /b}}]{client}
  volumes:
  - name: b
    hostPath: {{path: {WORK}/b, type: Directory}}
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


class ControlApply:
    """The same change asked of the pod's control socket by a client that keeps running (a
    controller, an operator's tool): one request per connection, one JSON line each way
    (docs/operators.md, "The control socket"); no process is spawned. Behaves as Popen."""

    def __init__(self, file):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(f"{WORK}/wpodroot/pods/startbench/control.sock")
        line = json.dumps({"version": 1, "op": "apply", "file": file, "dryRun": False}) + "\n"
        self.sock.sendall(line.encode())
        self.returncode = None

    def wait(self, timeout=None):
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        reply = json.loads(answer)
        if not reply.get("ok"):
            print(f"control socket: {reply.get('error')}", file=sys.stderr)
        self.returncode = 0 if reply.get("ok") else 1
        return self.returncode

    def kill(self):
        self.sock.close()


def wpod_apply(component, socket_client=False):
    """`wpod apply` adding the Wasm client to the running pod: ms from spawning it (or from
    connecting to the control socket) to the accept."""
    before = len(read_lines(f"{WORK}/b/apply"))
    with_client = write(f"{WORK}/pods/apply-with.yaml", apply_pod(component, True))
    t0 = time.time_ns()
    if socket_client:
        p = ControlApply(with_client)
    else:
        p = subprocess.Popen([WPOD, "apply", with_client], env=ENV, stdout=subprocess.DEVNULL, stderr=LOG)
    deadline = time.monotonic() + 60
    while len(accepts := read_lines(f"{WORK}/b/apply")) <= before:
        if time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("wpod apply: the sidecar did not connect within 60 s")
        time.sleep(0.0005)
    if p.wait(timeout=60) != 0:
        raise RuntimeError(f"wpod apply exited with {p.returncode}")
    # Back to the pod without it (not measured).
    if run([WPOD, "apply", f"{WORK}/pods/apply-without.yaml"]).returncode != 0:
        raise RuntimeError("wpod apply (removing the client) failed")
    return (accepts[-1] - t0) / 1e6


def tool_apply_warm():
    return wpod_apply(cfg["probe"])


def tool_apply_socket():
    return wpod_apply(cfg["probe"], socket_client=True)


def tool_apply_cold():
    return wpod_apply(fresh_component(uid()))


def whole_pod(client_yaml, tag):
    """`wpod run` of a pod whose native sidecar listens (its postStart hook waits until it is
    bound, so the client starts after) and whose one container connects and exits. Returns
    (spawn to accept, bound to accept) in ms."""
    out = f"/b/{tag}"
    text = f"""apiVersion: v1
kind: Pod
metadata: {{name: startbench-pod}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: listener
    restartPolicy: Always
    command: [python3, /b/listen.py, "{PORT}", {out}]
    volumeMounts: [{{name: b, mountPath: /b}}]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "while [ ! -e {out}.bound ]; do sleep 0.001; done"]}}
  containers:
{client_yaml}
  volumes:
  - name: b
    hostPath: {{path: {WORK}/b, type: Directory}}
"""
    path = write(f"{WORK}/pods/{tag}.yaml", text)
    t0 = time.time_ns()
    r = subprocess.run([WPOD, "run", path], env=ENV, stdout=LOG, stderr=LOG, timeout=120)
    accepts, bound = read_lines(f"{WORK}{out}"), read_lines(f"{WORK}{out}.bound")
    run([WPOD, "rm", "startbench-pod"])
    if r.returncode != 0 or not accepts or not bound:
        raise RuntimeError(f"wpod run {path}: exit {r.returncode}, accepts {accepts} (see {WORK}/spawn.log)")
    return (accepts[0] - t0) / 1e6, (accepts[0] - bound[0]) / 1e6


def wasm_client(component):
    return f"""  - name: client
    image: {component}
    args: ["connect:127.0.0.1:{PORT}", "exit:0"]"""


def native_client():
    return f"""  - name: client
    command: {json.dumps(CLIENT)}"""


def pod_tool(kind):
    def measure(rnd):
        tag = uid()
        client = {"warm": lambda: wasm_client(cfg["probe"]),
                  "cold": lambda: wasm_client(fresh_component(tag)),
                  "native": native_client}[kind]()
        total, after = whole_pod(client, tag)
        name = {"warm": "wpod run, Wasm sidecar (warm)", "cold": "wpod run, Wasm sidecar (cold)",
                "native": "wpod run, native container"}[kind]
        emit(name, POD_MEASURE, total, rnd, ref=(kind == "warm"))
        emit(name, AFTER_MEASURE, after, rnd, ref=(kind == "warm"))
    return measure


def bench_tool(rnd):
    """`wpod bench --json`: the in-process figures, first connect, median of its runs."""
    r = subprocess.run([WPOD, "bench", "--json", "--runs", str(cfg["bench_runs"]), "--density", "1"],
                       env=ENV, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"wpod bench failed: {r.stderr}")
    for t in json.loads(r.stdout)["timings"]:
        emit(f"wpod bench: {t['kind']} (in-process)", MEASURE, t["first_connect_ms"]["median"], rnd,
             runs=t["runs"], min_ms=t["first_connect_ms"]["min"], max_ms=t["first_connect_ms"]["max"])


def simple(name, fn, ref=False):
    def measure(rnd):
        emit(name, MEASURE, fn(), rnd, ref=ref)
    return measure


TOOLS = [
    simple("process (bash /dev/tcp)", tool_process),
    simple("runc run", tool_runc),
    simple("crun run", tool_crun),
    simple("podman run (runc)", tool_podman),
    simple("wpod apply, Wasm sidecar (warm)", tool_apply_warm, ref=True),
    simple("control socket apply, Wasm sidecar (warm)", tool_apply_socket),
    simple("wpod apply, Wasm sidecar (cold)", tool_apply_cold),
    pod_tool("warm"),
    pod_tool("cold"),
    pod_tool("native"),
    bench_tool,
]


def main():
    tools = TOOLS
    # The running pod `wpod apply` adds the sidecar to: its listener bound first.
    write(f"{WORK}/pods/apply-without.yaml", apply_pod(None, False))
    if run([WPOD, "run", "-d", f"{WORK}/pods/apply-without.yaml"]).returncode != 0:
        raise RuntimeError(f"wpod run -d failed (see {WORK}/spawn.log)")
    for _ in range(500):
        if read_lines(f"{WORK}/b/apply.bound"):
            break
        time.sleep(0.01)
    else:
        raise RuntimeError("the apply pod's listener did not bind")
    # Warm-up, not recorded: page cache, podman's storage, the compiled cache entry.
    for t in (tool_process, tool_runc, tool_crun, tool_podman, tool_apply_warm, tool_apply_socket):
        t()
    whole_pod(wasm_client(cfg["probe"]), "warmup")
    for rnd in range(ROUNDS):
        print(f"round {rnd + 1}/{ROUNDS}", file=sys.stderr, flush=True)
        k = rnd % len(tools)
        for t in tools[k:] + tools[:k]:
            t(rnd)


main()
