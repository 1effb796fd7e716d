"""An interactive problem's job: compile both programs once, then each test as a wired pair.

Strategy: the solution and the interactor compile side by side, each in a
container of its own profile (once per job, both through ``jobs.compile_job``);
then every test leases two fresh containers as one step of the scheduler
(``Scheduler.pair_runner``) and runs them wired together
(``sandboxd.interactive.run_wired``); the test's verdict is
``interactive_verdict``'s (docs/profiles.md, "Interactive problems", says the
rules). Tests run in parallel up to the concurrency, as a plain job's do, and
come back in test order; ``stop_on_failure`` cancels every test after the first
failing one, as ``jobs.run_job`` does. An interactive job with batches or
generators runs in the judge loop instead (sandboxd/service/_judge.py), which
builds the interactor like a checker and calls ``run_wired_test`` per test.

A solution that does not compile is the solution's ``compile_error`` (the job
has no test steps); an interactor that does not compile is the problem's: every
test is ``judge_error`` with the reason.
"""

from __future__ import annotations

import dataclasses

import trio

from sandboxd import interactive
from sandboxd import result as result_mod
from sandboxd.container import Container, RunStep
from sandboxd.interactive import PairRunner, Ran
from sandboxd.jobs import (
    JobError,
    JobOutcome,
    JobSpec,
    ProgramSpec,
    StepOutcome,
    StepRunner,
    TestSpec,
    _limits,
    compile_job,
    container_spec,
    memory_mode,
)
from sandboxd.result import Result


def interactor_job(inter: ProgramSpec) -> JobSpec:
    """The interactor as a job of its own, to compile it as a solution compiles
    (``jobs.compile_job``): its profile, files and limits, none of the solution's."""
    return JobSpec(profile=inter.profile, files=dict(inter.files), limits=inter.limits)


def interactor_failed(why: Result) -> StepOutcome:
    """A test's outcome when the interactor did not compile: the problem's fault
    (``judge_error``), unless it was sandboxd's own failure or a cancellation."""
    reason = f"the interactor did not compile: {why.reason or why.verdict}"
    if why.verdict in ("sandbox_error", "cancelled"):
        failed = Result.without_run(why.verdict, reason)
    else:
        failed = Result.without_run(interactive.JUDGE_ERROR, reason)
    return StepOutcome(failed, score=0.0, checker_message=interactive.message_of(why.stderr),
                       interactor=why)


async def run_wired_test(job: JobSpec, i: int, test: TestSpec, files: dict[str, bytes],
                         ifiles: dict[str, bytes], pair: PairRunner) -> StepOutcome:
    """Test ``i``: the solution (built ``files``) and the interactor (built ``ifiles``)
    in two fresh containers wired together; the verdict is ``interactive_verdict``'s.
    The judge loop (sandboxd/service/_judge.py) calls it for a batch's tests too."""
    inter = job.interactor
    assert inter is not None
    profile, iprofile = job.profile, inter.profile
    run_limits = _limits(profile.limits, job.limits, profile.max_limits)
    ilimits_own = _limits(iprofile.limits, inter.limits, iprofile.max_limits)
    explicit_wall = inter.limits is not None and inter.limits.wall_time is not None
    limits = _limits(run_limits, test.limits, profile.max_limits)
    argv = job.argv or profile.run_argv(sorted(job.files), limits)
    ilimits = interactive.interactor_limits(ilimits_own, limits, explicit_wall,
                                            iprofile.max_limits)
    iargv = interactive.interactor_argv(
        inter.argv or iprofile.run_argv(sorted(inter.files), ilimits),
        test.expected_output is not None)
    on_err = None
    if job.on_output is not None:  # only stderr: the solution's stdout is the wire
        cb = job.on_output

        async def on_err(stream: str, data: bytes) -> None:
            await cb(i, stream, data)

    address_space = memory_mode(job) == "address_space"  # the solution's, as a plain run's
    sol_step = RunStep(argv=argv, limits=limits, files=files, env={**profile.env, **job.env},
                       cwd=profile.workdir, on_output=on_err,
                       address_space=limits.memory if address_space else None)
    int_step = RunStep(argv=iargv, limits=ilimits, env=dict(iprofile.env),
                       cwd=iprofile.workdir,
                       files=interactive.interactor_files(ifiles, test.stdin,
                                                          test.expected_output))

    async def body(sol_box: Container, int_box: Container,
                   cpuset: str | None) -> tuple[Ran, Ran]:
        step = dataclasses.replace(sol_step, cpuset=cpuset) if cpuset else sol_step
        return await interactive.run_wired(sol_box, int_box, step, int_step)

    sol, itr = await pair(container_spec(profile, limits),
                          container_spec(iprofile, ilimits), body, pin=job.cpuset_pin)
    # The runtime's own out-of-memory error is a memory limit, as for any run.
    sol = dataclasses.replace(sol, result=result_mod.judged(
        sol.result, heap_markers=profile.out_of_memory, address_space=address_space))
    verdict, reason, score, message = interactive.interactive_verdict(sol, itr)
    result = dataclasses.replace(sol.result, verdict=verdict, reason=reason)
    return StepOutcome(result, score=score, checker_message=message, interactor=itr.result)


async def run_interactive_job(job: JobSpec, runner: StepRunner, pair: PairRunner) -> JobOutcome:
    """An interactive job without batches or generators (those go through the judge
    loop, which calls ``run_wired_test`` per test)."""
    inter = job.interactor
    assert inter is not None
    for p in (job.profile, inter.profile):
        if p.unavailable:
            raise JobError(f"profile {p.name!r} is unavailable here: {p.unavailable}")
    compiled: dict[str, tuple[StepOutcome | None, dict[str, bytes] | None]] = {}

    async def build(name: str, spec: JobSpec) -> None:
        compiled[name] = await compile_job(spec, runner)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(build, "solution", job)
        nursery.start_soon(build, "interactor", interactor_job(inter))
    compile_outcome, files = compiled["solution"]
    int_compile, ifiles = compiled["interactor"]
    if files is None:  # compile_job says why, as compile_error when it was the source's
        assert compile_outcome is not None
        return JobOutcome(compile_outcome, [])
    tests = job.tests if job.tests is not None else [
        TestSpec(stdin=job.stdin, expected_output=job.expected_output)]
    if ifiles is None:
        assert int_compile is not None
        return JobOutcome(compile_outcome, [interactor_failed(int_compile.result)
                                            for _ in tests])

    outcomes: list[StepOutcome | None] = [None] * len(tests)
    scopes = [trio.CancelScope() for _ in tests]
    first_failure = len(tests)

    async def one(i: int, test: TestSpec) -> None:
        nonlocal first_failure
        assert files is not None and ifiles is not None
        with scopes[i]:
            outcome = outcomes[i] = await run_wired_test(job, i, test, files, ifiles, pair)
        if scopes[i].cancelled_caught:
            return
        if job.stop_on_failure and outcome.result.verdict != "ok" and i < first_failure:
            first_failure = i
            for later in scopes[i + 1:]:
                later.cancel()

    async with trio.open_nursery() as nursery:
        for i, test in enumerate(tests):
            nursery.start_soon(one, i, test)
            await trio.lowlevel.checkpoint()  # tests reach the FIFO limiter in order
    steps = [o if o is not None and i <= first_failure else StepOutcome(Result.without_run(
                 "cancelled", "skipped after an earlier test failed"))
             for i, o in enumerate(outcomes)]
    return JobOutcome(compile_outcome, steps)
