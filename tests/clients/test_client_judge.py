"""``sandboxctl judge`` over the example problems (examples/problems/), through a real daemon,
and the problem directory's layout errors (no daemon needed).

Each of the five example problems (batches, a checker with partial points, a
generator, float comparison, the interactive guessing game with subtasks) is
judged with an accepted solution and a failing one; the
exit code, the verdicts per test and per batch, and the score are checked in
``--json``, and the human table once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_helpers import sandboxctl

from sandboxd_client._problem import ProblemError, load_problem
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon, module_daemon

PROBLEMS = Path(__file__).resolve().parents[2] / "examples" / "problems"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    yield from module_daemon(tmp_path_factory.mktemp("judgecli"), pool_profiles=["python3", "cpp"],
                             pool_size=1, concurrency=2)


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "daemon" not in request.fixturenames:
        yield None
        return
    d: Daemon = request.getfixturevalue("daemon")
    yield leftovers.daemon_view(d.pid, d.instance)
    d.wait_warm()


def judge(d: Daemon, problem: str, solution: str, *more: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    p = sandboxctl("judge", str(PROBLEMS / problem), str(PROBLEMS / problem / "solutions" /
                   solution), "--json", *more, socket=d.socket, timeout=180)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def verdicts(out: dict) -> list[str]:  # type: ignore[type-arg]
    return [t["verdict"] for t in out["tests"]]


@pytest.mark.root
def test_batches(daemon: Daemon) -> None:
    code, out = judge(daemon, "sum-batches", "accepted.py")
    assert (code, out["accepted"], out["score"], out["max_score"]) == (0, True, 100.0, 100.0)
    code, out = judge(daemon, "sum-batches", "int32.c")
    assert code == 1 and out["score"] == 40.0
    assert [b["verdict"] for b in out["batches"]] == ["ok", "ok", "wrong_answer"]
    code, out = judge(daemon, "sum-batches", "off-by-one.py")
    assert code == 1 and out["score"] == 0.0
    assert verdicts(out) == ["ok", "wrong_answer", "skipped", "skipped", "skipped", "skipped"]
    assert [t["batch"] for t in out["tests"]] == ["samples", "small", "small", "small",
                                                 "large", "large"]
    assert [b["verdict"] for b in out["batches"]] == ["ok", "wrong_answer", "skipped"]


@pytest.mark.root
def test_checker_with_partial_points(daemon: Daemon) -> None:
    code, out = judge(daemon, "squares-partial", "accepted.py")
    assert (code, out["score"], out["max_score"]) == (0, 4.0, 4.0)
    assert out["tests"][0]["checker"]["verdict"] == "ok"
    code, out = judge(daemon, "squares-partial", "half.py")
    assert code == 1 and verdicts(out) == ["wrong_answer"] * 4
    assert [t["score"] for t in out["tests"]] == pytest.approx([1 / 3, 0.5, 13 / 27, 0.5])
    assert out["tests"][1]["checker_message"] == "points 0.5 6 of 12 squares right"
    code, out = judge(daemon, "squares-partial", "garbage.py")
    assert code == 1 and verdicts(out) == ["presentation_error"] * 4


@pytest.mark.root
def test_generator(daemon: Daemon) -> None:
    code, out = judge(daemon, "generated-max", "accepted.py")
    assert code == 0 and [t["name"] for t in out["tests"]] == ["01", "small", "medium",
                                                              "large"]
    code, out = judge(daemon, "generated-max", "first.py")
    assert code == 1 and verdicts(out)[1:] == ["wrong_answer"] * 3


@pytest.mark.root
def test_float_tolerance_and_the_table(daemon: Daemon) -> None:
    code, out = judge(daemon, "circle-float", "accepted.cpp")
    assert (code, out["score"]) == (0, 3.0)
    code, out = judge(daemon, "circle-float", "rounded.py")
    assert code == 1 and verdicts(out) == ["wrong_answer"] * 3
    p = sandboxctl("judge", str(PROBLEMS / "sum-batches"),
                   str(PROBLEMS / "sum-batches" / "solutions" / "int32.c"),
                   socket=daemon.socket, timeout=180)
    text = p.stdout.decode()
    assert p.returncode == 1, p.stderr
    assert "TEST  BATCH    VERDICT" in text and "large    wrong_answer  0/60" in text
    assert text.rstrip().endswith("sum: not accepted, score 40/100")


@pytest.mark.root
def test_interactive_guessing_game_with_subtasks(daemon: Daemon) -> None:
    # Two containers per test, wired together; the interactor's exit code decides, the
    # batches score the subtasks (the judge loop runs wired tests as it runs others).
    code, out = judge(daemon, "guess", "correct.py")
    assert (code, out["accepted"], out["score"], out["max_score"]) == (0, True, 100.0, 100.0)
    assert verdicts(out) == ["ok"] * 10
    assert out["tests"][2]["interactor"]["verdict"] == "ok"
    assert out["tests"][2]["checker_message"].startswith("found in ")
    code, out = judge(daemon, "guess", "correct.c")  # a compiled solution, the same result
    assert (code, out["score"]) == (0, 100.0) and out["compile"]["verdict"] == "ok"
    # Asking 1, 2, 3...: samples pass, 03 (n=10) earns the interactor's partial points,
    # 05 (n=100, x=100) asks too many and fails the batch: 09 skipped, `large` skipped.
    code, out = judge(daemon, "guess", "linear.py")
    assert code == 1 and out["score"] == 0.0
    by_name = {t["name"]: t for t in out["tests"]}
    assert [by_name[n]["verdict"] for n in ("01", "02", "03", "04", "05", "09")] == [
        "ok", "ok", "wrong_answer", "ok", "wrong_answer", "skipped"]
    assert by_name["03"]["score"] == 0.5 and by_name["03"]["reason"] == "partial (0.5)"
    assert by_name["05"]["checker_message"].startswith("too many questions")
    assert all(by_name[n]["verdict"] == "skipped" for n in ("06", "07", "08", "10"))
    assert [(b["name"], b["verdict"], b["score"]) for b in out["batches"]] == [
        ("samples", "ok", 0.0), ("small", "wrong_answer", 0.0), ("large", "skipped", 0.0)]
    code, out = judge(daemon, "guess", "wrong.py")  # guesses 1 without asking
    assert code == 1 and verdicts(out)[:2] == ["ok", "wrong_answer"]
    assert out["tests"][1]["checker_message"] == "wrong guess 1"


def write(root: Path, toml: str, tests: dict[str, str] | None = None) -> Path:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "problem.toml").write_text(toml)
    for name, data in (tests if tests is not None else {"01.in": "1\n"}).items():
        (root / "tests" / name).write_text(data)
    return root


@pytest.mark.parametrize(("toml", "message"), [
    ("nme = 1", "unknown key 'nme'"),
    ("[limits]\nmemmory = '1M'", "limits.memmory: no such limit"),
    ("[limits]\nmemory = 'lots'", "limits.memory:"),
    ("compare = 'fuzzy'", "compare: must be one of"),
    ("float_tolerance = 0.1", "float_tolerance: needs compare"),
    ("[checker]\nprofile = 'cpp'\nfiles = ['nope.cpp']", "checker.files: cannot read"),
    ("[checker]\nfiles = []", "checker.profile: required"),
    ("[[test]]\ngenerator = 'g'", "test[0].generator: no generator named 'g'"),
    ("[[batch]]\nname = 'a'\ntests = ['02']", "batch[0].tests: no test named '02'"),
    ("[[batch]]\nname = 'a'\ntests = []", "test '01' is in no batch"),
])
def test_problem_layout_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_problem(write(tmp_path, toml))


def test_a_problem_needs_tests(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match="no tests"):
        load_problem(write(tmp_path, "", tests={}))


def test_every_example_problem_loads() -> None:
    names = sorted(p.name for p in PROBLEMS.iterdir() if (p / "problem.toml").exists())
    assert names == ["circle-float", "generated-max", "guess", "squares-partial", "sum-batches"]
    for name in names:
        problem = load_problem(PROBLEMS / name)
        assert problem.tests and problem.max_score > 0
