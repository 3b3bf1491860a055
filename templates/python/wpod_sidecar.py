"""wpod_sidecar: write wpod sidecars in Python (componentize-py).

Helpers over wpod's own interfaces (wit/sidecar.wit, wpod:sidecar@{{wit_version}}), as the Rust
SDK has them:

- @entrypoint: decorate `Run.run` with it; an uncaught exception then prints its Python
  traceback and the sidecar exits with code 1 (without it, componentize-py traps and the pod's
  output shows a Rust panic and a Wasm backtrace after the traceback);
- ready(): tell the pod this sidecar is ready (a native sidecar counts as started then);
- next_event(timeout_ms), try_next_event(), events(): the pod's events; wait_stopping();
- with world `sidecar` only (it imports `main-process`, which the pod grants with
  `shareProcessNamespace: true`; has_main_process() says whether this component has it):
  containers(), stats(name), wait_running(name): the main containers and their live
  statistics; main_logs(name, from_beginning): iterate over a main container's output lines;
  signal(name, signum): signal a main container (also needs `capabilities.add: [KILL]`).
  Built against `sidecar-basic`, these raise NoMainProcess and the rest works in any pod.

Networking is the standard library's: socket (create_connection, create_server, timeouts),
selectors, http.client and urllib.request with http:// URLs all work within what the pod
grants (TCP to the pod's loopback, listening on the sidecar's declared ports; see the README's
"Grants"). There is no `ssl` module: wpod's `tls` interface does TLS in the host.

subscribe_events() and a log stream's subscribe() return wasi:io/poll pollables: put them in
one `poll.poll([...])` with sockets and timers to wait on all at once.

componentize-py runs app.py once at build time and snapshots the interpreter: a module nobody
imported by then is not in the component (`import json` inside a function fails at run time
with ModuleNotFoundError unless app.py also imports it at the top). The imports below bring in
what the standard library imports lazily on its networking paths.
"""

from __future__ import annotations

import functools
import linecache
import os
import sys
import time
import traceback
from typing import Callable, Iterator, List, Optional

# socket.getaddrinfo (so create_connection, http.client, urllib) encodes host names with the
# `idna` codec, which the codec registry imports on first use: without these, every connect
# fails with "LookupError: unknown encoding: idna".
import encodings.idna  # noqa: F401
import encodings.punycode  # noqa: F401  (idna's, for non-ASCII names)

from componentize_py_types import Err  # noqa: F401  (raised by stats, logs, signal)
from wit_world.imports import lifecycle, poll

try:
    # In world `sidecar`; absent from `sidecar-basic`, which runs in any pod.
    from wit_world.imports import main_process
except ImportError:
    main_process = None

Event = lifecycle.Event


class NoMainProcess(RuntimeError):
    """A main-process helper called in a component built without `main-process`."""


def has_main_process() -> bool:
    """Whether this component imports `main-process` (world `sidecar`). If it does, the pod
    grants it: wpod refuses to start a sidecar whose pod does not."""
    return main_process is not None


def _main_process():
    if main_process is None:
        raise NoMainProcess(
            "this component was built without wpod:sidecar/main-process: build it with "
            "`-w wpod:sidecar/sidecar` and set `shareProcessNamespace: true` in its pod"
        )
    return main_process


def entrypoint(run: Callable[..., None]) -> Callable[..., None]:
    """Decorates `Run.run`. An uncaught exception prints its Python traceback to stderr and the
    sidecar exits with code 1 (reason Error) rather than trapping; `sys.exit()` and
    `sys.exit(0)` exit with 0, any other `sys.exit(...)` with 1 (WASI's exit carries success or
    failure only), printing its message if it has one."""
    _keep_sources(run)

    @functools.wraps(run)
    def wrapper(*args, **kwargs) -> None:
        try:
            run(*args, **kwargs)
            return
        except SystemExit as e:
            if e.code is None or e.code == 0:
                return
            if not isinstance(e.code, int):
                _flush()
                print(e.code, file=sys.stderr)
        except BaseException as e:
            _flush()
            # From the app's own frame on: this wrapper's is noise.
            tb = e.__traceback__
            traceback.print_exception(type(e), e, tb.tb_next if tb and tb.tb_next else tb)
        finally:
            _flush()
        # run's error result: the host ends the sidecar with exit code 1, no trap.
        raise Err(None)

    return wrapper


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _keep_sources(run: Callable[..., None]) -> None:
    """Puts the sources of the app's own modules into linecache while they can still be read
    (at build time), so that tracebacks show each line's code: the component has no .py
    files at run time. Entries without an mtime are kept as they are (linecache's own rule for
    sources that came from a loader)."""
    try:
        here = os.path.dirname(run.__code__.co_filename)
        files = {run.__code__.co_filename, __file__}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and os.path.dirname(path) == here:
                files.add(path)
        for path in files:
            if path.endswith(".py") and path not in linecache.cache:
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
                linecache.cache[path] = (sum(map(len, lines)), None, lines, path)
    except Exception:
        pass  # tracebacks then show file and line numbers only


def ready() -> None:
    lifecycle.ready()


def containers() -> List[main_process.Info]:
    return _main_process().containers()


def wait_running(name: str, timeout_ms: int = 5000) -> bool:
    """Waits until main container `name` runs (its output can come a moment before the pod
    records it as running); whether it does. Consumes the pod events that come meanwhile
    (`stopping` stays: every later call returns it again)."""
    mp = _main_process()
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            if mp.get(name).state == mp.State.RUNNING:
                return True
        except Err:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        lifecycle.next_event(max(1, min(100, int(left * 1000))))


def stats(name: str) -> main_process.ProcessStats:
    return _main_process().stats(name)


def signal(name: str, signum: int) -> None:
    _main_process().signal(name, signum)


def main_logs(name: str, from_beginning: bool = True) -> Iterator[main_process.LogLine]:
    """The container's lines, waiting for each; ends when it has exited and all were read."""
    mp = _main_process()
    start = mp.LogStart.BEGINNING if from_beginning else mp.LogStart.NOW
    stream = mp.logs(name, start)
    ready = stream.subscribe()
    try:
        while True:
            lines = stream.try_next(64)
            if not lines:
                poll.poll([ready])
                lines = stream.try_next(64)
                if not lines:
                    return
            yield from lines
    finally:
        # The pollable is the stream's child: dropped first, also when the caller stops early.
        ready.__exit__(None, None, None)
        stream.__exit__(None, None, None)


def next_event(timeout_ms: int) -> Optional[lifecycle.Event]:
    return lifecycle.next_event(timeout_ms)


def try_next_event() -> Optional[lifecycle.Event]:
    return lifecycle.try_next_event()


def subscribe_events() -> poll.Pollable:
    return lifecycle.subscribe()


def events() -> Iterator[lifecycle.Event]:
    """The pod's events, waiting for each."""
    ready = lifecycle.subscribe()
    try:
        while True:
            event = lifecycle.try_next_event()
            if event is None:
                poll.poll([ready])
                continue
            yield event
    finally:
        ready.__exit__(None, None, None)


def wait_stopping() -> int:
    """Waits for the pod to stop this sidecar; the milliseconds it has left."""
    for event in events():
        if isinstance(event, lifecycle.Event_Stopping):
            return event.value
    return 0
