"""An interactive problem with 20 tests (issue 17): sandboxd against doing the same by hand
with bubblewrap, side by side in one run.

Usage (as root): ``.venv/bin/python bench/bench_interactive.py [--rounds N] [--tests N]
[--json FILE]``

The problem is the guessing game of examples/problems/guess/: its C interactor and the
binary-search solution in C (``solutions/correct.c``), 20 tests ``n x`` with n up to
10^9 (about 30 questions each), so that each test is two programs talking, not two
programs starting.

- **sandboxd**: one job, client to client: the solution and the interactor compile
  once each (side by side, in containers of their own), then 20 tests, each two fresh
  containers wired stdout to stdin, up to the daemon's concurrency (the CPU count) at
  once. After each job the run waits until the daemon is idle again (pools refilled),
  as a user arriving at an idle service finds it.
- **bubblewrap, by hand, one process at a time**: ``gcc`` under bubblewrap for each of
  the two programs, then for each test two ``bwrap`` processes (each with its own
  namespaces, a fresh /tmp, the build bound in) started with two pipes between them
  by the benchmark, waited for, and the interactor's exit code checked; then the next.
- **bubblewrap, tests only**, and **sandboxd, tests only** (the job's wall time minus
  its compile steps' as the daemon measured them is not client to client, so instead a
  job whose programs are prebuilt: the built binaries are its files and its profile
  compiles nothing): the cost of the 20 wired pairs alone.

Rounds interleave the systems in a rotating order; figures are medians. Every sandboxd
run is fully isolated (namespaces, cgroup limits, seccomp, Landlock, its own uid), which
bubblewrap's is not (no memory limit, no seccomp): bubblewrap is the floor of a sandbox
that forks per process, not an equal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import BWRAP, Client
from suite import Daemon

import sandboxd_protocol as proto

GUESS = Path(__file__).resolve().parents[1] / "examples" / "problems" / "guess"
INTERACTOR_C = (GUESS / "interactor.c").read_bytes()
SOLUTION_C = (GUESS / "solutions" / "correct.c").read_bytes()
GCC = ["gcc", "-std=gnu17", "-O2", "-pipe", "-o", "main", "main.c", "-lm"]


def make_tests(count: int) -> list[bytes]:
    rng = random.Random(17)
    return [b"%d %d\n" % (n, rng.randint(1, n))
            for n in (rng.choice((10**3, 10**6, 10**9)) for _ in range(count))]


# ------------------------------------------------------------------ bubblewrap by hand

def bwrap(binds: list[str], argv: list[str]) -> list[str]:
    return [*BWRAP[:-1], *binds, "--chdir", "/box", "--", *argv]


def bwrap_compile(src: bytes, work: Path) -> Path:
    """Build ``src`` under bubblewrap in a directory of its own; the binary's path."""
    build = Path(tempfile.mkdtemp(prefix="sandboxd-bench-build-", dir=work))
    (build / "main.c").write_bytes(src)
    subprocess.run(bwrap(["--bind", str(build), "/box"], GCC), check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return build / "main"


def bwrap_pair(solution: Path, interactor: Path, test: bytes, work: Path) -> None:
    """One test: the two programs in two bwrap sandboxes wired by two pipes; raises unless
    the interactor said ok."""
    box = Path(tempfile.mkdtemp(prefix="sandboxd-bench-test-", dir=work))
    (box / "input.txt").write_bytes(test)
    (box / "output.txt").write_bytes(b"")
    to_int_r, to_int_w = os.pipe()
    to_sol_r, to_sol_w = os.pipe()
    try:
        inter = subprocess.Popen(
            bwrap(["--bind", str(box), "/box", "--ro-bind", str(interactor), "/box/interactor"],
                  ["./interactor", "input.txt", "output.txt"]),
            stdin=to_int_r, stdout=to_sol_w, stderr=subprocess.DEVNULL)
        sol = subprocess.Popen(
            bwrap(["--ro-bind", str(solution.parent), "/box"], ["./main"]),
            stdin=to_sol_r, stdout=to_int_w, stderr=subprocess.DEVNULL)
    finally:
        for fd in (to_int_r, to_int_w, to_sol_r, to_sol_w):
            os.close(fd)
    if inter.wait() != 0 or sol.wait() != 0:
        raise RuntimeError(f"bubblewrap pair failed: {inter.returncode}, {sol.returncode}")
    shutil.rmtree(box)


# ------------------------------------------------------------------ sandboxd

def sandboxd_job(client: Client, tests: list[bytes], files: dict[str, bytes],
                 interactor: dict[str, bytes], profile: str) -> None:
    res = client.job(profile=profile, files=files,
                     argv=None if profile == "c" else ("./main",),
                     limits=proto.JobLimits(cpu_time=2.0, wall_time=10.0),
                     tests=tuple(proto.TestCase(stdin=t) for t in tests),
                     interactor=proto.Program(profile=profile, files=interactor,
                                              argv=None if profile == "c" else ("./main",)))
    bad = [s for s in res.steps if s.verdict != "ok"]
    if len(res.steps) != len(tests) or bad:
        raise RuntimeError(f"sandboxd: {res.compile or bad[:1]}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv[1:])
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    tests = make_tests(args.tests)
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-interactive-") as tmp:
        work = Path(tmp)
        # The prebuilt binaries of the "tests only" runs, built once here.
        prebuilt_sol = bwrap_compile(SOLUTION_C, work).read_bytes()
        prebuilt_int = bwrap_compile(INTERACTOR_C, work).read_bytes()
        d = Daemon(work, "interactive", 2, pool_profiles=("c", "bash"))
        try:
            client = Client(d.daemon.socket)

            def by_hand(compile_too: bool) -> Callable[[], object]:
                def run() -> None:
                    if compile_too:
                        sol = bwrap_compile(SOLUTION_C, work)
                        inter = bwrap_compile(INTERACTOR_C, work)
                    else:
                        sol, inter = sol_bin, int_bin
                    for t in tests:
                        bwrap_pair(sol, inter, t, work)
                return run

            bins = Path(tempfile.mkdtemp(prefix="sandboxd-bench-bins-", dir=work))
            sol_bin, int_bin = bins / "sol" / "main", bins / "int"
            sol_bin.parent.mkdir()
            sol_bin.write_bytes(prebuilt_sol)
            int_bin.write_bytes(prebuilt_int)
            sol_bin.chmod(0o755)
            int_bin.chmod(0o755)
            systems: dict[str, Callable[[], object]] = {
                "sandboxd (compile + 20 tests)": lambda: sandboxd_job(
                    client, tests, {"main.c": SOLUTION_C}, {"main.c": INTERACTOR_C}, "c"),
                "bubblewrap by hand (compile + 20 tests)": by_hand(True),
                "sandboxd (20 tests, prebuilt)": lambda: sandboxd_job(
                    client, tests, {"main": prebuilt_sol}, {"main": prebuilt_int}, "bash"),
                "bubblewrap by hand (20 tests, prebuilt)": by_hand(False),
            }
            for fn in systems.values():  # warm-up: every pool shape exists and is full
                fn()
                d.settle()
            samples: dict[str, list[float]] = {name: [] for name in systems}
            names = list(systems)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    t = time.perf_counter()
                    systems[name]()
                    samples[name].append(time.perf_counter() - t)
                    if name.startswith("sandboxd"):
                        d.settle()
            client.close()
        finally:
            d.close()
    med = {name: statistics.median(v) for name, v in samples.items()}
    print(f"interactive problem, {len(tests)} tests, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'system':44} {'median':>9} {'min':>9} {'per test':>9}")
    for name, v in samples.items():
        print(f"{name:44} {med[name] * 1e3:7.1f}ms {min(v) * 1e3:7.1f}ms "
              f"{med[name] / len(tests) * 1e3:7.2f}ms")
    full = med["sandboxd (compile + 20 tests)"] / med["bubblewrap by hand (compile + 20 tests)"]
    only = med["sandboxd (20 tests, prebuilt)"] / med["bubblewrap by hand (20 tests, prebuilt)"]
    print(f"sandboxd / bubblewrap: {full:.2f} with the compiles, {only:.2f} tests only "
          "(target: <= 1)")
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "median": med,
                                         "ratio_full": full, "ratio_tests": only}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
