"""What a job's egress allow-list costs at its start (sandboxd/egress.py).

Usage (as root): ``.venv/bin/python bench/bench_egress.py [--rounds N]``

One daemon (pool of 2 bash containers, ``egress_allow = ["192.0.2.0/24:*"]``, a
documentation network: nothing is contacted), then N rounds, each of two jobs
back to back on one connection, in an order that alternates: ``true`` with no
network, and ``true`` with ``network.allow = ["192.0.2.1:80"]`` (slirp4netns
started on the container's namespace, the nftables table loaded inside). After
each job the run waits until the pool is full again, so both start from a warm
container. Reported: client-to-client latency (median, p90) of each, and the
difference, which is the egress set-up (plus its teardown off the job's path).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandboxd_protocol as proto
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def wait_full(pid: int, want: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(leftovers.warm_containers(pid)) < want and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-egress-") as tmp:
        d = Daemon(Path(tmp), pool_profiles=["bash"], pool_size=2, concurrency=2,
                   egress_allow=["192.0.2.0/24:*"]).start()
        times: dict[str, list[float]] = {"none": [], "egress": []}
        try:
            c = d.connect()
            for i in range(args.rounds):
                kinds = ["none", "egress"] if i % 2 == 0 else ["egress", "none"]
                for kind in kinds:
                    wait_full(d.pid, 2)
                    net = proto.NetworkAccess(allow=("192.0.2.1:80",)) if kind == "egress" \
                        else None
                    t0 = time.perf_counter()
                    res = c.run(f"{kind}-{i}", "bash", files={"main.sh": b"true\n"},
                                argv=("true",), network=net)
                    times[kind].append(time.perf_counter() - t0)
                    assert res.steps[0].verdict == "ok", res
            c.close()
        finally:
            d.stop()
    for kind, xs in times.items():
        print(f"{kind:7s} median {statistics.median(xs) * 1e3:6.1f} ms  "
              f"p90 {pct(xs, 0.9) * 1e3:6.1f} ms  (n={len(xs)})")
    diff = statistics.median(times["egress"]) - statistics.median(times["none"])
    print(f"egress set-up, median difference: {diff * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
