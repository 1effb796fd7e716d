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

The BPF program is built with libseccomp (pyseccomp) once per process and
per (policy, deny_extra), in the zygote, exported as raw ``struct
sock_filter`` bytes into the container's plan; the job process of the native
init (native/init.c) loads it with a bare ``seccomp(2)`` call, the last thing
it does before waiting for its job: no libseccomp in a container. The tests
run that init (tests/unit/isolation/incontainer.py). Measured on the
development machine (kernel 6.18, x86_64, 423 BPF instructions):
``compile_policy`` 3.5-10 ms once per process; loading it 0.2-0.25 ms inside
the kernel (JIT and the per-syscall action cache, which then lets allowed
calls skip the filter). A hand-built filter testing the allow-list as ranges
(38 runs of numbers) would be ~130 instructions and ~0.1 ms faster.

This module knows nothing of jobs, sockets, cgroups or trio. It is only
meaningful on x86_64, where it is tested; the numbers below are x86_64's.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

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

# Allowed only with the arguments checked in _add_conditional_rules.
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
    allowed = allowed_syscalls(name, deny_extra=deny_extra)
    overlap = allowed & NEVER_ALLOWED.keys()
    if overlap:  # a programming error in the tables above, caught on first use
        raise SeccompError(errno.EINVAL, f"seccomp: never-allowed calls on the list: {overlap}")

    flt = pyseccomp.SyscallFilter(pyseccomp.ERRNO(errno.EPERM))
    # i386 and x32 calls: libseccomp checks the audit arch and the x32 bit before anything.
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)  # binary tree of syscall numbers, not a chain
    for call in sorted(allowed - set(_CONDITIONAL)):
        nr = _resolve(call)
        if nr < 0:
            raise SeccompError(errno.EINVAL, f"seccomp: cannot resolve system call {call!r}")
        flt.add_rule(pyseccomp.ALLOW, nr)
    _add_conditional_rules(flt, allowed)
    if "clone3" not in deny_extra:
        flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")

    fd = os.memfd_create("sandboxd-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def _add_conditional_rules(flt: pyseccomp.SyscallFilter, allowed: frozenset[str]) -> None:
    """Rules whose arguments matter; several rules for one call are OR-ed by libseccomp."""
    arg = pyseccomp.Arg
    if "clone" in allowed:  # threads and fork, but no namespaces
        flt.add_rule(pyseccomp.ALLOW, "clone", arg(0, pyseccomp.MASKED_EQ, _CLONE_NS_FLAGS, 0))
    for call in ("socket", "socketpair"):
        if call in allowed:
            families = (AF_UNIX,) if call == "socketpair" else _SOCKET_FAMILIES
            for family in families:
                flt.add_rule(pyseccomp.ALLOW, call, arg(0, pyseccomp.EQ, family))
    if "personality" in allowed:
        for persona in _PERSONALITIES:
            flt.add_rule(pyseccomp.ALLOW, "personality", arg(0, pyseccomp.EQ, persona))
    for call, mode_arg in (("mknod", 1), ("mknodat", 2)):
        if call in allowed:
            for kind in _MKNOD_TYPES:
                flt.add_rule(
                    pyseccomp.ALLOW, call, arg(mode_arg, pyseccomp.MASKED_EQ, _S_IFMT, kind)
                )
