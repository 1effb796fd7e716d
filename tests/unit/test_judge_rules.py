"""The judge loop's pure rules (sandboxd/service/_judge.py), without a kernel: what a
checker's exit says, how batches score and order, and the bounds of the program cache."""

from __future__ import annotations

import pytest

from sandboxd.jobs import BatchSpec, JobError, ProgramSpec, StepOutcome
from sandboxd.profiles import load_dir
from sandboxd.result import Result
from sandboxd.service._judge import (
    ProgramCache,
    _reason,
    batch_order,
    batch_result,
    checker_verdict,
)


def run(verdict: str = "runtime_error", exit_code: int | None = None, stderr: bytes = b"",
        reason: str | None = None, stdout: bytes = b"") -> Result:
    r = Result.without_run(verdict, reason or "")
    return Result(verdict, reason, exit_code, None, 0.0, 0.0, 0.0, 0.0, 0, False, stdout,
                  stderr, False, False) if exit_code is not None else r


@pytest.mark.parametrize(("ran", "want"), [
    (run("ok", 0, b"fine"), ("ok", None, 1.0, "fine")),
    (run(exit_code=1, stderr=b"wrong 3rd line"), ("wrong_answer", "checker", 0.0,
                                                  "wrong 3rd line")),
    (run(exit_code=2), ("presentation_error", "checker", 0.0, None)),
    (run(exit_code=3, stderr=b"bad answer file"), ("judge_error", "checker failed (exit code 3)",
                                                   0.0, "bad answer file")),
    (run(exit_code=7, stderr=b"points 0.25 1 of 4"), ("wrong_answer", "partial (0.25)", 0.25,
                                                      "points 0.25 1 of 4")),
    (run(exit_code=7, stderr=b"note\npoints 1.5"), ("ok", None, 1.0, "note\npoints 1.5")),
    (run(exit_code=7, stderr=b"points -2"), ("wrong_answer", "partial (0)", 0.0, "points -2")),
    (run(exit_code=7, stderr=b"points nan"), ("judge_error", "checker exited 7 (partial) "
                                              "without 'points X' on its stderr", 0.0,
                                              "points nan")),
    (run(exit_code=7, stderr=b"0.5"), ("judge_error", "checker exited 7 (partial) without "
                                       "'points X' on its stderr", 0.0, "0.5")),
    (run(exit_code=4), ("judge_error", "checker: runtime_error", 0.0, None)),
    (run("time_limit", None, reason="cpu"), ("judge_error", "checker: time_limit (cpu)", 0.0,
                                             None)),
    (run("sandbox_error", None, reason="spawn failed"), ("sandbox_error",
                                                         "checker: spawn failed", 0.0, None)),
])
def test_checker_exit_codes_as_testlib(ran: Result, want: tuple[object, ...]) -> None:
    assert checker_verdict(ran) == want


def test_a_checker_message_is_capped() -> None:
    _, _, _, message = checker_verdict(run(exit_code=1, stderr="é".encode() * 5000))
    assert message is not None and len(message.encode()) <= 4096 and message.endswith("...")


def test_reasons_fit_the_wire() -> None:
    """A reason carries a compiler's or generator's words: cut to the wire's 1 KiB."""
    long = run("sandbox_error", None, reason="ü" * 2000)
    _, reason, _, _ = checker_verdict(long)
    assert reason is not None and len(reason.encode()) <= 1024 and reason.endswith("...")
    assert len(_reason("é" * 999).encode()) <= 1000


def step(verdict: str, score: float | None) -> StepOutcome:
    return StepOutcome(Result.without_run(verdict, "x"), score=score)


def test_a_batch_earns_its_lowest_score() -> None:
    b = BatchSpec(name="b", tests=[0, 1], points=40)
    assert batch_result(b, [step("ok", 1.0), step("ok", 1.0)], None).score == 40
    partial = batch_result(b, [step("ok", 1.0), step("wrong_answer", 0.25)], None)
    assert (partial.verdict, partial.score) == ("wrong_answer", 10.0)
    skipped = batch_result(b, [step("time_limit", 0.0), step("skipped", 0.0)], None)
    assert (skipped.verdict, skipped.score) == ("time_limit", 0.0)
    blocked = batch_result(b, [step("skipped", 0.0)] * 2, "a")
    assert (blocked.verdict, blocked.score, blocked.points) == ("skipped", 0.0, 40)


def test_batches_are_ordered_by_their_dependencies() -> None:
    a, b, c = (BatchSpec(name=n, tests=[i]) for i, n in enumerate("abc"))
    a.depends, b.depends = ["c"], ["a", "c"]
    assert [x.name for x in batch_order([a, b, c])] == ["c", "a", "b"]
    c.depends = ["b"]
    with pytest.raises(JobError, match="cycle"):
        batch_order([a, b, c])
    with pytest.raises(JobError, match="unknown batch 'z'"):
        batch_order([BatchSpec(name="a", tests=[0], depends=["z"])])
    with pytest.raises(JobError, match="named twice"):
        batch_order([BatchSpec(name="a", tests=[0]), BatchSpec(name="a", tests=[1])])


def test_the_program_cache_is_keyed_by_content_and_bounded() -> None:
    profiles = load_dir()
    p = ProgramSpec(profile=profiles["cpp"], files={"c.cpp": b"int main(){}"})
    same = ProgramSpec(profile=profiles["cpp"], files={"c.cpp": b"int main(){}"},
                       argv=["./main", "-x"])  # argv is a run's, not the build's
    other = ProgramSpec(profile=profiles["c"], files={"c.cpp": b"int main(){}"})
    assert ProgramCache.key(p) == ProgramCache.key(same) != ProgramCache.key(other)
    cache = ProgramCache(max_entries=2, max_bytes=1000)
    for i in range(3):
        cache.put(str(i), {"main": b"x" * 100})
    assert len(cache) == 2 and cache.get("0") is None and cache.get("2") is not None
    cache.put("big", {"main": b"x" * 300})  # more than a quarter of the bytes: not kept
    assert cache.get("big") is None
    for i in range(3, 8):
        cache.put(str(i), {"m": b"x" * 240})
    assert sum(len(v) for k in ("6", "7") for v in (cache.get(k) or {}).values()) == 480
    assert (cache.hits, cache.misses) == (3, 2)
