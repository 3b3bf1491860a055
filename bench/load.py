#!/usr/bin/env python3
"""Runs one measure and notes how much of the machine's CPU went to processes outside it.

    bench/load.py -o LOAD.json -- COMMAND [ARGS]...

bench/run.sh runs each per-measure script through this. It starts COMMAND as a child subreaper
(PR_SET_CHILD_SUBREAPER: what a measure starts stays below it even when it daemonizes, as `wpod
run -d`, conmon and crun do), samples /proc every half second, and sorts each process's CPU time
(utime + stime) into *ours* (this process and everything below it; for those that ended, the kernel's count of waited-for
descendants) and *others* (every other
process that is not a kernel thread). A process that was there before counts only what it used
during the measure. At the end it writes LOAD.json:

    wall_s, cpus, busy_cpu_s (every CPU's busy time, /proc/stat), ours_cpu_s, others_cpu_s,
    others_share (others_cpu_s / (cpus x wall_s)), top_others ([comm, pid, cpu_s] x 5),
    loadavg_start, loadavg_end, samples

and exits with COMMAND's code. Blind spots, said so: a process of another that starts and ends
between two samples is not seen; kernel threads (the network's softirq work among them, which a
measure's own traffic causes) are not counted for either side: busy_cpu_s minus both is the
rest. A signal (SIGTERM from `timeout`) is passed on to COMMAND, and LOAD.json is still written.
"""

import argparse
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TICK = os.sysconf("SC_CLK_TCK")


def stat_of(pid):
    """(ppid, start time, cpu seconds, comm) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    # fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
    return int(f[1]), int(f[19]), (int(f[11]) + int(f[12])) / TICK, comm


def busy_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / TICK


def own_cpu():
    """CPU seconds of this process and of the descendants it and they have waited for."""
    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF)
               for f in ("ru_utime", "ru_stime"))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Ledger:
    """CPU per process seen, split into ours and others."""

    def __init__(self, me):
        self.me = me
        self.seen = {}  # (pid, start) -> [ours, cpu at first sight or 0 if new, last cpu, comm]
        self.first = True

    def sample(self):
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = stat_of(int(name))
                if st:
                    procs[int(name)] = st
        for pid, (ppid, start, cpu, comm) in procs.items():
            if pid == 2 or ppid == 2:  # kthreadd and the kernel's threads
                continue
            key = (pid, start)
            entry = self.seen.get(key)
            if entry is None:
                # Before the measure: only what it uses from now on counts.
                entry = [self.ours(pid, procs), cpu if self.first else 0.0, cpu, comm]
                self.seen[key] = entry
            entry[2], entry[3] = cpu, comm
        self.first = False

    def ours(self, pid, procs):
        for _ in range(64):
            if pid == self.me:
                return True
            if pid not in procs or pid <= 1:
                return False
            pid = procs[pid][0]
        return False

    def totals(self):
        ours = others = 0.0
        top = []
        for (pid, _), (mine, base, last, comm) in self.seen.items():
            used = max(0.0, last - base)
            if mine:
                ours += used
            else:
                others += used
                if used > 0:
                    top.append([comm, pid, round(used, 2)])
        top.sort(key=lambda t: -t[2])
        return ours, others, top[:5]


def main():
    p = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1].strip())
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        p.error("no command")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"load.py: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    ledger = Ledger(os.getpid())
    ledger.sample()
    t0, busy0, load0 = time.monotonic(), busy_seconds(), loadavg()
    rusage0 = own_cpu()
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    samples = 1
    while child.poll() is None:
        time.sleep(a.every)
        ledger.sample()
        samples += 1
    # Once more after the end: what the others used since the last sample counts too.
    ledger.sample()
    samples += 1
    # Orphans the measure left below this subreaper are reaped (not waited for: they are the
    # measure's to stop, and a stuck one must not hold up the suite).
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    wall = time.monotonic() - t0
    ours, others, top = ledger.totals()
    # What the measure's processes that ended used, in full (the samples miss their last half
    # second): the kernel's count of waited-for descendants, and this process's own.
    ended = own_cpu()
    ours = max(ours, ended - rusage0)
    cpus = os.cpu_count() or 1
    out = {
        "wall_s": round(wall, 2), "cpus": cpus, "busy_cpu_s": round(busy_seconds() - busy0, 2),
        "ours_cpu_s": round(ours, 2), "others_cpu_s": round(others, 2),
        "others_share": round(others / (cpus * wall), 4) if wall > 0 else 0.0,
        "top_others": top, "loadavg_start": load0, "loadavg_end": loadavg(), "samples": samples,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)


if __name__ == "__main__":
    main()
