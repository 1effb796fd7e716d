"""``sandboxd check-environment``: what this kernel offers, and how to fix what is missing.

Strategy (isolate-check-environment's): every check *tries* the feature the
way sandboxd uses it (a child process that unshares the namespaces, a cgroup
root that is created and removed, a Landlock ABI query) rather than reading
a config file, and every finding that is not ``ok`` says how to fix it.
``fail`` means sandboxd cannot run; ``warn`` means it runs with something
weaker or noisier (timing a judge cannot trust, for instance).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    status: str  # ok, warn, fail
    name: str
    detail: str
    fix: str = ""


def _try_namespaces() -> Finding:
    from sandboxd.isolation import _libc
    from sandboxd.spawn import CLONE_FLAGS

    pid = os.fork()
    if pid == 0:
        try:
            _libc.unshare(CLONE_FLAGS)
            os._exit(0)
        except OSError as e:
            os._exit(min(e.errno or 1, 125))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Finding("ok", "namespaces", "user, pid, mount, net, ipc, uts, cgroup")
    return Finding("fail", "namespaces", f"unshare failed: {os.strerror(code)}",
                   "enable user namespaces: sysctl user.max_user_namespaces=15000 "
                   "(and kernel.unprivileged_userns_clone=1 on Debian kernels)")


def _cgroups() -> list[Finding]:
    from sandboxd import cgroups

    try:
        backend = cgroups.open_backend(f"check-{os.getpid()}")
    except Exception as e:
        return [Finding("fail", "cgroups", str(e),
                        "mount cgroup v2 at /sys/fs/cgroup, or the v1 memory, cpu, cpuacct, "
                        "pids and freezer hierarchies")]
    try:
        out = [Finding("ok", "cgroups", f"cgroup v{backend.version}, root {backend.root_name}")]
        out += [Finding("warn", "cgroups", p) for p in backend.problems()]
        return out
    finally:
        backend.close()


def _seccomp() -> Finding:
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return Finding("fail", "seccomp", "the kernel has no seccomp filter support",
                       "use a kernel built with CONFIG_SECCOMP_FILTER")
    from sandboxd.isolation import seccomp

    try:
        seccomp.compile_policy("default")
    except Exception as e:
        return Finding("fail", "seccomp", f"cannot build the policy: {e}",
                       "install libseccomp2 (scripts/install.sh does)")
    return Finding("ok", "seccomp", f"filters with {', '.join(actions)}")


def _landlock() -> Finding:
    from sandboxd.isolation import landlock

    abi = landlock.abi_version()
    if abi == 0:
        return Finding("warn", "landlock", "not available: jobs run without the Landlock layer",
                       "boot with lsm=...,landlock (CONFIG_SECURITY_LANDLOCK=y)")
    return Finding("ok", "landlock", f"ABI {abi}" + (" (with signal and abstract-socket scopes)"
                                                     if abi >= 6 else ""))


def _overlay() -> Finding:
    with open("/proc/filesystems") as f:
        if "overlay" in f.read():
            return Finding("ok", "overlayfs", "available (image roots)")
    return Finding("warn", "overlayfs", "not loaded: image-based profiles cannot run",
                   "modprobe overlay")


def _native() -> Finding:
    from sandboxd import native

    try:
        path = native.init_path()
    except native.NativeBuildError as e:
        return Finding("fail", "native init", str(e), "install gcc and libc6-dev")
    return Finding("ok", "native init", str(path))


def _timing() -> list[Finding]:
    """What makes CPU timing noisy: SMT siblings, frequency scaling, swap."""
    out: list[Finding] = []
    try:
        with open("/sys/devices/system/cpu/smt/active") as f:
            if f.read().strip() == "1":
                out.append(Finding("warn", "timing", "SMT (hyper-threading) is on: a sibling "
                                   "thread's load changes a job's speed",
                                   "echo off > /sys/devices/system/cpu/smt/control, or pin "
                                   "jobs (cpuset_pin) to cores whose siblings stay idle"))
    except OSError:
        pass
    gov = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    if os.path.exists(gov):
        with open(gov) as f:
            g = f.read().strip()
        if g != "performance":
            out.append(Finding("warn", "timing", f"CPU frequency governor is {g!r}",
                               "cpupower frequency-set -g performance"))
    with open("/proc/meminfo") as f:
        swap = next((int(line.split()[1]) for line in f if line.startswith("SwapTotal:")), 0)
    if swap:
        out.append(Finding("warn", "timing", f"swap is on ({swap // 1024} MiB): a job near its "
                           "memory limit may slow down instead of failing",
                           "swapoff -a (sandboxd already counts swap inside memory limits)"))
    if not out:
        out.append(Finding("ok", "timing", "no SMT, fixed frequency or no cpufreq, no swap"))
    return out


def checks() -> list[Finding]:
    findings = [Finding("ok", "kernel", platform.release())]
    if os.geteuid() != 0:
        findings.append(Finding("fail", "privileges", "sandboxd must run as root",
                                "run the daemon as root (the jobs themselves never are)"))
        return findings
    findings.append(_try_namespaces())
    findings += _cgroups()
    findings.append(_seccomp())
    findings.append(_landlock())
    findings.append(_overlay())
    findings.append(_native())
    findings += _timing()
    return findings


def main(json_output: bool = False) -> int:
    findings = checks()
    if json_output:
        sys.stdout.write(json.dumps([asdict(f) for f in findings]) + "\n")
    else:
        for f in findings:
            line = f"{f.status.upper():5} {f.name}: {f.detail}"
            if f.fix:
                line += f"\n      fix: {f.fix}"
            print(line)
    return 1 if any(f.status == "fail" for f in findings) else 0
