"""A gateway forwards a /v1 job to the cluster as a wire submission (``_wire.job_submission``)
and maps the node's answer back (``_wire.job_outcome``): a judge's fields (checker,
generators, batches, interactor, memory mode) and a judged result (scores, batches,
the checker's and interactor's runs) must survive both ways, or a judged job through a
gateway would silently run as a plain one."""

from __future__ import annotations

import sandboxd_protocol as proto
from sandboxd import jobs, profiles
from sandboxd.front._wire import job_outcome, job_result, job_spec, job_submission
from sandboxd.jobs import BatchOutcome, BatchSpec, JobOutcome, ProgramSpec, StepOutcome
from sandboxd.result import Result

PROFILES = profiles.load_dir()


def test_a_judged_job_survives_the_round_trip() -> None:
    py, c = PROFILES["python3"], PROFILES["c"]
    sub = proto.JobSubmission(
        id="j", profile="python3", files={"main.py": b"print(1)"},
        tests=(proto.TestCase(stdin=b"1\n"),
               proto.TestCase(generator=0, generator_args=("5", "7"))),
        memory_mode="address_space",
        generators=(proto.Program(profile="python3", files={"main.py": b"print(5)"}),),
        interactor=proto.Program(profile="c", files={"main.c": b"int main(){}"},
                                 argv=("./main",), limits=proto.JobLimits(cpu_time=2.0)),
        batches=(proto.Batch(name="a", tests=(0,), points=40),
                 proto.Batch(name="b", tests=(1,), points=60, stop_on_failure=True,
                             depends=("a",))))
    spec = job_spec(sub, py, profiles=lambda name: {"python3": py, "c": c}[name])
    assert spec.interactor is not None and spec.batches is not None
    again = job_spec(job_submission("j", spec, stream=False), py,
                     profiles=lambda name: {"python3": py, "c": c}[name])
    assert again.memory_mode == "address_space"
    assert again.interactor == ProgramSpec(profile=c, files={"main.c": b"int main(){}"},
                                           argv=["./main"],
                                           limits=proto.JobLimits(cpu_time=2.0))
    assert again.generators == spec.generators and again.checker is None
    assert again.tests == [jobs.TestSpec(stdin=b"1\n"),
                           jobs.TestSpec(generator=0, generator_args=["5", "7"])]
    assert again.batches == [BatchSpec("a", [0], 40.0), BatchSpec("b", [1], 60.0, True, ["a"])]


def test_a_judged_result_survives_the_round_trip() -> None:
    run = Result.without_run("ok", None)
    partial = Result.without_run("wrong_answer", "partial (0.5)")
    outcome = JobOutcome(None, [
        StepOutcome(run, score=1.0, checker_message="found in 3 questions", interactor=run),
        StepOutcome(partial, score=0.5, checker_message="points 0.5", checker=run)],
        [BatchOutcome("a", "ok", 40.0, 40.0), BatchOutcome("b", "wrong_answer", 30.0, 60.0)],
        70.0)
    back = job_outcome(job_result("j", outcome, 1 << 20))
    assert (back.score, back.batches) == (70.0, outcome.batches)
    assert [(s.result.verdict, s.score, s.checker_message) for s in back.steps] == [
        ("ok", 1.0, "found in 3 questions"), ("wrong_answer", 0.5, "points 0.5")]
    assert back.steps[0].interactor is not None and back.steps[0].interactor.verdict == "ok"
    assert back.steps[1].checker is not None and back.steps[1].checker.verdict == "ok"
