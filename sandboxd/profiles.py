"""Language profiles: data files (``profiles/*.toml``) checked against one schema.

Strategy: a profile says how to run (and maybe compile) one language: the
entry file name, argv templates with ``{entry}`` and ``{sources}``
placeholders, environment, default limits and the most a job may ask for,
the seccomp policy and extra read-only mounts. ``SCHEMA`` lists every key;
an unknown key or a wrong type is an error naming file, line and key. A
profile whose runtime is missing on this host (``needs``) is *unavailable*,
with the reason, and is listed as such, never a crash.

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

from sandboxd.limits import DEFAULT, MAXIMUM, LimitError, Limits

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
    needs: tuple[str, ...] = ()
    version_argv: tuple[str, ...] = ()
    path: str = ""
    unavailable: str | None = None  # why the profile cannot run here, or None
    workdir: str = "/box"  # working directory of every step
    image: str = ""  # the image as the profile names it ("" = the host's files)
    image_id: str = ""  # ... resolved when loaded: what ContainerSpec.image takes
    image_store: str = ""

    def run_argv(self, sources: list[str]) -> list[str]:
        return expand(self.run, self.entry, sources)

    def compile_argv(self, sources: list[str]) -> list[str] | None:
        return expand(self.compile.argv, self.entry, sources) if self.compile else None

    def version(self) -> str:
        """The runtime's version as it reports it (first line), or '' when unknown."""
        if not self.version_argv or self.unavailable:
            return ""
        try:
            p = subprocess.run(list(self.version_argv), capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (p.stdout or p.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else ""


def expand(template: tuple[str, ...], entry: str, sources: list[str]) -> list[str]:
    out: list[str] = []
    for arg in template:
        if arg == "{sources}":
            out.extend(sources)
        else:
            out.append(arg.replace("{entry}", entry))
    return out


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
    "needs": (list, False, "host paths (or commands on PATH) the runtime needs"),
    "version": (list, False, "argv that prints the runtime's version"),
    "image": (str, False, "image (NAME:TAG or id) whose layers are the root, instead of the "
              "host's files"),
    "workdir": (str, False, "working directory (default: the image's WorkingDir, else /box)"),
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


def _missing(needs: tuple[str, ...]) -> str | None:
    for need in needs:
        found = os.path.exists(need) if need.startswith("/") else shutil.which(need)
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
    max_limits = _limits(MAXIMUM, data.get("max_limits", {}), where("max_limits"))
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
    env = data.get("env", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ProfileError(f"{where('env')}: must map strings to strings")
    binds: list[tuple[str, str]] = []
    for item in data.get("binds", []):
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(p, str) and p.startswith("/") for p in item)):
            raise ProfileError(f"{where('binds')}: each bind is [absolute host path, "
                               "absolute container path]")
        binds.append((item[0], item[1]))
    needs = _strings(data.get("needs", []), where("needs"))
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
        run=_strings(data.get("run", []), where("run")), compile=compile_spec, env=dict(env),
        limits=limits, max_limits=max_limits, seccomp=policy, binds=tuple(binds), needs=needs,
        version_argv=_strings(data.get("version", []), where("version")), path=path,
        unavailable=_missing(needs), workdir=data.get("workdir", "/box"),
        image=data.get("image", ""),
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
