"""The native helper, built from C beside this file: ``sandboxd-init``.

Strategy: the install script builds them (``python -m sandboxd.native``);
if it is missing or older than its source, ``init_path`` builds it on the
spot with the system C compiler, atomically (build to a temporary name, then
rename), so that two daemons starting at once cannot see half a binary.
Statically linked where the C library allows it: no dynamic loader runs on
the job's critical path. See init.c for why it exists at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SRC = HERE / "init.c"
INIT = HERE / "sandboxd-init"


class NativeBuildError(RuntimeError):
    """A helper could not be built; the message says what to install."""


def _stale(binary: Path, source: Path) -> bool:
    try:
        return binary.stat().st_mtime < source.stat().st_mtime
    except FileNotFoundError:
        return True


def build(binary: Path = INIT, source: Path = INIT_SRC) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NativeBuildError("no C compiler: install gcc (scripts/install.sh does)")
    tmp = binary.with_name(f".{binary.name}.{os.getpid()}.tmp")
    base = [cc, "-O2", "-Wall", "-o", str(tmp), str(source)]
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
    if _stale(INIT, INIT_SRC):
        build()
    return INIT
