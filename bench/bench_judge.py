"""A checker problem judged (issue 17): sandboxd's judge loop against the same work done by
hand with bubblewrap, one process at a time, side by side in one run.

Usage (as root): ``.venv/bin/python bench/bench_judge.py [--rounds N] [--tests T]
[--json FILE]``

The problem is examples/problems/squares-partial: a C solution, T tests (default
50; n from 1,000 to 50,000 squares, so each output is 5 KB to 600 KB) and the
example's C++ checker, which speaks testlib's protocol.

- **sandboxd**: one job: the solution compiles once, each test runs in a fresh
  container and each output goes to the checker, which runs in a fresh container of
  its own (T runs + T checker runs). Two figures: ``cold`` (a new checker, so it
  compiles: the daemon's program cache is cleared by changing the checker's source
  with a comment), ``cached`` (the same checker again: its build comes from the
  cache). The daemon runs T tests on as many CPUs as the machine has.
- **bubblewrap by hand**: what a judge script would do without sandboxd, each step
  a ``bwrap`` process with the isolation docs/benchmarks.md gives it (no cgroup
  limits, no seccomp), one at a time: compile the solution, compile the checker,
  then for each test run the solution (stdin from the test's file, stdout to a
  file) and the checker on the three files.

Rounds alternate between the systems so both meet the same noise; medians are
reported, with every sample in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BWRAP, Client, start_daemon

import sandboxd_protocol as proto

ROOT = Path(__file__).resolve().parents[1]
CHECKER = (ROOT / "examples" / "problems" / "squares-partial" / "checker.cpp").read_bytes()
SOLUTION = b"""#include <stdio.h>
int main(void) {
    long long n;
    if (scanf("%lld", &n) != 1) return 1;
    for (long long i = 1; i <= n; i++) printf("%lld\\n", i * i);
    return 0;
}
"""


def test_sizes(count: int) -> list[int]:
    return [1000 + (49000 * i) // max(1, count - 1) for i in range(count)]


def run_sandboxd(c: Client, sizes: list[int], salt: str) -> tuple[float, proto.JobResult]:
    checker = CHECKER + f"\n// {salt}\n".encode()
    t = time.perf_counter()
    r = c.job(profile="c", files={"main.c": SOLUTION},
              tests=tuple(proto.TestCase(stdin=b"%d\n" % n) for n in sizes),
              checker=proto.Program(profile="cpp", files={"checker.cpp": checker}))
    elapsed = time.perf_counter() - t
    bad = [s for s in r.steps if s.verdict != "ok"]
    if r.compile is None or r.compile.verdict != "ok" or bad or len(r.steps) != len(sizes):
        raise RuntimeError(f"sandboxd: {r.compile} {bad[:1]}")
    return elapsed, r


def bwrap(box: Path, argv: list[str], stdin: Path | None = None,
          stdout: Path | None = None) -> int:
    """One step in a fresh bubblewrap sandbox with ``box`` as its writable /box."""
    cmd = [*BWRAP[:-1], "--bind", str(box), "/box", "--chdir", "/box", "--", *argv]
    with open(stdin or os.devnull, "rb") as i, open(stdout or os.devnull, "wb") as o:
        return subprocess.run(cmd, stdin=i, stdout=o, stderr=subprocess.DEVNULL).returncode


def run_bwrap(sizes: list[int]) -> float:
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-judge-") as tmp:
        box = Path(tmp)
        os.chmod(box, 0o777)
        (box / "main.c").write_bytes(SOLUTION)
        (box / "checker.cpp").write_bytes(CHECKER)
        for i, n in enumerate(sizes):
            (box / f"{i}.in").write_bytes(b"%d\n" % n)
        t = time.perf_counter()
        if bwrap(box, ["gcc", "-O2", "-pipe", "-o", "main", "main.c"]) != 0:
            raise RuntimeError("bwrap: the solution did not compile")
        if bwrap(box, ["g++", "-std=gnu++17", "-O2", "-pipe", "-o", "checker",
                       "checker.cpp"]) != 0:
            raise RuntimeError("bwrap: the checker did not compile")
        for i in range(len(sizes)):
            if bwrap(box, ["./main"], box / f"{i}.in", box / f"{i}.out") != 0:
                raise RuntimeError(f"bwrap: test {i} failed")
            code = bwrap(box, ["./checker", f"{i}.in", f"{i}.out", f"{i}.in"])
            if code != 0:
                raise RuntimeError(f"bwrap: the checker said {code} on test {i}")
        return time.perf_counter() - t


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tests", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("bwrap"):
        print("needs root and bubblewrap", file=sys.stderr)
        return 2
    sizes = test_sizes(args.tests)
    samples: dict[str, list[float]] = {"sandboxd_cold": [], "sandboxd_cached": [], "bwrap": []}
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-judge-"))
    d = start_daemon(tmp, pool_size=4, concurrency=os.cpu_count() or 1, name="-judge",
                     pool_profiles=("c", "cpp"))
    try:
        c = Client(d.socket)
        run_sandboxd(c, sizes[:2], "warm-up")  # the pools' first refills, page cache
        run_bwrap(sizes[:2])
        stats0 = d.stats().counters
        for k in range(args.rounds):
            salt = f"round {k} {time.time_ns()}"
            order = ["bwrap", "sandboxd"] if k % 2 else ["sandboxd", "bwrap"]
            for system in order:
                if system == "bwrap":
                    samples["bwrap"].append(run_bwrap(sizes))
                    continue
                t, _ = run_sandboxd(c, sizes, salt)
                samples["sandboxd_cold"].append(t)
                t, _ = run_sandboxd(c, sizes, salt)
                samples["sandboxd_cached"].append(t)
        stats1 = d.stats().counters
        c.close()
    finally:
        d.stop(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    report = {
        "tests": args.tests, "rounds": args.rounds, "cpus": os.cpu_count(),
        "load": os.getloadavg(), "samples_s": samples, "median_s": med,
        "ratio_cold_to_bwrap": med["sandboxd_cold"] / med["bwrap"],
        "ratio_cached_to_bwrap": med["sandboxd_cached"] / med["bwrap"],
        "program_cache_hits": stats1.get("program_cache_hits", 0)
        - stats0.get("program_cache_hits", 0),
        "compiles": stats1.get("compiles", 0) - stats0.get("compiles", 0),
    }
    print(f"checker problem, {args.tests} tests (compile once, {args.tests} runs + "
          f"{args.tests} checker runs), median of {args.rounds}, load {report['load'][0]:.1f}:")
    for k in ("sandboxd_cold", "sandboxd_cached", "bwrap"):
        print(f"  {k:16s} {med[k]:7.3f} s   per test {1000 * med[k] / args.tests:6.1f} ms")
    print(f"  sandboxd / bubblewrap: {report['ratio_cold_to_bwrap']:.2f} (checker compiled), "
          f"{report['ratio_cached_to_bwrap']:.2f} (checker cached); compiles in sandboxd: "
          f"{report['compiles']} compile steps for {2 * args.rounds} jobs (a solution each, the "
          "checker once a round)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
