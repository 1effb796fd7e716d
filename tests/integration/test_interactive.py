"""Interactive problems through a real daemon (issue 17): the solution and the problem's
interactor run at once in two containers, wired stdout to stdin both ways.

One daemon for the module (concurrency 2). The guessing game of
examples/problems/guess/ is the problem: its interactor (C, testlib's exit codes) and
its solutions are the files shipped there. Hostile or broken sides are small Python
or shell programs written here. Every test ends with the host-wide leftovers check
(tests/conftest.py) seen through the daemon; the module checks the daemon left nothing
once it stops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandboxd_protocol as proto
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon, module_daemon

pytestmark = pytest.mark.root

GUESS = Path(__file__).resolve().parents[2] / "examples" / "problems" / "guess"
INTERACTOR = proto.Program(profile="c", files={"main.c": (GUESS / "interactor.c").read_bytes()},
                           limits=proto.JobLimits(cpu_time=2.0))
CORRECT = (GUESS / "solutions" / "correct.py").read_bytes()
LINEAR = (GUESS / "solutions" / "linear.py").read_bytes()
WRONG = (GUESS / "solutions" / "wrong.py").read_bytes()
FAST = proto.JobLimits(cpu_time=1.0, wall_time=3.0)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from module_daemon(tmp_path_factory.mktemp("interactive"), pool_profiles=["python3", "c"],
                             pool_size=2, concurrency=2)


@pytest.fixture
def leftovers_view(daemon: Daemon) -> Iterator[leftovers.View | None]:
    """The daemon's view, once its pool has refilled: a test takes up to four containers
    per interactive test, and the refills still being built are not leftovers."""
    daemon.wait_warm()
    inner = leftovers.daemon_view(daemon.pid, daemon.instance)

    def view(snap: leftovers.Snapshot) -> leftovers.Snapshot:
        # Only this daemon's tree: other suites on a shared machine make containers
        # meanwhile. A container it failed to destroy stays in its tree (the zygote's
        # child); whatever escapes it is caught once the daemon stops (the module's check).
        daemon.wait_warm()
        out = inner(snap)
        ours = leftovers.descendants(daemon.pid)
        return {**out, "procs": [p for p in out["procs"] if p[0] in ours]}  # type: ignore[attr-defined]

    yield view


def judge(d: Daemon, solution: bytes, tests: list[bytes], *, profile: str = "python3",
          interactor: proto.Program = INTERACTOR, limits: proto.JobLimits | None = FAST,
          entry: str = "main.py", **kw: Any) -> proto.JobResult:
    c = d.connect()
    try:
        return c.job(profile=profile, files={entry: solution}, limits=limits,
                     tests=tuple(proto.TestCase(stdin=t) for t in tests),
                     interactor=interactor, **kw)
    finally:
        c.close()


def py_interactor(source: str, **limits: Any) -> proto.Program:
    return proto.Program(profile="python3", files={"main.py": source.encode()},
                         limits=proto.JobLimits(**limits) if limits else None)


def verdicts(r: proto.JobResult) -> list[str]:
    return [s.verdict for s in r.steps]


# ------------------------------------------------------------------ the game itself

def test_accepted_wrong_and_partial(daemon: Daemon) -> None:
    tests = [(GUESS / "tests" / f"{i:02d}.in").read_bytes() for i in range(1, 11)]
    r = judge(daemon, CORRECT, tests)
    assert verdicts(r) == ["ok"] * 10, r
    assert all(s.score == 1.0 for s in r.steps)
    assert all(s.interactor is not None and s.interactor.exit_code == 0 for s in r.steps)
    assert r.steps[7].checker_message and "found in" in r.steps[7].checker_message
    assert r.steps[0].stdout == b""  # the solution's stdout went to the interactor

    r = judge(daemon, WRONG, [b"10 7\n", b"10 1\n"])
    assert verdicts(r) == ["wrong_answer", "ok"], r
    assert r.steps[0].checker_message == "wrong guess 1" and r.steps[0].score == 0.0

    # Linear search on n=8 (limit 4 questions): x=3 ok, x=7 partial (7 <= 8), n=100 WA
    r = judge(daemon, LINEAR, [b"8 3\n", b"8 7\n", b"100 90\n"])
    assert verdicts(r) == ["ok", "wrong_answer", "wrong_answer"], r
    assert r.steps[1].reason == "partial (0.5)" and r.steps[1].score == 0.5
    assert r.steps[2].score == 0.0 and "too many questions" in (r.steps[2].checker_message or "")


def test_a_compiled_solution_and_the_answer_file(daemon: Daemon) -> None:
    """A C solution against the C interactor; the test's expected answer reaches the
    interactor as its third file."""
    r = judge(daemon, (GUESS / "solutions" / "correct.c").read_bytes(),
              [b"1000000 123457\n"], profile="c", entry="main.c")
    assert r.compile is not None and r.compile.verdict == "ok"
    assert verdicts(r) == ["ok"], r
    show = py_interactor("import sys\nprint(sys.argv[1:], open(sys.argv[1]).read(), "
                         "open(sys.argv[3]).read(), file=sys.stderr)\n")
    c = daemon.connect()
    try:
        r = c.job(profile="python3", files={"main.py": b"pass\n"}, interactor=show,
                  tests=(proto.TestCase(stdin=b"IN", expected_output=b"ANS"),))
    finally:
        c.close()
    assert verdicts(r) == ["ok"], r
    assert r.steps[0].checker_message == "['input.txt', 'output.txt', 'answer.txt'] IN ANS"


# ------------------------------------------------------------- the interactor's failure

@pytest.mark.parametrize(("source", "why"), [
    ("import sys\nsys.exit(3)\n", "interactor failed (exit code 3)"),
    ("import os\nos.abort()\n", "interactor: runtime_error (signal SIGABRT)"),
    ("while True: pass\n", "interactor: time_limit (cpu)"),
    ("import sys\nsys.exit(5)\n", "interactor: runtime_error (exit code 5)"),
    ("import sys\nprint('no points here', file=sys.stderr)\nsys.exit(7)\n",
     "interactor exited 7 (partial) without 'points X' on its stderr"),
])
def test_an_interactor_that_fails_is_judge_error(daemon: Daemon, source: str, why: str) -> None:
    r = judge(daemon, CORRECT, [b"10 7\n"], interactor=py_interactor(source, cpu_time=0.5))
    assert verdicts(r) == ["judge_error"], r
    assert r.steps[0].reason == why


def test_an_interactor_that_does_not_compile(daemon: Daemon) -> None:
    broken = proto.Program(profile="c", files={"main.c": b"int main( {"})
    r = judge(daemon, CORRECT, [b"10 7\n", b"8 3\n"], interactor=broken)
    assert verdicts(r) == ["judge_error"] * 2, r
    assert r.steps[0].reason and r.steps[0].reason.startswith("the interactor did not compile")
    assert r.compile is None  # python3 compiles nothing; the solution is not blamed


# ------------------------------------------------- the solution's limits and precedence

def test_the_solutions_own_failure_first_wins_over_the_interactors_wa(daemon: Daemon) -> None:
    spin = b"n = int(input())\nwhile True: pass\n"
    hog = b"n = int(input())\nx = bytearray(1 << 30)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
    crash = b"n = int(input())\nimport os\nos.kill(os.getpid(), 11)\n"
    r = judge(daemon, spin, [b"10 7\n"], limits=proto.JobLimits(cpu_time=0.5, wall_time=20))
    assert (r.steps[0].verdict, r.steps[0].reason) == ("time_limit", "cpu"), r
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 1
    r = judge(daemon, hog, [b"10 7\n"],
              limits=proto.JobLimits(cpu_time=5.0, wall_time=20.0, memory=64 << 20))
    assert r.steps[0].verdict == "memory_limit", r
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 1
    r = judge(daemon, crash, [b"10 7\n"], limits=proto.JobLimits(cpu_time=5, wall_time=20))
    assert (r.steps[0].verdict, r.steps[0].reason) == ("runtime_error", "signal SIGSEGV"), r
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 1


def test_the_interactors_wa_first_wins_and_ends_the_solution(daemon: Daemon) -> None:
    """A malformed line makes the interactor say WA at once; the solution, still
    running (it would spin until its CPU limit), is killed: WA, not time_limit."""
    spin_after = b"n = int(input())\nprint('hello 1', flush=True)\nwhile True: pass\n"
    r = judge(daemon, spin_after, [b"10 7\n"], limits=proto.JobLimits(cpu_time=5, wall_time=10))
    assert r.steps[0].verdict == "wrong_answer", r
    assert r.steps[0].cpu_time < 4.0  # killed when the interactor decided


def test_a_solution_after_an_ok_interactor_must_still_end_well(daemon: Daemon) -> None:
    late = CORRECT + b"\nimport sys\nsys.exit(4)\n"
    r = judge(daemon, late, [b"10 7\n"])
    assert (r.steps[0].verdict, r.steps[0].reason) == ("runtime_error", "exit code 4"), r
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 0


def test_deadlock_ends_at_the_wall_limit(daemon: Daemon) -> None:
    """Both read, neither writes: the solution's wall limit, said so."""
    waits = b"import sys\nsys.stdin.read()\n"
    reads = py_interactor("import sys\nsys.stdin.read()\nsys.exit(1)\n")
    r = judge(daemon, waits, [b"x"], interactor=reads,
              limits=proto.JobLimits(cpu_time=1.0, wall_time=1.0))
    assert (r.steps[0].verdict, r.steps[0].reason) == ("time_limit", "wall"), r
    assert r.steps[0].wall_time >= 1.0
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 1


# ------------------------------------------------------------------- early exits

def test_early_exits_on_either_side(daemon: Daemon) -> None:
    # The solution leaves at once: the interactor reads the end of its output (WA).
    r = judge(daemon, b"", [b"10 7\n"])
    assert r.steps[0].verdict == "wrong_answer", r
    assert "ended" in (r.steps[0].checker_message or "")
    # The interactor leaves at once with ok, and the solution waits for its reply:
    # it reads end of file and fails by itself (its own runtime error).
    quick = py_interactor("import sys\nsys.exit(0)\n")
    r = judge(daemon, CORRECT, [b"10 7\n"], interactor=quick)
    assert r.steps[0].verdict == "runtime_error", r
    assert b"EOFError" in r.steps[0].stderr
    # The interactor leaves with WA while the solution writes: WA (it came first).
    bail = py_interactor("import sys\nsys.exit(1)\n")
    writes = b"import time\nwhile True:\n    print('? 1', flush=True)\n    time.sleep(0.01)\n"
    r = judge(daemon, writes, [b"10 7\n"], interactor=bail)
    assert r.steps[0].verdict == "wrong_answer", r


def test_a_flood_reaches_a_defined_verdict(daemon: Daemon) -> None:
    flood = b"import sys\nn = input()\nb = b'?' * 65536\nwhile True: sys.stdout.buffer.write(b)\n"
    # The guess interactor reads it, rejects the line: WA, the flood killed.
    r = judge(daemon, flood, [b"10 7\n"])
    assert r.steps[0].verdict == "wrong_answer", r
    # An interactor that never reads: the flood fills the pipe and blocks; wall limit.
    deaf = py_interactor("import time\ntime.sleep(60)\n", wall_time=30)
    r = judge(daemon, flood, [b"10 7\n"], interactor=deaf,
              limits=proto.JobLimits(cpu_time=1.0, wall_time=1.0))
    assert (r.steps[0].verdict, r.steps[0].reason) == ("time_limit", "wall"), r
    # The deaf interactor did not sleep on: the solution's failure decided the test.
    assert r.steps[0].interactor is not None and r.steps[0].interactor.wall_time < 10, r
    # An interactor that reads everything: the solution's own CPU limit.
    sink = py_interactor("import sys\nwhile sys.stdin.buffer.read(1 << 16): pass\n")
    blind = b"import sys\nb = b'?' * 65536\nwhile True: sys.stdout.buffer.write(b)\n"
    r = judge(daemon, blind, [b"10 7\n"], interactor=sink,
              limits=proto.JobLimits(cpu_time=0.5, wall_time=20.0))
    assert (r.steps[0].verdict, r.steps[0].reason) == ("time_limit", "cpu"), r


def test_a_solution_that_forks_and_holds_the_pipe(daemon: Daemon) -> None:
    """A child keeps the solution's stdin and stdout open after the parent exits; the
    interactor waits for the end of the solution's output. The solution's cgroup dies
    with its main process, so the interactor sees EOF and nothing is left."""
    holder = (b"import os, time\nn = int(input())\n"
              b"if os.fork() == 0:\n    time.sleep(60)\n"
              b"print('! 7', flush=True)\n")
    waits_eof = py_interactor("import sys\nprint(10, flush=True)\nsys.stdin.readline()\n"
                              "sys.stdin.read()\n"
                              "print('saw EOF', file=sys.stderr)\n", wall_time=20)
    r = judge(daemon, holder, [b"10 7\n"], interactor=waits_eof)
    assert r.steps[0].verdict == "ok", r
    assert r.steps[0].checker_message == "saw EOF"
    assert r.steps[0].interactor is not None and r.steps[0].interactor.wall_time < 10
    # The same against the real interactor, after it said ok and left.
    r = judge(daemon, holder, [b"10 7\n"])
    assert r.steps[0].verdict == "ok", r


# ----------------------------------------------------------------------- isolation

def test_the_solution_cannot_reach_the_interactor(daemon: Daemon) -> None:
    """The interactor holds a secret in its box and runs as a process; the solution
    looks for both (files, /proc, signals to every pid) and reports what it found on
    its stderr. It must find nothing, and the interactor must live to say ok."""
    secret = "sandboxd-secret-6f1c"
    inter = py_interactor(
        "import sys, os\n"
        f"open('secret.txt', 'w').write('{secret}')\n"
        "print('go', flush=True)\n"
        "line = sys.stdin.readline().strip()\n"
        "sys.exit(0 if line == 'done' else 1)\n")
    attack = (
        "import os, signal, sys\n"
        "input()\n"
        "found = []\n"
        f"needle = b'{secret}'\n"
        "for root in ('/', '/proc'):\n"
        "    for dirpath, dirs, files in os.walk(root):\n"
        "        if dirpath.startswith(('/proc/sys', '/sys', '/dev')) or dirpath.count('/') > 4:\n"
        "            dirs[:] = []\n"
        "        for f in files:\n"
        "            p = os.path.join(dirpath, f)\n"
        "            if f in ('secret.txt', 'environ', 'cmdline'):\n"
        "                try:\n"
        "                    if needle in open(p, 'rb').read(): found.append(p)\n"
        "                except OSError: pass\n"
        "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
        "for pid in range(2, 4096):\n"
        "    if pid == os.getpid(): continue\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL); found.append(f'killed {pid}')\n"
        "    except OSError: pass\n"
        "print('seen pids', pids, 'found', found, file=sys.stderr)\n"
        "print('done', flush=True)\n")
    r = judge(daemon, attack.encode(), [b""], interactor=inter,
              limits=proto.JobLimits(cpu_time=5.0, wall_time=10.0))
    assert r.steps[0].verdict == "ok", r
    assert b"found []" in r.steps[0].stderr, r.steps[0].stderr
    assert r.steps[0].interactor is not None and r.steps[0].interactor.exit_code == 0


def test_refused_interactive_jobs(daemon: Daemon) -> None:
    c = daemon.connect()
    try:
        c.submit("a", "python3", files={"main.py": CORRECT}, interactor=INTERACTOR,
                 tests=(proto.TestCase(stdin=b"10 7\n", repeat=3),))
        res, _ = c.result("a")
        assert isinstance(res, proto.ErrorReport) and "repeat" in res.message, res
        c.submit("b", "python3", files={"main.py": CORRECT},
                 interactor=proto.Program(profile="no-such-profile", files={"x": b""}))
        res, _ = c.result("b")
        assert isinstance(res, proto.ErrorReport) and res.code == "unknown_profile", res
    finally:
        c.close()


def test_subtasks_and_generated_tests_of_an_interactive_problem(daemon: Daemon) -> None:
    """Batches with an interactor (the judge loop runs the wired tests): a generator
    writes the interactor's input, stop_on_failure skips the rest of a batch, a batch
    that depends on a failed one is skipped, partial points score a batch by its lowest."""
    gen = proto.Program(profile="python3", files={"main.py": b"import sys\nprint(*sys.argv[1:])\n"})
    tests = (proto.TestCase(stdin=b"8 3\n"),                                      # 0: easy
             proto.TestCase(stdin=b"10 7\n"),                                     # 1
             proto.TestCase(generator=0, generator_args=("100", "100")),          # 2
             proto.TestCase(stdin=b"8 5\n"),                                      # 3
             proto.TestCase(generator=0, generator_args=("1000000", "123457")))   # 4
    batches = (proto.Batch(name="a", tests=(0, 1), points=30),
               proto.Batch(name="b", tests=(2, 3), points=30, stop_on_failure=True),
               proto.Batch(name="c", tests=(4,), points=40, depends=("b",)))
    c = daemon.connect()
    try:
        kw: dict[str, Any] = dict(profile="python3", limits=FAST, tests=tests,
                                  interactor=INTERACTOR, generators=(gen,), batches=batches)
        r = c.job(files={"main.py": CORRECT}, **kw)
        assert verdicts(r) == ["ok"] * 5 and r.score == 100.0, r
        r = c.job(files={"main.py": LINEAR}, **kw)
    finally:
        c.close()
    # 8 3: 3 questions (ok); 10 7: 7 (partial 0.5); 100 100: too many (WA); then skipped
    assert verdicts(r) == ["ok", "wrong_answer", "wrong_answer", "skipped", "skipped"], r
    assert [s.score for s in r.steps[:3]] == [1.0, 0.5, 0.0]
    assert r.steps[2].interactor is not None and r.steps[2].interactor.exit_code == 1
    assert [(b.name, b.verdict, b.score) for b in r.batches or ()] == [
        ("a", "wrong_answer", 15.0), ("b", "wrong_answer", 0.0), ("c", "skipped", 0.0)]
    assert r.score == 15.0


def test_the_address_space_mode_holds_for_a_wired_solution(daemon: Daemon) -> None:
    # 300 MiB reserved, never touched: fine when memory counts peak use, a memory limit
    # when it counts address space (the judge's choice, as for a plain run).
    greedy = b"import mmap\nreserved = mmap.mmap(-1, 300 << 20)\n" + CORRECT
    limits = proto.JobLimits(cpu_time=1.0, wall_time=3.0, memory=128 << 20)
    r = judge(daemon, greedy, [b"10 7\n"], limits=limits, memory_mode="peak")
    assert verdicts(r) == ["ok"], r
    r = judge(daemon, greedy, [b"10 7\n"], limits=limits, memory_mode="address_space")
    assert verdicts(r) == ["memory_limit"], r
    assert r.steps[0].reason and r.steps[0].reason.startswith("address space"), r


def test_an_interactive_problem_takes_no_checker(daemon: Daemon) -> None:
    c = daemon.connect()
    try:
        c.submit("k", "python3", files={"main.py": CORRECT}, interactor=INTERACTOR,
                 checker=INTERACTOR, tests=(proto.TestCase(stdin=b"10 7\n"),))
        res, _ = c.result("k")
        assert isinstance(res, proto.ErrorReport) and res.code == "invalid_job", res
        assert "no checker" in res.message, res
    finally:
        c.close()


def test_through_the_python_client(daemon: Daemon) -> None:
    """The client's ``Interactor`` and the step fields it decodes."""
    import sandboxd_client as sc

    with sc.Client(daemon.socket) as client:
        r = client.run("python3", {"main.py": LINEAR},
                       tests=[sc.Test(stdin="8 3\n"), sc.Test(stdin="8 7\n")],
                       limits={"cpu_time": 2, "wall_time": 10},
                       interactor=sc.Interactor(profile="c", files={
                           "main.c": (GUESS / "interactor.c").read_bytes()}))
    ok, partial = r.steps
    assert ok.verdict is sc.Verdict.OK and ok.score == 1.0
    assert partial.verdict is sc.Verdict.WRONG_ANSWER and partial.score == 0.5
    assert partial.interactor is not None and partial.interactor.exit_code == 7
    assert partial.checker_message and partial.checker_message.startswith("points 0.5")
    assert partial.as_json()["interactor"]["exit_code"] == 7


def test_stop_on_failure_and_a_pinned_solution(daemon: Daemon) -> None:
    r = judge(daemon, WRONG, [b"10 1\n", b"10 7\n", b"10 1\n"], stop_on_failure=True,
              cpuset_pin=True)
    assert verdicts(r) == ["ok", "wrong_answer", "cancelled"], r
    assert r.steps[2].reason == "skipped after an earlier test failed"


def test_cancelling_an_interactive_job_leaves_nothing(daemon: Daemon) -> None:
    """A deadlocked pair, cancelled by its client: both containers are killed at once
    (the leftovers check after the test proves nothing of either remains)."""
    waits = b"import sys\nsys.stdin.read()\n"
    reads = py_interactor("import sys\nsys.stdin.read()\n")
    c = daemon.connect()
    try:
        c.submit("x", "python3", files={"main.py": waits}, interactor=reads,
                 limits=proto.JobLimits(cpu_time=5.0, wall_time=60.0),
                 tests=(proto.TestCase(stdin=b""),))
        deadline = time.monotonic() + 30
        while daemon.stats().jobs_running == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # both sides started and blocked
        t = time.monotonic()
        c.send(proto.Cancellation(id="x"))
        res, _ = c.result("x")
        assert time.monotonic() - t < 10
    finally:
        c.close()
    assert isinstance(res, proto.JobResult), res
    assert [s.verdict for s in res.steps] == ["cancelled"], res
