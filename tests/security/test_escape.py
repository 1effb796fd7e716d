"""Escapes: a job, submitted through the daemon, tries to reach or change the host's files.

Peers' histories: Judge0's symlink escapes (CVE-2024-28185, CVE-2024-28189:
the sandbox's own privileged side followed a link the job planted), runc's
``/proc/self/exe`` overwrite (CVE-2019-5736), the cgroup v1 ``release_agent``
escape (CVE-2022-0492), "shocker" (``open_by_handle_at``), DMOJ's compiler
running outside the sandbox. Each test tries one thing and checks the verdict,
what the kernel answered (``escape.c`` prints it), and that the host is
unharmed (``attacks.assert_unharmed``); the suite-wide check then proves
nothing was left behind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import programs
import pytest
from attacks import (
    RUNTIME_BOMB,
    AttackDaemon,
    Canary,
    assert_unharmed,
    language_starts,
    lines_of,
    require_profile,
)

import sandboxd_protocol as proto
from sandboxd import native

pytestmark = pytest.mark.root

# escape.c's attempts, and the step the kernel must refuse (errno as the probe prints it).
ATTEMPTS = {
    "path": {"open": "ENOENT"},
    "dotdot": {"open": "ENOENT"},
    "symlink": {"open": "ENOENT"},
    "symlink-proc": {"open": "EACCES"},
    "hardlink": {"link": "ENOENT"},
    "hardlink-host": {"link": "EXDEV"},
    "proc-root": {"open": "EACCES"},
    "proc-cwd": {"open": "EACCES"},
    "proc-self-root": {"open": "ENOENT"},
    "handle": {"name_to_handle_at": "EPERM", "open_by_handle_at": "EPERM"},
    "chroot": {"chroot": "EPERM"},
    "mount": {"mount": "EPERM"},
    "bind-mount": {"mount": "EPERM"},
    "pivot-root": {"pivot_root": "EPERM"},
    "mount-api": {"fsopen": "EPERM", "open_tree": "EPERM"},
    "cgroup-mount": {"mount-cgroup": "EPERM"},
    "cgroupfs-write": {"/sys/fs/cgroup/release_agent": "ENOENT",
                       "/sys/fs/cgroup/memory/release_agent": "ENOENT",
                       "/proc/self/cgroup": "EACCES"},
    "sysfs": {"stat": "ENOENT", "mount-sysfs": "EPERM"},
    "userns-unshare": {"unshare": "EPERM"},
    "userns-clone": {"clone": "EPERM"},
    "setns-own": {"setns": "EPERM"},
    "setns-init": {"open": "EACCES"},
    "ptrace": {"ptrace": "EPERM"},
    "process-vm": {"process_vm_readv": "EPERM"},
    "mknod": {"mknod-char": "EPERM", "mknod-block": "EPERM"},
    "devices": {"/dev/mem": "ENOENT", "/dev/kmem": "ENOENT", "/dev/port": "ENOENT",
                "/dev/vda": "ENOENT", "/dev/kmsg": "ENOENT", "/dev/kvm": "ENOENT"},
    "proc-exe-init": {"/proc/1/exe": "EACCES"},
    "proc-exe-write": {"open-path": "EACCES"},
    "self-exe-write": {"/usr/bin/python3": "EACCES"},
    "host-binary-write": {"/usr/bin/env": "EACCES", "/bin/sh": "EACCES",
                          "/etc/passwd": "EACCES", "/etc/ld.so.cache": "EACCES"},
    "core-pattern": {"/proc/sys/kernel/core_pattern": "EACCES"},
    "setuid": {"setresuid": "EPERM", "setgroups": "EPERM"},
    "capset": {"capset": "EPERM"},
}


def refused(step: proto.StepResult) -> dict[str, str]:
    """{step: errno} from escape.c's lines; fails on any line saying ESCAPED."""
    got: dict[str, str] = {}
    for line in lines_of(step):
        assert "ESCAPED" not in line, line
        _attempt, _, rest = line.partition(": blocked ")
        what, _, err = rest.rpartition(" errno=")
        got[what] = err
    return got


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_escape_attempt_is_refused(attack_daemon: AttackDaemon, probes: dict[str, Path],
                                   host_canary: Canary, attempt: str) -> None:
    step = attack_daemon.probe(probes["escape"], attempt, str(host_canary.path))
    assert step.verdict == "ok", step
    got = refused(step)
    for what, err in ATTEMPTS[attempt].items():
        assert got.get(what) == err, (attempt, what, got)
    assert_unharmed(host_canary, attack_daemon, step)


@pytest.mark.parametrize(("language", "start"), language_starts(programs.LANGUAGES))
def test_every_route_to_a_host_file_is_closed_in_every_language(
        attack_daemon: AttackDaemon, host_canary: Canary, language: str, start: str) -> None:
    """The canary by its path, ``..``, a symlink, a hard link, /proc/1/root and cwd."""
    require_profile(language)
    res = attack_daemon.job(language, programs.source(programs.CANARY, language,
                                                      canary=host_canary.path),
                            limits=RUNTIME_BOMB, start=start)
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.verdict == "ok", step
    routes = {}
    for line in lines_of(step):
        route, _, outcome = line.partition(": ")
        routes[route] = outcome
    assert set(routes) == set(programs.ROUTES), step
    for route, outcome in routes.items():
        assert outcome.startswith("blocked"), (language, route, outcome)
    assert_unharmed(host_canary, attack_daemon, res)


SETUID_PROBE = r"""
import os, stat, subprocess
found = []
for top in ('/usr/bin', '/usr/sbin', '/usr/lib', '/usr/libexec', '/usr/local'):
    for d, _dirs, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(p)
print('found', len(found))
for p in sorted(set(found)):
    if not os.access(p, os.X_OK):  # e.g. dbus's helper, 4754 root:messagebus
        continue
    child = subprocess.Popen([p], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    # Read before reaping: a zombie's status still says who it ran as.
    status = open(f'/proc/{child.pid}/status').read().splitlines()
    ids = [line.split(':')[1].split() for line in status if line.startswith(('Uid:', 'Gid:'))]
    child.kill()
    child.wait()
    print(p, ' '.join(ids[0]), ' '.join(ids[1]))
"""


def test_setuid_binaries_do_not_raise_privileges(attack_daemon: AttackDaemon,
                                                  host_canary: Canary,
                                                  warm_and_plain: str) -> None:
    """Every setuid/setgid binary the container can see runs as the job user (nosuid
    mounts and no_new_privs), and ``su``/``mount`` get nothing from their bits."""
    # The walk lstats every file under /usr: with the host's caches cold it took past
    # the default 10 s of wall time once (1.3 s of CPU) in a clean-clone CI run, and
    # time is not what this test is about.
    step = attack_daemon.run("python3", {"main.py": SETUID_PROBE.encode()},
                             limits=proto.JobLimits(wall_time=120.0, cpu_time=30.0))
    assert step.verdict == "ok", step
    lines = lines_of(step)
    assert int(lines[0].split()[1]) >= 1, "the host has setuid binaries: they must be probed"
    checked = set()
    for line in lines[1:]:
        path, *ids = line.split()
        assert ids == ["1000"] * 8, f"{path} ran with uids/gids {ids}"
        checked.add(path)
    assert {p for p in ("/usr/bin/su", "/usr/bin/mount") if Path(p).exists()} <= checked
    sh = attack_daemon.run("bash", {"main.sh": (
        f"/usr/bin/mount -t tmpfs none /box; /usr/bin/su root -c 'cat {host_canary.path}'"
        "; echo done").encode()})
    assert sh.stdout.endswith(b"done\n"), sh
    assert b"must be superuser" in sh.stderr, sh
    assert_unharmed(host_canary, attack_daemon, step, sh)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_proc_self_exe_leads_only_back_to_an_unwritable_helper(
        attack_daemon: AttackDaemon, probes: dict[str, Path], host_canary: Canary) -> None:
    """CVE-2019-5736's target: the binary that starts the job. The job process is a fork
    of the native init, so ``/proc/self/exe`` is ``sandboxd-init``; exec'ing it as the job
    is refused: the job process enforced Landlock on itself, and no rule covers a file
    that no path inside the container leads to. The init binary and the interpreter the
    zygote runs (the host's python) are unchanged, and neither can be opened for writing
    (escape.c, proc-exe-*)."""
    helper = native.init_path()
    interpreter = Path(f"/proc/{attack_daemon.pid}/exe").resolve()
    before = _sha(helper), _sha(interpreter)
    step = attack_daemon.run("bash", {"main.sh": b"true"}, argv=["/proc/self/exe"])
    assert step.verdict == "runtime_error" and step.exit_code == 127, step
    assert step.stderr == (b"sandboxd: program not executable: /proc/self/exe "
                           b"(Permission denied)\n"), step
    for attempt in ("proc-exe-init", "proc-exe-write", "self-exe-write"):
        got = attack_daemon.probe(probes["escape"], attempt, str(host_canary.path))
        refused(got)
    assert (_sha(helper), _sha(interpreter)) == before
    assert_unharmed(host_canary, attack_daemon, step)


def test_compile_step_links_are_not_followed_into_the_run(attack_daemon: AttackDaemon,
                                                           host_canary: Canary) -> None:
    """Judge0's escapes: the job plants links where the sandbox's privileged side will
    look. Here the compile step's output is collected by the container's init, and only
    regular files: symlinks (to the canary, into /proc/1/root, to /), FIFOs and links
    never reach the run step, which sees only the regular file."""
    c = host_canary.path
    plant = (f"ln -s {c} main; ln -s /proc/1/root{c} other; mkfifo fifo; "
             f"mkdir d; ln -s / d/root; echo regular > real")
    res = attack_daemon.job("bash", {"main.sh": b"ls -A; cat main other fifo d/root/etc/hostname; "
                                                b"cat real"},
                            compile=proto.CompileStep(argv=("/bin/sh", "-c", plant)))
    assert res.compile is not None and res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.stdout.split() == [b"main.sh", b"real", b"regular"], step
    assert_unharmed(host_canary, attack_daemon, res)


def test_a_deep_tree_from_the_compile_step_is_refused_not_followed(
        attack_daemon: AttackDaemon, host_canary: Canary) -> None:
    """The init walks the compile step's /box to carry its files on; a tree 200
    directories deep (each level costs the walker stack) is refused with a clear
    error instead of crashing it, and the daemon serves the next job."""
    plant = "for i in $(seq 200); do mkdir d && cd d || exit 1; done; echo x > f"
    res = attack_daemon.job("bash", {"main.sh": b"echo never"},
                            compile=proto.CompileStep(argv=("/bin/sh", "-c", plant)))
    assert res.compile is not None and res.compile.verdict == "sandbox_error", res.compile
    assert "more than 64 deep" in (res.compile.reason or ""), res.compile
    assert not res.steps or all(s.verdict != "ok" for s in res.steps), res
    after = attack_daemon.run("bash", {"main.sh": b"echo fine"})
    assert after.verdict == "ok" and after.stdout == b"fine\n", after
    assert_unharmed(host_canary, attack_daemon, res, after)


def test_the_compiler_runs_inside_the_sandbox(attack_daemon: AttackDaemon,
                                              host_canary: Canary) -> None:
    """DMOJ ran compilers outside its sandbox (judge-server #318): here gcc cannot
    ``#include`` a host file, and a source that never ends (``#include "/dev/zero"``)
    meets the compile step's limits."""
    res = attack_daemon.job("c", {"main.c": f'#include "{host_canary.path}"\n'.encode()})
    assert res.compile is not None and res.compile.verdict == "compile_error", res
    assert b"No such file or directory" in res.compile.stderr
    forever = attack_daemon.job(
        "c", {"main.c": b'#include "/dev/zero"\n'},
        compile=proto.CompileStep(limits=proto.JobLimits(cpu_time=1.0, wall_time=2.0,
                                                         memory=128 << 20)))
    assert forever.compile is not None and forever.compile.verdict == "compile_error", forever
    reason = forever.compile.reason or ""  # "memory", or "memory_limit (memory)"...
    assert any(limit in reason for limit in ("cpu", "wall", "memory")), forever.compile
    assert_unharmed(host_canary, attack_daemon, res, forever)
