#!/bin/bash
# Start a private containerd (CRI v1) with runc and CNI inside a network namespace of its
# own, all state under DIR, and import offline images. Run as root. Undo with teardown.sh DIR.
#
#   tests/cri/setup.sh DIR
#
# DIR must not exist or be empty. On success DIR/env (shell) and DIR/env.json hold:
#   CRI_SOCKET CRI_DIR CRI_NETNS CRI_NETNS_PATH CRI_CGROUP_PARENT CRI_LOG_DIR CRI_GEN_DIR
#   CRI_CONTAINERD_PID CRI_PAUSE_IMAGE CRI_BUSYBOX_IMAGE CRI_SUBNET CRI_PY CRI_CTR
# (`. DIR/env` then `$CRI_PY run-pod ...`). Timings go to DIR/timings.
# On any failure it runs teardown.sh DIR itself (unless CRI_KEEP_ON_FAILURE=1).
#
# Debian 12 packages: containerd runc containernetworking-plugins iproute2 util-linux
#   python3 python3-grpcio python3-protobuf protobuf-compiler gcc libc6-dev busybox-static
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "setup.sh: $*" >&2; exit 1; }
log() { echo "setup.sh: $*" >&2; }
now_ms() { date +%s%3N; }

[ $# -eq 1 ] || die "usage: setup.sh DIR"
DIR=$(realpath -m "$1")
[ "$(id -u)" = 0 ] || die "must run as root"
case "$DIR" in /|/tmp|/var|/run|/root|/home|/usr|/etc) die "refusing DIR=$DIR";; esac

# --- prerequisites ---------------------------------------------------------------
missing=()
for c in containerd containerd-shim-runc-v2 runc ctr nsenter ip gcc protoc /usr/bin/python3; do
  command -v "$c" >/dev/null || missing+=("$c")
done
CNI_BIN=${CRI_CNI_BIN:-/usr/lib/cni}
for p in bridge host-local loopback; do [ -x "$CNI_BIN/$p" ] || missing+=("$CNI_BIN/$p"); done
[ -x /bin/busybox ] || missing+=(/bin/busybox)
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || missing+=("python3-grpcio/python3-protobuf")
if [ ${#missing[@]} -gt 0 ]; then
  die "missing: ${missing[*]}
  apt-get install -y containerd runc containernetworking-plugins iproute2 util-linux python3 python3-grpcio python3-protobuf protobuf-compiler gcc libc6-dev busybox-static"
fi
[[ $(ldd /bin/busybox 2>&1) == *"not a dynamic executable"* ]] || die "/bin/busybox is not static (install busybox-static)"

SUBNET=${CRI_SUBNET:-198.51.100.0/28}
/usr/bin/python3 -c 'import ipaddress,sys; ipaddress.ip_network(sys.argv[1])' "$SUBNET" 2>/dev/null ||
  die "CRI_SUBNET=$SUBNET is not a network (e.g. 198.51.100.0/28)"

if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR exists and is not empty (teardown.sh it first)"
fi
mkdir -p "$DIR"
chmod 0711 "$DIR"
touch "$DIR/.cri-harness"          # teardown.sh refuses directories without this marker

SUFFIX=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
NAME=crit-$SUFFIX
NETNS=$NAME
SOCK=$DIR/containerd.sock
PAUSE_IMAGE=localhost/crit/pause:offline
BUSYBOX_IMAGE=localhost/crit/busybox:offline

# Everything teardown needs is written before it is created.
{
  printf "export CRI_DIR='%s'\n" "$DIR"
  printf "export CRI_NAME='%s'\n" "$NAME"
  printf "export CRI_NETNS='%s'\n" "$NETNS"
  printf "export CRI_NETNS_PATH='%s'\n" "/run/netns/$NETNS"
  printf "export CRI_CGROUP_PARENT='%s'\n" "/$NAME"
  printf "export CRI_SOCKET='%s'\n" "$SOCK"
  printf "export CRI_LOG_DIR='%s'\n" "$DIR/logs"
  printf "export CRI_GEN_DIR='%s'\n" "$DIR/gen"
  printf "export CRI_PAUSE_IMAGE='%s'\n" "$PAUSE_IMAGE"
  printf "export CRI_BUSYBOX_IMAGE='%s'\n" "$BUSYBOX_IMAGE"
  printf "export CRI_SUBNET='%s'\n" "$SUBNET"
  printf "export CRI_PY='%s'\n" "$HERE/cri.py"
  printf "export CRI_CTR='%s'\n" "ctr --address $SOCK --namespace k8s.io"
  printf "export CRI_RUN_CONTAINERD_EXISTED='%s'\n" "$([ -e /run/containerd ] && echo 1 || echo 0)"
  printf "export CRI_VAR_LIB_CNI_EXISTED='%s'\n" "$([ -e /var/lib/cni ] && echo 1 || echo 0)"
  printf "export CRI_VAR_LIB_CNI_RESULTS_EXISTED='%s'\n" "$([ -e /var/lib/cni/results ] && echo 1 || echo 0)"
  printf "export CRI_RUN_NETNS_EXISTED='%s'\n" "$([ -e /run/netns ] && echo 1 || echo 0)"
} > "$DIR/env"

ok=0
on_exit() {
  if [ $ok = 0 ]; then
    if [ "${CRI_KEEP_ON_FAILURE:-0}" = 1 ]; then
      log "FAILED; leaving $DIR for inspection (teardown.sh $DIR removes it)"
    else
      log "FAILED; tearing down $DIR"
      [ -f "$DIR/containerd.log" ] && tail -n 20 "$DIR/containerd.log" >&2 || true
      "$HERE/teardown.sh" "$DIR" >&2 || true
    fi
  fi
}
trap on_exit EXIT

mkdir -p "$DIR"/{root,state,tmp,opt,runc,logs,gen,images,cni/net.d,cni/ipam,certs.d,build}
T0=$(now_ms)

# --- network namespace ---------------------------------------------------------------
# `ip netns add` bind-mounts the namespace at /run/netns/NAME. containerd is started with
# `nsenter --net=` (not `ip netns exec`, which remounts /sys and hides the cgroup mounts:
# runc then fails "no cgroup mount found in mountinfo").
ip netns add "$NETNS"
nsenter --net="/run/netns/$NETNS" ip link set lo up

# --- CNI: a bridge with host-local addresses, state under DIR --------------------------
cat > "$DIR/cni/net.d/10-$NAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "crit0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET" }]],
        "dataDir": "$DIR/cni/ipam"
      }
    }
  ]
}
EOF

# --- containerd config -------------------------------------------------------------
cat > "$DIR/config.toml" <<EOF
version = 2
root = "$DIR/root"
state = "$DIR/state"
temp = "$DIR/tmp"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"

# Unused, but it cannot be disabled: containerd 1.6's tasks service needs a v1 runtime
# ("no plugins registered for io.containerd.runtime.v1: not found", and then no CRI).
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$DIR/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine forbids lowering oom_score_adj ("failed to update /proc/self/oom_score_adj:
  # Permission denied"); clamp the pod's values to containerd's own instead.
  restrict_oom_score_adj = true
  # Pod network namespaces under DIR/state/netns instead of /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/certs.d"
EOF

# --- CRI message classes -------------------------------------------------------------
protoc -I "$HERE/proto" --python_out="$DIR/gen" "$HERE/proto/api.proto"

# --- containerd --------------------------------------------------------------------
# nsenter without --fork execs containerd, so $! is containerd's PID.
T1=$(now_ms)
TMPDIR="$DIR/tmp" setsid nsenter --net="/run/netns/$NETNS" \
  containerd --config "$DIR/config.toml" --log-level "${CRI_LOG_LEVEL:-info}" \
  </dev/null >"$DIR/containerd.log" 2>&1 &
CPID=$!
echo "$CPID" > "$DIR/containerd.pid"
printf "export CRI_CONTAINERD_PID='%s'\n" "$CPID" >> "$DIR/env"

export CRI_SOCKET=$SOCK CRI_GEN_DIR=$DIR/gen
up=0
for _ in $(seq 1 300); do
  kill -0 "$CPID" 2>/dev/null || die "containerd exited; see $DIR/containerd.log"
  if grep -q 'failed to load plugin io.containerd.grpc.v1.cri' "$DIR/containerd.log"; then
    die "containerd's CRI plugin did not load: $(grep 'failed to load plugin' "$DIR/containerd.log")"
  fi
  if [ -S "$SOCK" ] && /usr/bin/python3 "$HERE/cri.py" --timeout 2 version >"$DIR/version.json" 2>/dev/null; then
    up=1; break
  fi
  sleep 0.1
done
[ $up = 1 ] || die "containerd did not answer CRI Version within 30 s"
T2=$(now_ms)
# CRI is up once its Status reports RuntimeReady and NetworkReady (the CNI config loaded).
ready=0
for _ in $(seq 1 100); do
  if /usr/bin/python3 "$HERE/cri.py" call Status '{}' >"$DIR/status.json" 2>/dev/null &&
     /usr/bin/python3 - "$DIR/status.json" <<'EOF'
import json, sys
conds = {c["type"]: c["status"] for c in json.load(open(sys.argv[1]))["status"]["conditions"]}
sys.exit(0 if conds.get("RuntimeReady") and conds.get("NetworkReady") else 1)
EOF
  then ready=1; break; fi
  sleep 0.1
done
[ $ready = 1 ] || die "CRI Status not ready: $(cat "$DIR/status.json" 2>/dev/null)"
T3=$(now_ms)

# --- offline images ------------------------------------------------------------------
gcc -static -Os -s -o "$DIR/build/pause" "$HERE/pause.c"
"$HERE/image.sh" "$DIR" "$PAUSE_IMAGE" \
  --add "$DIR/build/pause:/pause:0755" --entrypoint '["/pause"]' --user 65535:65535 >/dev/null

BB=$DIR/build/busybox-rootfs
mkdir -p "$BB"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,run,var}
chmod 1777 "$BB/tmp"
cp /bin/busybox "$BB/bin/busybox"
for applet in $(/bin/busybox --list-full); do
  [ "$applet" = bin/busybox ] && continue
  ln -sf /bin/busybox "$BB/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$BB/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$BB/etc/group"
"$HERE/image.sh" "$DIR" "$BUSYBOX_IMAGE" --rootfs "$BB" --entrypoint '["/bin/sh"]' >/dev/null
T4=$(now_ms)

{
  echo "containerd_socket_ms=$((T2 - T1))"
  echo "containerd_cri_ready_ms=$((T3 - T1))"
  echo "images_build_import_ms=$((T4 - T3))"
  echo "setup_total_ms=$((T4 - T0))"
} > "$DIR/timings"
/usr/bin/python3 - "$DIR/env" "$DIR/env.json" <<'EOF'
import json, shlex, sys
env = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").removeprefix("export ").partition("=")
    env[k] = shlex.split(v)[0] if v else ""
json.dump(env, open(sys.argv[2], "w"), indent=1, sort_keys=True)
EOF
ok=1
log "ready: . $DIR/env  (containerd pid $CPID, netns $NETNS, $(tr '\n' ' ' < "$DIR/timings"))"
