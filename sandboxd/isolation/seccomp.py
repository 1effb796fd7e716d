"""The job's seccomp policy: an allow-list compiled once, installed with one system call.

Strategy: like Docker's default profile, but stricter. The filter lists the
system calls that ordinary programs (C/C++/Rust binaries, Python, the JVM,
Node, Go, shells, gcc) make; everything else fails with ``EPERM``. An
allow-list rather than a deny-list so that a system call the kernel gains next
year is refused until someone decides it is safe. ``clone3`` fails with
``ENOSYS`` because its flags live in memory a filter cannot read; libc then
falls back to ``clone``, whose flags sit in a register and are checked (no
``CLONE_NEW*``). Only the native architecture is in the filter: an i386
(``int 0x80``) or x32 system call kills the whole process with ``SIGSYS``,
because a 64-bit job never legitimately makes one and a half-working 32-bit
program (every call failing, including ``exit``) is worse than a clear signal.

Where we differ from Docker's default (moby/profiles seccomp/default.json):
refused here but allowed there: ptrace, process_vm_readv/writev (Docker
allows them on kernels >= 4.8), name_to_handle_at, adjtimex/clock_adjtime
(read-only use), modify_ldt, personality's other values, mknod of devices,
socket families other than unix/inet/inet6/netlink (Docker refuses only
AF_ALG and AF_VSOCK), cachestat (a sharper page-cache side channel than
mincore), memfd_secret, listmount/statmount, process_mrelease. Allowed as in
Docker: ioctl unfiltered (the job has no terminal, so TIOCSTI has no target),
prctl, setsockopt, SysV/POSIX IPC (IPC namespace), the old AIO calls.

The BPF program is assembled here (``_assemble``), once per process and per
(policy, deny_extra), in the zygote, as raw ``struct sock_filter`` bytes into the
container's plan; the job process of the native init (native/init.c) loads it with a bare
``seccomp(2)`` call, the last thing it does before waiting for its job: no libseccomp in a
container. The program is a binary search over runs of system call numbers that share a
decision (~50 runs), with the checked calls' blocks after it: 121 instructions for the
default policy, where libseccomp's for the same table is 423. The kernel checks, converts
and JIT-compiles every instruction at every job's load: measured here (kernel 6.18, a C
loop of forked children, per child) ~90 us against ~185 us for libseccomp's, about 2 % of
all of sandboxd's CPU per ``/bin/true`` job. libseccomp stays as the reference
(``libseccomp_program``, built from the same ``_policy`` table): the tests run both
programs in a BPF interpreter on every call number, architecture and checked argument and
require the same decision (tests/unit/isolation/test_seccomp_program.py), and test_seccomp.py
runs ours in the kernel, as production loads it (tests/unit/isolation/incontainer.py).

This module knows nothing of jobs, sockets, cgroups or trio. It is only
meaningful on x86_64, where it is tested; the numbers below are x86_64's.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import pyseccomp

from sandboxd.isolation._libc import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

__all__ = [
    "NEVER_ALLOWED",
    "POLICIES",
    "SeccompError",
    "allowed_syscalls",
    "compile_policy",
]


class SeccompError(OSError):
    """The policy could not be built (our fault, not the job's)."""


POLICIES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "default": "ordinary programs, including networking within the job's network namespace",
        "strict": "as default, but no socket can be created, bound, connected or accepted",
    }
)

# --- the allow-list ---------------------------------------------------------------------------
# Grouped by purpose. A call here is allowed whatever its arguments, except the few in
# _CONDITIONAL below, whose arguments are checked.

_ALLOW_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "file descriptors and I/O": (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
        "preadv2", "pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl",
        "ioctl", "pipe", "pipe2", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
        "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fadvise64", "readahead",
        "fallocate", "flock", "ftruncate", "truncate",
    ),
    "opening and inspecting paths": (
        "open", "openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat", "statx",
        "statfs", "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
        "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    ),
    "changing the filesystem (Landlock and the mounts decide where)": (
        "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
        "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
        "chown", "fchown", "lchown", "fchownat", "umask", "utime", "utimes", "utimensat",
        "futimesat",
    ),
    "extended attributes": (
        "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "listxattr", "llistxattr",
        "flistxattr", "listxattrat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
        "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    ),
    "memory": (
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "mlock",
        "mlock2", "munlock", "mlockall", "munlockall", "remap_file_pages", "memfd_create",
        "membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack", "mseal",
    ),
    "processes and threads (clone is checked below)": (
        "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
        "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl", "prctl",
        "capget", "capset", "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp",
        "getsid", "setsid", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
        "get_thread_area", "set_thread_area", "pidfd_open", "pidfd_send_signal",
    ),
    "identity (the kernel refuses changes without capabilities, all dropped)": (
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
        "setfsgid", "setgroups",
    ),
    "scheduling (real-time classes need CAP_SYS_NICE, which the job lacks)": (
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_getattr",
        "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "getcpu",
    ),
    "limits and accounting (raising a hard limit is the kernel's to refuse)": (
        "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "sysinfo", "uname",
    ),
    "signals": (
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "kill",
        "tkill", "tgkill", "pause", "restart_syscall", "signalfd", "signalfd4",
    ),
    "time (reading it, sleeping and timers; never setting the clock)": (
        "time", "gettimeofday", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep",
        "alarm", "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
        "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
        "timerfd_gettime",
    ),
    "waiting and events": (
        "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "inotify_init",
        "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "futex", "futex_waitv",
        "futex_wake", "futex_wait", "futex_requeue",
    ),
    "randomness": ("getrandom",),
    "System V and POSIX IPC (private to the job's IPC namespace)": (
        "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
        "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr",
    ),
    "asynchronous I/O (the old AIO interface; io_uring is refused)": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    ),
    "sockets on existing descriptors (socket and socketpair are checked below)": (
        "connect", "bind", "listen", "accept", "accept4", "shutdown", "getsockname",
        "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
        "sendmmsg", "recvmmsg",
    ),
    "restricting oneself further (filters and rulesets can only narrow)": (
        "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    ),
}  # fmt: skip

# Allowed only with the arguments checked in _conditions.
_CONDITIONAL: Final = ("clone", "socket", "socketpair", "personality", "mknod", "mknodat")

# Calls that no policy allows, whatever deny_extra says; each with why. Everything absent from
# the allow-list is refused anyway; this list is what tests assert one by one, and what a
# reviewer adding a call to the allow-list must not touch.
NEVER_ALLOWED: Final[Mapping[str, str]] = MappingProxyType({
    "mount": "changes the mount tree: the job's view of the filesystem is fixed by us",
    "umount2": "would uncover what our mounts hide (and the old root's remains)",
    "pivot_root": "moves the root we built",
    "move_mount": "new mount API: moves mounts",
    "open_tree": "new mount API: clones mount trees",
    "fsopen": "new mount API: creates filesystem contexts",
    "fsconfig": "new mount API: configures filesystems, a parser with a history of bugs",
    "fsmount": "new mount API: creates mounts",
    "fspick": "new mount API: reconfigures existing mounts",
    "mount_setattr": "changes mount flags (e.g. drops read-only)",
    "chroot": "with a directory fd kept open, escapes the root",
    "ptrace": "reads and writes other processes; bypasses seccomp in the tracee",
    "process_vm_readv": "reads another process's memory",
    "process_vm_writev": "writes another process's memory",
    "process_madvise": "acts on another process's memory",
    "kcmp": "compares kernel objects of other processes: an information leak (ptrace-gated)",
    "pidfd_getfd": "steals file descriptors from another process",
    "bpf": "large kernel attack surface; verifier bugs are a classic escalation path",
    "perf_event_open": "kernel attack surface and side channels",
    "userfaultfd": "lets the job stall the kernel mid-copy: a standard exploit primitive",
    "io_uring_setup": "bypasses seccomp for the I/O it performs; many escalation bugs",
    "io_uring_enter": "see io_uring_setup",
    "io_uring_register": "see io_uring_setup",
    "keyctl": "the kernel keyring is not namespaced",
    "add_key": "the kernel keyring is not namespaced",
    "request_key": "the kernel keyring is not namespaced; may run a host upcall",
    "kexec_load": "replaces the running kernel",
    "kexec_file_load": "replaces the running kernel",
    "init_module": "loads kernel code",
    "finit_module": "loads kernel code",
    "delete_module": "unloads kernel code",
    "reboot": "reboots the host (or, in a PID namespace, kills it)",
    "swapon": "host-wide swap configuration",
    "swapoff": "host-wide swap configuration",
    "acct": "host-wide process accounting",
    "clock_settime": "the clock is not namespaced (except the time namespace's offsets)",
    "clock_adjtime": "adjusts the host clock",
    "settimeofday": "sets the host clock",
    "adjtimex": "adjusts the host clock (stime does not exist on x86_64)",
    "sethostname": "UTS changes belong to us, not the job",
    "setdomainname": "UTS changes belong to us, not the job",
    "unshare": "creates namespaces: new user namespaces open kernel attack surface",
    "setns": "joins other namespaces",
    "open_by_handle_at": "opens files by handle, bypassing the mount tree (the 'shocker' escape)",
    "name_to_handle_at": "produces the handles open_by_handle_at consumes; leaks inode identity",
    "iopl": "raw I/O port access",
    "ioperm": "raw I/O port access",
    "modify_ldt": "16-bit segments only Wine/DOS emulators use; a history of kernel bugs",
    "quotactl": "host filesystem quota administration",
    "quotactl_fd": "host filesystem quota administration",
    "nfsservctl": "obsolete NFS server control (removed from the kernel)",
    "lookup_dcookie": "obsolete profiling interface (removed in 6.8) that leaked paths",
    "syslog": "reads and clears the host's kernel log",
    "vhangup": "hangs up the terminal",
    "uselib": "obsolete a.out loader",
    "clone3": "its flags are in memory a filter cannot inspect; fails with ENOSYS instead",
})  # fmt: skip

# Denied outright by "strict", on top of "default" (socket is removed from the conditional
# rules as well). socketpair(AF_UNIX) stays: it reaches nothing outside the job, and
# libuv (Node) and multiprocessing need it for their own pipes.
_STRICT_EXTRA_DENY: Final = frozenset({"socket", "connect", "bind", "listen", "accept", "accept4"})

# System calls newer than the libseccomp build knows (it resolves names to -1 for them).
# Numbers from the kernel's unified table, which x86_64 follows for new calls.
_NEWER_SYSCALLS: Final[Mapping[str, int]] = {
    "statmount": 457,
    "listmount": 458,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
}

# clone(2) flags that create namespaces (from _libc, the one home of syscall constants).
# CLONE_NEWTIME (0x80) shares its bit with the exit signal in clone(2); only clone3 and
# unshare can ask for it, and both are refused.
_CLONE_NS_FLAGS: Final = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
    | CLONE_NEWNET
)  # fmt: skip

# Socket families a job may create: local, IPv4/IPv6 (only `lo` exists unless the operator
# allows the network) and netlink (glibc's getaddrinfo and getifaddrs use NETLINK_ROUTE).
# Everything else (AF_PACKET, AF_VSOCK to the host, AF_ALG's kernel crypto, Bluetooth...)
# is refused, where Docker refuses only AF_VSOCK and AF_ALG.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
_SOCKET_FAMILIES: Final = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)

# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26,
# and 0xffffffff (query). Not ADDR_NO_RANDOMIZE (0x0040000), which would undo ASLR, nor
# READ_IMPLIES_EXEC.
_PERSONALITIES: Final = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# mknod/mknodat may create regular files, FIFOs (mkfifo) and sockets; device nodes never,
# whatever the job's capabilities in its user namespace.
_S_IFMT = 0o170000
_MKNOD_TYPES: Final = (0, 0o100000, 0o010000, 0o140000)  # none (=regular), S_IFREG, FIFO, SOCK


def allowed_syscalls(name: str = "default", *, deny_extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a policy allows, unconditionally or with checked arguments."""
    _check_policy(name)
    allowed = {call for group in _ALLOW_GROUPS.values() for call in group}
    allowed.update(_CONDITIONAL)
    if name == "strict":
        allowed -= _STRICT_EXTRA_DENY
    extra = frozenset(deny_extra)
    unknown = {call for call in extra if _resolve(call) < 0}
    if unknown:
        raise ValueError(f"deny_extra names unknown system calls: {sorted(unknown)}")
    return frozenset(allowed - extra)


def compile_policy(name: str = "default", *, deny_extra: Iterable[str] = ()) -> bytes:
    """Return the policy as a raw BPF program (``struct sock_filter`` array bytes).

    Built on first use and cached for the life of the process (the zygote builds its
    policies before its first container): the plan carries these bytes, and the
    container's job process loads them (native/init.c). ``deny_extra`` narrows the
    policy further (e.g. a profile that forbids ``fork``); it cannot widen it.
    """
    _check_policy(name)
    return _compile(name, frozenset(deny_extra))


# --- building ---------------------------------------------------------------------------------


def _check_policy(name: str) -> None:
    if name not in POLICIES:
        raise ValueError(f"unknown seccomp policy {name!r}; known: {', '.join(POLICIES)}")


def _resolve(call: str) -> int:
    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, call)
    if nr < 0:
        nr = _NEWER_SYSCALLS.get(call, -1)
    return nr


@functools.cache
def _compile(name: str, deny_extra: frozenset[str]) -> bytes:
    allowed, conditions = _policy(name, deny_extra)
    return _assemble(allowed, conditions, enosys=_clone3(deny_extra))


def _clone3(deny_extra: frozenset[str]) -> frozenset[int]:
    return frozenset() if "clone3" in deny_extra else frozenset({_resolve("clone3")})


def _policy(name: str, deny_extra: frozenset[str]
            ) -> tuple[frozenset[int], dict[int, tuple[tuple[int, int, int], ...]]]:
    """The policy as numbers: the calls allowed whatever their arguments, and for the
    checked ones, the alternatives (argument, 64-bit mask, value) any one of which allows
    the call. Both programs (ours and libseccomp's) are built from this one table."""
    allowed = allowed_syscalls(name, deny_extra=deny_extra)
    overlap = allowed & NEVER_ALLOWED.keys()
    if overlap:  # a programming error in the tables above, caught on first use
        raise SeccompError(errno.EINVAL, f"seccomp: never-allowed calls on the list: {overlap}")
    numbers = set()
    for call in allowed - set(_CONDITIONAL):
        nr = _resolve(call)
        if nr < 0:
            raise SeccompError(errno.EINVAL, f"seccomp: cannot resolve system call {call!r}")
        numbers.add(nr)
    return frozenset(numbers), {_resolve(call): alts
                                for call, alts in _conditions(allowed).items()}


def _conditions(allowed: frozenset[str]) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """The checked calls' alternatives (argument, mask, value): ``arg & mask == value``
    on the whole 64-bit argument (a plain equality is the mask of all ones)."""
    out: dict[str, tuple[tuple[int, int, int], ...]] = {}
    if "clone" in allowed:  # threads and fork, but no namespaces
        out["clone"] = ((0, _CLONE_NS_FLAGS, 0),)
    for call in ("socket", "socketpair"):
        if call in allowed:
            families = (AF_UNIX,) if call == "socketpair" else _SOCKET_FAMILIES
            out[call] = tuple((0, _ALL64, family) for family in families)
    if "personality" in allowed:
        out["personality"] = tuple((0, _ALL64, persona) for persona in _PERSONALITIES)
    for call, mode_arg in (("mknod", 1), ("mknodat", 2)):
        if call in allowed:
            out[call] = tuple((mode_arg, _S_IFMT, kind) for kind in _MKNOD_TYPES)
    return out


def libseccomp_program(name: str = "default", *, deny_extra: Iterable[str] = ()) -> bytes:
    """The same policy compiled by libseccomp: the reference the tests hold our own
    program to (tests/unit/isolation/test_seccomp_program.py), decision for decision."""
    extra = frozenset(deny_extra)
    allowed, conditions = _policy(name, extra)
    flt = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))
    # i386 and x32 calls: libseccomp checks the audit arch and the x32 bit before anything.
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)  # binary tree of syscall numbers, not a chain
    for nr in sorted(allowed):
        flt.add_rule(pyseccomp.ALLOW, nr)
    for nr, alts in conditions.items():
        for arg, mask, value in alts:  # several rules for one call are OR-ed by libseccomp
            cmp = (pyseccomp.Arg(arg, pyseccomp.EQ, value) if mask == _ALL64
                   else pyseccomp.Arg(arg, pyseccomp.MASKED_EQ, mask, value))
            flt.add_rule(pyseccomp.ALLOW, nr, cmp)
    for nr in _clone3(extra):
        flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), nr)
    fd = os.memfd_create("sandboxd-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


# --- our own program (why: the module's docstring) ---------------------------------------------

_ALL64: Final = (1 << 64) - 1
AUDIT_ARCH_X86_64: Final = 0xC000003E
X32_SYSCALL_BIT: Final = 0x40000000
RET_ALLOW: Final = 0x7FFF0000
RET_ERRNO: Final = 0x00050000
RET_KILL_PROCESS: Final = 0x80000000
_LD_ABS, _AND_K, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x54, 0x15, 0x35, 0x06
_NR, _ARCH, _ARGS = 0, 4, 16  # offsets in struct seccomp_data


def _assemble(allowed: frozenset[int], conditions: Mapping[int, tuple[tuple[int, int, int], ...]],
              enosys: frozenset[int]) -> bytes:
    """The policy as classic BPF: the architecture (anything but x86_64 killed, as is an
    x32 number; -1 refused), then a binary search over runs of numbers that share a decision, each
    ending on a return or on a checked call's block."""
    code: list[list[Any]] = []  # [op, jt, jf, k]: jt and jf are labels, or None (the next)
    labels: dict[str, int] = {}

    def emit(op: int, k: int, jt: str | None = None, jf: str | None = None) -> int:
        code.append([op, jt, jf, k])
        return len(code) - 1

    def decision(nr: int) -> str:
        if nr in conditions:
            return f"call{nr}"
        if nr in allowed:
            return "allow"
        return "enosys" if nr in enosys else "eperm"

    # Runs [start, next start) of one decision; a checked call is a run of its own.
    top = max([*allowed, *conditions, *enosys], default=-1) + 1
    runs: list[tuple[int, str]] = []
    for nr in range(top + 1):
        d = "eperm" if nr == top else decision(nr)
        if not runs or d != runs[-1][1] or d.startswith("call"):
            runs.append((nr, d))

    emit(_LD_ABS, _ARCH)
    emit(_JEQ_K, AUDIT_ARCH_X86_64, None, "kill")
    emit(_LD_ABS, _NR)
    x32 = emit(_JGE_K, X32_SYSCALL_BIT)
    # An x32 number is killed, but -1 (a tracer's skipped call) is refused, as libseccomp has it.
    emit(_JEQ_K, 0xFFFFFFFF, "eperm", "kill")

    def search(a: int, b: int) -> str:
        if b - a == 1:
            return runs[a][1]
        m = (a + b) // 2
        label = f"node{len(code)}"
        labels[label] = at = emit(_JGE_K, runs[m][0])
        code[at][2] = search(a, m)  # below the middle run's start
        code[at][1] = search(m, b)
        return label

    labels["search"] = len(code)
    code[x32][2] = "search"
    first = search(0, len(runs))
    if not first.startswith("node"):  # a single run: a test that always holds, to it
        emit(_JGE_K, 0, first, first)

    for nr, alts in conditions.items():
        labels[f"call{nr}"] = len(code)
        groups: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        for arg, mask, value in alts:  # the high word's test shared by equal ones
            groups.setdefault((arg, mask >> 32, value >> 32), []).append(
                (mask & 0xFFFFFFFF, value & 0xFFFFFFFF))
        for g, ((arg, hmask, hvalue), lows) in enumerate(groups.items()):
            fail = f"call{nr}.{g + 1}" if g + 1 < len(groups) else "eperm"
            labels[f"call{nr}.{g}"] = len(code)
            if hmask:
                emit(_LD_ABS, _ARGS + 8 * arg + 4)
                if hmask != 0xFFFFFFFF:
                    emit(_AND_K, hmask)
                emit(_JEQ_K, hvalue, None, fail)
            by_mask: dict[int, list[int]] = {}
            for lmask, lvalue in lows:
                by_mask.setdefault(lmask, []).append(lvalue)
            for s, (lmask, values) in enumerate(by_mask.items()):
                miss = f"call{nr}.{g}.{s + 1}" if s + 1 < len(by_mask) else fail
                labels[f"call{nr}.{g}.{s}"] = len(code)
                emit(_LD_ABS, _ARGS + 8 * arg)
                if lmask != 0xFFFFFFFF:
                    emit(_AND_K, lmask)
                for i, value in enumerate(values):
                    emit(_JEQ_K, value, "allow", miss if i + 1 == len(values) else None)
    for label, ret in (("allow", RET_ALLOW), ("eperm", RET_ERRNO | errno.EPERM),
                       ("enosys", RET_ERRNO | errno.ENOSYS), ("kill", RET_KILL_PROCESS)):
        labels[label] = emit(_RET_K, ret)

    out = bytearray()
    for i, (op, jt, jf, k) in enumerate(code):
        offsets = []
        for label in (jt, jf):
            off = 0 if label is None else labels[label] - i - 1
            if not 0 <= off <= 255:  # classic BPF jumps only forward, by at most 255
                raise SeccompError(errno.E2BIG, f"seccomp: a jump of {off} at {i}")
            offsets.append(off)
        out += struct.pack("<HBBI", op, offsets[0], offsets[1], k)
    return bytes(out)
