"""Read what an image file holds: a ``docker save`` tarball or an OCI image layout.

Strategy: a *source* gives blobs by their path in the layout, from a
directory or from a tar (read in place: tar members are found by name and
read through ``tarfile``, never extracted; a compressed tar is first
decompressed beside the store). ``read_images`` walks the format's manifests
down to each image's configuration and layer list, verifying every blob it
reads against the digest and size its parent names; a layer's blob is only
opened later, by the importer, through ``BlobReader``, which verifies it as
it streams. Docker's legacy layout names a layer by its directory, not its
digest: such a layer is verified by its diff_id alone, which the (verified)
configuration names.

Every JSON document is bounded in size; every name that comes from a
manifest is a path inside the source, never outside it.

This module knows nothing of the store or of unpacking.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import platform
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from sandboxd.images._layer import normalize
from sandboxd.images._model import (
    ImageConfig,
    ImageError,
    ImportLimits,
    check_digest,
    parse_name,
)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZ2_MAGIC = b"BZh"

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json"}
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_BLOB_RE = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_LEGACY_CONFIG_RE = re.compile(r"([0-9a-f]{64})\.json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


class Source(Protocol):
    """Blobs of an image file, by their path inside it."""

    def exists(self, name: str) -> bool: ...
    def open(self, name: str) -> IO[bytes]: ...
    def size(self, name: str) -> int: ...
    def close(self) -> None: ...


class DirSource:
    """An OCI layout (or an unpacked ``docker save``) in a directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, normalize(name, "blob path"))

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> IO[bytes]:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"blob {name!r}: {e.strerror}") from None
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise ImageError(f"blob {name!r} is not a regular file")
        return f

    def size(self, name: str) -> int:
        return os.lstat(self._path(name)).st_size

    def close(self) -> None:
        pass


class TarSource:
    """A tar read in place: members are found by name and read, never extracted."""

    def __init__(self, path: str) -> None:
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{path}: not a tar archive or an OCI layout directory ({e})") \
                from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                self.members["/".join(p for p in member.name.split("/") if p not in ("", "."))] \
                    = member
        except (tarfile.TarError, EOFError) as e:
            self.tar.close()
            raise ImageError(f"{path}: damaged tar archive ({e})") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        key = normalize(name, "blob path")
        for _ in range(8):  # docker save links duplicate layers to their first copy
            member = self.members.get(key)
            if member is None:
                raise ImageError(f"the archive has no {name!r}")
            if member.isreg():
                return member
            if member.issym():
                key = os.path.normpath(os.path.join(os.path.dirname(key), member.linkname))
            elif member.islnk():
                key = os.path.normpath(member.linkname)
            else:
                break
            if key.startswith(("../", "/")) or key == "..":
                break
        raise ImageError(f"{name!r} in the archive is not a regular file")

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
        except ImageError:
            return False
        return True

    def open(self, name: str) -> IO[bytes]:
        f = self.tar.extractfile(self._member(name))
        assert f is not None
        return f

    def size(self, name: str) -> int:
        return self._member(name).size

    def close(self) -> None:
        self.tar.close()


def open_source(path: str, scratch: str, limits: ImportLimits) -> Source:
    """The source for ``path``: a directory, a tar, or a compressed tar (decompressed first)."""
    if os.path.isdir(path):
        return DirSource(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    opener: Callable[[str], IO[bytes]] | None = None
    if head.startswith(GZIP_MAGIC):
        opener = gzip.open  # type: ignore[assignment]
    elif head.startswith(XZ_MAGIC):
        opener = lzma.open  # type: ignore[assignment]
    elif head.startswith(BZ2_MAGIC):
        opener = bz2.open  # type: ignore[assignment]
    elif head.startswith(ZSTD_MAGIC):
        raise ImageError(f"{path}: zstd-compressed archives are not supported; "
                         "decompress it first (zstd -d)")
    if opener is None:
        return TarSource(path)
    # Reading a compressed tar by name would decompress it from the start for every
    # member; one pass into a scratch file beside the store costs that once.
    plain = os.path.join(scratch, "source.tar")
    budget = limits.max_image_size + (64 << 20)
    try:
        with opener(path) as src, open(plain, "wb") as dst:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > budget:
                    raise ImageError(f"{path}: decompresses to more than {budget} bytes")
                dst.write(chunk)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ImageError(f"{path}: damaged compressed archive ({e})") from None
    return TarSource(plain)


class BlobReader:
    """A blob as it streams: sha256 and size checked against its descriptor, progress told."""

    def __init__(self, raw: IO[bytes], name: str, digest: str | None, size: int | None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.raw = raw
        self.name = name
        self.expect_digest = digest
        self.expect_size = size
        self.on_bytes = on_bytes
        self.count = 0
        self._hash = hashlib.sha256()
        self._pushback = b""

    def peek(self, n: int) -> bytes:
        while len(self._pushback) < n:
            more = self._read_raw(n - len(self._pushback))
            if not more:
                break
            self._pushback += more
        return self._pushback[:n]

    def _read_raw(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        if self.expect_size is not None and self.count > self.expect_size:
            raise ImageError(f"blob {self.name}: larger than the {self.expect_size} bytes its "
                             "descriptor says")
        self._hash.update(data)
        if self.on_bytes and data:
            self.on_bytes(len(data))
        return data

    def read(self, n: int = -1) -> bytes:
        if self._pushback:
            data = self._pushback if n < 0 else self._pushback[:n]
            self._pushback = self._pushback[len(data):]
            return data
        return self._read_raw(n if n >= 0 else 1 << 20)

    def finish(self) -> None:
        """Read what is left, then compare size and digest; a mismatch is an ImageError."""
        while self.read(1 << 20):
            pass
        if self.expect_size is not None and self.count != self.expect_size:
            raise ImageError(f"blob {self.name}: {self.count} bytes, its descriptor says "
                             f"{self.expect_size}")
        got = "sha256:" + self._hash.hexdigest()
        if self.expect_digest is not None and got != self.expect_digest:
            raise ImageError(f"blob {self.name}: digest mismatch (expected "
                             f"{self.expect_digest}, got {got})")

    def close(self) -> None:
        self.raw.close()


# ------------------------------------------------------------------ manifests


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer as a manifest names it: where its blob is and what it must hash to."""

    blob: str
    digest: str | None  # sha256 of the blob as stored (compressed), when the format names it
    size: int | None
    diff_id: str  # sha256 of the uncompressed tar, from the configuration


@dataclass(frozen=True, slots=True)
class SourceImage:
    id: str  # sha256 of the configuration
    names: tuple[str, ...]
    layers: tuple[LayerRef, ...]  # bottom first
    config: ImageConfig
    architecture: str
    os: str
    created: str


def read_json(src: Source, name: str, limits: ImportLimits, digest: str | None = None,
              size: int | None = None) -> tuple[Any, bytes]:
    """A bounded, verified JSON blob: (parsed, raw bytes)."""
    if size is not None and size > limits.max_json:
        raise ImageError(f"{name}: {size} bytes is too large for a manifest or config")
    with src.open(name) as f:
        data = f.read(limits.max_json + 1)
    if len(data) > limits.max_json:
        raise ImageError(f"{name}: larger than {limits.max_json} bytes")
    if size is not None and len(data) != size:
        raise ImageError(f"{name}: {len(data)} bytes, its descriptor says {size}")
    if digest is not None:
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise ImageError(f"{name}: digest mismatch (expected {digest}, got {got})")
    try:
        return json.loads(data), data
    except ValueError as e:
        raise ImageError(f"{name}: not valid JSON ({e})") from None


def _digest_of_path(name: str) -> str | None:
    """The digest a blob path names: blobs/sha256/HEX, or Docker's legacy HEX.json config."""
    m = _BLOB_RE.fullmatch(name) or _LEGACY_CONFIG_RE.fullmatch(name)
    return f"sha256:{m.group(1)}" if m else None


def _config(raw: bytes, data: Any, where: str, limits: ImportLimits,
            ) -> tuple[str, ImageConfig, tuple[str, ...], dict[str, str]]:
    """(image id, config, diff_ids, facts) of a configuration blob."""
    if not isinstance(data, dict):
        raise ImageError(f"{where}: the image configuration must be an object")
    rootfs = data.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageError(f"{where}: rootfs must be {{type: layers, diff_ids: [...]}}")
    diff_ids = tuple(check_digest(d, f"{where}: diff_id") for d in rootfs["diff_ids"])
    if not diff_ids:
        raise ImageError(f"{where}: the image has no layers")
    if len(set(diff_ids)) > limits.max_layers:
        raise ImageError(f"{where}: {len(set(diff_ids))} distinct layers; at most "
                         f"{limits.max_layers} fit in one overlay mount")
    os_name = data.get("os") or ""
    arch = data.get("architecture") or ""
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise ImageError(f"{where}: os and architecture must be strings")
    if os_name and os_name != "linux":
        raise ImageError(f"{where}: an image for {os_name}, not linux")
    if arch and arch != host_arch():
        raise ImageError(f"{where}: an image for {arch}; this host runs {host_arch()}")
    created = data.get("created") or ""
    facts = {"os": os_name, "architecture": arch,
             "created": created if isinstance(created, str) else ""}
    image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    return image_id, ImageConfig.from_config(data.get("config")), diff_ids, facts


def _names(values: Any, where: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ImageError(f"{where}: RepoTags must be a list of names")
    return tuple(parse_name(v) for v in values)


def _docker(src: Source, limits: ImportLimits) -> list[SourceImage]:
    manifest, _ = read_json(src, "manifest.json", limits)
    if not isinstance(manifest, list) or not manifest:
        raise ImageError("manifest.json: must be a non-empty list of images")
    out = []
    for i, entry in enumerate(manifest):
        where = f"manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list) \
                or not all(isinstance(x, str) for x in entry["Layers"]):
            raise ImageError(f"{where}: needs Config (a path) and Layers (a list of paths)")
        cfg_name = normalize(entry["Config"], "config path")
        data, raw = read_json(src, cfg_name, limits, digest=_digest_of_path(cfg_name))
        image_id, config, diff_ids, facts = _config(raw, data, cfg_name, limits)
        if len(entry["Layers"]) != len(diff_ids):
            raise ImageError(f"{where}: {len(entry['Layers'])} layers, but its configuration "
                             f"lists {len(diff_ids)} diff_ids")
        layers = []
        for blob, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            blob = normalize(blob, "layer path")
            layers.append(LayerRef(blob, _digest_of_path(blob), None, diff_id))
        out.append(SourceImage(image_id, _names(entry.get("RepoTags"), where), tuple(layers),
                               config, facts["architecture"], facts["os"], facts["created"]))
    return out


def _descriptor(d: Any, where: str) -> tuple[str, str, int]:
    if not isinstance(d, dict) or not isinstance(d.get("size"), int) or d["size"] < 0:
        raise ImageError(f"{where}: a descriptor needs digest, size and mediaType")
    digest = check_digest(d.get("digest"), where)
    media = d.get("mediaType") or ""
    if not isinstance(media, str):
        raise ImageError(f"{where}: mediaType must be a string")
    return digest, media, d["size"]


def _blob(digest: str) -> str:
    return f"blobs/sha256/{digest.split(':', 1)[1]}"


def _ref_name(annotations: Any) -> str | None:
    """A full image name from an index entry's annotations (a bare tag is not a name)."""
    if not isinstance(annotations, dict):
        return None
    for key in NAME_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and ("/" in value or ":" in value):
            return parse_name(value)
    return None


def _platform_ok(d: dict[str, Any]) -> bool:
    p = d.get("platform")
    if not isinstance(p, dict):
        return True
    return p.get("os") in (None, "linux") and p.get("architecture") in (None, host_arch())


def _oci_walk(src: Source, desc: Any, where: str, names: tuple[str, ...], limits: ImportLimits,
              depth: int = 0) -> Iterator[SourceImage]:
    digest, media, size = _descriptor(desc, where)
    if depth > 4:
        raise ImageError(f"{where}: indexes nested too deep")
    data, _ = read_json(src, _blob(digest), limits, digest, size)
    if not isinstance(data, dict):
        raise ImageError(f"{where}: a manifest or index must be an object")
    media = media or data.get("mediaType") or ("index" if "manifests" in data else "manifest")
    if media in INDEX_TYPES or media == "index":
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ImageError(f"{where}: an index needs a manifests list")
        fitting = [e for e in entries if isinstance(e, dict) and _platform_ok(e)]
        if not fitting:
            raise ImageError(f"{where}: no manifest for linux/{host_arch()}")
        # A nested index lists one image for several platforms: take the first that fits.
        yield from _oci_walk(src, fitting[0], f"{where} > {_blob(digest)}", names, limits,
                             depth + 1)
        return
    if media not in MANIFEST_TYPES and media != "manifest":
        raise ImageError(f"{where}: unsupported manifest type {media!r}")
    cfg_digest, cfg_media, cfg_size = _descriptor(data.get("config"), f"{where} config")
    if cfg_media and cfg_media not in CONFIG_TYPES:
        raise ImageError(f"{where}: {cfg_media!r} is not an image configuration (an artifact?)")
    cfg, raw = read_json(src, _blob(cfg_digest), limits, cfg_digest, cfg_size)
    image_id, config, diff_ids, facts = _config(raw, cfg, _blob(cfg_digest), limits)
    descs = data.get("layers")
    if not isinstance(descs, list) or len(descs) != len(diff_ids):
        raise ImageError(f"{where}: layers must list one descriptor per diff_id "
                         f"({len(diff_ids)})")
    layers = []
    for j, (d, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        ldigest, lmedia, lsize = _descriptor(d, f"{where} layer {j}")
        if "zstd" in lmedia:
            raise ImageError(f"{where} layer {j}: zstd-compressed layers are not supported; "
                             "save the image with gzip or uncompressed layers")
        if lmedia and lmedia not in LAYER_TYPES:
            raise ImageError(f"{where} layer {j}: unsupported layer type {lmedia!r}")
        layers.append(LayerRef(_blob(ldigest), ldigest, lsize, diff_id))
    yield SourceImage(image_id, names, tuple(layers), config, facts["architecture"],
                      facts["os"], facts["created"])


def _oci(src: Source, limits: ImportLimits) -> list[SourceImage]:
    layout, _ = read_json(src, "oci-layout", limits)
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise ImageError(f"oci-layout: unsupported imageLayoutVersion {version!r}")
    index, _ = read_json(src, "index.json", limits)
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ImageError("index.json: needs a non-empty manifests list")
    out: list[SourceImage] = []
    for i, desc in enumerate(entries):
        if not isinstance(desc, dict) or not _platform_ok(desc):
            continue
        name = _ref_name(desc.get("annotations"))
        out.extend(_oci_walk(src, desc, f"index.json[{i}]", (name,) if name else (), limits))
    if not out:
        raise ImageError(f"index.json: no image for linux/{host_arch()}")
    return out


def read_images(src: Source, limits: ImportLimits) -> list[SourceImage]:
    """Every image the source holds, with verified configurations; layers not yet read."""
    if src.exists("manifest.json"):
        return _docker(src, limits)
    if src.exists("oci-layout") and src.exists("index.json"):
        return _oci(src, limits)
    raise ImageError("neither a docker save archive (manifest.json) nor an OCI image layout "
                     "(oci-layout, index.json)")
