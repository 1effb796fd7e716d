"""The plan: everything a container init (native/init.c) carries out, as one byte string.

Strategy: the decisions stay in Python, made once per container shape in the
zygote (the mount plan compiled by ``mounts.compile_plan``, the Landlock rules,
the seccomp program); the init only executes them, so that no interpreter
runs inside a container. The zygote keeps each shape's plan in a sealed
memfd that every clone of that shape inherits and reads.

Layout (little-endian; a string is a u32 length, its bytes and a NUL):
  u64 magic (``MAGIC``)
  ops, each a u8 code (``OPS``) and its fields (``s`` string, ``i`` u64,
  ``b`` bytes as a string, ``W``/``H`` the error's what and hint strings),
  ending with the ``end`` op
  string hostname
  u64 Landlock handled_access_fs (0: no Landlock), u64 scoped, u64 rule count,
  each rule a string path and a u64 access mask
  u64 job uid, u64 job gid, string seccomp program (struct sock_filter[])

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sandboxd.isolation import landlock
from sandboxd.isolation.mounts import Op

MAGIC = 1 << 32 | 0x50444253  # version 1, "SBDP"
OPS: dict[str, tuple[int, str]] = {
    "end": (0, ""),
    "mkdirs": (1, "s"),
    "touch": (2, "s"),
    "mount": (3, "ssssiWH"),
    "remount_ro": (4, "siWH"),
    "symlink": (5, "ss"),
    "file": (6, "sib"),
    "chdir": (7, "sWH"),
    "lock": (8, "sWH"),
    "unlock": (9, ""),
    "mkdir": (10, "si"),
    "pivot": (11, "s"),
}


def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if isinstance(value, str) and b"\0" in raw:
        raise ValueError(f"NUL byte in {value!r}")
    return struct.pack("<I", len(raw)) + raw + b"\0"


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def encode_op(op: Op) -> bytes:
    code, fields = OPS[op.kind]
    args = iter(op.args)
    out = [bytes([code])]
    for kind in fields:
        if kind == "W":
            out.append(_str(op.what))
        elif kind == "H":
            out.append(_str(op.hint))
        elif kind == "i":
            out.append(_u64(int(next(args))))  # type: ignore[arg-type]
        else:
            out.append(_str(next(args)))  # type: ignore[arg-type]
    if next(args, None) is not None:
        raise ValueError(f"{op.kind}: too many arguments {op.args!r}")
    return b"".join(out)


def encode(*, ops: Sequence[Op], hostname: str, landlock_rules: landlock.Rules | None,
           uid: int, gid: int, bpf: bytes) -> bytes:
    """The whole plan (see the module's docstring)."""
    parts = [_u64(MAGIC), *(encode_op(op) for op in ops), encode_op(Op("end", ())),
             _str(hostname)]
    if landlock_rules is None:
        parts += [_u64(0), _u64(0), _u64(0)]
    else:
        parts += [_u64(landlock_rules.handled_fs), _u64(landlock_rules.scoped),
                  _u64(len(landlock_rules.rules))]
        for path, access in landlock_rules.rules:
            parts += [_str(path), _u64(access)]
    parts += [_u64(uid), _u64(gid), _str(bpf)]
    return b"".join(parts)
