"""The plan: everything a container init (native/init.c) carries out, as one byte string.

Strategy: the decisions stay in Python, made once per container shape in the
zygote (the mount plan compiled by ``mounts.compile_plan``, the Landlock rules,
the seccomp program); the init only executes them, so that no interpreter
runs inside a container. The zygote keeps each shape's plan in a sealed
memfd that every clone of that shape inherits and reads.

Every element of the plan is an op, carried out in order (bubblewrap's shape):
the mount ops, then ``hostname``, ``loopback``, ``landlock`` and its
``landlock_rule`` ops (none without Landlock), then ``job_process`` (the fork
of the job process, with the job's ids and seccomp program), then ``end``.

Layout (little-endian; a string is a u32 length, its bytes and a NUL):
  u64 magic (``MAGIC``: the version in the high half)
  ops, each a u8 code (``OPS``) and its fields (``s`` string, ``i`` u64,
  ``b`` bytes as a string, ``W``/``H`` the error's what and hint strings),
  ending with the ``end`` op

``OPS`` mirrors ``SANDBOXD_OPS`` in native/sandboxd.h;
tests/unit/isolation/test_native_contract.py holds the two to each other.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sandboxd.isolation import landlock
from sandboxd.isolation.mounts import Op

MAGIC = 3 << 32 | 0x50444253  # version 3, "SBDP"
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
    "hostname": (12, "s"),
    "loopback": (13, ""),
    "landlock": (14, "ii"),  # handled_access_fs, scoped
    "landlock_rule": (15, "si"),  # path, access
    "job_process": (16, "iib"),  # uid, gid, seccomp program (struct sock_filter[])
    "template_end": (17, ""),  # the ops before it build the template (mounts.compile_plan)
    "hollow_proc": (18, "s"),  # a proc of an emptied PID namespace, at path (a template's)
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
    wanted = sum(kind not in "WH" for kind in fields)
    if len(op.args) != wanted:
        raise ValueError(f"op {op.kind} takes {wanted} arguments, not {op.args!r}")
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
    return b"".join(out)


def encode(*, ops: Sequence[Op], hostname: str, landlock_rules: landlock.Rules | None,
           uid: int, gid: int, bpf: bytes) -> bytes:
    """The whole plan (see the module's docstring): ``ops`` (the mount ops), then the
    container's identity, network, Landlock ruleset and job process as ops of their own."""
    tail = [Op("hostname", (hostname,)), Op("loopback", ())]
    if landlock_rules is not None:
        tail.append(Op("landlock", (landlock_rules.handled_fs, landlock_rules.scoped)))
        tail += [Op("landlock_rule", (path, access)) for path, access in landlock_rules.rules]
    tail += [Op("job_process", (uid, gid, bpf)), Op("end", ())]
    return b"".join([_u64(MAGIC), *(encode_op(op) for op in (*ops, *tail))])
