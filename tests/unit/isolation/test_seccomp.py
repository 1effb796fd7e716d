"""The seccomp policy, tested the bubblewrap way: a probe runs under the filter and reports
the errno it got. Every test that installs a filter does so in a child it reaps.

Denied calls are made as root with deliberately invalid arguments: without the filter the
kernel answers EFAULT/EINVAL/EBADF/ENOSYS (``test_probe_arguments_are_harmless_and_not_eperm``
checks that), so an EPERM under the filter can only come from the filter.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prctl
import pytest

from sandboxd.isolation import seccomp
from sandboxd.isolation.seccomp import NEVER_ALLOWED, _resolve

Runner = Callable[..., subprocess.CompletedProcess[str]]
Probes = Any  # conftest.Probes: attribute access gives a compiled probe's path
NOBODY = 65534
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
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def parse_errno(out: str) -> int:
    """The errno a probe printed ("errno=E"), or 0 for "ok"."""
    if out.strip() == "ok":
        return 0
    match = re.search(r"errno=(\d+)", out)
    assert match, f"probe printed {out!r}"
    return int(match.group(1))


def try_syscall(run: Runner, lsm_probes: Probes, name: str, *args: int, **kw: object) -> int:
    nr = _resolve(name)
    assert nr >= 0, name
    proc = run([lsm_probes.try_syscall, str(nr), *map(str, args)], **kw)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return parse_errno(proc.stdout)


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


@root
@needs_root
def test_probe_arguments_are_harmless_and_not_eperm(
    run_confined: Runner, lsm_probes: Probes
) -> None:
    """Control: without the filter, as root, no probe call succeeds with EPERM, so an EPERM
    under the filter is the filter's. (Run as root with invalid arguments: nothing happens.)"""
    for name in DENIED:
        got = try_syscall(run_confined, lsm_probes, name, *DENY_ARGS[name])
        assert got != errno.EPERM, name


@root
@needs_root
@pytest.mark.parametrize("policy", list(seccomp.POLICIES))
@pytest.mark.parametrize("name", DENIED)
def test_never_allowed_call_fails_with_eperm(
    run_confined: Runner, lsm_probes: Probes, name: str, policy: str
) -> None:
    bpf = seccomp.compile_policy(policy)
    assert try_syscall(run_confined, lsm_probes, name, *DENY_ARGS[name], bpf=bpf) == errno.EPERM


@root
@needs_root
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("mbind", (0, 0, 0, 0, 0, 0)),  # NUMA policy: needs CAP_SYS_NICE in Docker too
        ("fanotify_init", (0, 0)),
        ("memfd_secret", (0,)),
        ("statmount", (0, 0, 0, 0)),
        ("set_mempolicy_home_node", (0, 0, 0, 0)),
    ],
)
def test_calls_not_on_the_list_fail_with_eperm(
    run_confined: Runner, lsm_probes: Probes, name: str, args: tuple[int, ...]
) -> None:
    bpf = seccomp.compile_policy()
    assert try_syscall(run_confined, lsm_probes, name, *args, bpf=bpf) == errno.EPERM


@root
@needs_root
@pytest.mark.parametrize("nr", [470, 471, 499, 1000, 0x3FFFFFFF])
def test_numbers_the_kernel_may_gain_later_fail_with_eperm(
    run_confined: Runner, lsm_probes: Probes, nr: int
) -> None:
    """The point of an allow-list: a system call added next year is refused (EPERM, not the
    kernel's ENOSYS), until we decide otherwise."""
    proc = run_confined([lsm_probes.try_syscall, str(nr)], bpf=seccomp.compile_policy())
    assert parse_errno(proc.stdout) == errno.EPERM


@root
@needs_root
def test_deny_extra_narrows(run_confined: Runner, lsm_probes: Probes) -> None:
    bpf = seccomp.compile_policy(deny_extra=["getppid"])
    assert try_syscall(run_confined, lsm_probes, "getppid", bpf=bpf) == errno.EPERM
    assert try_syscall(run_confined, lsm_probes, "getpid", bpf=bpf) == 0


# --- processes, threads, namespaces -----------------------------------------------------------


@root
@needs_root
@pytest.mark.parametrize("flag", list(NS_FLAGS))
def test_clone_with_a_namespace_flag_fails_with_eperm(
    run_confined: Runner, lsm_probes: Probes, flag: str
) -> None:
    bpf = seccomp.compile_policy()
    proc = run_confined([lsm_probes.clone_probe, "clone", hex(NS_FLAGS[flag])], bpf=bpf)
    assert parse_errno(proc.stdout) == errno.EPERM
    control = run_confined([lsm_probes.clone_probe, "clone", hex(NS_FLAGS[flag])])
    assert parse_errno(control.stdout) == 0, "root should manage this without the filter"


@root
@needs_root
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
    run_confined: Runner, lsm_probes: Probes, mode: list[str]
) -> None:
    proc = run_confined([lsm_probes.clone_probe, *mode], bpf=seccomp.compile_policy(), uid=NOBODY)
    assert proc.stdout.strip() == "ok", (proc.stdout, proc.stderr)


@root
@needs_root
@pytest.mark.parametrize("flags", [0, CLONE_NEWTIME, NS_FLAGS["CLONE_NEWUSER"]])
def test_clone3_fails_with_enosys(run_confined: Runner, lsm_probes: Probes, flags: int) -> None:
    proc = run_confined(
        [lsm_probes.clone_probe, "clone3", hex(flags)], bpf=seccomp.compile_policy()
    )
    assert parse_errno(proc.stdout) == errno.ENOSYS


@root
@needs_root
@pytest.mark.parametrize("flags", [CLONE_NEWTIME, *NS_FLAGS.values()])
def test_unshare_fails_with_eperm(run_confined: Runner, lsm_probes: Probes, flags: int) -> None:
    """CLONE_NEWTIME cannot go through clone(2) (its bit is the exit signal's): unshare and
    clone3 are its only ways in, and both are refused."""
    proc = run_confined(
        [lsm_probes.clone_probe, "unshare", hex(flags)], bpf=seccomp.compile_policy()
    )
    assert parse_errno(proc.stdout) == errno.EPERM


# --- checked arguments ----------------------------------------------------------------------

AF_INET, AF_INET6, AF_PACKET, AF_ALG, AF_VSOCK, AF_BLUETOOTH = 2, 10, 17, 38, 40, 31
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3


@root
@needs_root
@pytest.mark.parametrize(
    ("family", "kind", "expected"),
    [
        (1, SOCK_STREAM, 0),
        (AF_INET, SOCK_STREAM, 0),
        (AF_INET6, SOCK_DGRAM, 0),
        (16, SOCK_RAW, 0),  # AF_NETLINK, NETLINK_ROUTE
        (AF_PACKET, SOCK_RAW, errno.EPERM),
        (AF_ALG, 5, errno.EPERM),
        (AF_VSOCK, SOCK_STREAM, errno.EPERM),  # would reach the host in a VM
        (AF_BLUETOOTH, SOCK_STREAM, errno.EPERM),
    ],
)
def test_socket_families(
    run_confined: Runner, lsm_probes: Probes, family: int, kind: int, expected: int
) -> None:
    bpf = seccomp.compile_policy()
    assert try_syscall(run_confined, lsm_probes, "socket", family, kind, 0, bpf=bpf) == expected


@root
@needs_root
def test_strict_refuses_every_socket_but_keeps_socketpair(
    run_confined: Runner, lsm_probes: Probes
) -> None:
    bpf = seccomp.compile_policy("strict")
    assert (
        try_syscall(run_confined, lsm_probes, "socket", 1, SOCK_STREAM, 0, bpf=bpf) == errno.EPERM
    )
    assert try_syscall(run_confined, lsm_probes, "socket", AF_INET, 1, 0, bpf=bpf) == errno.EPERM
    assert try_syscall(run_confined, lsm_probes, "connect", 0, 0, 0, bpf=bpf) == errno.EPERM
    # socketpair's ret is the 0 of success; fds go to a bad pointer, so EFAULT is fine too
    assert (
        try_syscall(run_confined, lsm_probes, "socketpair", 1, 1, 0, BAD, bpf=bpf) == errno.EFAULT
    )
    assert try_syscall(run_confined, lsm_probes, "socketpair", AF_INET, 1, 0, BAD, bpf=bpf) == (
        errno.EPERM
    )


@root
@needs_root
@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        (0xFFFFFFFF, 0),  # query
        (0x0, 0),
        (0x8, 0),  # PER_LINUX32
        (0x0040000, errno.EPERM),  # ADDR_NO_RANDOMIZE: would undo ASLR
        (0x0400000, errno.EPERM),  # READ_IMPLIES_EXEC
    ],
)
def test_personality(run_confined: Runner, lsm_probes: Probes, persona: int, expected: int) -> None:
    bpf = seccomp.compile_policy()
    assert try_syscall(run_confined, lsm_probes, "personality", persona, bpf=bpf) == expected


@root
@needs_root
def test_mknod_makes_fifos_but_never_devices(run_confined: Runner, shared_tmp: Path) -> None:
    """Run as root (CAP_MKNOD): the EPERM for devices is the filter's, not the kernel's."""
    script = textwrap.dedent(
        """
        import os, stat
        os.mkfifo("fifo")
        os.mknod("plain", stat.S_IFREG | 0o600)
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            try:
                os.mknod("dev", kind | 0o600, os.makedev(1, 3))
            except PermissionError:
                print("EPERM")
        """
    )
    proc = run_confined(
        ["/usr/bin/python3", "-c", script], bpf=seccomp.compile_policy(), cwd=shared_tmp
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["EPERM", "EPERM"]
    assert stat.S_ISFIFO((shared_tmp / "fifo").stat().st_mode)
    assert not (shared_tmp / "dev").exists()


# --- foreign architectures ----------------------------------------------------------------


@root
@needs_root
@pytest.mark.parametrize("abi", ["i386", "x32", "thread-i386"])
def test_foreign_architectures_kill_the_process(
    run_confined: Runner, lsm_probes: Probes, abi: str
) -> None:
    """SIGSYS for the whole process, even when the call comes from a second thread (the
    thread case is what tells SECCOMP_RET_KILL_PROCESS from libseccomp's KILL_THREAD)."""
    if sys.maxsize < 2**32 or os.uname().machine != "x86_64":
        pytest.skip("x86_64 only")
    proc = run_confined([lsm_probes.foreign_arch, abi], bpf=seccomp.compile_policy())
    assert proc.returncode == -signal.SIGSYS, (proc.returncode, proc.stdout)
    assert proc.stdout == ""


@root
@needs_root
def test_foreign_architecture_probe_works_without_the_filter(
    run_confined: Runner, lsm_probes: Probes
) -> None:
    """Control: the i386 probe really reaches the kernel (IA32 emulation is on here); x32 is
    compiled out of this kernel (ENOSYS), so the filter is what kills it, not the kernel."""
    i386 = run_confined([lsm_probes.foreign_arch, "i386"])
    x32 = run_confined([lsm_probes.foreign_arch, "x32"])
    native = run_confined([lsm_probes.foreign_arch, "native"], bpf=seccomp.compile_policy())
    assert native.returncode == 0 and int(native.stdout.split("=")[1]) > 0
    if i386.returncode == -signal.SIGSEGV:
        pytest.skip("IA32 emulation is disabled on this kernel (ia32_emulation=0)")
    assert i386.returncode == 0 and int(i386.stdout.split("=")[1]) > 0
    assert x32.returncode == 0
    x32_ret = int(x32.stdout.split("=")[1])
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


def _env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def _need(*tools: str) -> list[str]:
    found = [shutil.which(t) for t in tools]
    if not all(found):
        pytest.skip(f"needs {', '.join(tools)}")
    return [str(f) for f in found]


@root
@needs_root
@pytest.mark.parametrize("policy", list(seccomp.POLICIES))
@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("true", ["/bin/true"], ""),
        ("python", ["/usr/bin/python3", "-c", PYTHON_SCRIPT], "python ok"),
        ("bash", ["bash", "-c", "echo hi | cat; x=$(echo sub); echo $x"], "hi\nsub"),
        ("node", ["node", "-e", NODE_SCRIPT], "1"),
        ("java", ["java", "-version"], ""),
    ],
)
def test_ordinary_programs_run(
    run_confined: Runner,
    shared_tmp: Path,
    name: str,
    argv: list[str],
    expected: str,
    policy: str,
) -> None:
    exe = _need(argv[0])[0]
    proc = run_confined(
        [exe, *argv[1:]],
        bpf=seccomp.compile_policy(policy),
        uid=NOBODY,
        cwd=shared_tmp,
        env=_env(shared_tmp),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


@root
@needs_root
def test_gcc_and_gxx_compile_link_and_run(run_confined: Runner, shared_tmp: Path) -> None:
    gcc, gxx = _need("gcc", "g++")
    (shared_tmp / "hello.c").write_text(C_HELLO)
    (shared_tmp / "hello.cc").write_text(CXX_HELLO)
    script = (
        f"{gcc} -O2 -Wall -o hello hello.c && ./hello && "
        f"{gxx} -O2 -pthread -o hellocc hello.cc && ./hellocc"
    )
    proc = run_confined(
        ["/bin/sh", "-c", script],
        bpf=seccomp.compile_policy(),
        uid=NOBODY,
        cwd=shared_tmp,
        env=_env(shared_tmp),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["c ok", "c++ ok"]


@root
@needs_root
def test_javac_and_java_run(run_confined: Runner, shared_tmp: Path) -> None:
    javac, java = _need("javac", "java")
    (shared_tmp / "Hello.java").write_text(JAVA_HELLO)
    proc = run_confined(
        ["/bin/sh", "-c", f"{javac} Hello.java && {java} -cp . Hello"],
        bpf=seccomp.compile_policy(),
        uid=NOBODY,
        cwd=shared_tmp,
        env=_env(shared_tmp),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "java ok"


@root
@needs_root
def test_rustc_compiles_and_the_binary_runs(run_confined: Runner, shared_tmp: Path) -> None:
    """rustc lives under /root/.cargo on the dev machine, so this one stays root."""
    rustc = shutil.which("rustc") or "/root/.cargo/bin/rustc"
    if not os.access(rustc, os.X_OK):
        pytest.skip("needs rustc")
    (shared_tmp / "hello.rs").write_text(
        "fn main() { let t = std::thread::spawn(|| 1); assert_eq!(t.join().unwrap(), 1);"
        ' let o = std::process::Command::new("/bin/true").status().unwrap();'
        ' assert!(o.success()); println!("rust ok"); }\n'
    )
    home = Path(rustc).resolve().parents[2]  # rustup keeps its state next to cargo's bin/
    env = _env(shared_tmp) | {
        "PATH": f"{Path(rustc).parent}:/usr/bin:/bin",
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(home / ".rustup")),
        "CARGO_HOME": os.environ.get("CARGO_HOME", str(home / ".cargo")),
    }
    proc = run_confined(
        ["/bin/sh", "-c", f"{rustc} -O hello.rs -o hello && ./hello"],
        bpf=seccomp.compile_policy(),
        cwd=shared_tmp,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "rust ok"


# --- install ---------------------------------------------------------------------------------


def _in_child(fn: object) -> int:
    """Run ``fn()`` in a forked child; its exit status is 0 if it returned True."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if fn() else 1)  # type: ignore[operator]
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_install_refuses_without_no_new_privs() -> None:
    def attempt() -> bool:
        if prctl.get_no_new_privs():
            return False
        try:
            seccomp.install(seccomp.compile_policy())
        except seccomp.SeccompError as exc:
            return exc.errno == errno.EPERM and "no_new_privs" in str(exc)
        return False

    assert _in_child(attempt) == 0


def test_install_rejects_garbage() -> None:
    def attempt() -> bool:
        prctl.set_no_new_privs(1)
        for junk in (b"", b"1234567"):
            try:
                seccomp.install(junk)
            except seccomp.SeccompError as exc:
                assert exc.errno == errno.EINVAL
            else:
                return False
        return True

    assert _in_child(attempt) == 0


def test_bench_compile_and_install(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a benchmark suite, a guard and a record: building is ~ms once per process, install
    is a single system call (hundreds of µs in the kernel, JIT and action cache included)."""
    seccomp._compile.cache_clear()
    start = time.perf_counter()
    bpf = seccomp.compile_policy()
    compile_s = time.perf_counter() - start
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        prctl.set_no_new_privs(1)
        t0 = time.perf_counter()
        seccomp.install(bpf)
        os.write(write, repr(time.perf_counter() - t0).encode())
        os._exit(0)
    os.close(write)
    install_s = float(os.read(read, 100))
    os.close(read)
    os.waitpid(pid, 0)
    with capsys.disabled():
        print(
            f"\nseccomp: compile_policy {compile_s * 1e3:.1f} ms ({len(bpf) // 8} instructions),"
            f" install {install_s * 1e6:.0f} µs"
        )
    assert compile_s < 1.0
    assert install_s < 0.05
