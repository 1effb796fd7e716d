"""A job whose output the container's init captures, against the supervisor's pipes.

Most jobs (no streaming, no interactive stdin, no wired stdio, no warm runtime, an
output cap of at most 64 MiB) are sent with their stdin as bytes, and the init makes
their stdio and sends the output in "exited" (native/init.c, ``watch_captured``;
``Container._hand_captured``). Any other job keeps the supervisor's own pipes. The two
paths must give one result for one run: each case below runs on both, in real
containers, and the results are compared field by field, with the path each took
checked from the init's messages.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest

pytestmark = pytest.mark.root

MiB = 1 << 20
_slot = iter(range(7300, 7400))


async def _run(made, argv: list[str], mode: str, **step):  # type: ignore[no-untyped-def]
    """Run ``argv`` in a new container, its output ``mode``: "captured" by its init;
    "recorded", captured too, with an inline recorder as ``on_output`` (the HTTP front
    door's) given the output in the order the init read it; "pipes", read by the
    supervisor, the recorder called as it reads (a streaming job's path). Returns the
    result and what the recorder saw."""
    from sandboxd.container import RunStep
    from sandboxd.limits import DEFAULT

    slot = next(_slot)
    box = await made.ready_box(slot, f"sandboxd-cap-{slot}")
    exited: list[dict] = []
    recv_nowait = box.chan.recv_nowait

    async def recording():  # type: ignore[no-untyped-def]
        got = await recv_nowait()
        if got is not None and got[0]["t"] == "exited":
            exited.append(got[0])
        return got

    box.chan.recv_nowait = recording  # type: ignore[method-assign]
    chunks: list[tuple[str, bytes]] = []

    async def record(stream: str, data: bytes) -> None:
        chunks.append((stream, data))

    limits = replace(DEFAULT, **step.pop("limits", {}))
    extra = {"captured": {}, "recorded": {"on_output": record, "output_inline": True},
             "pipes": {"on_output": record}}[mode]
    result = await box.run(RunStep(argv=argv, limits=limits, **step, **extra))
    captured = mode != "pipes"
    if captured:
        assert len(exited) == 1 and "stdout" in exited[0], exited
        assert ("order" in exited[0]) == (mode == "recorded"), exited
    else:  # read by the supervisor's own tasks (``_supervise``), not its one-task watch
        assert not exited or "stdout" not in exited[0], exited
    if mode != "captured":  # what the recorder saw is what the result holds
        assert b"".join(d for s, d in chunks if s == "stdout") == result.stdout
        assert b"".join(d for s, d in chunks if s == "stderr") == result.stderr
    await box.destroy()
    return result, chunks


async def _both(made, argv: list[str], **step):  # type: ignore[no-untyped-def]
    """The captured path and the supervisor's pipes, compared; then the recorded one."""
    cap, _ = await _run(made, argv, "captured", **dict(step))
    pipes, _ = await _run(made, argv, "pipes", **dict(step))
    recorded, _ = await _run(made, argv, "recorded", **dict(step))
    fields = ["verdict", "stdout", "stderr", "stdout_truncated", "stderr_truncated"]
    if cap.verdict != "output_limit":  # (cut: the job may have exited before its kill, or not)
        fields += ["exit_code", "signal"]
    for f in fields:
        assert getattr(cap, f) == getattr(pipes, f) == getattr(recorded, f), \
            (f, cap, pipes, recorded)
    return cap


async def test_output_larger_than_a_pipe_and_both_streams(made) -> None:  # type: ignore[no-untyped-def]
    r = await _both(made, ["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a; "
                                            "echo err >&2; exit 3"])
    assert r.verdict == "runtime_error" and r.exit_code == 3
    assert r.stdout == b"a" * 1000000 and r.stderr == b"err\n"


async def test_output_at_the_cap_is_whole_and_one_byte_more_is_output_limit(made) -> None:  # type: ignore[no-untyped-def]
    at = await _both(made, ["/bin/sh", "-c", "head -c 1000 /dev/zero"],
                     limits={"output": 1000})
    assert at.verdict == "ok" and len(at.stdout) == 1000 and not at.stdout_truncated
    over = await _both(made, ["/bin/sh", "-c", "head -c 1001 /dev/zero"],
                       limits={"output": 1000})
    assert over.verdict == "output_limit" and len(over.stdout) == 1000
    assert over.stdout_truncated


async def test_endless_output_is_cut_at_the_cap_and_killed(made) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    r = await _both(made, ["/bin/sh", "-c", "echo e >&2; yes"], limits={"output": 100 << 10})
    assert r.verdict == "output_limit" and r.stdout_truncated
    assert len(r.stdout) == 100 << 10 and set(r.stdout) == set(b"y\n") and r.stderr == b"e\n"
    assert time.monotonic() - t0 < 20  # (the wall limit is 10 s: not what ended either)


async def test_stdin_reaches_the_job_whole(made) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(300 << 10)
    r = await _both(made, ["/bin/cat"], stdin=data)
    assert r.verdict == "ok" and r.stdout == data
    empty = await _both(made, ["/bin/cat"])
    assert empty.verdict == "ok" and empty.stdout == b""


async def test_a_child_holding_stdout_after_the_job_is_killed_not_waited_for(made) -> None:  # type: ignore[no-untyped-def]
    """The job's exit ends the run: what it left behind holding its stdout is killed (by
    the init, in its PID namespace; by the supervisor, in the cgroup), not waited for."""
    t0 = time.monotonic()
    r = await _both(made, ["/bin/sh", "-c", "(sleep 30; echo late) & echo now"])
    assert r.verdict == "ok" and r.stdout == b"now\n"
    assert time.monotonic() - t0 < 10


async def test_time_limits_and_a_reopened_stdout_on_the_init_s_pipes(made) -> None:  # type: ignore[no-untyped-def]
    """The supervisor's watchdog still ends a captured job (CPU, wall), and the pipes the
    init made open again by /dev/stdout for the job user, as the supervisor's do."""
    cpu = await _both(made, ["/bin/sh", "-c", "echo a; while :; do :; done"],
                      limits={"cpu_time": 0.3})
    assert cpu.verdict == "time_limit" and cpu.stdout == b"a\n"
    wall = await _both(made, ["/bin/sleep", "5"], limits={"wall_time": 0.3})
    assert wall.verdict == "time_limit" and wall.wall_time < 3
    reopened = await _both(made, ["/bin/sh", "-c", "echo x > /dev/stdout; echo y > /dev/stderr"])
    assert reopened.verdict == "ok", reopened
    assert reopened.stdout == b"x\n" and reopened.stderr == b"y\n"


async def test_an_inline_recorder_gets_the_streams_in_the_order_they_came(made) -> None:  # type: ignore[no-untyped-def]
    """The HTTP front door's Piston answer (and Judge0's with stderr redirected) merges
    stdout and stderr as they came: from the init's order of reads, as from the
    supervisor's pipes. Writes 50 ms apart, so that the order is the job's."""
    script = ("printf a; sleep 0.05; printf b >&2; sleep 0.05; printf c; sleep 0.05; "
              "printf d >&2; sleep 0.05; printf e")
    want = [("stdout", b"a"), ("stderr", b"b"), ("stdout", b"c"), ("stderr", b"d"),
            ("stdout", b"e")]
    for mode in ("recorded", "pipes"):
        r, chunks = await _run(made, ["/bin/sh", "-c", script], mode)
        assert r.verdict == "ok" and r.stdout == b"ace" and r.stderr == b"bd"
        assert chunks == want, (mode, chunks)


async def test_replay_of_a_cut_order_and_a_bad_one() -> None:
    """Past ORDER_RUNS the init stops recording ("order_cut"): the rest of stdout, then of
    stderr. An order that does not fit the output is the init's fault, typed."""
    from sandboxd.container import _replay
    from sandboxd.result import SandboxError

    got: list[tuple[str, bytes]] = []

    async def record(stream: str, data: bytes) -> None:
        got.append((stream, data))

    run = lambda i, n: bytes([i]) + n.to_bytes(4, "big")  # noqa: E731
    await _replay(record, {"order": run(1, 1) + run(0, 2), "order_cut": 1},
                  bytearray(b"xyzw"), bytearray(b"EF"))
    assert got == [("stderr", b"E"), ("stdout", b"xy"), ("stdout", b"zw"), ("stderr", b"F")]
    with pytest.raises(SandboxError, match="does not fit"):
        await _replay(record, {"order": run(0, 9)}, bytearray(b"x"), bytearray())
    with pytest.raises(SandboxError, match="does not fit"):
        await _replay(record, {"order": run(2, 1)}, bytearray(b"x"), bytearray())
