#!/usr/bin/env python3
"""Writes a tiny OCI image layout (one layer holding /hello.txt) to DIR, for
`skopeo copy oci:DIR docker://…` in tokend's end-to-end tests.

    oci_image.py DIR [TEXT]
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

DIR = sys.argv[1]
TEXT = (sys.argv[2] if len(sys.argv) > 2 else "hello from tokend's tests\n").encode()


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(DIR, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def main():
    os.makedirs(os.path.join(DIR, "blobs", "sha256"), exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(TEXT), 0, 0o644
        tar.addfile(info, io.BytesIO(TEXT))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"org.example.tokend-test": "1"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": blob(layer), "size": len(layer)}],
    }).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}
    with open(os.path.join(DIR, "index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f)
    with open(os.path.join(DIR, "oci-layout"), "w", encoding="utf-8") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
