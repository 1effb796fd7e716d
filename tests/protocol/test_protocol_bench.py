"""The protocol benchmark still runs (its figure is reported by hand, not asserted here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_protocol.py"


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_protocol", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--jobs", "50", "--repeat", "1"]) == 0
    assert "µs per job" in capsys.readouterr().out
