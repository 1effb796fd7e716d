"""The seccomp policy, tested the bubblewrap way: a probe runs under the filter and reports
the errno it got. The filter is the one production installs, the way production installs
it: the probes run as the job of a real container whose native init loaded the plan's
seccomp program (incontainer.py), with every other layer on.

A job has no capabilities, so the kernel refuses many calls with EPERM by itself. To
know that a refusal is the *filter's*, the same program runs *marked* (its EPERM returns
turned into ``MARK``, nothing else changed); the unmarked production program must then
answer EPERM for the same calls. Denied calls get deliberately invalid arguments, so that
nothing would happen even where the kernel let them through.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import textwrap
from typing import Any

import pytest
from incontainer import ALLOW_ALL, MARK

from sandboxd.isolation import seccomp
from sandboxd.isolation.seccomp import NEVER_ALLOWED, _resolve
from sandboxd.result import Result

Runner = Any  # incontainer.in_container
Probes = Any  # conftest.Probes: attribute access gives a compiled probe's path in a container
M = 0xFFFFFFFF
BAD = 1  # an address that is never mapped: EFAULT if the kernel gets to read it

# Harmless arguments for each never-allowed call: invalid enough that the kernel refuses
# without side effects, even as root, and with an errno other than EPERM.
DENY_ARGS: dict[str, tuple[int, ...]] = {
    "mount": (BAD, BAD, BAD, 0, 0),
    "umount2": (BAD, 0),
    "pivot_root": (BAD, BAD),
    "move_mount": (M, BAD, M, BAD, M),
    "open_tree": (M, BAD, M),
    "fsopen": (BAD, M),
    "fsconfig": (M, 0xFF, 0, 0, 0),
    "fsmount": (M, M, 0),
    "fspick": (M, BAD, M),
    "mount_setattr": (M, BAD, M, 0, 0),
    "chroot": (BAD,),
    "ptrace": (0x7FFFFFFF, 0x7FFFFFFF),
    "process_vm_readv": (0, 0, 0, 0, 0, 1),
    "process_vm_writev": (0, 0, 0, 0, 0, 1),
    "process_madvise": (M, 0, 0, 0, 0xFF),
    "kcmp": (0x7FFFFFFF, 0x7FFFFFFF, 0xFF, 0, 0),
    "pidfd_getfd": (M, 0, 0),
    "bpf": (0xFFFF, 0, 0),
    "perf_event_open": (BAD, 0, M, M, 0),
    "userfaultfd": (M,),
    "io_uring_setup": (0, BAD),
    "io_uring_enter": (M, 0, 0, 0, 0, 0),
    "io_uring_register": (M, 0, 0, 0),
    "keyctl": (0xFFFF,),
    "add_key": (BAD, BAD, 0, 0, 0),
    "request_key": (BAD, BAD, 0, 0),
    "kexec_load": (0, 0, 0, M),
    "kexec_file_load": (M, M, 0, 0, M),
    "init_module": (BAD, 0, BAD),
    "finit_module": (M, BAD, M),
    "delete_module": (BAD, 0),
    "reboot": (0, 0, 0, 0),  # wrong magic: EINVAL
    "swapon": (BAD, 0),
    "swapoff": (BAD,),
    "acct": (BAD,),
    "clock_settime": (100, BAD),  # no such clock (negative ids are CPU clocks: EPERM)
    "clock_adjtime": (100, BAD),
    "settimeofday": (BAD, 0),
    "adjtimex": (BAD,),
    "sethostname": (BAD, 1000),
    "setdomainname": (BAD, 1000),
    "unshare": (1,),  # not a valid unshare flag: EINVAL
    "setns": (M, 0),
    "open_by_handle_at": (M, BAD, 0),
    "name_to_handle_at": (M, BAD, BAD, BAD, M),
    "iopl": (4,),
    "ioperm": (M, 1, 1),
    "modify_ldt": (0xFF, 0, 0),
    "quotactl": (M, BAD, 0, 0),
    "quotactl_fd": (M, 0, 0, 0),
    "nfsservctl": (),
    "lookup_dcookie": (0, BAD, 0),
    "syslog": (0xFFFF, 0, 0),
    "vhangup": (),  # no controlling terminal after setsid: a no-op
    "uselib": (BAD,),
}
DENIED = sorted(set(NEVER_ALLOWED) - {"clone3"})

NS_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_NEWTIME = 0x80
CLONE_FS, CLONE_FILES = 0x200, 0x400

root = pytest.mark.root
pytestmark = root


def parse_errno(out: str) -> int:
    """The errno a probe printed ("errno=E"), or 0 for "ok"."""
    if out.strip() == "ok":
        return 0
    match = re.search(r"errno=(\d+)", out)
    assert match, f"probe printed {out!r}"
    return int(match.group(1))


def try_syscalls(run: Runner, lsm_probes: Probes, calls: dict[str, tuple[int, ...]],
                 **kw: Any) -> dict[str, int]:
    """The errno of each call (by name or number, with its arguments), all made by
    ``try_syscall`` in one container, one process per call."""
    lines = []
    for name, args in calls.items():
        nr = int(name) if name.isdigit() else _resolve(name)
        assert nr >= 0, name
        lines.append(f"printf '%s ' {name}; {lsm_probes.try_syscall} {nr} "
                     + " ".join(map(str, args)))
    r = run(["/bin/sh", "-c", "\n".join(lines)], binds=lsm_probes.binds, **kw)
    assert r.verdict == "ok", r
    got = {}
    for line in r.stdout.decode().splitlines():
        name, _, rest = line.partition(" ")
        got[name] = parse_errno(rest)
    assert set(got) == set(calls), r.stdout
    return got


def probe(run: Runner, lsm_probes: Probes, name: str, *args: str, **kw: Any) -> Result:
    """One run of a probe (``clone_probe``, ``foreign_arch``) in a container."""
    return run([getattr(lsm_probes, name), *args], binds=lsm_probes.binds, **kw)


# --- the tables ---------------------------------------------------------------------------------


def test_every_never_allowed_call_has_probe_arguments() -> None:
    assert set(DENIED) == set(DENY_ARGS)


@pytest.mark.parametrize("policy", list(seccomp.POLICIES))
def test_never_allowed_calls_are_off_the_allow_list(policy: str) -> None:
    assert not seccomp.allowed_syscalls(policy) & NEVER_ALLOWED.keys()


def test_every_allowed_name_resolves() -> None:
    for name in seccomp.allowed_syscalls():
        assert _resolve(name) >= 0, name


def test_strict_is_default_without_socket_creation() -> None:
    diff = seccomp.allowed_syscalls("default") - seccomp.allowed_syscalls("strict")
    assert diff == {"socket", "connect", "bind", "listen", "accept", "accept4"}


def test_compile_is_cached_and_returns_whole_instructions() -> None:
    bpf = seccomp.compile_policy()
    assert bpf is seccomp.compile_policy()
    assert bpf is seccomp.compile_policy("default", deny_extra=())
    assert len(bpf) % 8 == 0 and 0 < len(bpf) // 8 <= 4096


def test_unknown_policy_and_unknown_call_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown seccomp policy"):
        seccomp.compile_policy("lenient")
    with pytest.raises(ValueError, match="no_such_call"):
        seccomp.compile_policy(deny_extra=["no_such_call"])


# --- denied calls ---------------------------------------------------------------------------

# Calls on no list (refused by omission), and numbers the kernel may gain later: the point
# of an allow-list is that a call added next year is refused until we decide otherwise.
NOT_LISTED: dict[str, tuple[int, ...]] = {
    "mbind": (0, 0, 0, 0, 0, 0),  # NUMA policy: needs CAP_SYS_NICE in Docker too
    "fanotify_init": (0, 0),
    "memfd_secret": (0,),
    "statmount": (0, 0, 0, 0),
    "set_mempolicy_home_node": (0, 0, 0, 0),
    **{str(nr): () for nr in (470, 471, 499, 1000, 0x3FFFFFFF)},
}


@pytest.mark.parametrize("policy", list(seccomp.POLICIES))
def test_never_allowed_and_unlisted_calls_are_the_filter_s_eperm(
    run_in_container: Runner, lsm_probes: Probes, policy: str
) -> None:
    calls = {name: DENY_ARGS[name] for name in DENIED} | NOT_LISTED
    marked = try_syscalls(run_in_container, lsm_probes, calls, policy=policy, marked=True)
    assert marked == {name: MARK for name in calls}, "refused by the filter itself"
    production = try_syscalls(run_in_container, lsm_probes, calls, policy=policy)
    assert production == {name: errno.EPERM for name in calls}, "what the job sees"


def test_without_the_filter_the_kernel_answers_otherwise(
    run_in_container: Runner, lsm_probes: Probes
) -> None:
    """Control: in the same kind of container with no filter, the marked errno never
    appears, and numbers the kernel does not know get its own ENOSYS, not EPERM."""
    calls = {name: DENY_ARGS[name] for name in DENIED} | NOT_LISTED
    got = try_syscalls(run_in_container, lsm_probes, calls, bpf=ALLOW_ALL)
    assert MARK not in got.values()
    for nr in (470, 471, 499, 1000, 0x3FFFFFFF):
        assert got[str(nr)] == errno.ENOSYS


def test_deny_extra_narrows(run_in_container: Runner, lsm_probes: Probes) -> None:
    got = try_syscalls(run_in_container, lsm_probes, {"getppid": (), "getpid": ()},
                       deny_extra=["getppid"], marked=True)
    assert got == {"getppid": MARK, "getpid": 0}


# --- processes, threads, namespaces -----------------------------------------------------------


def test_namespaces_are_the_filter_s_to_refuse(run_in_container: Runner,
                                              lsm_probes: Probes) -> None:
    """clone with a namespace flag and unshare of any namespace (CLONE_NEWTIME included: its
    bit is clone(2)'s exit signal, so unshare and clone3 are its only ways in)."""
    lines = [f"echo clone {flag} $({lsm_probes.clone_probe} clone {hex(bit)})"
             for flag, bit in NS_FLAGS.items()]
    lines += [f"echo unshare {flags:#x} $({lsm_probes.clone_probe} unshare {hex(flags)})"
              for flags in (CLONE_NEWTIME, *NS_FLAGS.values())]
    for marked, refused in ((True, MARK), (False, errno.EPERM)):
        r = run_in_container(["/bin/sh", "-c", "\n".join(lines)], binds=lsm_probes.binds,
                             marked=marked)
        assert r.verdict == "ok", r
        got = {" ".join(line.split()[:2]): parse_errno(" ".join(line.split()[2:]))
               for line in r.stdout.decode().splitlines()}
        assert len(got) == len(lines)
        assert got == {k: refused for k in got}


@pytest.mark.parametrize(
    "mode",
    [
        ["fork"],
        ["thread"],
        ["clone", "0"],
        ["spawn"],  # clone(CLONE_VM | CLONE_VFORK) once clone3 says ENOSYS
        ["clone", hex(CLONE_FS | CLONE_FILES)],
    ],
)
def test_fork_threads_and_plain_clone_work(
    run_in_container: Runner, lsm_probes: Probes, mode: list[str]
) -> None:
    r = probe(run_in_container, lsm_probes, "clone_probe", *mode)
    assert r.stdout.decode().strip() == "ok", r


@pytest.mark.parametrize("flags", [0, CLONE_NEWTIME, NS_FLAGS["CLONE_NEWUSER"]])
def test_clone3_fails_with_enosys(run_in_container: Runner, lsm_probes: Probes,
                                  flags: int) -> None:
    """ENOSYS, so that libc falls back to clone(2), whose flags the filter can read; with
    flags 0 the kernel itself would succeed, so the ENOSYS is the filter's."""
    r = probe(run_in_container, lsm_probes, "clone_probe", "clone3", hex(flags))
    assert parse_errno(r.stdout.decode()) == errno.ENOSYS


# --- checked arguments ----------------------------------------------------------------------

AF_INET, AF_INET6, AF_PACKET, AF_ALG, AF_VSOCK, AF_BLUETOOTH = 2, 10, 17, 38, 40, 31
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3


def test_checked_arguments(run_in_container: Runner, lsm_probes: Probes) -> None:
    """Socket families, personality values: allowed ones reach the kernel, the others are
    the filter's (marked) refusal."""
    calls = {
        "socket-unix": ("socket", (1, SOCK_STREAM, 0), 0),
        "socket-inet": ("socket", (AF_INET, SOCK_STREAM, 0), 0),
        "socket-inet6": ("socket", (AF_INET6, SOCK_DGRAM, 0), 0),
        "socket-netlink": ("socket", (16, SOCK_RAW, 0), 0),  # NETLINK_ROUTE
        "socket-packet": ("socket", (AF_PACKET, SOCK_RAW, 0), MARK),
        "socket-alg": ("socket", (AF_ALG, 5, 0), MARK),
        "socket-vsock": ("socket", (AF_VSOCK, SOCK_STREAM, 0), MARK),  # the host, in a VM
        "socket-bluetooth": ("socket", (AF_BLUETOOTH, SOCK_STREAM, 0), MARK),
        "personality-query": ("personality", (0xFFFFFFFF,), 0),
        "personality-linux": ("personality", (0x0,), 0),
        "personality-linux32": ("personality", (0x8,), 0),
        "personality-no-aslr": ("personality", (0x0040000,), MARK),  # would undo ASLR
        "personality-read-implies-exec": ("personality", (0x0400000,), MARK),
    }
    lines = [f"printf '%s ' {key}; {lsm_probes.try_syscall} {_resolve(name)} "
             + " ".join(map(str, args)) for key, (name, args, _) in calls.items()]
    r = run_in_container(["/bin/sh", "-c", "\n".join(lines)], binds=lsm_probes.binds,
                         marked=True)
    got = {line.split()[0]: parse_errno(line.split(None, 1)[1])
           for line in r.stdout.decode().splitlines()}
    assert got == {key: want for key, (_n, _a, want) in calls.items()}, r


def test_strict_refuses_every_socket_but_keeps_socketpair(
    run_in_container: Runner, lsm_probes: Probes
) -> None:
    got = try_syscalls(run_in_container, lsm_probes, {
        "socket": (1, SOCK_STREAM, 0), "connect": (0, 0, 0),
        # socketpair's fds go to a bad pointer: EFAULT means the kernel got the call
        "socketpair": (1, 1, 0, BAD)}, policy="strict", marked=True)
    assert got == {"socket": MARK, "connect": MARK, "socketpair": errno.EFAULT}
    got = try_syscalls(run_in_container, lsm_probes, {"socketpair": (AF_INET, 1, 0, BAD)},
                       policy="strict", marked=True)
    assert got == {"socketpair": MARK}


def test_mknod_makes_fifos_but_never_devices(run_in_container: Runner) -> None:
    script = textwrap.dedent(
        """
        import os, stat
        os.mkfifo("fifo")
        os.mknod("plain", stat.S_IFREG | 0o600)
        print(stat.S_ISFIFO(os.stat("fifo").st_mode), os.path.isfile("plain"))
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            try:
                os.mknod("dev", kind | 0o600, os.makedev(1, 3))
            except OSError as e:
                print(e.errno)
        print(os.path.exists("dev"))
        """
    )
    r = run_in_container(["/usr/bin/python3", "-c", script], marked=True)
    assert r.verdict == "ok", r
    assert r.stdout.decode().split() == ["True", "True", str(MARK), str(MARK), "False"]


# --- foreign architectures ----------------------------------------------------------------


@pytest.mark.parametrize("abi", ["i386", "x32", "thread-i386"])
def test_foreign_architectures_kill_the_process(
    run_in_container: Runner, lsm_probes: Probes, abi: str
) -> None:
    """SIGSYS for the whole process, even when the call comes from a second thread (the
    thread case is what tells SECCOMP_RET_KILL_PROCESS from libseccomp's KILL_THREAD)."""
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 only")
    r = probe(run_in_container, lsm_probes, "foreign_arch", abi)
    assert r.signal == signal.SIGSYS, r
    assert r.stdout == b""


def test_foreign_architecture_probe_works_without_the_filter(
    run_in_container: Runner, lsm_probes: Probes
) -> None:
    """Control, in the same kind of container with no filter: the i386 probe really reaches
    the kernel (IA32 emulation is on here); x32 is compiled out of this kernel (ENOSYS), so
    the filter is what kills it, not the kernel."""
    i386 = probe(run_in_container, lsm_probes, "foreign_arch", "i386", bpf=ALLOW_ALL)
    x32 = probe(run_in_container, lsm_probes, "foreign_arch", "x32", bpf=ALLOW_ALL)
    native = probe(run_in_container, lsm_probes, "foreign_arch", "native")
    assert native.exit_code == 0 and int(native.stdout.split(b"=")[1]) > 0, native
    if i386.signal == signal.SIGSEGV:
        pytest.skip("IA32 emulation is disabled on this kernel (ia32_emulation=0)")
    assert i386.exit_code == 0 and int(i386.stdout.split(b"=")[1]) > 0, i386
    assert x32.exit_code == 0, x32
    x32_ret = int(x32.stdout.split(b"=")[1])
    assert x32_ret == -errno.ENOSYS or x32_ret > 0


# --- ordinary programs ----------------------------------------------------------------------

PYTHON_SCRIPT = textwrap.dedent(
    """
    import threading, subprocess, multiprocessing, socket, tempfile, os
    t = threading.Thread(target=lambda: None); t.start(); t.join()
    assert subprocess.run(["/bin/echo", "sub"], capture_output=True).stdout == b"sub\\n"
    with multiprocessing.Pool(2) as pool:
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    a, b = socket.socketpair(); a.send(b"x"); assert b.recv(1) == b"x"
    with tempfile.TemporaryFile() as f: f.write(b"x")
    print("python ok")
    """
)
C_HELLO = '#include <stdio.h>\nint main(void) { puts("c ok"); return 0; }\n'
CXX_HELLO = (
    "#include <iostream>\n#include <thread>\n"
    'int main() { std::thread t([]{}); t.join(); std::cout << "c++ ok" << std::endl; }\n'
)
JAVA_HELLO = (
    "public class Hello { public static void main(String[] a) throws Exception {\n"
    "  Thread t = new Thread(() -> {}); t.start(); t.join();\n"
    '  System.out.println("java ok"); } }\n'
)
NODE_SCRIPT = (
    "const cp = require('child_process');"
    "const r = cp.spawnSync('/bin/echo', ['sub']);"
    "if (r.stdout.toString() !== 'sub\\n') throw new Error('spawn');"
    "console.log(1)"
)
ENV = {"HOME": "/box", "LANG": "C.UTF-8"}
BIG = {"memory": 1 << 30, "pids": 128, "cpu_time": 30.0, "wall_time": 60.0}


def _need(*tools: str) -> None:
    path = "/usr/local/bin:/usr/bin:/bin"  # the containers' PATH, not ours
    if not all(shutil.which(t, path=path) for t in tools):
        pytest.skip(f"needs {', '.join(tools)} on the containers' PATH")


@pytest.mark.parametrize("policy", list(seccomp.POLICIES))
@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("true", ["/bin/true"], ""),
        ("python", ["python3", "-c", PYTHON_SCRIPT], "python ok"),
        ("bash", ["bash", "-c", "echo hi | cat; x=$(echo sub); echo $x"], "hi\nsub"),
        ("node", ["node", "-e", NODE_SCRIPT], "1"),
        ("java", ["java", "-version"], ""),
    ],
)
def test_ordinary_programs_run(run_in_container: Runner, name: str, argv: list[str],
                               expected: str, policy: str) -> None:
    _need(argv[0])
    r = run_in_container(argv, policy=policy, env=ENV, **BIG)
    assert r.verdict == "ok", r
    assert r.stdout.decode().strip() == expected


def test_gcc_and_gxx_compile_link_and_run(run_in_container: Runner) -> None:
    _need("gcc", "g++")
    script = "gcc -O2 -Wall -o hello hello.c && ./hello && g++ -O2 -pthread -o hellocc " \
             "hello.cc && ./hellocc"
    r = run_in_container(["/bin/sh", "-c", script], env=ENV, **BIG,
                         files={"hello.c": C_HELLO.encode(), "hello.cc": CXX_HELLO.encode()})
    assert r.verdict == "ok", r
    assert r.stdout.decode().split("\n")[:2] == ["c ok", "c++ ok"]


def test_javac_and_java_run(run_in_container: Runner) -> None:
    _need("javac", "java")
    r = run_in_container(["/bin/sh", "-c", "javac -J-Xmx512m Hello.java && java -Xmx512m "
                          "-cp . Hello"], env=ENV, files={"Hello.java": JAVA_HELLO.encode()},
                         **BIG)
    assert r.verdict == "ok", r
    assert r.stdout.decode().strip() == "java ok"


def test_rustc_compiles_and_the_binary_runs(run_in_container: Runner) -> None:
    _need("rustc")
    source = (
        "fn main() { let t = std::thread::spawn(|| 1); assert_eq!(t.join().unwrap(), 1);"
        ' let o = std::process::Command::new("/bin/true").status().unwrap();'
        ' assert!(o.success()); println!("rust ok"); }\n'
    )
    r = run_in_container(["/bin/sh", "-c", "rustc -O hello.rs -o hello && ./hello"],
                         env=ENV, files={"hello.rs": source.encode()}, **BIG)
    assert r.verdict == "ok", r
    assert r.stdout.decode().strip() == "rust ok"
