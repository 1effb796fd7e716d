"""``bench/run --quick`` still runs end to end and writes its four files.

A smoke check of every code path of the benchmark suite (peers set up and
put away, the daemons, the tables and plots), not a measurement: nothing
here asserts a timing, since CI machines are shared and noisy. The suite
leaving a cgroup, mount or process behind fails the test (conftest's
leftovers check).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "run"


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run may install the peers and matplotlib
def test_quick_run_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([str(RUN), "--quick", "--out", str(out)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=880)
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    for key in ("machine", "latency_s", "throughput_jobs_s", "costs", "judge_s", "targets",
                "isolation", "cpu_spread_s"):
        assert key in results, key
    assert results["machine"]["cores"] >= 1 and results["machine"]["cgroup"]
    for system in ("bare", "sandboxd-warm", "sandboxd-cold"):
        for cmd in ("true", "py", "hello"):
            assert results["latency_s"][system][cmd], (system, cmd)
    # The cold start's tail: its own samples of sandboxd cold and bubblewrap, and a target.
    assert len(results["cold_tail_s"]["sandboxd-cold"]) == len(results["cold_tail_s"]["bwrap"])
    assert results["cold_tail_s"]["sandboxd-cold"]
    assert any(t["target"].startswith("cold p99 within 2x") for t in results["targets"])
    assert results["judge_s"]["sandboxd-warm"]
    assert results["cpu_spread_s"]["sandboxd-warm"] and results["cpu_spread_s"]["bare"]
    assert results["costs"]["protocol_us_per_job"]
    for door in ("msgpack", "v1", "judge0", "piston"):
        for program in ("py", "c"):
            assert results["http"]["latency_s"][door][program], (door, program)
            # Every door reports the job's time in the sandbox, taken out of the latency
            # for the net excess: a compile and a run for C, less than the whole latency.
            inside = results["http"]["in_sandbox_s"][door][program]
            assert len(inside) == len(results["http"]["latency_s"][door][program])
            assert all(0 < w < t for w, t in zip(inside, results["http"]["latency_s"][door]
                                                 [program], strict=True)), (door, program)
        assert results["http"]["throughput_jobs_s"][door]["py"]["32"], door
    for path in ("local", "cluster"):
        assert results["cluster"]["latency_s"][path], path
    for name in ("local", "cluster-1-node", "cluster-2-nodes"):
        assert results["cluster"]["throughput_jobs_s"][name]["8"], name
    assert results["cluster"]["redis_cpu_per_job_s"]["cluster-1-node"]

    md = (out / "results.md").read_text()
    assert "## Latency per job" in md and "## Targets" in md
    assert "## The cold start's tail" in md
    assert "## The HTTP front door against the msgpack socket" in md
    assert "## The cluster path against the local socket" in md
    for png in ("latency.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_judge_runs_end_to_end(tmp_path: Path) -> None:
    """bench/bench_judge.py on 3 tests and one round: both systems judge every test
    (a wrong verdict anywhere raises), and the report has every figure."""
    script = RUN.parent / "bench_judge.py"
    report = tmp_path / "judge.json"
    proc = subprocess.run([sys.executable, str(script),
                           "--rounds", "1", "--tests", "3", "--json", str(report)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(report.read_text())
    assert set(r["median_s"]) == {"sandboxd_cold", "sandboxd_cached", "bwrap"}
    assert r["program_cache_hits"] >= 1


def test_bench_seccomp_loads_both_programs(tmp_path: Path) -> None:
    """bench/bench_seccomp.py builds its C loop and loads each program in real children
    (a program the kernel refused would fail a child, and the script); no timing is
    asserted, only what it measured."""
    script = RUN.parent / "bench_seccomp.py"
    report = tmp_path / "seccomp.json"
    proc = subprocess.run([sys.executable, str(script), "--children", "20", "--rounds", "1",
                           "--json", str(report)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(report.read_text())["summary"]
    assert summary["none"]["instructions"] == 0
    assert 0 < summary["sandboxd"]["instructions"] < summary["libseccomp"]["instructions"]
