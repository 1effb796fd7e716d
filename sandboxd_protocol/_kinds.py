"""Kinds of field: how one value is checked, in both directions, and records of them.

Strategy: each field has a *kind* (``Int``, ``Str``, ``Record``...) that
knows how to check a value in both directions: ``decode`` turns what msgpack
gave us into event values, ``encode`` turns an event's values into what
msgpack will write. Both apply the same rules, so what we send is exactly
what we would accept. A failure raises ``Invalid`` with the dotted path of
the field (``submit.tests[2].limits.cpu_time``) and a reason.

Paths are built only when a check fails or a nested value needs one, and a
``Record`` compiles its field list into straight-line code (see its
docstring), so that a valid message costs a dict lookup and a type test per
field. This module knows nothing of particular messages: ``_schema.py`` lists
them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import Invalid
from ._limits import SizeLimits

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "UINT64_MAX",
    "Array",
    "Bool",
    "Bytes",
    "Choice",
    "Field",
    "Files",
    "Float",
    "Int",
    "JobId",
    "Kind",
    "MapOf",
    "Number",
    "Record",
    "Str",
    "check_path",
    "describe",
]

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1


def _where(path: str, name: str | int) -> str:
    """``path`` + ``name`` as written in error messages: ``a.b``, ``a[3]``, ``a['k']``."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    if name[:1] in ("[", " "):
        return f"{path}{name}"
    return f"{path}.{name}" if path else name


def describe(value: object) -> str:
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


class Kind:
    """How to check one field; ``encode`` defaults to the same check as ``decode``."""

    __slots__ = ()

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        raise NotImplementedError

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        """A Python expression true only when ``x`` is valid as it is, or ``None``.

        ``Record`` inlines it in the code it generates, so that the common case
        (a valid value) costs a type test and a comparison, not a call; when it
        is false, the record calls ``decode``/``encode``, which convert or raise.
        """
        return None

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self.decode(v, path, name, lim)


class Bool(Kind):
    __slots__ = ()

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return f"({x} is True or {x} is False)"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if v is True or v is False:
            return v
        raise Invalid(_where(path, name), f"must be a bool, got {describe(v)}")


class Int(Kind):
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
            raise Invalid(_where(path, name), f"must be an int, got {describe(v)}")
        raise Invalid(_where(path, name), f"must be in [{self.lo}, {self.hi}], got {v}")


class Float(Kind):
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
                raise Invalid(_where(path, name), f"must be a float, got {describe(v)}")
            v = float(v)
        if (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi:
            return v
        if math.isnan(v):
            raise Invalid(_where(path, name), "must be a finite number, got nan")
        bound = "(" if self.lo_open else "["
        raise Invalid(_where(path, name), f"must be in {bound}{self.lo}, {self.hi}], got {v}")


class Number(Kind):
    """An int or a finite float, kept as given (free-form counters)."""

    __slots__ = ()

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        t = type(v)
        if t is int and -INT64_MAX - 1 <= v <= UINT64_MAX:
            return v
        if t is float and math.isfinite(v):
            return v
        raise Invalid(_where(path, name), f"must be an int or a finite float, got {describe(v)}")


class Str(Kind):
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
            raise Invalid(_where(path, name), f"must be a string, got {describe(v)}")
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


class JobId(Kind):
    """1 to ``max_len`` visible ASCII characters (``!`` to ``~``): easy to log, quote and compare.

    Job ids are at most 64 characters; a server-wide job *reference*
    (``JobInfo.id``, ``KillRequest.job``) prefixes one with the connection,
    so it gets room for 128.
    """

    __slots__ = ("max_len",)

    def __init__(self, max_len: int = 64) -> None:
        self.max_len = max_len

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return (
            f"(type({x}) is str and 0 < len({x}) <= {self.max_len} and {x}.isascii() "
            f"and {x}.isprintable() and ' ' not in {x})"
        )

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if (
            type(v) is str
            and 0 < len(v) <= self.max_len
            and v.isascii()
            and v.isprintable()
            and (" " not in v)
        ):
            return v
        if type(v) is not str:
            raise Invalid(_where(path, name), f"must be a string, got {describe(v)}")
        raise Invalid(
            _where(path, name),
            f"must be 1 to {self.max_len} visible ASCII characters, got {v[:80]!r}",
        )


class Bytes(Kind):
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
            raise Invalid(_where(path, name), f"must be bytes (msgpack bin), got {describe(v)}")
        cap = _cap(self.limit, lim)
        if cap is not None and len(v) > cap:
            raise Invalid(_where(path, name), f"must be at most {cap} bytes, got {len(v)}")
        return v

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is bytearray:
            v = bytes(v)
        return self.decode(v, path, name, lim)


class Choice(Kind):
    __slots__ = ("values",)

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = frozenset(values)

    def fast(self, x: str, ns: dict[str, Any], enc: bool) -> str | None:
        return f"(type({x}) is str and {x} in {_const(ns, self.values)})"

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        if type(v) is str and v in self.values:
            return v
        raise Invalid(
            _where(path, name), f"must be one of {sorted(self.values)}, got {describe(v)}"
        )


class Array(Kind):
    """An array; decoded as a tuple."""

    __slots__ = ("item", "limit", "min_len")

    def __init__(self, item: Kind, limit: Limit, min_len: int = 0) -> None:
        self.item = item
        self.limit = limit
        self.min_len = min_len

    def _check(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> str:
        if type(v) is not tuple and type(v) is not list:
            raise Invalid(_where(path, name), f"must be an array, got {describe(v)}")
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


class MapOf(Kind):
    """A map of string keys to values of one kind."""

    __slots__ = ("key", "limit", "value")

    def __init__(self, key: Kind, value: Kind, limit: Limit) -> None:
        self.key = key
        self.value = value
        self.limit = limit

    def _walk(self, v: Any, path: str, name: str | int, lim: SizeLimits, enc: bool) -> Any:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise Invalid(_where(path, name), f"must be a map, got {describe(v)}")
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
        return f"must be a string, got {describe(p)}"
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


class Files(Kind):
    """The job's files: path → bytes, with counts, sizes and path rules."""

    __slots__ = ()

    def _walk(self, v: Any, path: str, name: str | int, lim: SizeLimits, enc: bool) -> Any:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise Invalid(_where(path, name), f"must be a map, got {describe(v)}")
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
                    f"{_where(path, name)}[{p!r}]",
                    f"must be bytes (msgpack bin), got {describe(data)}",
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
            raise Invalid(_where(path, name), f"must be a map, got {describe(v)}")
        return self._walk(v, path, name, lim, enc=False)

    def encode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        return self._walk(v, path, name, lim, enc=True)


Field = tuple[str, Kind, bool]
"""(name, kind, required): the wire name is also the event's attribute name."""


def _const(ns: dict[str, Any], value: object) -> str:
    """Put ``value`` in the generated code's namespace; return the name to use."""
    name = f"_c{len(ns)}"
    ns[name] = value
    return name


def _bad_map(v: Any, path: str, name: str | int) -> Invalid:
    return Invalid(_where(path, name), f"must be a map, got {describe(v)}")


def _bad_record(cls: type, v: Any, path: str, name: str | int) -> Invalid:
    return Invalid(_where(path, name), f"must be a {cls.__name__}, got {describe(v)}")


def _missing(path: str, name: str | int, field: str) -> Invalid:
    return Invalid(f"{_where(path, name)}.{field}", "is required")


def _not_nil(path: str, name: str | int, field: str) -> Invalid:
    return Invalid(f"{_where(path, name)}.{field}", "must not be None (omit it for the default)")


# In generated code: this record's path, built at most once per call, and only
# when a field needs it (a nested record, an array, a value that failed its test).
_HERE = "(here or (here := _where(path, name)))"


class Record(Kind):
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
