"""The image store's vocabulary: errors, limits, names, digests and the records it keeps.

Strategy: everything here is plain data with its validation, so that the
parts that read hostile input (``_source``, ``_layer``) and the part that
writes the store (``_store``) share one definition of what a valid name,
digest or configuration is. Records are JSON in the store; ``Image.to_json``
and ``Image.from_json`` are the only code that knows their shape.

This module touches no file and knows nothing of containers or mounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sandboxd.limits import GiB, MiB

DEFAULT_STORE = "/var/lib/sandboxd-images"

# Container config keys sandboxd honours (the rest of an image's config is kept
# in the record for inspect, never acted on).
USED_CONFIG_KEYS = ("Env", "WorkingDir", "Entrypoint", "Cmd", "User")


class ImageError(ValueError):
    """An image, its source or a store operation is invalid or refused; the message says why."""


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """What one import may hold before it is refused as absurd (hostile or a mistake).

    The layer count is bounded by what one overlay mount can take: its options
    (64-hex layer names, relative to the store) must fit in one page.
    """

    max_layer_size: int = 8 * GiB  # uncompressed tar bytes of one layer
    max_image_size: int = 32 * GiB  # uncompressed, all layers of one import
    max_files: int = 1_000_000  # tar members of one layer
    max_layers: int = 56
    max_json: int = 4 * MiB  # manifest, index or config
    max_header: int = 16 * MiB  # tar headers (PAX, long names) read between two members


_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")


def check_digest(value: Any, what: str) -> str:
    """``value`` if it is a sha256 digest (the only algorithm images use in practice)."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise ImageError(f"{what}: {value!r} is not a sha256 digest (sha256:<64 hex>)")
    return value


def parse_name(text: str) -> str:
    """'busybox' -> 'busybox:latest'; a malformed name is an ImageError."""
    if len(text) > 255 or not _NAME_RE.fullmatch(text):
        raise ImageError(f"{text!r} is not an image name (NAME[:TAG], lowercase name, "
                         "tag of letters, digits, _ . -)")
    last = text.rsplit("/", 1)[-1]
    return text if ":" in last else f"{text}:latest"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v
                                              for v in value):
        raise ImageError(f"image config: {what} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image's container config that decide how its jobs start."""

    env: tuple[str, ...] = ()  # "KEY=VALUE", in the image's order
    workdir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""  # recorded only: jobs always run as sandboxd's job user

    @classmethod
    def from_config(cls, config: Any) -> ImageConfig:
        """Validate the ``config`` object of an image configuration (None is an empty one)."""
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise ImageError("image config: config must be an object")
        env = _strings(config.get("Env"), "Env")
        for item in env:
            key, sep, _value = item.partition("=")
            if not sep or not key:
                raise ImageError(f"image config: Env entry {item!r} is not KEY=VALUE")
        workdir = config.get("WorkingDir") or ""
        user = config.get("User") or ""
        if not isinstance(workdir, str) or "\0" in workdir or not isinstance(user, str):
            raise ImageError("image config: WorkingDir and User must be strings")
        if workdir:
            # Docker resolves a relative WorkingDir against /; ".." cannot climb above it.
            parts = [p for p in workdir.split("/") if p not in ("", ".", "..")]
            workdir = "/" + "/".join(parts)
        return cls(env=env, workdir=workdir, entrypoint=_strings(config.get("Entrypoint"),
                   "Entrypoint"), cmd=_strings(config.get("Cmd"), "Cmd"), user=user)

    def environ(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def argv(self) -> tuple[str, ...]:
        """What ``docker run IMAGE`` would run: Entrypoint followed by Cmd."""
        return self.entrypoint + self.cmd

    def to_json(self) -> dict[str, Any]:
        return {"Env": list(self.env), "WorkingDir": self.workdir,
                "Entrypoint": list(self.entrypoint) or None, "Cmd": list(self.cmd) or None,
                "User": self.user}


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One layer of an image: its content address and what unpacking it found."""

    diff_id: str  # sha256 of the uncompressed tar: the layer's name in the store
    size: int = 0  # bytes of regular files
    files: int = 0  # entries written
    dropped: int = 0  # device nodes left out
    setid_stripped: int = 0  # files whose setuid/setgid bits were removed

    @property
    def hex(self) -> str:
        return self.diff_id.split(":", 1)[1]

    def to_json(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "size": self.size, "files": self.files,
                "dropped": self.dropped, "setid_stripped": self.setid_stripped}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerInfo:
        return cls(diff_id=check_digest(d["diff_id"], "layer"), size=int(d["size"]),
                   files=int(d["files"]), dropped=int(d.get("dropped", 0)),
                   setid_stripped=int(d.get("setid_stripped", 0)))


@dataclass(frozen=True, slots=True)
class Image:
    """An image in the store: named by the sha256 of its configuration, as Docker names it."""

    id: str
    names: tuple[str, ...]
    layers: tuple[LayerInfo, ...]  # bottom first, as in the image's rootfs.diff_ids
    config: ImageConfig = field(default_factory=ImageConfig)
    architecture: str = ""
    os: str = ""
    created: str = ""
    imported: float = 0.0

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[1]

    @property
    def short_id(self) -> str:
        return self.hex[:12]

    @property
    def ref(self) -> str:
        """How to name it to a person: its first name, else its short id."""
        return self.names[0] if self.names else self.short_id

    @property
    def size(self) -> int:
        return sum(layer.size for layer in {layer.diff_id: layer for layer in self.layers}
                   .values())

    def lower_layers(self) -> tuple[str, ...]:
        """Layer digests (hex) in overlayfs ``lowerdir`` order: top first, each once.

        Keeping only the topmost copy of a repeated layer is exact: every entry
        and whiteout of the lower copy is repeated above whatever lies between.
        """
        seen: set[str] = set()
        out: list[str] = []
        for layer in reversed(self.layers):
            if layer.hex not in seen:
                seen.add(layer.hex)
                out.append(layer.hex)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "names": list(self.names),
                "layers": [layer.to_json() for layer in self.layers],
                "config": self.config.to_json(), "architecture": self.architecture,
                "os": self.os, "created": self.created, "imported": self.imported}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Image:
        return cls(id=check_digest(d["id"], "image"), names=tuple(d["names"]),
                   layers=tuple(LayerInfo.from_json(x) for x in d["layers"]),
                   config=ImageConfig.from_config(d.get("config")),
                   architecture=str(d.get("architecture", "")), os=str(d.get("os", "")),
                   created=str(d.get("created", "")), imported=float(d.get("imported", 0)))
