"""A job's limits: one record, its defaults, the ceilings nobody may exceed, and size parsing.

Strategy: every entry point (``run-once`` flags, the daemon's job messages,
profiles) produces a ``Limits`` through ``Limits.merged`` so that validation
is written once: an absurd value is refused with a message that names the
limit and the allowed range, never clamped in silence.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class LimitError(ValueError):
    """A limit is malformed or outside its allowed range; the message says which and why."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """'64M' -> 67108864. Suffixes K, M, G, T are powers of 1024, as in isolate and docker."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise LimitError(f"not a size: {text!r} (use a number with an optional K, M or G suffix)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return int(value)


def format_size(n: int) -> str:
    for unit, size in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit of one run step. Times in seconds, sizes in bytes."""

    cpu_time: float = 5.0
    wall_time: float = 10.0
    memory: int = 256 * MiB
    pids: int = 64
    output: int = 16 * MiB  # per stream
    file_size: int = 64 * MiB
    box_size: int = 64 * MiB
    tmp_size: int = 64 * MiB
    open_files: int = 256
    stack: int = 64 * MiB

    def merged(self, overrides: dict[str, Any] | None, ceiling: Limits | None = None) -> Limits:
        """These limits with ``overrides`` applied, each checked against range and ceiling.

        Clients send the same overrides job after job: the result is cached (every
        input is immutable), since merging and checking cost ~0.1 ms of the
        supervisor's CPU per job.
        """
        if not overrides:
            return self
        try:
            # The type too: True == 1 and 1.0 == 1, but they need not coerce alike.
            key = (self, tuple(sorted((k, type(v).__name__, v) for k, v in overrides.items())),
                   ceiling)
            hash(key)
        except TypeError:  # an unhashable value: certainly refused below
            return self._merged(overrides, ceiling)
        return _merged_cached(*key)

    def _merged(self, overrides: dict[str, Any], ceiling: Limits | None) -> Limits:
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in overrides.items():
            if raw is None:
                continue
            if key not in known:
                raise LimitError(f"unknown limit {key!r} (known: {', '.join(sorted(known))})")
            changes[key] = _coerce(key, raw)
        result = dataclasses.replace(self, **changes)
        result.check(ceiling or MAXIMUM)
        return result

    def check(self, ceiling: Limits) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            top = getattr(ceiling, f.name)
            low = _MINIMUM[f.name]
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise LimitError(f"limit {f.name} must be a finite number, not {value!r}")
            if value < low or value > top:
                raise LimitError(f"limit {f.name}={_show(f.name, value)} is outside the allowed "
                                 f"range [{_show(f.name, low)}, {_show(f.name, top)}]")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=256)
def _merged_cached(base: Limits, overrides: tuple[tuple[str, str, Any], ...],
                   ceiling: Limits | None) -> Limits:
    return base._merged({k: v for k, _type, v in overrides}, ceiling)


_FLOAT_KEYS = {"cpu_time", "wall_time"}
_SIZE_KEYS = {"memory", "output", "file_size", "box_size", "tmp_size", "stack"}


def _coerce(key: str, raw: Any) -> float | int:
    if isinstance(raw, bool):
        raise LimitError(f"limit {key} must be a number, not a boolean")
    if key in _FLOAT_KEYS:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise LimitError(f"limit {key} must be a number of seconds, not {raw!r}") from None
    if key in _SIZE_KEYS and isinstance(raw, str):
        return parse_size(raw)
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if not isinstance(raw, int):
        raise LimitError(f"limit {key} must be an integer, not {raw!r}")
    return raw


def _show(key: str, value: float) -> str:
    if key in _SIZE_KEYS:
        return format_size(int(value))
    return f"{value:g}"


_MINIMUM = {
    "cpu_time": 0.001,
    "wall_time": 0.001,
    "memory": 4 * MiB,
    "pids": 1,
    "output": 0,
    "file_size": 0,
    "box_size": 64 * KiB,
    "tmp_size": 64 * KiB,
    "open_files": 4,
    "stack": 64 * KiB,
}

# The ceiling a job may ask for unless an operator's profile says less. Generous
# enough for a JVM build, small enough that one job cannot take this machine.
MAXIMUM = Limits(
    cpu_time=600.0,
    wall_time=1200.0,
    memory=16 * GiB,
    pids=4096,
    output=1 * GiB,
    file_size=4 * GiB,
    box_size=4 * GiB,
    tmp_size=4 * GiB,
    open_files=65536,
    stack=1 * GiB,
)

DEFAULT = Limits()
