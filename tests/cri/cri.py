#!/usr/bin/python3
"""A small Kubernetes CRI v1 client for tests: the calls the kubelet makes, JSON in, JSON out.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf). The message classes
are generated from proto/api.proto (kubernetes/cri-api v0.25.0, runtime.v1) with Debian's
protoc (protobuf-compiler) into $CRI_GEN_DIR (setup.sh sets it), or into a temporary
directory when that is unset. No service stubs are generated: calls go through
grpc.Channel.unary_unary with the method path '/runtime.v1.RuntimeService/<Name>'.

Specs are the CRI messages in the protobuf JSON mapping (field names as in the proto,
snake_case or lowerCamelCase; enums by name, e.g. "POD"), checked strictly: an unknown
field is an error. So a pod spec is a PodSandboxConfig and a container spec a
ContainerConfig, exactly what the kubelet sends.

  cri.py [--socket S] [--timeout SECONDS] [--time] COMMAND ...
    version                              Version
    call METHOD [JSON|@FILE|-]           any RuntimeService/ImageService method, raw
    run-pod POD.json [--handler H]       RunPodSandbox            -> {"pod_id"}
    pod-status POD_ID                    PodSandboxStatus (verbose; info parsed) + "ip"
    create POD_ID POD.json CTR.json      CreateContainer          -> {"container_id"}
    start CID                            StartContainer
    run POD_ID POD.json CTR.json         CreateContainer + StartContainer -> {"container_id"}
    status CID                           ContainerStatus (verbose) + "state", "exit_code", "pid"
    wait CID [--state S] [--for SECONDS] poll ContainerStatus until state S (CONTAINER_EXITED)
    exec CID [--timeout N] -- CMD ...    ExecSync -> {"exit_code","stdout","stderr"}
    stop CID [--timeout N]               StopContainer (stop signal, then SIGKILL after N s)
    rm CID                               RemoveContainer
    stop-pod POD_ID / rm-pod POD_ID      StopPodSandbox / RemovePodSandbox
    logs CID                             the container's CRI log file, parsed
    ps / pods / images                   ListContainers / ListPodSandbox / ListImages
    cleanup                              stop and remove every container and pod sandbox

A JSON argument may be inline JSON, @FILE, a file path, or '-' for stdin.
Defaults filled in only when the pod spec lacks them: linux.cgroup_parent from
$CRI_CGROUP_PARENT, log_directory from $CRI_LOG_DIR/<namespace>_<name>_<uid>.

Output follows the protobuf JSON mapping with proto field names: enums by name, int64
fields (created_at, finished_at, ...) as strings, bytes as base64; `exec` decodes stdout
and stderr as UTF-8 instead.

Exit status: 0 with the JSON result on stdout (also when an exec'd command exits non-zero:
see "exit_code"); 2 on a gRPC error, with
{"error": {"code": "NOT_FOUND", "details": "..."}} on stdout; 3 when `wait` timed out;
64 on a usage error or a spec that does not parse, with {"error": {"code": "USAGE", ...}}.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "proto")

_pb = None


def pb():
    """The generated api_pb2 module (generated on first use if needed)."""
    global _pb
    if _pb is not None:
        return _pb
    gen = os.environ.get("CRI_GEN_DIR")
    tmp = None
    if not gen:
        tmp = tempfile.TemporaryDirectory(prefix="cri-py-gen-")
        gen = tmp.name
    target = os.path.join(gen, "api_pb2.py")
    proto = os.path.join(PROTO_DIR, "api.proto")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(proto):
        os.makedirs(gen, exist_ok=True)
        subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out=" + gen, proto], check=True)
    sys.path.insert(0, gen)
    try:
        import api_pb2  # noqa: E402
    finally:
        sys.path.pop(0)
        if tmp is not None:
            tmp.cleanup()
    _pb = api_pb2
    return _pb


class UsageError(Exception):
    pass


class CriError(Exception):
    def __init__(self, code, details):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Client:
    """client = Client('/tmp/x/containerd.sock'); client.call('Version', {})"""

    def __init__(self, socket, timeout=60.0):
        import grpc

        self._grpc = grpc
        self.timeout = timeout
        self.channel = grpc.insecure_channel("unix:" + os.path.abspath(socket))
        self._methods = {}
        for svc in pb().DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                self._methods[m.name] = (svc.full_name, m)

    def close(self):
        self.channel.close()

    def message(self, type_name, value=None):
        from google.protobuf import json_format

        msg = getattr(pb(), type_name)()
        if value:
            json_format.ParseDict(value, msg, ignore_unknown_fields=False)
        return msg

    def call_msg(self, method, request, timeout=None):
        svc, m = self._methods[method]
        fn = self.channel.unary_unary(
            f"/{svc}/{method}",
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=getattr(pb(), m.output_type.name).FromString,
        )
        try:
            return fn(request, timeout=timeout or self.timeout)
        except self._grpc.RpcError as e:
            raise CriError(e.code().name, e.details()) from None

    def call(self, method, request=None, timeout=None):
        """Dict in, dict out (protobuf JSON mapping, proto field names, defaults included)."""
        if method not in self._methods:
            raise UsageError(f"no CRI method {method}")
        _, m = self._methods[method]
        req = self.message(m.input_type.name, request or {})
        return to_dict(self.call_msg(method, req, timeout))

    # --- the kubelet's calls -------------------------------------------------
    def version(self):
        return self.call("Version", {"version": "v1"})

    def run_pod(self, pod, handler=""):
        pod = fill_pod_defaults(pod)
        if pod.get("log_directory") or pod.get("logDirectory"):
            os.makedirs(pod.get("log_directory") or pod.get("logDirectory"), exist_ok=True)
        r = self.call("RunPodSandbox", {"config": pod, "runtime_handler": handler})
        return {"pod_id": r["pod_sandbox_id"]}

    def pod_status(self, pod_id):
        r = self.call("PodSandboxStatus", {"pod_sandbox_id": pod_id, "verbose": True})
        r["info"] = {k: parse_json(v) for k, v in r.get("info", {}).items()}
        st = r.get("status", {})
        r["state"] = st.get("state")
        r["ip"] = ((st.get("network") or {}).get("ip")) or None
        info = r["info"].get("info") or {}
        r["pid"] = info.get("pid") if isinstance(info, dict) else None
        return r

    def create(self, pod_id, pod, ctr):
        pod = fill_pod_defaults(pod)
        r = self.call("CreateContainer", {"pod_sandbox_id": pod_id, "config": ctr, "sandbox_config": pod})
        return {"container_id": r["container_id"]}

    def start(self, cid):
        self.call("StartContainer", {"container_id": cid})
        return {}

    def run(self, pod_id, pod, ctr):
        cid = self.create(pod_id, pod, ctr)["container_id"]
        self.start(cid)
        return {"container_id": cid}

    def status(self, cid):
        r = self.call("ContainerStatus", {"container_id": cid, "verbose": True})
        r["info"] = {k: parse_json(v) for k, v in r.get("info", {}).items()}
        st = r.get("status", {})
        r["state"] = st.get("state")
        r["exit_code"] = st.get("exit_code")
        r["log_path"] = st.get("log_path")
        info = r["info"].get("info") or {}
        r["pid"] = info.get("pid") if isinstance(info, dict) else None
        return r

    def wait(self, cid, state="CONTAINER_EXITED", for_seconds=30.0):
        deadline = time.monotonic() + for_seconds
        while True:
            s = self.status(cid)
            if s["state"] == state:
                return s
            if time.monotonic() >= deadline:
                s["timed_out"] = True
                return s
            time.sleep(0.1)

    def exec(self, cid, cmd, timeout=10):
        req = self.message("ExecSyncRequest", {"container_id": cid, "cmd": cmd, "timeout": int(timeout)})
        r = self.call_msg("ExecSync", req, timeout=(timeout or 60) + 10)
        return {
            "exit_code": r.exit_code,
            "stdout": r.stdout.decode("utf-8", "replace"),
            "stderr": r.stderr.decode("utf-8", "replace"),
        }

    def stop(self, cid, timeout=10):
        self.call("StopContainer", {"container_id": cid, "timeout": int(timeout)}, timeout=timeout + 30)
        return {}

    def rm(self, cid):
        self.call("RemoveContainer", {"container_id": cid})
        return {}

    def stop_pod(self, pod_id):
        self.call("StopPodSandbox", {"pod_sandbox_id": pod_id})
        return {}

    def rm_pod(self, pod_id):
        self.call("RemovePodSandbox", {"pod_sandbox_id": pod_id})
        return {}

    def logs(self, cid):
        path = self.status(cid)["log_path"]
        return read_cri_log(path)

    def cleanup(self):
        done = {"containers": [], "pods": []}
        for c in self.call("ListContainers", {}).get("containers", []):
            try:
                self.stop(c["id"], 2)
            except CriError:
                pass
            try:
                self.rm(c["id"])
                done["containers"].append(c["id"])
            except CriError:
                pass
        for p in self.call("ListPodSandbox", {}).get("items", []):
            for step in (self.stop_pod, self.rm_pod):
                try:
                    step(p["id"])
                except CriError:
                    pass
            done["pods"].append(p["id"])
        return done


def to_dict(msg):
    from google.protobuf import json_format

    kw = {"preserving_proto_field_name": True}
    try:
        return json_format.MessageToDict(msg, including_default_value_fields=True, **kw)
    except TypeError:  # protobuf >= 5 renamed the flag
        return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True, **kw)


def parse_json(v):
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return v


def fill_pod_defaults(pod):
    pod = json.loads(json.dumps(pod))
    linux = pod.setdefault("linux", {})
    if not (linux.get("cgroup_parent") or linux.get("cgroupParent")) and os.environ.get("CRI_CGROUP_PARENT"):
        linux["cgroup_parent"] = os.environ["CRI_CGROUP_PARENT"]
    if not (pod.get("log_directory") or pod.get("logDirectory")) and os.environ.get("CRI_LOG_DIR"):
        md = pod.get("metadata", {})
        pod["log_directory"] = os.path.join(
            os.environ["CRI_LOG_DIR"], f"{md.get('namespace', 'default')}_{md.get('name', 'pod')}_{md.get('uid', '0')}"
        )
    return pod


def read_cri_log(path):
    """Parse the CRI log format: '<RFC3339Nano> <stdout|stderr> <P|F> <text>' per line."""
    out = {"path": path, "lines": [], "stdout": "", "stderr": ""}
    if not path or not os.path.exists(path):
        out["missing"] = True
        return out
    partial = {"stdout": "", "stderr": ""}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            parts = line.split(" ", 3)
            if len(parts) < 3:
                continue
            ts, stream, tag = parts[0], parts[1], parts[2]
            text = parts[3] if len(parts) > 3 else ""
            partial[stream] = partial.get(stream, "") + text
            if tag == "F":
                out["lines"].append({"time": ts, "stream": stream, "content": partial[stream]})
                out[stream] = out.get(stream, "") + partial[stream] + "\n"
                partial[stream] = ""
    for stream, text in partial.items():
        if text:
            out["lines"].append({"time": None, "stream": stream, "content": text, "partial": True})
            out[stream] += text
    return out


def load_json(arg):
    if arg == "-":
        return json.load(sys.stdin)
    if arg.startswith("@"):
        with open(arg[1:]) as f:
            return json.load(f)
    s = arg.lstrip()
    if s.startswith("{") or s.startswith("["):
        return json.loads(arg)
    with open(arg) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cri.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", default=os.environ.get("CRI_SOCKET"), help="containerd socket (default $CRI_SOCKET)")
    ap.add_argument("--timeout", type=float, default=60.0, help="gRPC deadline in seconds")
    ap.add_argument("--time", action="store_true", help='add "elapsed_ms" (the calls only, not Python start-up)')
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version")
    p = sub.add_parser("call"); p.add_argument("method"); p.add_argument("request", nargs="?", default="{}")
    p = sub.add_parser("run-pod"); p.add_argument("pod"); p.add_argument("--handler", default="", help="runtime_handler")
    p = sub.add_parser("pod-status"); p.add_argument("pod_id")
    for name in ("create", "run"):
        p = sub.add_parser(name); p.add_argument("pod_id"); p.add_argument("pod"); p.add_argument("ctr")
    for name in ("start", "status", "rm", "logs"):
        p = sub.add_parser(name); p.add_argument("cid")
    p = sub.add_parser("wait"); p.add_argument("cid"); p.add_argument("--state", default="CONTAINER_EXITED")
    p.add_argument("--for", dest="for_seconds", type=float, default=30.0)
    p = sub.add_parser("exec", usage="cri.py exec CID [--timeout N] -- CMD ...")
    p.add_argument("cid")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("stop"); p.add_argument("cid"); p.add_argument("--timeout", dest="stop_timeout", type=int, default=10)
    for name in ("stop-pod", "rm-pod"):
        p = sub.add_parser(name); p.add_argument("pod_id")
    for name in ("ps", "pods", "images", "cleanup"):
        sub.add_parser(name)
    a = ap.parse_args(argv)
    if not a.socket:
        print("cri.py: no --socket and no $CRI_SOCKET", file=sys.stderr)
        return 64
    from google.protobuf import json_format

    c = Client(a.socket, a.timeout)
    rc = 0
    t0 = time.monotonic()
    try:
        if a.cmd == "version":
            out = c.version()
        elif a.cmd == "call":
            out = c.call(a.method, load_json(a.request))
        elif a.cmd == "run-pod":
            out = c.run_pod(load_json(a.pod), a.handler)
        elif a.cmd == "pod-status":
            out = c.pod_status(a.pod_id)
        elif a.cmd == "create":
            out = c.create(a.pod_id, load_json(a.pod), load_json(a.ctr))
        elif a.cmd == "run":
            out = c.run(a.pod_id, load_json(a.pod), load_json(a.ctr))
        elif a.cmd == "start":
            out = c.start(a.cid)
        elif a.cmd == "status":
            out = c.status(a.cid)
        elif a.cmd == "wait":
            out = c.wait(a.cid, a.state, a.for_seconds)
            if out.get("timed_out"):
                rc = 3
        elif a.cmd == "exec":
            argv, exec_timeout = list(a.argv), 10
            if "--" in argv:
                opts, argv = argv[: argv.index("--")], argv[argv.index("--") + 1:]
                while opts:
                    o = opts.pop(0)
                    if o == "--timeout" and opts:
                        exec_timeout = int(opts.pop(0))
                    elif o.startswith("--timeout="):
                        exec_timeout = int(o.split("=", 1)[1])
                    else:
                        raise UsageError(f"exec: unknown option {o}")
            if not argv:
                raise UsageError("exec: no command (cri.py exec CID [--timeout N] -- CMD ...)")
            out = c.exec(a.cid, argv, exec_timeout)
        elif a.cmd == "stop":
            out = c.stop(a.cid, a.stop_timeout)
        elif a.cmd == "rm":
            out = c.rm(a.cid)
        elif a.cmd == "stop-pod":
            out = c.stop_pod(a.pod_id)
        elif a.cmd == "rm-pod":
            out = c.rm_pod(a.pod_id)
        elif a.cmd == "logs":
            out = c.logs(a.cid)
        elif a.cmd == "ps":
            out = c.call("ListContainers", {})
        elif a.cmd == "pods":
            out = c.call("ListPodSandbox", {})
        elif a.cmd == "images":
            out = c.call("ListImages", {})
        elif a.cmd == "cleanup":
            out = c.cleanup()
        else:
            raise AssertionError(a.cmd)
    except CriError as e:
        out = {"error": {"code": e.code, "details": e.details}}
        rc = 2
    except (UsageError, ValueError, OSError, json_format.Error) as e:  # a bad spec or argument
        out = {"error": {"code": "USAGE", "details": f"{type(e).__name__}: {e}"}}
        rc = 64
    finally:
        c.close()
    if a.time and isinstance(out, dict):
        out["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
    json.dump(out, sys.stdout, indent=None, sort_keys=True, default=lambda b: base64.b64encode(b).decode())
    sys.stdout.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
