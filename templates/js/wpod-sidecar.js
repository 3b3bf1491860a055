// wpod-sidecar.js: write wpod sidecars in JavaScript (componentize-js).
//
// StarlingMonkey, the engine componentize-js builds on, has no `fs`, `net` or `process.env`:
// these helpers give them over WASI 0.2, and reach only what the pod grants the sidecar.
//
// - main(fn): the component's `run` export, `export const run = main(() => {...})`: an exception
//   `fn` throws is printed with its stack (componentize-js alone exits 1 in silence).
// The pod (wpod:sidecar/lifecycle@{{wit_version}}, always granted):
// - ready(): tell the pod this sidecar is ready (a native sidecar counts as started then);
// - nextEvent(timeoutMs), tryNextEvent(), events(), waitStopping(): the pod's events;
// - stopping(): the milliseconds left once the pod is stopping, else null; never waits.
// Environment (always granted: the container's `env`, `command` and `args`):
// - env(): every variable, as an object; getenv(name, fallback); args(): argv.
// Files (granted by the container's `volumeMounts`: each mount is a preopened directory,
// read-only with `readOnly: true`; nothing else of the host). A path is absolute, or relative to
// the container's `workingDir`, and lies in a mount:
// - readFile(path) -> string (UTF-8); readFileBytes(path) -> Uint8Array;
// - writeFile(path, data) (creates or truncates), appendFile(path, data): a string or bytes;
// - listDir(path) -> sorted names; stat(path) -> {type, size}, or null if there is nothing;
//   mkdir(path) (and its parents); remove(path) (a file or an empty directory).
// TCP (wasi:sockets, in the pod's network namespace):
// - connect(host, port, {timeoutMs}) -> Connection: to the pod's loopback (127.0.0.1,
//   localhost) always; elsewhere where the pod's `wpod.dev/allowed-outbound.<container>`
//   annotation allows (a name is looked up only if a rule allows it);
// - listen(port, {host, backlog}) -> Listener: on a `containerPort` the container declares
//   (`ports`), on every address of the pod ('0.0.0.0') unless `host` says otherwise;
// - Listener: accept(timeoutMs) -> Connection, or null once timeoutMs passed or the pod is
//   stopping; port; subscribe(); close();
// - Connection: read(max) -> Uint8Array (empty at the end); readText(max); readLine() -> the
//   next line without its end, null at the end; readAll(), readAllText(); write(data) (a string
//   as UTF-8, or bytes; all of it); end() (no more writes); peer; subscribe(); close().
// A refusal is thrown as a WasiError: `e.code` is WASI's error code ('no-entry',
// 'not-permitted', 'access-denied', 'connection-refused', 'timeout', ...), `e.message` says what
// was tried. wpod also reports each denial as a pod event naming the Pod field that would allow it.
// - poll(pollables, timeoutMs) -> the indices of those ready: wait on several things at once,
//   such as subscribeEvents(), a Listener's or a Connection's subscribe() (a pollable may wake
//   with nothing to read yet: read again); dispose(p) each when done.
//
// The main container's state, statistics and output are in wpod-main.js. Import it only if the
// sidecar uses them: the component then imports main-process, which needs the world `sidecar`
// (package.json) and the pod's `shareProcessNamespace: true`.
//
// Call these from `run` (or what it calls), not at the top level of a module: componentize-js
// runs the top level once at build time, where they fail the build ("attempted to call an
// unknown imported function ... during Wizer initialization").

import * as lifecycle from 'wpod:sidecar/lifecycle@{{wit_version}}';
import { poll as wasiPoll } from 'wasi:io/poll@0.2.12';
import { subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';
import { getEnvironment, getArguments, initialCwd } from 'wasi:cli/environment@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { instanceNetwork } from 'wasi:sockets/instance-network@0.2.12';
import { createTcpSocket } from 'wasi:sockets/tcp-create-socket@0.2.12';
import { resolveAddresses } from 'wasi:sockets/ip-name-lookup@0.2.12';

// ---- the pod ----

// The component's `wasi:cli/run` export, running `fn`: `export const run = main(() => {...})`.
// An exception it throws is printed (componentize-js would only exit 1) and the sidecar exits 1.
export function main(fn) {
  return {
    run() {
      try {
        fn();
      } catch (e) {
        console.error(e && e.stack ? `${e}\n${e.stack}` : `${e}`);
        throw e;
      }
    },
  };
}

export function ready() { lifecycle.ready(); }
export function nextEvent(timeoutMs) { return lifecycle.nextEvent(BigInt(timeoutMs)); }
export function tryNextEvent() { return lifecycle.tryNextEvent(); }
export function subscribeEvents() { return lifecycle.subscribe(); }
export function* events() {
  const ready = lifecycle.subscribe();
  try {
    for (;;) {
      const e = lifecycle.tryNextEvent();
      if (e === undefined || e === null) { wasiPoll([ready]); continue; }
      yield e;
    }
  } finally {
    dispose(ready);
  }
}
// Waits for the pod to stop this sidecar; the milliseconds it has left.
export function waitStopping() {
  for (const e of events()) if (e.tag === 'stopping') return Number(e.val);
  return 0;
}
// The milliseconds left once the pod is stopping, else null; never waits. Consumes the pod's
// other events that came meanwhile (`stopping` stays: every later call returns it again).
export function stopping() {
  for (;;) {
    const e = lifecycle.tryNextEvent();
    if (e === undefined || e === null) return null;
    if (e.tag === 'stopping') return Number(e.val);
  }
}

// Waits until one of `pollables` is ready (or `timeoutMs` passed); the indices of those ready.
export function poll(pollables, timeoutMs) {
  if (timeoutMs === undefined || timeoutMs === Infinity) return [...wasiPoll(pollables)];
  const timer = subscribeDuration(BigInt(Math.max(0, Math.ceil(timeoutMs))) * 1000000n);
  try {
    return [...wasiPoll([...pollables, timer])].filter((i) => i < pollables.length);
  } finally {
    dispose(timer);
  }
}

// componentize-js gives resources a dispose method under this symbol.
const symbolDispose = Symbol.dispose || Symbol.for('dispose');

// Drops a WASI resource (a pollable, a stream, a socket, a file) now rather than when it is
// collected; a child (a pollable, a socket's streams) before its parent.
export function dispose(resource) {
  if (resource && typeof resource[symbolDispose] === 'function') resource[symbolDispose]();
}

// ---- errors ----

// What WASI refused: `code` is its error code, `message` says what was tried.
export class WasiError extends Error {
  constructor(what, cause) {
    const code = errorCode(cause);
    super(`${what}: ${code}`);
    this.name = 'WasiError';
    this.code = code;
    this.cause = cause;
  }
}

function errorCode(e) {
  if (e instanceof WasiError) return e.code;
  const p = e && e.payload;
  if (typeof p === 'string') return p;
  if (p && p.tag === 'closed') return 'closed';
  if (p && p.tag === 'last-operation-failed') {
    try { return p.val.toDebugString(); } catch (_) { return 'last-operation-failed'; }
  }
  if (p && p.tag) return p.tag;
  return e instanceof Error ? e.message : String(e);
}

// Calls f, throwing what WASI refused as a WasiError that says what was tried.
function attempt(what, f) {
  try {
    return f();
  } catch (e) {
    throw e instanceof WasiError ? e : new WasiError(what, e);
  }
}

// ---- environment ----

let environment = null;
export function env() {
  if (environment === null) environment = Object.freeze(Object.fromEntries(getEnvironment()));
  return environment;
}
export function getenv(name, fallback = undefined) {
  const v = env()[name];
  return v === undefined ? fallback : v;
}
export function args() { return getArguments(); }

// ---- files ----

const utf8 = new TextEncoder();
const toBytes = (data) => (typeof data === 'string' ? utf8.encode(data) : data);
const fromBytes = (bytes) => new TextDecoder().decode(bytes);

// The pod's volume mounts as [descriptor, mountPath], the longest path first.
let preopens = null;
function mounts() {
  if (preopens === null) {
    preopens = getDirectories().map(([dir, path]) => [dir, normalize(path)]);
    preopens.sort((a, b) => b[1].length - a[1].length);
  }
  return preopens;
}

// An absolute path without `.`, `..` and repeated slashes (as a shell would see it).
function normalize(path) {
  if (!path.startsWith('/')) {
    const cwd = initialCwd();
    if (cwd === undefined || cwd === null) {
      throw new WasiError(`${path}: a relative path needs the container's workingDir`, 'invalid');
    }
    path = `${cwd}/${path}`;
  }
  const parts = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  return `/${parts.join('/')}`;
}

// The mount that holds `path`, and the path inside it ('.' for the mount itself).
function locate(path) {
  const abs = normalize(path);
  for (const [dir, mount] of mounts()) {
    if (abs === mount) return [dir, '.'];
    if (mount === '/' || abs.startsWith(`${mount}/`)) return [dir, abs.slice(mount.length).replace(/^\//, '')];
  }
  const held = mounts().map(([, m]) => m).sort().join(', ') || 'none';
  throw new WasiError(`${abs} is in none of the container's volumeMounts (${held})`, 'no-entry');
}

function open(what, path, openFlags, flags) {
  const [dir, rel] = locate(path);
  return attempt(`${what} ${path}`, () => dir.openAt({ symlinkFollow: true }, rel, openFlags, flags));
}

export function readFileBytes(path) {
  const file = open('read', path, {}, { read: true });
  try {
    const chunks = [];
    let size = 0;
    for (;;) {
      const [chunk, end] = attempt(`read ${path}`, () => file.read(65536n, BigInt(size)));
      chunks.push(chunk);
      size += chunk.length;
      if (end || chunk.length === 0) break;
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    return all;
  } finally {
    dispose(file);
  }
}
export function readFile(path) { return fromBytes(readFileBytes(path)); }

export function writeFile(path, data) {
  const bytes = toBytes(data);
  const file = open('write', path, { create: true, truncate: true }, { write: true });
  try {
    let at = 0;
    while (at < bytes.length) {
      const chunk = bytes.subarray(at, at + 1048576);
      const wrote = Number(attempt(`write ${path}`, () => file.write(chunk, BigInt(at))));
      if (wrote === 0) throw new WasiError(`write ${path}`, 'no-space');
      at += wrote;
    }
  } finally {
    dispose(file);
  }
}

export function appendFile(path, data) {
  const bytes = toBytes(data);
  const file = open('append to', path, { create: true }, { write: true });
  try {
    const out = attempt(`append to ${path}`, () => file.appendViaStream());
    try {
      writeAll(out, bytes, `append to ${path}`);
    } finally {
      dispose(out);
    }
  } finally {
    dispose(file);
  }
}

export function listDir(path) {
  const dir = open('list', path, { directory: true }, { read: true });
  try {
    const entries = attempt(`list ${path}`, () => dir.readDirectory());
    try {
      const names = [];
      for (;;) {
        const e = attempt(`list ${path}`, () => entries.readDirectoryEntry());
        if (e === undefined || e === null) break;
        names.push(e.name);
      }
      return names.sort();
    } finally {
      dispose(entries);
    }
  } finally {
    dispose(dir);
  }
}

// {type: 'regular-file' | 'directory' | 'symbolic-link' | ..., size: number}, or null if
// there is nothing at `path`.
export function stat(path) {
  const [dir, rel] = locate(path);
  try {
    const s = dir.statAt({ symlinkFollow: true }, rel);
    return { type: s.type, size: Number(s.size) };
  } catch (e) {
    if (errorCode(e) === 'no-entry') return null;
    throw new WasiError(`stat ${path}`, e);
  }
}

export function mkdir(path) {
  const [dir, rel] = locate(path);
  if (rel === '.') return;
  let sofar = '';
  for (const part of rel.split('/')) {
    sofar = sofar ? `${sofar}/${part}` : part;
    try {
      dir.createDirectoryAt(sofar);
    } catch (e) {
      if (errorCode(e) !== 'exist') throw new WasiError(`mkdir ${path}`, e);
    }
  }
}

export function remove(path) {
  const [dir, rel] = locate(path);
  // The link itself, not what it points to.
  const s = attempt(`remove ${path}`, () => dir.statAt({}, rel));
  attempt(`remove ${path}`, () => (s.type === 'directory' ? dir.removeDirectoryAt(rel) : dir.unlinkFileAt(rel)));
}

// ---- TCP ----

let net = null;
function network() {
  if (net === null) {
    // componentize-js 0.23.0 writes a class only for a resource with methods, so none for
    // wasi:sockets/network's `network`, and instanceNetwork() then fails with "ReferenceError:
    // import_network_0_2_12$Network is not defined". Its bindings run in a realm of their own:
    // define the class in that realm's global. The network lives as long as the instance.
    const bindings = instanceNetwork.constructor('return globalThis')();
    const missing = 'import_network_0_2_12$Network';
    if (!(missing in bindings)) bindings[missing] = class Network {};
    net = instanceNetwork();
  }
  return net;
}

// An IP address as WASI has it ({tag: 'ipv4'|'ipv6', val: [...]}), or null if `host` is a name.
function parseIp(host) {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.every((n) => n <= 255)) return { tag: 'ipv4', val: parts };
    return null;
  }
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  if (!bare.includes(':') || !/^[0-9a-fA-F:]+$/.test(bare)) return null;
  const [head, tail] = bare.split('::');
  const groups = (s) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const fill = 8 - h.length - t.length;
  if (fill < 0 || (tail === undefined && fill !== 0)) return null;
  return { tag: 'ipv6', val: [...h, ...new Array(fill).fill(0), ...t] };
}

function socketAddress(ip, port) {
  return ip.tag === 'ipv4'
    ? { tag: 'ipv4', val: { port, address: ip.val } }
    : { tag: 'ipv6', val: { port, flowInfo: 0, address: ip.val, scopeId: 0 } };
}

function showIp(ip) {
  return ip.tag === 'ipv4' ? ip.val.join('.') : `[${ip.val.map((g) => g.toString(16)).join(':')}]`;
}

// `host`'s addresses: itself if it is one, else what the pod's rules let wpod look up.
function lookup(host) {
  const ip = parseIp(host);
  if (ip) return [ip];
  const stream = attempt(`look up ${host}`, () => resolveAddresses(network(), host));
  const ready = stream.subscribe();
  try {
    const found = [];
    for (;;) {
      let next;
      try {
        next = stream.resolveNextAddress();
      } catch (e) {
        if (errorCode(e) === 'would-block') { wasiPoll([ready]); continue; }
        throw new WasiError(`look up ${host}`, e);
      }
      if (next === undefined || next === null) return found;
      found.push(next);
    }
  } finally {
    dispose(ready);
    dispose(stream);
  }
}

// Runs a socket's finish-* call until it no longer says would-block; at most timeoutMs.
function finish(socket, what, f, timeoutMs) {
  const ready = socket.subscribe();
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        return f();
      } catch (e) {
        if (errorCode(e) !== 'would-block') throw new WasiError(what, e);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new WasiError(what, 'timeout');
      poll([ready], left);
    }
  } finally {
    dispose(ready);
  }
}

export function connect(host, port, { timeoutMs } = {}) {
  const what = `connect to ${host}:${port}`;
  const addresses = lookup(host);
  if (addresses.length === 0) throw new WasiError(what, 'name-unresolvable');
  let last;
  for (const ip of addresses) {
    const socket = attempt(what, () => createTcpSocket(ip.tag));
    try {
      attempt(what, () => socket.startConnect(network(), socketAddress(ip, port)));
      const [input, output] = finish(socket, what, () => socket.finishConnect(), timeoutMs);
      return new Connection(socket, input, output, `${showIp(ip)}:${port}`);
    } catch (e) {
      dispose(socket);
      last = e;
    }
  }
  throw last;
}

export function listen(port, { host = '0.0.0.0', backlog } = {}) {
  const what = `listen on ${host}:${port}`;
  const ip = parseIp(host);
  if (!ip) throw new WasiError(`${what}: give an address, not a name`, 'invalid-argument');
  const socket = attempt(what, () => createTcpSocket(ip.tag));
  try {
    attempt(what, () => socket.startBind(network(), socketAddress(ip, port)));
    finish(socket, what, () => socket.finishBind());
    if (backlog !== undefined) attempt(what, () => socket.setListenBacklogSize(BigInt(backlog)));
    attempt(what, () => socket.startListen());
    finish(socket, what, () => socket.finishListen());
  } catch (e) {
    dispose(socket);
    throw e;
  }
  return new Listener(socket, port);
}

export class Listener {
  constructor(socket, port) {
    this.socket = socket;
    this.port = port;
  }

  // The next connection; null once `timeoutMs` passed or the pod is stopping (then stopping()
  // says how long is left). Consumes the pod's other events that come meanwhile.
  accept(timeoutMs = Infinity) {
    const what = `accept on port ${this.port}`;
    const deadline = Date.now() + timeoutMs;
    const ready = this.socket.subscribe();
    const pod = lifecycle.subscribe();
    try {
      for (;;) {
        try {
          const [socket, input, output] = this.socket.accept();
          let peer = 'a client';
          try { peer = showAddress(socket.remoteAddress()); } catch (_) { /* gone already */ }
          return new Connection(socket, input, output, peer);
        } catch (e) {
          if (errorCode(e) !== 'would-block') throw new WasiError(what, e);
        }
        if (stopping() !== null) return null;
        const left = deadline - Date.now();
        if (left <= 0) return null;
        poll([ready, pod], left);
      }
    } finally {
      dispose(pod);
      dispose(ready);
    }
  }

  // Ready when a connection waits (or the socket failed).
  subscribe() { return this.socket.subscribe(); }

  close() {
    dispose(this.socket);
    this.socket = null;
  }
}

function showAddress(a) { return `${showIp({ tag: a.tag, val: a.val.address })}:${a.val.port}`; }

export class Connection {
  constructor(socket, input, output, peer) {
    this.socket = socket;
    this.input = input;
    this.output = output;
    this.peer = peer;
    this.pending = new Uint8Array(0);
    this.decoder = new TextDecoder();
  }

  // What came, at most `max` bytes, waiting for some; empty once the peer closed its side.
  read(max = 65536) {
    if (this.pending.length > 0) {
      const out = this.pending.subarray(0, max);
      this.pending = this.pending.subarray(out.length);
      return out;
    }
    try {
      return this.input.blockingRead(BigInt(max));
    } catch (e) {
      if (errorCode(e) === 'closed') return new Uint8Array(0);
      throw new WasiError(`read from ${this.peer}`, e);
    }
  }

  // As read, decoded as UTF-8 (a character split between reads comes whole with the next).
  readText(max = 65536) {
    const bytes = this.read(max);
    return this.decoder.decode(bytes, { stream: bytes.length > 0 });
  }

  // The next line without its line end ('\n' or '\r\n'); null at the end; the last line may
  // come without one. Bytes after it stay for the next read.
  readLine() {
    let buf = this.pending;
    this.pending = new Uint8Array(0);
    for (;;) {
      const nl = buf.indexOf(10);
      if (nl >= 0) {
        this.pending = buf.subarray(nl + 1);
        const end = nl > 0 && buf[nl - 1] === 13 ? nl - 1 : nl;
        return fromBytes(buf.subarray(0, end));
      }
      const more = this.read();
      if (more.length === 0) return buf.length > 0 ? fromBytes(buf) : null;
      const joined = new Uint8Array(buf.length + more.length);
      joined.set(buf);
      joined.set(more, buf.length);
      buf = joined;
    }
  }

  // Everything until the peer closes its side.
  readAll() {
    const chunks = [];
    let size = 0;
    for (let c; (c = this.read()).length > 0; ) { chunks.push(c); size += c.length; }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    return all;
  }
  readAllText() { return fromBytes(this.readAll()); }

  // Writes all of `data` (a string, as UTF-8, or a Uint8Array), waiting as needed.
  write(data) { writeAll(this.output, toBytes(data), `write to ${this.peer}`); }

  // No more writes: the peer reads the end.
  end() { attempt(`end ${this.peer}`, () => this.socket.shutdown('send')); }

  // Ready when read() may have something (or the peer closed).
  subscribe() { return this.input.subscribe(); }

  close() {
    dispose(this.input);
    dispose(this.output);
    dispose(this.socket);
    this.input = this.output = this.socket = null;
  }
}

// blocking-write-and-flush takes at most 4096 bytes a call.
function writeAll(out, bytes, what) {
  for (let at = 0; at < bytes.length; at += 4096) {
    const chunk = bytes.subarray(at, at + 4096);
    attempt(what, () => out.blockingWriteAndFlush(chunk));
  }
}
