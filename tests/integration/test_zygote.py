"""The zygote and its fork server as the supervisor uses them (sandboxd/zygote.py).

Real containers, as root: the zygote makes each shape's plan and starts the native
fork server, whose socket it hands to the supervisor's ``ZygoteClient``, which has
every container cloned there directly. What these tests hold it to: a fork server
that dies is replaced inside the next request, and a container whose init died
before its job says so with ``NotHandedOver`` (a step that can go elsewhere).
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterator

import pytest

from sandboxd_testing import leftovers

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture
def zygote_proc() -> Iterator[object]:
    """A zygote started before the test's trio loop (ZygoteClient.aclose ends it)."""
    from sandboxd import zygote

    proc = zygote.start()
    yield proc
    try:
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _fork_servers(zygote_pid: int) -> set[int]:
    found = set()
    for pid in leftovers.descendants(zygote_pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sandboxd-forks":
                    found.add(pid)
        except OSError:
            pass  # gone meanwhile
    return found


def _wait_dead(pidfd: int) -> None:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    assert poller.poll(10_000), "the process did not die"


async def test_a_dead_fork_server_is_replaced_inside_the_next_spawn(zygote_proc) -> None:  # type: ignore[no-untyped-def]
    import trio

    from sandboxd import cgroups, zygote
    from sandboxd.container import Container, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    client = zygote.ZygoteClient(zygote_proc)
    backend = cgroups.open_backend(f"zytest-{os.getpid()}")
    boxes: list[Container] = []
    try:
        for i in range(2):
            spawned = await client.spawn(ContainerSpec(slot=7200 + i, box_size=MiB,
                                                       tmp_size=MiB))
            boxes.append(Container(spawned, backend.create(f"sandboxd-zy-{i}")))
            if i == 0:
                await boxes[0].wait_ready()
                (first,) = _fork_servers(zygote_proc.pid)
                server_fd = os.pidfd_open(first)
                try:
                    signal.pidfd_send_signal(server_fd, signal.SIGKILL)
                    _wait_dead(server_fd)
                finally:
                    os.close(server_fd)
                _wait_dead(boxes[0].pidfd)  # its inits die with it
        await boxes[1].wait_ready()
        (second,) = _fork_servers(zygote_proc.pid)
        assert second != first
        result = await boxes[1].run(RunStep(argv=["/bin/sh", "-c", "echo made"],
                                            limits=DEFAULT, env={"PATH": "/bin"}))
        assert result.verdict == "ok" and result.stdout == b"made\n", result
    finally:
        with trio.CancelScope(shield=True):
            for box in boxes:
                await box.destroy()
            await client.aclose()
            backend.close()


async def test_an_init_gone_before_its_job_is_not_handed_over(zygote_proc) -> None:  # type: ignore[no-untyped-def]
    import trio

    from sandboxd import cgroups, zygote
    from sandboxd.container import Container, NotHandedOver, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.spawn import ContainerSpec

    client = zygote.ZygoteClient(zygote_proc)
    backend = cgroups.open_backend(f"zytest-{os.getpid()}")
    box = None
    try:
        spawned = await client.spawn(ContainerSpec(slot=7210, box_size=MiB, tmp_size=MiB))
        box = Container(spawned, backend.create("sandboxd-zy-gone"))
        await box.wait_ready()
        signal.pidfd_send_signal(box.pidfd, signal.SIGKILL)
        _wait_dead(box.pidfd)
        step = RunStep(argv=["/bin/true"], limits=DEFAULT)
        assert step.retryable
        with pytest.raises(NotHandedOver, match="gone before its job"):
            await box.run(step)
    finally:
        with trio.CancelScope(shield=True):
            if box is not None:
                await box.destroy()
            await client.aclose()
            backend.close()
