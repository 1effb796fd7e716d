"""The contract between the Python side and the native init (sandboxd/native/sandboxd.h):
the op table, the plan's magic and the clone flags must be the same numbers on both
sides, and the plan the zygote makes must be nothing but ops of that table.

The C side's numbers come from the built binary itself (``sandboxd-init --contract``
prints what it was compiled with), so the test holds what actually runs, not a parse
of its source.
"""

from __future__ import annotations

import struct
import subprocess

from sandboxd import native, runtimes, spawn
from sandboxd.isolation import _libc, initplan


def _native_contract() -> tuple[dict[str, int], dict[str, tuple[int, str]]]:
    out = subprocess.run([str(native.init_path()), "--contract"], capture_output=True,
                         text=True, check=True).stdout
    values: dict[str, int] = {}
    ops: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        key, *rest = line.split()
        if key == "op":
            code, name, fields = rest
            ops[name] = (int(code), "" if fields == "-" else fields)
        else:
            values[key] = int(rest[0], 0)
    return values, ops


def _walk(plan: bytes) -> list[str]:
    """The op names of a plan, read by the table alone; it must end exactly at ``end``."""
    codes = {code: (name, fields) for name, (code, fields) in initplan.OPS.items()}
    assert struct.unpack_from("<Q", plan)[0] == initplan.MAGIC
    at, names = 8, []
    while True:
        name, fields = codes[plan[at]]
        names.append(name)
        at += 1
        for kind in fields:
            at += 8 if kind == "i" else 4 + struct.unpack_from("<I", plan, at)[0] + 1
        if name == "end":
            assert at == len(plan), "bytes after the end op: an element that is not an op"
            return names


def test_python_and_c_agree_on_ops_magic_and_clone_flags() -> None:
    values, ops = _native_contract()
    assert ops == initplan.OPS
    assert values["plan_magic"] == initplan.MAGIC
    expected_flags = (_libc.CLONE_NEWUSER | _libc.CLONE_NEWPID | _libc.CLONE_NEWNS
                      | _libc.CLONE_NEWNET | _libc.CLONE_NEWIPC | _libc.CLONE_NEWUTS
                      | _libc.CLONE_NEWCGROUP)
    assert values["clone_flags"] == spawn.CLONE_FLAGS == expected_flags
    # A warm runtime's request, and the byte its bootstrap sends once up (runtimes/).
    assert values["warm_flag"] == spawn.WARM_FLAG
    assert values["warm_ready"] == 6
    assert values["max_procs_fds"] == spawn.MAX_PROCS_FDS
    assert "os.write(sock, b\"\\x06\")" in runtimes._source(runtimes.RUNTIMES["python"].compiled)
    # Every element of a real plan (the host root, with Landlock where the kernel has it)
    # is an op of the table, in the order the init needs them.
    names = _walk(spawn.plan_bytes(spawn.ContainerSpec(slot=0, box_size=1 << 20,
                                                               tmp_size=1 << 20)))
    assert names[-2:] == ["job_process", "end"] and names.count("job_process") == 1
    assert names.index("pivot") < names.index("hostname") < names.index("loopback")
    if "landlock" in names:
        assert names.index("loopback") < names.index("landlock") < names.index("job_process")
