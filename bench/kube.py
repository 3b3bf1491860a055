#!/usr/bin/python3
"""A Wasm sidecar on Kubernetes' runtime path: its runner container against a native container
doing the same job, on a real containerd driven through the CRI API (tests/cri), and against
the same sidecar in a wpod pod (`wpod bench`). As root:

    bench/kube.py [-r ROUNDS] WPOD

Each round, in one pod sandbox, the order alternating:
  runner   the runner image `wpod kube build` makes of target/sidecars/probe.wasm (its compiled
           code in the image), running `wpod sidecar run ... -- probe ready wait-stopping`
           (read-only root, user 65532, no capabilities, RuntimeDefault seccomp)
  native   busybox (static) running `echo ready`, then idling in the shell until SIGTERM
           (the same user and restrictions)
Start: from just before CreateContainer to the containerd timestamp of the container's first
log line (the guest's `ready ok` line, busybox's `ready`): what a log follower or a startup
probe could see first. Memory: one second after that, the proportional set size (PSS, from
/proc/PID/smaps_rollup) of every process in the container's cgroup (the shim is outside it, the
same for both), and the cgroup's own usage (memory.usage_in_bytes, page cache included).
Then the container is stopped (SIGTERM, 10 s) and removed. Then `wpod bench --runs 10
--density 10` gives the same component's warm start and idle PSS per sidecar in a wpod pod.
One JSON object per run on stdout (the suite's format), a summary on stderr.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests/cri"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(tool, measure, value, unit, run, better, ref=False):
    row = {"tool": tool, "measure": measure, "value": value, "unit": unit, "run": run, "better": better}
    if ref:
        row["ref"] = True
    print(json.dumps(row), flush=True)


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cgroup_dir(parent, cid):
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        d = os.path.join(base, parent.strip("/"), cid)
        if os.path.isdir(d):
            return d
    raise RuntimeError(f"no memory cgroup for {cid} under {parent}")


def first_line_ns(log_path, deadline):
    while time.time() < deadline:
        try:
            with open(log_path) as f:
                line = f.readline()
            if line.endswith("\n"):
                ts = line.split(" ", 1)[0]
                # RFC3339Nano: parse seconds and the fraction by hand (Python keeps microseconds).
                date, frac = ts.rstrip("Z").split(".") if "." in ts else (ts.rstrip("Z"), "0")
                secs = time.mktime(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) - time.timezone
                return int(secs) * 10**9 + int(frac.ljust(9, "0")[:9])
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no first line in {log_path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=9)
    ap.add_argument("wpod")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/kube.py: needs root")
    wpod = os.path.realpath(a.wpod)
    probe = os.path.join(ROOT, "target/sidecars/probe.wasm")
    work = tempfile.mkdtemp(prefix="wpod-bench-kube.")
    cri_dir = os.path.join(work, "cri")
    try:
        subprocess.run([os.path.join(ROOT, "tests/cri/setup.sh"), cri_dir], check=True,
                       stdout=subprocess.DEVNULL)
        env = json.load(open(os.path.join(cri_dir, "env.json")))
        os.environ.update(env)
        import cri
        # The runner image, as kube build makes it.
        archive = os.path.join(work, "runner.tar")
        subprocess.run([wpod, "kube", "build", probe, "--tag", "localhost/bench/probe-runner:1",
                        "--archive", archive], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([os.path.join(ROOT, "tests/cri/image.sh"), cri_dir,
                              "localhost/bench/probe-runner:1", "--archive", archive],
                             check=True, capture_output=True, text=True).stdout
        runner_image = "localhost/bench/probe-runner@" + json.loads(out.splitlines()[-1])["manifest_digest"]
        busybox = env["CRI_BUSYBOX_IMAGE"]
        # The runner's files: its manifest (one container, the sidecar) and a state directory.
        etc = os.path.join(work, "etc")
        os.makedirs(etc)
        with open(os.path.join(etc, "pod.yaml"), "w") as f:
            f.write("apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  containers:\n"
                    "  - name: probe\n    image: ./probe.wasm\n    resources: {limits: {memory: 64Mi}}\n")
        client = cri.Client(env["CRI_SOCKET"])
        pod = {"metadata": {"name": "bench", "namespace": "default", "uid": "bench-uid", "attempt": 0},
               "hostname": "bench",
               "linux": {"security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}}}}
        pod_id = client.run_pod(pod)["pod_id"]
        security = {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"},
                    "run_as_user": {"value": 65532}, "run_as_group": {"value": 65532},
                    "readonly_rootfs": True, "no_new_privs": True,
                    "capabilities": {"drop_capabilities": ["ALL"]},
                    "seccomp": {"profile_type": "RuntimeDefault"}}
        results = {"runner": {"start": [], "pss": [], "cgroup": []},
                   "native": {"start": [], "pss": [], "cgroup": []}}
        for run in range(a.rounds + 1):
            order = ["runner", "native"] if run % 2 == 0 else ["native", "runner"]
            for tool in order:
                attempt = run * 2 + (0 if tool == "runner" else 1)
                if tool == "runner":
                    state = os.path.join(work, f"state-{attempt}")
                    os.makedirs(state)
                    os.chown(state, 65532, 65532)
                    ctr = {"metadata": {"name": "probe", "attempt": attempt},
                           "image": {"image": runner_image},
                           "command": ["/usr/local/bin/wpod", "sidecar", "run", "--manifest",
                                       "/etc/wpod/pod.yaml", "--container", "probe", "--component",
                                       "/wpod/component.wasm", "--state-dir", "/var/run/wpod", "--",
                                       "probe", "ready", "wait-stopping"],
                           "mounts": [{"container_path": "/etc/wpod", "host_path": etc, "readonly": True},
                                      {"container_path": "/var/run/wpod", "host_path": state}],
                           "log_path": f"probe-{attempt}.log",
                           "linux": {"resources": {"memory_limit_in_bytes": 96 << 20},
                                     "security_context": security}}
                else:
                    ctr = {"metadata": {"name": "native", "attempt": attempt},
                           "image": {"image": busybox},
                           "command": ["/bin/sh", "-c",
                                       "echo ready; trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"],
                           "log_path": f"native-{attempt}.log",
                           "linux": {"resources": {"memory_limit_in_bytes": 96 << 20},
                                     "security_context": security}}
                t0 = time.time_ns()
                cid = client.run(pod_id, pod, ctr)["container_id"]
                status = client.status(cid)
                first = first_line_ns(status["log_path"], time.time() + 30)
                time.sleep(1)
                cg = cgroup_dir(env["CRI_CGROUP_PARENT"], cid)
                pids = [int(p) for p in open(os.path.join(cg, "cgroup.procs")).read().split()]
                usage_file = os.path.join(cg, "memory.usage_in_bytes")
                if not os.path.exists(usage_file):
                    usage_file = os.path.join(cg, "memory.current")
                usage = int(open(usage_file).read()) // 1024
                pss = pss_kib(pids)
                client.stop(cid, 10)
                code = client.status(cid)["exit_code"]
                client.rm(cid)
                if code not in (0, None):
                    raise RuntimeError(f"{tool} ended with {code}")
                if run == 0:
                    continue  # warm-up
                start_ms = (first - t0) / 1e6
                results[tool]["start"].append(start_ms)
                results[tool]["pss"].append(pss)
                results[tool]["cgroup"].append(usage)
                emit(f"{tool}-container", "kube start to first line", round(start_ms, 2), "ms", run, "lower", tool == "runner")
                emit(f"{tool}-container", "kube idle PSS", pss, "KiB", run, "lower", tool == "runner")
                emit(f"{tool}-container", "kube idle cgroup usage", usage, "KiB", run, "lower", tool == "runner")
        client.stop_pod(pod_id)
        client.rm_pod(pod_id)
        client.close()
        # The same component in a wpod pod.
        # In wpod's own environment, not the harness's (its TMPDIR, its sockets).
        clean = {k: v for k, v in os.environ.items() if k not in env}
        bench = subprocess.run([wpod, "bench", "--component", probe, "--runs", "10", "--density", "10", "-o", "json"],
                               capture_output=True, text=True,
                               env={**clean, "WPOD_ROOT": os.path.join(work, "wpodroot")})
        if bench.returncode != 0:
            raise RuntimeError(f"wpod bench failed: {bench.stderr}")
        report = json.loads(bench.stdout)
        warm = next(t for t in report["timings"] if t["kind"] == "warm")
        log("\n| container | start to first line (median [min-max]) | idle PSS (median) | idle cgroup usage (median) |")
        log("|---|---|---|---|")
        for tool in ("runner", "native"):
            r = results[tool]
            log(f"| {tool} | {statistics.median(r['start']):.1f} ms [{min(r['start']):.1f}-{max(r['start']):.1f}] "
                f"| {statistics.median(r['pss'])} KiB | {statistics.median(r['cgroup'])} KiB |")
        log(f"\nwpod pod, same component: warm start {json.dumps(warm['first_instruction_ms'])} ms; "
            f"density {json.dumps(report['density'])}")
        print(json.dumps({"tool": "wpod-pod-sidecar", "bench": report}), flush=True)
    finally:
        subprocess.run([os.path.join(ROOT, "tests/cri/teardown.sh"), cri_dir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
