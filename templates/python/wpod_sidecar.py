"""wpod_sidecar: write wpod sidecars in Python (componentize-py).

Helpers over wpod's own interfaces (wit/sidecar.wit, wpod:sidecar@{{wit_version}}), as the Rust
SDK has them:

- ready(): tell the pod this sidecar is ready (a native sidecar counts as started then);
- containers(), stats(name), wait_running(name): the main containers and their live
  statistics (granted by the pod's `shareProcessNamespace: true`);
- main_logs(name, from_beginning): iterate over a main container's output lines;
- signal(name, signum): signal a main container (also needs `capabilities.add: [KILL]`);
- next_event(timeout_ms), try_next_event(), events(): the pod's events; wait_stopping().

subscribe_events() and a log stream's subscribe() return wasi:io/poll pollables: put them in
one `poll.poll([...])` with sockets and timers to wait on all at once.
"""

from typing import Iterator, List, Optional

from componentize_py_types import Err  # noqa: F401  (raised by stats, logs, signal)
from wit_world.imports import lifecycle, main_process, poll

Event = lifecycle.Event


def ready() -> None:
    lifecycle.ready()


def containers() -> List[main_process.Info]:
    return main_process.containers()


def wait_running(name: str, timeout_ms: int = 5000) -> bool:
    """Waits until main container `name` runs (its output can come a moment before the pod
    records it as running); whether it does. Consumes the pod events that come meanwhile
    (`stopping` stays: every later call returns it again)."""
    import time
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            if main_process.get(name).state == main_process.State.RUNNING:
                return True
        except Err:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        lifecycle.next_event(max(1, min(100, int(left * 1000))))


def stats(name: str) -> main_process.ProcessStats:
    return main_process.stats(name)


def signal(name: str, signum: int) -> None:
    main_process.signal(name, signum)


def main_logs(name: str, from_beginning: bool = True) -> Iterator[main_process.LogLine]:
    """The container's lines, waiting for each; ends when it has exited and all were read."""
    start = main_process.LogStart.BEGINNING if from_beginning else main_process.LogStart.NOW
    stream = main_process.logs(name, start)
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
