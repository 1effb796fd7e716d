"""The native fork server and init (native/init.c) on plans made by hand: what a real plan
never does (a step that fails, a plan that is not one) must come back as a clear error
on the control channel, and leave no process behind.

Real kernel features as root: the fork server clones into new namespaces, the init runs
the operations; nothing here mounts anything on the host (a new mount namespace in a new
user namespace, whose mounts never propagate back).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
from collections.abc import Callable

import pytest
from incontainer import plan_for, production_rules

from sandboxd import channel, slots, spawn
from sandboxd.isolation import identity, initplan, mounts, seccomp
from sandboxd.isolation._libc import MS_BIND
from sandboxd.isolation.mounts import HINT_TABLE, Op

pytestmark = pytest.mark.root


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("sandboxd-test-plan", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def _run_plan(data: bytes, server: spawn.ForkServer | None = None,
              inspect: Callable[[int], None] | None = None) -> dict:
    """Clone one init on ``data`` (a plan) and return its first message; one that is
    ready is given to ``inspect`` (its pid), then killed."""
    own = server is None
    server = server or spawn.ForkServer()
    plan = _memfd(data)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    allocator = slots.SlotAllocator()  # a slot no other container of the host uses
    slot = allocator.take()
    try:
        pid, pidfd = server.clone(identity.IdMap(slot), theirs, plan)
        theirs.close()
        ours.settimeout(10)
        msg, fds = channel.recv(ours)
        for fd in fds:
            os.close(fd)
        if msg.get("t") == "ready":  # a whole container, waiting for a job: not this test's
            try:
                if inspect is not None:
                    inspect(pid)
            finally:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        # The init exits after reporting a failed setup: its pidfd becomes readable.
        assert select.select([pidfd], [], [], 10)[0], "the init did not exit"
        os.close(pidfd)
        return msg
    finally:
        ours.close()
        theirs.close()
        os.close(plan)
        if own:
            server.close()
        allocator.give(slot)


def _plan(ops: list[Op]) -> bytes:
    return initplan.encode(ops=ops, hostname="sandboxd", landlock_rules=None,
                           uid=identity.JOB_UID, gid=identity.JOB_GID,
                           bpf=seccomp.compile_policy())


def test_a_failing_step_names_itself_and_the_hint_for_its_errno():
    hints = f"{HINT_TABLE}EACCES=not this one{HINT_TABLE}ENOENT=the source is gone"
    msg = _run_plan(_plan([Op("mount", ("/nonexistent-sandboxd-source", "/tmp", "", "",
                                        MS_BIND), "'probe step'", hints)]))
    assert msg == {"t": "error", "where": "container setup",
                   "message": "OSError: mount step 'probe step' failed on /tmp: No such file "
                              "or directory. the source is gone"}


def test_a_plain_hint_is_used_as_it_is():
    msg = _run_plan(_plan([Op("chdir", ("/nonexistent-sandboxd-dir",), "'workdir'",
                              "Make it first.")]))
    assert msg["message"].endswith("failed on /nonexistent-sandboxd-dir: No such file or "
                                   "directory. Make it first."), msg


@pytest.mark.parametrize("data", [b"", b"not a plan at all", b"\0" * 64])
def test_what_is_not_a_plan_is_refused(data: bytes):
    msg = _run_plan(data)
    assert msg["t"] == "error" and msg["where"] == "container setup", msg
    assert "plan" in msg["message"], msg


def test_a_truncated_plan_is_refused():
    whole = _plan([Op("mkdirs", ("/tmp/sandboxd-test",))])
    msg = _run_plan(whole[:-40])  # cut inside the seccomp program
    assert msg["t"] == "error" and "corrupt" in msg["message"], msg


def test_the_tests_default_plan_is_production_s():
    """incontainer.py (the seccomp and Landlock tests' runner) runs by default the plan the
    zygote would carry out, byte for byte; its variants change only what they name."""
    spec = spawn.ContainerSpec(slot=0, box_size=1 << 20, tmp_size=1 << 20)
    rebuilt = initplan.encode(ops=mounts.compile_plan(spec.mount_plan(), template=True),
                              hostname=spawn.HOSTNAME, landlock_rules=production_rules(),
                              uid=identity.JOB_UID, gid=identity.JOB_GID,
                              bpf=seccomp.compile_policy())
    assert plan_for(spec) == rebuilt == spawn.plan_bytes(spec)
    assert plan_for(spec, rules=None) != rebuilt


def _mount_points(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


def _in_sys(path: str) -> bool:
    return path == "/sys" or path.startswith("/sys/")


def test_containers_are_made_in_a_namespace_without_sys_and_the_host_keeps_it():
    """Each container's mount namespace is a copy of the fork server's: /sys's mounts (14 of
    this host's 25) were copied and torn down per container for nothing. The fork server
    drops them from a namespace of its own; the host's must not lose them."""
    host = _mount_points("self")
    host_sys = [p for p in host if _in_sys(p)]
    host_rest = [p for p in host if not _in_sys(p)]
    server = spawn.ForkServer()
    try:
        # A whole container made there (production's plan: its /proc mounted, which needs
        # a fully visible one in the fork server's namespace); also, the server has set
        # its namespace up by the time it answers.
        spec = spawn.ContainerSpec(slot=0, box_size=1 << 20, tmp_size=1 << 20)
        msg = _run_plan(spawn.plan_bytes(spec), server)
        assert msg.get("t") == "ready", msg
        assert os.readlink(f"/proc/{server.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        points = _mount_points(server.pid)
        assert "/" in points and "/proc" in points  # a container's /proc needs a visible one
        assert not [p for p in points if _in_sys(p)], points
        # Every other mount of the host is still there to bind from (unless another
        # process of this shared machine unmounted it meanwhile).
        missing = set(host_rest) - set(points)
        assert not missing & set(_mount_points("self")), missing
    finally:
        server.close()
    assert [p for p in _mount_points("self") if _in_sys(p)] == host_sys


def test_a_bind_from_sys_is_refused_by_name():
    plan = mounts.MountPlan(steps=(mounts.Bind("/sys/fs/cgroup", "/cgroup"),))
    with pytest.raises(mounts.MountError, match=r"/sys/fs/cgroup is in /sys"):
        mounts.compile_plan(plan)


def test_a_profile_that_binds_from_sys_is_refused_when_loaded(tmp_path):
    from sandboxd import profiles

    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nrun = ["true"]\nbinds = [["/sys/fs/cgroup", "/cg"]]\n')
    with pytest.raises(profiles.ProfileError, match=r"binds.*/sys/fs/cgroup is in /sys"):
        profiles.load_file(path)


def _mounts(pid: int) -> list[tuple[str, str, str]]:
    """(mount point, options, filesystem type) of each mount of ``pid``'s namespace."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            out.append((fields[4], fields[5], fstype))
    return out


def test_containers_are_copies_of_one_template_whose_proc_shows_no_process():
    """The fork server builds a shape's root once, as host root, in a namespace of its own
    (mounts.compile_plan, template=True), and clones each container from inside it: the
    container's root is that read-only tmpfs with nothing of the host's but its binds, and
    its /proc its own, over the template's, a proc of an emptied PID namespace that shows
    no process (the kernel lets a user namespace mount a proc only where one is fully
    visible). Two containers of one plan: one template."""
    server = spawn.ForkServer()
    seen: list[list[tuple[str, str, str]]] = []
    try:
        spec = spawn.ContainerSpec(slot=0, box_size=1 << 20, tmp_size=1 << 20)
        for _ in range(2):
            msg = _run_plan(spawn.plan_bytes(spec), server, lambda pid: seen.append(_mounts(pid)))
            assert msg.get("t") == "ready", msg
        own = os.readlink(f"/proc/{server.pid}/ns/mnt")
        held = {os.readlink(f"/proc/{server.pid}/fd/{fd}"): fd
                for fd in os.listdir(f"/proc/{server.pid}/fd")
                if os.readlink(f"/proc/{server.pid}/fd/{fd}").startswith("mnt:")}
        templates = [fd for link, fd in held.items() if link != own]
        assert len(templates) == 1, held
        listing = subprocess.run(
            ["nsenter", f"--mount=/proc/{server.pid}/fd/{templates[0]}", "--", "/usr/bin/ls",
             "-a", "/proc"], capture_output=True, text=True, check=True, timeout=30).stdout
        assert "cpuinfo" in listing.split()  # a proc...
        assert not [e for e in listing.split() if e.isdigit()], listing  # ...of no process
    finally:
        server.close()
    for mounts_of_one in seen:
        points = [point for point, _opts, _fs in mounts_of_one]
        root = [(opts, fs) for point, opts, fs in mounts_of_one if point == "/"]
        assert root == [("ro,nosuid,nodev,relatime", "tmpfs")], root
        assert [fs for point, _o, fs in mounts_of_one if point == "/proc"] == ["proc", "proc"]
        assert not [p for p in points if p.startswith(("/sys", "/run", "/mnt", "/tmp/"))], points
        assert {"/box", "/tmp", "/dev/shm", "/usr", "/etc"} <= set(points)


def test_a_template_plan_puts_only_each_container_s_own_mounts_after_its_end():
    spec = spawn.ContainerSpec(slot=0, box_size=1 << 20, tmp_size=1 << 20)
    ops = mounts.compile_plan(spec.mount_plan(), template=True)
    kinds = [op.kind for op in ops]
    end = kinds.index("template_end")
    assert kinds[end - 1] == "pivot" and "hollow_proc" in kinds[:end]
    after = ops[end + 1:]
    mounted = [op.args[1] for op in after if op.kind == "mount"]
    assert mounted[:5] == ["/", "/box", "/tmp", "/dev/shm", "/proc"], mounted
    assert all(m.startswith("/proc") for m in mounted[5:]), mounted  # its masks
    assert after[-1].kind == "chdir"
    classic = [op.kind for op in mounts.compile_plan(spec.mount_plan())]
    assert "template_end" not in classic and "hollow_proc" not in classic
