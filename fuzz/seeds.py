#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Seeds are small valid (and a few deliberately hostile) inputs the fuzzer mutates from; what
the runs found is merged next to them with `fuzz/run.sh --merge TARGET`. Re-running this
script rewrites the seeds only."""
import glob
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def tar_of(members, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.mode = m.get("mode", 0o644)
            info.uid = m.get("uid", 0)
            info.gid = m.get("gid", 0)
            info.linkname = m.get("link", "")
            info.devmajor = m.get("major", 0)
            info.devminor = m.get("minor", 0)
            info.pax_headers = m.get("pax", {})
            data = m.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
layers = {
    "rootfs": [
        {"name": "bin/", "type": D, "mode": 0o755},
        {"name": "bin/sh", "data": b"#!sh\n", "mode": 0o755},
        {"name": "bin/ls", "type": H, "link": "bin/sh"},
        {"name": "etc/", "type": D},
        {"name": "etc/passwd", "data": b"root:x:0:0::/root:/bin/sh\n"},
        {"name": "tmp/", "type": D, "mode": 0o1777},
        {"name": "usr/bin/env", "type": L, "link": "/bin/sh"},
    ],
    "whiteouts": [
        {"name": "etc/", "type": D},
        {"name": "etc/.wh.passwd"},
        {"name": "var/.wh..wh..opq"},
        {"name": "var/new", "data": b"x"},
    ],
    "traversal": [
        {"name": "../outside/dotdot", "data": b"x"},
        {"name": "/outside/absolute", "data": b"x"},
        {"name": "link", "type": L, "link": "../outside"},
        {"name": "link/through-symlink", "data": b"x"},
        {"name": "abs", "type": L, "link": "/"},
        {"name": "abs/etc/shadow", "data": b"x"},
        {"name": "hard", "type": H, "link": "../outside/x"},
    ],
    "special": [
        {"name": "dev/", "type": D},
        {"name": "dev/null", "type": tarfile.CHRTYPE, "major": 1, "minor": 3, "mode": 0o666},
        {"name": "dev/fifo", "type": tarfile.FIFOTYPE},
        {"name": "suid", "data": b"x", "mode": 0o4755, "uid": 1000, "gid": 1000},
    ],
    "pax": [
        {"name": "a" * 200 + "/long-name", "data": b"long", "pax": {"SCHILY.xattr.user.k": "v"}},
        {"name": "xattr", "data": b"x", "pax": {"SCHILY.xattr.trusted.overlay.opaque": "y"}},
        {"name": "replaced", "data": b"file"},
        {"name": "replaced/", "type": D},
    ],
}
for name, members in layers.items():
    fmt = tarfile.PAX_FORMAT if name == "pax" else tarfile.GNU_FORMAT
    body = tar_of(members, fmt)
    for mode in (0, 1, 6):
        write("unpack", f"{name}-{mode}", bytes([mode]) + body)

for i, r in enumerate([
    "busybox", "busybox:1.36", "docker.io/library/busybox:latest", "library/alpine",
    "localhost:5000/team/app:v1", "127.0.0.1:5000/x", "[::1]:5000/x/y:z",
    "ghcr.io/org/repo@sha256:" + "a" * 64,
    "registry.example.com:443/a/b/c:tag@sha256:" + "0" * 64,
    "Busybox", "a//b", "a:", "@sha256:", "a__b-c.d/e:" + "t" * 128,
]):
    write("reference", str(i), r)

digest = "sha256:" + "1" * 64
desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 32}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 7},
            "layers": [desc], "annotations": {"a": "b"}}
docker_manifest = dict(manifest, mediaType="application/vnd.docker.distribution.manifest.v2+json")
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 9,
                        "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                       {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 9,
                        "platform": {"os": "linux", "architecture": "amd64"}}]}
bare_index = {"schemaVersion": 2, "manifests": index["manifests"]}
config = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
                     "User": "1000:1000", "WorkingDir": "/", "ExposedPorts": {"80/tcp": {}},
                     "StopSignal": "SIGINT", "Labels": {"a": "b"}},
          "rootfs": {"type": "layers", "diff_ids": [digest, "sha256:zz"]},
          "history": [{"created_by": "x", "empty_layer": True}]}
for i, (kind, doc) in enumerate([(0, manifest), (3, docker_manifest), (0, index), (6, bare_index), (1, manifest),
                  (1, docker_manifest), (2, config), (0, {"schemaVersion": 1}), (2, {})]):
    write("manifest", f"{kind}-{i}", bytes([kind]) + json.dumps(doc).encode())

for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))):
    with open(path, "rb") as f:
        write("spec", os.path.basename(path), f.read())
write("spec", "anchors.yaml", "version: v1\ndeployment: d\nservices:\n  a: &x\n    image: busybox\n  b: *x\n")
write("spec", "bad.yaml", "version: v1\ndeployment: d\nservices:\n  a:\n    image: [\n")

create = {"image": "busybox", "name": "c1", "cmd": ["true"], "env": ["A=b"], "memory": 67108864,
          "cpus": 0.5, "volumes": ["data:/data:ro", "/tmp:/host"], "tmpfs": ["/run:size=64k"],
          "ulimits": ["nofile=1024:2048"], "publish": ["127.0.0.1:8080:80/tcp"],
          "add_hosts": ["db:10.0.0.2"], "dns": ["1.1.1.1"], "labels": {"a": "b"},
          "workdir": "/", "stop_signal": "SIGTERM", "pull": "never"}
with open(os.path.join(ROOT, "examples", "demo.yaml")) as f:
    demo = f.read()
bodies = [
    (0, create), (0, {"image": "x", "nope": 1}), (1, {"source": demo, "file": "demo.yaml", "base_dir": "/",
                                                      "host_env": {}, "dry_run": True}),
    (2, {"reference": "busybox", "platform": "linux/arm64/v8"}), (3, {"service": "d/web", "replicas": 3}),
    (4, {"name": "vol"}), (5, {"name": "net", "subnet": "10.230.0.0/16"}),
    (6, {"args": ["sh"], "env": ["A=1"], "user": "0", "cwd": "/", "stdin": True}),
    (7, {"path": "/tmp/x.tar"}), (8, {"reference": "busybox", "dir": "/tmp/x"}),
]
for i, (route, body) in enumerate(bodies):
    write("api_json", f"{route}-{i}", bytes([route]) + json.dumps(body).encode())
