"""Landlock, tested from inside: a forked child confines itself, tries things, and reports the
errno of each attempt; the parent asserts. Each refusal is paired with a control (the same
attempt outside the ruleset, or with the scope off) so that the EACCES/EPERM is Landlock's.

The children run as root where the point is that DAC would allow the attempt, and as nobody
(65534) where the point is that an unprivileged process can confine itself.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import prctl
import pytest

from sandboxd.isolation import landlock, seccomp

NOBODY = 65534
ABI = landlock.abi_version()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="Landlock is not available")
needs_scopes = pytest.mark.skipif(ABI < 6, reason="Landlock scopes need ABI 6")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
root = pytest.mark.root

SYSTEM = [p for p in ("/usr", "/bin", "/lib", "/lib64", "/etc") if os.path.exists(p)]
DEV_FILES = ["/dev/null", "/dev/zero", "/dev/full"]


def attempt(fn: Callable[[], object]) -> int:
    """0 if ``fn()`` succeeded, else the errno it raised."""
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def in_domain(
    fn: Callable[[], Any],
    *,
    uid: int | None = None,
    nnp: bool = True,
    **restrict_kw: Any,
) -> dict[str, Any]:
    """Fork; in the child set no_new_privs, maybe drop to ``uid``, ``landlock.restrict`` with
    ``restrict_kw`` (if any), run ``fn`` and send back its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            if nnp:
                prctl.set_no_new_privs(1)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            abi = landlock.restrict(**restrict_kw) if restrict_kw else None
            result: dict[str, Any] = {"abi": abi, "value": fn()}
        except BaseException as exc:
            result = {"exc": type(exc).__name__, "errno": getattr(exc, "errno", None)}
            result["message"] = str(exc)
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks))


@pytest.fixture
def tree(shared_tmp: Path) -> Iterator[dict[str, Path]]:
    """ro/ (a readable file), rw/ and rw2/ (writable), secret/ (nothing), all nobody-owned."""
    paths = {name: shared_tmp / name for name in ("ro", "rw", "rw2", "secret")}
    for path in paths.values():
        path.mkdir()
    (paths["ro"] / "file").write_text("ro data")
    (paths["rw"] / "existing").write_text("rw data")
    (paths["secret"] / "file").write_text("secret")
    if os.geteuid() == 0:
        for path in shared_tmp.rglob("*"):
            os.chown(path, NOBODY, NOBODY)
    yield paths


def rules(tree: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {
        "read_paths": [*SYSTEM, str(tree["ro"])],
        "write_paths": [str(tree["rw"]), str(tree["rw2"])],
        "write_files": DEV_FILES,
        **extra,
    }


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


# --- filesystem ------------------------------------------------------------------------------


@root
@needs_root
@needs_landlock
def test_unprivileged_process_confines_itself(tree: dict[str, Path]) -> None:
    ro, rw, secret = tree["ro"], tree["rw"], tree["secret"]

    def probe() -> dict[str, int]:
        return {
            "read ro": attempt(lambda: (ro / "file").read_text()),
            "list ro": attempt(lambda: os.listdir(ro)),
            "exec /bin/true": attempt(lambda: subprocess.run(["/bin/true"], check=True)),
            "write ro": attempt(lambda: open(ro / "file", "a").close()),
            "create in ro": attempt(lambda: (ro / "new").write_text("x")),
            "read secret": attempt(lambda: (secret / "file").read_text()),
            "list secret": attempt(lambda: os.listdir(secret)),
            "create in tmp": attempt(lambda: open("/tmp/sandboxd-landlock-escape", "w").close()),
            "write rw": attempt(lambda: (rw / "new").write_text("x")),
            "append rw": attempt(lambda: open(rw / "existing", "a").close()),
            "mkdir rw": attempt(lambda: (rw / "d").mkdir()),
            "symlink rw": attempt(lambda: (rw / "link").symlink_to("new")),
            "fifo rw": attempt(lambda: os.mkfifo(rw / "fifo")),
            "rename within rw": attempt(lambda: os.rename(rw / "new", rw / "d" / "moved")),
            "rename rw to rw2": attempt(lambda: os.rename(rw / "d", tree["rw2"] / "d")),
            "truncate rw": attempt(lambda: os.truncate(rw / "existing", 0)),
            "unlink rw": attempt(lambda: os.unlink(rw / "link")),
        }

    got = in_domain(probe, uid=NOBODY, **rules(tree))
    assert got["abi"] == ABI
    ok = {k: 0 for k in ("read ro", "list ro", "exec /bin/true")}
    ok |= {k: 0 for k in got["value"] if k.endswith(("rw", "rw2"))}
    denied = {k: errno.EACCES for k in got["value"] if k not in ok}
    if ABI < 2:
        ok["rename rw to rw2"] = errno.EXDEV  # no REFER right before ABI 2
    assert got["value"] == ok | denied
    assert (tree["rw2"] / "d" / "moved").read_text() == "x"
    assert not Path("/tmp/sandboxd-landlock-escape").exists()


@root
@needs_root
@needs_landlock
def test_denials_are_landlocks_not_dacs(tree: dict[str, Path]) -> None:
    """Control: the same nobody-owned files, as nobody, without the ruleset, are all fine."""

    def probe() -> list[int]:
        return [
            attempt(lambda: (tree["secret"] / "file").read_text()),
            attempt(lambda: (tree["ro"] / "new").write_text("x")),
        ]

    assert in_domain(probe, uid=NOBODY)["value"] == [0, 0]


@root
@needs_root
@needs_landlock
def test_device_files(tree: dict[str, Path]) -> None:
    def probe() -> dict[str, int]:
        def write(path: str, data: bytes = b"x") -> None:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        return {
            "write /dev/null": attempt(lambda: write("/dev/null")),
            "read /dev/zero": attempt(lambda: open("/dev/zero", "rb").read(4)),
            "write /dev/full": attempt(lambda: write("/dev/full")),  # ENOSPC: the open passed
            "read /dev/urandom": attempt(lambda: open("/dev/urandom", "rb").read(4)),
        }

    got = in_domain(probe, uid=NOBODY, **rules(tree))["value"]
    assert got == {
        "write /dev/null": 0,
        "read /dev/zero": 0,
        "write /dev/full": errno.ENOSPC,
        "read /dev/urandom": errno.EACCES,  # not listed (getrandom(2) needs no file)
    }


# --- errors ----------------------------------------------------------------------------------


@needs_landlock
def test_missing_path_is_an_error_naming_it(tree: dict[str, Path]) -> None:
    missing = str(tree["ro"] / "no-such-dir")
    got = in_domain(lambda: None, read_paths=[missing], write_paths=[])
    assert got["exc"] == "LandlockError"
    assert got["errno"] == errno.ENOENT
    assert missing in got["message"]


@root
@needs_root
@needs_landlock
def test_without_no_new_privs_an_unprivileged_process_gets_a_clear_error(
    tree: dict[str, Path],
) -> None:
    got = in_domain(lambda: None, uid=NOBODY, nnp=False, **rules(tree))
    assert got["exc"] == "LandlockError"
    assert got["errno"] == errno.EPERM
    assert "no_new_privs" in got["message"]


# --- scopes ----------------------------------------------------------------------------------


@pytest.fixture
def outsider() -> Iterator[int]:
    """A process outside any domain the test creates (a child of the test process)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _signals(target: int) -> dict[str, int]:
    inside = os.fork()
    if inside == 0:  # pragma: no cover - the grandchild, in the same domain
        signal.pause()
        os._exit(0)
    result = {
        "outside, signal 0": attempt(lambda: os.kill(target, 0)),
        "outside, SIGCONT": attempt(lambda: os.kill(target, signal.SIGCONT)),
        "parent": attempt(lambda: os.kill(os.getppid(), 0)),
        "inside": attempt(lambda: os.kill(inside, signal.SIGKILL)),
    }
    os.waitpid(inside, 0)
    return result


@root
@needs_root
@needs_scopes
@pytest.mark.parametrize("scope", [True, False])
def test_signals_stay_inside_the_domain(tree: dict[str, Path], outsider: int, scope: bool) -> None:
    """As root, so that only Landlock can refuse; scope off is the control."""
    got = in_domain(lambda: _signals(outsider), **rules(tree, scope_signals=scope))["value"]
    refused = errno.EPERM if scope else 0
    assert got == {
        "outside, signal 0": refused,
        "outside, SIGCONT": refused,
        "parent": refused,
        "inside": 0,
    }


@pytest.fixture
def abstract_listener() -> Iterator[bytes]:
    name = f"\0sandboxd-test-landlock-{os.getpid()}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(8)
        yield name


def _abstract(name: bytes) -> dict[str, int]:
    def connect(target: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(target)

    own = f"\0sandboxd-test-landlock-inside-{os.getpid()}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(own)
        server.listen(1)
        return {"outside": attempt(lambda: connect(name)), "inside": attempt(lambda: connect(own))}


@needs_scopes
@pytest.mark.parametrize("scope", [True, False])
def test_abstract_unix_sockets_stay_inside_the_domain(
    tree: dict[str, Path], abstract_listener: bytes, scope: bool
) -> None:
    kw = rules(tree, scope_abstract_unix=scope)
    got = in_domain(lambda: _abstract(abstract_listener), **kw)["value"]
    assert got == {"outside": errno.EPERM if scope else 0, "inside": 0}


# --- with the rest of the stack --------------------------------------------------------------


@root
@needs_root
@needs_landlock
def test_a_program_runs_under_landlock_and_seccomp(
    run_confined: Any, tree: dict[str, Path]
) -> None:
    """Both layers in the order the container uses (Landlock, then seccomp), as nobody."""
    script = (
        "import os, sys\n"
        f"open({str(tree['rw'] / 'out')!r}, 'w').write('ok')\n"
        "try:\n"
        f"    open({str(tree['secret'] / 'file')!r})\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    proc = run_confined(
        ["/usr/bin/python3", "-c", script],
        landlock=rules(tree),
        bpf=seccomp.compile_policy(),
        uid=NOBODY,
        cwd=str(tree["rw"]),
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "denied"
    assert (tree["rw"] / "out").read_text() == "ok"


def test_unavailable_landlock_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)
    assert landlock.restrict(read_paths=["/nonexistent"], write_paths=[]) == 0
