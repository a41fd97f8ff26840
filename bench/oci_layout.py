#!/usr/bin/env python3
"""OCI image layouts for the node benchmarks (gzip layers, mtime 0).

    oci_layout.py busybox DIR             one layer with /bin/busybox; Cmd: busybox true
    oci_layout.py random DIR LAYERS MIB   LAYERS layers of MIB MiB of random 256 KiB files
    oci_layout.py layered DIR LAYERS      busybox, then LAYERS-1 layers of one small file each
"""
import gzip, hashlib, io, json, os, sys, tarfile


def layout(root, layers, cmd):
    """Writes an OCI layout at `root` tagged v1: `layers` is a list of [(path, bytes, mode)]."""
    os.makedirs(f"{root}/blobs/sha256", exist_ok=True)

    def put(b):
        d = hashlib.sha256(b).hexdigest()
        with open(f"{root}/blobs/sha256/{d}", "wb") as f:
            f.write(b)
        return {"digest": "sha256:" + d, "size": len(b)}

    descs, diffs = [], []
    for files in layers:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path, data, mode in files:
                ti = tarfile.TarInfo(path)
                ti.size, ti.mode, ti.mtime = len(data), mode, 0
                t.addfile(ti, io.BytesIO(data))
        raw = raw.getvalue()
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        descs.append(dict(put(gzip.compress(raw, 1, mtime=0)),
                          mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
           "rootfs": {"type": "layers", "diff_ids": diffs},
           # One history entry per layer: buildah refuses images whose history does not add up.
           "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
                       for i in range(len(diffs))]}
    c = dict(put(json.dumps(cfg).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": c, "layers": descs}).encode()
    md = dict(put(m), mediaType="application/vnd.oci.image.manifest.v1+json",
              annotations={"org.opencontainers.image.ref.name": "v1"})
    with open(f"{root}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [md]}, f)
    with open(f"{root}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


if __name__ == "__main__":
    kind, root = sys.argv[1], sys.argv[2]
    if kind == "busybox":
        with open("/bin/busybox", "rb") as f:
            layout(root, [[("bin/busybox", f.read(), 0o755)]], ["/bin/busybox", "true"])
    elif kind == "layered":
        with open("/bin/busybox", "rb") as f:
            bb = [("bin/busybox", f.read(), 0o755)]
        n = int(sys.argv[3])
        layout(root, [bb] + [[(f"etc/layer{i}", b"%d\n" % i, 0o644)] for i in range(1, n)],
               ["/bin/busybox", "true"])
    else:
        n, mib = int(sys.argv[3]), int(sys.argv[4])
        layout(root, [[(f"data/l{i}/f{j}", os.urandom(256 << 10), 0o644) for j in range(mib * 4)]
                      for i in range(n)], ["/bin/true"])
