"""Every file the repository's text names exists: no comment, docstring or document may send
a reader to a file that is gone (a design note never committed, a renamed test, a C
file merged into another).

What counts as a reference, in the project's own text files (``.py``, ``.md``,
``.toml``, ``.sh``, ``.c``, ``.h`` and scripts with a ``#!`` line): a word ending in
one of those extensions.

- With a directory (``docs/isolation.md``, ``isolation/mounts.py``): it must be
  a file or folder relative to the repository's root or to the citing file, or
  the tail of a path in the repository (``isolation/mounts.py`` is
  ``sandboxd/isolation/mounts.py``). Absolute paths are the running system's
  (``/proc/...``, ``/box/main.py``, ``/etc/sandboxd.toml``), never checked.
- Bare, for the names the project gives its own documents and C sources
  (``README.md``, ``init.c``): it must be the name of a file in the repository,
  unless it is quoted on its own (``"main.c"``: a job's file, data rather than a
  reference) or named in ``NOT_FILES``. Other bare names (``main.py``,
  ``calc.py``, ``p.toml``) are what jobs, examples and operators call their
  own files: not checked.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = ("py", "md", "toml", "sh", "c", "h")

# A word ending in one of the extensions; not a piece of a longer path, URL or
# placeholder (``/etc/x.toml``, ``https://.../x.md``, ``<name>.toml``).
REFERENCE = re.compile(
    r"(?<![\w./:~$<>{}*-])([\w.-]*\w(?:/[\w.-]+)*\.(?:" + "|".join(EXTENSIONS) + r"))(?![\w/-])")

# Bare names checked: documents in capitals (README.md), C sources and headers.
CHECKED_BARE = re.compile(r"[A-Z][A-Z0-9_-]*\.md|[\w.-]+\.[ch]")

# C names that are not the repository's files: what jobs and examples call theirs,
# and the C library's headers.
NOT_FILES = frozenset({"main.c", "hello.c", "prog.c", "bad.c", "a.c", "sysexits.h",
                       "testlib.h"})  # a problem setter's, never shipped (docs/judge.md)

# Paths given as examples of what a job may upload (or may not), never the repository's.
EXAMPLE_PATHS = frozenset({
    "lib/util.py", "../x.py", "include/x.h", "src/a/b.c", "path/file.py", "profiles/web.toml",
})


@cache
def tracked() -> tuple[str, ...]:
    """The repository's files as git knows them (tracked, or new and not ignored)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git cannot list the repository's files here")
    return tuple(f for f in out.splitlines() if (ROOT / f).is_file())


SELF = str(Path(__file__).resolve().relative_to(ROOT))


def scanned() -> list[str]:
    """The files scanned: the project's text, less this file (it names missing files on
    purpose)."""
    out = []
    for f in tracked():
        if f == SELF:
            continue
        name = os.path.basename(f)
        if "." in name:
            if name.rsplit(".", 1)[1] in EXTENSIONS:
                out.append(f)
        elif (ROOT / f).read_bytes()[:2] == b"#!":  # a script: bench/run
            out.append(f)
    return out


def exists(ref: str, citing: str) -> bool:
    if "/" not in ref:
        return ref in {os.path.basename(f) for f in tracked()}
    if (ROOT / ref).exists() or (ROOT / citing).parent.joinpath(ref).exists():
        return True
    tail = "/" + ref.strip("./")
    return any(("/" + f).endswith(tail) for f in tracked())


def quoted_alone(line: str, start: int, end: int) -> bool:
    """``"main.sh"`` or ``'main.sh'``: a string that is only this name (a job's file)."""
    return (start > 0 and end < len(line) and line[start - 1] == line[end]
            and line[end] in "\"'")


def missing(citing: str) -> list[str]:
    """``line: reference`` for each reference in ``citing`` to a file that does not exist."""
    try:
        text = (ROOT / citing).read_text()
    except UnicodeDecodeError:
        return []
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in REFERENCE.finditer(line):
            ref = m.group(1)
            if ref in EXAMPLE_PATHS or ref in NOT_FILES:
                continue
            if "/" not in ref and (not CHECKED_BARE.fullmatch(ref)
                                   or quoted_alone(line, m.start(1), m.end(1))):
                continue
            if not exists(ref, citing):
                found.append(f"{n}: {ref}")
    return found


def test_the_scan_finds_references() -> None:
    """The scan is not vacuous: it sees the references this repository is full of."""
    files = scanned()
    assert "README.md" in files and "bench/run" in files and "scripts/install.sh" in files
    refs = REFERENCE.findall((ROOT / "README.md").read_text())
    assert "docs/isolation.md" in refs and "bench/bench_daemon.py" in refs


def test_a_missing_file_is_found(tmp_path: Path) -> None:
    assert not exists("NO_SUCH_PLAN.md", "README.md")
    # Made up here, from the temporary directory's name: a path written in this file is
    # itself a reference the scan reads.
    assert not exists(f"sandboxd/native/{tmp_path.name}.c", "pyproject.toml")
    assert not exists(f"tests/clients/{tmp_path.name}.py", "docs/clients.md")
    assert exists("isolation/mounts.py", "sandboxd/native/init.c")
    assert exists("docs/isolation.md", "README.md")


def test_every_referenced_file_exists() -> None:
    broken = {f: refs for f in scanned() if (refs := missing(f))}
    assert not broken, "references to files that do not exist: " + "; ".join(
        f"{f} line {', line '.join(refs)}" for f, refs in sorted(broken.items()))
