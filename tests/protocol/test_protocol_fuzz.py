"""Bounded fuzzing: arbitrary bytes parse or raise RemoteProtocolError, nothing else.

The invariant lives in ``fuzz/fuzz_protocol.py`` (``one_input``) and is stated
in ``fuzz/README.md``; here it runs for a few seconds on every test run.
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz" / "fuzz_protocol.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_protocol", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _load()

FAST = settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

# Any msgpack value, nested: bodies that parse, so the schema itself is fuzzed.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=10) | st.sampled_from(["type", "id", "files"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)
TYPES = [
    "hello",
    "welcome",
    "submit",
    "accepted",
    "output",
    "stdin",
    "stdin_end",
    "result",
    "cancel",
    "list_jobs",
    "job_list",
    "kill",
    "kill_result",
    "get_stats",
    "stats",
    "ping",
    "pong",
    "error",
    "goodbye",
    "other",
]
messages = st.builds(
    lambda t, fields: {"type": t, **fields},
    st.sampled_from(TYPES),
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "profile",
                "files",
                "stdin",
                "argv",
                "limits",
                "tests",
                "data",
                "seq",
                "stream",
                "steps",
                "nonce",
                "code",
                "version",
                "compile",
                "job",
                "found",
            ]
        ),
        msgpack_values,
        max_size=5,
    ),
)


def _frames(values: list[Any]) -> bytes:
    out = b""
    for value in values:
        body = msgpack.packb(value, use_bin_type=True)
        out += struct.pack(">I", len(body)) + body
    return out


@FAST
@given(st.binary(max_size=3000), st.integers(0, 3), st.integers(0, 255))
def test_random_bytes(data: bytes, mode: int, flags: int) -> None:
    fuzz.one_input(bytes([mode, flags]) + data)


@FAST
@given(st.lists(messages | msgpack_values, max_size=4), st.integers(0, 3), st.integers(0, 127))
def test_random_messages(values: list[Any], mode: int, step: int) -> None:
    fuzz.one_input(bytes([mode, step << 1]) + _frames(values))


@FAST
@given(st.sampled_from(fuzz.seeds()), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_mutated_seeds(seed: bytes, where: int, junk: bytes) -> None:
    i = 2 + where % max(1, len(seed) - 2)
    fuzz.one_input(seed[:i] + junk + seed[i + len(junk) :])
    fuzz.one_input(seed[:i] + junk + seed[i:])


def test_seeds_are_valid_conversations() -> None:
    for seed in fuzz.seeds():
        fuzz.one_input(seed)
    assert sorted(p.name for p in (ROOT / "fuzz" / "corpus").iterdir()) == [
        f"seed-{i}" for i in range(len(fuzz.seeds()))
    ]


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_bounded_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "fuzz" / "corpus", corpus)
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "-max_total_time=3",
            "-timeout=10",
            "-rss_limit_mb=2048",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done" in proc.stderr
