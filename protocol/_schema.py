"""The schema: every message, every field, its type and its limits, in one table.

Strategy: each field has a *kind* (``_Int``, ``_Str``, ``_Record``...) that
knows how to check a value in both directions: ``decode`` turns what msgpack
gave us into event values, ``encode`` turns an event's values into what
msgpack will write. Both apply the same rules, so what we send is exactly
what we would accept. A failure raises ``Invalid`` with the dotted path of
the field (``submit.tests[2].limits.cpu_time``) and a reason; the caller
turns it into a local or remote protocol error.

Paths are built only when a check fails, so that the common case (a valid
message) costs a dict lookup and a type test per field. Unknown fields are
ignored; a field that is absent or nil takes its default.

This module knows nothing of frames, bytes on the wire or connection state:
rules that need those (frame size, job ids in flight, sequence numbers) live
in ``_connection.py`` and ``_state.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import ErrorCode, Invalid
from ._events import (
    COMPARE_MODES,
    JOB_STATES,
    STREAMS,
    VERDICTS,
    Cancellation,
    CompileStep,
    EndOfStdin,
    ErrorReport,
    Goodbye,
    Hello,
    JobAcceptance,
    JobInfo,
    JobLimits,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    OutputChunk,
    Ping,
    Pong,
    PoolStats,
    ProfileInfo,
    RepeatStats,
    ServerStats,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
)
from ._limits import MAX_FRAME_SIZE_CEILING, SizeLimits

__all__ = [
    "MESSAGE_TYPES",
    "TYPE_NAMES",
    "Invalid",
    "check_job_id",
    "decode_message",
    "encode_message",
]

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
MAX_SECONDS = 1e9  # about 31 years: any larger time is a bug, not a measurement


def _where(path: str, name: str | int) -> str:
    """``path`` + ``name`` as written in error messages: ``a.b``, ``a[3]``, ``a['k']``."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    if name[:1] in ("[", " "):
        return f"{path}{name}"
    return f"{path}.{name}" if path else name


def _got(value: object) -> str:
    """Name a bad value's type, and the value itself when it is short."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _utf8_len_over(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8, encoding only if needed."""
    n = len(text)
    if n > limit:
        return True
    if n * 4 <= limit or text.isascii():
        return False
    return len(text.encode("utf-8")) > limit


Limit = int | str | None
"""A size cap: a number, the name of a ``SizeLimits`` field, or ``None`` for none."""


def _cap(limit: Limit, lim: SizeLimits) -> int | None:
    if type(limit) is str:
        return getattr(lim, limit)  # type: ignore[no-any-return]
    return limit  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Kinds of field
# --------------------------------------------------------------------------


class _Kind:
    """How to check one field; ``encode`` defaults to the same check as ``decode``."""

    __slots__ = ()

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        raise NotImplementedError

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        """A Python expression true only when ``x`` is valid as it is, or ``None``.

        ``_Record`` inlines it in the code it generates, so that the common case
        (a valid value) costs a type test and a comparison, not a call; when it
        is false, the record calls ``decode``/``encode``, which convert or raise.
        """
        return None

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self.decode(v, path, name, lim)


class _Bool(_Kind):
    __slots__ = ()

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return f"({x} is True or {x} is False)"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if v is True or v is False:
            return v
        raise Invalid(_where(path, name), f"must be a bool, got {_got(v)}")


class _Int(_Kind):
    __slots__ = ("hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return f"(type({x}) is int and {self.lo} <= {x} <= {self.hi})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is int and self.lo <= v <= self.hi:
            return v
        if type(v) is not int:
            raise Invalid(_where(path, name), f"must be an int, got {_got(v)}")
        raise Invalid(_where(path, name), f"must be in [{self.lo}, {self.hi}], got {v}")


class _Float(_Kind):
    """A number of seconds or a tolerance: a float, or an int that we widen to float."""

    __slots__ = ("hi", "lo", "lo_open")

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False) -> None:
        self.lo = lo
        self.hi = hi
        self.lo_open = lo_open

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        op = "<" if self.lo_open else "<="
        return f"(type({x}) is float and {self.lo!r} {op} {x} <= {self.hi!r})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        t = type(v)
        if t is not float:
            if t is not int:
                raise Invalid(_where(path, name), f"must be a float, got {_got(v)}")
            v = float(v)
        if (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi:
            return v
        if math.isnan(v):
            raise Invalid(_where(path, name), "must be a finite number, got nan")
        bound = "(" if self.lo_open else "["
        raise Invalid(_where(path, name), f"must be in {bound}{self.lo}, {self.hi}], got {v}")


class _Number(_Kind):
    """An int or a finite float, kept as given (free-form counters)."""

    __slots__ = ()

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        t = type(v)
        if t is int and -INT64_MAX - 1 <= v <= UINT64_MAX:
            return v
        if t is float and math.isfinite(v):
            return v
        raise Invalid(_where(path, name), f"must be an int or a finite float, got {_got(v)}")


class _Str(_Kind):
    """Text: at most ``limit`` UTF-8 bytes, no NUL, optionally matching a pattern."""

    __slots__ = ("limit", "pattern", "what")

    def __init__(self, limit: Limit, pattern: str | None = None, what: str = "") -> None:
        self.limit = limit
        self.pattern = re.compile(pattern) if pattern else None
        self.what = what or (f"match {pattern}" if pattern else "")

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        cap = f"lim.{self.limit}" if type(self.limit) is str else repr(self.limit)
        if self.pattern is not None:  # our patterns are ASCII: characters are bytes
            pat = _const(ns, self.pattern)
            return f"(type({x}) is str and len({x}) <= {cap} and {pat}.fullmatch({x}) is not None)"
        ascii_ok = f" and {x}.isascii()" if enc else ""
        return f"(type({x}) is str and len({x}) * 4 <= {cap} and '\\x00' not in {x}{ascii_ok})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is not str:
            raise Invalid(_where(path, name), f"must be a string, got {_got(v)}")
        cap = _cap(self.limit, lim)
        if self.pattern is not None:
            if self.pattern.fullmatch(v) is None:
                raise Invalid(_where(path, name), f"must {self.what}, got {v[:80]!r}")
        elif "\x00" in v:
            raise Invalid(_where(path, name), "must not contain NUL")
        if cap is not None and _utf8_len_over(v, cap):
            raise Invalid(_where(path, name), f"must be at most {cap} bytes of UTF-8")
        return v

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if isinstance(v, str) and type(v) is not str:
            v = str.__str__(v)  # an ErrorCode or other str subclass: send the plain text
        v = self.decode(v, path, name, lim)
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise Invalid(_where(path, name), "must be valid Unicode (no surrogates)") from exc
        return v


class _JobId(_Kind):
    """1 to 64 visible ASCII characters (``!`` to ``~``): easy to log, quote and compare."""

    __slots__ = ()

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return (
            f"(type({x}) is str and 0 < len({x}) <= 64 and {x}.isascii() "
            f"and {x}.isprintable() and ' ' not in {x})"
        )

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if (
            type(v) is str
            and 0 < len(v) <= 64
            and v.isascii()
            and v.isprintable()
            and (" " not in v)
        ):
            return v
        if type(v) is not str:
            raise Invalid(_where(path, name), f"must be a string, got {_got(v)}")
        raise Invalid(
            _where(path, name), f"must be 1 to 64 visible ASCII characters, got {v[:80]!r}"
        )


class _Bytes(_Kind):
    __slots__ = ("limit",)

    def __init__(self, limit: Limit) -> None:
        self.limit = limit

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        if self.limit is None:
            return f"(type({x}) is bytes)"
        cap = f"lim.{self.limit}" if type(self.limit) is str else repr(self.limit)
        return f"(type({x}) is bytes and len({x}) <= {cap})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is not bytes:
            raise Invalid(_where(path, name), f"must be bytes (msgpack bin), got {_got(v)}")
        cap = _cap(self.limit, lim)
        if cap is not None and len(v) > cap:
            raise Invalid(_where(path, name), f"must be at most {cap} bytes, got {len(v)}")
        return v

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is bytearray:
            v = bytes(v)
        return self.decode(v, path, name, lim)


class _Choice(_Kind):
    __slots__ = ("values",)

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = frozenset(values)

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return f"(type({x}) is str and {x} in {_const(ns, self.values)})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is str and v in self.values:
            return v
        raise Invalid(_where(path, name), f"must be one of {sorted(self.values)}, got {_got(v)}")


class _Tuple(_Kind):
    """An array; decoded as a tuple."""

    __slots__ = ("item", "limit", "min_len")

    def __init__(self, item: _Kind, limit: Limit, min_len: int = 0) -> None:
        self.item = item
        self.limit = limit
        self.min_len = min_len

    def _check(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> str:
        if type(v) is not tuple and type(v) is not list:
            raise Invalid(_where(path, name), f"must be an array, got {_got(v)}")
        cap = _cap(self.limit, lim)
        if cap is not None and len(v) > cap:
            raise Invalid(_where(path, name), f"must have at most {cap} items, got {len(v)}")
        if len(v) < self.min_len:
            raise Invalid(_where(path, name), f"must have at least {self.min_len} item(s)")
        return _where(path, name)

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        here = self._check(v, path, name, lim)
        dec = self.item.decode
        return tuple([dec(x, here, i, lim) for i, x in enumerate(v)])

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        here = self._check(v, path, name, lim)
        enc = self.item.encode
        return [enc(x, here, i, lim) for i, x in enumerate(v)]


class _Map(_Kind):
    """A map of string keys to values of one kind."""

    __slots__ = ("key", "limit", "value")

    def __init__(self, key: _Kind, value: _Kind, limit: Limit) -> None:
        self.key = key
        self.value = value
        self.limit = limit

    def _walk(self, v: Any, path: str, name: str | int, lim: SizeLimits, enc: bool) -> Any:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise Invalid(_where(path, name), f"must be a map, got {_got(v)}")
        cap = _cap(self.limit, lim)
        if cap is not None and len(v) > cap:
            raise Invalid(_where(path, name), f"must have at most {cap} entries, got {len(v)}")
        here = _where(path, name)
        kcheck = self.key.encode if enc else self.key.decode
        vcheck = self.value.encode if enc else self.value.decode
        out = {}
        for k, x in v.items():
            kcheck(k, here, " key", lim)
            out[k] = vcheck(x, here, f"[{k!r}]", lim)
        return out

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self._walk(v, path, name, lim, enc=False)

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self._walk(v, path, name, lim, enc=True)


def check_path(p: Any, max_len: int) -> str | None:
    """Why ``p`` is not an acceptable file name inside the box, or ``None`` if it is.

    Relative, ``/``-separated, no empty, ``.`` or ``..`` component, no NUL, at
    most ``max_len`` bytes of UTF-8: a name that cannot leave ``/box`` however
    it is joined.
    """
    if type(p) is not str:
        return f"must be a string, got {_got(p)}"
    if not p:
        return "must not be empty"
    if "\x00" in p:
        return "must not contain NUL"
    if p[0] == "/":
        return "must be relative (no leading '/')"
    if _utf8_len_over(p, max_len):
        return f"must be at most {max_len} bytes of UTF-8"
    if "/" in p or p[0] == ".":
        for part in p.split("/"):
            if part == "" or part == "." or part == "..":
                return "must not have an empty, '.' or '..' component"
    return None


class _Files(_Kind):
    """The job's files: path → bytes, with counts, sizes and path rules."""

    __slots__ = ()

    def _walk(self, v: Any, path: str, name: str | int, lim: SizeLimits, enc: bool) -> Any:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise Invalid(_where(path, name), f"must be a map, got {_got(v)}")
        if len(v) > lim.max_files:
            raise Invalid(
                _where(path, name), f"must have at most {lim.max_files} files, got {len(v)}"
            )
        max_file = lim.max_file_size
        max_path = lim.max_path_length
        total = 0
        nested = False
        out: dict[str, bytes] | None = {} if enc else None
        for p, data in v.items():
            why = check_path(p, max_path)
            if why is not None:
                raise Invalid(f"{_where(path, name)}[{p!r}]", why)
            if enc and type(data) is bytearray:
                data = bytes(data)
            if type(data) is not bytes:
                raise Invalid(
                    f"{_where(path, name)}[{p!r}]", f"must be bytes (msgpack bin), got {_got(data)}"
                )
            if len(data) > max_file:
                raise Invalid(
                    f"{_where(path, name)}[{p!r}]",
                    f"must be at most {max_file} bytes, got {len(data)}",
                )
            total += len(data)
            if "/" in p:
                nested = True
            if out is not None:
                out[p] = data
        if total > lim.max_total_file_size:
            raise Invalid(
                _where(path, name),
                f"must total at most {lim.max_total_file_size} bytes, got {total}",
            )
        if nested:
            for p in v:
                parts = p.split("/")
                for i in range(1, len(parts)):
                    parent = "/".join(parts[:i])
                    if parent in v:
                        raise Invalid(
                            f"{_where(path, name)}[{p!r}]",
                            f"{parent!r} is both a file and a directory",
                        )
        return out if out is not None else v

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is not dict:
            raise Invalid(_where(path, name), f"must be a map, got {_got(v)}")
        return self._walk(v, path, name, lim, enc=False)

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self._walk(v, path, name, lim, enc=True)


Field = tuple[str, _Kind, bool]
"""(name, kind, required): the wire name is also the event's attribute name."""


def _const(ns: dict[str, Any], value: object) -> str:
    """Put ``value`` in the generated code's namespace; return the name to use."""
    name = f"_c{len(ns)}"
    ns[name] = value
    return name


def _bad_map(v: Any, path: str, name: str | int) -> Invalid:
    return Invalid(_where(path, name), f"must be a map, got {_got(v)}")


def _bad_record(cls: type, v: Any, path: str, name: str | int) -> Invalid:
    return Invalid(_where(path, name), f"must be a {cls.__name__}, got {_got(v)}")


def _missing(path: str, name: str | int, field: str) -> Invalid:
    return Invalid(f"{_where(path, name)}.{field}", "is required")


def _not_nil(path: str, name: str | int, field: str) -> Invalid:
    return Invalid(f"{_where(path, name)}.{field}", "must not be None (omit it for the default)")


# In generated code: this record's path, built at most once per call, and only
# when a field needs it (a nested record, an array, a value that failed its test).
_HERE = "(here or (here := _where(path, name)))"


class _Record(_Kind):
    """A map with known fields, decoded into a frozen dataclass.

    Its ``decode`` and ``encode`` are generated once, at import, from the
    field list: straight-line code with each field's ``fast`` test inlined.
    The field list stays the single source of truth; the generated code is
    only a faster way to walk it (``source`` holds it, for reading).
    """

    __slots__ = ("check", "cls", "decode", "encode", "fields", "source", "type_name")

    def __init__(
        self,
        cls: type,
        fields: tuple[Field, ...],
        check: Callable[[Any, str, SizeLimits], None] | None = None,
        type_name: str | None = None,
    ) -> None:
        self.cls = cls
        self.fields = fields
        self.check = check
        self.type_name = type_name
        self._compile()

    def _compile(self) -> None:
        ns: dict[str, Any] = {
            "_where": _where,
            "_bad_map": _bad_map,
            "_bad_record": _bad_record,
            "_missing": _missing,
            "_not_nil": _not_nil,
            "_cls": self.cls,
            "_check": self.check,
        }
        defaults = {f.name: f for f in dataclasses.fields(self.cls)}
        if set(defaults) != {name for name, _, _ in self.fields}:
            raise TypeError(f"the schema of {self.cls.__name__} must list every field")
        slot_setters = {name: self.cls.__dict__[name].__set__ for name in defaults}
        ns["_new"] = object.__new__
        dec = [
            "def decode(v, path, name, lim):",
            "    if type(v) is not dict:",
            "        raise _bad_map(v, path, name)",
            "    get = v.get",
            "    here = None",
        ]
        enc = [
            "def encode(v, path, name, lim):",
            "    if type(v) is not _cls:",
            "        raise _bad_record(_cls, v, path, name)",
            f"    out = {{'type': {self.type_name!r}}}" if self.type_name else "    out = {}",
            "    here = None",
        ]
        args = []
        for i, (fname, kind, required) in enumerate(self.fields):
            k = _const(ns, kind)
            x = f"x{i}"
            args.append(f"{fname}={x}")
            dec.append(f"    {x} = get({fname!r})")
            dec.append(f"    if {x} is None:")
            default = defaults[fname]
            if required:
                dec.append(f"        raise _missing(path, name, {fname!r})")
            elif default.default is not dataclasses.MISSING:
                if default.default is not None:
                    dec.append(f"        {x} = {_const(ns, default.default)}")
                else:
                    dec.append("        pass")
            else:
                dec.append(f"        {x} = {_const(ns, default.default_factory)}()")
            test = kind.fast(x, ns, enc=False)
            call = f"{x} = {k}.decode({x}, {_HERE}, {fname!r}, lim)"
            dec.append(f"    elif not {test}:" if test else "    else:")
            dec.append(f"        {call}")

            enc.append(f"    {x} = v.{fname}")
            enc.append(f"    if {x} is not None:")
            test = kind.fast(x, ns, enc=True)
            call = f"{x} = {k}.encode({x}, {_HERE}, {fname!r}, lim)"
            if test:
                enc.append(f"        if not {test}:")
                enc.append(f"            {call}")
            else:
                enc.append(f"        {call}")
            enc.append(f"        out[{fname!r}] = {x}")
            if required:
                enc.append("    else:")
                enc.append(f"        raise _missing(path, name, {fname!r})")
            elif default.default is not None:
                # nil would decode as the default, not as nil: refuse it
                enc.append("    else:")
                enc.append(f"        raise _not_nil(path, name, {fname!r})")
        # Build the instance through its slots: the frozen dataclass __init__
        # costs a call per field, and decoded values are already normalised.
        dec.append("    obj = _new(_cls)")
        for i, (fname, _, _) in enumerate(self.fields):
            dec.append(f"    {_const(ns, slot_setters[fname])}(obj, x{i})")
        if self.check is not None:
            dec.append("    _check(obj, _where(path, name), lim)")
            enc.append("    _check(v, _where(path, name), lim)")
        dec.append("    return obj")
        enc.append("    return out")
        self.source = "\n".join(dec) + "\n\n" + "\n".join(enc) + "\n"
        exec(compile(self.source, f"<schema of {self.cls.__name__}>", "exec"), ns)
        self.decode = ns["decode"]  # type: ignore[method-assign]
        self.encode = ns["encode"]  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------

BOOL = _Bool()
JOB_ID = _JobId()
PROFILE = _Str(64, r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", "be a profile name [A-Za-z0-9._+-]")
LABEL = _Str(256)  # software names, client descriptions
DESCRIPTION = _Str(1024)
SECONDS = _Float(0.0, MAX_SECONDS)
BYTE_COUNT = _Int(0, INT64_MAX)
COUNT = _Int(0, INT64_MAX)
ARGV = _Tuple(_Str("max_arg_length"), "max_argv", min_len=1)

LIMIT_SECONDS = _Float(0.0, 1e6, lo_open=True)

JOB_LIMITS = _Record(
    JobLimits,
    (
        ("cpu_time", LIMIT_SECONDS, False),
        ("wall_time", LIMIT_SECONDS, False),
        ("memory", _Int(1, INT64_MAX), False),
        ("pids", _Int(1, INT64_MAX), False),
        ("output", BYTE_COUNT, False),
        ("file_size", BYTE_COUNT, False),
        ("box_size", BYTE_COUNT, False),
        ("open_files", _Int(1, INT64_MAX), False),
        ("stack", BYTE_COUNT, False),
    ),
)

COMPILE_STEP = _Record(CompileStep, (("argv", ARGV, False), ("limits", JOB_LIMITS, False)))

TEST_CASE = _Record(
    TestCase,
    (
        ("stdin", _Bytes("max_input"), False),
        ("expected_output", _Bytes("max_input"), False),
        ("limits", JOB_LIMITS, False),
        ("repeat", _Int(1, 1000), False),
    ),
)


def _check_submission(s: JobSubmission, here: str, lim: SizeLimits) -> None:
    """Rules that tie fields together: a batch has no job-level stdin, and so on."""
    if s.tests is not None:
        if s.stdin:
            raise Invalid(f"{here}.stdin", "must be empty when tests are given (each has its own)")
        if s.expected_output is not None:
            raise Invalid(f"{here}.expected_output", "must be absent when tests are given")
        if s.interactive_stdin:
            raise Invalid(f"{here}.interactive_stdin", "must be false when tests are given")
    if s.float_tolerance is not None and s.compare != "tokens":
        raise Invalid(f"{here}.float_tolerance", "is only allowed with compare 'tokens'")


JOB_SUBMISSION = _Record(
    JobSubmission,
    (
        ("id", JOB_ID, True),
        ("profile", PROFILE, True),
        ("files", _Files(), False),
        ("stdin", _Bytes("max_input"), False),
        ("argv", ARGV, False),
        (
            "env",
            _Map(
                _Str(255, r"[A-Za-z_][A-Za-z0-9_]*", "be a variable name [A-Za-z_][A-Za-z0-9_]*"),
                _Str("max_arg_length"),
                "max_env",
            ),
            False,
        ),
        ("limits", JOB_LIMITS, False),
        ("cpuset_pin", BOOL, False),
        ("compile", COMPILE_STEP, False),
        ("tests", _Tuple(TEST_CASE, "max_tests", min_len=1), False),
        ("expected_output", _Bytes("max_input"), False),
        ("compare", _Choice(COMPARE_MODES), False),
        ("float_tolerance", _Float(0.0, 1e9), False),
        ("stop_on_failure", BOOL, False),
        ("stream", BOOL, False),
        ("interactive_stdin", BOOL, False),
    ),
    _check_submission,
    "submit",
)

REPEAT_STATS = _Record(
    RepeatStats,
    (
        ("runs", _Int(1, INT32_MAX), True),
        ("cpu_time_min", SECONDS, True),
        ("cpu_time_median", SECONDS, True),
        ("cpu_time_max", SECONDS, True),
        ("wall_time_min", SECONDS, True),
        ("wall_time_median", SECONDS, True),
        ("wall_time_max", SECONDS, True),
        ("memory_peak_max", BYTE_COUNT, True),
    ),
)


def _check_step(r: StepResult, here: str, lim: SizeLimits) -> None:
    """A verdict that needs a reason has one.

    ``time_limit`` says which clock ran out; ``sandbox_error`` says what failed.
    """
    if r.verdict == "time_limit" and r.reason not in ("cpu", "wall"):
        raise Invalid(f"{here}.reason", f"must be 'cpu' or 'wall' for time_limit, got {r.reason!r}")
    if r.verdict == "sandbox_error" and not r.reason:
        raise Invalid(f"{here}.reason", "must say what failed for sandbox_error")


STEP_RESULT = _Record(
    StepResult,
    (
        ("verdict", _Choice(VERDICTS), True),
        ("reason", _Str(1024), False),
        ("exit_code", _Int(0, 255), False),
        ("signal", _Int(1, 127), False),
        ("cpu_time", SECONDS, False),
        ("user_time", SECONDS, False),
        ("sys_time", SECONDS, False),
        ("wall_time", SECONDS, False),
        ("memory_peak", BYTE_COUNT, False),
        ("oom_killed", BOOL, False),
        ("stdout", _Bytes(None), False),
        ("stderr", _Bytes(None), False),
        ("stdout_truncated", BOOL, False),
        ("stderr_truncated", BOOL, False),
        ("repeat", REPEAT_STATS, False),
    ),
    _check_step,
)

SIZE_LIMITS = _Record(
    SizeLimits,
    tuple(
        (name, _Int(1, MAX_FRAME_SIZE_CEILING if name == "max_frame_size" else INT64_MAX), False)
        for name in SizeLimits.__slots__
    ),
)

PROFILE_INFO = _Record(
    ProfileInfo,
    (
        ("name", PROFILE, True),
        ("description", DESCRIPTION, False),
        ("compiled", BOOL, False),
        ("default_limits", JOB_LIMITS, False),
        ("max_limits", JOB_LIMITS, False),
    ),
)

JOB_INFO = _Record(
    JobInfo,
    (
        ("id", JOB_ID, True),
        ("profile", PROFILE, True),
        ("state", _Choice(JOB_STATES), True),
        ("elapsed", SECONDS, False),
        ("client", LABEL, False),
    ),
)

POOL_STATS = _Record(
    PoolStats, (("profile", PROFILE, True), ("warm", COUNT, False), ("target", COUNT, False))
)


def _check_chunk(c: OutputChunk, here: str, lim: SizeLimits) -> None:
    """Compile output belongs to no test: its ``step`` stays 0."""
    if c.compile and c.step != 0:
        raise Invalid(f"{here}.step", "must be 0 for compile output")


VERSION = _Int(1, INT32_MAX)
ERROR_CODE = _Str(64, r"[a-z][a-z0-9_]{0,63}", "be an error code [a-z][a-z0-9_]*")

MESSAGES: tuple[_Record, ...] = (
    _Record(
        Hello,
        (("version", VERSION, True), ("client", LABEL, False), ("token", _Str(1024), False)),
        type_name="hello",
    ),
    _Record(
        Welcome,
        (
            ("version", VERSION, True),
            ("server", LABEL, False),
            ("limits", SIZE_LIMITS, False),
            ("profiles", _Tuple(PROFILE_INFO, 1024), False),
        ),
        type_name="welcome",
    ),
    JOB_SUBMISSION,
    _Record(JobAcceptance, (("id", JOB_ID, True),), type_name="accepted"),
    _Record(
        OutputChunk,
        (
            ("id", JOB_ID, True),
            ("stream", _Choice(STREAMS), True),
            ("data", _Bytes("max_chunk"), True),
            ("seq", _Int(0, INT64_MAX), True),
            ("step", _Int(0, INT32_MAX), False),
            ("compile", BOOL, False),
        ),
        _check_chunk,
        type_name="output",
    ),
    _Record(
        StdinChunk,
        (("id", JOB_ID, True), ("data", _Bytes("max_chunk"), True)),
        type_name="stdin",
    ),
    _Record(EndOfStdin, (("id", JOB_ID, True),), type_name="stdin_end"),
    _Record(
        JobResult,
        (
            ("id", JOB_ID, True),
            ("compile", STEP_RESULT, False),
            ("steps", _Tuple(STEP_RESULT, "max_tests"), False),
        ),
        type_name="result",
    ),
    _Record(Cancellation, (("id", JOB_ID, True),), type_name="cancel"),
    _Record(JobListRequest, (), type_name="list_jobs"),
    _Record(JobList, (("jobs", _Tuple(JOB_INFO, 100_000), False),), type_name="job_list"),
    _Record(StatsRequest, (), type_name="get_stats"),
    _Record(
        ServerStats,
        (
            ("uptime", SECONDS, False),
            ("connections", COUNT, False),
            ("jobs_queued", COUNT, False),
            ("jobs_running", COUNT, False),
            ("jobs_completed", COUNT, False),
            ("pools", _Tuple(POOL_STATS, 1024), False),
            (
                "counters",
                _Map(
                    _Str(64, r"[A-Za-z_][A-Za-z0-9_.]{0,63}", "be a counter name"),
                    _Number(),
                    1024,
                ),
                False,
            ),
        ),
        type_name="stats",
    ),
    _Record(Ping, (("nonce", _Int(0, UINT64_MAX), True),), type_name="ping"),
    _Record(Pong, (("nonce", _Int(0, UINT64_MAX), True),), type_name="pong"),
    _Record(
        ErrorReport,
        (("code", ERROR_CODE, True), ("message", _Str(4096), False), ("id", JOB_ID, False)),
        type_name="error",
    ),
    _Record(Goodbye, (("reason", _Str(1024), False),), type_name="goodbye"),
)

_BY_TYPE: dict[str, _Record] = {m.type_name: m for m in MESSAGES if m.type_name}
_BY_CLASS: dict[type, _Record] = {m.cls: m for m in MESSAGES}

MESSAGE_TYPES: Mapping[str, type] = {name: m.cls for name, m in _BY_TYPE.items()}
"""Wire ``type`` → event class."""
TYPE_NAMES: Mapping[type, str] = {m.cls: name for name, m in _BY_TYPE.items()}
"""Event class → wire ``type``."""


def decode_message(msg: Any, lim: SizeLimits) -> Any:
    """Turn a decoded msgpack object into an event, or raise ``Invalid``."""
    if type(msg) is not dict:
        raise Invalid("", f"a frame must hold a msgpack map, got {_got(msg)}", ErrorCode.MALFORMED)
    t = msg.get("type")
    record = _BY_TYPE.get(t) if type(t) is str else None
    if record is None:
        if t is None:
            raise Invalid("type", "is required")
        if type(t) is not str:
            raise Invalid("type", f"must be a string, got {_got(t)}")
        raise Invalid("type", f"unknown message type {t[:80]!r}", ErrorCode.UNKNOWN_MESSAGE)
    return record.decode(msg, "", record.type_name or "", lim)


def encode_message(event: Any, lim: SizeLimits) -> dict[str, Any]:
    """Turn an event into the map msgpack will write, or raise ``Invalid``."""
    record = _BY_CLASS.get(type(event))
    if record is None:
        raise Invalid("", f"not a message event: {_got(event)}", ErrorCode.UNKNOWN_MESSAGE)
    return record.encode(event, "", record.type_name or "", lim)  # type: ignore[no-any-return]


def check_job_id(v: Any) -> str | None:
    """``v`` if it is a well-formed job id, else ``None`` (to label an error report)."""
    try:
        return JOB_ID.decode(v, "", "id", SizeLimits())  # type: ignore[no-any-return]
    except Invalid:
        return None
