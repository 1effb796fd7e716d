"""The judge workflow without a kernel: comparison, repeats, validation, and ``run_job``'s
plan (compile once, argv per test, pinning, streaming, stop_on_failure) over a fake runner.

The fake runner records every step it is given and answers from a script, so
these tests say what the workflow asks of the scheduler; tests/integration/
test_judge.py proves the same against a real daemon.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
import trio.testing

from sandboxd import jobs
from sandboxd.compare import CompareError, compare
from sandboxd.container import RunStep
from sandboxd.jobs import JobError, JobSpec, summarize
from sandboxd.jobs import TestSpec as Case  # not "Test*": pytest would collect it
from sandboxd.limits import Limits, MiB
from sandboxd.profiles import CompileSpec, Profile
from sandboxd.result import Result, compile_failed, judged
from sandboxd.spawn import ContainerSpec


def res(verdict: str = "ok", cpu: float = 0.1, wall: float = 0.2, stdout: bytes = b"",
        stderr: bytes = b"", memory: int = MiB, exit_code: int | None = 0) -> Result:
    return Result(verdict=verdict, reason=None, exit_code=exit_code, signal=None,
                  cpu_time=cpu, user_time=cpu, sys_time=0.0, wall_time=wall,
                  memory_peak=memory, oom_killed=False, stdout=stdout, stderr=stderr,
                  stdout_truncated=False, stderr_truncated=False)


# ------------------------------------------------------------------- compare


@pytest.mark.parametrize(("got", "expected", "mode", "tol", "same"), [
    (b"1 2\n", b"1 2\n", "exact", None, True),
    (b"1 2\n", b"1 2", "exact", None, False),
    (b"1 2  \n\n\n", b"1 2", "trailing_ws", None, True),
    (b"1 2\r\n", b"1 2\n", "trailing_ws", None, True),  # \r is trailing whitespace
    (b" 1 2\n", b"1 2\n", "trailing_ws", None, False),  # leading space counts
    (b"1\n\n2\n", b"1\n2\n", "trailing_ws", None, False),  # an inner blank line counts
    (b"1  2\n3", b"1 2 3\n", "tokens", None, True),
    (b"1 2", b"1 2 3", "tokens", None, False),
    (b"0.3333334", b"0.3333333", "tokens", None, False),
    (b"0.3333334", b"0.3333333", "tokens", 1e-6, True),
    (b"1000001", b"1000000", "tokens", 1e-6, True),  # relative
    (b"0.31", b"0.3", "tokens", 1e-6, False),
    (b"nan", b"nan", "tokens", 1e-6, True),  # equal tokens match before any float parsing
    (b"nan", b"0", "tokens", 1e-6, False),
    (b"abc", b"abd", "tokens", 1.0, False),  # words are never "close"
])
def test_compare(got: bytes, expected: bytes, mode: str, tol: float | None, same: bool) -> None:
    assert compare(got, expected, mode, tol) is same


def test_compare_unknown_mode() -> None:
    with pytest.raises(CompareError, match="unknown compare mode 'fuzzy'"):
        compare(b"", b"", "fuzzy")


def test_judge_turns_a_mismatch_into_wrong_answer_and_leaves_failures_alone() -> None:
    assert judged(res(stdout=b"3\n"), expected=b"3").verdict == "ok"
    wa = judged(res(stdout=b"4\n"), expected=b"3")
    assert (wa.verdict, wa.reason) == ("wrong_answer", "output differs (trailing_ws)")
    assert judged(res("time_limit", stdout=b"4"), expected=b"3", mode="exact").verdict \
        == "time_limit"
    assert judged(res(stdout=b"anything"), expected=None, mode="exact").verdict == "ok"


def test_a_failed_compile_is_the_sources_fault_unless_it_was_ours() -> None:
    tl = compile_failed(Result(**{**res("time_limit").as_dict(), "reason": "cpu"}))
    assert (tl.verdict, tl.reason) == ("compile_error", "time_limit (cpu)")
    re_ = compile_failed(Result(**{**res("runtime_error").as_dict(), "reason": "exit code 1"}))
    assert (re_.verdict, re_.reason) == ("compile_error", "exit code 1")
    for ours in ("sandbox_error", "cancelled", "ok"):
        assert compile_failed(res(ours)).verdict == ours


# ------------------------------------------------------------------ summarize


def test_summarize_one_run_has_no_repeat_record() -> None:
    out = summarize([res()])
    assert out.repeat is None


def test_summarize_reports_the_median_run_and_the_spread() -> None:
    runs = [res(cpu=c, wall=w) for c, w in [(0.30, 0.5), (0.10, 0.2), (0.20, 0.1), (0.25, 0.3)]]
    out = summarize(runs)
    assert out.repeat is not None
    assert out.repeat.runs == 4
    assert out.repeat.cpu == (0.10, 0.225, 0.30)
    assert out.repeat.wall == (0.1, 0.25, 0.5)
    # the lower median of 4: a real run (index 2, cpu 0.20), not an average
    assert out.repeat.chosen == 2 and out.result is runs[2]


def test_summarize_a_failing_run_decides_the_verdict() -> None:
    runs = [res(cpu=0.1), res("time_limit", cpu=1.0), res(cpu=0.1)]
    out = summarize(runs)
    assert out.result.verdict == "time_limit"
    assert out.repeat is not None and out.repeat.chosen == 1
    assert out.repeat.memory_peak_max == MiB


# ----------------------------------------------------------------- out_of_memory


def test_heap_exhaustion_is_a_memory_limit() -> None:
    markers = ("java.lang.OutOfMemoryError",)
    err = b'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space\n'
    r = judged(res("runtime_error", stderr=err, exit_code=1), heap_markers=markers)
    assert (r.verdict, r.reason) == ("memory_limit", "heap: java.lang.OutOfMemoryError")
    # only a failed run, and only with the marker
    assert judged(res(stderr=err), heap_markers=markers).verdict == "ok"
    assert judged(res("runtime_error", stderr=b"x"), heap_markers=markers).verdict \
        == "runtime_error"
    assert judged(res("runtime_error", stderr=err), heap_markers=()).verdict == "runtime_error"


# ------------------------------------------------------------------- validate


def profile(**kw: Any) -> Profile:
    base: dict[str, Any] = dict(name="t", entry="main.c", run=("./main", "{memory_mb:50%}"),
                                compile=CompileSpec(("cc", "{sources}", "-m{memory_mb}"),
                                                    Limits(memory=512 * MiB)),
                                max_limits=Limits(cpu_time=10, memory=1024 * MiB))
    base.update(kw)
    return Profile(**base)


def test_validate_refuses_limits_above_the_profile_maximum_naming_the_test() -> None:
    spec = JobSpec(profile(), {"main.c": b""}, tests=[Case(), Case(limits={"cpu_time": 11})])
    with pytest.raises(JobError, match=r"tests\[1\]: .*cpu_time"):
        jobs.validate(spec)
    with pytest.raises(JobError, match="cpu_time"):
        jobs.validate(JobSpec(profile(), {}, limits={"cpu_time": 20}))
    with pytest.raises(JobError, match="compare mode"):
        jobs.validate(JobSpec(profile(), {}, compare="fuzzy"))
    jobs.validate(JobSpec(profile(), {}, tests=[Case(limits={"cpu_time": 10})]))


# ------------------------------------------------------------------- run_job


class FakeRunner:
    """A StepRunner that records what it is asked and answers from ``answer(step)``."""

    def __init__(self, answer: Any = None, delay: Any = None) -> None:
        self.steps: list[tuple[RunStep, bool, bool]] = []
        self.answer = answer or (lambda step: res(stdout=step.stdin))
        self.delay = delay or (lambda step: 0.0)
        self.cancelled: list[bytes] = []

    async def __call__(self, spec: ContainerSpec, step: RunStep, collect: bool,
                       pin: bool = False) -> tuple[Result, dict[str, bytes] | None]:
        self.steps.append((step, collect, pin))
        if collect:
            if step.on_output is not None:
                await step.on_output("stderr", b"warning: x\n")
            return res(), {"main": b"\x7fELF"}
        try:
            await trio.sleep(self.delay(step))
        except trio.Cancelled:
            self.cancelled.append(step.stdin)
            raise
        return self.answer(step), None


async def test_compile_once_then_every_test_gets_the_build_and_its_own_argv() -> None:
    runner = FakeRunner()
    chunks: list[tuple[str, bytes]] = []

    async def on_compile(stream: str, data: bytes) -> None:
        chunks.append((stream, data))

    tests = [Case(stdin=b"%d" % i, expected_output=b"%d" % i) for i in range(20)]
    tests[3].limits = {"memory": 100 * MiB}
    spec = JobSpec(profile(), {"main.c": b"int main;"}, tests=tests, cpuset_pin=True,
                   on_compile_output=on_compile)
    outcome = await jobs.run_job(spec, runner)
    compiles = [s for s, collect, _ in runner.steps if collect]
    assert len(compiles) == 1
    assert compiles[0].argv == ["cc", "main.c", "-m512"]  # the compile limits' memory
    assert compiles[0].files == {"main.c": b"int main;"}
    assert chunks == [("stderr", b"warning: x\n")]
    runs = [(s, pin) for s, collect, pin in runner.steps if not collect]
    assert len(runs) == 20 and all(pin for _, pin in runs)
    assert all(s.files == {"main": b"\x7fELF"} for s, _ in runs)
    by_stdin = {s.stdin: s.argv for s, _ in runs}
    assert by_stdin[b"3"] == ["./main", "50"] and by_stdin[b"4"] == ["./main", "128"]
    assert [o.result.stdout for o in outcome.steps] == [b"%d" % i for i in range(20)]
    assert outcome.compile is not None and outcome.compile.result.verdict == "ok"


async def test_compile_failure_is_compile_error_and_runs_nothing() -> None:
    class Failing(FakeRunner):
        async def __call__(self, spec: ContainerSpec, step: RunStep, collect: bool,
                           pin: bool = False) -> tuple[Result, dict[str, bytes] | None]:
            self.steps.append((step, collect, pin))
            return res("runtime_error", stderr=b"main.c:1: error", exit_code=1), None

    runner = Failing()
    outcome = await jobs.run_job(JobSpec(profile(), {"main.c": b"x"}, tests=[Case()]), runner)
    assert outcome.compile is not None
    assert outcome.compile.result.verdict == "compile_error"
    assert outcome.compile.result.stderr == b"main.c:1: error"
    assert outcome.steps == [] and len(runner.steps) == 1


async def test_a_sandbox_error_while_compiling_stays_ours() -> None:
    class Broken(FakeRunner):
        async def __call__(self, spec: ContainerSpec, step: RunStep, collect: bool,
                           pin: bool = False) -> tuple[Result, dict[str, bytes] | None]:
            return Result.sandbox_error("zygote died"), None

    outcome = await jobs.run_job(JobSpec(profile(), {"main.c": b"x"}), Broken())
    assert outcome.compile is not None
    assert outcome.compile.result.verdict == "sandbox_error"


async def test_stop_on_failure_reports_every_later_test_cancelled_whatever_its_timing() -> None:
    # test 2 fails late; tests 3..5 finish earlier (ok) or later: all reported cancelled
    delays = {b"0": 0.01, b"1": 0.02, b"2": 0.05, b"3": 0.0, b"4": 0.5, b"5": 1.0}

    def answer(step: RunStep) -> Result:
        return res("runtime_error", exit_code=1) if step.stdin == b"2" else res()

    runner = FakeRunner(answer, lambda step: delays[step.stdin])
    tests = [Case(stdin=k) for k in delays]
    with trio.fail_after(5):
        outcome = await jobs.run_job(JobSpec(profile(compile=None), {}, tests=tests,
                                             stop_on_failure=True), runner)
    verdicts = [o.result.verdict for o in outcome.steps]
    assert verdicts == ["ok", "ok", "runtime_error", "cancelled", "cancelled", "cancelled"]
    assert outcome.steps[3].result.reason == "skipped after an earlier test failed"
    assert set(runner.cancelled) == {b"4", b"5"}  # still running: stopped, not waited for


async def test_tests_reach_the_runner_in_test_order() -> None:
    runner = FakeRunner()
    tests = [Case(stdin=b"%d" % i) for i in range(30)]
    await jobs.run_job(JobSpec(profile(compile=None), {}, tests=tests), runner)
    assert [s.stdin for s, _, _ in runner.steps] == [t.stdin for t in tests]


async def test_repeat_runs_fresh_steps_and_stops_at_a_failure() -> None:
    cpu = iter([0.2, 0.21, 0.19, 0.5, 0.2])

    def answer(step: RunStep) -> Result:
        c = next(cpu)
        return res("time_limit" if c > 0.4 else "ok", cpu=c)

    runner = FakeRunner(answer)
    outcome = await jobs.run_job(
        JobSpec(profile(compile=None), {}, tests=[Case(repeat=5)]), runner)
    step = outcome.steps[0]
    assert len(runner.steps) == 4  # the 4th run failed: no 5th
    assert step.result.verdict == "time_limit"
    assert step.repeat is not None and step.repeat.runs == 4 and step.repeat.chosen == 3


async def test_unpinned_jobs_ask_for_no_cpu() -> None:
    runner = FakeRunner()
    await jobs.run_job(JobSpec(profile(compile=None), {}, tests=[Case()]), runner)
    assert [pin for _, _, pin in runner.steps] == [False]


def test_run_step_default_cpuset_is_none() -> None:
    """Callers that build RunStep themselves (run-once, benchmarks) are not pinned."""
    step = RunStep(argv=["x"], limits=Limits())
    assert step.cpuset is None
    assert dataclasses.replace(step, cpuset="1").cpuset == "1"


async def test_cpu_allocator_gives_each_pinned_step_a_cpu_of_its_own() -> None:
    """Highest free CPU first; never one CPU to two holders; waiters served in order."""
    from sandboxd.service import CpuAllocator

    alloc = CpuAllocator([0, 1])
    held: list[int] = []
    order: list[str] = []
    release = trio.Event()

    async def hold(name: str) -> None:
        async with alloc.cpu() as cpu:
            assert cpu not in held
            held.append(cpu)
            order.append(f"{name}:{cpu}")
            await release.wait()
            held.remove(cpu)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c", "d"):
            nursery.start_soon(hold, name)
            await trio.testing.wait_all_tasks_blocked()
        assert order == ["a:1", "b:0"]  # c and d wait
        release.set()
    assert sorted(order[2:]) == ["c:0", "d:1"] or sorted(order[2:]) == ["c:1", "d:0"]
    assert len(order) == 4 and not held


# ------------------------------------------------------------------- warm-start memo


def test_the_remembered_warm_choice_is_the_computed_one_per_profile_and_limits() -> None:
    """``warm_start`` remembers its choice per (profile, limits): the remembered answer must
    be what computing it afresh gives, for the profile's own limits, lower rlimits (the
    shape, handed over), other memory (node: its heap flag; python: the plain start below
    its floor), and a second profile object of the same name with another environment,
    which must not get the first one's answer."""
    py = Profile("py", entry="main.py", run=("python3", "{entry}"), warm_runtime="python",
                 limits=Limits(memory=256 * MiB))
    node = Profile("js", entry="main.js", run=("node", "--max-old-space-size={memory_mb}",
                                                 "{entry}"), warm_runtime="node",
                   limits=Limits(memory=512 * MiB))
    py_env = dataclasses.replace(py, env={"PYTHONHASHSEED": "0"})
    cases = [
        (py, py.limits), (py, dataclasses.replace(py.limits, cpu_time=1.0, stack=8 * MiB)),
        (py, dataclasses.replace(py.limits, cpu_time=100.0)),
        (py, dataclasses.replace(py.limits, memory=8 * MiB)),
        (node, node.limits), (node, dataclasses.replace(node.limits, memory=256 * MiB)),
        (py_env, py.limits), (py_env, dataclasses.replace(py.limits, cpu_time=1.0)),
    ]
    jobs._WARM_CHOICES.clear()
    for _ in range(2):  # the first pass fills the memo, the second answers from it
        for profile, limits in cases:
            job = JobSpec(profile=profile, files={profile.entry: b""})
            assert jobs.warm_start(job, limits) == jobs._warm_choice_of(profile, limits)
    shape = jobs._warm_for(py, py.limits)
    assert jobs.warm_start(JobSpec(profile=py, files={}), cases[1][1]) == shape  # handed over
    assert jobs.warm_start(JobSpec(profile=py, files={}), cases[2][1]) is None  # higher CPU
    assert jobs.warm_start(JobSpec(profile=py, files={}), cases[3][1]) is None  # too little
    assert jobs.warm_start(JobSpec(profile=py_env, files={}), py.limits).env != shape.env
    assert jobs.warm_start(JobSpec(profile=node, files={}), cases[5][1]) is None  # heap flag
    assert len(jobs._WARM_CHOICES) == len(cases)
