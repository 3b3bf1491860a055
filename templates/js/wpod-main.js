// wpod-main.js: the pod's main containers, for a wpod sidecar in JavaScript (componentize-js).
//
// Helpers over wpod:sidecar/main-process@{{wit_version}}, as the Rust SDK has them:
// - containers(), get(name): the main (regular) containers: name, pid, state, exit code, restarts;
// - stats(name): a running container's live statistics (CPU, memory, threads, fds, I/O);
// - waitRunning(name, timeoutMs): waits until it runs; whether it does;
// - mainLogs(name, fromBeginning): iterate over its output lines ({source, text, timestampNs});
// - signal(name, signum): signal it (also needs the sidecar's `capabilities.add: [KILL]`).
// A refusal is thrown: `e.payload` is {tag: 'no-such-container' | 'not-running' | 'denied' | 'io', ...}.
//
// Importing this module makes the component import main-process, which the pod grants only with
// `spec.shareProcessNamespace: true`. So a sidecar that imports it
// - builds against the world `sidecar`: in package.json's build script, `--world-name
//   wpod:sidecar/sidecar` (the scaffold builds on `wpod:sidecar/sidecar-basic`, which has no
//   main-process: a build against it stops with `Error loading module
//   "wpod:sidecar/main-process@{{wit_version}}"`);
// - runs in a pod with `shareProcessNamespace: true` (wpod refuses the pod otherwise, and says so).
// A sidecar that does not import it runs in any pod.

import * as lifecycle from 'wpod:sidecar/lifecycle@{{wit_version}}';
import * as mainProcess from 'wpod:sidecar/main-process@{{wit_version}}';
import { poll } from 'wasi:io/poll@0.2.12';
import { dispose } from './wpod-sidecar.js';

export function containers() { return mainProcess.containers(); }
export function get(name) { return mainProcess.get(name); }
export function stats(name) { return mainProcess.stats(name); }
export function signal(name, signum) { mainProcess.signal(name, signum); }

// Waits until main container `name` runs (its output can come a moment before the pod records
// it as running); whether it does. Consumes the pod events that come meanwhile (`stopping`
// stays: every later call returns it again).
export function waitRunning(name, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (mainProcess.get(name).state === 'running') return true;
    } catch (e) { /* not a container yet */ }
    const left = deadline - Date.now();
    if (left <= 0) return false;
    lifecycle.nextEvent(BigInt(Math.max(1, Math.min(100, left))));
  }
}

// The container's lines, waiting for each; ends when it has exited and every line was read.
export function* mainLogs(name, fromBeginning = true) {
  const stream = mainProcess.logs(name, fromBeginning ? 'beginning' : 'now');
  const ready = stream.subscribe();
  try {
    for (;;) {
      let lines = stream.tryNext(64);
      if (lines.length === 0) {
        poll([ready]);
        lines = stream.tryNext(64);
        if (lines.length === 0) return;
      }
      yield* lines;
    }
  } finally {
    // The pollable is the stream's child: dropped first, also when the caller stops early.
    dispose(ready);
    dispose(stream);
  }
}
