"""Language profiles: data files (``profiles/*.toml``) checked against one schema.

Strategy: a profile says how to run (and maybe compile) one language: the
entry file name, argv templates with ``{entry}``, ``{sources}`` and
``{memory_mb}`` placeholders (a runtime with its own heap, the JVM or V8,
must be told the step's memory limit, since it cannot see the cgroup),
environment, default limits and the most a job may ask for, the seccomp
policy and extra read-only mounts. ``SCHEMA`` lists every key; an unknown
key, a wrong type or an unknown placeholder is an error naming file, line
and key. A profile whose runtime is missing on this host (``needs``, looked
up on the containers' PATH) is *unavailable*, with the reason, and is listed
as such, never a crash.

A profile may name an ``image`` (docs/images.md): it is resolved to the
image's id when the profile is loaded (a missing image makes the profile
unavailable), and the image's Env, WorkingDir and Entrypoint+Cmd fill in
``env``, ``workdir`` and ``run`` where the profile does not set them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd import egress
from sandboxd.isolation import mounts
from sandboxd.limits import DEFAULT, MAXIMUM, PROFILE_CEILING, LimitError, Limits, MiB
from sandboxd.spawn import JOB_PATH
from sandboxd_protocol import MEMORY_MODES

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ProfileError(ValueError):
    """A profile file is invalid; the message names file, line and key."""


@dataclass(frozen=True, slots=True)
class CompileSpec:
    argv: tuple[str, ...]
    limits: Limits


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str = ""
    entry: str = "main"
    run: tuple[str, ...] = ("./{entry}",)
    compile: CompileSpec | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = DEFAULT
    max_limits: Limits = MAXIMUM
    seccomp: str = "default"
    binds: tuple[tuple[str, str], ...] = ()
    caches: tuple[str, ...] = ()  # the operator's cache names (config [caches]) it mounts
    needs: tuple[str, ...] = ()
    version_argv: tuple[str, ...] = ()
    path: str = ""
    unavailable: str | None = None  # why the profile cannot run here, or None
    workdir: str = "/box"  # working directory of every step
    image: str = ""  # the image as the profile names it ("" = the host's files)
    image_id: str = ""  # ... resolved when loaded: what ContainerSpec.image takes
    image_store: str = ""
    out_of_memory: tuple[str, ...] = ()  # stderr markers of the runtime's own heap running out
    warm_runtime: str = ""  # sandboxd/runtimes/ name: the interpreter started before the job
    warm_judged: bool = False  # ... also for judged jobs (tests, expected output, pinned)
    memory_mode: str = "peak"  # how a run step's memory limit counts unless the job says
    memory_modes: tuple[str, ...] = ("peak", "address_space")  # the modes a job may ask for
    # Outbound TCP its jobs may make by default (sandboxd/egress.py; capped by the
    # operator's egress_allow); () = no network, as every job without it.
    network_allow: tuple[egress.Destination, ...] = ()

    def entry_index(self) -> int:
        """Where the run argv has its entry file (a warm runtime's profile has one)."""
        return self.run.index("{entry}")

    def run_argv(self, sources: list[str], limits: Limits | None = None) -> list[str]:
        """The run step's argv for these sources, under ``limits`` (the profile's default)."""
        return expand(self.run, self.entry, sources, limits or self.limits)

    def compile_argv(self, sources: list[str], limits: Limits | None = None) -> list[str] | None:
        """The compile step's argv, or None for an interpreted profile."""
        if not self.compile:
            return None
        return expand(self.compile.argv, self.entry, sources, limits or self.compile.limits)

    def version(self) -> str:
        """The runtime's version as it reports it (first line), or '' when unknown."""
        if not self.version_argv or self.unavailable:
            return ""
        # The containers' PATH and nothing of ours (a JAVA_TOOL_OPTIONS would print first).
        env = {"PATH": self.env.get("PATH", JOB_PATH), "LANG": "C.UTF-8"}
        try:
            p = subprocess.run(list(self.version_argv), capture_output=True, timeout=30,
                               env=env, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (p.stdout or p.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else ""


#: ``{name}`` or ``{name:N%}`` in an argv template; a lowercase name is always a placeholder.
_PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::(\d{1,3})%)?\}")
PLACEHOLDERS = {
    "entry": "the entry file name (main.py)",
    "sources": "every uploaded file name, sorted; only as a whole argument",
    "memory_mb": "the step's memory limit in MiB; {memory_mb:75%} for a share of it "
                 "(a heap ceiling for a runtime that cannot see its cgroup)",
}


def expand(template: tuple[str, ...], entry: str, sources: list[str],
           limits: Limits = DEFAULT) -> list[str]:
    """An argv template with its placeholders replaced (``check_template`` vetted it)."""

    def value(m: re.Match[str]) -> str:
        if m.group(1) == "entry":
            return entry
        if m.group(1) == "memory_mb":
            share = int(m.group(2) or 100)
            return str(max(1, limits.memory * share // 100 // MiB))
        return m.group(0)

    out: list[str] = []
    for arg in template:
        if arg == "{sources}":
            out.extend(sources)
        else:
            out.append(_PLACEHOLDER.sub(value, arg))
    return out


def check_template(argv: tuple[str, ...]) -> str | None:
    """What is wrong with an argv template's placeholders, or None."""
    for arg in argv:
        for m in _PLACEHOLDER.finditer(arg):
            name, share = m.group(1), m.group(2)
            if name not in PLACEHOLDERS:
                return (f"unknown placeholder {m.group(0)} (known: "
                        f"{', '.join('{' + k + '}' for k in PLACEHOLDERS)})")
            if share is not None and (name != "memory_mb" or not 1 <= int(share) <= 100):
                return f"{m.group(0)}: only {{memory_mb:N%}} takes a share, 1 to 100 %"
            if name == "sources" and arg != "{sources}":
                return f"{{sources}} must be a whole argument, not part of {arg!r}"
    return None


# key: (type, required, doc)
SCHEMA: dict[str, tuple[type, bool, str]] = {
    "name": (str, True, "the name jobs use to pick this profile"),
    "description": (str, False, "one line for people"),
    "entry": (str, False, "file name of the entry point inside /box"),
    "run": (list, True, "argv of the run step; {entry} and {sources} are replaced "
            "(optional with an image: its Entrypoint+Cmd)"),
    "compile": (dict, False, "table: argv (list) and limits (table) of the compile step"),
    "env": (dict, False, "environment of every step (PATH has a default)"),
    "limits": (dict, False, "default limits of a run step"),
    "max_limits": (dict, False, "the most a job may ask for"),
    "seccomp": (str, False, "seccomp policy name (default: 'default')"),
    "binds": (list, False, "extra read-only mounts: [[host path, container path], ...]"),
    "caches": (list, False, "names of the operator's read-only caches (config [caches]) "
               "every job of this profile gets at /cache/<name>"),
    "needs": (list, False, "host paths (or commands on PATH) the runtime needs"),
    "version": (list, False, "argv that prints the runtime's version"),
    "out_of_memory": (list, False, "stderr markers of the runtime's own out-of-memory error "
                      "(a heap ceiling below the limit): such a failure is memory_limit"),
    "image": (str, False, "image (NAME:TAG or id) whose layers are the root, instead of the "
              "host's files"),
    "workdir": (str, False, "working directory (default: the image's WorkingDir, else /box)"),
    "warm_runtime": (str, False, "start this interpreter before the job in warm containers "
                     "(sandboxd/runtimes/: python, node); run must have {entry} as a whole "
                     "argument, options before it"),
    "warm_judged": (bool, False, "a warm runtime for judged jobs too (tests, expected output, "
                    "pinned CPU); default false: judges measure the plain start"),
    "memory_mode": (str, False, "how a run step's memory limit counts unless the job says: "
                    "'peak' (default: the cgroup) or 'address_space' (also RLIMIT_AS)"),
    "memory_modes": (list, False, "the modes a job may ask for (default both); a runtime that "
                     "reserves more address space than it uses allows only 'peak'"),
    "network_allow": (list, False, "[\"host:port\", ...]: outbound TCP its jobs may make "
                      "(a job's own network.allow replaces it); only where the server's "
                      "egress_allow permits (docs/profiles.md, \"Network\")"),
}


def _line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\[?{re.escape(key)}\]?\s*(=|$)", line):
            return i
    return 0


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: must be a list of strings")
    return tuple(value)


def _limits(base: Limits, table: Any, where: str, ceiling: Limits = MAXIMUM) -> Limits:
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: must be a table")
    try:
        return base.merged(table, ceiling)
    except LimitError as e:
        raise ProfileError(f"{where}: {e}") from None


def _missing(needs: tuple[str, ...], path: str) -> str | None:
    """Why the runtime cannot run here, or None. Commands are looked up on the
    containers' PATH, not ours: a compiler in /root/.cargo/bin is not in a container."""
    for need in needs:
        found = os.path.exists(need) if need.startswith("/") else shutil.which(need, path=path)
        if not found:
            return f"{need} is not installed on this host"
    return None


def _with_image(profile: Profile, data: dict[str, Any], store_dir: str | None) -> Profile:
    """Resolve the profile's image; its config fills in what the profile leaves unsaid."""
    from sandboxd.images import ImageError, Store

    store = Store(store_dir)
    profile = dataclasses.replace(profile, image_store=store.path)
    try:
        image = store.resolve(profile.image)
    except ImageError as e:
        return dataclasses.replace(profile, unavailable=profile.unavailable or str(e))
    config = image.config
    run = profile.run if "run" in data else config.argv()
    return dataclasses.replace(
        profile, image_id=image.id, run=run, env={**config.environ(), **profile.env},
        workdir=data.get("workdir") or config.workdir or "/box",
        unavailable=profile.unavailable or (None if run else
                                            f"image {image.ref} has no Entrypoint or Cmd, "
                                            "and the profile no run"))


def load_file(path: str | Path, image_store: str | None = None) -> Profile:
    """One profile; ``image_store`` is where its image is looked up (default store if None)."""
    path = str(path)
    try:
        text = Path(path).read_text()
        data = tomllib.loads(text)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: {e}") from None

    def where(key: str) -> str:
        return f"{path}:{_line(text, key)}: {key}"

    for key, value in data.items():
        if key not in SCHEMA:
            raise ProfileError(f"{where(key)}: unknown key (known: {', '.join(SCHEMA)})")
        kind = SCHEMA[key][0]
        if not isinstance(value, kind):
            raise ProfileError(f"{where(key)}: must be a {kind.__name__}")
    for key, (_kind, required, _doc) in SCHEMA.items():
        if required and key not in data and not (key == "run" and "image" in data):
            raise ProfileError(f"{path}:1: {key}: required key is missing")
    for key in ("image", "workdir"):
        if key in data and (not data[key] or "\0" in data[key]):
            raise ProfileError(f"{where(key)}: must not be empty")
    if "workdir" in data and not data["workdir"].startswith("/"):
        raise ProfileError(f"{where('workdir')}: must be an absolute path")
    max_limits = _limits(MAXIMUM, data.get("max_limits", {}), where("max_limits"),
                         PROFILE_CEILING)
    limits = _limits(DEFAULT, data.get("limits", {}), where("limits"), max_limits)
    compile_spec = None
    if "compile" in data:
        table = data["compile"]
        unknown = set(table) - {"argv", "limits"}
        if unknown:
            raise ProfileError(f"{where('compile')}: unknown key(s) {sorted(unknown)} "
                               "(known: argv, limits)")
        if "argv" not in table:
            raise ProfileError(f"{where('compile')}: argv is required")
        compile_spec = CompileSpec(
            argv=_strings(table["argv"], where("compile")),
            limits=_limits(limits, table.get("limits", {}), where("compile"), max_limits))
        if problem := check_template(compile_spec.argv):
            raise ProfileError(f"{where('compile')}: argv: {problem}")
    env = data.get("env", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ProfileError(f"{where('env')}: must map strings to strings")
    binds: list[tuple[str, str]] = []
    for item in data.get("binds", []):
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(p, str) and p.startswith("/") for p in item)):
            raise ProfileError(f"{where('binds')}: each bind is [absolute host path, "
                               "absolute container path]")
        if mounts.in_sys(item[0]):
            raise ProfileError(f"{where('binds')}: {item[0]} is in /sys, which containers "
                               "are made without (docs/isolation.md)")
        binds.append((item[0], item[1]))
    needs = _strings(data.get("needs", []), where("needs"))
    caches = _strings(data.get("caches", []), where("caches"))
    run = _strings(data.get("run", []), where("run"))
    if problem := check_template(run):
        raise ProfileError(f"{where('run')}: {problem}")
    out_of_memory = _strings(data.get("out_of_memory", []), where("out_of_memory"))
    if not all(out_of_memory):
        raise ProfileError(f"{where('out_of_memory')}: markers must not be empty")
    warm_runtime = data.get("warm_runtime", "")
    if warm_runtime:
        from sandboxd.runtimes import RUNTIMES

        if warm_runtime not in RUNTIMES:
            raise ProfileError(f"{where('warm_runtime')}: unknown runtime {warm_runtime!r} "
                               f"(known: {', '.join(sorted(RUNTIMES))})")
        head = run[:run.index("{entry}")] if run.count("{entry}") == 1 else None
        if head is None or any("{entry}" in a or "{sources}" in a for a in head):
            raise ProfileError(f"{where('warm_runtime')}: run must have {{entry}} once, as a "
                               "whole argument, with no {sources} before it")
    memory_modes = _strings(data.get("memory_modes", list(MEMORY_MODES)),
                            where("memory_modes"))
    memory_mode = data.get("memory_mode", memory_modes[0] if memory_modes else "peak")
    if not memory_modes or any(m not in MEMORY_MODES for m in memory_modes):
        raise ProfileError(f"{where('memory_modes')}: a non-empty list of "
                           f"{', '.join(MEMORY_MODES)}")
    if memory_mode not in memory_modes:
        raise ProfileError(f"{where('memory_mode')}: must be one of memory_modes "
                           f"({', '.join(memory_modes)}), not {memory_mode!r}")
    try:
        network_allow = egress.parse_allow(data.get("network_allow", []), where("network_allow"))
    except egress.EgressError as e:
        raise ProfileError(str(e)) from None
    name = data["name"]
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.+-]{0,63}", name):
        raise ProfileError(f"{where('name')}: must be lowercase letters, digits, _ . + -")
    from sandboxd.isolation import seccomp

    policy = data.get("seccomp", "default")
    if policy not in seccomp.POLICIES:
        raise ProfileError(f"{where('seccomp')}: unknown policy {policy!r} "
                           f"(known: {', '.join(sorted(seccomp.POLICIES))})")
    profile = Profile(
        name=name, description=data.get("description", ""), entry=data.get("entry", "main"),
        run=run, compile=compile_spec, env=dict(env),
        limits=limits, max_limits=max_limits, seccomp=policy, binds=tuple(binds), needs=needs,
        caches=tuple(caches),
        version_argv=_strings(data.get("version", []), where("version")), path=path,
        unavailable=_missing(needs, env.get("PATH", JOB_PATH)), workdir=data.get("workdir", "/box"),
        image=data.get("image", ""), out_of_memory=out_of_memory,
        warm_runtime=warm_runtime, warm_judged=data.get("warm_judged", False),
        memory_mode=memory_mode, memory_modes=memory_modes,
        network_allow=network_allow,
    )
    return _with_image(profile, data, image_store) if profile.image else profile


def load_dir(directory: str | Path | None = None,
             image_store: str | None = None) -> dict[str, Profile]:
    directory = Path(directory) if directory else SHIPPED_DIR
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.toml")):
        profile = load_file(path, image_store)
        if profile.name in profiles:
            raise ProfileError(f"{path}:1: name: {profile.name!r} is also defined in "
                               f"{profiles[profile.name].path}")
        profiles[profile.name] = profile
    return profiles
