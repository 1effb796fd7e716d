"""What a caller may ask of a job, and how it becomes the protocol's ``JobSubmission``.

Strategy: callers write jobs as keyword arguments with friendly values
(``str`` or ``bytes`` files and stdin, sizes as ``"256M"``, tests as
``Test`` objects or plain dicts); ``build_submission`` turns them into the
wire's frozen records once, for both clients, so that the sync and async
clients cannot differ. Values the protocol would refuse are caught here or by
``Connection.check`` and raised as ``JobRejected`` naming the field, before
anything is sent (a refused ``send`` would break the whole connection).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from typing import Any, BinaryIO, TypeAlias, TypedDict, Union

import sandboxd_protocol as proto

from ._errors import JobRejected

__all__ = ["Batch", "Compile", "JobOptions", "Limits", "Program", "Test", "build_submission",
           "parse_size"]

Data: TypeAlias = bytes | bytearray | memoryview | str
"""Bytes, or text sent as UTF-8."""

parse_size = proto.parse_size  # one parser for the daemon, run-once and the clients


def _bytes(value: Data, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise JobRejected(
        f"job rejected: {where}: must be bytes or str, not {type(value).__name__}",
        hint="pass file contents, stdin and expected output as bytes or str",
        field=where,
    )


def _coerce(cls: Any, value: Limits | Mapping[str, Any] | None, where: str) -> Limits | None:
    """A ``Limits`` from itself, a mapping of the same names, or ``None``."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in proto.LIMITS_BY_NAME)
        if unknown:
            raise JobRejected(
                f"job rejected: {where}.{unknown[0]}: no such limit",
                hint=f"known limits: {', '.join(sorted(proto.LIMITS_BY_NAME))}",
                field=f"{where}.{unknown[0]}",
            )
        return cls(**value)  # type: ignore[no-any-return]
    raise JobRejected(
        f"job rejected: {where}: must be a Limits or a dict, not {type(value).__name__}",
        field=where,
    )


def _to_wire(self: Any, where: str = "limits") -> proto.JobLimits:
    """The protocol's record, with sizes parsed and types checked."""
    out: dict[str, float | int] = {}
    for spec in proto.LIMITS:
        value = getattr(self, spec.name)
        if value is None:
            continue
        try:
            out[spec.name] = spec.parse(value)
        except proto.LimitValueError as e:
            raise JobRejected(
                f"job rejected: {where}.{spec.name}: {e.reason}", field=f"{where}.{spec.name}"
            ) from None
    return proto.JobLimits(**out)


def _field_type(spec: proto.LimitSpec) -> str:
    if spec.unit is proto.Unit.BYTES:
        return "int | str | None"
    return f"{spec.type.__name__} | None"


Limits: Any = make_dataclass(
    "Limits",
    [(spec.name, _field_type(spec), field(default=None)) for spec in proto.LIMITS],
    frozen=True,
    slots=True,
    kw_only=True,
    namespace={"__module__": __name__, "coerce": classmethod(_coerce), "to_wire": _to_wire},
)
Limits.__doc__ = """Limits of a job, a compile step or a test; ``None`` keeps the profile's.

    One keyword per limit of ``sandboxd_protocol.LIMITS`` (``cpu_time``, ``memory``,
    ...). Seconds are numbers; sizes are bytes or strings with K/M/G suffixes.

        >>> Limits(cpu_time=2, memory="512M").to_wire().memory
        536870912
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Test:
    """One test of a batch: its stdin, what it should print, its own limits, how often.

    ``repeat`` > 1 runs it that many times and reports min/median/max times.

        >>> Test(stdin="1 2\\n", expected_output="3\\n")
        Test(stdin='1 2\\n', expected_output='3\\n', limits=None, repeat=1, generator=None, ...)
    """

    __test__ = False  # not a pytest test class, despite its name

    stdin: Data = b""
    expected_output: Data | None = None
    limits: Limits | Mapping[str, Any] | None = None
    repeat: int = 1
    generator: int | None = None
    """Index in the job's ``generators``: that program's stdout becomes this test's stdin
    (and a file ``answer`` it leaves, the expected output)."""
    generator_args: Sequence[str] | None = None

    def to_wire(self, i: int) -> proto.TestCase:
        """The protocol's record for test number ``i``."""
        where = f"tests[{i}]"
        limits = Limits.coerce(self.limits, f"{where}.limits")
        return proto.TestCase(
            stdin=_bytes(self.stdin, f"{where}.stdin"),
            expected_output=None
            if self.expected_output is None
            else _bytes(self.expected_output, f"{where}.expected_output"),
            limits=limits.to_wire(f"{where}.limits") if limits is not None else None,
            repeat=self.repeat,
            generator=self.generator,
            generator_args=tuple(self.generator_args) if self.generator_args is not None
            else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """A problem's own program: a checker, a generator (or an interactor). Compiled
    like a solution in its own ``profile``, run in containers of its own under its own
    ``limits`` (over its profile's defaults); ``argv`` overrides its profile's run
    command (its arguments are appended).

    A checker speaks testlib's protocol: it runs as ``argv input.txt output.txt
    answer.txt`` and exits 0 (ok), 1 (wrong answer), 2 (presentation error), 3 (its own
    failure) or 7 with ``points X`` on stderr (partial points, X in [0, 1]).

        >>> Program(profile="cpp", files={"checker.cpp": "int main() {}"}).to_wire("c").profile
        'cpp'
    """

    profile: str
    files: Mapping[str, Data] = field(default_factory=dict)
    argv: Sequence[str] | None = None
    limits: Limits | Mapping[str, Any] | None = None

    def to_wire(self, where: str) -> proto.Program:
        """The protocol's record (``where`` names it in errors: ``checker``...)."""
        limits = Limits.coerce(self.limits, f"{where}.limits")
        return proto.Program(
            profile=self.profile,
            files={n: _bytes(d, f"{where}.files[{n!r}]") for n, d in self.files.items()},
            argv=tuple(self.argv) if self.argv is not None else None,
            limits=limits.to_wire(f"{where}.limits") if limits is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A subtask of a judged job (DMOJ's batch): tests (indices) scored together.

    It passes when all its tests do and earns ``points`` times its tests' lowest
    score; with ``stop_on_failure`` its tests after the first failure are
    ``skipped``; it runs only if every batch it ``depends`` on passed.

        >>> Batch(name="small", tests=[0, 1], points=40).to_wire().tests
        (0, 1)
    """

    name: str
    tests: Sequence[int]
    points: float = 1.0
    stop_on_failure: bool = False
    depends: Sequence[str] = ()

    def to_wire(self) -> proto.Batch:
        """The protocol's record."""
        return proto.Batch(name=self.name, tests=tuple(self.tests), points=float(self.points),
                           stop_on_failure=self.stop_on_failure,
                           depends=tuple(self.depends) or None)


def _program(value: Program | Mapping[str, Any], where: str) -> proto.Program:
    if isinstance(value, Mapping):
        try:
            value = Program(**value)
        except TypeError as e:
            raise JobRejected(f"job rejected: {where}: {e}", field=where) from None
    if not isinstance(value, Program):
        raise JobRejected(f"job rejected: {where}: must be a Program or a dict, not "
                          f"{type(value).__name__}", field=where)
    return value.to_wire(where)


def _batch(value: Batch | Mapping[str, Any], i: int) -> proto.Batch:
    where = f"batches[{i}]"
    if isinstance(value, Mapping):
        try:
            value = Batch(**value)
        except TypeError as e:
            raise JobRejected(f"job rejected: {where}: {e}", field=where) from None
    if not isinstance(value, Batch):
        raise JobRejected(f"job rejected: {where}: must be a Batch or a dict, not "
                          f"{type(value).__name__}", field=where)
    return value.to_wire()


@dataclass(frozen=True, slots=True, kw_only=True)
class Compile:
    """Overrides for a compiled profile's compile step: its argv, its limits.

    A profile with a compile step always compiles; pass this only to change how.

        >>> Compile(argv=["gcc", "-O0", "-o", "main", "main.c"]).to_wire().argv
        ('gcc', '-O0', '-o', 'main', 'main.c')
    """

    argv: Sequence[str] | None = None
    limits: Limits | Mapping[str, Any] | None = None

    def to_wire(self) -> proto.CompileStep:
        """The protocol's record."""
        limits = Limits.coerce(self.limits, "compile.limits")
        return proto.CompileStep(
            argv=tuple(self.argv) if self.argv is not None else None,
            limits=limits.to_wire("compile.limits") if limits is not None else None,
        )


Interactor = Program
"""An interactive problem's interactor: ``run(..., interactor=Interactor(...))``."""


class JobOptions(TypedDict, total=False):
    """Everything a job can carry besides its profile and files (``run``'s keywords).

    ``stdin`` and ``expected_output`` are for a single run; a batch gives each
    test its own (``tests``). ``compare`` is ``"exact"``, ``"trailing_ws"``
    (the default) or ``"tokens"`` (with an optional ``float_tolerance``).
    ``busy_retries`` overrides the client's: how often to resubmit, with
    backoff, while the daemon answers busy. ``checker``, ``generators`` and
    ``batches`` make a judged job (``Program``, ``Batch``; PROTOCOL.md §4.1).
    """

    stdin: Data
    argv: Sequence[str] | None
    env: Mapping[str, str] | None
    limits: Limits | Mapping[str, Any] | None
    compile: Compile | Mapping[str, Any] | None
    tests: Sequence[Test | Mapping[str, Any]] | None
    expected_output: Data | None
    compare: str
    float_tolerance: float | None
    stop_on_failure: bool
    cpuset_pin: bool | None
    warm_runtime: bool | None
    memory_mode: str | None
    checker: Program | Mapping[str, Any] | None
    generators: Sequence[Program | Mapping[str, Any]] | None
    batches: Sequence[Batch | Mapping[str, Any]] | None
    interactor: Program | Mapping[str, Any] | None
    network_allow: Sequence[str] | None
    busy_retries: int | None
    workspace: WorkspaceSource | None
    caches: Sequence[str] | None
    artifacts: Sequence[str] | None


WorkspaceSource: TypeAlias = Union[str, "os.PathLike[str]", BinaryIO]
"""A workspace: the path of a tar archive (plain or gzip), or a binary file object."""


def open_workspace(source: WorkspaceSource) -> tuple[BinaryIO, str, bool]:
    """(the archive's file object, its format for ``submit.workspace``, whether we opened
    it): gzip when it starts with gzip's magic, else a plain tar."""
    if isinstance(source, (str, os.PathLike)):
        f: BinaryIO = open(source, "rb")  # noqa: SIM115 - the caller closes it
        opened = True
    else:
        f, opened = source, False
    if hasattr(f, "peek"):  # a pipe or a stream (io.BufferedReader): not seekable
        head = f.peek(2)[:2]
    else:
        head = f.read(2)
        f.seek(-len(head), os.SEEK_CUR)
    return f, "gzip" if head == b"\x1f\x8b" else "tar", opened


def _test(value: Test | Mapping[str, Any], i: int) -> proto.TestCase:
    if isinstance(value, Mapping):
        try:
            value = Test(**value)
        except TypeError as e:
            raise JobRejected(f"job rejected: tests[{i}]: {e}", field=f"tests[{i}]") from None
    if not isinstance(value, Test):
        raise JobRejected(
            f"job rejected: tests[{i}]: must be a Test or a dict, not {type(value).__name__}",
            field=f"tests[{i}]",
        )
    return value.to_wire(i)


def _network(allow: Sequence[str] | None) -> proto.NetworkAccess | None:
    """``network_allow=["host:port", ...]`` as the wire's ``network`` record (None: the
    profile's; ``[]``: no network)."""
    if allow is None:
        return None
    if isinstance(allow, str):
        raise JobRejected(
            "job rejected: network_allow: must be a list of \"host:port\" strings, not one "
            "string", hint='write network_allow=["pypi.org:443"]', field="network.allow")
    return proto.NetworkAccess(allow=tuple(allow))


def build_submission(
    job_id: str,
    profile: str,
    files: Mapping[str, Data] | None = None,
    *,
    stdin: Data = b"",
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    compile: Compile | Mapping[str, Any] | None = None,
    tests: Sequence[Test | Mapping[str, Any]] | None = None,
    expected_output: Data | None = None,
    compare: str = "trailing_ws",
    float_tolerance: float | None = None,
    stop_on_failure: bool = False,
    cpuset_pin: bool | None = None,
    warm_runtime: bool | None = None,
    memory_mode: str | None = None,
    network_allow: Sequence[str] | None = None,
    stream: bool = False,
    interactive_stdin: bool = False,
    checker: Program | Mapping[str, Any] | None = None,
    generators: Sequence[Program | Mapping[str, Any]] | None = None,
    batches: Sequence[Batch | Mapping[str, Any]] | None = None,
    interactor: Program | Mapping[str, Any] | None = None,
    workspace: str | None = None,
    caches: Sequence[str] | None = None,
    artifacts: Sequence[str] | None = None,
) -> proto.JobSubmission:
    """The protocol's ``JobSubmission`` for a job written as keyword arguments.

    >>> build_submission("1", "python3", {"main.py": "print(1)"}).files
    {'main.py': b'print(1)'}
    """
    if isinstance(argv, str):
        raise JobRejected(
            "job rejected: argv: must be a list of strings, not one string",
            hint='write argv=["python3", "main.py"], not argv="python3 main.py"',
            field="argv",
        )
    lim = Limits.coerce(limits, "limits")
    if compile is not None and isinstance(compile, Mapping):
        compile = Compile(**compile)
    return proto.JobSubmission(
        id=job_id,
        profile=profile,
        files={name: _bytes(data, f"files[{name!r}]") for name, data in (files or {}).items()},
        stdin=_bytes(stdin, "stdin"),
        argv=tuple(argv) if argv is not None else None,
        env=dict(env) if env is not None else None,
        limits=lim.to_wire() if lim is not None else None,
        cpuset_pin=cpuset_pin,
        warm_runtime=warm_runtime,
        memory_mode=memory_mode,
        network=_network(network_allow),
        compile=compile.to_wire() if compile is not None else None,
        tests=tuple(_test(t, i) for i, t in enumerate(tests)) if tests is not None else None,
        expected_output=_bytes(expected_output, "expected_output")
        if expected_output is not None
        else None,
        compare=compare,
        float_tolerance=float_tolerance,
        stop_on_failure=stop_on_failure,
        stream=stream,
        interactive_stdin=interactive_stdin,
        checker=_program(checker, "checker") if checker is not None else None,
        generators=tuple(_program(g, f"generators[{i}]") for i, g in enumerate(generators))
        if generators is not None else None,
        batches=tuple(_batch(b, i) for i, b in enumerate(batches))
        if batches is not None else None,
        interactor=_program(interactor, "interactor") if interactor is not None else None,
        workspace=workspace,
        caches=tuple(caches) if caches is not None else None,
        artifacts=tuple(artifacts) if artifacts is not None else None,
    )
