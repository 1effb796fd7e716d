"""Importing: every format gives the same image; every digest is checked; a refused import
leaves the store as it was.

No containers here (tests/integration/test_images.py runs jobs on imported images).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from sandboxd.images import ImageError, ImportLimits, Store, import_image
from sandboxd_testing.images import (
    BuiltImage,
    Entry,
    config,
    host_arch,
    write_docker_save,
    write_layer,
    write_oci,
)


def make_image(work: Path, name: str = "demo:1", gz: bool = False, **cfg) -> BuiltImage:  # type: ignore[no-untyped-def]
    base = write_layer(work / "base.tar", [
        Entry("etc", "dir", mode=0o755), Entry("etc/hello", data=b"hello\n"),
        Entry("opq", "dir", mode=0o755), Entry("opq/old", data=b"old\n"),
    ])
    top = write_layer(work / ("top.tar.gz" if gz else "top.tar"), [
        Entry("opq/.wh..wh..opq"), Entry("opq/new", data=b"new\n"),
        Entry("etc/hello", data=b"hello again\n"),
    ], compress=gz)
    return BuiltImage(name, [base, top], config([base, top], **cfg))


def assert_empty(store: Store) -> None:
    """Nothing of a refused import is visible, and nothing is left half-written."""
    assert store.images() == []
    assert os.listdir(store.layers_dir) == []
    assert os.listdir(store.tmp_dir) == []


FORMATS = {
    "docker-legacy-tar": lambda out, imgs: write_docker_save(out, imgs, legacy=True),
    "docker-blobs-tar": lambda out, imgs: write_docker_save(out, imgs, legacy=False),
    "docker-dir": lambda out, imgs: write_docker_save(out, imgs, as_tar=False),
    "oci-dir": lambda out, imgs: write_oci(out, imgs),
    "oci-tar": lambda out, imgs: write_oci(out, imgs, as_tar=True),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gzip"])
def test_every_format_gives_the_same_image(work: Path, store: Store, fmt: str,
                                           gz: bool) -> None:
    img = make_image(work, gz=gz, env=["A=1", "PATH=/bin"], cmd=["/bin/sh"], workdir="srv")
    path = FORMATS[fmt](work / "image", [img])
    (got,) = import_image(store, str(path))
    assert got.id == img.id
    assert got.names == ("demo:1",)
    assert [x.files for x in got.layers] == [2, 2]
    assert got.config.environ() == {"A": "1", "PATH": "/bin"}
    assert got.config.argv() == ("/bin/sh",)
    assert got.config.workdir == "/srv"
    assert store.resolve("demo:1") == got
    layer_dirs = sorted(os.listdir(store.layers_dir))
    assert layer_dirs == sorted(x.hex for x in got.layers)
    top = Path(store.layer_path(got.layers[1].diff_id))
    assert os.getxattr(top / "opq", "user.overlay.opaque") == b"y"
    assert (top / "etc/hello").read_text() == "hello again\n"
    assert os.listdir(store.tmp_dir) == []


def test_compressed_docker_save(work: Path, store: Store) -> None:
    img = make_image(work)
    plain = write_docker_save(work / "image.tar", [img])
    with open(plain, "rb") as f, gzip.open(work / "image.tar.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    (got,) = import_image(store, str(work / "image.tar.gz"))
    assert got.id == img.id
    assert os.listdir(store.tmp_dir) == []


def test_name_option_and_bare_tag_annotation(work: Path, store: Store) -> None:
    img = make_image(work, name="latest")
    oci = write_oci(work / "oci", [img], ref_key="org.opencontainers.image.ref.name")
    (got,) = import_image(store, str(oci))
    assert got.names == ()  # a bare tag names no image
    (got,) = import_image(store, str(oci), name="mine")
    assert got.names == ("mine:latest",)
    with pytest.raises(ImageError, match="not an image name"):
        import_image(store, str(oci), name="Bad Name")


def test_two_images_in_one_file_and_name_needs_one(work: Path, store: Store) -> None:
    a = make_image(work, name="a:1")
    b = BuiltImage("b:1", a.layers[:1], config(a.layers[:1]))
    path = write_docker_save(work / "two.tar", [a, b])
    with pytest.raises(ImageError, match="holds 2 images"):
        import_image(store, str(path), name="x:1")
    got = import_image(store, str(path))
    assert sorted(n for i in got for n in i.names) == ["a:1", "b:1"]
    assert len(os.listdir(store.layers_dir)) == 2  # the shared base once


# ------------------------------------------------------------------ verification


def test_tampered_layer_fails_its_diff_id(work: Path, store: Store) -> None:
    img = make_image(work)
    path = write_docker_save(work / "image", [img], as_tar=False)
    layer = next(p for p in path.rglob("layer.tar") if b"hello again" in p.read_bytes())
    data = layer.read_bytes().replace(b"hello again", b"HELLO AGAIN")
    layer.write_bytes(data)
    with pytest.raises(ImageError, match="diff_id mismatch"):
        import_image(store, str(path))
    assert_empty(store)


def test_tampered_legacy_config_fails_its_name(work: Path, store: Store) -> None:
    img = make_image(work, env=["A=1"])
    path = write_docker_save(work / "image", [img], as_tar=False)
    cfg = next(p for p in path.glob("*.json") if p.name != "manifest.json")
    cfg.write_bytes(cfg.read_bytes().replace(b"A=1", b"A=2"))
    with pytest.raises(ImageError, match="digest mismatch"):
        import_image(store, str(path))
    assert_empty(store)


def _oci_blob(oci: Path, media_word: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    index = json.loads((oci / "index.json").read_text())
    manifest_path = oci / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    if media_word == "manifest":
        return manifest_path, manifest
    desc = manifest["config"] if media_word == "config" else manifest["layers"][-1]
    return oci / "blobs/sha256" / desc["digest"].split(":")[1], manifest


@pytest.mark.parametrize("what", ["manifest", "config", "layer"])
def test_tampered_oci_blob_fails_its_digest(work: Path, store: Store, what: str) -> None:
    oci = write_oci(work / "oci", [make_image(work)])
    blob, _ = _oci_blob(oci, what)
    data = bytearray(blob.read_bytes())
    data[-1600 if what == "layer" else -3] ^= 0x20  # same size, other bytes
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="digest mismatch"):
        import_image(store, str(oci))
    assert_empty(store)


def test_blob_longer_than_its_descriptor(work: Path, store: Store) -> None:
    oci = write_oci(work / "oci", [make_image(work)])
    blob, _ = _oci_blob(oci, "layer")
    with open(blob, "ab") as f:
        f.write(b"\0" * 1024)
    with pytest.raises(ImageError, match=r"larger than the .* bytes its descriptor says"):
        import_image(store, str(oci))
    assert_empty(store)


def _edit_manifest(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    m = json.loads((path / "manifest.json").read_text())
    edit(m[0])
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["Layers"].__setitem__(0, "../../etc/passwd"), "climbs out"),
    (lambda m: m["Layers"].__setitem__(0, "/etc/passwd"), "absolute path"),
    (lambda m: m["Layers"].pop(), "configuration lists 2 diff_ids"),
    (lambda m: m.__setitem__("Config", "missing.json"), "no 'missing.json'|No such file"),
    (lambda m: m.__setitem__("RepoTags", ["UPPER CASE"]), "not an image name"),
])
def test_hostile_docker_manifest(work: Path, store: Store, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    path = write_docker_save(work / "image", [make_image(work)], as_tar=False)
    _edit_manifest(path, edit)
    with pytest.raises(ImageError, match=match):
        import_image(store, str(path))
    assert_empty(store)


def test_config_for_another_architecture(work: Path, store: Store) -> None:
    img = make_image(work)
    cfg = json.loads(img.config)
    cfg["architecture"] = "s390x" if cfg["architecture"] != "s390x" else "amd64"
    img.config = json.dumps(cfg).encode()
    with pytest.raises(ImageError, match="an image for"):
        import_image(store, str(write_docker_save(work / "image.tar", [img])))
    assert_empty(store)


def test_zstd_layers_are_refused_clearly(work: Path, store: Store) -> None:
    oci = write_oci(work / "oci", [make_image(work)])
    _blob, manifest = _oci_blob(oci, "manifest")
    manifest["layers"][0]["mediaType"] += "+zstd"
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (oci / "blobs/sha256" / digest).write_bytes(data)
    index = json.loads((oci / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(data))
    (oci / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="zstd-compressed layers are not supported"):
        import_image(store, str(oci))


def test_absurd_inputs(work: Path, store: Store) -> None:
    img = make_image(work)
    path = write_docker_save(work / "image.tar", [img])
    with pytest.raises(ImageError, match="at most 1 fit"):
        import_image(store, str(path), limits=ImportLimits(max_layers=1))
    with pytest.raises(ImageError, match="larger than 100 bytes"):
        import_image(store, str(path), limits=ImportLimits(max_json=100))
    with pytest.raises(ImageError, match="more than 1 entries"):
        import_image(store, str(path), limits=ImportLimits(max_files=1))
    assert_empty(store)


def test_not_an_image(work: Path, store: Store) -> None:
    junk = write_layer(work / "junk.tar", [Entry("readme", data=b"hi")])
    with pytest.raises(ImageError, match="neither a docker save archive"):
        import_image(store, str(junk))
    (work / "text").write_text("not a tar\n" * 200)
    with pytest.raises(ImageError, match="not a tar archive"):
        import_image(store, str(work / "text"))
    with pytest.raises(ImageError, match="cannot read"):
        import_image(store, str(work / "missing.tar"))
    assert_empty(store)


def test_nested_index_picks_this_hosts_platform(work: Path, store: Store) -> None:
    img = make_image(work)
    oci = write_oci(work / "oci", [img])
    index = json.loads((oci / "index.json").read_text())
    host = dict(index["manifests"][0], platform={"os": "linux", "architecture": host_arch()})
    other = dict(index["manifests"][0], platform={"os": "linux", "architecture": "mips64"})
    nested = json.dumps({"schemaVersion": 2, "manifests": [other, host]}).encode()
    digest = hashlib.sha256(nested).hexdigest()
    (oci / "blobs/sha256" / digest).write_bytes(nested)
    index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": f"sha256:{digest}", "size": len(nested),
                           "annotations": {"io.containerd.image.name": "multi:1"}}]
    (oci / "index.json").write_text(json.dumps(index))
    (got,) = import_image(store, str(oci))
    assert got.id == img.id and got.names == ("multi:1",)


def test_damaged_gzip_layer(work: Path, store: Store) -> None:
    """Refused as damaged whether the damage shows in the deflate data or only in the digest."""
    img = make_image(work, gz=True)
    oci = write_oci(work / "oci", [img])
    blob, _ = _oci_blob(oci, "layer")
    data = bytearray(blob.read_bytes())
    data[30] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"not a valid tar|damaged|digest mismatch"):
        import_image(store, str(oci))
    assert_empty(store)
