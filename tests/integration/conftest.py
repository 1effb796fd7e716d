"""Fixtures the integration tests share."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


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


@dataclass
class Made:
    """What ``made`` gives a test: the supervisor's zygote client, a cgroup backend, and
    the containers the test makes (``boxes``), each destroyed afterwards."""

    client: Any
    backend: Any
    boxes: list[Any] = field(default_factory=list)

    async def ready_box(self, slot: int, name: str) -> Any:
        """A small container (1 MiB /box and /tmp) in ``slot`` and a cgroup ``name``, made
        as the pool makes one, kept in ``boxes`` and ready for its job."""
        from sandboxd.container import Container
        from sandboxd.spawn import ContainerSpec

        box = Container(await self.client.spawn(ContainerSpec(slot=slot, box_size=1 << 20,
                                                              tmp_size=1 << 20)),
                        self.backend.create(name))
        self.boxes.append(box)
        await box.wait_ready()
        return box


@pytest.fixture
async def made(zygote_proc: object) -> AsyncIterator[Made]:
    """Containers made as the pool makes them (``ZygoteClient.spawn``), outside a daemon;
    afterwards every box is destroyed, the client closed (the zygote and its fork server
    exit) and the backend's cgroups removed, even when the test failed."""
    import trio

    from sandboxd import cgroups, zygote

    m = Made(zygote.ZygoteClient(zygote_proc), cgroups.open_backend(f"made-{os.getpid()}"))
    try:
        yield m
    finally:
        with trio.CancelScope(shield=True):
            for box in m.boxes:
                await box.destroy()
            await m.client.aclose()
            m.backend.close()
