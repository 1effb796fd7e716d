"""An interactive problem's job: compile both programs once, then each test as a wired pair.

Strategy: the solution and the interactor compile side by side, each in a
container of its own profile (once per job); then every test leases two fresh
containers as one step of the scheduler (``Scheduler.pair_runner``) and runs
them wired together (``sandboxd.interactive.run_wired``), and the test's
verdict is ``interactive_verdict``'s (docs/profiles.md, "Interactive
problems", says the rules). Tests run in parallel up to the concurrency, as a
plain job's do, and come back in test order; ``stop_on_failure`` cancels every
test after the first failing one, as ``jobs.run_job`` does.

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
    StepOutcome,
    StepRunner,
    TestSpec,
    _limits,
    container_spec,
)
from sandboxd.limits import Limits
from sandboxd.profiles import Profile
from sandboxd.result import Result


async def _compile(profile: Profile, files: dict[str, bytes], run_limits: Limits,
                   env: dict[str, str], runner: StepRunner, job: JobSpec | None = None
                   ) -> tuple[Result | None, dict[str, bytes]]:
    """(the compile step's result or None when the profile compiles nothing, the files the
    runs get); a result that is not ``ok`` leaves the files as they were. ``job``: the
    solution's, whose own compile argv, limits and output stream apply."""
    compile_argv = job.compile_argv if job is not None else None
    on_output = job.on_compile_output if job is not None else None
    if not (compile_argv or profile.compile):
        return None, files
    base = profile.compile.limits if profile.compile else run_limits
    climits = _limits(base, job.compile_limits if job is not None else None,
                      profile.max_limits)
    argv = compile_argv or profile.compile_argv(sorted(files), climits)
    assert argv is not None
    step = RunStep(argv=argv, limits=climits, files=files, env=env, cwd=profile.workdir,
                   on_output=on_output)
    result, built = await runner(container_spec(profile, climits), step, True)
    return result, (built or {}) if result.verdict == "ok" else files


async def run_interactive_job(job: JobSpec, runner: StepRunner, pair: PairRunner) -> JobOutcome:
    inter = job.interactor
    assert inter is not None
    profile, iprofile = job.profile, inter.profile
    for p in (profile, iprofile):
        if p.unavailable:
            raise JobError(f"profile {p.name!r} is unavailable here: {p.unavailable}")
    run_limits = _limits(profile.limits, job.limits, profile.max_limits)
    ilimits_own = _limits(iprofile.limits, inter.limits, iprofile.max_limits)
    explicit_wall = inter.limits is not None and inter.limits.wall_time is not None
    env = {**profile.env, **job.env}
    ienv = dict(iprofile.env)
    sources, isources = sorted(job.files), sorted(inter.files)

    compiled: dict[str, tuple[Result | None, dict[str, bytes]]] = {}

    async def build_solution() -> None:
        compiled["solution"] = await _compile(profile, job.files, run_limits, env, runner, job)

    async def build_interactor() -> None:
        compiled["interactor"] = await _compile(iprofile, inter.files, ilimits_own, ienv,
                                                runner)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(build_solution)
        nursery.start_soon(build_interactor)
    sol_compile, files = compiled["solution"]
    int_compile, ifiles = compiled["interactor"]
    if sol_compile is not None and sol_compile.verdict != "ok":
        return JobOutcome(StepOutcome(result_mod.compile_failed(sol_compile)), [])
    compile_outcome = StepOutcome(sol_compile) if sol_compile is not None else None
    tests = job.tests if job.tests is not None else [
        TestSpec(stdin=job.stdin, expected_output=job.expected_output)]
    if int_compile is not None and int_compile.verdict != "ok":
        why = result_mod.compile_failed(int_compile)
        reason = f"the interactor did not compile: {why.reason or why.verdict}"
        if why.verdict in ("sandbox_error", "cancelled"):
            failed = Result.without_run(why.verdict, reason)
        else:
            failed = Result.without_run(interactive.JUDGE_ERROR, reason)
        return JobOutcome(compile_outcome, [
            StepOutcome(failed, score=0.0,
                        checker_message=interactive.message_of(int_compile.stderr),
                        interactor=int_compile) for _ in tests])

    outcomes: list[StepOutcome | None] = [None] * len(tests)
    scopes = [trio.CancelScope() for _ in tests]
    first_failure = len(tests)

    async def one(i: int, test: TestSpec) -> None:
        nonlocal first_failure
        limits = _limits(run_limits, test.limits, profile.max_limits)
        argv = job.argv or profile.run_argv(sources, limits)
        ilimits = interactive.interactor_limits(ilimits_own, limits, explicit_wall,
                                                iprofile.max_limits)
        iargv = interactive.interactor_argv(inter.argv or iprofile.run_argv(isources, ilimits),
                                            test.expected_output is not None)
        on_err = None
        if job.on_output is not None:  # only stderr: the solution's stdout is the wire
            cb = job.on_output

            async def on_err(stream: str, data: bytes) -> None:
                await cb(i, stream, data)

        sol_step = RunStep(argv=argv, limits=limits, files=files, env=env,
                           cwd=profile.workdir, on_output=on_err)
        int_step = RunStep(argv=iargv, limits=ilimits, env=ienv, cwd=iprofile.workdir,
                           files=interactive.interactor_files(ifiles, test.stdin,
                                                              test.expected_output))

        async def body(sol_box: Container, int_box: Container,
                       cpuset: str | None) -> tuple[Ran, Ran]:
            step = dataclasses.replace(sol_step, cpuset=cpuset) if cpuset else sol_step
            return await interactive.run_wired(sol_box, int_box, step, int_step)

        with scopes[i]:
            sol, itr = await pair(container_spec(profile, limits),
                                  container_spec(iprofile, ilimits), body, pin=job.cpuset_pin)
            # The runtime's own out-of-memory error is a memory limit, as for any run.
            sol = dataclasses.replace(sol, result=result_mod.judged(
                sol.result, heap_markers=profile.out_of_memory))
            verdict, reason, score, message = interactive.interactive_verdict(sol, itr)
            result = dataclasses.replace(sol.result, verdict=verdict, reason=reason)
            outcome = outcomes[i] = StepOutcome(result, score=score, checker_message=message,
                                                interactor=itr.result)
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

