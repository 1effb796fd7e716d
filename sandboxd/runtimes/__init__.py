"""Warm runtimes: an interpreter started in a warm container before its job arrives.

Strategy. Most of a tiny Python or JavaScript job's time is its interpreter
starting (``python3 -c pass`` ~8 ms here, ``node -e 0`` ~40 ms), not its code.
A profile that names a runtime here (``warm_runtime = "python"``) has its
pool's containers start that interpreter *before* the job: the job process,
once every restriction of a job is in place (native/jobproc.c), executes the
profile's run argv with ``{entry}`` replaced by the runtime's option for
inline code and the runtime's bootstrap (``python_boot.py``, ``node_boot.js``
beside this file; Python's compiled once here and passed on the job process's
socket, which ``python_start.py``, the ``-c`` text, reads and runs), under the
rlimits, environment, working directory and stdio of the shape's jobs. The
bootstrap says it is up, waits for the job's exec request on the job process's
socket, closes it and runs the entry file as the plain start would. The container stays single use.

A job is handed to such a container only when nothing of what the interpreter
started with differs from what the job would have started with (``WarmStart``
is that, and is part of the pool's shape): the interpreter and its options
(node's heap ceiling follows the memory limit), the environment (a job with
variables of its own gets the plain start: interpreters read some of them when
they start), the working directory and the rlimits. ``jobs.warm_start`` adds
the job's own choice and the judge path's rule. A runtime whose bootstrap can
lower its own rlimits (Python) also takes a job whose rlimits are lower than
the shape's: it sets them at the hand-over, before the job's code runs. docs/profiles.md lists what
still differs from a plain start.

This module knows nothing of trio, sockets or the pool.
"""

from __future__ import annotations

import functools
import importlib.util
import marshal
import struct
from dataclasses import dataclass
from pathlib import Path

from sandboxd.isolation.rlimits import Rlimits
from sandboxd.limits import Limits, MiB
from sandboxd.spawn import WarmStart, job_env

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Runtime:
    """How to start one interpreter before its job."""

    name: str
    boot: str  # the text the interpreter starts with, a file beside this module
    code_option: str  # the interpreter's option that runs its next argument as code
    # Below this memory limit a job gets the plain start: the waiting interpreter already
    # holds memory in the job's cgroup, and a limit under it could not be set.
    min_memory: int
    # Whether its bootstrap lowers its own rlimits to a job's lower ones at the hand-over
    # (Python's ``resource.setrlimit``; node has no such call): a job with a lower CPU
    # time, file size, open files or stack limit than the pool's shape still gets the
    # warm start (a Judge0 or Piston job with their defaults, for one).
    lowers_rlimits: bool = False
    # A file beside this module whose code is compiled once, here, and passed to the started
    # interpreter after its request (``WarmStart.boot``), for ``boot`` to read and run:
    # compiling it in every container cost ~2 ms of CPU and ~0.5 MiB of memory each.
    compiled: str = ""

    def source(self) -> str:
        return _source(self.boot)

    def boot_code(self) -> bytes:
        return _compiled(self.compiled) if self.compiled else b""


RUNTIMES: dict[str, Runtime] = {
    "python": Runtime("python", "python_start.py", "-c", 32 * MiB, lowers_rlimits=True,
                      compiled="python_boot.py"),
    "node": Runtime("node", "node_boot.js", "-e", 160 * MiB),
}


@functools.cache
def _source(name: str) -> str:
    return (HERE / name).read_text()


@functools.cache
def _compiled(name: str) -> bytes:
    """``name``'s code as python_start.py reads it: a length, then this interpreter's magic
    number, the length of the marshalled code, the code, and the source (which an
    interpreter of another magic number compiles instead). The supervisor's Python is the
    host's; a container's may be an image's."""
    text = _source(name)
    code = marshal.dumps(compile(text, "<string>", "exec", dont_inherit=True))
    body = importlib.util.MAGIC_NUMBER + struct.pack("<I", len(code)) + code + text.encode()
    return struct.pack("<I", len(body)) + body


def step_rlimits(limits: Limits) -> Rlimits:
    """The rlimits of a step under ``limits`` (the executor's and a warm start's alike)."""
    return Rlimits(cpu_seconds=limits.cpu_time, file_size=limits.file_size,
                   open_files=limits.open_files, stack=limits.stack)


def warm_start(runtime: str, argv: list[str], entry_at: int, env: dict[str, str], cwd: str,
               limits: Limits) -> WarmStart:
    """What a warm container starts for a job whose run argv is ``argv`` (its entry file at
    ``entry_at``), under ``env``, ``cwd`` and ``limits``."""
    rt = RUNTIMES[runtime]
    return WarmStart(argv=(*argv[:entry_at], rt.code_option, rt.source()),
                     env=tuple(job_env(env).items()), cwd=cwd, rlimits=step_rlimits(limits),
                     runtime=runtime, lowers_rlimits=rt.lowers_rlimits, boot=rt.boot_code())
