"""{{name}}: a wpod sidecar in Python. It tells the pod it is ready, reads the main container's
first line of output and its live statistics, and stops cleanly when the pod stops: a starting
point. wpod_sidecar.py lists what else it can do (and that the standard library's socket,
http.client and urllib work, within what the pod grants).

Import every module you use at the top of a file: componentize-py keeps only the modules that
were imported when it built the component."""

import wpod_sidecar
from wit_world import exports


def watch_main() -> None:
    """The main container's first line and statistics: needs world `sidecar` (main-process),
    which the pod grants with `shareProcessNamespace: true`."""
    mains = wpod_sidecar.containers()
    if not mains:
        print("{{name}}: the pod has no main container to watch", flush=True)
        return
    main = mains[0].name
    for line in wpod_sidecar.main_logs(main, from_beginning=True):
        print(f"{{name}}: {main} said {line.text!r}", flush=True)
        break
    wpod_sidecar.wait_running(main)
    try:
        s = wpod_sidecar.stats(main)
        print(f"{{name}}: {main} uses {s.rss_bytes // 1024} KiB of memory and {s.threads} threads", flush=True)
    except wpod_sidecar.Err as e:
        print(f"{{name}}: no statistics for {main}: {e.value}", flush=True)


class Run(exports.Run):
    @wpod_sidecar.entrypoint  # an exception prints its traceback and exits 1
    def run(self) -> None:
        wpod_sidecar.ready()
        print("{{name}}: ready", flush=True)
        if wpod_sidecar.has_main_process():
            watch_main()
        else:
            print("{{name}}: built with world sidecar-basic: not watching the main container", flush=True)
        ms = wpod_sidecar.wait_stopping()
        print(f"{{name}}: stopping ({ms} ms left)", flush=True)
