#!/usr/bin/env bash
# What a native container's seccomp filter costs each system call (as root):
#
#   bench/syscalls.sh [-r ROUNDS] WPOD
#
# A static C program makes 1,000,000 calls each of getppid (x86_64 110), getrandom of one byte
# (318) and clock_getres (229), through syscall(2), and prints the nanoseconds per call. It
# runs on the host (no filter), and as the main container of a `network: none` pod (the
# program from a read-only hostPath volume: a container's /tmp is its own) under the
# RuntimeDefault profile (moby's, wpod's default) and Unconfined. A filter tests a call's
# number before the kernel runs it: its cost is the difference with Unconfined.
# One JSON object per call and run on stdout; progress on stderr.
set -euo pipefail
rounds=5
while getopts "r:" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
install_peers gcc
# gcc only recommends libc6-dev, whose libc.a the static program needs.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] ||
  install_peers libc6-dev

work=$(mktemp -d /tmp/wpod-syscalls.XXXXXX)
export WPOD_ROOT=$work/wpodroot
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" syscalls-default syscalls-unconfined
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$work/sysbench.c" <<'C'
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}
int main(void) {
  const long n = 1000000;
  char b;
  struct timespec ts;
  double t0 = now();
  for (long i = 0; i < n; i++) syscall(SYS_getppid);
  double t1 = now();
  for (long i = 0; i < n; i++) syscall(SYS_getrandom, &b, 1, 0);
  double t2 = now();
  for (long i = 0; i < n; i++) syscall(SYS_clock_getres, CLOCK_MONOTONIC, &ts);
  double t3 = now();
  printf("getppid %.1f\ngetrandom %.1f\nclock_getres %.1f\n", (t1 - t0) / n, (t2 - t1) / n,
         (t3 - t2) / n);
  return 0;
}
C
gcc -O2 -static -o "$work/sysbench" "$work/sysbench.c"

pod() { # pod NAME PROFILE
  cat > "$work/$1.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, annotations: {wpod.dev/network: none}}
spec:
  restartPolicy: Never
  volumes:
  - {name: bench, hostPath: {path: $work, type: Directory}}
  containers:
  - name: main
    command: [/bench/sysbench]
    volumeMounts: [{name: bench, mountPath: /bench, readOnly: true}]
    securityContext: {seccompProfile: {type: $2}}
EOF
}
pod syscalls-default RuntimeDefault
pod syscalls-unconfined Unconfined

report() { # report TOOL OUTPUT RUN: the program's three lines, else a failed run
  if [ "$(grep -cE '^[a-z_]+ [0-9.]+$' <<< "$2")" != 3 ]; then
    say "$1: no figures (see $work/run.log): $2"
    exit 1
  fi
  while read -r call ns; do
    emit tool="$1" measure="ns per $call call" value="$ns" unit=ns run="$3" better=lower \
      ref="$([ "$1" = "wpod: RuntimeDefault" ] && echo true || echo false)"
  done <<< "$2"
}

in_pod() { # in_pod NAME: the program's output, run as the pod's main container
  "$wpod" run --output text "$work/$1.yaml" > /dev/null 2>> "$work/run.log"
  "$wpod" logs "$1"
  "$wpod" rm "$1" > /dev/null 2>> "$work/run.log"
}

say "syscalls: $rounds rounds, work $work"
for ((r = 0; r < rounds; r++)); do
  report "host (no filter)" "$("$work/sysbench")" "$r"
  report "wpod: RuntimeDefault" "$(in_pod syscalls-default)" "$r"
  report "wpod: Unconfined" "$(in_pod syscalls-unconfined)" "$r"
  say "  round $r done"
done
