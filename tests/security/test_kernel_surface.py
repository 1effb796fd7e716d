"""Kernel surface: the system calls a job must never make, tried through the daemon.

Keyrings, bpf, perf, userfaultfd, io_uring, kexec, modules, reboot, swap, acct,
the clock, the hostname, real-time scheduling, and the i386 and x32 ABIs. The
seccomp allow-list refuses the calls with EPERM before the kernel looks at
them, so try_syscall.c makes each with all-zero arguments, which would be
harmless (EFAULT, EINVAL, a no-op) even if a call got through; the test then
sees a result other than EPERM and names the call. A last sweep tries every
call in seccomp.NEVER_ALLOWED.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pyseccomp
import pytest
from attacks import AttackDaemon, lines_of

from sandboxd.isolation import seccomp

pytestmark = pytest.mark.root

FAMILIES = {
    "keyrings": ("keyctl", "add_key", "request_key"),
    "bpf": ("bpf",),
    "perf": ("perf_event_open",),
    "userfaultfd": ("userfaultfd",),
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "kexec": ("kexec_load", "kexec_file_load"),
    "modules": ("init_module", "finit_module", "delete_module"),
    "reboot": ("reboot",),
    "swap": ("swapon", "swapoff"),
    "acct": ("acct",),
    "clock": ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex"),
    "hostname": ("sethostname", "setdomainname"),
}


def _nr(name: str) -> int:
    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert nr >= 0, name
    return int(nr)


def try_calls(ad: AttackDaemon, probes: dict[str, Path], names: tuple[str, ...]) -> dict[str,
                                                                                          str]:
    """{name: "ret=R errno=E"} for each call, made once with zero arguments, in one job."""
    script = "".join(f"echo {name} $(./try_syscall {_nr(name)})\n" for name in names)
    exe = probes["try_syscall"]
    step = ad.run("bash", {"main.sh": script.encode(), exe.name: exe.read_bytes()})
    assert step.verdict == "ok", step
    return {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines_of(step)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dangerous_calls_are_refused(attack_daemon: AttackDaemon, probes: dict[str, Path],
                                     family: str) -> None:
    host_name = socket.gethostname()
    got = try_calls(attack_daemon, probes, FAMILIES[family])
    for name in FAMILIES[family]:
        assert got[name] == f"ret=-1 errno={errno.EPERM}", (name, got[name])
    assert socket.gethostname() == host_name


def test_every_never_allowed_call_is_refused(attack_daemon: AttackDaemon,
                                             probes: dict[str, Path]) -> None:
    names = tuple(sorted(set(seccomp.NEVER_ALLOWED) - {"clone3"}))
    got = try_calls(attack_daemon, probes, names)
    wrong = {n: r for n, r in got.items() if r != f"ret=-1 errno={errno.EPERM}"}
    assert not wrong, wrong
    assert len(got) == len(names)


REALTIME = """
import ctypes, errno, os
def attempt(name, f):
    try:
        f()
        print(name, 'ALLOWED')
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
libc = ctypes.CDLL(None, use_errno=True)
def setattr_deadline():
    # struct sched_attr (56 bytes): u32 size, u32 policy, u64 flags, s32 nice,
    # u32 priority, u64 runtime, u64 deadline, u64 period
    attr = (ctypes.c_uint8 * 56)()
    ctypes.memmove(attr, (56).to_bytes(4, 'little') + (6).to_bytes(4, 'little'), 8)
    for off, ns in ((24, 10_000_000), (32, 30_000_000), (40, 30_000_000)):
        ctypes.memmove(ctypes.addressof(attr) + off, ns.to_bytes(8, 'little'), 8)
    if libc.syscall(314, 0, attr, 0) != 0:  # sched_setattr, SCHED_DEADLINE
        raise OSError(ctypes.get_errno(), 'sched_setattr')
def ioprio_rt():
    if libc.syscall(251, 1, 0, (1 << 13) | 0) != 0:  # ioprio_set(PROCESS, self, RT class)
        raise OSError(ctypes.get_errno(), 'ioprio_set')
attempt('fifo', lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)))
attempt('rr', lambda: os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)))
attempt('deadline', setattr_deadline)
attempt('nice', lambda: os.setpriority(os.PRIO_PROCESS, 0, -5))
attempt('ioprio-rt', ioprio_rt)
import resource
print('rtprio-limit', *resource.getrlimit(resource.RLIMIT_RTPRIO))
"""


def test_real_time_scheduling_is_refused(attack_daemon: AttackDaemon,
                                         warm_and_plain: str) -> None:
    """SCHED_FIFO, SCHED_RR and SCHED_DEADLINE, a negative nice and the real-time I/O
    class would let a job starve the host's CPUs or disks despite its cgroup: the job
    has no CAP_SYS_NICE, and RLIMIT_RTPRIO is 0."""
    step = attack_daemon.run("python3", {"main.py": REALTIME.encode()})
    assert step.verdict == "ok", step
    got = dict(line.split(None, 1) for line in lines_of(step))
    assert got == {"fifo": "EPERM", "rr": "EPERM", "deadline": "EPERM", "nice": "EACCES",
                   "ioprio-rt": "EPERM", "rtprio-limit": "0 0"}, got


@pytest.mark.parametrize("abi", ["i386", "x32", "thread-i386"])
def test_foreign_system_call_abis_kill_the_process(attack_daemon: AttackDaemon,
                                                   probes: dict[str, Path], abi: str) -> None:
    """The 32-bit entry (int 0x80) and x32 calls bypass a filter written for x86_64
    numbers unless the filter checks the ABI: here they kill the whole process (SIGSYS),
    from a second thread too."""
    step = attack_daemon.probe(probes["foreign_arch"], abi)
    assert step.verdict == "runtime_error" and step.signal == 31, step
    assert b"ret=" not in step.stdout and b"survived" not in step.stdout, step
    native = attack_daemon.probe(probes["foreign_arch"], "native")
    assert native.verdict == "ok" and native.stdout.startswith(b"ret="), native
