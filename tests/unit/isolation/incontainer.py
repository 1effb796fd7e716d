"""Run a command in a real container, made the way production makes it (the seccomp and
Landlock tests' runner; conftest.py makes it a fixture).

Production: the zygote compiles a container shape into a plan (mounts, Landlock rules,
the seccomp program, the job's ids: ``spawn.plan_bytes``), the native fork server
clones an init on it, and the native init (native/init.c) applies it; the job process
drops its capabilities and uid, sets no_new_privs, enforces the Landlock ruleset and
installs the seccomp program last, then waits for its job, which
``container.Container`` hands it. ``in_container`` does exactly that, from
``spawn.plan_bytes`` by default; a test that needs another policy (a ``deny_extra``,
Landlock rules of its own, a control without a layer) changes only that element of the
same plan (``initplan.encode``), so what enforces it is still the production init.

``mark_denials`` makes the filter's refusals tell themselves apart: every ``EPERM`` the
program returns becomes ``MARK`` (the same decision tree, only the errno of its return
instructions changed), so that a test can tell the filter's refusal from the kernel's
own ``EPERM`` (the job has no capability, so the kernel refuses many calls by itself).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from sandboxd import slots, spawn
from sandboxd.container import Container, RunStep
from sandboxd.isolation import identity, initplan, landlock, seccomp
from sandboxd.limits import DEFAULT
from sandboxd.result import Result

# An errno no system call returns by itself (errnos end at 133; the filter may return up
# to 4095): in a marked program, the filter's refusals.
MARK = 3999
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ERRNO = 0x00050000  # SECCOMP_RET_ERRNO
ALLOW_ALL = struct.pack("<HBBI", _RET_K, 0, 0, 0x7FFF0000)  # the control: no filter at all


def mark_denials(bpf: bytes) -> bytes:
    """``bpf`` with every ``return ERRNO(EPERM)`` turned into ``return ERRNO(MARK)``."""
    out = bytearray(bpf)
    hits = 0
    for i in range(0, len(out), 8):
        code, jt, jf, k = struct.unpack_from("<HBBI", out, i)
        if code == _RET_K and k == _RET_ERRNO | errno.EPERM:
            struct.pack_into("<HBBI", out, i, code, jt, jf, _RET_ERRNO | MARK)
            hits += 1
    assert hits, "the program has no EPERM return to mark"
    return bytes(out)


_PRODUCTION = object()  # "what spawn.plan_bytes puts there"


def production_rules() -> landlock.Rules | None:
    """The Landlock rules every container gets (spawn.plan_bytes)."""
    return landlock.plan_rules(read_dirs=["/"], write_dirs=spawn.WRITABLE_DIRS,
                               write_files=spawn.WRITABLE_FILES)


def plan_for(spec: spawn.ContainerSpec, *, rules: Any = _PRODUCTION,
             bpf: bytes | None = None, uid: int = identity.JOB_UID,
             gid: int = identity.JOB_GID) -> bytes:
    """The plan production makes for ``spec``, with only the named elements changed."""
    if rules is _PRODUCTION and bpf is None and (uid, gid) == (identity.JOB_UID,
                                                               identity.JOB_GID):
        return spawn.plan_bytes(spec)
    if rules is _PRODUCTION:
        rules = production_rules() if spec.landlock else None
    return initplan.encode(ops=spawn.mount_ops(spec),
                           hostname=spawn.HOSTNAME, landlock_rules=rules, uid=uid, gid=gid,
                           bpf=bpf if bpf is not None else
                           seccomp.compile_policy(spec.seccomp_policy))


def in_container(argv: Sequence[str], *, policy: str = "default",
                 deny_extra: Sequence[str] = (), marked: bool = False,
                 bpf: bytes | None = None, rules: Any = _PRODUCTION,
                 uid: int = identity.JOB_UID, gid: int = identity.JOB_GID,
                 binds: Sequence[tuple[str, str]] = (), files: Mapping[str, bytes] | None = None,
                 env: Mapping[str, str] | None = None, cwd: str = "/box",
                 **limits: Any) -> Result:
    """Run ``argv`` as a job in a fresh container (see the module's docstring).

    ``bpf`` replaces the seccomp program outright (``ALLOW_ALL``: the control);
    otherwise it is ``policy`` narrowed by ``deny_extra``, marked if ``marked``.
    ``rules`` replaces the Landlock rules (None: no Landlock). ``limits`` override
    ``sandboxd.limits.DEFAULT``. A setup failure raises ``SandboxError``.
    """
    if bpf is None and (deny_extra or marked):
        bpf = seccomp.compile_policy(policy, deny_extra=deny_extra)
        if marked:
            bpf = mark_denials(bpf)
    step_limits = dataclasses.replace(DEFAULT, **limits)
    allocator = slots.SlotAllocator()
    slot = allocator.take()
    spec = spawn.ContainerSpec(slot=slot, box_size=step_limits.box_size,
                                   tmp_size=step_limits.tmp_size, seccomp_policy=policy,
                                   extra_binds=tuple(binds))
    plan = plan_for(spec, rules=rules, bpf=bpf, uid=uid, gid=gid)
    from sandboxd import cgroups

    backend = cgroups.open_backend(f"lsm-{os.getpid()}")
    server = spawn.ForkServer()
    plan_fd = os.memfd_create("sandboxd-test-plan", os.MFD_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.write(plan_fd, plan)
        try:
            pid, pidfd = server.clone(identity.IdMap(slot), theirs, plan_fd)
        finally:
            theirs.close()
        cg = backend.create(f"sandboxd-lsm-{os.getpid()}-{slot}")
        step = RunStep(argv=list(argv), limits=step_limits, files=dict(files or {}),
                       env=dict(env or {}), cwd=cwd)
        return trio.run(_run, spawn.Spawned(pid, pidfd, ours), cg, step)
    finally:
        ours.close()
        os.close(plan_fd)
        server.close()
        backend.close()
        allocator.give(slot)


async def _run(spawned: spawn.Spawned, cg: Any, step: RunStep) -> Result:
    box = Container(spawned, cg)
    try:
        await box.wait_ready()
        return await box.run(step)
    finally:
        await box.destroy()




Runner = Callable[..., Result]
