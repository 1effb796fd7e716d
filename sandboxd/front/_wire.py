"""The msgpack records (``sandboxd_protocol``) in the job service's terms, and back.

Strategy: one place maps each wire record to the service's types, so every
front door that carries msgpack jobs (the socket, a queue) maps them alike.
Not a front door itself: it imports no front door, and none of its functions
does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

import sandboxd_protocol as proto
from sandboxd import jobs
from sandboxd.jobs import BatchSpec, JobOutcome, JobSpec, ProgramSpec, TestSpec
from sandboxd.limits import Limits
from sandboxd.profiles import Profile
from sandboxd.result import Result
from sandboxd.workspace import Upload


def program_spec(p: proto.Program, profiles: Callable[[str], Profile]) -> ProgramSpec:
    """A problem's program (checker, generator, interactor) in the service's terms; ``profiles``
    looks its profile up (``JobService.profile``: an unknown one is refused there)."""
    return ProgramSpec(profile=profiles(p.profile), files=dict(p.files),
                       argv=list(p.argv) if p.argv else None, limits=p.limits)


def job_spec(sub: proto.JobSubmission, profile: Profile, *,
             on_output: Callable[[int, str, bytes], Awaitable[None]] | None = None,
             on_compile_output: Callable[[str, bytes], Awaitable[None]] | None = None,
             stdin_stream: AsyncIterator[bytes] | None = None,
             profiles: Callable[[str], Profile] | None = None,
             workspace: Upload | None = None) -> JobSpec:
    """A submission as the service runs it (its streams are the front door's own).

    ``profiles`` finds the profiles of the job's checker, generators and interactor (the
    service's lookup); without it, they must be the job's own profile.
    """
    def lookup(name: str) -> Profile:
        if profiles is not None:
            return profiles(name)
        if name != profile.name:
            raise jobs.JobError(f"profile {name!r}: this front door runs problem programs "
                                "only in the job's own profile")
        return profile

    return JobSpec(
        workspace=workspace, caches=tuple(sub.caches or ()),
        artifacts=tuple(sub.artifacts) if sub.artifacts is not None else None,
        profile=profile, files=dict(sub.files), stdin=sub.stdin,
        argv=list(sub.argv) if sub.argv else None, env=dict(sub.env or {}),
        limits=sub.limits,
        compile_argv=list(sub.compile.argv) if sub.compile and sub.compile.argv else None,
        compile_limits=sub.compile.limits if sub.compile else None,
        tests=[TestSpec(stdin=t.stdin, expected_output=t.expected_output,
                        limits=t.limits, repeat=t.repeat, generator=t.generator,
                        generator_args=list(t.generator_args or ()))
               for t in sub.tests] if sub.tests is not None else None,
        expected_output=sub.expected_output, compare=sub.compare,
        float_tolerance=sub.float_tolerance, stop_on_failure=sub.stop_on_failure,
        cpuset_pin=bool(sub.cpuset_pin), warm_runtime=sub.warm_runtime,
        memory_mode=sub.memory_mode, on_output=on_output,
        on_compile_output=on_compile_output, stdin_stream=stdin_stream,
        checker=program_spec(sub.checker, lookup) if sub.checker is not None else None,
        generators=[program_spec(g, lookup) for g in sub.generators or ()],
        batches=[BatchSpec(name=b.name, tests=list(b.tests), points=b.points,
                           stop_on_failure=b.stop_on_failure, depends=list(b.depends or ()))
                 for b in sub.batches] if sub.batches is not None else None,
        interactor=program_spec(sub.interactor, lookup) if sub.interactor is not None else None,
        network_allow=sub.network.allow if sub.network is not None else None)


def job_result(id: str, outcome: JobOutcome, max_frame: int) -> proto.JobResult:
    """An outcome as one result frame, its outputs cut to fit (``_fit``)."""
    steps = tuple(step_result(o) for o in outcome.steps)
    compile_result = step_result(outcome.compile) if outcome.compile else None
    steps, compile_result = _fit(steps, compile_result, max_frame)
    batches = tuple(proto.BatchResult(name=b.name, verdict=b.verdict, score=b.score,
                                      points=b.points)
                    for b in outcome.batches) if outcome.batches is not None else None
    return proto.JobResult(id=id, compile=compile_result, steps=steps, batches=batches,
                           score=outcome.score)


def wire_limits(lim: Limits) -> proto.JobLimits:
    return lim.to_wire()


RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(Result))
"""A step's fields, the same names on the wire (tests/unit/test_result_shape.py checks)."""


def step_result(outcome: jobs.StepOutcome) -> proto.StepResult:
    r = outcome.result
    repeat = None
    if outcome.repeat is not None:
        rp = outcome.repeat
        repeat = proto.RepeatStats(runs=rp.runs, cpu_time_min=rp.cpu[0],
                                   cpu_time_median=rp.cpu[1], cpu_time_max=rp.cpu[2],
                                   wall_time_min=rp.wall[0], wall_time_median=rp.wall[1],
                                   wall_time_max=rp.wall[2], memory_peak_max=rp.memory_peak_max,
                                   chosen=rp.chosen)
    checker = None
    if outcome.checker is not None:  # its accounting; its words are checker_message
        c = outcome.checker
        checker = proto.StepResult(**{name: getattr(c, name) for name in RESULT_FIELDS
                                      if not name.startswith(("stdout", "stderr"))},
                                   stdout_truncated=bool(c.stdout) or c.stdout_truncated,
                                   stderr_truncated=bool(c.stderr) or c.stderr_truncated)
    inter = None
    if outcome.interactor is not None:  # its run, outputs and all
        inter = step_result(jobs.StepOutcome(outcome.interactor))
    found = outcome.artifacts
    return proto.StepResult(**{name: getattr(r, name) for name in RESULT_FIELDS},
                            repeat=repeat, score=outcome.score,
                            checker_message=outcome.checker_message, checker=checker,
                            interactor=inter,
                            artifacts=found.files if found is not None else None,
                            artifacts_truncated=found.truncated if found is not None else None)


# What a step result holds besides its outputs, at most (reason <= 1 KiB, numbers, flags,
# a repeat record), and the rest of a result frame.
_STEP_OVERHEAD = 2048
_RESULT_OVERHEAD = 1024


def _fit(steps: tuple[proto.StepResult, ...], compile_result: proto.StepResult | None,
         max_frame: int) -> tuple[tuple[proto.StepResult, ...], proto.StepResult | None]:
    """Cut the outputs of a result so that it fits in one frame, marking them truncated.

    A job may ask for up to 1 GiB of output per stream, and a batch has many
    steps: more than a frame carries (64 MiB by default). A frame the protocol
    refuses to send would break the connection, so every stream keeps the same
    share of the room instead (a cut one says so, as at its output limit).
    """
    everything = [*steps, *([compile_result] if compile_result else [])]
    room = max_frame - _RESULT_OVERHEAD - _STEP_OVERHEAD * len(everything)
    found = sum(len(k) + len(v) + 16 for st in everything for k, v in (st.artifacts or {}).items())
    if found > room // 2:  # artifacts never crowd out the outputs: past half, none come
        steps = tuple(dataclasses.replace(st, artifacts={}, artifacts_truncated=True)
                      if st.artifacts else st for st in steps)
        everything = [*steps, *([compile_result] if compile_result else [])]
        found = 0
    # An interactive test's interactor run is one more step inside it, with a message.
    inner = [s.interactor for s in everything if s.interactor is not None]
    total = sum(len(s.stdout) + len(s.stderr) for s in [*everything, *inner])
    room -= found + _STEP_OVERHEAD * len(inner) \
        + sum(len((s.checker_message or "").encode()) for s in everything)
    if total <= room:
        return steps, compile_result
    keep = max(0, room) / total

    def cut(s: proto.StepResult) -> proto.StepResult:
        out, err = int(len(s.stdout) * keep), int(len(s.stderr) * keep)
        return dataclasses.replace(
            s, stdout=s.stdout[:out], stderr=s.stderr[:err],
            stdout_truncated=s.stdout_truncated or out < len(s.stdout),
            stderr_truncated=s.stderr_truncated or err < len(s.stderr),
            interactor=cut(s.interactor) if s.interactor is not None else None)

    return tuple(cut(s) for s in steps), cut(compile_result) if compile_result else None


def profile_infos(profiles: Iterable[Profile],
                  versions: Mapping[str, str]) -> tuple[proto.ProfileInfo, ...]:
    """What ``welcome`` lists: every profile, unavailable ones with their reason."""
    return tuple(proto.ProfileInfo(
        name=p.name, description=p.description, compiled=p.compile is not None,
        default_limits=wire_limits(p.limits), max_limits=wire_limits(p.max_limits),
        entry=p.entry, version=versions.get(p.name) or None,
        available=not p.unavailable, unavailable_reason=p.unavailable or None)
        for p in profiles)


# -- the other way: what a gateway forwards to a cluster (sandboxd/front/_cluster_service.py) ------


def job_submission(id: str, spec: JobSpec, *, stream: bool) -> proto.JobSubmission:
    """``spec`` as the wire's submission (``job_spec``'s inverse; its callbacks and its
    stdin stream are the caller's to carry)."""
    compiled = spec.compile_argv is not None or spec.compile_limits is not None
    return proto.JobSubmission(
        id=id, profile=spec.profile.name, files=dict(spec.files), stdin=spec.stdin,
        argv=tuple(spec.argv) if spec.argv else None, env=dict(spec.env) or None,
        limits=spec.limits, cpuset_pin=spec.cpuset_pin or None,
        compile=proto.CompileStep(argv=tuple(spec.compile_argv) if spec.compile_argv
                                  else None, limits=spec.compile_limits) if compiled else None,
        tests=tuple(proto.TestCase(stdin=t.stdin, expected_output=t.expected_output,
                                   limits=t.limits, repeat=t.repeat, generator=t.generator,
                                   generator_args=tuple(t.generator_args)
                                   if t.generator is not None else None)
                    for t in spec.tests) if spec.tests is not None else None,
        expected_output=spec.expected_output, compare=spec.compare,
        float_tolerance=spec.float_tolerance, stop_on_failure=spec.stop_on_failure,
        stream=stream, interactive_stdin=spec.stdin_stream is not None,
        warm_runtime=spec.warm_runtime, memory_mode=spec.memory_mode,
        # A judge's fields (issue 17): a gateway forwards them as a daemon would take them.
        checker=program_record(spec.checker) if spec.checker is not None else None,
        generators=tuple(program_record(g) for g in spec.generators) or None,
        batches=tuple(proto.Batch(name=b.name, tests=tuple(b.tests), points=b.points,
                                  stop_on_failure=b.stop_on_failure,
                                  depends=tuple(b.depends) or None)
                      for b in spec.batches) if spec.batches is not None else None,
        interactor=program_record(spec.interactor) if spec.interactor is not None else None,
        network=proto.NetworkAccess(allow=tuple(spec.network_allow))
        if spec.network_allow is not None else None)


def program_record(p: ProgramSpec) -> proto.Program:
    """``program_spec``'s inverse: a problem's program as the wire's record."""
    return proto.Program(profile=p.profile.name, files=dict(p.files),
                         argv=tuple(p.argv) if p.argv else None, limits=p.limits)


def step_outcome(s: proto.StepResult) -> jobs.StepOutcome:
    """A wire step as the service's (``step_result``'s inverse)."""
    repeat = None
    if s.repeat is not None:
        rp = s.repeat
        repeat = jobs.RepeatSummary(
            runs=rp.runs, cpu=(rp.cpu_time_min, rp.cpu_time_median, rp.cpu_time_max),
            wall=(rp.wall_time_min, rp.wall_time_median, rp.wall_time_max),
            memory_peak_max=rp.memory_peak_max, chosen=rp.chosen or 0)
    def run(r: proto.StepResult | None) -> Result | None:
        return Result(**{name: getattr(r, name) for name in RESULT_FIELDS}) \
            if r is not None else None

    return jobs.StepOutcome(Result(**{name: getattr(s, name) for name in RESULT_FIELDS}),
                            repeat, score=s.score, checker_message=s.checker_message,
                            checker=run(s.checker), interactor=run(s.interactor))


def job_outcome(res: proto.JobResult) -> JobOutcome:
    """A wire result as the service's outcome (``job_result``'s inverse)."""
    batches = [jobs.BatchOutcome(b.name, b.verdict, b.score, b.points)
               for b in res.batches] if res.batches is not None else None
    return JobOutcome(step_outcome(res.compile) if res.compile is not None else None,
                      [step_outcome(s) for s in res.steps], batches, res.score)
