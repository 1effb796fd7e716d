"""``import_image``: from a file to committed store records, verifying as it streams.

Strategy: read the format's manifests (verified, bounded: ``_source``), then
for each layer the store lacks, stream its blob once: the compressed bytes
are hashed against the manifest's digest, the decompressed bytes against the
configuration's diff_id, and unpacked as they pass (``_layer``) into the
import's private scratch directory. Only when every layer of every image in
the file has verified is anything committed (``Store.commit``); any error or
interruption before that removes the scratch directory and leaves the store
as it was.

This module knows nothing of containers.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable

from sandboxd.images._layer import TarStream, unpack
from sandboxd.images._model import Image, ImageError, ImportLimits, LayerInfo, parse_name
from sandboxd.images._source import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    BlobReader,
    LayerRef,
    Source,
    open_source,
    read_images,
)
from sandboxd.images._store import Store

# progress(bytes read so far, bytes to read in all, what is being read)
Progress = Callable[[int, int, str], None]


def _unpack_layer(src: Source, ref: LayerRef, dest: str, budget: int, limits: ImportLimits,
                  on_bytes: Callable[[int], None]) -> tuple[LayerInfo, int]:
    """Stream, verify and unpack one layer; (what it holds, its uncompressed size)."""
    what = f"layer {ref.diff_id[7:19]}"
    blob = BlobReader(src.open(ref.blob), ref.blob, ref.digest, ref.size, on_bytes)
    try:
        head = blob.peek(4)
        if head.startswith(ZSTD_MAGIC):
            raise ImageError(f"{what}: zstd-compressed layers are not supported")
        plain = gzip.GzipFile(fileobj=blob, mode="rb") if head.startswith(GZIP_MAGIC) else blob
        stream = TarStream(plain, min(limits.max_layer_size, budget), limits.max_header, what)
        try:
            stats = unpack(stream, dest, limits)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ImageError(f"{what}: damaged compressed data ({e})") from None
        blob.finish()
    finally:
        blob.close()
    if stream.digest() != ref.diff_id:
        raise ImageError(f"{what}: diff_id mismatch (the configuration says {ref.diff_id}, "
                         f"the layer hashes to {stream.digest()})")
    info = LayerInfo(ref.diff_id, size=stats.size, files=stats.files, dropped=stats.dropped,
                     setid_stripped=stats.setid_stripped)
    return info, stream.size


def import_image(store: Store, path: str, *, name: str | None = None,
                 limits: ImportLimits | None = None,
                 progress: Progress | None = None) -> list[Image]:
    """Import every image of the ``docker save`` tarball or OCI layout at ``path``.

    ``name`` (NAME[:TAG]) replaces the names the file gives, and needs a file
    of one image. Layers already in the store are not read again (they are
    content-addressed and the verified configuration names them). Returns the
    committed records.
    """
    limits = limits or ImportLimits()
    wanted = parse_name(name) if name else None
    store.create()
    store.gc()
    with store.scratch() as scratch:
        src = open_source(path, scratch, limits)
        try:
            found = read_images(src, limits)
            if wanted and len(found) != 1:
                raise ImageError(f"{path} holds {len(found)} images; --name needs exactly one")
            todo: dict[str, LayerRef] = {}
            for image in found:
                for ref in image.layers:
                    if ref.diff_id not in todo and not store.has_layer(ref.diff_id):
                        todo[ref.diff_id] = ref
            total = sum(ref.size if ref.size is not None else src.size(ref.blob)
                        for ref in todo.values())
            done = 0
            layers_dir = os.path.join(scratch, "layers")
            os.mkdir(layers_dir, 0o700)
            infos: dict[str, LayerInfo] = {}
            unpacked: dict[str, str] = {}
            budget = limits.max_image_size
            for i, ref in enumerate(todo.values(), 1):
                label = f"layer {i}/{len(todo)}"

                def advance(n: int, label: str = label) -> None:
                    nonlocal done
                    done += n
                    if progress:
                        progress(done, total, label)

                hex_ = ref.diff_id.split(":", 1)[1]
                dest = os.path.join(layers_dir, hex_)
                infos[ref.diff_id], size = _unpack_layer(src, ref, dest, budget, limits, advance)
                budget -= size
                unpacked[hex_] = dest
        finally:
            src.close()
        records = []
        for image in found:
            layers = tuple(infos.get(r.diff_id) or store.layer_info(r.diff_id)
                           for r in image.layers)
            records.append(Image(id=image.id, names=(wanted,) if wanted else image.names,
                                 layers=layers, config=image.config,
                                 architecture=image.architecture, os=image.os,
                                 created=image.created))
        return store.commit(records, unpacked)
