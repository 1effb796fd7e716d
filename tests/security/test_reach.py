"""Leaks and reach: what a job can see of the host and of other jobs, and whom it can touch.

Other processes' environments (the daemon's secret is in every container
process's ancestry), the mount table, kernel memory, /sys, the host's Unix
sockets (by path and abstract), TCP and UDP on the host's loopback (only
loopback is ever targeted), raw and packet sockets, signals to host pids, and
what one job could leave for the next: IPC objects and files. Each job is a
small Python program printing what it got; the host side checks that nothing
arrived where it listens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks import AttackDaemon, Canary, assert_unharmed, lines_of

# Every job here is Python: each test runs handed to the warm runtime, then started plainly.
pytestmark = [pytest.mark.root, pytest.mark.usefixtures("warm_and_plain")]


def py(ad: AttackDaemon, code: str) -> list[str]:
    step = ad.run("python3", {"main.py": code.encode()})
    assert step.verdict == "ok", step
    return lines_of(step)


TRY = """
import errno, os, socket
def attempt(name, f):
    try:
        print(name, 'ALLOWED', repr(f())[:200])
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
"""


def outcomes(lines: list[str]) -> dict[str, str]:
    return {line.split()[0]: line.split(None, 1)[1] for line in lines}


# --------------------------------------------------------------- what it sees


def test_no_other_process_environment_is_readable(attack_daemon: AttackDaemon,
                                                  host_canary: Canary) -> None:
    """Only the job's own processes and the init are visible, the init's environment
    (inherited from the daemon, secret included) is refused, and the job's own holds
    only what the profile gives it."""
    step = attack_daemon.run("python3", {"main.py": (TRY + """
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print('pids', *pids)
for pid in pids:
    for what in ('environ', 'cmdline'):
        attempt(f'{what}-{pid}', lambda: open(f'/proc/{pid}/{what}', 'rb').read())
print('own', *sorted(os.environ))
""").encode()})
    assert step.verdict == "ok", step
    got = outcomes(lines_of(step))
    assert got["pids"].split()[0] == "1", got
    assert got["environ-1"] == "EACCES", got
    assert got["own"].split() == sorted(["PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE",
                                         "PYTHONUNBUFFERED"]), got
    assert_unharmed(host_canary, attack_daemon, step)


ALLOWED_MOUNTS = ("/", "/usr", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                  "/libx32", "/etc", "/box", "/tmp", "/dev", "/proc")


def test_the_mount_table_shows_only_the_container(attack_daemon: AttackDaemon,
                                                  host_canary: Canary) -> None:
    step = attack_daemon.run("python3", {"main.py": b"print(open('/proc/self/mountinfo')"
                                                    b".read())"})
    table = step.stdout.decode()
    points = [line.split()[4] for line in table.splitlines() if line.strip()]
    assert points[0] == "/", table
    for point in points:
        assert point in ALLOWED_MOUNTS or point.startswith(("/etc/", "/dev/", "/proc/")), point
    for host_path in ("/work", "/root", "/home", str(host_canary.path.parent)):
        assert host_path not in table, (host_path, table)
    assert_unharmed(host_canary, attack_daemon, step)


def test_kernel_memory_and_sys_are_out_of_reach(attack_daemon: AttackDaemon) -> None:
    """/proc/kcore and /proc/kallsyms read as nothing (masked), the kernel's page tables
    in /proc are root's, /proc/self/pagemap hides physical frame numbers, /sys is
    absent."""
    got = outcomes(py(attack_daemon, TRY + """
import struct
for p in ('/proc/kcore', '/proc/kallsyms', '/dev/core', '/proc/kmsg'):
    attempt(p, lambda: len(open(p, 'rb').read(4096)))
for p in ('/proc/kpageflags', '/proc/kpagecount', '/proc/kpagecgroup', '/dev/mem'):
    attempt(p, lambda: len(open(p, 'rb').read(8)))
buf = bytearray(b'x' * 4096 * 4)  # present pages
addr = id(buf) // 4096
def frames():
    with open('/proc/self/pagemap', 'rb') as f:
        f.seek(addr * 8)
        entries = struct.unpack('4Q', f.read(32))
    return sorted({e & ((1 << 55) - 1) for e in entries if e >> 63})
attempt('pagemap-frames', frames)
attempt('/sys', lambda: os.listdir('/sys'))
"""))
    for p in ("/proc/kcore", "/proc/kallsyms", "/dev/core", "/proc/kmsg"):
        # masked by /dev/null; or absent where the kernel has none (no CONFIG_PROC_KCORE)
        assert got[p] in ("ALLOWED 0", "ENOENT"), (p, got[p])
    for p in ("/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup"):
        assert got[p] == "EACCES", (p, got[p])
    assert got["/dev/mem"] == "ENOENT"
    assert got["pagemap-frames"] in ("ALLOWED [0]", "ALLOWED []"), got["pagemap-frames"]
    assert got["/sys"] == "ENOENT"


# ---------------------------------------------------------- whom it can reach


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[dict[str, socket.socket]]:
    """Host sockets on loopback and in the filesystem, each non-blocking: what the job
    must not reach."""
    socks: dict[str, socket.socket] = {}
    try:
        for name, family, kind, addr in (
                ("tcp", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
                ("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
                ("udp", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
                ("unix", socket.AF_UNIX, socket.SOCK_STREAM, str(tmp_path / "host.sock")),
                ("abstract", socket.AF_UNIX, socket.SOCK_STREAM,
                 f"\0sandboxd-attack-{os.urandom(6).hex()}")):
            s = socket.socket(family, kind)
            socks[name] = s
            s.bind(addr)
            if kind == socket.SOCK_STREAM:
                s.listen()
            s.setblocking(False)
        yield socks
    finally:
        for s in socks.values():
            s.close()


def _nothing_arrived(s: socket.socket) -> bool:
    try:
        if s.type == socket.SOCK_STREAM:
            s.accept()[0].close()
        else:
            s.recv(65536)
    except BlockingIOError:
        return True
    return False


def test_host_sockets_are_unreachable(attack_daemon: AttackDaemon,
                                      listeners: dict[str, socket.socket]) -> None:
    """TCP (v4, v6) and UDP on the host's loopback, a Unix socket by path (and the
    daemon's own), an abstract one: the job has its own network namespace and a root
    without the host's files, so it reaches none of them, and none receives a byte."""
    tcp, tcp6 = listeners["tcp"].getsockname()[1], listeners["tcp6"].getsockname()[1]
    udp = listeners["udp"].getsockname()[1]
    unix = listeners["unix"].getsockname()
    abstract = listeners["abstract"].getsockname()
    got = outcomes(py(attack_daemon, TRY + f"""
def connect(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(addr)
    return s.send(b'hello')
def datagrams():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sum(s.sendto(b'hello', ('127.0.0.1', {udp})) for _ in range(100))
attempt('tcp', lambda: connect(socket.AF_INET, ('127.0.0.1', {tcp})))
attempt('tcp6', lambda: connect(socket.AF_INET6, ('::1', {tcp6})))
attempt('udp', datagrams)
attempt('unix', lambda: connect(socket.AF_UNIX, {unix!r}))
attempt('daemon', lambda: connect(socket.AF_UNIX, {attack_daemon.daemon.socket!r}))
attempt('abstract', lambda: connect(socket.AF_UNIX, {abstract!r}))
"""))
    assert got["tcp"] == got["tcp6"] == "ECONNREFUSED", got
    assert got["unix"] == got["daemon"] == "ENOENT", got
    assert got["abstract"] == "ECONNREFUSED", got
    # UDP sends "succeed" into the job's own loopback, where nobody listens.
    assert got["udp"].startswith("ALLOWED") or got["udp"] == "ECONNREFUSED", got
    for name, s in listeners.items():
        assert _nothing_arrived(s), f"the host's {name} socket received something"


def test_raw_and_packet_sockets_are_refused(attack_daemon: AttackDaemon) -> None:
    got = outcomes(py(attack_daemon, TRY + """
attempt('packet', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
attempt('packet-dgram', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt('raw6', lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
attempt('raw-tcp', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
attempt('ping', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
attempt('vsock', lambda: socket.socket(40, socket.SOCK_STREAM, 0))
attempt('alg', lambda: socket.socket(38, socket.SOCK_SEQPACKET, 0))
"""))
    for name in ("packet", "packet-dgram", "raw", "raw6", "raw-tcp", "vsock", "alg"):
        assert got[name] == "EPERM", (name, got[name])
    assert got["ping"] == "EACCES", got  # ping_group_range of the job's netns is empty


def test_signals_do_not_reach_host_processes(attack_daemon: AttackDaemon) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        got = outcomes(py(attack_daemon, TRY + f"""
import signal
attempt('kill', lambda: os.kill({victim.pid}, signal.SIGKILL))
attempt('kill-daemon', lambda: os.kill({attack_daemon.pid}, signal.SIGKILL))
attempt('pidfd', lambda: os.pidfd_open({victim.pid}))
attempt('kill-all', lambda: os.kill(-1, signal.SIGKILL))
"""))
        assert got["kill"] == got["kill-daemon"] == got["pidfd"] == "ESRCH", got
        assert victim.poll() is None, "a job killed a host process"
        assert attack_daemon.daemon.proc is not None
        assert attack_daemon.daemon.proc.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGKILL)
        victim.wait()


# ------------------------------------------------------------- job to job


def test_ipc_objects_do_not_survive_into_the_next_job(attack_daemon: AttackDaemon,
                                                      probes: dict[str, Path]) -> None:
    """SysV shm, semaphores and message queues, and a POSIX message queue: each job has
    an IPC namespace of its own (and the host's is checked by the autouse fixture)."""
    key = str(0x5A000000 + int.from_bytes(os.urandom(2), "big"))
    made = attack_daemon.probe(probes["ipc"], "make", key)
    # Landlock refuses to create a POSIX queue (its filesystem is none of the job's
    # writable paths): then there is nothing to survive, and the lookup still runs.
    assert lines_of(made)[0] in ("made shm sem msg mq", "made shm sem msg (mq_open: EACCES)"), made
    seen = attack_daemon.probe(probes["ipc"], "look", key)
    assert [line.split()[:2] for line in lines_of(seen)] == [
        ["absent", "shm"], ["absent", "sem"], ["absent", "msg"], ["absent", "mq"]], seen


def test_files_do_not_survive_into_the_next_job(attack_daemon: AttackDaemon) -> None:
    marker = f"left-by-job-{os.urandom(4).hex()}"
    left = py(attack_daemon, f"""
for d in ('/box', '/tmp', '/dev/shm'):
    with open(f'{{d}}/{marker}', 'w') as f:
        f.write('x')
print('left')
""")
    assert left == ["left"]
    seen = py(attack_daemon, """
import os
for d in ('/box', '/tmp', '/dev/shm'):
    print(d, *sorted(os.listdir(d)))
""")
    assert seen == ["/box main.py", "/tmp", "/dev/shm"], seen

