"""Landlock, tested as production enforces it: the native init of a real container builds
the ruleset from the plan's rules and the job process restricts itself (incontainer.py);
a probe run as the job tries things and reports the errno of each attempt. Each refusal is
paired with a control: the same attempt in a container whose plan has no Landlock (or the
scope off), so that the EACCES/EPERM is Landlock's, not the mounts' or the DAC's.

Where a test needs rules of its own (a writable mount that Landlock must still refuse),
it changes only the plan's rules; the rules come from ``landlock.plan_rules``, as
production's do.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from incontainer import production_rules

from sandboxd import spawn
from sandboxd.isolation import landlock

Runner = Any  # incontainer.in_container
ABI = landlock.abi_version()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="Landlock is not available")
needs_scopes = pytest.mark.skipif(ABI < 6, reason="Landlock scopes need ABI 6")
root = pytest.mark.root

DEV_FILES = list(spawn.WRITABLE_FILES)

# Run as the job: attempts given as Python expressions, the errno of each printed as JSON.
# -I -S: no site (Debian's sitecustomize lives in /etc, which some rules below do not grant).
PROBE = r"""
import json, os, subprocess, sys
def attempt(fn):
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0
def write(path, data=b"x"):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
attempts = json.loads(sys.argv[1])
print(json.dumps({k: attempt(lambda v=v: eval(v)) for k, v in attempts.items()}))
"""


def attempts(run: Runner, tries: dict[str, str], **kw: Any) -> dict[str, int]:
    r = run(["/usr/bin/python3", "-I", "-S", "-c", PROBE, json.dumps(tries)], **kw)
    assert r.verdict == "ok", r
    return json.loads(r.stdout)


# --- ABI -------------------------------------------------------------------------------------


def test_handled_rights_grow_with_the_abi() -> None:
    assert landlock.handled_access_fs(0) == 0
    assert landlock.handled_access_fs(1) == (1 << 13) - 1
    assert landlock.handled_access_fs(2) == (1 << 14) - 1  # + REFER
    assert landlock.handled_access_fs(3) == (1 << 15) - 1  # + TRUNCATE
    assert landlock.handled_access_fs(4) == (1 << 15) - 1  # TCP only
    assert landlock.handled_access_fs(5) == (1 << 16) - 1  # + IOCTL_DEV
    assert landlock.handled_access_fs(7) == landlock.handled_access_fs(5)
    assert landlock.handled_access_fs(99) == landlock.handled_access_fs(5)


@needs_landlock
def test_abi_version_reports_the_kernel() -> None:
    """Kernel 6.18 on the development machine reports ABI 7."""
    assert ABI >= 1
    print(f"Landlock ABI {ABI}")


@needs_landlock
def test_production_rules() -> None:
    """Read (and execute, list) everything, write only the job's own directories and the
    three device files; scoped signals and abstract sockets where the kernel has them."""
    rules = production_rules()
    assert rules is not None
    handled = landlock.handled_access_fs(ABI)
    read = landlock.ACCESS_FS_EXECUTE | landlock.ACCESS_FS_READ_FILE | landlock.ACCESS_FS_READ_DIR
    assert rules.handled_fs == handled
    assert dict(rules.rules) == {"/": read, **{d: handled for d in spawn.WRITABLE_DIRS},
                                 **{f: rules.rules[-1][1] for f in DEV_FILES}}
    assert not rules.rules[-1][1] & (landlock.ACCESS_FS_MAKE_REG | landlock.ACCESS_FS_EXECUTE)
    if ABI >= 6:
        assert rules.scoped == landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET


def test_unavailable_landlock_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Landlock the plan carries no rules, and the init enforces none."""
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)
    assert landlock.plan_rules(read_dirs=["/"], write_dirs=["/box"]) is None


# --- filesystem ------------------------------------------------------------------------------

# Rules of our own, to show Landlock refusing what the mounts allow: /usr readable, /box
# and /tmp writable, /dev/shm (a writable tmpfs) and /etc (readable by the DAC) not listed.
OWN = {"read_dirs": ["/usr"], "write_dirs": ["/box", "/tmp"], "write_files": DEV_FILES}
FS_TRIES = {
    "read /usr": "open('/usr/bin/env', 'rb').read(4)",
    "list /usr": "os.listdir('/usr')",
    "exec /bin/true": "subprocess.run(['/bin/true'], check=True)",
    "read /etc": "open('/etc/passwd').read()",
    "list /etc": "os.listdir('/etc')",
    "create in /dev/shm": "open('/dev/shm/x', 'w').close()",
    "write /box": "open('/box/new', 'w').write('x')",
    "mkdir /box": "os.mkdir('/box/d')",
    "symlink /box": "os.symlink('new', '/box/link')",
    "fifo /box": "os.mkfifo('/box/fifo')",
    "rename into a subdir": "os.rename('/box/new', '/box/d/moved')",  # REFER (ABI 2)
    "truncate /box": "os.truncate('/box/d/moved', 0)",
    "unlink /box": "os.unlink('/box/link')",
    "write /tmp": "open('/tmp/t', 'w').write('x')",
    "write /dev/null": "write('/dev/null')",
    "read /dev/zero": "open('/dev/zero', 'rb').read(4)",
    "write /dev/full": "write('/dev/full')",  # ENOSPC: the open passed
    "read /dev/urandom": "open('/dev/urandom', 'rb').read(4)",  # not listed
}


@root
@needs_landlock
def test_the_job_is_confined_by_the_plan_s_rules(run_in_container: Runner) -> None:
    got = attempts(run_in_container, FS_TRIES, rules=landlock.plan_rules(**OWN))
    denied = {"read /etc", "list /etc", "create in /dev/shm", "read /dev/urandom"}
    expected = {k: errno.EACCES if k in denied else 0 for k in FS_TRIES}
    expected["write /dev/full"] = errno.ENOSPC
    if ABI < 2:
        expected["rename into a subdir"] = errno.EXDEV  # no REFER right before ABI 2
    assert got == expected


@root
@needs_landlock
def test_without_landlock_the_same_attempts_pass(run_in_container: Runner) -> None:
    """Control: the same container with no ruleset; what was refused above passes, so the
    refusals were Landlock's, not the mounts' or the DAC's."""
    got = attempts(run_in_container, FS_TRIES, rules=None)
    expected = {k: 0 for k in FS_TRIES}
    expected["write /dev/full"] = errno.ENOSPC
    assert got == expected


@root
@needs_landlock
def test_production_rules_hold_beneath_the_mounts(run_in_container: Runner) -> None:
    """The production plan: its own directories writable; Landlock refuses /dev/urandom's
    writes and any other device, however the mounts are."""
    got = attempts(run_in_container, {
        "write /box": "open('/box/a', 'w').write('x')",
        "write /tmp": "open('/tmp/a', 'w').write('x')",
        "write /dev/shm": "open('/dev/shm/a', 'w').write('x')",
        "read /etc": "open('/etc/passwd').read()",
        "exec /bin/true": "subprocess.run(['/bin/true'], check=True)",
        "write /dev/null": "write('/dev/null')",
        "write /dev/urandom": "write('/dev/urandom')",
    })
    assert got == {"write /box": 0, "write /tmp": 0, "write /dev/shm": 0, "read /etc": 0,
                   "exec /bin/true": 0, "write /dev/null": 0,
                   "write /dev/urandom": errno.EACCES}


# --- errors ----------------------------------------------------------------------------------


@root
@needs_landlock
def test_a_missing_rule_path_is_a_setup_error_naming_it(run_in_container: Runner) -> None:
    from sandboxd.result import SandboxError

    missing = "/usr/sandboxd-no-such-dir"
    with pytest.raises(SandboxError, match=missing):
        run_in_container(["/bin/true"], rules=landlock.plan_rules(read_dirs=["/", missing],
                                                                   write_dirs=[]))


# --- scopes ----------------------------------------------------------------------------------

# The job runs as the container's root here (the plan's uid 0, capabilities dropped all the
# same), so that the DAC lets it signal the init, PID 1 of its namespace and outside its
# Landlock domain: only the scope can refuse.
SIGNAL_TRIES = {
    "init, signal 0": "os.kill(1, 0)",
    "own child": "os.kill(subprocess.Popen(['/bin/sleep', '5']).pid, 9)",
}


@root
@needs_scopes
@pytest.mark.parametrize("scope", [True, False])
def test_signals_stay_inside_the_domain(run_in_container: Runner, scope: bool) -> None:
    rules = landlock.plan_rules(read_dirs=["/"], write_dirs=spawn.WRITABLE_DIRS,
                                write_files=DEV_FILES, scope_signals=scope)
    got = attempts(run_in_container, SIGNAL_TRIES, rules=rules, uid=0, gid=0)
    assert got == {"init, signal 0": errno.EPERM if scope else 0, "own child": 0}


@pytest.fixture
def abstract_listener() -> Iterator[str]:
    name = f"sandboxd-test-landlock-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(f"\0{name}".encode())
        server.listen(8)
        yield name


@root
@needs_scopes
def test_abstract_unix_sockets_of_the_host_are_out_of_reach(
    run_in_container: Runner, abstract_listener: str
) -> None:
    """In production the host's abstract sockets are in another network namespace, so the
    scope is a second wall behind it (nothing outside the job's domain listens in its
    namespace); the job still reaches its own."""
    connect = ("(lambda s: s.connect(b'\\0' + {!r}.encode()))"
               "(__import__('socket').socket(1, 1))")
    got = attempts(run_in_container, {
        "host": connect.format(abstract_listener),
        "own": "(lambda l: (l.bind(b'\\0own'), l.listen(1), " + connect.format("own")
               + "))(__import__('socket').socket(1, 1))",
    })
    assert got == {"host": errno.ECONNREFUSED, "own": 0}
