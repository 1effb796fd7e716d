"""Output comparison: whether a program's output matches the expected answer.

Strategy: pure functions of bytes, unit-tested without a kernel; the verdict
that follows from a comparison is decided in ``sandboxd.result``.
"""

from __future__ import annotations

import math

COMPARE_MODES = ("exact", "trailing_ws", "tokens")


class CompareError(ValueError):
    """An unknown comparison mode."""


def compare(got: bytes, expected: bytes, mode: str = "trailing_ws",
            tolerance: float | None = None) -> bool:
    """Whether ``got`` matches ``expected`` under a comparison mode.

    ``exact``: byte for byte. ``trailing_ws`` (the default): trailing
    whitespace of every line and trailing empty lines are ignored.
    ``tokens``: whitespace-separated tokens must match; with ``tolerance``,
    two numeric tokens match when they differ by at most ``tolerance``
    absolutely or relatively (as most judges' float checkers do).
    """
    if mode == "exact":
        return got == expected
    if mode == "trailing_ws":
        return _strip_lines(got) == _strip_lines(expected)
    if mode == "tokens":
        a, b = got.split(), expected.split()
        if len(a) != len(b):
            return False
        return all(_token_eq(x, y, tolerance) for x, y in zip(a, b, strict=True))
    raise CompareError(f"unknown compare mode {mode!r} (known: {', '.join(COMPARE_MODES)})")


def _strip_lines(data: bytes) -> list[bytes]:
    lines = [line.rstrip() for line in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _token_eq(a: bytes, b: bytes, tolerance: float | None) -> bool:
    if a == b:
        return True
    if tolerance is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return abs(x - y) <= tolerance or abs(x - y) <= tolerance * abs(y)
