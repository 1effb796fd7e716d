"""Host uids are unique per host, not per process (sandboxd/slots.py).

Each container's host uids come from its slot; two daemons and ``run-once`` on
one host take slots from one lock file, so no two live containers ever share a
uid. The attack: this test locks every slot of the host but a small window
(the same lock file, through a descriptor of its own), so that two daemons and
a stream of ``run-once`` processes must all share a few slots at once; while
their jobs run, it reads the uid and PID namespace of every process below
them, over and over, and asserts that no slot is used by two containers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

import sandboxd_protocol as proto
from sandboxd import slots
from sandboxd.isolation import identity
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

WINDOW = range(4200, 4216)  # the only slots this test leaves free


def test_two_allocators_never_share_a_slot_and_a_killed_owner_frees_its_own():
    """Two open file descriptions of the lock file stand for two processes; then a real
    child process that holds slots is SIGKILLed, and its slots are free at once."""
    a = slots.SlotAllocator(locks=slots.SlotLocks(), start=9000)
    b = slots.SlotAllocator(locks=slots.SlotLocks(), start=9000)
    taken_a = [a.take() for _ in range(5)]
    taken_b = [b.take() for _ in range(5)]
    assert not set(taken_a) & set(taken_b)
    assert taken_b[0] == taken_a[-1] + 1  # b skipped what a holds
    a.give(taken_a[0])
    assert b.locks.try_lock(taken_a[0])  # given back: free for anyone
    b.locks.unlock(taken_a[0])
    a.locks.close()
    b.locks.close()

    code = ("import json, sys, time; from sandboxd import slots\n"
            "s = slots.SlotAllocator(start=9100)\n"
            "print(json.dumps([s.take() for _ in range(3)]), flush=True)\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        held = json.loads(child.stdout.readline())
        assert held == [9100, 9101, 9102]
        probe = slots.SlotLocks()
        assert not any(probe.try_lock(s) for s in held)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert all(probe.try_lock(s) for s in held)
    probe.close()


def _container_slots(roots: list[int]) -> dict[int, set[str]]:
    """slot -> PID namespaces of the live (not zombie) container processes below ``roots``."""
    found: dict[int, set[str]] = defaultdict(set)
    pids: set[int] = set()
    for root in roots:
        pids |= leftovers.descendants(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines()
                              if ":" in line)
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue  # gone meanwhile
        if status["State"].split()[0] in ("Z", "X"):
            continue
        uid = int(status["Uid"].split()[0])
        for base in (identity.INIT_BASE, identity.JOB_BASE):
            if base <= uid < base + identity.MAX_SLOTS:
                found[uid - base].add(ns)
    return found


@pytest.mark.slow
def test_two_daemons_and_run_once_never_share_a_host_uid(tmp_path: Path):
    hold = slots.SlotLocks()  # every slot but the window is "another process's"
    # Slot by slot: on a shared host other daemons hold some already (theirs are just as
    # out of our daemons' reach); the window must be free of them.
    assert hold.try_lock(WINDOW.start, len(WINDOW)), "the window's slots are in use here"
    hold.unlock(WINDOW.start, len(WINDOW))
    held = {s for s in (*range(WINDOW.start), *range(WINDOW.stop, identity.MAX_SLOTS))
            if hold.try_lock(s)}
    assert len(held) > identity.MAX_SLOTS // 2
    stop = threading.Event()
    errors: list[BaseException] = []
    once_pids: list[int] = []
    once_results: list[dict] = []
    done = defaultdict(int)

    def jobs(d: Daemon, tag: str) -> None:
        try:
            c = d.connect()
            n = 0
            while not stop.is_set():
                n += 1
                r = c.run(f"{tag}-{n}", files={"main.sh": b"sleep 0.2; id -u"})
                assert r.steps[0].verdict == "ok", r
                done[tag] += 1
            c.close()
        except BaseException as e:
            errors.append(e)

    def run_once_loop() -> None:
        try:
            while not stop.is_set():
                p = subprocess.Popen([sys.executable, "-m", "sandboxd", "run-once", "--json",
                                      "--", "sh", "-c", "sleep 0.3"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                once_pids.append(p.pid)
                out, err = p.communicate(timeout=60)
                once_results.append({"rc": p.returncode, "out": out, "err": err[-2000:]})
                assert p.returncode == 0, once_results[-1]
                done["once"] += 1
        except BaseException as e:
            errors.append(e)

    seen: set[int] = set()
    containers: set[str] = set()
    samples = 0
    try:
        with Daemon(tmp_path, pool_profiles=["bash"], pool_size=2) as d1, \
                Daemon(tmp_path, pool_profiles=["bash"], pool_size=2) as d2:
            threads = [threading.Thread(target=jobs, args=(d, f"{name}{i}"))
                       for d, name in ((d1, "a"), (d2, "b")) for i in range(2)]
            threads.append(threading.Thread(target=run_once_loop))
            for t in threads:
                t.start()
            deadline = time.monotonic() + 8
            try:
                while time.monotonic() < deadline and not errors:
                    roots = [d1.proc.pid, d2.proc.pid, *once_pids[-2:]]
                    by_slot = _container_slots(roots)
                    samples += 1
                    for slot, namespaces in by_slot.items():
                        assert len(namespaces) == 1, f"slot {slot} in {namespaces}"
                        seen.add(slot)
                        containers |= namespaces
            finally:
                stop.set()
                for t in threads:
                    t.join(90)
            assert not errors, errors
            assert isinstance(d1.stats(), proto.ServerStats)
    finally:
        hold.close()
    print(f"\n{samples} samples, {len(containers)} containers on slots {sorted(seen)}, "
          f"jobs done {dict(done)}")
    assert not seen & held, "a process used a slot another one held"
    assert set(seen) & set(WINDOW)
    assert done["once"] >= 2 and all(done[t] >= 2 for t in ("a0", "a1", "b0", "b1")), done
    assert len(containers) > len(WINDOW)  # slots were reused across processes meanwhile
