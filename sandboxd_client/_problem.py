"""A problem directory (``sandboxctl judge``): its tests, programs, batches and limits.

Strategy: one TOML file, ``problem.toml``, says what a judge needs beyond the
tests; the tests themselves are files (``tests/NAME.in`` and, if there is
one, ``tests/NAME.ans``), so that a problem exported by Polygon, CMS or DMOJ
needs only a short TOML file written beside it. ``load_problem`` reads it all
into a ``Problem``, a value with the job's keyword arguments, checking what
the daemon could only refuse later with less context (a batch naming a test
that does not exist, a generator nobody defined). docs/judge.md is the
layout in prose; examples/problems/ has one problem per feature.

This module does no I/O but reading the directory; the daemon is the CLI's.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sandboxd_protocol as proto

from ._jobs import Batch, Limits, Program, Test

__all__ = ["Problem", "ProblemError", "load_problem"]

PROBLEM_FILE = "problem.toml"
_TOP = {"name", "limits", "compare", "float_tolerance", "stop_on_failure", "checker",
        "interactor", "generator", "test", "batch"}
_PROGRAM = {"profile", "files", "argv", "limits"}


class ProblemError(ValueError):
    """The problem directory cannot be judged as written; the message says where."""


@dataclass(slots=True)
class ProgramFiles:
    """A program as the problem gives it, before its entry file gets its profile's name."""

    profile: str
    files: dict[str, bytes]
    argv: list[str] | None = None
    limits: Limits | None = None

    def program(self, entries: Mapping[str, str]) -> Program:
        """The program to send: a lone file goes in under its profile's entry name
        (``gen.py`` as ``main.py``), as ``sandboxctl run`` does; several keep theirs."""
        files = self.files
        entry = entries.get(self.profile)
        if len(files) == 1 and entry and self.argv is None:
            files = {entry: next(iter(files.values()))}
        return Program(profile=self.profile, files=files, argv=self.argv, limits=self.limits)


@dataclass(slots=True)
class Problem:
    """A problem ready to judge: tests in order (named), programs, batches."""

    name: str
    test_names: list[str]
    tests: list[Test]
    limits: Limits | None = None
    compare: str = "trailing_ws"
    float_tolerance: float | None = None
    stop_on_failure: bool = False
    checker: ProgramFiles | None = None
    interactor: ProgramFiles | None = None
    generators: list[ProgramFiles] = field(default_factory=list)
    batches: list[Batch] | None = None

    def job(self, entries: Mapping[str, str]) -> dict[str, Any]:
        """The keyword arguments of ``Client.run`` for this problem (all but the
        solution's profile and files); ``entries``: each profile's entry file name."""
        job: dict[str, Any] = {
            "tests": self.tests,
            "limits": self.limits,
            "compare": self.compare,
            "float_tolerance": self.float_tolerance,
            "stop_on_failure": self.stop_on_failure,
        }
        if self.checker is not None:
            job["checker"] = self.checker.program(entries)
        if self.interactor is not None:
            job["interactor"] = self.interactor.program(entries)
        if self.generators:
            job["generators"] = [g.program(entries) for g in self.generators]
        if self.batches is not None:
            job["batches"] = self.batches
        return job

    @property
    def max_score(self) -> float:
        """What a perfect solution earns: the batches' points, else one per test."""
        if self.batches is not None:
            return sum(b.points for b in self.batches)
        return float(len(self.tests))


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ProblemError(f"{where}: cannot read {str(path)!r}: {e.strerror or e}") from None


def _limits(raw: Any, where: str) -> Limits | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProblemError(f"{where}: must be a table of limits")
    unknown = sorted(set(raw) - set(proto.LIMITS_BY_NAME))
    if unknown:
        raise ProblemError(f"{where}.{unknown[0]}: no such limit (known: "
                           f"{', '.join(sorted(proto.LIMITS_BY_NAME))})")
    values: dict[str, float | int] = {}
    for name, value in raw.items():
        try:
            values[name] = proto.LIMITS_BY_NAME[name].parse(value)
        except proto.LimitValueError as e:
            raise ProblemError(f"{where}.{name}: {e.reason}") from None
    return Limits(**values)


def _strings(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ProblemError(f"{where}: must be a list of strings")
    return list(raw)


def _program(root: Path, raw: Any, where: str) -> ProgramFiles:
    if not isinstance(raw, dict):
        raise ProblemError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _PROGRAM - {"name"})
    if unknown:
        raise ProblemError(f"{where}.{unknown[0]}: unknown key (known: "
                           f"{', '.join(sorted(_PROGRAM))})")
    profile = raw.get("profile")
    if not isinstance(profile, str) or not profile:
        raise ProblemError(f"{where}.profile: required (the program's profile, e.g. 'cpp')")
    paths = _strings(raw.get("files"), f"{where}.files")
    if not paths:
        raise ProblemError(f"{where}.files: at least one file")
    files: dict[str, bytes] = {}
    for p in paths:
        name = Path(p).name
        if name in files:
            raise ProblemError(f"{where}.files: two files are named {name!r}")
        files[name] = _read(root / p, f"{where}.files")
    argv = _strings(raw["argv"], f"{where}.argv") if "argv" in raw else None
    return ProgramFiles(profile, files, argv, _limits(raw.get("limits"), f"{where}.limits"))


def load_problem(directory: str | Path) -> Problem:
    """The problem in ``directory`` (``problem.toml`` and ``tests/``); ``ProblemError``
    says what is wrong, naming the key or file."""
    root = Path(directory)
    toml_path = root / PROBLEM_FILE
    try:
        raw = tomllib.loads(_read(toml_path, PROBLEM_FILE).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProblemError(f"{PROBLEM_FILE}: {e}") from None
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ProblemError(f"{PROBLEM_FILE}: unknown key {unknown[0]!r} (known: "
                           f"{', '.join(sorted(_TOP))})")
    problem = Problem(name=str(raw.get("name", root.resolve().name)), test_names=[], tests=[])
    problem.limits = _limits(raw.get("limits"), "limits")
    problem.compare = raw.get("compare", "trailing_ws")
    if problem.compare not in proto.COMPARE_MODES:
        raise ProblemError(f"compare: must be one of {', '.join(proto.COMPARE_MODES)}")
    tol = raw.get("float_tolerance")
    if tol is not None:
        if not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
            raise ProblemError("float_tolerance: must be a number >= 0")
        if problem.compare != "tokens":
            raise ProblemError("float_tolerance: needs compare = \"tokens\"")
        problem.float_tolerance = float(tol)
    problem.stop_on_failure = bool(raw.get("stop_on_failure", False))
    if "checker" in raw:
        problem.checker = _program(root, raw["checker"], "checker")
    if "interactor" in raw:
        problem.interactor = _program(root, raw["interactor"], "interactor")
    gen_index: dict[str, int] = {}
    for i, g in enumerate(raw.get("generator", [])):
        where = f"generator[{i}]"
        name = g.get("name") if isinstance(g, dict) else None
        if not isinstance(name, str) or not name:
            raise ProblemError(f"{where}.name: required")
        if name in gen_index:
            raise ProblemError(f"{where}.name: {name!r} is given twice")
        gen_index[name] = i
        problem.generators.append(_program(root, g, where))

    tests_dir = root / "tests"
    inputs = sorted(tests_dir.glob("*.in")) if tests_dir.is_dir() else []
    for path in inputs:
        answer = path.with_suffix(".ans")
        problem.test_names.append(path.stem)
        problem.tests.append(Test(
            stdin=_read(path, "tests"),
            expected_output=_read(answer, "tests") if answer.exists() else None))
    for i, t in enumerate(raw.get("test", [])):
        where = f"test[{i}]"
        if not isinstance(t, dict):
            raise ProblemError(f"{where}: must be a table")
        name = t.get("name", f"gen{i + 1:02d}")
        if not isinstance(name, str) or not name:
            raise ProblemError(f"{where}.name: must be a non-empty string")
        gen = t.get("generator")
        if gen is not None:
            if gen not in gen_index:
                raise ProblemError(f"{where}.generator: no generator named {gen!r}")
            test = Test(generator=gen_index[gen],
                        generator_args=_strings(t.get("args", []), f"{where}.args"))
        elif "input" in t:
            test = Test(stdin=_read(root / str(t["input"]), f"{where}.input"),
                        expected_output=_read(root / str(t["answer"]), f"{where}.answer")
                        if "answer" in t else None)
        else:
            raise ProblemError(f"{where}: needs a generator or an input file")
        if name in problem.test_names:
            raise ProblemError(f"{where}.name: test {name!r} exists already")
        problem.test_names.append(name)
        problem.tests.append(test)
    if not problem.tests:
        raise ProblemError("no tests: put tests/NAME.in files (and NAME.ans) or [[test]] "
                           f"tables in {PROBLEM_FILE}")

    if "batch" in raw:
        index = {n: i for i, n in enumerate(problem.test_names)}
        problem.batches = []
        for i, b in enumerate(raw["batch"]):
            where = f"batch[{i}]"
            if not isinstance(b, dict) or not isinstance(b.get("name"), str):
                raise ProblemError(f"{where}.name: required")
            names = _strings(b.get("tests"), f"{where}.tests")
            missing = [n for n in names if n not in index]
            if missing:
                raise ProblemError(f"{where}.tests: no test named {missing[0]!r} (tests: "
                                   f"{', '.join(problem.test_names)})")
            problem.batches.append(Batch(
                name=b["name"], tests=[index[n] for n in names],
                points=float(b.get("points", 1.0)),
                stop_on_failure=bool(b.get("stop_on_failure", False)),
                depends=_strings(b.get("depends", []), f"{where}.depends")))
        owned = {t for b in problem.batches for t in b.tests}
        loose = [n for i, n in enumerate(problem.test_names) if i not in owned]
        if loose:
            raise ProblemError(f"test {loose[0]!r} is in no batch (with [[batch]], every "
                               "test belongs to one)")
    return problem
