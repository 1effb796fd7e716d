"""Jobs on image roots (issue: images): real images built from host binaries, imported, run.

The images are made here (no registry): a base layer of /bin/sh, coreutils
and find with the libraries ldd names, plus data; a second layer that deletes
a file of the first and makes a directory opaque. Each test runs jobs through
``sandboxd run-once --image`` or, for many containers at once, the zygote and
the supervisor's Container, exactly as the daemon would.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator

import pytest

from sandboxd.images import Store, import_image
from sandboxd_testing.images import (
    BuiltImage,
    Entry,
    config,
    host_closure,
    host_entries,
    write_docker_save,
    write_layer,
    write_oci,
)

pytestmark = pytest.mark.root

MiB = 1 << 20
PROGRAMS = ["/bin/sh", "/bin/cat", "/bin/ls", "/usr/bin/find", "/usr/bin/stat", "/usr/bin/env"]
TOKEN = "image-own-passwd-" + os.urandom(4).hex()
BIG = 32 * MiB

BASE = [
    Entry("etc", "dir", mode=0o755),
    Entry("etc/passwd", data=f"root:x:0:0:{TOKEN}:/root:/bin/sh\n".encode()),
    Entry("data", "dir", mode=0o755),
    Entry("data/keep", data=b"kept\n"),
    Entry("data/gone", data=b"deleted by the top layer\n"),
    Entry("data/big", data=b"\xa5" * BIG),
    Entry("opq", "dir", mode=0o755),
    Entry("opq/old", data=b"hidden by the opaque directory\n"),
    Entry("opq/sub", "dir", mode=0o755),
    Entry("opq/sub/old2", data=b"hidden too\n"),
    # Hostile, to be neutralised: a setuid copy of cat, links out of the layer (resolved in
    # the container's root), a device node, and mount points turned into symlinks.
    Entry("usr/local/bin/suidcat", source="/bin/cat", mode=0o4755),
    Entry("escape", "symlink", target="../../../../../etc/passwd"),
    Entry("absolute", "symlink", target="/etc/passwd"),
    Entry("dev", "dir", mode=0o755),
    Entry("dev/evil", "blk"),
    Entry("proc", "symlink", target="/data"),
    Entry("box", "symlink", target="/etc"),
]
TOP = [
    Entry("data/.wh.gone"),
    Entry("data/added", data=b"added\n"),
    Entry("opq/.wh..wh..opq"),
    Entry("opq/new", data=b"new\n"),
    Entry("etc/motd", data=b"welcome\n"),
]
ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=from-image"]
CMD = ["/bin/sh", "-c", 'echo "cwd=$(pwd) greeting=$GREETING"']


def merged(layers: list[list[Entry]]) -> set[str]:
    """The tree overlayfs should show, computed without it: whiteouts and opaque dirs applied."""
    tree: set[str] = set()

    def drop(path: str, below_only: bool = False) -> None:
        for p in list(tree):
            if p.startswith(path + "/") or (p == path and not below_only):
                tree.discard(p)

    for entries in layers:
        for e in entries:
            parent, _, base = e.name.rpartition("/")
            if base == ".wh..wh..opq":
                drop(parent, below_only=True)
            elif base.startswith(".wh."):
                drop(f"{parent}/{base[4:]}" if parent else base[4:])
        for e in entries:
            if e.name.rpartition("/")[2].startswith(".wh.") or e.kind in ("chr", "blk"):
                continue
            parts = e.name.split("/")
            tree.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {"/" + p for p in tree}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The image in both formats, and two stores (one per format) under /tmp."""
    work = tmp_path_factory.mktemp("sandboxd-images-src")
    base_entries = host_entries(host_closure(PROGRAMS)) + BASE
    base = write_layer(work / "base.tar", base_entries)
    top = write_layer(work / "top.tar.gz", TOP, compress=True)
    img = BuiltImage("it:1", [base, top],
                     config([base, top], env=ENV, cmd=CMD, workdir="/srv/app"))
    files = {"docker": write_docker_save(work / "it.tar", [img]),
             "oci": write_oci(work / "it-oci", [img])}
    root = tempfile.mkdtemp(prefix="sandboxd-images-it-", dir="/tmp")
    os.chmod(root, 0o755)
    stores = {}
    for fmt, path in files.items():
        stores[fmt] = Store(f"{root}/{fmt}")
        t = time.perf_counter()
        (got,) = import_image(stores[fmt], str(path))
        print(f"import {fmt}: {time.perf_counter() - t:.3f}s")
        assert got.id == img.id and got.names == ("it:1",)
    tree = merged([base_entries, TOP])
    yield {"stores": stores, "image": img, "tree": tree, "work": work}
    shutil.rmtree(root, ignore_errors=True)


def on_image(run_once, store: Store, argv: list[str], **kw):  # type: ignore[no-untyped-def]
    r = run_once(argv, image="it:1", image_store=store.path, **kw)
    assert r["verdict"] == "ok", r
    return r


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_job_sees_exactly_the_merged_tree(run_once, images, fmt: str) -> None:  # type: ignore[no-untyped-def]
    store = images["stores"][fmt]
    r = on_image(run_once, store, ["/usr/bin/find", "/", "-xdev"])
    seen = set(r["stdout"].split()) - {"/"}
    # What sandboxd adds: generated files, scratch mount points, the WorkingDir.
    ours = {"/etc/hostname", "/etc/hosts", "/box", "/tmp", "/dev", "/proc", "/srv",
            "/srv/app"}
    assert seen == images["tree"] | ours
    assert "/data/gone" not in seen and "/opq/old" not in seen and "/opq/new" in seen
    r = on_image(run_once, store, ["/bin/cat", "/data/keep", "/data/added", "/opq/new",
                                   "/etc/motd"])
    assert r["stdout"] == "kept\nadded\nnew\nwelcome\n"


def test_image_env_workdir_and_cmd_are_the_defaults(run_once, images) -> None:  # type: ignore[no-untyped-def]
    store = images["stores"]["docker"]
    r = on_image(run_once, store, [])
    assert r["stdout"] == "cwd=/srv/app greeting=from-image\n"
    r = on_image(run_once, store, ["/bin/sh", "-c", "echo $GREETING $PATH"],
                 env="GREETING=from-job")
    assert r["stdout"] == "from-job /usr/local/bin:/usr/bin:/bin\n"


def test_root_is_read_only_nosuid_nodev_overlay(run_once, images) -> None:  # type: ignore[no-untyped-def]
    store = images["stores"]["oci"]
    r = on_image(run_once, store, ["/bin/cat", "/proc/self/mountinfo"])
    root = next(line for line in r["stdout"].splitlines() if line.split()[4] == "/")
    opts, _, fs = root.partition(" - ")
    assert fs.startswith("overlay sandboxd-image:")
    assert {"ro", "nosuid", "nodev"} <= set(opts.split()[5].split(","))
    assert "userxattr" in fs and "lowerdir=" in fs
    r = run_once(["/bin/sh", "-c", "echo x > /etc/motd; echo x > /newfile; echo y > /box/y "
                  "&& /bin/cat /box/y"], image="it:1", image_store=store.path)
    assert r["stdout"] == "y\n"
    assert r["stderr"].count("Read-only file system") == 2, r["stderr"]


def test_hostile_image_is_neutralised(run_once, images, canary) -> None:  # type: ignore[no-untyped-def]
    store = images["stores"]["docker"]
    path, token = canary
    script = ("stat -c '%a %n' /usr/local/bin/suidcat; cat /escape /absolute; "
              "ls /dev; ls /proc/self/status; : > /box/w && echo box-writable; "
              f"cat {path} 2>&1 || echo no-host-file")
    r = on_image(run_once, store, ["/bin/sh", "-c", script])
    lines = r["stdout"].splitlines()
    assert lines[0] == "755 /usr/local/bin/suidcat"  # setuid stripped (and the root is nosuid)
    assert lines[1] == lines[2] == f"root:x:0:0:{TOKEN}:/root:/bin/sh"  # the image's, not ours
    assert "evil" not in r["stdout"]  # device nodes are dropped; /dev is sandboxd's
    assert "/proc/self/status" in lines  # /proc -> /data in the image: a real proc all the same
    assert "box-writable" in lines  # /box -> /etc in the image: the job's tmpfs all the same
    assert lines[-1] == "no-host-file" and token not in r["stdout"]


# ------------------------------------------------------------ many containers


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}


def _evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages (the import just wrote them) are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.slow
async def test_fifty_containers_share_one_copy_of_the_layers(images, made) -> None:  # type: ignore[no-untyped-def]
    import trio

    from sandboxd.container import Container, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    store: Store = images["stores"]["docker"]
    image = store.resolve("it:1")
    big = os.path.join(store.layer_path(image.layers[0].diff_id), "data/big")
    disk_before = store.disk_usage()
    _evict(big)
    boxes: list[Container] = made.boxes  # destroyed afterwards by the fixture
    mem0 = _meminfo()
    for i in range(50):
        spawned = await made.client.spawn(ContainerSpec(
            slot=7000 + i, box_size=4 * MiB, tmp_size=4 * MiB, image=image.id,
            image_store=store.path))
        boxes.append(Container(spawned, made.backend.create(f"sandboxd-img-{i}")))
    async with trio.open_nursery() as nursery:
        for box in boxes:
            nursery.start_soon(box.wait_ready)
    mem1 = _meminfo()
    assert len(_mounted()[image.hex]) >= 50  # 50 inits and their job processes
    peaks = []
    for box in boxes:
        result = await box.run(RunStep(argv=["/bin/sh", "-c", "cat /data/big >/dev/null"],
                                       limits=DEFAULT, env={"PATH": "/bin"}))
        assert result.verdict == "ok", result
        peaks.append(result.memory_peak)
    mem2 = _meminfo()
    resident = _resident(big)
    disk_after = store.disk_usage()
    per_container = (mem0["MemAvailable"] - mem1["MemAvailable"]) / 50
    cached = mem2["Cached"] - mem1["Cached"]
    print(f"\n50 containers of one image: store on disk {disk_before / MiB:.1f} MiB before, "
          f"{disk_after / MiB:.1f} MiB with them running; memory per ready container "
          f"{per_container / MiB:.2f} MiB; 50 x cat of a {BIG // MiB} MiB file: page cache "
          f"+{cached / MiB:.1f} MiB, resident {resident / MiB:.1f} MiB; job memory peak "
          f"first {peaks[0] / MiB:.1f} MiB, median of the others "
          f"{statistics.median(peaks[1:]) / MiB:.2f} MiB")
    assert disk_after == disk_before  # nothing per container on disk
    assert resident is None or resident <= BIG + MiB  # one copy in the page cache
    assert cached < 4 * BIG  # not 50 copies (1600 MiB), whatever else the machine does
    assert peaks[0] >= BIG * 0.75  # the first reader is charged for the page cache...
    assert statistics.median(peaks[1:]) < BIG / 4  # ...the others share it


def _mounted() -> dict[str, set[int]]:
    from sandboxd.images import mounted_images

    return mounted_images()


def _resident(path: str) -> int | None:
    """Bytes of ``path`` in the page cache (util-linux fincore), None when it is missing."""
    fincore = shutil.which("fincore")
    if not fincore:
        return None
    import subprocess

    out = subprocess.run([fincore, "--bytes", "--noheadings", "--output", "RES", path],
                         capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else None


async def test_rm_is_refused_while_a_container_runs(images, zygote_proc) -> None:  # type: ignore[no-untyped-def]
    import trio

    from sandboxd import cgroups, zygote
    from sandboxd.container import Container
    from sandboxd.images import ImageError
    from sandboxd.spawn import ContainerSpec

    # A store of its own: this test removes the image.
    store = Store(images["stores"]["docker"].path + "-rm")
    (image,) = import_image(store, str(images["work"] / "it.tar"))
    client = zygote.ZygoteClient(zygote_proc)
    backend = cgroups.open_backend(f"imgrm-{os.getpid()}")
    box = None
    try:
        spawned = await client.spawn(ContainerSpec(slot=7100, box_size=MiB, tmp_size=MiB,
                                                   image=image.id, image_store=store.path))
        box = Container(spawned, backend.create("sandboxd-img-rm"))
        await box.wait_ready()
        with pytest.raises(ImageError, match=r"in use by \d+ running container"):
            store.remove("it:1")
        assert store.resolve("it:1")
    finally:
        with trio.CancelScope(shield=True):
            if box:
                await box.destroy()
            await client.aclose()
            backend.close()
    done = store.remove("it:1")
    assert done.deleted and os.listdir(store.layers_dir) == []
    shutil.rmtree(store.path)
