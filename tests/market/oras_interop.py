#!/usr/bin/env python3
"""Interop with an independent OCI client, PyPI's `oras` (oras-py):

    oras_interop.py pull REF OUTDIR               pull what `wpod push` wrote; print the files
    oras_interop.py push REF COMPONENT.wasm CONFIG.json   push a sidecar in the CNCF layout
"""

import os
import sys

import oras.provider


def registry(ref):
    return oras.provider.Registry(hostname=ref.split("/", 1)[0], insecure=True)


def main():
    cmd, ref = sys.argv[1], sys.argv[2]
    if cmd == "pull":
        outdir = sys.argv[3]
        files = registry(ref).pull(target=ref, outdir=outdir)
        for f in files:
            print(f)
        return 0
    component, config = sys.argv[3], sys.argv[4]
    # oras-py names each file by its path: push from the files' directory.
    os.chdir(os.path.dirname(os.path.abspath(component)))
    registry(ref).push(
        target=ref,
        files=[f"{os.path.basename(component)}:application/wasm"],
        manifest_config=f"{os.path.abspath(config)}:application/vnd.wasm.config.v0+json",
        disable_path_validation=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
