#!/bin/bash
# Remove everything setup.sh DIR created: pods (through CRI when containerd still answers),
# then by PID the pod processes, the shims and containerd, the mounts under DIR, the network
# namespace (and with it the bridge and veths), the cgroups, the shim sockets, the CNI cache
# entries, and DIR. Idempotent: safe to run twice, after a failed setup, or with no DIR.
# Exits 0 only when nothing is left; lists what is left otherwise.
#
#   tests/cri/teardown.sh DIR
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "teardown.sh: $*" >&2; }

[ $# -eq 1 ] || { echo "usage: teardown.sh DIR" >&2; exit 64; }
DIR=$(realpath -m "$1")
if [ ! -e "$DIR" ]; then
  log "$DIR does not exist: nothing to do"
  exit 0
fi
if [ ! -e "$DIR/.cri-harness" ]; then
  log "$DIR has no .cri-harness marker: not made by setup.sh, refusing to touch it"
  exit 1
fi
CRI_NETNS="" CRI_NAME="" CRI_CGROUP_PARENT="" CRI_SOCKET="$DIR/containerd.sock"
CRI_RUN_CONTAINERD_EXISTED=1 CRI_RUN_NETNS_EXISTED=1 CRI_VAR_LIB_CNI_EXISTED=1 CRI_VAR_LIB_CNI_RESULTS_EXISTED=1
# shellcheck disable=SC1091
[ -f "$DIR/env" ] && . "$DIR/env"

cmdline_of() { tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline"; }

# IDs of every sandbox and container containerd made (task bundles and CRI metadata dirs).
ids() {
  {
    ls "$DIR/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null
    ls "$DIR/root/io.containerd.grpc.v1.cri/sandboxes" 2>/dev/null
    ls "$DIR/root/io.containerd.grpc.v1.cri/containers" 2>/dev/null
  } | grep -E '^[0-9a-f]{64}$' | sort -u
}

# PIDs that belong to this harness: containerd itself, shims serving our socket, any process in
# our network namespace, and any process in a cgroup under our parent or named after our IDs.
our_pids() {
  local p cg id_re=""
  local -a idl
  mapfile -t idl < <(ids)
  [ ${#idl[@]} -gt 0 ] && id_re=$(IFS='|'; echo "${idl[*]}")
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    case "$(cmdline_of "$p")" in
      *"$DIR/config.toml"*|*"-address $DIR/containerd.sock"*) echo "$p"; continue;;
    esac
    cg=$(< "/proc/$p/cgroup") 2>/dev/null || continue
    if [ -n "$CRI_CGROUP_PARENT" ] && [[ "$cg"$'\n' =~ :$CRI_CGROUP_PARENT[/$'\n'] ]]; then
      echo "$p"; continue
    fi
    if [ -n "$id_re" ] && [[ $cg =~ $id_re ]]; then echo "$p"; fi
  done
  if [ -n "$CRI_NETNS" ] && [ -e "/run/netns/$CRI_NETNS" ]; then
    ip netns pids "$CRI_NETNS" 2>/dev/null
  fi
}

# --- 1. graceful: stop and remove pods through CRI, as the kubelet would ----------------------
CPID=$(cat "$DIR/containerd.pid" 2>/dev/null || true)
alive=0
if [ -n "$CPID" ] && [[ $(cmdline_of "$CPID") == *"$DIR/config.toml"* ]]; then alive=1; fi
if [ $alive = 1 ] && [ -S "$CRI_SOCKET" ]; then
  CRI_GEN_DIR="$DIR/gen" timeout 60 /usr/bin/python3 "$HERE/cri.py" --socket "$CRI_SOCKET" --timeout 20 cleanup \
    >/dev/null 2>&1 || log "CRI cleanup did not finish; killing instead"
fi

# --- 2. containerd: SIGTERM, then SIGKILL -------------------------------------------------------
if [ $alive = 1 ]; then
  kill -TERM "$CPID" 2>/dev/null
  for _ in $(seq 1 100); do [ -d "/proc/$CPID" ] || break; sleep 0.1; done
  [ -d "/proc/$CPID" ] && kill -KILL "$CPID" 2>/dev/null
fi

# --- 3. every other process of ours, by PID --------------------------------------------------
for round in 1 2 3 4 5 6 7 8 9 10; do
  mapfile -t pids < <(our_pids | sort -un)
  [ ${#pids[@]} -eq 0 ] && break
  [ "$round" = 1 ] && log "killing ${#pids[@]} leftover process(es): ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null
  sleep 0.2
done

# --- 4. mounts under DIR (rootfs overlays, sandbox shm, pod netns binds, ...) -------------------
mounts_under() {
  awk '{print $5}' /proc/self/mountinfo | while read -r m; do
    m=$(printf '%b' "$m")
    [[ $m == "$DIR" || $m == "$DIR/"* ]] && echo "$m"
  done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}
for _ in 1 2 3; do
  mapfile -t ms < <(mounts_under)
  [ ${#ms[@]} -eq 0 ] && break
  for m in "${ms[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done

# --- 5. the network namespace (its bridge and veth ends go with it) ---------------------------
if [ -n "$CRI_NETNS" ] && [ -e "/run/netns/$CRI_NETNS" ]; then
  ip netns delete "$CRI_NETNS" || log "ip netns delete $CRI_NETNS failed"
fi
# /run/netns itself stays (iproute2 makes it a shared mount other users may be adding to).

# --- 6. cgroups: our parent in every hierarchy, and any named after our IDs --------------------
cg_dirs() {
  local h id
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -d "$h" ] || continue
    [ -n "$CRI_CGROUP_PARENT" ] && [ -d "$h$CRI_CGROUP_PARENT" ] && echo "$h$CRI_CGROUP_PARENT"
  done
  for id in $(ids); do
    find /sys/fs/cgroup -maxdepth 6 -type d -name "*$id*" 2>/dev/null
  done
}
for _ in 1 2 3 4 5; do
  mapfile -t cgs < <(cg_dirs | sort -u)
  [ ${#cgs[@]} -eq 0 ] && break
  for c in "${cgs[@]}"; do find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  sleep 0.2
done

# --- 7. files containerd and CNI keep outside DIR ---------------------------------------------
# containerd 1.6 puts each shim's socket at /run/containerd/s/<hash>; its bundle's `address`
# file names it. libcni caches results at /var/lib/cni/results/<network>-<sandbox id>-<ifname>.
for a in "$DIR"/state/io.containerd.runtime.v2.task/*/*/address; do
  [ -f "$a" ] || continue
  s=$(sed -e 's|^unix://||' "$a")
  [[ $s == /run/containerd/s/* ]] && rm -f "$s"
done
for id in $(ids); do
  rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null
done
if [ "$CRI_RUN_CONTAINERD_EXISTED" = 0 ]; then
  rmdir /run/containerd/s /run/containerd 2>/dev/null
fi
if [ "$CRI_VAR_LIB_CNI_RESULTS_EXISTED" = 0 ]; then
  rmdir /var/lib/cni/results 2>/dev/null
fi
if [ "$CRI_VAR_LIB_CNI_EXISTED" = 0 ]; then
  rmdir /var/lib/cni/networks /var/lib/cni 2>/dev/null
fi

# --- 8. DIR itself, only once nothing is mounted under it -------------------------------------
left=()
mapfile -t ms < <(mounts_under)
[ ${#ms[@]} -gt 0 ] && left+=("mounts: ${ms[*]}")
if [ ${#ms[@]} -eq 0 ]; then
  # Record what the checks below need before DIR goes.
  mapfile -t idl < <(ids)
  rm -rf --one-file-system "$DIR" || left+=("could not remove $DIR")
fi

# --- 9. check ---------------------------------------------------------------------------------
mapfile -t pids < <(our_pids 2>/dev/null | sort -un)
[ ${#pids[@]} -gt 0 ] && left+=("processes: ${pids[*]}")
[ -n "$CRI_NETNS" ] && ip netns list 2>/dev/null | grep -qw "$CRI_NETNS" && left+=("netns $CRI_NETNS")
for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
  [ -n "$CRI_CGROUP_PARENT" ] && [ -d "$h$CRI_CGROUP_PARENT" ] && left+=("cgroup $h$CRI_CGROUP_PARENT")
done
for id in "${idl[@]:-}"; do
  [ -n "$id" ] || continue
  f=$(find /sys/fs/cgroup -maxdepth 6 -type d -name "*$id*" 2>/dev/null | head -1)
  [ -n "$f" ] && left+=("cgroup $f")
  compgen -G "/var/lib/cni/results/*-$id-*" >/dev/null && left+=("cni cache for $id")
done
if [ ${#left[@]} -gt 0 ]; then
  log "LEFT BEHIND:"; printf '  %s\n' "${left[@]}" >&2
  exit 1
fi
log "removed $DIR; nothing left"
