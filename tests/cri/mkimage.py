#!/usr/bin/python3
"""Write a single-layer OCI image archive from local files, offline and reproducibly.

The archive is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...),
which `ctr -n k8s.io images import` accepts. The layer is an uncompressed tar with every
entry owned by 0:0 and mtime 0, entries sorted, so the same input gives the same digest.

  mkimage.py --out img.tar --name localhost/busybox:offline \
      --rootfs DIR            # a directory tree copied as the image's / (optional)
      --add SRC:DEST[:MODE]   # one host file at DEST (repeatable)
      --symlink DEST:TARGET   # a symlink (repeatable)
      --dir DEST[:MODE]       # an empty directory (repeatable)
      --entrypoint '["/pause"]' --cmd '[]' --env K=V --user 65534:65534 \
      --workdir / --stop-signal SIGTERM --label k=v

Prints a JSON line: {"name", "manifest_digest", "config_digest", "layer_digest", "out"}.
"""
import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile


class Layer:
    def __init__(self):
        self.entries = {}  # path (no leading /) -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode):
        ti = tarfile.TarInfo(path)
        ti.type = kind
        ti.mode = mode
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 0
        return ti

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.entries[p] = (self._info(p, tarfile.DIRTYPE, 0o755), None)

    def add_dir(self, dest, mode=0o755):
        p = dest.strip("/")
        if not p:
            return
        self._parents(p)
        self.entries[p] = (self._info(p, tarfile.DIRTYPE, mode), None)

    def add_file(self, dest, data, mode):
        p = dest.strip("/")
        self._parents(p)
        ti = self._info(p, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.entries[p] = (ti, data)

    def add_symlink(self, dest, target):
        p = dest.strip("/")
        self._parents(p)
        ti = self._info(p, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.entries[p] = (ti, None)

    def add_tree(self, root):
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                self.add_dir(rel, stat.S_IMODE(os.lstat(dirpath).st_mode))
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                full = os.path.join(dirpath, name)
                relp = os.path.normpath(os.path.join(rel, name))
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(relp, os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        self.add_file(relp, f.read(), stat.S_IMODE(st.st_mode))
                else:
                    sys.exit(f"mkimage: unsupported file type: {full}")

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path in sorted(self.entries):
                ti, data = self.entries[path]
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def blob(blobs, data):
    d = hashlib.sha256(data).hexdigest()
    blobs["sha256:" + d] = data
    return {"digest": "sha256:" + d, "size": len(data)}


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True, help="full image reference, e.g. localhost/pause:offline")
    ap.add_argument("--rootfs")
    ap.add_argument("--add", action="append", default=[])
    ap.add_argument("--symlink", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--stop-signal")
    ap.add_argument("--label", action="append", default=[])
    a = ap.parse_args()

    layer = Layer()
    if a.rootfs:
        layer.add_tree(a.rootfs)
    for d in a.dir:
        dest, _, mode = d.partition(":")
        layer.add_dir(dest, int(mode, 8) if mode else 0o755)
    for spec in a.add:
        parts = spec.split(":")
        if len(parts) < 2:
            sys.exit(f"mkimage: --add wants SRC:DEST[:MODE], got {spec}")
        src, dest = parts[0], parts[1]
        with open(src, "rb") as f:
            data = f.read()
        mode = int(parts[2], 8) if len(parts) > 2 else stat.S_IMODE(os.stat(src).st_mode)
        layer.add_file(dest, data, mode)
    for spec in a.symlink:
        dest, _, target = spec.partition(":")
        layer.add_symlink(dest, target)

    blobs = {}
    layer_tar = layer.tar_bytes()
    layer_desc = blob(blobs, layer_tar)
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar"

    cfg = {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if a.entrypoint is not None:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd is not None:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.stop_signal:
        cfg["StopSignal"] = a.stop_signal
    if a.label:
        cfg["Labels"] = dict(l.split("=", 1) for l in a.label)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cri/mkimage.py"}],
    }
    config_desc = blob(blobs, canon(config))
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(blobs, canon(manifest))
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": a.name,
        "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1] if ":" in a.name.split("/")[-1] else "latest",
    }
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}

    outer = Layer()
    outer.add_file("oci-layout", canon({"imageLayoutVersion": "1.0.0"}), 0o644)
    outer.add_file("index.json", canon(index), 0o644)
    for d, data in blobs.items():
        outer.add_file("blobs/sha256/" + d.split(":", 1)[1], data, 0o644)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(outer.tar_bytes())
    os.replace(tmp, a.out)
    print(json.dumps({
        "name": a.name,
        "manifest_digest": manifest_desc["digest"],
        "config_digest": config_desc["digest"],
        "layer_digest": layer_desc["digest"],
        "out": a.out,
    }))


if __name__ == "__main__":
    main()
