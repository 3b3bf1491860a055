#!/usr/bin/env bash
# What a rootless pod's delegated cgroups cost at start (as root, which sets the user up):
#
#   bench/rootless-scope.sh [-r ROUNDS] [-n PODS] USER WPOD
#
# USER (an ordinary user with subordinate IDs, Debian's uidmap, systemd and dbus-user-session)
# gets cgroups of its own in each hierarchy and its own systemd manager (`systemd --user`, in a
# mount namespace where /run/systemd/system exists), as tests/e2e/rootless.rs sets them up;
# `wpod run -d` is then started from a root-owned "session" cgroup beside the manager's, as a
# login's would be. Each round starts PODS pods (`wpod.dev/network: none`, a native main that
# sleeps) one after another twice, interleaved: "scope", as shipped (wpod asks the manager for
# a delegated scope over the user's D-Bus and puts the pod's cgroups under it), and "no scope"
# (`WPOD_SYSTEMD_SCOPE=0`: the pods' cgroups go under the v1 cgroups delegated to the user by
# hand, where the session's processes are). So the difference is what asking systemd costs.
# Each set is stopped and removed before the next.
#   start   wall time of the PODS `wpod run -d` / PODS, per mode
# One JSON object per figure on stdout (tool "wpod, rootless, systemd scope" or "wpod,
# rootless, delegated cgroup, no scope"); progress on stderr.
set -euo pipefail
rounds=3 pods=10
while getopts "r:n:" opt; do
  case $opt in r) rounds=$OPTARG ;; n) pods=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 2)) || { echo "usage: $0 [-r ROUNDS] [-n PODS] USER WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
user=$1
wpod=$(realpath "$2")
uid=$(id -u "$user") gid=$(id -g "$user")
[[ -e /sys/fs/cgroup/memory/cgroup.procs && -e /sys/fs/cgroup/unified/cgroup.procs ]] ||
  { echo "$0: sets up cgroups on a hybrid v1/v2 host only" >&2; exit 2; }

work=$(mktemp -d /tmp/wpod-scope.XXXXXX)
chmod 755 "$work"
name=wpod-bench-scope-$$
run_dir=$work/run
install -d -o "$user" -g "$gid" -m 0700 "$run_dir" "$work/state"
v1=(memory cpu pids) sd=(unified systemd)
manager=
cleanup() {
  set +e
  [[ -n $manager ]] && kill "$manager" 2>/dev/null && wait "$manager" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    for d in $(find /sys/fs/cgroup/*/"$name" -depth -type d 2>/dev/null); do
      for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      rmdir "$d" 2>/dev/null
    done
    compgen -G "/sys/fs/cgroup/*/$name" >/dev/null || break
    sleep 0.2
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for h in "${v1[@]}" "${sd[@]}"; do
  d=/sys/fs/cgroup/$h/$name
  mkdir "$d"
  for f in "" cgroup.procs tasks cgroup.subtree_control cgroup.threads; do
    [[ -e $d/$f ]] && chown "$uid:$gid" "$d/$f"
  done
done
for h in "${sd[@]}"; do mkdir "/sys/fs/cgroup/$h/$name/session"; done

procs=()
for h in "${sd[@]}" "${v1[@]}"; do procs+=("/sys/fs/cgroup/$h/$name/cgroup.procs"); done
unshare --mount --propagation private sh -c '
  mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system &&
  for f in "$@"; do echo $$ > "$f" || exit 1; done &&
  exec setpriv --reuid='"$uid"' --regid='"$gid"' --init-groups env -i HOME='"$work"' \
    XDG_RUNTIME_DIR='"$run_dir"' /lib/systemd/systemd --user' sh "${procs[@]}" \
  >"$work/manager.log" 2>&1 &
manager=$!
for _ in $(seq 200); do
  [[ -S $run_dir/systemd/private && -S $run_dir/bus ]] && break
  sleep 0.05
done
[[ -S $run_dir/bus ]] || { cat "$work/manager.log" >&2; echo "$0: the user's manager did not start" >&2; exit 1; }

session=()
for h in "${sd[@]}"; do session+=("/sys/fs/cgroup/$h/$name/session/cgroup.procs"); done
for h in "${v1[@]}"; do session+=("/sys/fs/cgroup/$h/$name/cgroup.procs"); done
# USER's wpod, from the session's cgroups: `as_user ENV... -- ARGS...`.
as_user() {
  local env=()
  while [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  sh -c 'for f in '"${session[*]}"'; do echo $$ > "$f" || exit 1; done; exec "$@"' sh \
    setpriv --reuid="$uid" --regid="$gid" --init-groups env -i HOME="$work" PATH=/usr/bin:/bin \
    WPOD_ROOT="$work/state" XDG_RUNTIME_DIR="$run_dir" "${env[@]}" "$wpod" "$@"
}

for i in $(seq "$pods"); do
  cat >"$work/pod-$i.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: scope-$i
  annotations: {wpod.dev/network: none}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
EOF
done
chmod -R a+rX "$work"/pod-*.yaml

say "rootless-scope: $rounds rounds of $pods pods, user $user, work $work"
for round in $(seq "$rounds"); do
  for mode in scope none; do
    env=()
    [[ $mode == none ]] && env=(WPOD_SYSTEMD_SCOPE=0)
    start=$(now_ns)
    for i in $(seq "$pods"); do
      as_user "${env[@]}" -- run -d "$work/pod-$i.yaml" >/dev/null
    done
    took=$(($(now_ns) - start))
    # The pods' cgroups are where the mode says.
    in_scope=$(find "/sys/fs/cgroup/memory/$name" -path '*wpod-*.scope/wpod/*' -name 'pod-scope-*' -type d | wc -l)
    if [[ $mode == scope ]]; then
      ((in_scope == pods)) || { echo "$0: $in_scope of $pods pods' cgroups in a scope" >&2; exit 1; }
      tool="wpod, rootless, systemd scope"
    else
      ((in_scope == 0)) || { echo "$0: $in_scope pods' cgroups in a scope with WPOD_SYSTEMD_SCOPE=0" >&2; exit 1; }
      tool="wpod, rootless, delegated cgroup, no scope"
    fi
    for i in $(seq "$pods"); do
      as_user -- stop "scope-$i" >/dev/null
      as_user -- rm "scope-$i" >/dev/null
    done
    emit tool="$tool" measure="rootless pod start ($pods pods)" \
      value="$(python3 -c "print(round($took / $pods / 1e6, 2))")" unit=ms run="$round" better=lower \
      ref=$([[ $mode == scope ]] && echo true || echo false)
  done
done
