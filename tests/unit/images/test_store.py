"""The store: layers shared between images stored once, names, removal with reference counts,
and interrupted imports (an exception, or SIGKILL) that leave nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxd.images import ImageError, Store, import_image
from sandboxd.images._store import _label_of
from sandboxd_testing.images import (
    BuiltImage,
    Entry,
    config,
    write_docker_save,
    write_layer,
    write_oci,
)


def layer(work: Path, name: str, files: dict[str, bytes]) -> Path:
    return write_layer(work / f"{name}.tar", [Entry(k, data=v) for k, v in files.items()])


@pytest.fixture
def two_images(work: Path) -> tuple[Path, BuiltImage, BuiltImage]:
    """Two images on one base layer, in one OCI layout."""
    base = layer(work, "base", {"bin/tool": b"x" * 100_000, "etc/os-release": b"base\n"})
    a = layer(work, "a", {"app/a": b"a\n"})
    b = layer(work, "b", {"app/b": b"b\n"})
    img_a = BuiltImage("app:a", [base, a], config([base, a], cmd=["/app/a"]))
    img_b = BuiltImage("app:b", [base, b], config([base, b], cmd=["/app/b"]))
    return write_oci(work / "oci", [img_a, img_b]), img_a, img_b


def test_a_shared_layer_is_stored_once(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, img_a, img_b = two_images
    got = import_image(store, str(path))
    assert {i.id for i in got} == {img_a.id, img_b.id}
    assert len(os.listdir(store.layers_dir)) == 3
    a, b = store.resolve("app:a"), store.resolve("app:b")
    assert a.layers[0] == b.layers[0]
    assert store.disk_usage() < 2 * 100_000 + 64 * 4096


def test_reimport_reads_no_layer(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = two_images
    import_image(store, str(path))
    calls: list[int] = []
    import_image(store, str(path), progress=lambda done, total, what: calls.append(done))
    assert calls == []
    assert len(store.images()) == 2


def test_resolve(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, img_a, _ = two_images
    import_image(store, str(path))
    a = store.resolve("app:a")
    assert store.resolve(img_a.id) == a
    assert store.resolve(a.hex[:12]) == a
    assert store.resolve("sha256:" + a.hex[:16]) == a
    for bad in ("app:c", "app", "nope", "Bad Ref", a.hex[:11]):
        with pytest.raises(ImageError, match="no image"):
            store.resolve(bad)
    assert [i.names for i in store.images()] == [("app:a",), ("app:b",)]


def test_a_name_moves_to_the_newer_image(store: Store, work: Path) -> None:
    one = layer(work, "one", {"v": b"1"})
    two = layer(work, "two", {"v": b"2"})
    first = import_image(store, str(write_docker_save(work / "1.tar", [
        BuiltImage("tool:latest", [one], config([one]))])))[0]
    second = import_image(store, str(write_docker_save(work / "2.tar", [
        BuiltImage("tool", [two], config([two]))])))[0]
    assert store.resolve("tool").id == second.id
    assert store.get(first.id).names == ()  # still there, by id, until removed
    assert [i.ref for i in store.images()] == ["tool:latest", first.short_id]


def test_rm_counts_references(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = two_images
    import_image(store, str(path))
    a, b = store.resolve("app:a"), store.resolve("app:b")
    done = store.remove("app:a")
    assert done.deleted and (done.layers_removed, done.layers_kept) == (1, 1)
    assert sorted(os.listdir(store.layers_dir)) == sorted(x.hex for x in b.layers)
    assert store.resolve("app:b") == b
    assert os.listdir(store.tmp_dir) == []
    done = store.remove(b.id)
    assert (done.layers_removed, done.layers_kept) == (2, 0)
    assert os.listdir(store.layers_dir) == [] and store.images() == []
    with pytest.raises(ImageError, match="no image"):
        store.remove(a.id)


def test_rm_of_one_name_untags(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, img_a, _ = two_images
    import_image(store, str(path))
    # A second name for image a: its layers and config again, under another name.
    again = write_docker_save(path.parent / "again", [BuiltImage(
        "alias:1", [path.parent / "base.tar", path.parent / "a.tar"], img_a.config)],
        as_tar=False)
    import_image(store, str(again))
    assert store.resolve("alias:1").names == ("alias:1", "app:a")
    with pytest.raises(ImageError, match="alias:1 is in use by profile p"):
        store.remove("alias:1", users=[("profile p", "alias:1")])
    done = store.remove("alias:1", users=[("profile q", "app:a")])
    assert done.untagged == "alias:1" and not done.deleted
    assert store.resolve("app:a").names == ("app:a",)


def test_rm_is_refused_while_a_profile_uses_the_image(store: Store, two_images) -> None:  # type: ignore[no-untyped-def]
    path, img_a, _ = two_images
    import_image(store, str(path))
    with pytest.raises(ImageError, match="in use by profile web"):
        store.remove("app:a", users=[("profile web", "app:a")])
    with pytest.raises(ImageError, match="in use by profile byid"):
        store.remove("app:a", users=[("profile byid", img_a.id[:20])])
    store.remove("app:a", users=[("profile other", "app:b"), ("profile gone", "nope:1")])


def test_label_of_mountinfo_lines() -> None:
    hex_ = "ab" * 32
    line = (f"89 45 0:44 / / ro,nosuid,nodev,relatime - overlay sandboxd-image:{hex_} "
            "rw,lowerdir=x:y,upperdir=/tmp/upper,workdir=/tmp/work,userxattr\n")
    assert _label_of(line) == hex_
    assert _label_of("36 25 0:32 / /tmp rw - tmpfs sandboxd-image:x rw\n") == ""
    assert _label_of("garbage sandboxd-image:\n") == ""


# ------------------------------------------------------------- interruptions


def test_exception_mid_import_leaves_the_store_as_it_was(store: Store, work: Path) -> None:
    big = [layer(work, f"l{i}", {f"f{i}": os.urandom(300_000)}) for i in range(3)]
    path = write_docker_save(work / "big.tar", [BuiltImage("big:1", big, config(big))])
    seen: list[str] = []

    def interrupt(done: int, total: int, what: str) -> None:
        seen.append(what)
        if what == "layer 2/3":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_image(store, str(path), progress=interrupt)
    assert "layer 1/3" in seen
    assert store.images() == [] and os.listdir(store.layers_dir) == []
    assert os.listdir(store.tmp_dir) == []
    (got,) = import_image(store, str(path))
    assert len(got.layers) == 3


KILLER = """
import os, signal
from sandboxd.images import Store, import_image
def kill(done, total, what):
    if what == "layer 2/3":
        os.kill(os.getpid(), signal.SIGKILL)
import_image(Store({store!r}), {path!r}, progress=kill)
"""


def test_sigkill_mid_import_leaves_nothing_visible(store: Store, work: Path) -> None:
    big = [layer(work, f"l{i}", {f"f{i}": os.urandom(300_000)}) for i in range(3)]
    path = write_docker_save(work / "big.tar", [BuiltImage("big:1", big, config(big))])
    code = KILLER.format(store=store.path, path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert store.images() == [] and os.listdir(store.layers_dir) == []
    left = os.listdir(store.tmp_dir)
    assert len(left) == 1 and left[0].startswith("import-")  # the dead import's scratch
    assert store.gc() == [os.path.join(store.tmp_dir, left[0])]
    assert os.listdir(store.tmp_dir) == []
    (got,) = import_image(store, str(path))
    assert got.names == ("big:1",)


def test_gc_spares_a_running_import_and_removes_orphan_layers(store: Store) -> None:
    store.create()
    with store.scratch() as running:
        orphan = Path(store.layers_dir) / ("cd" * 32)
        orphan.mkdir()
        removed = store.gc()
        assert len(removed) == 1 and "trash-" in removed[0]
        assert os.path.isdir(running)
        assert not orphan.exists()
    assert os.listdir(store.tmp_dir) == []


def test_a_store_containers_could_not_reach_is_refused(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    with pytest.raises(ImageError, match="not traversable by other users"):
        Store(str(tmp_path / "store")).create()
