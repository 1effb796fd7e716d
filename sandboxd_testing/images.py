"""Build test images without a registry: layer tars from entries or host files, written as a
``docker save`` tarball (legacy or blobs/ layout) or an OCI image layout (directory or tar).

Used by the unit and integration tests of sandboxd.images (tests/unit/images/,
tests/integration/test_images.py) and by bench/bench_images.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    """One tar member: kind is file, dir, symlink, hardlink, chr, blk or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # link target
    source: str = ""  # a host file whose bytes are the data (streamed)
    uid: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def add_entry(tar: tarfile.TarFile, e: Entry) -> None:
    info = tarfile.TarInfo(e.name)
    info.mode = e.mode
    info.uid = info.gid = e.uid
    info.mtime = 1_700_000_000
    info.pax_headers = dict(e.pax)
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}
    info.type = types[e.kind]
    if e.kind in ("symlink", "hardlink"):
        info.linkname = e.target
    if e.kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    if e.kind == "file" and e.source:
        info.size = os.path.getsize(e.source)
        with open(e.source, "rb") as f:
            tar.addfile(info, f)
    elif e.kind == "file":
        info.size = len(e.data)
        tar.addfile(info, io.BytesIO(e.data))
    else:
        tar.addfile(info)


def write_layer(path: Path, entries: list[Entry], compress: bool = False) -> Path:
    """A layer tar (PAX format, as docker writes), optionally gzip-compressed."""
    raw = open(path, "wb")  # noqa: SIM115 - closed below
    out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) if compress else raw
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            add_entry(tar, e)
    if compress:
        out.close()
    raw.close()
    return path


def layer_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            add_entry(tar, e)
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def diff_id(path: Path) -> str:
    """sha256 of the uncompressed tar."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def host_arch() -> str:
    from sandboxd.images._source import host_arch as arch

    return arch()


def config(layers: list[Path], *, env: list[str] | None = None, cmd: list[str] | None = None,
           entrypoint: list[str] | None = None, workdir: str = "",
           diff_ids: list[str] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "architecture": host_arch(), "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Env": env or ["PATH=/usr/bin:/bin"], "Cmd": cmd, "Entrypoint": entrypoint,
                   "WorkingDir": workdir},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [diff_id(p) for p in layers]},
    }
    return json.dumps(doc, sort_keys=True).encode()


@dataclass
class BuiltImage:
    name: str
    layers: list[Path]
    config: bytes

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def _pack_dir(directory: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(directory.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(directory)), recursive=False)
    return out


def write_docker_save(out: Path, images: list[BuiltImage], *, legacy: bool = True,
                      as_tar: bool = True) -> Path:
    """docker save: legacy (<id>/layer.tar, <hex>.json) or Docker 25's blobs/sha256 layout."""
    d = out.with_name(out.name + ".d")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    manifest = []
    for img in images:
        cfg_hex = img.id.split(":")[1]
        if legacy:
            cfg_name = f"{cfg_hex}.json"
        else:
            (d / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            cfg_name = f"blobs/sha256/{cfg_hex}"
        (d / cfg_name).write_bytes(img.config)
        names = []
        for layer in img.layers:
            h = sha256_file(layer).split(":")[1]
            name = f"{h}/layer.tar" if legacy else f"blobs/sha256/{h}"
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            if not (d / name).exists():
                shutil.copyfile(layer, d / name)
            names.append(name)
        manifest.append({"Config": cfg_name, "RepoTags": [img.name] if img.name else None,
                         "Layers": names})
    (d / "manifest.json").write_text(json.dumps(manifest))
    if not as_tar:
        return d
    _pack_dir(d, out)
    shutil.rmtree(d)
    return out


def write_oci(out: Path, images: list[BuiltImage], *, as_tar: bool = False,
              ref_key: str = "io.containerd.image.name") -> Path:
    """An OCI image layout; layers as given (gzip ones get the +gzip media type)."""
    d = out if not as_tar else out.with_name(out.name + ".d")
    shutil.rmtree(d, ignore_errors=True)
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (d / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def put(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    entries = []
    for img in images:
        layers = []
        for layer in img.layers:
            digest = sha256_file(layer)
            target = blobs / digest.split(":")[1]
            if not target.exists():
                shutil.copyfile(layer, target)
            gz = layer.read_bytes()[:2] == b"\x1f\x8b"
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar"
                           + ("+gzip" if gz else ""), "digest": digest,
                           "size": layer.stat().st_size})
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               **put(img.config)},
                    "layers": layers}
        desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                **put(json.dumps(manifest).encode())}
        if img.name:
            desc["annotations"] = {ref_key: img.name}
        entries.append(desc)
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    if not as_tar:
        return d
    _pack_dir(d, out)
    shutil.rmtree(d)
    return out


# ------------------------------------------------------------ host binaries


def host_closure(programs: list[str]) -> list[str]:
    """Host paths of ``programs`` and the shared libraries ``ldd`` says they load."""
    paths: list[str] = []
    for prog in programs:
        path = shutil.which(prog) or prog
        paths.append(path)
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            for p in parts:
                if p.startswith("/") and os.path.exists(p):
                    paths.append(p)
    return list(dict.fromkeys(paths))


def host_entries(paths: list[str]) -> list[Entry]:
    """Entries that reproduce each host path in a layer, symlinks along the way included
    (on a merged-/usr host /bin is a link to usr/bin, and ld.so's path is a link too)."""
    entries: dict[str, Entry] = {}

    def add(path: str, depth: int = 0) -> None:
        if depth > 16:
            return
        parts = path.strip("/").split("/")
        cur = ""
        for i, part in enumerate(parts):
            cur = f"{cur}/{part}"
            if os.path.islink(cur):
                target = os.readlink(cur)
                entries.setdefault(cur[1:], Entry(cur[1:], "symlink", target=target))
                rest = "/".join(parts[i + 1:])
                resolved = os.path.normpath(os.path.join(os.path.dirname(cur), target))
                add(resolved + ("/" + rest if rest else ""), depth + 1)
                return
            if i < len(parts) - 1:
                entries.setdefault(cur[1:], Entry(cur[1:], "dir", mode=0o755))
        st = os.stat(cur)
        entries.setdefault(cur[1:], Entry(cur[1:], "file", mode=st.st_mode & 0o7777,
                                          source=cur))

    for p in paths:
        add(os.path.abspath(p))
    # Parents before children, as tar writers emit them.
    return sorted(entries.values(), key=lambda e: (e.name.count("/"), e.name))


def tree_entries(root: str) -> list[Entry]:
    """Entries for a host directory tree (directories, regular files, symlinks), by path."""
    out: list[Entry] = []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        rel = top.lstrip("/")
        out.append(Entry(rel, "dir", mode=os.stat(top).st_mode & 0o7777))
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            if os.path.islink(path):
                out.append(Entry(f"{rel}/{name}", "symlink", target=os.readlink(path)))
            elif os.path.isfile(path) and os.access(path, os.R_OK):
                out.append(Entry(f"{rel}/{name}", "file", mode=os.stat(path).st_mode & 0o7777,
                                 source=path))
    return out
