"""The native helper, built from the C files beside this one: ``sandboxd-init``.

Strategy: the install script builds it (``python -m sandboxd.native``); if it
is missing or older than any of its sources (``*.c``, ``*.h`` here),
``init_path`` builds it on the spot with the system C compiler, all sources in
one call, atomically (build to a temporary name, then rename), so that two
daemons starting at once cannot see half a binary. Statically linked where the
C library allows it: no dynamic loader runs on the job's critical path. See
init.c for why it exists at all, and sandboxd.h for which file does what.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT = HERE / "sandboxd-init"


class NativeBuildError(RuntimeError):
    """A helper could not be built; the message says what to install."""


def sources(directory: Path = HERE) -> list[Path]:
    """The C files the binary is built from, and the headers they share."""
    return sorted([*directory.glob("*.c"), *directory.glob("*.h")])


def _stale(binary: Path, inputs: list[Path]) -> bool:
    try:
        built = binary.stat().st_mtime
    except FileNotFoundError:
        return True
    return any(built < src.stat().st_mtime for src in inputs)


def build(binary: Path = INIT, directory: Path = HERE) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NativeBuildError("no C compiler: install gcc (scripts/install.sh does)")
    units = [str(src) for src in sources(directory) if src.suffix == ".c"]
    if not units:
        raise NativeBuildError(f"no C sources in {directory}")
    tmp = binary.with_name(f".{binary.name}.{os.getpid()}.tmp")
    base = [cc, "-O2", "-Wall", "-o", str(tmp), *units]
    try:
        for extra in (["-static"], []):  # static when libc.a is there, else dynamic
            proc = subprocess.run(base + extra, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise NativeBuildError(f"building {binary.name} failed:\n{proc.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
    finally:
        if tmp.exists():
            tmp.unlink()
    return binary


def init_path() -> Path:
    """The fork server, init and job process (one binary), built first if missing or stale."""
    if _stale(INIT, sources()):
        build()
    return INIT
