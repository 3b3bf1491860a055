#!/usr/bin/env python3
"""An independent implementation of cosign's keyed signatures (simple signing, ECDSA P-256 /
SHA-256, the sha256-<hex>.sig tag), written from the formats alone with Python's
`cryptography` (OpenSSL) and the registry's HTTP API: what wpod signs must verify here, and
what this signs must verify in wpod.

    cosign.py verify REGISTRY REPOSITORY DIGEST KEY.pub
    cosign.py sign   REGISTRY REPOSITORY DIGEST KEYBASE   (writes KEYBASE.pub, signs with a new key)

`sign` writes the identity cosign writes: the repository alone (`REGISTRY/REPOSITORY`, no tag or
digest). containers-policy.json(5)'s default signedIdentity (matchRepoDigestOrExact) refuses
such an identity, as podman does; a policy that accepts cosign's signatures says
`"signedIdentity": {"type": "matchRepository"}`. wpod itself signs `REPOSITORY:TAG`.
"""

import base64
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def get(url, accept="*/*"):
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return r.read()


def put_blob(registry, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(req) as r:
        location = r.headers["Location"]
    if not location.startswith("http"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    req = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).close()
    return digest


def verify(registry, repo, digest, pub):
    key = serialization.load_pem_public_key(open(pub, "rb").read())
    tag = "sha256-" + digest.split(":", 1)[1] + ".sig"
    manifest = json.loads(get(f"http://{registry}/v2/{repo}/manifests/{tag}", MANIFEST))
    for layer in manifest["layers"]:
        if layer["mediaType"] != SIMPLE_SIGNING:
            continue
        payload = get(f"http://{registry}/v2/{repo}/blobs/{layer['digest']}")
        assert hashlib.sha256(payload).hexdigest() == layer["digest"].split(":", 1)[1]
        sig = base64.b64decode(layer["annotations"][ANNOTATION])
        try:
            key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
        except Exception:
            continue
        p = json.loads(payload)
        assert p["critical"]["type"] == "cosign container image signature", p
        assert p["critical"]["image"]["docker-manifest-digest"] == digest, p
        print(f"verified: {digest} signed by {pub}")
        return 0
    print(f"no signature of {digest} verifies with {pub}", file=sys.stderr)
    return 1


def sign(registry, repo, digest, keybase):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(keybase + ".pub", "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    payload = json.dumps({
        "critical": {
            # Repository-only, as cosign writes it (see the module docstring).
            "identity": {"docker-reference": f"{registry}/{repo}"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "tests/market/cosign.py"},
    }, separators=(",", ":")).encode()
    sig = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    payload_digest = put_blob(registry, repo, payload)
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [payload_digest]}}).encode()
    config_digest = put_blob(registry, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": SIMPLE_SIGNING, "digest": payload_digest, "size": len(payload),
                    "annotations": {ANNOTATION: sig}}],
    }).encode()
    tag = "sha256-" + digest.split(":", 1)[1] + ".sig"
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", data=manifest,
                                 method="PUT", headers={"Content-Type": MANIFEST})
    urllib.request.urlopen(req).close()
    print(f"signed {digest} with {keybase}.pub")
    return 0


if __name__ == "__main__":
    cmd, registry, repo, digest, key = sys.argv[1:6]
    sys.exit(verify(registry, repo, digest, key) if cmd == "verify" else sign(registry, repo, digest, key))
