"""A job, from request to results: compile once, then run every test in a fresh container.

Strategy: a job is a small plan of steps, each run in its own single-use
container by a ``StepRunner`` (the scheduler: it bounds concurrency, leases
containers from the pool and, for a pinned job, gives each run a CPU of its
own). The compile step's output (the regular files it left in /box) is
copied into every test's container, so a batch of N tests compiles exactly
once. Tests run in parallel up to the runner's concurrency; results come
back in test order. With ``stop_on_failure`` they still run in parallel: the
first failure (in test order) cancels every later test, and every later
test is reported ``cancelled`` whether it had finished or not, so the
result never depends on timing. Every verdict is decided in ``sandboxd.result``; the summary of
repeated runs is a pure function (``summarize``), unit-tested without a kernel.

A job with a checker, generators or batches (``JobSpec.judged_by_programs``)
is run by the service's judge loop (sandboxd/service/_judge.py) from the
pieces here: ``compile_job`` and ``run_test``.

This module knows nothing of sockets or the wire protocol's messages; it
takes limits in the protocol's typed ``JobLimits``, built from the table of
limits, so that they reach ``Limits.merged`` with no dict in between.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from sandboxd import egress, runtimes
from sandboxd import result as result_mod
from sandboxd.compare import COMPARE_MODES
from sandboxd.container import ArtifactRequest, RunStep
from sandboxd.isolation import rlimits
from sandboxd.limits import LimitError, Limits
from sandboxd.profiles import Profile, expand
from sandboxd.result import Result
from sandboxd.spawn import ContainerSpec, WarmStart
from sandboxd.workspace import Artifacts, Upload, WorkspaceError, check_globs
from sandboxd_protocol import JobLimits

_PAGE = os.sysconf("SC_PAGE_SIZE")


class StepRunner(Protocol):
    """Runs one step in a fresh container; ``collect``: return the files it left in
    /box; ``pin``: on one CPU that no other pinned step uses meanwhile."""

    async def __call__(self, spec: ContainerSpec, step: RunStep, collect: bool,
                       pin: bool = False) -> tuple[Result, dict[str, bytes] | None]: ...


@dataclass(slots=True)
class TestSpec:
    stdin: bytes = b""
    expected_output: bytes | None = None
    limits: JobLimits | None = None  # this test's own, over the job's
    repeat: int = 1
    generator: int | None = None  # index in JobSpec.generators: its run makes stdin
    generator_args: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ProgramSpec:
    """A program of the problem's (a checker, a generator, an interactor): its own profile, files,
    argv and limits; compiled like a solution, run in containers of its own."""

    profile: Profile
    files: dict[str, bytes]
    argv: list[str] | None = None
    limits: JobLimits | None = None  # run limits over its profile's


@dataclass(slots=True)
class BatchSpec:
    """A subtask: tests scored together (DMOJ's batch)."""

    name: str
    tests: list[int]
    points: float = 1.0
    stop_on_failure: bool = False
    depends: list[str] = field(default_factory=list)


@dataclass(slots=True)
class JobSpec:
    """A validated job, in our own terms (the server maps the wire's JobSubmission to it).

    Its limits are the protocol's typed ``JobLimits`` as they came off the wire:
    ``Limits.merged`` applies and checks them, once (the only validation).
    """

    profile: Profile
    files: dict[str, bytes]
    stdin: bytes = b""
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: JobLimits | None = None  # over the profile's; None (or a field None) = its default
    compile_argv: list[str] | None = None
    compile_limits: JobLimits | None = None
    tests: list[TestSpec] | None = None
    expected_output: bytes | None = None
    compare: str = "trailing_ws"
    float_tolerance: float | None = None
    stop_on_failure: bool = False
    cpuset_pin: bool = False
    on_output: Callable[[int, str, bytes], Awaitable[None]] | None = None  # test, stream, data
    on_compile_output: Callable[[str, bytes], Awaitable[None]] | None = None
    # The two callbacks above only record what they are given (they never wait, on a
    # client or anything else): the steps then keep the one-task watch of a job that does
    # not stream, which calls them as it reads (container.RunStep.output_inline).
    output_inline: bool = False
    stdin_stream: AsyncIterator[bytes] | None = None
    # The profile's warm runtime (sandboxd/runtimes/): None = the server's choice (yes,
    # unless the job is judged and the profile says no), False = the plain start, True =
    # whenever the job can have it (its argv, env, stdin and limits allowing), judged too.
    warm_runtime: bool | None = None
    # How the run steps' memory limit counts ("peak", "address_space"); None = the profile's.
    memory_mode: str | None = None
    # A judge's job (sandboxd/service/_judge.py runs it): a checker instead of compare,
    # programs that make tests, subtasks.
    checker: ProgramSpec | None = None
    generators: list[ProgramSpec] = field(default_factory=list)
    batches: list[BatchSpec] | None = None

    # An interactive problem (sandboxd/service/_interactive.py runs it): each test runs
    # the solution and this program together, wired stdout to stdin both ways.
    interactor: ProgramSpec | None = None

    # A CI job (docs/ci.md): an archive unpacked into /box, the operator's read-only
    # caches (host path, /cache/<name>: the service resolves the names), globs of files
    # to bring back from /box after each run step, and the caps on both.
    workspace: Upload | None = None
    caches: tuple[str, ...] = ()  # names in the job; the service fills cache_binds
    cache_binds: tuple[tuple[str, str], ...] = ()
    artifacts: tuple[str, ...] | None = None
    workspace_max_files: int = 100_000
    artifacts_max_files: int = 1000
    artifacts_max_bytes: int = 16 << 20

    @property
    def judged_by_programs(self) -> bool:
        """Whether the judge loop (checker, generators, batches) runs this job."""
        return (self.checker is not None or bool(self.generators)
                or self.batches is not None)

    # Outbound TCP the job may make, "host:port" each (sandboxd/egress.py): None = its
    # profile's ``network_allow``; () = none. The operator's ``egress_allow`` caps both
    # (the service refuses the job otherwise).
    network_allow: tuple[str, ...] | None = None
    egress_hosts: dict[str, str] = field(default_factory=dict)  # the operator's pinned names
    # The resolved destinations (compile_job resolves them once per job, at its start).
    egress_plan: egress.Plan | None = None

    def network(self) -> tuple[egress.Destination, ...]:
        """The destinations this job may reach: its own list, else its profile's;
        ``egress.EgressError`` for a malformed entry."""
        if self.network_allow is None:
            return self.profile.network_allow
        return egress.parse_allow(self.network_allow)


@dataclass(slots=True)
class RepeatSummary:
    runs: int
    cpu: tuple[float, float, float]  # min, median, max
    wall: tuple[float, float, float]
    memory_peak_max: int
    chosen: int = 0  # which run the outcome's result is (first failing, else median CPU)


@dataclass(slots=True)
class StepOutcome:
    result: Result
    repeat: RepeatSummary | None = None
    score: float | None = None  # judged jobs: the fraction of the test's points
    checker_message: str | None = None
    checker: Result | None = None  # the checker's own run
    interactor: Result | None = None  # an interactive test: the interactor's own run
    artifacts: Artifacts | None = None  # with the job's ``artifacts`` globs


@dataclass(slots=True)
class BatchOutcome:
    name: str
    verdict: str
    score: float  # points earned
    points: float  # points at stake


@dataclass(slots=True)
class JobOutcome:
    compile: StepOutcome | None
    steps: list[StepOutcome]
    batches: list[BatchOutcome] | None = None
    score: float | None = None  # judged jobs: points earned in all


class JobError(ValueError):
    """The job cannot run as asked (a limit out of range, a missing compile step...).

    ``code`` is the protocol's error code the service answers with.
    """

    def __init__(self, message: str, code: str = "limit_exceeded") -> None:
        super().__init__(message)
        self.code = code


def _limits(base: Limits, overrides: JobLimits | None, ceiling: Limits) -> Limits:
    try:
        return base.merged(overrides, ceiling)
    except LimitError as e:
        raise JobError(str(e)) from None


def container_spec(profile: Profile, limits: Limits,
                   warm: WarmStart | None = None,
                   cache_binds: tuple[tuple[str, str], ...] = ()) -> ContainerSpec:
    return ContainerSpec(slot=0, box_size=limits.box_size, tmp_size=limits.tmp_size,
                         seccomp_policy=profile.seccomp,
                         extra_binds=profile.binds + cache_binds,
                         image=profile.image_id, image_store=profile.image_store, warm=warm)


def default_spec(profile: Profile, warm: bool = True) -> ContainerSpec:
    """The shape the pool keeps warm for a profile: its default limits, with its warm
    runtime if it has one (unless ``warm`` is false: the shape of its plain starts)."""
    return container_spec(profile, profile.limits,
                          _warm_for(profile, profile.limits) if warm else None)


def _warm_for(profile: Profile, limits: Limits) -> WarmStart | None:
    """The interpreter a run step of ``profile`` under ``limits`` would start."""
    if not profile.warm_runtime:
        return None
    at = profile.entry_index()
    argv = expand(profile.run[:at], profile.entry, [], limits)
    return runtimes.warm_start(profile.warm_runtime, [*argv, profile.entry], at,
                               dict(profile.env), profile.workdir, limits)


def memory_mode(job: JobSpec) -> str:
    """The run steps' memory mode: the job's, else its profile's."""
    return job.memory_mode or job.profile.memory_mode


def plain_starts(job: JobSpec) -> bool:
    """Whether a job whose profile has a warm runtime starts plainly (its run step under
    the job's own limits; the pool then keeps that shape warm too)."""
    profile = job.profile
    return warm_start(job, _limits(profile.limits, job.limits, profile.max_limits)) is None


def warm_start(job: JobSpec, limits: Limits) -> WarmStart | None:
    """The warm runtime a run step of ``job`` under ``limits`` is handed to, or None for
    the plain start.

    Only a job that would have started that very interpreter: no argv, environment or
    interactive stdin of its own, and limits that change nothing the interpreter started
    with (node's heap ceiling follows the memory limit; every runtime's rlimits follow
    the CPU time, file size, open files and stack), and not too little memory for what
    it already holds. Rlimits lower than the shape's are no obstacle for a runtime
    that lowers its own at the hand-over (``Runtime.lowers_rlimits``). A judged job
    (tests, expected output, a pinned CPU) keeps the plain start, so that judges measure
    what they always measured, unless its profile (``warm_judged``) or the job itself
    (``warm_runtime``) asks otherwise.
    """
    profile = job.profile
    if not profile.warm_runtime or job.warm_runtime is False:
        return None
    if memory_mode(job) == "address_space":  # RLIMIT_AS after the interpreter's start: no
        return None
    if job.argv is not None or job.env or job.stdin_stream is not None:
        return None
    if job.workspace is not None or job.cache_binds:
        return None  # a CI job: the plain start, its /box filled before the hand-over
    judged = job.tests is not None or job.expected_output is not None or job.cpuset_pin
    if judged and not (profile.warm_judged or job.warm_runtime):
        return None
    return _warm_choice(profile, limits)


# (id(profile), limits) -> (profile, its choice): ``_warm_choice``'s memo. The profile is
# kept in the value, so that its id cannot be reused by another while its entry lives.
_WARM_CHOICES: dict[tuple[int, Limits], tuple[Profile, WarmStart | None]] = {}
_WARM_CHOICES_MAX = 256


def _warm_choice(profile: Profile, limits: Limits) -> WarmStart | None:
    """``_warm_choice_of``, remembered per (profile, limits).

    Why: a service asks it twice per job (``plain_starts`` at admission, ``run_test``
    for the step), each time building two ``WarmStart`` records (argv, environment,
    rlimits) and comparing them; with limits other than the profile's (Judge0's and
    Piston's defaults) also a copy and an rlimits comparison: ~8-12 us a call, a
    visible part of what the HTTP doors add per job. It is a pure function of the
    profile and the limits (frozen records; the runtimes' table and texts are
    constants), and clients send the same few limits job after job. Profiles are
    loaded once when the daemon starts and never change while it runs; a profile
    loaded again would be another object, another key (its identity is checked, not
    only its id). Bounded: past ``_WARM_CHOICES_MAX`` shapes it starts afresh.
    """
    key = (id(profile), limits)
    hit = _WARM_CHOICES.get(key)
    if hit is not None and hit[0] is profile:
        return hit[1]
    choice = _warm_choice_of(profile, limits)
    if len(_WARM_CHOICES) >= _WARM_CHOICES_MAX:
        _WARM_CHOICES.clear()
    _WARM_CHOICES[key] = (profile, choice)
    return choice


def _warm_choice_of(profile: Profile, limits: Limits) -> WarmStart | None:
    """The warm start of a run step of ``profile`` under ``limits`` for a job that asks
    nothing else of it (``warm_start``'s rules that depend on these two alone)."""
    if limits.memory < runtimes.RUNTIMES[profile.warm_runtime].min_memory:
        return None
    warm, shape = _warm_for(profile, limits), _warm_for(profile, profile.limits)
    if warm == shape:
        return warm
    # Only the rlimits lower than the shape's: a bootstrap that lowers its own takes it.
    if (warm is not None and shape is not None and shape.lowers_rlimits
            and dataclasses.replace(warm, rlimits=shape.rlimits) == shape
            and rlimits.lower_or_equal(warm.rlimits, shape.rlimits)):
        return shape
    return None


def validate(job: JobSpec) -> None:
    """Refuse, before accepting it, a job whose limits or options cannot be honoured."""
    profile = job.profile
    compile_only = job.tests is not None and not job.tests
    # Compile only: no step runs, so the run limits are not the job's concern (a judge
    # may send the problem's, whatever they are); but there must be a compile step.
    if compile_only and not (profile.compile or job.compile_argv):
        raise JobError(f"tests: [] asks to compile only, and profile {profile.name!r} "
                           "has no compile step (give compile.argv)", "invalid_job")
    if job.compile_limits is not None or (job.compile_argv and not profile.compile):
        # Without a compile step of the profile's, the job's limits are the compile's base.
        base = (profile.compile.limits if profile.compile
                else _limits(profile.limits, job.limits, profile.max_limits))
        try:
            _limits(base, job.compile_limits, profile.max_limits)
        except JobError as e:
            raise JobError(f"compile: {e}") from None
    if job.compare not in COMPARE_MODES:
        raise JobError(f"unknown compare mode {job.compare!r}")
    mode = memory_mode(job)
    if mode not in profile.memory_modes:
        raise JobError(f"memory_mode {mode!r}: profile {profile.name!r} counts memory only as "
                       f"{' or '.join(profile.memory_modes)} (docs/profiles.md: its runtime "
                       "reserves far more address space than it uses)", "invalid_job")
    if compile_only:
        return
    run_limits = _limits(profile.limits, job.limits, profile.max_limits)
    # /box is a tmpfs of box_size bytes that first holds the job's own files, a page
    # at least each: a box smaller than them could not even receive the job.
    need = sum(-(-len(data) // _PAGE) * _PAGE for data in job.files.values())
    if need > run_limits.box_size:
        raise JobError(f"limit box_size={run_limits.box_size} is smaller than the job's "
                       f"files ({need} bytes in pages of {_PAGE})")
    for i, test in enumerate(job.tests or []):
        try:
            _limits(run_limits, test.limits, profile.max_limits)
        except JobError as e:
            raise JobError(f"tests[{i}]: {e}") from None
    if job.stdin_stream is not None and job.tests is not None and len(job.tests) != 1:
        raise JobError("interactive stdin needs a job with a single run step")
    if job.interactor is not None:
        validate_interactor(job, run_limits)
        if job.checker is not None:  # generators and batches are welcome
            raise JobError("an interactive problem takes no checker: its interactor judges "
                           "each test", "invalid_job")
    if job.workspace is not None and job.stdin_stream is not None:
        raise JobError("a workspace job cannot have interactive stdin")
    if job.artifacts is not None:
        try:
            check_globs(job.artifacts)
        except WorkspaceError as e:
            raise JobError(str(e)) from None


def validate_interactor(job: JobSpec, run_limits: Limits) -> None:
    """An interactive problem's own rules: the interactor's limits, and no field that
    would fight the wiring (the solution's stdin and stdout are the interactor's)."""
    inter = job.interactor
    assert inter is not None
    iprofile = inter.profile
    if iprofile.unavailable:
        raise JobError(f"interactor: profile {iprofile.name!r} is unavailable here: "
                       f"{iprofile.unavailable}")
    try:
        _limits(iprofile.limits, inter.limits, iprofile.max_limits)
    except JobError as e:
        raise JobError(f"interactor: {e}") from None
    if not inter.files and not inter.argv:
        raise JobError("interactor: needs files or an argv")
    if job.stdin_stream is not None:
        raise JobError("an interactive problem cannot take interactive stdin: the "
                       "interactor is the solution's stdin")
    if any(t.repeat > 1 for t in job.tests or []):
        raise JobError("an interactive problem's tests run once each (repeat is 1)")


async def compile_job(job: JobSpec, runner: StepRunner
                      ) -> tuple[StepOutcome | None, dict[str, bytes] | None]:
    """The job's compile step, if it has one: (its outcome, the files the tests run
    with); the files are None when the compile did not end ``ok`` (the outcome says
    why, already as ``compile_error`` when it was the source's fault)."""
    profile = job.profile
    if profile.unavailable:
        raise JobError(f"profile {profile.name!r} is unavailable here: {profile.unavailable}")
    files = job.files
    if job.network() and job.egress_plan is None:  # resolved once, for every step
        try:
            job.egress_plan = await trio.to_thread.run_sync(egress.resolve, job.network(),
                                                            job.egress_hosts)
        except egress.EgressError as e:
            raise JobError(str(e)) from None
    if job.workspace is not None:  # the job runs once its whole archive is in
        try:
            await job.workspace.wait()
        except WorkspaceError as e:
            raise JobError(str(e)) from None
    if not (job.compile_argv or profile.compile):
        return None, files
    base = (profile.compile.limits if profile.compile
            else _limits(profile.limits, job.limits, profile.max_limits))
    climits = _limits(base, job.compile_limits, profile.max_limits)
    compile_argv = job.compile_argv or profile.compile_argv(sorted(job.files), climits)
    assert compile_argv is not None
    step = RunStep(argv=compile_argv, limits=climits, files=files,
                   env={**profile.env, **job.env}, cwd=profile.workdir,
                   on_output=job.on_compile_output, output_inline=job.output_inline,
                   workspace=job.workspace,
                   network=job.egress_plan,
                   box_caps=(job.workspace_max_files, climits.box_size))
    result, built = await runner(container_spec(profile, climits,
                                                cache_binds=job.cache_binds), step, True)
    if result.verdict != "ok":  # ours (sandbox_error, cancelled) or the source's
        return StepOutcome(result_mod.compile_failed(result)), None
    return StepOutcome(result), built or {}


async def run_test(job: JobSpec, i: int, test: TestSpec, files: dict[str, bytes],
                   runner: StepRunner, *, single: bool) -> StepOutcome:
    """Test ``i`` of ``job`` (``repeat`` times, up to the first failing run), with its
    verdict judged against its expected output, if it has one. ``single``: the job's
    only run step (the one an interactive stdin feeds)."""
    profile = job.profile
    run_limits = _limits(profile.limits, job.limits, profile.max_limits)
    limits = _limits(run_limits, test.limits, profile.max_limits)
    argv = job.argv or profile.run_argv(sorted(job.files), limits)  # {memory_mb} is per test
    on_out = None
    if job.on_output is not None:
        cb = job.on_output

        async def on_out(stream: str, data: bytes) -> None:
            await cb(i, stream, data)

    spec = container_spec(profile, limits, warm_start(job, limits), job.cache_binds)
    env = {**profile.env, **job.env}
    address_space = memory_mode(job) == "address_space"
    compiled = bool(job.compile_argv or profile.compile)  # then the build holds /box's files
    results: list[Result] = []
    found: list[Artifacts | None] = []
    for _ in range(max(1, test.repeat)):
        wanted = None if job.artifacts is None else ArtifactRequest(
            job.artifacts, job.artifacts_max_files, job.artifacts_max_bytes)
        step = RunStep(argv=argv, limits=limits, files=files, stdin=test.stdin,
                       env=env, cwd=profile.workdir, on_output=on_out,
                       output_inline=job.output_inline,
                       stdin_stream=job.stdin_stream if single else None,
                       address_space=limits.memory if address_space else None,
                       workspace=None if compiled else job.workspace,
                       box_caps=(job.workspace_max_files, limits.box_size),
                       artifacts=wanted, network=job.egress_plan)
        result, _ = await runner(spec, step, False, pin=job.cpuset_pin)
        found.append(wanted.found if wanted is not None else None)
        result = result_mod.judged(result, heap_markers=profile.out_of_memory,
                                   expected=test.expected_output, mode=job.compare,
                                   tolerance=job.float_tolerance,
                                   address_space=address_space)
        results.append(result)
        if result.verdict != "ok":
            break
    outcome = summarize(results)
    if job.artifacts is not None:  # the chosen run's, or none found (it never ran)
        outcome.artifacts = found[outcome.repeat.chosen if outcome.repeat else 0] \
            or Artifacts()
    return outcome


async def run_job(job: JobSpec, runner: StepRunner) -> JobOutcome:
    compile_outcome, files = await compile_job(job, runner)
    if files is None:
        assert compile_outcome is not None
        return JobOutcome(compile_outcome, [])
    if job.tests is not None and not job.tests:  # compile only
        return JobOutcome(compile_outcome, [])
    tests = job.tests if job.tests is not None else [
        TestSpec(stdin=job.stdin, expected_output=job.expected_output)]
    outcomes: list[StepOutcome | None] = [None] * len(tests)
    scopes = [trio.CancelScope() for _ in tests] if len(tests) > 1 else []
    first_failure = len(tests)  # with stop_on_failure: the lowest failing test so far

    async def one(i: int, test: TestSpec) -> None:
        nonlocal first_failure
        assert files is not None
        outcome = None
        with scopes[i]:
            outcome = await run_test(job, i, test, files, runner, single=len(tests) == 1)
        if scopes[i].cancelled_caught or outcome is None:
            return
        outcomes[i] = outcome
        if job.stop_on_failure and outcome.result.verdict != "ok" and i < first_failure:
            first_failure = i
            for later in scopes[i + 1:]:
                later.cancel()

    if len(tests) == 1:  # the common job: no nursery, no task of its own to spawn and reap,
        # and no scope of its own either (only a failure of an earlier test cancels one)
        outcomes[0] = await run_test(job, 0, tests[0], files, runner, single=True)
    else:
        async with trio.open_nursery() as nursery:
            for i, test in enumerate(tests):
                nursery.start_soon(one, i, test)
                # Tests queue for the runner's concurrency in test order (its limiter is
                # FIFO); this lets test i reach the queue before test i+1 starts.
                await trio.lowlevel.checkpoint()
    steps = [o if o is not None and i <= first_failure else StepOutcome(Result.without_run(
                 "cancelled", "skipped after an earlier test failed"))
             for i, o in enumerate(outcomes)]
    return JobOutcome(compile_outcome, steps)


def summarize(results: list[Result]) -> StepOutcome:
    """One outcome for N runs of a test: the verdict of the first failing run, else the
    run with the median CPU time; min/median/max of CPU and wall across runs."""
    if len(results) == 1:
        return StepOutcome(results[0])
    failing = [i for i, r in enumerate(results) if r.verdict != "ok"]
    if failing:
        chosen = failing[0]
    else:  # the lower median: a real run, not an average of two
        ordered = sorted(range(len(results)), key=lambda i: results[i].cpu_time)
        chosen = ordered[(len(ordered) - 1) // 2]
    cpu = [r.cpu_time for r in results]
    wall = [r.wall_time for r in results]
    return StepOutcome(results[chosen], RepeatSummary(
        runs=len(results),
        cpu=(min(cpu), statistics.median(cpu), max(cpu)),
        wall=(min(wall), statistics.median(wall), max(wall)),
        memory_peak_max=max(r.memory_peak for r in results), chosen=chosen))
