"""A judge's own programs through a real daemon (issue 17): checkers, generators, batches.

One daemon for the module (python3, cpp and c kept warm). The checker of the
examples (examples/problems/squares-partial/checker.cpp, testlib's protocol
written without testlib.h) judges accepted, wrong, partial and presentation
errors; small Python checkers crash, hang, exit 3 or an unknown code, or run
out of their own limits, and each of those is ``judge_error``, never the
contestant's verdict. Hostile solutions attack the checker through their
output. Generators make tests (and their answers) or fail; batches stop,
skip and score as DMOJ's do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandboxd_protocol as proto
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Client, Daemon, module_daemon

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
SQUARES = ROOT / "examples" / "problems" / "squares-partial"
CHECKER_CPP = (SQUARES / "checker.cpp").read_bytes()
ACCEPTED = b"n = int(input())\nprint('\\n'.join(str(i * i) for i in range(1, n + 1)))\n"
HALF = (SQUARES / "solutions" / "half.py").read_bytes()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    yield from module_daemon(tmp_path_factory.mktemp("judgeprog"), pool_profiles=["python3", "cpp"],
                             pool_size=1, concurrency=2)


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "daemon" not in request.fixturenames:
        yield None
        return
    d: Daemon = request.getfixturevalue("daemon")
    yield leftovers.daemon_view(d.pid, d.instance)
    d.wait_warm()


@pytest.fixture
def c(daemon: Daemon) -> Iterator[Client]:
    client = daemon.connect()
    yield client
    client.close()


def cpp_checker(**kw: object) -> proto.Program:
    return proto.Program(profile="cpp", files={"checker.cpp": CHECKER_CPP}, **kw)  # type: ignore[arg-type]


def py_checker(code: str, **kw: object) -> proto.Program:
    return proto.Program(profile="python3", files={"main.py": code.encode()}, **kw)  # type: ignore[arg-type]


def squares(*ns: int) -> tuple[proto.TestCase, ...]:
    return tuple(proto.TestCase(stdin=b"%d\n" % n) for n in ns)


def counter(d: Daemon, name: str) -> float:
    return d.stats().counters.get(name, 0)


# ------------------------------------------------------------------- checkers


def test_a_testlib_checker_accepts_and_is_compiled_once(daemon: Daemon, c: Client) -> None:
    r = c.run("acc", "python3", files={"main.py": ACCEPTED}, tests=squares(1, 5, 30),
              checker=cpp_checker())
    assert [s.verdict for s in r.steps] == ["ok"] * 3, r.steps
    assert [s.score for s in r.steps] == [1.0] * 3
    assert r.score == 3.0 and r.batches is None
    assert r.steps[2].checker_message == "30 squares"
    ck = r.steps[0].checker
    assert ck is not None and ck.verdict == "ok" and ck.exit_code == 0 and ck.wall_time > 0
    hits = counter(daemon, "program_cache_hits")
    compiles = counter(daemon, "compiles")
    r = c.run("acc2", "python3", files={"main.py": ACCEPTED}, tests=squares(2),
              checker=cpp_checker())
    assert r.steps[0].verdict == "ok"
    assert counter(daemon, "program_cache_hits") == hits + 1  # the build was reused
    assert counter(daemon, "compiles") == compiles  # and nothing compiled again


def test_wrong_partial_and_presentation(c: Client) -> None:
    jobs = {
        "wa": b"print(0)\n",
        "half": HALF,
        "pe": b"print('one two')\n",
        "extra": ACCEPTED + b"print(99)\n",
    }
    for name, code in jobs.items():
        c.submit(name, "python3", files={"main.py": code}, tests=squares(10),
                 checker=cpp_checker())
    got = {}
    for name in jobs:
        res, _ = c.result(name)
        assert isinstance(res, proto.JobResult), res
        got[name] = res.steps[0]
    assert got["wa"].verdict == "wrong_answer" and got["wa"].score == 0.0
    assert got["wa"].checker_message == "no square right"
    assert got["half"].verdict == "wrong_answer" and got["half"].reason == "partial (0.5)"
    assert got["half"].score == 0.5
    assert got["half"].checker_message == "points 0.5 5 of 10 squares right"
    assert got["pe"].verdict == "presentation_error" and got["pe"].score == 0.0
    assert got["extra"].verdict == "presentation_error"
    for s in got.values():
        assert s.exit_code == 0 and s.checker is not None  # the solution's own run was fine


@pytest.mark.parametrize(("code", "reason"), [
    ("raise SystemExit(3)", "checker failed (exit code 3)"),
    ("raise SystemExit(5)", "checker: runtime_error (exit code 5)"),
    ("import sys; print('points 0.3', file=sys.stderr); raise SystemExit(4)",
     "checker: runtime_error (exit code 4)"),
    ("raise SystemExit(7)", "checker exited 7 (partial) without 'points X' on its stderr"),
    ("import os; os.kill(os.getpid(), 11)", "checker: runtime_error (signal SIGSEGV)"),
    ("while True: pass", "checker: time_limit (cpu)"),
    ("import time; time.sleep(30)", "checker: time_limit (wall)"),
    ("x = bytearray(200 << 20)", "checker: memory_limit (memory)"),
])
def test_a_failing_checker_is_a_judge_error(c: Client, code: str, reason: str) -> None:
    """Its crash, hang, limit or own failure is the problem's, never the contestant's."""
    # A loaded machine may stretch 0.3 s of CPU past a short wall clock: only the
    # sleeping checker meets its wall limit first.
    wall = 2.0 if "sleep" in code else 60.0
    limits = proto.JobLimits(cpu_time=0.3, wall_time=wall, memory=64 << 20)
    r = c.run("bad", "python3", files={"main.py": ACCEPTED}, tests=squares(3),
              checker=py_checker(code, limits=limits))
    s = r.steps[0]
    assert (s.verdict, s.reason, s.score) == ("judge_error", reason, 0.0)
    assert s.exit_code == 0 and s.stdout == b"1\n4\n9\n"  # the solution's run, intact
    assert s.checker is not None


def test_checker_limits_and_files(c: Client) -> None:
    """The checker runs under its own limits, with the three files in testlib's order."""
    code = ("import sys, resource\n"
            "names = sys.argv[1:]\n"
            "data = [open(n, 'rb').read() for n in names]\n"
            "cpu = resource.getrlimit(resource.RLIMIT_CPU)[0]\n"
            "print(names, data, cpu, file=sys.stderr)\n")
    r = c.run("files", "python3", files={"main.py": b"print(input()[::-1])\n"},
              tests=(proto.TestCase(stdin=b"abc\n", expected_output=b"the answer\n"),),
              checker=py_checker(code, limits=proto.JobLimits(cpu_time=3.0)))
    s = r.steps[0]
    assert s.verdict == "ok", s
    assert s.checker_message == ("['input.txt', 'output.txt', 'answer.txt'] "
                                 "[b'abc\\n', b'cba\\n', b'the answer\\n'] 4")


def test_a_checker_that_does_not_compile_judges_nothing(c: Client) -> None:
    r = c.run("nocomp", "python3", files={"main.py": ACCEPTED}, tests=squares(1, 2),
              checker=proto.Program(profile="cpp", files={"checker.cpp": b"int main( {"}))
    assert [s.verdict for s in r.steps] == ["judge_error"] * 2
    assert r.steps[0].reason is not None
    assert r.steps[0].reason.startswith("checker did not compile: compile_error")


def test_hostile_output_gets_the_solutions_verdict(c: Client) -> None:
    """Huge output, binary garbage, a megabyte-long token: the C++ checker reads them
    all and blames the solution; past its output limit the solution gets output_limit
    and the checker never runs."""
    jobs = {
        "garbage": (b"import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4096)\n",
                    "presentation_error"),
        "huge": (b"import sys\nsys.stdout.write('1\\n' * (6 << 20))\n", "presentation_error"),
        "token": (b"import sys\nsys.stdout.write('9' * (8 << 20))\n", "presentation_error"),
        "nul": (b"import sys\nsys.stdout.buffer.write(b'1\\x00' * 1000)\n",
                "presentation_error"),
        "flood": (b"import sys\nsys.stdout.write('1\\n' * (20 << 20))\n", "output_limit"),
    }
    for name, (code, _) in jobs.items():
        c.submit(name, "python3", files={"main.py": code}, tests=squares(4),
                 checker=cpp_checker(), limits=proto.JobLimits(output=16 << 20))
    for name, (_, verdict) in jobs.items():
        res, _ = c.result(name)
        assert isinstance(res, proto.JobResult), res
        s = res.steps[0]
        assert s.verdict == verdict, (name, s.verdict, s.reason, s.checker_message)
        assert (s.checker is None) == (verdict == "output_limit")


# ----------------------------------------------------------------- generators

GEN = """import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
xs = [rng.randint(1, 10**6) for _ in range(n)]
print(n); print(*xs)
open("answer", "w").write(f"{max(xs)}\\n")
"""
MAX = b"import sys\nd = sys.stdin.read().split()\nprint(max(map(int, d[1:])))\n"


def test_generators_make_tests_and_answers(daemon: Daemon, c: Client) -> None:
    gen = proto.Program(profile="python3", files={"main.py": GEN.encode()})
    bad = proto.Program(profile="python3", files={  # its words, cut to fit the wire's reason
        "main.py": "import sys\nsys.stderr.write('é' * 3000)\nsys.exit(1)\n".encode()})
    tests = (proto.TestCase(generator=0, generator_args=("5", "1")),
             proto.TestCase(generator=0, generator_args=("20000", "2")),
             proto.TestCase(stdin=b"2\n3 9\n", expected_output=b"9\n"),
             proto.TestCase(generator=1))
    r = c.run("gen", "python3", files={"main.py": MAX}, tests=tests, generators=(gen, bad))
    assert [s.verdict for s in r.steps] == ["ok", "ok", "ok", "judge_error"], r.steps
    reason = r.steps[3].reason
    assert reason is not None and reason.startswith("generator 1: runtime_error (exit code 1): éé")
    assert len(reason.encode()) <= 1024
    assert r.score == 3.0
    # the generated answer is what a wrong solution is held to
    r = c.run("gen2", "python3", files={"main.py": b"print(1)\n"}, tests=tests[:1],
              generators=(gen,))
    assert r.steps[0].verdict == "wrong_answer"


def test_a_generator_feeds_a_checker(c: Client) -> None:
    gen = proto.Program(profile="python3", files={"main.py": b"import sys\nprint(sys.argv[1])\n"})
    tests = tuple(proto.TestCase(generator=0, generator_args=(str(n),)) for n in (3, 7))
    r = c.run("genck", "python3", files={"main.py": ACCEPTED}, tests=tests, generators=(gen,),
              checker=cpp_checker())
    assert [s.verdict for s in r.steps] == ["ok", "ok"]
    assert r.steps[1].checker_message == "7 squares"


# -------------------------------------------------------------------- batches

ECHO_OR_FAIL = b"x = int(input())\nprint(x if x >= 0 else x - 1)\n"  # wrong on negatives


def numbered(*xs: int) -> tuple[proto.TestCase, ...]:
    return tuple(proto.TestCase(stdin=b"%d\n" % x, expected_output=b"%d\n" % x) for x in xs)


def test_batches_stop_skip_and_score(c: Client) -> None:
    tests = numbered(1, 2, -3, 4, 5, 6, -7, 8)
    batches = (
        proto.Batch(name="a", tests=(0, 1), points=10),
        proto.Batch(name="b", tests=(2, 3), points=20, stop_on_failure=True),
        proto.Batch(name="c", tests=(4, 5), points=30, depends=("a",)),
        proto.Batch(name="d", tests=(6, 7), points=40, depends=("b",)),
    )
    r = c.run("batches", "python3", files={"main.py": ECHO_OR_FAIL}, tests=tests,
              batches=batches)
    assert [s.verdict for s in r.steps] == [
        "ok", "ok", "wrong_answer", "skipped", "ok", "ok", "skipped", "skipped"], r.steps
    assert r.steps[3].reason == "skipped after an earlier test of its batch failed"
    assert r.steps[6].reason == "batch 'b', which batch 'd' depends on, failed"
    assert r.batches == (
        proto.BatchResult(name="a", verdict="ok", score=10.0, points=10.0),
        proto.BatchResult(name="b", verdict="wrong_answer", score=0.0, points=20.0),
        proto.BatchResult(name="c", verdict="ok", score=30.0, points=30.0),
        proto.BatchResult(name="d", verdict="skipped", score=0.0, points=40.0))
    assert r.score == 40.0


def test_without_stop_a_batch_runs_every_test(c: Client) -> None:
    batches = (proto.Batch(name="all", tests=(0, 1, 2), points=5),)
    r = c.run("nostop", "python3", files={"main.py": ECHO_OR_FAIL}, tests=numbered(-1, 2, 3),
              batches=batches)
    assert [s.verdict for s in r.steps] == ["wrong_answer", "ok", "ok"]
    assert r.batches is not None and r.batches[0].score == 0.0 and r.score == 0.0


def test_partial_points_score_a_batch_by_its_lowest_test(c: Client) -> None:
    batches = (proto.Batch(name="p", tests=(0, 1), points=50, stop_on_failure=True),
               proto.Batch(name="q", tests=(2,), points=50, depends=("p",)))
    r = c.run("partial", "python3", files={"main.py": HALF}, tests=squares(4, 10, 2),
              checker=cpp_checker(), batches=batches)
    # 4 -> 2 of 4 right, 10 -> 5 of 10 right: both 0.5, neither stops the batch
    assert [s.score for s in r.steps] == [0.5, 0.5, 0.0]
    assert [s.verdict for s in r.steps] == ["wrong_answer", "wrong_answer", "skipped"]
    assert r.batches is not None and r.batches[0].score == 25.0
    assert r.score == 25.0


def test_a_cycle_of_batches_is_refused(c: Client) -> None:
    """The wire checks names and indices; the service checks the dependency graph."""
    batches = (proto.Batch(name="a", tests=(0,), depends=("b",)),
               proto.Batch(name="b", tests=(1,), depends=("a",)))
    c.submit("refused", "python3", files={"main.py": b"print(1)\n"}, tests=numbered(1, 1),
             batches=batches)
    res, _ = c.result("refused")
    assert isinstance(res, proto.ErrorReport), res
    assert res.code == "invalid_job" and "cycle: a -> b -> a" in res.message, res


PROBE = """import os, socket, sys
facts = []
facts.append(f"uid={os.getuid()}")
facts.append(f"procs={len([p for p in os.listdir('/proc') if p.isdigit()])}")
try:
    open("/etc/passwd-sandboxd-probe", "w")
    facts.append("wrote /etc")
except OSError:
    facts.append("/etc read-only")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    facts.append("network")
except OSError:
    facts.append("no network")
facts.append(f"caps={open('/proc/self/status').read().split('CapEff:')[1].split()[0]}")
facts.append(f"seccomp={open('/proc/self/status').read().split('Seccomp:')[1].split()[0]}")
print(" ".join(f for f in facts if not f.startswith("uid=")), file=sys.stderr)
print(" ".join(facts))
"""


def test_the_checker_is_as_isolated_as_the_solution(c: Client) -> None:
    """The same probe as solution and as checker: the same walls (a uid of its own that
    is not root, its own pid namespace, a read-only /etc, no network, no capabilities,
    seccomp)."""
    r = c.run("iso", "python3", files={"main.py": PROBE.encode()}, tests=squares(1),
              checker=py_checker(PROBE))
    s = r.steps[0]
    assert s.verdict == "ok", s
    solution = s.stdout.decode().split()
    checker = (s.checker_message or "").split()
    assert solution[1:] == checker, (solution, checker)
    uid = int(solution[0].removeprefix("uid="))
    assert uid != 0 and checker == ["procs=2", "/etc", "read-only", "no", "network",
                                    "caps=0000000000000000", "seccomp=2"], checker
