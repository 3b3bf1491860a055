#!/usr/bin/python3
"""End-to-end proof of the CRI harness on this machine (root; see README.md).

setup.sh in a fresh temp dir -> pods and containers through CRI v1 as the kubelet makes them
-> checks -> teardown.sh -> checks that nothing is left. Prints one line per check, the
timings, and a closing 'N passed, N failed' line; exits non-zero on any failure.
Teardown runs even when a check or setup fails. CRI_E2E_KEEP=1 skips it (for debugging).
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cri  # noqa: E402

RESULTS = []
TIMINGS = {}


SKIPPED = []


def skip(name):
    SKIPPED.append(name)
    print("skip " + name, flush=True)


def check(name, cond, detail=""):
    RESULTS.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond or not detail else f"  -- {detail}"), flush=True)
    return bool(cond)


def timed(key, fn, *args, **kw):
    t = time.monotonic()
    r = fn(*args, **kw)
    TIMINGS[key] = round((time.monotonic() - t) * 1000, 1)
    return r


def sh(*argv, check_rc=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{argv} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def mounts_under(d):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == d or mp.startswith(d + "/"):
                out.append(mp)
    return out


def cgroup_file(cgroups_path, v1_name, v2_name):
    v1 = f"/sys/fs/cgroup/memory{cgroups_path}/{v1_name}"
    v2 = f"/sys/fs/cgroup{cgroups_path}/{v2_name}"
    for p in (v1, v2):
        if os.path.exists(p):
            return p
    return None


def pod_spec(name, uid, hostname, pid_mode):
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid, "attempt": 0},
        "hostname": hostname,
        "labels": {"app": name},
        "linux": {
            "security_context": {
                "namespace_options": {"network": "POD", "pid": pid_mode, "ipc": "POD"},
                "seccomp": {"profile_type": "RuntimeDefault"},
            }
        },
    }


def ctr_spec(env, pod, name, script, user=65534, caps_add=("KILL",), memory=None, mounts=()):
    # The kubelet copies the pod's namespace options into every container's security context;
    # a container without them gets the proto default, pid POD (= the pod's shared namespace).
    sc = {
        "namespace_options": pod["linux"]["security_context"]["namespace_options"],
        "run_as_user": {"value": user},
        "readonly_rootfs": True,
        "capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": list(caps_add)},
        "no_new_privs": True,
        "seccomp": {"profile_type": "RuntimeDefault"},
    }
    spec = {
        "metadata": {"name": name, "attempt": 0},
        "image": {"image": env["CRI_BUSYBOX_IMAGE"]},
        "command": ["/bin/sh"],
        "args": ["-c", script],
        "envs": [{"key": "GREETING", "value": "hi"}],
        "mounts": list(mounts),
        "log_path": f"{name}.log",
        "linux": {"security_context": sc, "resources": {}},
    }
    if memory:
        spec["linux"]["resources"]["memory_limit_in_bytes"] = memory
    return spec


def status_line(text, key):
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return None


def scenario(env, c, seen):
    d = env["CRI_DIR"]
    hostdata = os.path.join(d, "hostdata")
    os.makedirs(hostdata)
    with open(os.path.join(hostdata, "greeting"), "w") as f:
        f.write("hello-from-host\n")

    # --- pod 1: shared PID namespace (shareProcessNamespace: true) ---------------------------
    pod = pod_spec("p1", "uid-p1", "p1-host", "POD")
    pod_id = timed("run_pod_sandbox_ms", c.run_pod, pod)["pod_id"]
    seen["ids"].add(pod_id)
    ps = c.pod_status(pod_id)
    seen["pids"].append(ps["pid"])
    ip = ps["ip"]
    check("RunPodSandbox: SANDBOX_READY with an IP in " + env["CRI_SUBNET"],
          ps["state"] == "SANDBOX_READY" and ip and ip.startswith("198.51.100."), json.dumps(ps.get("status"))[:300])
    full_pod = cri.fill_pod_defaults(pod)
    check("pod cgroup under the harness's parent",
          ps["info"]["info"]["runtimeSpec"]["linux"]["cgroupsPath"].startswith(env["CRI_CGROUP_PARENT"] + "/"))

    main_script = ("trap 'echo got SIGTERM; exit 7' TERM; echo started as $(id -u) with $GREETING; "
                   "while :; do sleep 1 & wait $!; done")
    main = ctr_spec(env, pod, "main", main_script, memory=64 << 20,
                    mounts=[{"container_path": "/data", "host_path": hostdata, "readonly": True}])
    cid = timed("create_container_ms", c.create, pod_id, full_pod, main)["container_id"]
    timed("start_container_ms", c.start, cid)
    seen["ids"].add(cid)
    st = c.status(cid)
    seen["pids"].append(st["pid"])
    check("main container RUNNING", st["state"] == "CONTAINER_RUNNING", st["state"])

    r = timed("exec_sync_ms", c.exec, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], 5)
    check("ExecSync: exit code, stdout, stderr", r == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}, r)
    # Through the CLI too, as a Rust test would run it.
    p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "cri.py"), "--time", "exec", cid, "--", "hostname"],
                       capture_output=True, text=True, env=os.environ)
    out = json.loads(p.stdout or "{}")
    check("cri.py exec (CLI): hostname is the pod's", p.returncode == 0 and out.get("stdout") == "p1-host\n", p.stdout + p.stderr)
    TIMINGS["cli_exec_elapsed_ms"] = out.get("elapsed_ms")

    r = c.exec(cid, ["sh", "-c", "id -u; cat /data/greeting; cat /proc/self/status; touch /rootfs-write; echo touch=$?"])
    so = r["stdout"]
    check("runs as uid 65534", so.splitlines()[0] == "65534", so[:100])
    check("host dir mounted read-only at /data", "hello-from-host" in so)
    check("read-only root filesystem", "touch=1" in so and "Read-only file system" in r["stderr"], r["stderr"])
    check("no_new_privs", status_line(so, "NoNewPrivs") == "1")
    check("seccomp RuntimeDefault (Seccomp: 2, filter mode)", status_line(so, "Seccomp") == "2")
    check("capabilities: bounding set is KILL only", status_line(so, "CapBnd") == "0000000000000020", status_line(so, "CapBnd"))
    check("capabilities: non-root gets no effective caps (KILL only in bounding)",
          status_line(so, "CapEff") == "0000000000000000", status_line(so, "CapEff"))

    r = c.exec(cid, ["ps", "-o", "pid,user,args"])
    check("shared PID namespace: PID 1 is /pause", "1 65535    /pause" in r["stdout"], r["stdout"])
    r = c.exec(cid, ["sh", "-c", "kill -0 1; echo rc=$?"])
    check("non-root with KILL in bounding only cannot signal pause (EPERM)",
          "rc=1" in r["stdout"] and "not permitted" in r["stderr"], r)

    # Memory limit: the cgroup containerd made, as seen from the host and from inside.
    cg = st["info"]["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
    f = cgroup_file(cg, "memory.limit_in_bytes", "memory.max")
    val = open(f).read().strip() if f else None
    check(f"memory limit 64 MiB in the container's cgroup ({f})", val == str(64 << 20), val)
    r = c.exec(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    check("memory limit visible inside the container", r["stdout"].strip() == str(64 << 20), r)
    r = c.exec(cid, ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"], 20)
    check("allocating 100 MB in the container is OOM-killed (137)", r["exit_code"] == 137 and "survived" not in r["stdout"], r)

    # A connect to the pod's own non-loopback address works at the kernel level.
    r = c.exec(cid, ["sh", "-c", f"(echo pong | nc -l -p 8080 >/dev/null &); sleep 0.3; echo ping | nc -w 2 {ip} 8080; echo rc=$?"], 10)
    check(f"connect to the pod's own IP {ip}:8080 from inside succeeds", "pong" in r["stdout"] and "rc=0" in r["stdout"], r)

    # ExecSync deadline.
    t = time.monotonic()
    try:
        r = c.exec(cid, ["sleep", "30"], 1)
        outcome = f"returned {r}"
    except cri.CriError as e:
        outcome = f"{e.code}: {e.details}"
    TIMINGS["exec_timeout_1s_ms"] = round((time.monotonic() - t) * 1000, 1)
    check("ExecSync timeout=1 ends the call in < 5 s", TIMINGS["exec_timeout_1s_ms"] < 5000, outcome)
    print(f"     (ExecSync past its timeout: {outcome})")
    time.sleep(0.2)
    r = c.exec(cid, ["ps", "-o", "pid,args"])
    check("the timed-out exec's process is gone", "sleep 30" not in r["stdout"], r["stdout"])

    # --- an image made from a given static binary + files, run pinned by digest ----------------
    files = os.path.join(d, "appfiles")
    os.makedirs(files)
    with open(os.path.join(files, "config.txt"), "w") as f:
        f.write("config-from-image\n")
    t = time.monotonic()
    p = sh(os.path.join(HERE, "image.sh"), d, "localhost/crit/app:v1",
           "--add", "/bin/busybox:/app/busybox:0755", "--add", os.path.join(files, "config.txt") + ":/app/config.txt:0644",
           "--dir", "/tmp:1777", "--entrypoint", '["/app/busybox"]', "--user", "65534:65534")
    TIMINGS["image_sh_build_import_ms"] = round((time.monotonic() - t) * 1000, 1)
    info = json.loads(p.stdout)
    ref = "localhost/crit/app@" + info["manifest_digest"]
    app = ctr_spec(env, pod, "app", "")
    app["image"] = {"image": ref}
    app["command"] = ["/app/busybox", "sh", "-c", "/app/busybox cat /app/config.txt; exec /app/busybox sleep 3600"]
    app["args"] = []
    aid = c.run(pod_id, full_pod, app)["container_id"]
    seen["ids"].add(aid)
    seen["pids"].append(c.status(aid)["pid"])
    time.sleep(0.3)
    ast = c.status(aid)
    check(f"image.sh image (static binary + file) runs, pinned as {ref[:40]}...",
          ast["state"] == "CONTAINER_RUNNING" and "config-from-image" in c.logs(aid)["stdout"],
          f"{ast['state']} {c.logs(aid)}")
    img = c.call("ImageStatus", {"image": {"image": ref}})["image"]
    check("ImageStatus by digest lists the repo digest and tag",
          ref in img["repo_digests"] and "localhost/crit/app:v1" in img["repo_tags"], img)
    by_id = c.call("ImageStatus", {"image": {"image": img["id"]}})["image"]
    check("ImageStatus by image ID (what the kubelet passes to CreateContainer) resolves", by_id["id"] == img["id"], by_id)

    # --- a second container, root with drop ALL + add KILL -----------------------------------
    rootk = ctr_spec(env, pod, "rootkill", "sleep 3600", user=0)
    rid = c.run(pod_id, full_pod, rootk)["container_id"]
    seen["ids"].add(rid)
    seen["pids"].append(c.status(rid)["pid"])
    r = c.exec(rid, ["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status; kill -0 1; echo rc=$?"])
    check("uid 0 with drop ALL + add KILL: CapEff = KILL and it may signal pause",
          status_line(r["stdout"], "CapEff") == "0000000000000020" and "rc=0" in r["stdout"], r)

    # --- StopContainer: SIGTERM reaches the process ------------------------------------------
    t = time.monotonic()
    c.stop(cid, 10)
    TIMINGS["stop_container_sigterm_ms"] = round((time.monotonic() - t) * 1000, 1)
    st = c.status(cid)
    logs = c.logs(cid)
    check("StopContainer: container saw SIGTERM (exit 7, logged)", st["exit_code"] == 7 and "got SIGTERM" in logs["stdout"],
          f"exit={st['exit_code']} log={logs['stdout']!r}")
    check("log file in the pod's log directory, CRI format",
          logs["path"].startswith(full_pod["log_directory"]) and logs["lines"][0]["content"] == "started as 65534 with hi",
          logs)

    # --- StopContainer: SIGKILL after the grace period -----------------------------------------
    stubborn = ctr_spec(env, pod, "stubborn", "trap '' TERM; echo ignoring TERM; while :; do sleep 1; done")
    sid = c.run(pod_id, full_pod, stubborn)["container_id"]
    seen["ids"].add(sid)
    seen["pids"].append(c.status(sid)["pid"])
    time.sleep(0.3)
    # From the app container (uid 65534, no effective caps) to the stubborn one (uid 65534).
    r = c.exec(aid, ["/app/busybox", "sh", "-c",
                     "B=/app/busybox; for p in $($B ps -o pid,args | $B grep 'ignoring [T]ERM' | $B awk '{print $1}'); "
                     "do kill -0 $p && echo same-uid-signal-ok; done"])
    check("same uid in another container of the pod: signalling needs no capability",
          "same-uid-signal-ok" in r["stdout"], r)
    t = time.monotonic()
    c.stop(sid, 2)
    el = time.monotonic() - t
    TIMINGS["stop_container_sigkill_after_2s_ms"] = round(el * 1000, 1)
    st = c.status(sid)
    check("StopContainer(2) on a TERM-ignoring process: SIGKILL after ~2 s (exit 137)",
          st["exit_code"] == 137 and 1.9 <= el < 6, f"exit={st['exit_code']} after {el:.2f}s")

    # --- pod 2: PID namespace per container ------------------------------------------------------
    pod2 = pod_spec("p2", "uid-p2", "p2-host", "CONTAINER")
    t = time.monotonic()
    pod2_id = c.run_pod(pod2)["pod_id"]
    seen["ids"].add(pod2_id)
    full_pod2 = cri.fill_pod_defaults(pod2)
    c2 = c.run(pod2_id, full_pod2, ctr_spec(env, pod2, "solo", "exec sleep 3600"))["container_id"]
    TIMINGS["pod2_sandbox_plus_container_ms"] = round((time.monotonic() - t) * 1000, 1)
    seen["ids"].add(c2)
    seen["pids"].append(c.status(c2)["pid"])
    seen["pids"].append(c.pod_status(pod2_id)["pid"])
    r = c.exec(c2, ["ps", "-o", "pid,args"])
    check("pid CONTAINER: PID 1 is the container's own process", "    1 sleep 3600" in r["stdout"], r["stdout"])
    ip2 = c.pod_status(pod2_id)["ip"]
    check("second pod got another address", ip2 and ip2 != ip, ip2)

    # --- pod 3: nginx as main (offline image from the host's Debian nginx) + a sidecar -----------
    if not os.path.exists(os.environ.get("NGINX", "/usr/sbin/nginx")):
        skip("nginx pod (no /usr/sbin/nginx: apt-get install nginx-light)")
    else:
        t = time.monotonic()
        sh(os.path.join(HERE, "nginx-image.sh"), d)
        TIMINGS["nginx_image_build_import_ms"] = round((time.monotonic() - t) * 1000, 1)
        pod3 = pod_spec("web", "uid-web", "web", "POD")
        t = time.monotonic()
        pod3_id = c.run_pod(pod3)["pod_id"]
        seen["ids"].add(pod3_id)
        full_pod3 = cri.fill_pod_defaults(pod3)
        ntmp = os.path.join(d, "nginx-tmp")
        os.makedirs(ntmp)
        os.chmod(ntmp, 0o1777)
        ng = ctr_spec(env, pod3, "nginx", "", caps_add=(), memory=64 << 20,
                      mounts=[{"container_path": "/tmp", "host_path": ntmp}])
        ng["image"] = {"image": "localhost/crit/nginx:offline"}
        del ng["command"], ng["args"]
        nid = c.run(pod3_id, full_pod3, ng)["container_id"]
        side = c.run(pod3_id, full_pod3, ctr_spec(env, pod3, "sidecar", "exec sleep 3600", user=1000, caps_add=()))["container_id"]
        TIMINGS["nginx_pod_sandbox_plus_2_containers_ms"] = round((time.monotonic() - t) * 1000, 1)
        seen["ids"].update([nid, side])
        ok = False
        for _ in range(50):
            r = c.exec(side, ["wget", "-qO-", "http://127.0.0.1:8080/"], 5)
            if r["stdout"] == "nginx-ok\n":
                ok = True
                break
            time.sleep(0.1)
        check("nginx main serves; the sidecar reaches it on the pod's loopback", ok, r)
        r = c.exec(side, ["ps", "-o", "pid,user,args"])
        check("sidecar sees nginx's master process (shared PID namespace)", "nginx: master process" in r["stdout"], r["stdout"])
        t = time.monotonic()
        c.stop(nid, 10)
        TIMINGS["nginx_stop_ms"] = round((time.monotonic() - t) * 1000, 1)
        st = c.status(nid)
        check("StopContainer on nginx sends the image's StopSignal (SIGQUIT): graceful exit 0",
              st["exit_code"] == 0 and "gracefully shutting down" in c.logs(nid)["stderr"], (st["exit_code"], c.logs(nid)["stderr"][-300:]))
        c.stop_pod(pod3_id)
        c.rm_pod(pod3_id)

    # --- the kubelet's removal order --------------------------------------------------------------
    for x in (cid, sid, rid, aid, c2):
        try:
            c.stop(x, 2)
        except cri.CriError:
            pass
        c.rm(x)
    t = time.monotonic()
    c.stop_pod(pod_id)
    c.rm_pod(pod_id)
    TIMINGS["stop_and_remove_pod_ms"] = round((time.monotonic() - t) * 1000, 1)
    c.stop_pod(pod2_id)
    c.rm_pod(pod2_id)
    left_c = c.call("ListContainers", {}).get("containers", [])
    left_p = c.call("ListPodSandbox", {}).get("items", [])
    check("after Remove*: no containers or pod sandboxes listed", not left_c and not left_p, (left_c, left_p))
    check("after RemovePodSandbox: no mounts left under the state dir",
          not [m for m in mounts_under(d) if "/state/" in m or "/root/" in m], mounts_under(d))


def main():
    parent = os.environ.get("CRI_E2E_TMP", "/tmp")
    d = tempfile.mkdtemp(prefix="crit-e2e-", dir=parent)
    seen = {"ids": set(), "pids": [], "shim_sockets": []}
    env = {}
    try:
        t = time.monotonic()
        p = subprocess.run([os.path.join(HERE, "setup.sh"), d], capture_output=True, text=True)
        TIMINGS["setup_sh_total_ms"] = round((time.monotonic() - t) * 1000, 1)
        if not check("setup.sh", p.returncode == 0, p.stderr[-3000:]):
            return
        with open(os.path.join(d, "env.json")) as f:
            env = json.load(f)
        os.environ.update(env)
        with open(os.path.join(d, "timings")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                TIMINGS["setup_" + k] = float(v)
        seen["pids"].append(int(env["CRI_CONTAINERD_PID"]))
        c = cri.Client(env["CRI_SOCKET"])
        try:
            v = c.version()
            print(f"     runtime: {v['runtime_name']} {v['runtime_version']} (CRI {v['runtime_api_version']})")
            scenario(env, c, seen)
        except Exception as e:  # a failed step is a failed check, and teardown still runs
            check("scenario ran to the end", False, f"{type(e).__name__}: {e}")
        finally:
            seen["shim_sockets"] = [open(a).read().strip().replace("unix://", "")
                                    for a in glob.glob(os.path.join(d, "state/io.containerd.runtime.v2.task/*/*/address"))]
            c.close()
    finally:
        if os.environ.get("CRI_E2E_KEEP") == "1":
            print(f"     CRI_E2E_KEEP=1: left {d}; run tests/cri/teardown.sh {d}")
        else:
            # shim PIDs, before they go
            shims = [int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*/cmdline")
                     if f"-address {d}/containerd.sock".encode() in open(p, "rb").read().replace(b"\0", b" ")]
            seen["pids"] += shims
            t = time.monotonic()
            p = subprocess.run([os.path.join(HERE, "teardown.sh"), d], capture_output=True, text=True)
            TIMINGS["teardown_sh_ms"] = round((time.monotonic() - t) * 1000, 1)
            check("teardown.sh reports nothing left", p.returncode == 0, p.stderr[-2000:])
            after_teardown(d, env, seen)
            p = subprocess.run([os.path.join(HERE, "teardown.sh"), d], capture_output=True, text=True)
            check("teardown.sh again is a no-op (idempotent)", p.returncode == 0, p.stderr)

    print("timings (ms):")
    for k, v in TIMINGS.items():
        print(f"  {k} = {v}")
    passed = sum(1 for _, ok in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed" + (f", {len(SKIPPED)} skipped" if SKIPPED else ""))
    sys.exit(1 if failed else 0)


def after_teardown(d, env, seen):
    check("temp dir removed", not os.path.exists(d))
    check("no mounts under the temp dir", not mounts_under(d), mounts_under(d))
    if env.get("CRI_NETNS"):
        ns = sh("ip", "netns", "list").stdout
        check(f"netns {env['CRI_NETNS']} gone", env["CRI_NETNS"] not in ns, ns)
        links = sh("ip", "-o", "link").stdout
        check("no bridge or veth of ours on the host", "crit0" not in links, links)
    live = []
    for pid in seen["pids"]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
            if d in cmd or cmd.startswith("/pause") or "sleep" in cmd or "/bin/sh -c trap" in cmd:
                live.append((pid, cmd))
        except OSError:
            pass
    for p in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if d.encode() in open(p, "rb").read():
                live.append((p, "mentions the temp dir"))
        except OSError:
            pass
    check(f"no process left (containerd, shims, pause, containers: {len(seen['pids'])} PIDs checked)", not live, live)
    cgs = []
    if env.get("CRI_CGROUP_PARENT"):
        cgs += [p for p in glob.glob("/sys/fs/cgroup/*" + env["CRI_CGROUP_PARENT"]) + ["/sys/fs/cgroup" + env["CRI_CGROUP_PARENT"]]
                if os.path.exists(p)]
    for i in seen["ids"]:
        cgs += sh("find", "/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", f"*{i}*", check_rc=False).stdout.split()
    check(f"no cgroups named after the parent or the {len(seen['ids'])} sandbox/container IDs", not cgs, cgs)
    socks = [s for s in seen["shim_sockets"] if os.path.exists(s)]
    check("shim sockets under /run/containerd/s removed", not socks, socks)
    if env.get("CRI_RUN_CONTAINERD_EXISTED") == "0":
        check("/run/containerd removed (it did not exist before)", not os.path.exists("/run/containerd"))
    cache = [p for i in seen["ids"] for p in glob.glob(f"/var/lib/cni/results/*{i}*")]
    check("no CNI cache entries for our sandboxes", not cache, cache)


if __name__ == "__main__":
    main()
