"""``sandboxd run-once``: one job in one fresh container, no daemon. For debugging and tests.

Strategy: the same pieces the daemon uses, in the order the daemon uses them,
in one process: the container is spawned *before* trio starts (this process
acts as its own zygote: it is single-threaded until then), then trio runs the
same ``container.Container`` the supervisor runs. Whatever happens, the
container, its cgroup and our cgroup root are removed before we exit.

The container's slot (its host uids) is locked host-wide like a daemon's
(slots.py): taken before the container is made, held by this process until
it exits, after the container is destroyed (or dies with this process).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import trio

from sandboxd import cgroups, slots
from sandboxd.container import Container, RunStep
from sandboxd.result import Result, SandboxError
from sandboxd.spawn import ContainerSpec, spawn


@dataclass(slots=True)
class OneOffJob:
    """A step and the container it asks for, for ``run_once`` (``sandboxd run-once``)."""

    step: RunStep
    seccomp_policy: str = "default"
    landlock: bool = True
    image: str = ""  # an image id (resolved from its name by the caller), "" = host root
    image_store: str = ""


def run_once(job: OneOffJob) -> Result:
    """Run one step in one fresh container; our own failures become ``sandbox_error``."""
    limits = job.step.limits
    backend = cgroups.open_backend(f"once-{os.getpid()}")
    spawned = None
    try:
        cg = backend.create(f"sandboxd-job-{os.getpid()}")
        spec = ContainerSpec(slot=slots.SlotAllocator().take(), box_size=limits.box_size,
                             tmp_size=limits.tmp_size, seccomp_policy=job.seccomp_policy,
                             landlock=job.landlock, image=job.image,
                             image_store=job.image_store)
        # SIGCHLD at its default: the native fork server is our child, reaped at exit.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        spawned = spawn(spec)
        return trio.run(_run, spawned, cg, job.step)
    except SandboxError as e:
        return Result.sandbox_error(e.reason)
    except OSError as e:
        return Result.sandbox_error(f"{e}")
    finally:
        backend.close()


async def _run(spawned, cg, step: RunStep) -> Result:  # type: ignore[no-untyped-def]
    box = Container(spawned, cg)
    try:
        await box.wait_ready()
        return await box.run(step)
    finally:
        await box.destroy()
