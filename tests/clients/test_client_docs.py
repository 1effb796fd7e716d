"""Every example of docs/clients.md runs against a real daemon and prints what the doc says.

A fenced block whose info string is exactly ``python`` or ``sh`` is an example;
a ``text`` block right after it is its expected standard output. Examples find
the daemon as users do, through ``$SANDBOXD_SOCKET``, and run in a fresh
directory with this venv's ``python3`` and ``sandboxctl`` first on ``PATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from client_helpers import BIN

from sandboxd_testing.daemon import Daemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\n", re.M | re.S)


def examples() -> list[tuple[str, str, str, str | None]]:
    """(id, language, code, expected output) for each example, in document order."""
    text = DOC.read_text(encoding="utf-8")
    out: list[tuple[str, str, str, str | None]] = []
    blocks = list(FENCE.finditer(text))
    for i, m in enumerate(blocks):
        lang, code = m.group(1), m.group(2)
        if lang not in ("python", "sh"):
            continue
        expected = None
        if i + 1 < len(blocks):
            nxt = blocks[i + 1]
            if nxt.group(1) == "text" and not text[m.end() : nxt.start()].strip():
                expected = nxt.group(2)
        heading = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)[-1]
        slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:40]
        out.append((f"{len(out) + 1}-{slug}", lang, code, expected))
    return out


EXAMPLES = examples()


def test_the_doc_has_an_example_for_each_kind_of_user() -> None:
    ids = " ".join(e[0] for e in EXAMPLES)
    for kind in ("online-judge", "ci-system", "playground", "python-program"):
        assert kind in ids, kind
    assert all(e[3] is not None for e in EXAMPLES), "every example shows its output"


def _marks(code: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.root]


@pytest.mark.parametrize(
    ("lang", "code", "expected"),
    [
        pytest.param(lang, code, exp, id=eid, marks=_marks(code))
        for eid, lang, code, exp in EXAMPLES
    ],
)
def test_example(tmp_path: Path, lang: str, code: str, expected: str | None) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with Daemon(tmp_path, pool_profiles=["python3", "bash"]) as d:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env["SANDBOXD_SOCKET"] = d.socket
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        if lang == "python":
            cmd = [sys.executable, "-c", code]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", code]
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    if expected is not None:
        assert p.stdout.decode() == expected, p.stderr.decode()[-3000:]
