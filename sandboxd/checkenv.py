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


def _egress() -> Finding:
    """Jobs' allow-listed network (sandboxd/egress.py) needs slirp4netns, nsenter and nft."""
    import shutil

    missing = [c for c in ("slirp4netns", "nsenter", "nft") if not shutil.which(c)]
    if missing:
        return Finding("warn", "egress", f"{', '.join(missing)} not found: a job with a "
                       "network allow-list ends as sandbox_error (jobs without one are "
                       "unaffected)", "apt-get install slirp4netns nftables util-linux")
    return Finding("ok", "egress", "slirp4netns and nft (jobs' allow-listed network, where "
                   "egress_allow permits)")


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


# ------------------------------------------------------------------ rootless

def _own_cgroup() -> tuple[int, str]:
    """(cgroup version, our cgroup's path below /sys/fs/cgroup) from /proc/self/cgroup:
    version 2 only when the unified hierarchy is the only one (no v1 controller lines)."""
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
    v1 = [parts for parts in lines if parts[0] != "0"]
    if v1 or not lines:
        return 1, ""
    return 2, lines[0][2]


def _rootless_cgroup() -> Finding:
    version, path = _own_cgroup()
    if version == 1:
        return Finding("fail", "rootless: cgroups", "this host has cgroup v1 controllers (v1 or "
                       "hybrid layout): a cgroup cannot be delegated to an ordinary user, so "
                       "memory, pids and CPU limits could not be applied to jobs",
                       "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only), then "
                       "start the daemon with systemd-run --user -p Delegate=yes (or as root)")
    here = f"/sys/fs/cgroup{path}".rstrip("/") or "/sys/fs/cgroup"
    try:
        with open(f"{here}/cgroup.controllers") as f:
            controllers = set(f.read().split())
    except OSError as e:
        return Finding("fail", "rootless: cgroups", f"cannot read {here}: {e.strerror}")
    missing = {"memory", "pids", "cpu"} - controllers
    writable = all(os.access(f"{here}/{n}", os.W_OK)
                   for n in ("", "cgroup.procs", "cgroup.subtree_control"))
    if not writable:
        return Finding("fail", "rootless: cgroups", f"{here} is not delegated to uid "
                       f"{os.geteuid()} (not writable)",
                       "systemd-run --user -p Delegate=yes sandboxd serve ... (or a user unit "
                       "with Delegate=yes)")
    if missing:
        return Finding("fail", "rootless: cgroups", f"{here} is delegated but lacks the "
                       f"{', '.join(sorted(missing))} controller(s)",
                       "systemd delegates cpu, memory and pids with Delegate=yes; check "
                       "/etc/systemd/system/user@.service.d")
    return Finding("ok", "rootless: cgroups", f"v2, {here} delegated with "
                   f"{', '.join(sorted(controllers))}")


def _subids() -> bool:
    """Whether newuidmap/newgidmap exist and /etc/subuid and /etc/subgid give this user
    a range (what mapping more than one uid into a container takes)."""
    import pwd
    import shutil

    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        return False
    names = {str(os.geteuid())}
    try:
        names.add(pwd.getpwuid(os.geteuid()).pw_name)
    except KeyError:
        pass
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                if not any(line.split(":", 1)[0] in names for line in f):
                    return False
        except OSError:
            return False
    return True


def _rootless() -> list[Finding]:
    """As an ordinary user: each layer tried (or looked up) the way a rootless daemon
    would use it, and what the ones that cannot work would cost."""
    import shutil

    out = []
    ns = _try_namespaces()
    out.append(Finding(ns.status, "rootless: namespaces",
                       ns.detail + (" (unprivileged user namespaces allowed)"
                                    if ns.status == "ok" else ""), ns.fix))
    sub = ("; newuidmap and a subuid/subgid range exist here, which a later version could "
           "use to give each slot's job a uid of its own" if _subids() else "")
    out.append(Finding("warn", "rootless: uids", "a rootless daemon maps one uid, its own: "
                       "the container's root and the job are both the daemon's host uid (the "
                       "job is uid 0 of its namespace, with every capability dropped), jobs "
                       "are told apart by their namespaces and cgroups only, not by a uid of "
                       "their own (isolate's per-box uid), the job keeps the daemon user's "
                       "supplementary groups (setgroups is denied), and a job that escaped "
                       "would be the daemon's user" + sub,
                       "run the daemon as a user of its own with no supplementary groups "
                       "and nothing else to protect, or as root"))
    cg = _rootless_cgroup()
    out.append(cg)
    out.append(_seccomp())
    out.append(_landlock())
    out.append(Finding("warn", "rootless: priorities", "an ordinary user cannot lower a "
                       "nice value back: a rootless pool is made at the normal priority (not "
                       "nice 10), so its refills compete with running jobs (judges' timing)",
                       "run as root, or grant the daemon CAP_SYS_NICE"))
    out.append(Finding("warn", "rootless: egress", "an egress allow-list is not tried by a "
                       "rootless daemon in this version (slirp4netns "
                       + ("present" if shutil.which("slirp4netns") else "missing")
                       + "): give rootless daemons profiles without egress",
                       "run the daemon as root for egress jobs"))
    if ns.status == "ok" and cg.status == "ok":
        out.append(Finding("ok", "rootless: serve", "sandboxd serve can run as this user "
                           "(docs/rootless.md): namespaces, limits, seccomp and Landlock as "
                           "for root; the costs are the warnings above"))
    else:
        out.append(Finding("fail", "rootless: serve", "sandboxd serve cannot run as this user "
                           "here: " + "; ".join(f.detail for f in (ns, cg) if f.status != "ok"),
                           "; ".join(f.fix for f in (ns, cg) if f.status != "ok" and f.fix)
                           or "run the daemon as root"))
    return out


def checks() -> list[Finding]:
    findings = [Finding("ok", "kernel", platform.release())]
    if os.geteuid() != 0:
        findings.append(Finding("warn", "privileges", f"not root (uid {os.geteuid()}): "
                                "the findings below are those of a rootless daemon "
                                "(docs/rootless.md)",
                                "run the daemon as root for every layer at no cost"))
        findings += _rootless()
        return findings
    findings.append(_try_namespaces())
    findings += _cgroups()
    findings.append(_seccomp())
    findings.append(_landlock())
    findings.append(_overlay())
    findings.append(_native())
    findings.append(_egress())
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
