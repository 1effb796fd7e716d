"""A job reopens its own stdout and stderr by path, and nothing else that way.

Judge submissions write ``freopen("/dev/stdout", "w", stdout)`` and
``open("/dev/stderr", "w")``; both go through ``/proc/self/fd/N`` to the pipe
the supervisor made. The supervisor now gives those pipes to the job's own
user (``Container._give_stdio``): before, they belonged to host root
(``nobody`` inside), mode 0600, and the open failed with EACCES.

The attacks check that the change opened only that: another process's
descriptors (the container's init, ``/proc/1/fd/*``), the host's files, the
pipe's mode (still 0600) and owner (the job's user, no one else).
"""

from __future__ import annotations

import pytest
from attacks import AttackDaemon, Canary, assert_unharmed, lines_of, require_profile

pytestmark = pytest.mark.root

C_FREOPEN = rb"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
int main(void) {
    if (!freopen("/dev/stdout", "w", stdout)) { perror("freopen stdout"); return 1; }
    printf("via freopen\n");
    fflush(stdout);
    int fd = open("/proc/self/fd/1", O_WRONLY);
    if (fd < 0) { perror("open /proc/self/fd/1"); return 1; }
    dprintf(fd, "via proc\n");
    close(fd);
    FILE *e = fopen("/dev/stderr", "w");
    if (!e) { perror("fopen stderr"); return 1; }
    fprintf(e, "to stderr\n");
    fclose(e);
    return 0;
}
"""

PY_STDERR = b"""
import os, stat
with open("/dev/stderr", "w") as f:
    f.write("python stderr\\n")
with open("/proc/self/fd/1", "w") as f:
    f.write("python stdout\\n")
st = os.fstat(1)
print("mode", oct(stat.S_IMODE(st.st_mode)), "uid", st.st_uid, "me", os.getuid())
"""

# Each attempt prints "<what>: blocked <errno>" or "<what>: OPENED".
PY_ATTACK = b"""
import errno, os
def attempt(what, path, flags=os.O_WRONLY):
    try:
        fd = os.open(path, flags)
    except OSError as e:
        print(f"{what}: blocked {errno.errorcode[e.errno]}")
    else:
        os.close(fd)
        print(f"{what}: OPENED")
for n in range(0, 16):
    if os.path.lexists(f"/proc/1/fd/{n}"):
        attempt(f"init-fd-{n}", f"/proc/1/fd/{n}")
attempt("init-fd-dir", "/proc/1/fd", os.O_RDONLY | os.O_DIRECTORY)
for path in ("/etc/passwd", "/usr/bin/env", "CANARY", "/dev/tty", "/dev/console"):
    attempt(f"host {path}", path)
    attempt(f"host-create {path}.x", path + ".x", os.O_WRONLY | os.O_CREAT)
# A link made in /tmp to the job's own stdout leads to the pipe, nothing more.
os.symlink("/proc/self/fd/1", "/tmp/out")
fd = os.open("/tmp/out", os.O_WRONLY)
os.write(fd, b"own pipe through a link: written\\n")
os.close(fd)
"""


def test_c_freopens_dev_stdout_and_opens_proc_self_fd(attack_daemon: AttackDaemon,
                                                      host_canary: Canary) -> None:
    require_profile("c")
    res = attack_daemon.job("c", {"main.c": C_FREOPEN})
    assert res.compile is not None and res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.verdict == "ok", step
    assert step.stdout == b"via freopen\nvia proc\n"
    assert step.stderr == b"to stderr\n"
    assert_unharmed(host_canary, attack_daemon, res)


def test_python_opens_dev_stderr_warm_and_plain(attack_daemon: AttackDaemon,
                                                host_canary: Canary,
                                                warm_and_plain: str) -> None:
    """The warm container's pipes are made at warm-up: they must be given too."""
    step = attack_daemon.run("python3", {"main.py": PY_STDERR})
    assert step.verdict == "ok", step
    assert step.stderr == b"python stderr\n"
    out = lines_of(step)
    assert out[0] == "python stdout"
    # Still 0600: only the job's own user may open it, and that user is the job.
    _, mode, _, uid, _, me = out[1].split()
    assert mode == "0o600" and uid == me, out
    assert_unharmed(host_canary, attack_daemon, step)


def test_reopening_stdio_opens_nothing_else(attack_daemon: AttackDaemon,
                                            host_canary: Canary) -> None:
    source = PY_ATTACK.replace(b"CANARY", str(host_canary.path).encode())
    step = attack_daemon.run("python3", {"main.py": source}, warm_runtime=False)
    assert step.verdict == "ok", step
    lines = lines_of(step)
    assert lines[-1] == "own pipe through a link: written"
    results = dict(line.split(": ", 1) for line in lines[:-1])
    assert "init-fd-dir" in results and len(results) > 5, results
    for what, outcome in results.items():
        assert outcome.startswith("blocked E"), (what, outcome)
    # The init's descriptors are behind ptrace rights the job lacks.
    assert results["init-fd-dir"] == "blocked EACCES", results
    assert_unharmed(host_canary, attack_daemon, step)
