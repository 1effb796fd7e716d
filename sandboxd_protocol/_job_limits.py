"""A job's limits: one table row per limit, and the ``JobLimits`` record built from it.

Strategy: a limit is a name, a unit, the range the wire accepts, one line of
help and the way a person writes it (``"64M"``, ``"1.5"``). ``LIMITS`` holds
one row per limit and is the only list of their names: the ``JobLimits``
record and its schema, both command lines' flags (``--cpu-time`` ...), the
client's friendly ``Limits`` and the daemon's ``Limits`` (whose policy,
defaults and ceilings, lives in ``sandboxd/limits.py``) are all built from
it. Adding a limit is a row here, a policy row there, and its enforcement.

``parse_size`` and the parsing of every limit live here, once, so that the
daemon, ``sandboxd run-once`` and ``sandboxctl`` read ``"64M"`` alike.

This module knows nothing of frames, messages or connection state: the
schema (``_schema.py``) turns each row's range into a field check.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._kinds import INT64_MAX

__all__ = [
    "LIMITS",
    "LIMITS_BY_NAME",
    "JobLimits",
    "LimitSpec",
    "LimitValueError",
    "Unit",
    "format_size",
    "parse_limits",
    "parse_size",
]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_SIZE_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"64M"`` → 67108864. K, M, G, T are powers of 1024, as in isolate and docker.

    >>> parse_size("256M"), parse_size("1.5K"), parse_size("256MiB"), parse_size(100)
    (268435456, 1536, 268435456, 100)
    """
    if type(text) is int:
        return text
    m = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not a size: {text!r} (a number with an optional K, M, G or T suffix)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    """67108864 → ``"64M"``: the largest unit that divides ``n``; ``parse_size`` reads it back."""
    for unit, size in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class Unit(enum.Enum):
    """What a limit counts; it decides the value's type, its parsing and its flag's metavar."""

    SECONDS = "seconds"
    """A float; ``"1.5"`` from a command line."""
    BYTES = "bytes"
    """An int; ``"64M"`` from a command line or a profile."""
    COUNT = "count"
    """An int; ``"64"`` from a command line."""


class LimitValueError(ValueError):
    """A limit's value cannot be read (``"lots"`` for a size) or its name is unknown.

    ``limit`` is the limit's name and ``reason`` the message without it, so that
    a command line can name its flag instead (``--memory must be a size ...``).
    """

    def __init__(self, limit: str, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"limit {limit} {reason}")
        self.limit = limit
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One row of ``LIMITS``: everything about a limit but the daemon's policy."""

    name: str
    """The wire's field name, the records' attribute, the flag (``--cpu-time``)."""
    unit: Unit
    help: str
    """One line: PROTOCOL.md's "meaning" column and the flags' help."""
    lo: float
    """The least value the wire accepts (excluded if ``lo_open``)."""
    hi: float
    """The largest value the wire accepts."""
    lo_open: bool = False

    @property
    def type(self) -> type:
        """The value's Python type: ``float`` for seconds, ``int`` otherwise."""
        return float if self.unit is Unit.SECONDS else int

    def flag(self, prefix: str = "") -> str:
        """The command-line flag: ``--cpu-time``; ``--compile-cpu-time`` with ``"compile-"``."""
        return f"--{prefix}{self.name.replace('_', '-')}"

    @property
    def metavar(self) -> str:
        return {Unit.SECONDS: "S", Unit.BYTES: "SIZE", Unit.COUNT: "N"}[self.unit]

    @property
    def range_text(self) -> str:
        """The wire range as PROTOCOL.md writes it: ``(0, 1e6]``, ``[1, 2^63-1]``."""
        return f"{'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}]"

    def parse(self, value: Any) -> float | int:
        """``value`` as a person or a profile writes it, in the wire's type.

        Seconds take numbers and numeric strings; sizes take ints and
        ``"64M"``; counts take ints and digit strings. Booleans are refused
        (``True`` is an int to Python, never a limit to us). Ranges are not
        checked here: the wire schema and the daemon's policy do that.
        """
        if isinstance(value, bool):
            raise LimitValueError(self.name, "must be a number, not a boolean")
        if self.unit is Unit.SECONDS:
            if type(value) is float:
                return value
            try:
                return float(value)
            except (TypeError, ValueError):
                raise LimitValueError(
                    self.name, f"must be a number of seconds, not {value!r}"
                ) from None
        if type(value) is int:
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return parse_size(value) if self.unit is Unit.BYTES else int(value)
            except ValueError:
                pass
        if self.unit is Unit.BYTES:
            raise LimitValueError(
                self.name,
                f"must be a size (a number with an optional K, M, G or T suffix), not {value!r}",
            )
        raise LimitValueError(self.name, f"must be an integer, not {value!r}")

    def show(self, value: float) -> str:
        """A value as a person reads it: ``64M``, ``1.5``."""
        if self.unit is Unit.BYTES and isinstance(value, int):
            return format_size(value)
        return f"{value:g}"


def _number(x: float) -> str:
    if x == INT64_MAX:
        return "2^63-1"
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")


LIMITS: tuple[LimitSpec, ...] = (
    LimitSpec("cpu_time", Unit.SECONDS, "CPU seconds, children and threads included",
              0.0, 1e6, lo_open=True),
    LimitSpec("wall_time", Unit.SECONDS, "wall-clock seconds", 0.0, 1e6, lo_open=True),
    LimitSpec("memory", Unit.BYTES, "bytes of memory, swap included", 1, INT64_MAX),
    LimitSpec("pids", Unit.COUNT, "processes and threads", 1, INT64_MAX),
    LimitSpec("output", Unit.BYTES, "bytes kept per output stream: stdout and stderr each",
              0, INT64_MAX),
    LimitSpec("file_size", Unit.BYTES, "bytes in one file the job writes", 0, INT64_MAX),
    LimitSpec("box_size", Unit.BYTES, "bytes in the job's writable /box", 0, INT64_MAX),
    LimitSpec("tmp_size", Unit.BYTES, "bytes in the job's writable /tmp", 0, INT64_MAX),
    LimitSpec("open_files", Unit.COUNT, "open file descriptors", 1, INT64_MAX),
    LimitSpec("stack", Unit.BYTES, "bytes of stack", 0, INT64_MAX),
)
"""Every limit, in the order the wire's limits record writes them."""

LIMITS_BY_NAME: Mapping[str, LimitSpec] = {spec.name: spec for spec in LIMITS}


def _job_limits() -> type:
    """The ``JobLimits`` record: one optional field per row of ``LIMITS``."""
    cls = dataclasses.make_dataclass(
        "JobLimits",
        [
            (spec.name, f"{spec.type.__name__} | None", dataclasses.field(default=None))
            for spec in LIMITS
        ],
        frozen=True,
        slots=True,
        kw_only=True,
        namespace={"__module__": __name__},
    )
    cls.__doc__ = (
        'Resource limits of a job or step; ``None`` means "the profile\'s default".\n\n'
        "One keyword field per row of ``LIMITS`` (seconds as float, bytes and counts as int):\n"
        "``JobLimits(cpu_time=1.0, memory=64 << 20)``."
    )
    return cls


JobLimits = _job_limits()


def parse_limits(values: Mapping[str, Any]) -> Any:
    """A ``JobLimits`` from a mapping of names to values as people write them.

    For profiles (TOML tables) and dicts given to the client; ``None`` values
    are left unset. Raises ``LimitValueError`` naming the limit.

    >>> parse_limits({"memory": "64M", "cpu_time": 2}).memory
    67108864
    """
    out: dict[str, float | int] = {}
    for key, raw in values.items():
        spec = LIMITS_BY_NAME.get(key) if type(key) is str else None
        if spec is None:
            known = ", ".join(sorted(LIMITS_BY_NAME))
            raise LimitValueError(
                str(key), "is not a limit", f"unknown limit {key!r} (known: {known})"
            )
        if raw is not None:
            out[key] = spec.parse(raw)
    return JobLimits(**out)

