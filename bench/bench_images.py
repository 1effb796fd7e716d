"""Images: import time of an image of a few hundred MB, and container creation on an image
root against the host-bind root; then 50 containers of one image (disk and memory).

Usage: ``.venv/bin/python bench/bench_images.py [--rounds N] [--json FILE]``
(as root).

The image is built from host files, as the tests build theirs: a Python
runtime layer (python3, its libraries and /usr/lib/python3.X), then
/usr/lib/gcc and /usr/share/locale as two more layers, about 350 MB in all.
It is written twice: a ``docker save`` tarball (uncompressed layers) and an
OCI layout with gzip layers. Import is timed cold (empty store), and again
warm (every layer already there: only manifests and the configuration read).

Creation is measured as the daemon sees a pool miss, inside one process with
the zygote: from asking for a new container to its job process waiting for a
job (``ready``), and the whole cycle with one job (``python3 -c pass``, and
``/bin/true``). Each round makes one container of each kind in turn, so that
the noise of this shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# sandboxd_testing is not installed: it imports from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandboxd_testing.images import (
    BuiltImage,
    config,
    host_closure,
    host_entries,
    tree_entries,
    write_docker_save,
    write_layer,
    write_oci,
)

MiB = 1 << 20
PY = f"/usr/lib/python3.{sys.version_info.minor}"


def build(work: Path) -> tuple[Path, Path, int]:
    """The image in both formats, and its uncompressed size."""
    runtime = host_entries(host_closure(["/usr/bin/python3", "/bin/true", "/bin/sh"]))
    layers = [
        write_layer(work / "runtime.tar", runtime + tree_entries(PY)),
        write_layer(work / "gcc.tar", tree_entries("/usr/lib/gcc")),
        write_layer(work / "locale.tar", tree_entries("/usr/share/locale")),
    ]
    size = sum(p.stat().st_size for p in layers)
    cfg = config(layers, env=["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
                 cmd=["/usr/bin/python3"])
    docker = write_docker_save(work / "bench.tar", [BuiltImage("bench:1", layers, cfg)])
    gz = []
    for plain in layers:  # the same tars, compressed
        packed = work / f"{plain.stem}.tar.gz"
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        gz.append(packed)
    oci = write_oci(work / "bench-oci", [BuiltImage("bench:oci", gz, cfg)])
    for p in layers + gz:
        p.unlink()
    return docker, oci, size


def timed_import(store_dir: str, path: Path) -> float:
    from sandboxd.images import Store, import_image

    t = time.perf_counter()
    import_image(Store(store_dir), str(path))
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_images: run as root", file=sys.stderr)
        return 2

    root = tempfile.mkdtemp(prefix="sandboxd-bench-images-", dir="/var/tmp")
    os.chmod(root, 0o755)
    work = Path(root) / "src"
    work.mkdir()
    out: dict[str, object] = {}
    try:
        t = time.perf_counter()
        docker, oci, size = build(work)
        print(f"built a {size / MiB:.0f} MiB image (3 layers) in {time.perf_counter() - t:.1f}s")
        out["image_mib"] = size / MiB
        imports = {}
        for label, path, store in (("docker save, tar layers", docker, "s1"),
                                   ("OCI layout, gzip layers", oci, "s2")):
            cold = timed_import(f"{root}/{store}", path)
            warm = timed_import(f"{root}/{store}", path)
            imports[label] = {"cold_s": cold, "warm_s": warm, "mib_per_s": size / MiB / cold}
            print(f"import {label:26} cold {cold:6.2f}s ({size / MiB / cold:5.0f} MiB/s)  "
                  f"again {warm * 1000:6.1f} ms")
        out["import"] = imports
        out["creation"] = creation(f"{root}/s1", args.rounds)
        out["fifty"] = fifty(f"{root}/s1")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["uname"] = os.uname().release
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def creation(store_dir: str, rounds: int) -> dict[str, float]:
    from sandboxd import cgroups, zygote
    from sandboxd.images import Store

    image = Store(store_dir).resolve("bench:1")
    zproc = zygote.start()
    import trio

    from sandboxd.container import Container, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    samples: dict[str, list[float]] = {}
    kinds = {"host root": {}, "image root": {"image": image.id, "image_store": store_dir}}
    commands = {"true": ["/bin/true"], "py": ["/usr/bin/python3", "-c", "pass"]}

    async def measure() -> None:
        backend = cgroups.open_backend(f"bench-img-{os.getpid()}")
        client = zygote.ZygoteClient(zproc)
        n = 0
        try:
            for i in range(rounds + 3):
                for cmd, argv in commands.items():
                    for kind, extra in kinds.items():
                        n += 1
                        t = time.perf_counter()
                        cg = backend.create(f"sandboxd-bench-{n}")
                        spawned = await client.spawn(ContainerSpec(
                            slot=n % 1000, box_size=16 * MiB, tmp_size=16 * MiB, **extra))
                        box = Container(spawned, cg)
                        await box.wait_ready()
                        t_ready = time.perf_counter()
                        result = await box.run(RunStep(argv=argv, limits=DEFAULT,
                                                       env={"PATH": "/usr/bin:/bin"}))
                        t_result = time.perf_counter()
                        await box.destroy()
                        if result.verdict != "ok":
                            raise RuntimeError(f"{kind} {cmd}: {result}")
                        if i >= 3:
                            samples.setdefault(f"{kind} ready", []).append(t_ready - t)
                            samples.setdefault(f"{kind} {cmd} result", []).append(t_result - t)
        finally:
            backend.close()
            await client.aclose()

    trio.run(measure)
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    print(f"\n{'container creation (ms)':30} {'median':>8} {'p90':>8} {'vs host':>8}")
    for key, values in sorted(samples.items()):
        host = med[key.replace("image root", "host root")]
        p90 = statistics.quantiles(values, n=10)[-1] * 1000
        print(f"{key:30} {med[key]:8.2f} {p90:8.2f} {med[key] / host:8.2f}")
    return med


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in f)}


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Pss:"))


def _evict(directory: str) -> None:
    """Drop a tree's files from the page cache (written back first: dirty pages stay)."""
    for top, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


JOB = ["/usr/bin/python3", "-c", "import json, email.parser, http.client, decimal, asyncio"]


def fifty(store_dir: str) -> dict[str, float]:
    """50 containers of one image at once: the disk and memory they add, and what 50 Python
    jobs that read the same modules cost in page cache."""
    import trio

    from sandboxd import cgroups, zygote
    from sandboxd.container import Container, RunStep
    from sandboxd.images import Store
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    store = Store(store_dir)
    image = store.resolve("bench:1")
    _evict(store.layers_dir)
    zproc = zygote.start()
    got: dict[str, float] = {}

    async def run() -> None:
        backend = cgroups.open_backend(f"bench-img50-{os.getpid()}")
        client = zygote.ZygoteClient(zproc)
        boxes = []
        disk0, m0 = store.disk_usage(), _meminfo()
        try:
            for i in range(50):
                spawned = await client.spawn(ContainerSpec(
                    slot=2000 + i, box_size=16 * MiB, tmp_size=16 * MiB, image=image.id,
                    image_store=store_dir))
                boxes.append(Container(spawned, backend.create(f"sandboxd-bench50-{i}")))
            async with trio.open_nursery() as nursery:
                for box in boxes:
                    nursery.start_soon(box.wait_ready)
            m1 = _meminfo()
            pss = [_pss(b.init_pid) + _pss(b.job_pid or b.init_pid) for b in boxes]
            peaks = []
            for box in boxes:
                result = await box.run(RunStep(argv=JOB, limits=DEFAULT,
                                               env={"PATH": "/usr/bin:/bin"}))
                if result.verdict != "ok":
                    raise RuntimeError(f"job: {result}")
                peaks.append(result.memory_peak)
            m2 = _meminfo()
            got.update(store_mib=disk0 / MiB, store_mib_with_50=store.disk_usage() / MiB,
                       pss_per_container_mib=statistics.median(pss) / MiB,
                       tmpfs_per_container_kib=(m1["Shmem"] - m0["Shmem"]) / 50 / 1024,
                       page_cache_50_jobs_mib=(m2["Cached"] - m1["Cached"]) / MiB,
                       first_job_peak_mib=peaks[0] / MiB,
                       other_jobs_peak_mib=statistics.median(peaks[1:]) / MiB)
        finally:
            with trio.CancelScope(shield=True):
                for box in boxes:
                    await box.destroy()
                backend.close()
                await client.aclose()

    trio.run(run)
    print(f"\n50 containers of one {image.size / MiB:.0f} MiB image at once:\n"
          f"  layers on disk          {got['store_mib']:.0f} MiB before, "
          f"{got['store_mib_with_50']:.0f} MiB with them (one copy)\n"
          f"  per ready container     {got['pss_per_container_mib']:.2f} MiB PSS (init + job "
          f"process), {got['tmpfs_per_container_kib']:.0f} KiB tmpfs (upper layer, /box, /tmp)\n"
          f"  50 python3 jobs         page cache +{got['page_cache_50_jobs_mib']:.1f} MiB in all;"
          f" memory peak {got['first_job_peak_mib']:.1f} MiB for the first job, "
          f"{got['other_jobs_peak_mib']:.1f} MiB (median) for the others")
    return got


if __name__ == "__main__":
    sys.exit(main())
