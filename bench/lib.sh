# Helpers shared by the bench/ suite's per-measure scripts (sourced, not run).
#
#   install_peers PKG...   installs the Debian packages that are missing, without starting
#                          their services (a temporary /usr/sbin/policy-rc.d, only if none exists)
#   emit KEY=VALUE...      prints one JSON object on stdout (numbers stay numbers)
#   say TEXT...            a line for humans, on stderr
#   now_ns                 CLOCK_REALTIME in nanoseconds
#   wpod_pods_cleanup WPOD POD...   stops and removes these pods (ignores the ones that are gone)
#
# and exports PYTHONDONTWRITEBYTECODE=1 (no bench/__pycache__).
#
# Every script prints one JSON object per run on stdout with at least: tool, measure, value,
# unit, run (the round), better ("lower" or "higher"); "ref": true marks the wpod variant the
# other tools of the measure are compared with (bench/report.py).

say() { echo "$*" >&2; }
now_ns() { date +%s%N; }

# No __pycache__ in the tree from the suite's Python (the scripts and their children).
export PYTHONDONTWRITEBYTECODE=1

emit() {
  python3 - "$@" <<'PY'
import json, sys
row = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    if v in ("true", "false"):
        row[k] = v == "true"
    else:
        try:
            row[k] = int(v)
        except ValueError:
            try:
                row[k] = float(v)
            except ValueError:
                row[k] = v
print(json.dumps(row), flush=True)
PY
}

# Debian's package of each command the suite uses as a peer.
declare -A PEER_PACKAGE=(
  [crun]=crun [runc]=runc [podman]=podman [nginx]=nginx-light [haproxy]=haproxy [wrk]=wrk
  [rsyslogd]=rsyslog [socat]=socat [prometheus-redis-exporter]=prometheus-redis-exporter
  [prometheus-process-exporter]=prometheus-process-exporter [busybox]=busybox-static
  [redis-server]=redis-server [openssl]=openssl [curl]=curl [nsenter]=util-linux [python3]=python3
  [perf]=linux-perf
)

# install_peers CMD...: apt-get install the packages of the commands that are missing. Services
# must not start: Debian's invoke-rc.d asks /usr/sbin/policy-rc.d, so one that says "no" (101)
# is created for the install when there is none, and only that one is removed after; an existing
# policy-rc.d (another tool's, or the admin's) is never touched.
install_peers() {
  local cmd pkgs=() created=
  for cmd in "$@"; do
    if [ "$cmd" = busybox ]; then [ -x /bin/busybox ] && continue; fi
    command -v "$cmd" >/dev/null 2>&1 || pkgs+=("${PEER_PACKAGE[$cmd]:-$cmd}")
  done
  ((${#pkgs[@]})) || return 0
  say "installing ${pkgs[*]} (apt-get)"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# bench/lib.sh: no service starts during the install\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 || rc=$?
  if [ -n "$created" ] && grep -q '^# bench/lib.sh' /usr/sbin/policy-rc.d 2>/dev/null; then
    rm -f /usr/sbin/policy-rc.d
  fi
  return $rc
}

# wpod_pods_cleanup WPOD POD...: stop (1 s grace) and remove each pod; quiet.
wpod_pods_cleanup() {
  local w=$1 p
  shift
  for p in "$@"; do
    "$w" stop -t 1 "$p" >/dev/null 2>&1 || true
    "$w" rm "$p" >/dev/null 2>&1 || true
  done
}

# make_bundle DIR NETNS ARGV...: an OCI bundle in DIR (config.json from `runc spec`, read-only
# rootfs: bash and its libraries, busybox as /bin/busybox and /bin/sh) whose process is ARGV;
# NETNS "host" keeps the host's network namespace, "own" gives the container one of its own.
make_bundle() {
  local dir=$1 netns=$2 lib
  shift 2
  local rootfs=$dir/rootfs
  mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp,etc}
  cp /bin/bash /bin/busybox "$rootfs/bin/"
  for lib in $(ldd /bin/bash | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  ln -sf busybox "$rootfs/bin/sh"
  (cd "$dir" && runc spec)
  python3 - "$dir/config.json" "$netns" "$@" <<'PY'
import json, sys
path, netns, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
s = json.load(open(path))
s["process"].update(args=argv, terminal=False)
s["root"]["readonly"] = True
if netns == "host":
    s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "network"]
json.dump(s, open(path, "w"), indent=1)
PY
}

# crun_mntns_setup DIR / crun_mntns_teardown DIR: DIR/mnt, a private mount namespace without the
# cgroup2 hierarchy, for crun. crun 1.8 refuses this hybrid cgroup v1/v2 host ("cgroups in
# hybrid mode not supported, drop all controllers from cgroupv2", --cgroup-manager=disabled
# included); with /sys/fs/cgroup/unified unmounted it sees plain cgroup v1 and runs. Only this
# namespace changes; join it with `nsenter --mount=DIR/mnt crun ...` (or setns).
crun_mntns_setup() {
  mkdir -p "$1"
  mount --bind "$1" "$1"
  mount --make-private "$1"
  touch "$1/mnt"
  unshare --mount="$1/mnt" --propagation private umount /sys/fs/cgroup/unified
}
crun_mntns_teardown() {
  umount "$1/mnt" 2>/dev/null || true
  umount "$1" 2>/dev/null || true
}

# podman_private DIR: the argv prefix (in the array PODMAN) of a podman with its own store in
# DIR, runtime runc (podman's default here is crun: see crun_mntns_setup), cgroupfs, no events.
podman_private() {
  PODMAN=(podman --root "$1/root" --runroot "$1/run" --storage-driver overlay --runtime runc
    --cgroup-manager cgroupfs --events-backend none)
}
podman_private_cleanup() {
  [ -d "$1" ] || return 0
  podman_private "$1"
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1 || true
  "${PODMAN[@]}" system reset --force >/dev/null 2>&1 || true
  umount -R "$1/root/overlay" 2>/dev/null || true
}
