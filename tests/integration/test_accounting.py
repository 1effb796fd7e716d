"""Accounting and limits against programs whose true cost we know (issue: core isolation).

Each probe's cost is fixed by construction (burn: CPU seconds by its own CPU
clock; touch: MiB written page by page; flood: bytes written), so the figures
sandboxd reports can be held to tight bounds. These exercise cgroups, so they
also run in the cgroup v2 VM.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

MiB = 1 << 20


# Under the emulated cgroup v2 VM (V2VM=1, TCG: 10-100x slower) the supervisor's watchdog
# and the kill run that much slower while the job keeps burning CPU, and the guest's clocks
# drift: there, the bounds below widen. On real hardware they are the issue's own bounds.
# In the VM the probe's own thread clock (how it decides it has burned 0.5 s) runs ahead
# of the scheduler's accounting: the cgroup read 0.379-0.474 s there, under host load,
# while it matched the probe's getrusage (checked below, everywhere) and the kernel's
# schedstat (tests/unit/cgroups). So in the VM the absolute bound tests the emulator's
# clocks, not sandboxd: there it only asks for most of the work.
IN_VM = bool(os.environ.get("V2VM"))
LOW = 0.25 if IN_VM else 0.475  # for 0.5 s of work: the bound is ±5 % off the VM
OVERSHOOT = 0.25 if IN_VM else 0.05  # CPU past a limit before the kill, fraction of limit
STARTUP_CPU = 0.5 if IN_VM else 0.1  # CPU of `sleep` starting up


def test_half_second_of_cpu_is_ok_and_exact(run_once, probes):
    r = run_once(["./burn", "0.5"], files={"burn": probes["burn"]}, cpu_time=1)
    assert r["verdict"] == "ok", r
    assert r["exit_code"] == 0
    # The kernel's own account of the probe's work (getrusage from main() to exit): the
    # cgroup holds it and a little more (exec, dynamic loading, exit), never less.
    rusage = float(r["stdout"].split("rusage")[1])
    # Off the VM, 10 ms; in it, the emulated guest's clock keeps running while the host
    # deschedules it, and charges a running task for that: 0.135 s once, with the host busy.
    assert rusage <= r["cpu_time"] <= rusage + (0.25 if IN_VM else 0.01), (rusage, r)
    assert LOW <= r["cpu_time"] <= 0.525, r["cpu_time"]
    assert r["user_time"] > r["sys_time"]  # a busy loop: mostly user time
    assert abs(r["user_time"] + r["sys_time"] - r["cpu_time"]) < 0.005


def test_cpu_limit_stops_within_a_few_ms(run_once, probes):
    r = run_once(["./burn", "1.5"], files={"burn": probes["burn"]}, cpu_time=1, wall_time=10)
    assert r["verdict"] == "time_limit", r
    assert r["reason"] == "cpu"
    assert 1.0 <= r["cpu_time"] <= 1.0 + OVERSHOOT, r["cpu_time"]
    assert r["_exit"] == 124


def test_threads_cpu_adds_up(run_once, probes):
    r = run_once(["./burn", "0.2", "4"], files={"burn": probes["burn"]}, cpu_time=2)
    assert r["verdict"] == "ok", r
    # Four threads' work is all in the cgroup: the kernel's own account of the probe, and
    # a little more, never less. The absolute bound is the (±5 %) on real
    # hardware. In the emulated VM the clocks disagree both ways with four threads on
    # two emulated CPUs: the cgroup read 0.744-0.755 s in one CI run (the threads' own
    # clocks ahead of it), 0.805 s against a getrusage of 0.691 s in another (the
    # tick-sampled user/system split behind), 0.886 s in a third: there, only a rough
    # agreement is asked.
    rusage = float(r["stdout"].split("rusage")[1])
    if IN_VM:
        assert abs(r["cpu_time"] - rusage) <= 0.15, (rusage, r)
    else:
        assert rusage <= r["cpu_time"] <= rusage + 0.01, (rusage, r)
    # In the VM: 0.4-1.2 s, which still tells four threads counted from two or fewer.
    assert 4 * 0.2 * LOW / 0.5 <= r["cpu_time"] <= (1.2 if IN_VM else 0.84), r["cpu_time"]


def test_wall_limit(run_once):
    r = run_once(["sleep", "10"], wall_time=1)
    assert r["verdict"] == "time_limit", r
    assert r["reason"] == "wall"
    assert 1.0 <= r["wall_time"] <= 1.1, r["wall_time"]
    assert r["cpu_time"] < STARTUP_CPU


def test_memory_peak_of_known_workload(run_once, probes):
    r = run_once(["./touch", "200"], files={"touch": probes["touch"]}, memory="256M")
    assert r["verdict"] == "ok", r
    assert 200 * MiB <= r["memory_peak"] <= 230 * MiB, r["memory_peak"] / MiB
    assert r["oom_killed"] is False


def test_memory_limit(run_once, probes):
    r = run_once(["./touch", "300"], files={"touch": probes["touch"]}, memory="256M")
    assert r["verdict"] == "memory_limit", r
    assert r["oom_killed"] is True
    assert r["_exit"] == 137


def test_output_limit_keeps_exactly_the_cap(run_once, probes):
    r = run_once(["./flood", str(10**9)], files={"flood": probes["flood"]}, output="1M",
                 wall_time=20)
    assert r["verdict"] == "output_limit", r
    assert r["stdout_truncated"] is True
    assert len(r["stdout"]) == MiB
    assert set(r["stdout"]) == {"x"}


def test_stderr_is_captured_separately(run_once):
    r = run_once(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r["verdict"] == "runtime_error"
    assert r["exit_code"] == 3
    assert r["stdout"] == "out\n" and r["stderr"] == "err\n"
    assert r["_exit"] == 3


def test_signal_is_reported(run_once):
    r = run_once(["sh", "-c", "kill -SEGV $$"])
    assert r["verdict"] == "runtime_error"
    assert r["signal"] == 11 and r["exit_code"] is None
    assert r["_exit"] == 128 + 11


def test_stdin_and_files(run_once):
    r = run_once(["sh", "-c", "cat data.txt; cat; ls -l sub/x"],
                 files={"data.txt": b"from a file\n", "sub/x": b"nested"}, stdin=b"from stdin\n")
    assert r["verdict"] == "ok", r
    assert r["stdout"].startswith("from a file\nfrom stdin\n")
    assert "sandbox" in r["stdout"]  # owned by the job user


@pytest.mark.slow
def test_fork_bomb_is_contained(run_once, probes):
    r = run_once(["./forkbomb", "4"], files={"forkbomb": probes["forkbomb"]}, pids=32,
                 wall_time=2, cpu_time=10)
    assert r["verdict"] == "time_limit", r
    assert r["reason"] == "wall"
    # the autouse leftovers fixture proves the whole tree is gone


def test_setsid_daemon_does_not_outlive_the_job(run_once):
    r = run_once(["sh", "-c", "setsid sh -c 'sleep 60' </dev/null >/dev/null 2>&1 & echo started"])
    assert r["verdict"] == "ok", r
    assert r["stdout"] == "started\n"


def test_sigterm_ignored_still_killed_at_cpu_limit(run_once):
    prog = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass\n"
    r = run_once(["python3", "-c", prog], cpu_time=0.5)
    assert r["verdict"] == "time_limit" and r["reason"] == "cpu", r
    assert 0.5 <= r["cpu_time"] <= 0.5 * (1 + OVERSHOOT)


def test_self_stopped_process_killed_at_wall_limit(run_once):
    r = run_once(["sh", "-c", "kill -STOP $$; echo never"], wall_time=1)
    assert r["verdict"] == "time_limit" and r["reason"] == "wall", r
    assert "never" not in r["stdout"]


def test_missing_command_is_runtime_error_127(run_once):
    r = run_once(["/no/such/program"])
    assert r["verdict"] == "runtime_error"
    assert r["exit_code"] == 127
    assert r["stderr"] == "sandboxd: program not found: /no/such/program\n"
