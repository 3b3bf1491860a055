// wpod-sidecar.js: write wpod sidecars in JavaScript (componentize-js).
//
// Helpers over wpod's own interfaces (wit/sidecar.wit, wpod:sidecar@{{wit_version}}), as the
// Rust SDK has them:
// - ready(): tell the pod this sidecar is ready (a native sidecar counts as started then);
// - containers(), stats(name), waitRunning(name): the main containers and their live
//   statistics (granted by the pod's `shareProcessNamespace: true`); a refusal is thrown;
// - mainLogs(name, fromBeginning): iterate over a main container's output lines;
// - signal(name, signum): signal a main container (also needs `capabilities.add: [KILL]`);
// - nextEvent(timeoutMs), tryNextEvent(), events(), waitStopping(): the pod's events.
// subscribeEvents() and a log stream's subscribe() return wasi:io/poll pollables: pass them with
// sockets' and timers' to one poll([...]) to wait on all at once.

import * as lifecycle from 'wpod:sidecar/lifecycle@0.2.1';
import * as mainProcess from 'wpod:sidecar/main-process@0.2.1';
import { poll } from 'wasi:io/poll@0.2.12';

export function ready() { lifecycle.ready(); }
export function containers() { return mainProcess.containers(); }
export function stats(name) { return mainProcess.stats(name); }
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
export function signal(name, signum) { mainProcess.signal(name, signum); }
export function nextEvent(timeoutMs) { return lifecycle.nextEvent(BigInt(timeoutMs)); }
export function tryNextEvent() { return lifecycle.tryNextEvent(); }
export function subscribeEvents() { return lifecycle.subscribe(); }
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

// componentize-js gives resources a dispose method under this symbol.
const symbolDispose = Symbol.dispose || Symbol.for('dispose');

function dispose(resource) {
  if (typeof resource[symbolDispose] === 'function') resource[symbolDispose]();
}
export function* events() {
  const ready = lifecycle.subscribe();
  try {
    for (;;) {
      const e = lifecycle.tryNextEvent();
      if (e === undefined || e === null) { poll([ready]); continue; }
      yield e;
    }
  } finally {
    dispose(ready);
  }
}
export function waitStopping() {
  for (const e of events()) if (e.tag === 'stopping') return Number(e.val);
  return 0;
}
