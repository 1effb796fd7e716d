"""The judge workflow through a real daemon (issue 6): compile once, a fresh container per
test, comparison, stop_on_failure, per-test limits, compile output, repeat, and pinning.

Each test starts its own daemon (2 CPUs here: ``concurrency = 2``) and talks
to it with the bare protocol. Proofs are chosen so that they cannot be faked
by the workflow under test: a batch compiles once by the daemon's own
``compiles`` counter *and* by a random build id that the compiler makes and
all 20 tests print; tests do not reach each other by what each finds when it
starts (files, processes) and by what is left of the daemon's process tree
after the job.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import pytest

import sandboxd_protocol as proto
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Client, Daemon

pytestmark = pytest.mark.root

CONFIG = {"concurrency": 2, "pool_size": 2}


def daemon(tmp_path: Path, *profiles: str) -> Daemon:
    return Daemon(tmp_path, pool_profiles=list(profiles), **CONFIG)


def counter(d: Daemon, name: str) -> int:
    return int(d.stats().counters.get(name, 0))


# ------------------------------------------------------------------ compile once

DOUBLE = b"""
#include <stdio.h>
int main(void) {
    char id[64] = "";
    FILE *f = fopen("build_id", "r");
    if (!f || !fgets(id, sizeof id, f)) return 2;
    long x;
    if (scanf("%ld", &x) != 1) return 3;
    printf("%ld\\n", 2 * x);
    fprintf(stderr, "%s", id);
    return 0;
}
"""
# The compiler step also writes 16 random hex digits: compiled twice, two ids.
COMPILE = ["/bin/sh", "-c", "gcc -O2 -o main main.c && od -An -N8 -tx1 /dev/urandom "
           "| tr -d ' \\n' > build_id && cat build_id"]


def test_a_batch_of_20_tests_compiles_exactly_once(tmp_path: Path) -> None:
    with daemon(tmp_path, "c") as d:
        c = d.connect()
        before = counter(d, "compiles")
        tests = [proto.TestCase(stdin=b"%d\n" % i, expected_output=b"%d\n" % (2 * i))
                 for i in range(20)]
        r = c.run("batch", "c", files={"main.c": DOUBLE}, tests=tests,
                  compile=proto.CompileStep(argv=COMPILE))
        assert r.compile is not None and r.compile.verdict == "ok", r.compile
        build_id = r.compile.stdout
        assert re.fullmatch(rb"[0-9a-f]{16}", build_id), build_id
        assert [s.verdict for s in r.steps] == ["ok"] * 20
        assert [s.stdout for s in r.steps] == [b"%d\n" % (2 * i) for i in range(20)]
        assert {s.stderr for s in r.steps} == {build_id}  # one build, seen by every test
        assert counter(d, "compiles") - before == 1


# ------------------------------------------------------------- test isolation

NOSY = b"""
read i
seen=$(ls -A /box /tmp /dev/shm | grep -c '^marker' || true)
sleepers=0
for p in /proc/[0-9]*; do
    [ "$(cat $p/comm 2>/dev/null)" = sleep ] && sleepers=$((sleepers + 1))
done
echo "seen=$seen sleepers=$sleepers"
for d in /box /tmp /dev/shm; do echo "$i" > $d/marker-$i; done
setsid sleep 300 </dev/null >/dev/null 2>&1 &
nohup sleep 300 </dev/null >/dev/null 2>&1 &
disown -a
"""


def test_files_and_processes_of_a_test_never_reach_the_next(tmp_path: Path) -> None:
    """12 tests, 2 at a time: each starts clean (no marker file in /box, /tmp or
    /dev/shm, no sleeper in sight), then leaves both behind; after the job no
    sleeper is left anywhere under the daemon."""
    with daemon(tmp_path, "bash") as d:
        c = d.connect()
        tests = [proto.TestCase(stdin=b"%d\n" % i, expected_output=b"seen=0 sleepers=0\n")
                 for i in range(12)]
        r = c.run("nosy", "bash", files={"main.sh": NOSY}, tests=tests)
        assert [s.verdict for s in r.steps] == ["ok"] * 12, [s.stdout for s in r.steps]
        time.sleep(0.2)  # containers are destroyed just after the result is sent
        assert d.proc is not None
        under = leftovers.descendants(d.proc.pid)
        sleepers = [p for p in leftovers.container_processes() if p[0] in under
                    and p[2] == "sleep"]
        assert sleepers == []


# ----------------------------------------------------------------- comparison

FLOAT = b'print("1  0.3333334 \\r")\nprint()\n'


@pytest.mark.parametrize(("compare", "tolerance", "expected", "verdict"), [
    ("trailing_ws", None, b"1  0.3333334", "ok"),
    ("trailing_ws", None, b"1 0.3333334", "wrong_answer"),  # inner spaces count
    ("exact", None, b"1  0.3333334\n", "wrong_answer"),
    ("tokens", None, b"1 0.3333334", "ok"),
    ("tokens", None, b"1 0.3333333", "wrong_answer"),
    ("tokens", 1e-6, b"1 0.3333333", "ok"),
    ("tokens", 1e-9, b"1 0.3333333", "wrong_answer"),
])
def test_comparison_modes(tmp_path: Path, compare: str, tolerance: float | None,
                          expected: bytes, verdict: str) -> None:
    with daemon(tmp_path, "python3") as d:
        r = d.connect().run("cmp", "python3", files={"main.py": FLOAT}, compare=compare,
                            float_tolerance=tolerance,
                            tests=[proto.TestCase(expected_output=expected)])
        assert r.steps[0].verdict == verdict, r.steps[0]


# ------------------------------------------------- order, parallelism, limits

MODES = b"""
read mode
case $mode in
    spin) while :; do :; done ;;
    fail) echo failing; exit 1 ;;
    sleep*) sleep ${mode#sleep} ;;
esac
echo "$mode"
"""


def run_modes(c: Client, job: str, modes: list[bytes], **kw: object) -> proto.JobResult:
    tests = [proto.TestCase(stdin=m + b"\n", expected_output=m + b"\n") for m in modes]
    return c.run(job, "bash", files={"main.sh": MODES}, tests=tests, **kw)


def test_tests_run_in_parallel_and_come_back_in_order(tmp_path: Path) -> None:
    with daemon(tmp_path, "bash") as d:
        c = d.connect()
        t = time.monotonic()
        r = run_modes(c, "par", [b"sleep1", b"sleep0.2", b"sleep1", b"sleep0.2"])
        elapsed = time.monotonic() - t
        assert [s.stdout for s in r.steps] == [b"sleep1\n", b"sleep0.2\n", b"sleep1\n",
                                               b"sleep0.2\n"]
        # One at a time, the whole takes at least the sum of the steps' walls (2.4 s and
        # more); two at a time, about half. Compared with the same run's walls, which a
        # loaded host stretches alike, not with a fixed bound.
        walls = sum(s.wall_time for s in r.steps)
        assert elapsed < walls - 0.6, (elapsed, [s.wall_time for s in r.steps])


def test_per_test_limits_and_stop_on_failure(tmp_path: Path) -> None:
    with daemon(tmp_path, "bash") as d:
        c = d.connect()
        tests = [proto.TestCase(stdin=b"ok\n", expected_output=b"ok\n"),
                 proto.TestCase(stdin=b"spin\n", limits=proto.JobLimits(cpu_time=0.3)),
                 proto.TestCase(stdin=b"ok\n", expected_output=b"ok\n")]
        r = c.run("lim", "bash", files={"main.sh": MODES}, tests=tests)
        assert [s.verdict for s in r.steps] == ["ok", "time_limit", "ok"]
        assert r.steps[1].reason == "cpu" and 0.3 <= r.steps[1].cpu_time < 0.4

        r = run_modes(c, "stop", [b"ok", b"ok", b"fail", b"ok", b"sleep5", b"ok"],
                      stop_on_failure=True)
        assert [s.verdict for s in r.steps] == ["ok", "ok", "runtime_error", "cancelled",
                                                "cancelled", "cancelled"]
        assert r.steps[3].reason == "skipped after an earlier test failed"


# -------------------------------------------------------------- compile output

NOISY_C = "\n".join(f"undeclared_type_{i} v{i};" for i in range(3000)).encode()


def test_compile_errors_are_capped_and_streamed(tmp_path: Path) -> None:
    with daemon(tmp_path, "c") as d:
        c = d.connect()
        c.submit("ce", "c", files={"main.c": NOISY_C}, stream=True,
                 tests=[proto.TestCase()])
        res, events = c.result("ce")
        assert isinstance(res, proto.JobResult) and res.compile is not None
        ce = res.compile
        assert ce.verdict == "compile_error" and not res.steps
        assert ce.stderr_truncated and len(ce.stderr) == 64 * 1024, len(ce.stderr)
        assert ce.reason == "output_limit (stderr)"
        assert b"undeclared_type_0" in ce.stderr
        chunks = [e for e in events if isinstance(e, proto.OutputChunk)]
        assert chunks and all(e.compile and e.step == 0 for e in chunks)
        assert b"".join(e.data for e in chunks if e.stream == "stderr") == ce.stderr

        # a good compile streams its (empty) output, then the run's, marked as such
        c.submit("ok", "c", files={"main.c": b'#include <stdio.h>\nint main(void) '
                                   b'{ puts("run output"); return 0; }'}, stream=True)
        res, events = c.result("ok")
        chunks = [e for e in events if isinstance(e, proto.OutputChunk)]
        assert [(e.compile, e.data) for e in chunks] == [(False, b"run output\n")]


# -------------------------------------------------------------------- repeat

ONCE = b"""
[ -e /box/ran-here ] && { echo "this container ran a job before"; exit 1; }
: > /box/ran-here
echo fresh
"""


def test_repeat_reports_the_spread_and_the_run_it_chose(tmp_path: Path) -> None:
    with daemon(tmp_path, "bash") as d:
        r = d.connect().run("rep", "bash", files={"main.sh": ONCE},
                            tests=[proto.TestCase(expected_output=b"fresh\n", repeat=5)])
        step = r.steps[0]
        assert step.verdict == "ok", step  # a reused container would have failed
        rp = step.repeat
        assert rp is not None and rp.runs == 5 and rp.chosen is not None
        assert rp.cpu_time_min <= rp.cpu_time_median <= rp.cpu_time_max
        assert rp.wall_time_min <= rp.wall_time_median <= rp.wall_time_max
        assert step.cpu_time == rp.cpu_time_median  # odd N: the median run is reported
        assert rp.memory_peak_max >= step.memory_peak > 0


# ------------------------------------------------------------------- pinning

WHERE = b"""
start=$(date +%s.%N)
cpus=$(sed -n 's/^Cpus_allowed_list:\\s*//p' /proc/self/status)
sleep 0.8
echo "$cpus $start $(date +%s.%N)"
"""


def test_pinned_runs_get_a_cpu_of_their_own(tmp_path: Path) -> None:
    with daemon(tmp_path, "bash") as d:
        c = d.connect()
        r = c.run("free", "bash", files={"main.sh": WHERE})
        everything = r.steps[0].stdout.split()[0]
        before = counter(d, "pinned_steps")
        r = c.run("pin", "bash", files={"main.sh": WHERE}, cpuset_pin=True,
                  tests=[proto.TestCase() for _ in range(4)])
        assert counter(d, "pinned_steps") - before == 4
        runs = []
        for s in r.steps:
            cpus, start, end = s.stdout.split()
            assert re.fullmatch(rb"\d+", cpus), (cpus, "one CPU, not", everything)
            runs.append((int(cpus), float(start), float(end)))
        assert everything != runs[0][0]
        overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]
                       if a[1] < b[2] and b[1] < a[2]]
        assert overlapping, "2 at a time: some runs overlap"
        for a, b in overlapping:
            assert a[0] != b[0], f"two pinned runs shared CPU {a[0]} at the same time"


BUSY = b"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    unsigned long n = strtoul(argv[1], 0, 10), x = 88172645463325252UL;
    for (unsigned long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    printf("%lu\\n", x & 1);
    return 0;
}
"""


def spread(samples: list[float]) -> float:
    """(max - min) / median: how far apart runs of the same work are."""
    return (max(samples) - min(samples)) / statistics.median(samples)


def typical_spread(samples: list[float]) -> float:
    """Median absolute deviation / median: how far a typical run lies from the others.
    Runs that met a load burst on a shared host (up to half of them, of the bare control
    or of sandboxd's) do not move it, while noise sandboxd added to every run would."""
    mid = statistics.median(samples)
    return statistics.median(abs(x - mid) for x in samples) / mid


def bare_cpu_time(exe: Path, n: int, cpu: int) -> float:
    """CPU time (user + system, the kernel's rusage) of one bare run of ``exe n`` pinned to
    ``cpu``: the control, no sandbox at all."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.sched_setaffinity(0, {cpu})
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.execv(str(exe), [str(exe), str(n)])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_utime + usage.ru_stime


ROUNDS = 10
# How much wider sandboxd's spread may be than the bare control's, in the same run: 3
# points, or half the control's own spread on a host noisy enough that 10 samples move
# that much from one series to the next (max - min measured here: both 0.4-3.8 % on a
# quiet host; at a load of 10-28 on 2 cores one sample in either series could be 15 %
# off; a clean-clone CI run had the middle half of sandboxd's runs (0.193-0.218 s) 7 %
# apart against the bare ones' 2.4 %, and three quiet reruns 0.4-0.6 % against 0.1-0.9 %:
# so the check is on the typical run, typical_spread).
SPREAD_MARGIN = 0.03


@pytest.mark.slow
def test_pinned_cpu_time_spread(tmp_path: Path) -> None:
    """A fixed CPU workload (a register-only busy loop calibrated here to 0.2 s), run
    pinned in a fresh container 10 times, varies no more than the same binary run bare
    and pinned, interleaved with it, plus a small margin: sandboxd adds no noise of its
    own to CPU time. The host's own noise (CPU speed varies on a shared VM: 7-11 % here)
    is the control's, not a failure; the absolute target (< 5 %) is bench/'s
    (``cpu_spread`` in docs/benchmarks.md)."""
    exe = tmp_path / "busy"
    src = tmp_path / "busy.c"
    src.write_bytes(BUSY)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    cpu = min(os.sched_getaffinity(0))  # the CPU the daemon's allocator hands out first
    n0 = 100_000_000
    n = round(n0 * 0.2 / statistics.median(bare_cpu_time(exe, n0, cpu) for _ in range(3)))
    sandboxed: list[float] = []
    bare: list[float] = []
    with daemon(tmp_path, "c") as d:
        c = d.connect()
        for i in range(ROUNDS):
            r = c.run(f"pinned-{i}", "c", files={"main.c": BUSY}, argv=["./main", str(n)],
                      cpuset_pin=True, tests=[proto.TestCase()])
            assert r.steps[0].verdict == "ok", r.steps[0]
            sandboxed.append(r.steps[0].cpu_time)
            d.wait_warm()  # the pool's refills must not land on the control's run
            bare.append(bare_cpu_time(exe, n, cpu))
    for name, runs in (("sandboxd", sandboxed), ("bare", bare)):
        print(f"\n{name}: {ROUNDS} pinned runs of {n} iterations: CPU min {min(runs):.4f} s, "
              f"median {statistics.median(runs):.4f} s, max {max(runs):.4f} s, "
              f"spread {100 * spread(runs):.2f} %, typical {100 * typical_spread(runs):.2f} %")
    # The same work, counted by the job's cgroup and by the kernel's rusage: they agree.
    assert 0.9 < statistics.median(sandboxed) / statistics.median(bare) < 1.1, (sandboxed, bare)
    margin = max(SPREAD_MARGIN, typical_spread(bare) / 2)
    assert typical_spread(sandboxed) <= typical_spread(bare) + margin, (
        f"typical: sandboxd {100 * typical_spread(sandboxed):.2f} % vs bare "
        f"{100 * typical_spread(bare):.2f} % (max - min: {100 * spread(sandboxed):.2f} % vs "
        f"{100 * spread(bare):.2f} %; runs {sandboxed} vs {bare})")
