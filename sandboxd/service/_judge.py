"""The judge loop: checkers, generators and batches (subtasks) around a job's tests.

Strategy (Polygon's and DMOJ's model): a problem's own programs, the checker and
the generators, are compiled like a solution (once per job, or not at all when
``ProgramCache`` already holds their build, keyed by a hash of their content)
and each of their runs gets a fresh container of its own, under its own
profile and limits, exactly as isolated as the contestant's program. Order:

1. the solution, the checker and the generators compile, side by side;
2. every generated test's generator runs (its stdout is the test's stdin; a
   file ``answer`` it leaves in its working directory is the expected answer);
3. batches run once their dependencies are done; a batch's tests run in
   parallel (the scheduler bounds it); after each run that ended ``ok`` the
   checker runs with the files ``input.txt output.txt answer.txt`` (testlib's
   order) and its exit code decides: 0 ok, 1 wrong answer, 2 presentation
   error, 3 judge failure, 7 partial points (``points X`` on its stderr, as
   testlib's ``quitp`` prints them).

The problem's programs are the problem's fault, never the contestant's: a
checker or generator that does not compile, crashes, hangs, runs out of a
limit, exits 3 or with a code testlib does not define gives ``judge_error``
with the reason. Whatever the solution printed reaches the checker only as a
file in the checker's own box: a hostile output can make the checker fail
(``judge_error``, the problem's to fix) but cannot reach anything else.

Without batches, the job's tests form one implicit group (the job's
``stop_on_failure`` applies to it) and the job's score is the sum of the tests'
scores. Every decision on numbers (``checker_verdict``, ``batch_result``) is a
pure function, unit-tested without a kernel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import trio

from sandboxd import jobs
from sandboxd.container import RunStep
from sandboxd.interactive import PairRunner
from sandboxd.jobs import (
    BatchOutcome,
    BatchSpec,
    JobError,
    JobOutcome,
    JobSpec,
    ProgramSpec,
    StepOutcome,
    StepRunner,
    TestSpec,
)
from sandboxd.limits import LimitError, Limits, MiB
from sandboxd.result import Result

from ._interactive import run_wired_test

CHECKER_FILES = ("input.txt", "output.txt", "answer.txt")
"""The files a checker gets, in this order after its argv (testlib's order)."""
ANSWER_FILE = "answer"
"""The file a generator may leave in its working directory: the test's expected answer."""
MESSAGE_CAP = 4096
"""The longest checker message a step result carries (the wire's limit)."""
SKIPPED = "skipped"
JUDGE_ERROR = "judge_error"

# testlib's exit codes (testlib.h: OK_EXIT_CODE ... PC_BASE_EXIT_CODE is not used here)
_OK, _WA, _PE, _FAIL, _POINTS = 0, 1, 2, 3, 7
_POINTS_RE = re.compile(rb"^\s*points\s+([-+0-9.eE]+)", re.MULTILINE)


class ProgramCache:
    """Built files of problem programs, by content hash: a checker compiles once for
    every job that uses it, not once per job.

    Bounded two ways (least recently used goes first): ``max_entries`` programs and
    ``max_bytes`` of built files in all; a build larger than a quarter of
    ``max_bytes`` is not kept. Only what compiled ``ok`` is kept.
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 256 * MiB) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(program: ProgramSpec) -> str:
        """What the build depends on: the profile (its compile argv and image) and files."""
        h = hashlib.sha256()
        p = program.profile
        for part in (p.name, repr(p.compile.argv if p.compile else None), repr(p.image_id)):
            h.update(part.encode())
            h.update(b"\0")
        for name in sorted(program.files):
            h.update(name.encode())
            h.update(b"\0")
            h.update(hashlib.sha256(program.files[name]).digest())
        return h.hexdigest()

    def get(self, key: str) -> dict[str, bytes] | None:
        files = self._items.get(key)
        if files is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return files

    def put(self, key: str, files: dict[str, bytes]) -> None:
        size = sum(len(v) + len(k) for k, v in files.items())
        if size > self.max_bytes // 4 or key in self._items:
            return
        self._items[key] = files
        self._bytes += size
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= sum(len(v) + len(k) for k, v in old.items())

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class Built:
    """A problem program ready to run: its files after the compile, argv and limits."""

    program: ProgramSpec
    files: dict[str, bytes]
    argv: list[str]
    limits: Limits


def program_limits(program: ProgramSpec) -> Limits:
    profile = program.profile
    try:
        return profile.limits.merged(program.limits, profile.max_limits)
    except LimitError as e:
        raise JobError(str(e)) from None


def _cap(text: bytes) -> str | None:
    msg = text.decode("utf-8", "replace").strip()
    if not msg:
        return None
    return msg if len(msg.encode()) <= MESSAGE_CAP else msg.encode()[:MESSAGE_CAP - 3].decode(
        "utf-8", "ignore") + "..."


def _reason(text: str, cap: int = 1000) -> str:
    """A reason that fits the wire's 1 KiB (a compiler's or generator's words may not)."""
    data = text.encode()
    return text if len(data) <= cap else data[:cap - 3].decode("utf-8", "ignore") + "..."


def _about(run: Result) -> str:
    return f"{run.verdict} ({run.reason})" if run.reason else run.verdict


def checker_verdict(run: Result) -> tuple[str, str | None, float, str | None]:
    """(verdict, reason, score, message) of a test from its checker's run.

    testlib's codes: 0 ok, 1 wrong answer, 2 presentation error, 3 the checker's own
    failure, 7 partial points read from ``points X`` on its stderr (a fraction of the
    test's points, clamped to [0, 1]; 1 and above is ``ok``). Anything else (a crash,
    a limit, an unknown code) is the checker's fault: ``judge_error``. sandboxd's own
    failure and a cancellation stay what they are.
    """
    message = _cap(run.stderr) or _cap(run.stdout)
    if run.verdict in ("sandbox_error", "cancelled"):
        return run.verdict, _reason(f"checker: {run.reason}"), 0.0, message
    code = run.exit_code if run.verdict in ("ok", "runtime_error") else None
    if code == _OK:
        return "ok", None, 1.0, message
    if code == _WA:
        return "wrong_answer", "checker", 0.0, message
    if code == _PE:
        return "presentation_error", "checker", 0.0, message
    if code == _FAIL:
        return JUDGE_ERROR, "checker failed (exit code 3)", 0.0, message
    if code == _POINTS:
        m = _POINTS_RE.search(run.stderr) or _POINTS_RE.search(run.stdout)
        try:
            points = float(m.group(1)) if m else math.nan
        except ValueError:
            points = math.nan
        if not math.isfinite(points):
            return (JUDGE_ERROR, "checker exited 7 (partial) without 'points X' on its "
                    "stderr", 0.0, message)
        score = min(1.0, max(0.0, points))
        if score >= 1.0:
            return "ok", None, 1.0, message
        return "wrong_answer", f"partial ({score:g})", score, message
    return JUDGE_ERROR, _reason(f"checker: {_about(run)}"), 0.0, message


def judged_by_checker(outcome: StepOutcome, run: Result) -> StepOutcome:
    """A test's outcome once its checker ran: the checker's verdict, the solution's
    accounting."""
    verdict, reason, score, message = checker_verdict(run)
    result = dataclasses.replace(outcome.result, verdict=verdict, reason=reason)
    return StepOutcome(result, outcome.repeat, score=score, checker_message=message,
                       checker=run)


def batch_result(batch: BatchSpec, steps: list[StepOutcome], blocked: str | None
                 ) -> BatchOutcome:
    """A batch from its tests' outcomes: it passes when every test is ``ok``; it earns
    ``points`` times its tests' lowest score (DMOJ's rule), nothing when a test was
    skipped; ``blocked`` names the failed dependency that kept it from running."""
    if blocked is not None:
        return BatchOutcome(batch.name, SKIPPED, 0.0, batch.points)
    failed = [s for s in steps if s.result.verdict != "ok"]
    lowest = min((s.score or 0.0 for s in steps), default=1.0)
    verdict = failed[0].result.verdict if failed else "ok"
    if verdict == SKIPPED:  # cannot be first in a batch, but keep the rule total
        verdict = next((s.result.verdict for s in failed if s.result.verdict != SKIPPED),
                       SKIPPED)
    return BatchOutcome(batch.name, verdict, round(batch.points * lowest, 9), batch.points)


def _failure(step: StepOutcome) -> bool:
    """Whether a test stops the rest of its batch: failed, and no partial points."""
    return step.result.verdict != "ok" and not step.score


def _skipped(reason: str) -> StepOutcome:
    return StepOutcome(Result.without_run(SKIPPED, reason), score=0.0)


def _judge_error(reason: str) -> StepOutcome:
    return StepOutcome(Result.without_run(JUDGE_ERROR, reason), score=0.0)


def batch_order(batches: list[BatchSpec]) -> list[BatchSpec]:
    """Batches with every dependency before its dependents; ``JobError`` on a cycle,
    an unknown name, or a name given twice."""
    by_name: dict[str, BatchSpec] = {}
    for b in batches:
        if b.name in by_name:
            raise JobError(f"batch {b.name!r} is named twice")
        by_name[b.name] = b
    order: list[BatchSpec] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(b: BatchSpec, path: list[str]) -> None:
        if state.get(b.name) == 2:
            return
        if state.get(b.name) == 1:
            raise JobError(f"batch dependencies form a cycle: {' -> '.join([*path, b.name])}")
        state[b.name] = 1
        for d in b.depends:
            if d not in by_name:
                raise JobError(f"batch {b.name!r} depends on unknown batch {d!r}")
            visit(by_name[d], [*path, b.name])
        state[b.name] = 2
        order.append(b)

    for b in batches:
        visit(b, [])
    return order


def validate(job: JobSpec) -> None:
    """Refuse a judged job that cannot run as asked (called by ``jobs``'s caller)."""
    n = len(job.tests) if job.tests is not None else 1
    for what, program in ([("checker", job.checker)] if job.checker else []) + [
            (f"generators[{i}]", g) for i, g in enumerate(job.generators)]:
        if program.profile.unavailable:
            raise JobError(f"{what}: profile {program.profile.name!r} is unavailable here: "
                           f"{program.profile.unavailable}")
        try:
            program_limits(program)
        except JobError as e:
            raise JobError(f"{what}: {e}") from None
        if what == "checker":
            clash = sorted(set(program.files) & set(CHECKER_FILES))
            if clash:
                raise JobError(f"checker: its files may not be named {clash[0]!r} (the "
                               "checker's box holds input.txt, output.txt, answer.txt)")
    for i, test in enumerate(job.tests or []):
        if test.generator is not None and not 0 <= test.generator < len(job.generators):
            raise JobError(f"tests[{i}].generator: no generator {test.generator} (the job "
                           f"has {len(job.generators)})")
        if test.generator is None and test.generator_args:
            raise JobError(f"tests[{i}].generator_args: given without a generator")
    if job.batches is not None:
        if job.stop_on_failure:
            raise JobError("stop_on_failure: with batches, each batch says it")
        batch_order(job.batches)
        seen: dict[int, str] = {}
        for b in job.batches:
            if not b.tests:
                raise JobError(f"batch {b.name!r} has no test")
            if not (math.isfinite(b.points) and b.points >= 0):
                raise JobError(f"batch {b.name!r}: points must be a finite number >= 0")
            for t in b.tests:
                if not 0 <= t < n:
                    raise JobError(f"batch {b.name!r}: no test {t} (the job has {n})")
                if t in seen:
                    raise JobError(f"test {t} is in batches {seen[t]!r} and {b.name!r}")
                seen[t] = b.name
        missing = [t for t in range(n) if t not in seen]
        if missing:
            raise JobError(f"test {missing[0]} is in no batch (with batches, every test "
                           "belongs to one)")


class Judge:
    """One judged job's run: built programs, generated tests, batches."""

    def __init__(self, job: JobSpec, runner: StepRunner, cache: ProgramCache,
                 pair: PairRunner | None = None) -> None:
        self.job = job
        self.runner = runner
        self.cache = cache
        self.pair = pair  # an interactive job's: its tests run wired to the interactor
        self.interactor: Built | str | None = None
        self.tests: list[TestSpec] = list(job.tests) if job.tests is not None else [
            TestSpec(stdin=job.stdin, expected_output=job.expected_output)]
        self.steps: list[StepOutcome | None] = [None] * len(self.tests)
        self.files: dict[str, bytes] | None = None  # the solution's build

    async def build(self, program: ProgramSpec, what: str) -> Built | str:
        """The program compiled (or found in the cache), or why it could not be."""
        profile = program.profile
        limits = program_limits(program)
        argv = program.argv or profile.run_argv(sorted(program.files), limits)
        key = ProgramCache.key(program)
        files = self.cache.get(key)
        if files is None:
            spec = JobSpec(profile=profile, files=dict(program.files), limits=program.limits)
            outcome, built = await jobs.compile_job(spec, self.runner)
            if built is None:
                assert outcome is not None
                r = outcome.result
                detail = _cap(r.stderr) or ""
                return _reason(f"{what} did not compile: {_about(r)}" + (
                    f": {detail}" if detail else ""))
            files = built
            if outcome is not None:  # a compiled program: worth keeping
                self.cache.put(key, files)
        return Built(program, files, list(argv), limits)

    async def run_program(self, built: Built, args: list[str], files: dict[str, bytes],
                          collect: bool = False) -> tuple[Result, dict[str, bytes] | None]:
        profile = built.program.profile
        limits = built.limits
        need = sum(len(v) for v in files.values()) + sum(len(v) for v in built.files.values())
        if need + MiB > limits.box_size:  # room for the files it is given, if allowed
            box = min(profile.max_limits.box_size, need + 16 * MiB)
            limits = dataclasses.replace(limits, box_size=max(limits.box_size, box))
        step = RunStep(argv=[*built.argv, *args], limits=limits,
                       files={**built.files, **files}, env=dict(profile.env),
                       cwd=profile.workdir)
        return await self.runner(jobs.container_spec(profile, limits), step, collect)

    async def generate(self, i: int, gen: Built | str) -> None:
        """Test ``i``'s input (and answer) from its generator; a failure is judge_error."""
        test = self.tests[i]
        if isinstance(gen, str):
            self.steps[i] = _judge_error(gen)
            return
        run, left = await self.run_program(gen, list(test.generator_args), {},
                                           collect=True)
        if run.verdict in ("sandbox_error", "cancelled"):
            self.steps[i] = StepOutcome(Result.without_run(
                run.verdict, f"generator: {run.reason}"), score=0.0)
            return
        if run.verdict != "ok":
            detail = _cap(run.stderr)
            self.steps[i] = _judge_error(_reason(f"generator {test.generator}: {_about(run)}"
                                                 + (f": {detail}" if detail else "")))
            return
        answer = (left or {}).get(ANSWER_FILE)
        self.tests[i] = dataclasses.replace(
            test, stdin=run.stdout,
            expected_output=test.expected_output if answer is None else answer)

    async def run_one(self, i: int, files: dict[str, bytes], checker: Built | str | None
                      ) -> StepOutcome:
        test = self.tests[i]
        if checker is not None:  # the checker decides: no comparison of our own
            test = dataclasses.replace(test, expected_output=None)
        if self.job.interactor is not None:  # the interactor judges (no checker then)
            return await self.run_wired(i)
        single = len(self.tests) == 1
        outcome = await jobs.run_test(self.job, i, test, files, self.runner, single=single)
        if checker is None:
            return dataclasses.replace(outcome, score=1.0 if outcome.result.verdict == "ok"
                                       else 0.0)
        if outcome.result.verdict != "ok":
            return dataclasses.replace(outcome, score=0.0)
        if isinstance(checker, str):
            return dataclasses.replace(outcome, result=dataclasses.replace(
                outcome.result, verdict=JUDGE_ERROR, reason=checker), score=0.0)
        given = self.tests[i]
        run, _ = await self.run_program(checker, list(CHECKER_FILES), {
            "input.txt": given.stdin, "output.txt": outcome.result.stdout,
            "answer.txt": given.expected_output or b""})
        return judged_by_checker(outcome, run)

    async def run_wired(self, i: int) -> StepOutcome:
        """An interactive test: the solution and the built interactor wired together."""
        if isinstance(self.interactor, str):
            return _judge_error(self.interactor)
        assert self.interactor is not None and self.pair is not None and self.files is not None
        return await run_wired_test(self.job, i, self.tests[i], self.files,
                                    self.interactor.files, self.pair)

    async def run_group(self, indices: list[int], stop_on_failure: bool,
                        files: dict[str, bytes], checker: Built | str | None) -> None:
        """Tests ``indices`` in parallel; with ``stop_on_failure``, every test after the
        first failure (in this order) is ``skipped``, whether it ran or not, so that
        the result never depends on timing."""
        todo = [i for i in indices if self.steps[i] is None]  # not failed generating
        scopes = {i: trio.CancelScope() for i in todo}
        first = len(indices)
        position = {t: k for k, t in enumerate(indices)}
        if stop_on_failure:  # a generator's failure counts too
            bad = [position[i] for i in indices if self.steps[i] is not None
                   and _failure(self.steps[i])]  # type: ignore[arg-type]
            first = min(bad, default=first)

        async def one(i: int) -> None:
            nonlocal first
            if stop_on_failure and position[i] > first:
                return
            outcome = None
            with scopes[i]:
                outcome = await self.run_one(i, files, checker)
            if outcome is None:
                return
            self.steps[i] = outcome
            if stop_on_failure and _failure(outcome) and position[i] < first:
                first = position[i]
                for later in todo:
                    if position[later] > first:
                        scopes[later].cancel()

        async with trio.open_nursery() as nursery:
            for i in todo:
                nursery.start_soon(one, i)
                await trio.lowlevel.checkpoint()  # FIFO order into the scheduler
        for k, i in enumerate(indices):
            if stop_on_failure and k > first:
                self.steps[i] = _skipped("skipped after an earlier test of its batch failed")

    async def run(self) -> JobOutcome:
        job = self.job
        built: dict[str, Built | str] = {}
        compiled: list[tuple[StepOutcome | None, dict[str, bytes] | None]] = []

        async def solution() -> None:
            compiled.append(await jobs.compile_job(job, self.runner))

        async def program(name: str, p: ProgramSpec) -> None:
            built[name] = await self.build(p, name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(solution)
            if job.checker is not None:
                nursery.start_soon(program, "checker", job.checker)
            used = sorted({t.generator for t in self.tests if t.generator is not None})
            for g in used:
                nursery.start_soon(program, f"generator {g}", job.generators[g])
            if job.interactor is not None:
                nursery.start_soon(program, "interactor", job.interactor)
        compile_outcome, files = compiled[0]
        if files is None:
            assert compile_outcome is not None
            return JobOutcome(compile_outcome, [])
        self.files = files
        self.interactor = built.get("interactor")
        async with trio.open_nursery() as nursery:
            for i, t in enumerate(self.tests):
                if t.generator is not None:
                    nursery.start_soon(self.generate, i, built[f"generator {t.generator}"])
        checker = built.get("checker")
        if job.batches is None:
            await self.run_group(list(range(len(self.tests))), job.stop_on_failure, files,
                                 checker)
            steps = [s or _skipped("not run") for s in self.steps]
            score = round(sum(s.score or 0.0 for s in steps), 9)
            return JobOutcome(compile_outcome, steps, None, score)
        results: dict[str, BatchOutcome] = {}
        done = {b.name: trio.Event() for b in job.batches}

        async def batch(b: BatchSpec) -> None:
            for d in b.depends:
                await done[d].wait()
            blocked = next((d for d in b.depends if results[d].verdict != "ok"), None)
            if blocked is not None:
                for i in b.tests:
                    self.steps[i] = _skipped(f"batch {blocked!r}, which batch {b.name!r} "
                                             "depends on, failed")
            else:
                await self.run_group(list(b.tests), b.stop_on_failure, files, checker)
            results[b.name] = batch_result(b, [self.steps[i] or _skipped("not run")
                                               for i in b.tests], blocked)
            done[b.name].set()

        async with trio.open_nursery() as nursery:
            for b in batch_order(job.batches):
                nursery.start_soon(batch, b)
                await trio.lowlevel.checkpoint()
        steps = [s or _skipped("not run") for s in self.steps]
        batches = [results[b.name] for b in job.batches]
        return JobOutcome(compile_outcome, steps, batches,
                          round(sum(b.score for b in batches), 9))


async def run_judged(job: JobSpec, runner: StepRunner, cache: ProgramCache,
                     pair: PairRunner | None = None) -> JobOutcome:
    """Run a job that has a checker, generators or batches (see the module's docstring);
    ``pair``: an interactive job's, whose tests run wired to its interactor."""
    return await Judge(job, runner, cache, pair).run()
