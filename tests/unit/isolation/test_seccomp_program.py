"""Our own seccomp program against libseccomp's, decision for decision.

The job's filter is assembled by sandboxd (seccomp._assemble: ~120 instructions, where
libseccomp's is ~420, and the kernel checks and JIT-compiles each one at every job's load).
libseccomp's program for the same policy is the reference: both run here in a BPF
interpreter (sandboxd_testing/bpf.py) on every system call number below 1,024 and around
the x32 bit, on foreign architectures, and, for the calls whose arguments are checked, on
each allowed value, every one-bit change of it in either 32-bit half, and the values at
the edges. test_seccomp.py then runs the program itself in the kernel, as production loads
it, with every other layer on.
"""

from __future__ import annotations

import errno
import functools

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from sandboxd.isolation import seccomp
from sandboxd_testing.bpf import run, seccomp_data

X86_64 = seccomp.AUDIT_ARCH_X86_64
FOREIGN = (0x40000003, 0xC00000B7, 0x0, 0xFFFFFFFF, X86_64 ^ 1)  # i386, aarch64, nonsense
X32 = seccomp.X32_SYSCALL_BIT
NUMBERS = (*range(1024), *range(X32, X32 + 600, 7), X32 - 1, 0x7FFFFFFF, 0x80000000,
           0xFFFFFFFE, 0xFFFFFFFF)


def _arguments(alts: tuple[tuple[int, int, int], ...]) -> list[tuple[int, ...]]:
    """Argument vectors that probe a checked call: each allowed value, each one-bit change
    of it, the edges; the other arguments all ones, which no rule may look at."""
    values = {0, 1, 0xFFFFFFFF, 1 << 32, (1 << 64) - 1, 0xFFFFFFFF << 32}
    for _arg, mask, value in alts:
        values.update({value, mask, value | (1 << 32), value | ~mask & ((1 << 64) - 1)})
        values.update(value ^ (1 << b) for b in range(64))
    out = []
    for arg in {a for a, _, _ in alts}:
        for v in sorted(values):
            args = [(1 << 64) - 1] * 6
            args[arg] = v
            out.append(tuple(args))
    return out


def _compare(ours: bytes, theirs: bytes, conditions: dict, archs: tuple[int, ...]) -> int:
    checked = 0
    for arch in archs:
        for nr in NUMBERS:
            data = seccomp_data(nr, arch)
            assert run(ours, data) == run(theirs, data), (hex(arch), nr)
            checked += 1
    for nr, alts in conditions.items():
        for args in _arguments(alts):
            data = seccomp_data(nr, X86_64, args)
            assert run(ours, data) == run(theirs, data), (nr, [hex(a) for a in args])
            checked += 1
    return checked


@functools.cache
def _conditions(policy: str, deny: frozenset[str] = frozenset()) -> dict:
    return seccomp._policy(policy, deny)[1]


@pytest.mark.parametrize("policy", sorted(seccomp.POLICIES))
def test_our_program_decides_as_libseccomp_s(policy: str) -> None:
    ours = seccomp.compile_policy(policy)
    theirs = seccomp.libseccomp_program(policy)
    assert ours != theirs
    n = _compare(ours, theirs, _conditions(policy), (X86_64, *FOREIGN))
    assert n > 7000


@pytest.mark.parametrize("policy", sorted(seccomp.POLICIES))
def test_the_decisions_are_the_policy_s(policy: str) -> None:
    """Not only equal to libseccomp's: right, for the calls whose decision is known."""
    prog = seccomp.compile_policy(policy)
    nr = seccomp._resolve
    allow, eperm = seccomp.RET_ALLOW, seccomp.RET_ERRNO | errno.EPERM
    assert run(prog, seccomp_data(nr("read"), X86_64)) == allow
    assert run(prog, seccomp_data(nr("ptrace"), X86_64)) == eperm
    assert run(prog, seccomp_data(nr("clone3"), X86_64)) == seccomp.RET_ERRNO | errno.ENOSYS
    assert run(prog, seccomp_data(nr("read"), 0x40000003)) == seccomp.RET_KILL_PROCESS
    assert run(prog, seccomp_data(X32 | nr("read"), X86_64)) == seccomp.RET_KILL_PROCESS
    assert run(prog, seccomp_data(1023, X86_64)) == eperm
    clone = nr("clone")
    assert run(prog, seccomp_data(clone, X86_64, (0x11 | 0x100,))) == allow  # fork-like
    assert run(prog, seccomp_data(clone, X86_64, (0x10000000,))) == eperm  # CLONE_NEWUSER
    unix = run(prog, seccomp_data(nr("socket"), X86_64, (1,)))
    assert unix == (allow if policy == "default" else eperm)
    assert run(prog, seccomp_data(nr("socket"), X86_64, (17,))) == eperm  # AF_PACKET
    assert run(prog, seccomp_data(nr("socket"), X86_64, (1 | 1 << 32,))) == eperm
    assert run(prog, seccomp_data(nr("socketpair"), X86_64, (1,))) == allow
    assert run(prog, seccomp_data(nr("mknod"), X86_64, (0, 0o010644))) == allow  # a FIFO
    assert run(prog, seccomp_data(nr("mknod"), X86_64, (0, 0o020644))) == eperm  # a char dev


def test_it_is_a_fraction_of_libseccomp_s() -> None:
    """The point of assembling it ourselves: the kernel's work at each load is per
    instruction."""
    ours, theirs = seccomp.compile_policy("default"), seccomp.libseccomp_program("default")
    assert len(ours) // 8 <= 160 < len(theirs) // 8


_NAMES = sorted(seccomp.allowed_syscalls("default") | {"clone3"})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deny=st.frozensets(st.sampled_from(_NAMES), max_size=40),
       policy=st.sampled_from(sorted(seccomp.POLICIES)))
def test_any_narrowing_decides_as_libseccomp_s(policy: str, deny: frozenset[str]) -> None:
    ours = seccomp._compile(policy, deny)
    theirs = seccomp.libseccomp_program(policy, deny_extra=deny)
    _compare(ours, theirs, _conditions(policy, deny), (X86_64, 0x40000003))


def test_every_call_denied_still_makes_a_program() -> None:
    """The degenerate end: nothing allowed but what cannot be taken away."""
    deny = frozenset(_NAMES)
    ours = seccomp._compile("default", deny)
    theirs = seccomp.libseccomp_program("default", deny_extra=deny)
    _compare(ours, theirs, {}, (X86_64,))
    assert run(ours, seccomp_data(0, X86_64)) == seccomp.RET_ERRNO | errno.EPERM
