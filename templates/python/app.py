"""{{name}}: a wpod sidecar in Python. It reads the main container's first line of output and
its live statistics, tells the pod it is ready, and stops cleanly when the pod stops: a
starting point. wpod_sidecar.py lists what else it can do."""

import wpod_sidecar
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        wpod_sidecar.ready()
        print("{{name}}: ready", flush=True)
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
        ms = wpod_sidecar.wait_stopping()
        print(f"{{name}}: stopping ({ms} ms left)", flush=True)
