"""Cold-container latency, side by side: bare fork+exec, bubblewrap, sandboxd cold.

Usage: ``.venv/bin/python bench/bench_container.py [--rounds N] [--json FILE]``

Each round runs every system once per command, in turn, so that the noise of
this shared machine hits them all alike; medians and ratios come from the
same run. "sandboxd cold" is measured inside one long-running process, as the
daemon sees a pool miss: from asking the zygote for a new container to
holding the job's result (the container's destruction, which happens after
the result is sent, is reported separately as "cycle").

bubblewrap runs with the isolation of the peers' baseline (docs/benchmarks.md):
``--unshare-all`` (user, pid, net, ipc, uts, cgroup namespaces), read-only /usr,
new /proc and /dev, tmpfs /tmp; no cgroup limits, no seccomp. sandboxd adds a
per-job cgroup with limits, seccomp, Landlock, dropped capabilities and a
distinct uid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

from _common import BWRAP, COMMANDS, spawn_wait


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    from sandboxd import cgroups, zygote

    zproc = zygote.start()  # before trio: this process is single-threaded here
    import trio

    from sandboxd.container import Container, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    samples: dict[str, list[float]] = {}
    have_bwrap = shutil.which("bwrap") is not None

    async def measure() -> None:
        backend = cgroups.open_backend(f"bench-{os.getpid()}")
        client = zygote.ZygoteClient(zproc)
        n = 0
        try:
            for i in range(args.rounds + 3):
                for name, argv in COMMANDS.items():
                    rec = i >= 3  # warm-up rounds
                    dt = spawn_wait(argv)
                    if rec:
                        samples.setdefault(f"bare {name}", []).append(dt)
                    if have_bwrap:
                        dt = spawn_wait(BWRAP + argv)
                        if rec:
                            samples.setdefault(f"bwrap {name}", []).append(dt)
                    n += 1
                    t = time.perf_counter()
                    cg = backend.create(f"sandboxd-bench-{n}")
                    spawned = await client.spawn(ContainerSpec(slot=n % 1000, box_size=16 << 20,
                                                               tmp_size=16 << 20))
                    box = Container(spawned, cg)
                    await box.wait_ready()
                    result = await box.run(RunStep(argv=argv, limits=DEFAULT))
                    t_result = time.perf_counter()
                    await box.destroy()
                    t_done = time.perf_counter()
                    if result.verdict != "ok":
                        raise RuntimeError(f"sandboxd {name}: {result}")
                    if rec:
                        samples.setdefault(f"sandboxd-cold {name}", []).append(t_result - t)
                        samples.setdefault(f"sandboxd-cold-cycle {name}", []).append(t_done - t)
        finally:
            backend.close()
            await client.aclose()

    trio.run(measure)
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    print(f"{'system':28} {'median ms':>10} {'p90 ms':>8} {'vs bare':>8} {'vs bwrap':>9}")
    for key, values in samples.items():
        _kind, cmd = key.rsplit(" ", 1)
        p90 = statistics.quantiles(values, n=10)[-1] * 1000
        bare = med[f"bare {cmd}"]
        bw = med.get(f"bwrap {cmd}")
        vs_bw = f"{med[key] / bw:9.2f}" if bw else "      n/a"
        print(f"{key:28} {med[key]:10.2f} {p90:8.2f} {med[key] / bare:8.2f} {vs_bw}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples_s": samples, "median_ms": med, "rounds": args.rounds,
                       "uname": os.uname()._asdict()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
