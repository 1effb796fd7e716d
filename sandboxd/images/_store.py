"""The content-addressed layer store: layers unpacked once, image records, reference counts.

Layout (``DEFAULT_STORE`` unless a directory is given)::

    lock                 flock: shared while a container mounts layers,
                         exclusive while an import commits or a removal runs
    layers/<hex>/        one unpacked layer, named by its diff_id: an overlay lowerdir
    images/<hex>.json    one image, named by its id (the sha256 of its configuration)
    tmp/                 imports in progress, removals in progress: same filesystem,
                         so that whatever becomes visible does so by one rename

Strategy: nothing is ever written in place. An import unpacks into its own
directory under ``tmp/`` (locked with flock for as long as it runs) and
commits by renaming each new layer into ``layers/`` and then writing the
image record; a removal renames layers out of ``layers/`` before deleting
them. A process killed at any point leaves at worst an unlocked directory in
``tmp/`` (and, killed between two renames of a commit, complete layers no
record uses); ``gc`` removes both. Layers are reference-counted by the
records: a layer goes when the last image that lists it goes.

An image in use is not removed: a profile that names it (the caller passes
who uses what) or a running container, found by the label its overlay mount
carries in the mount table of every mount namespace (the kernel's own
record, so nothing to keep in step); containers mount under the shared lock,
so none can start using an image while its removal checks.

The store is readable by every host user (the container's root is an
unprivileged uid that must read the layers); layers hold no setuid bit and no
group- or world-writable file.

This module knows nothing of tar formats or of containers, only of where
their overlay mounts show.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from sandboxd.images._model import DEFAULT_STORE, Image, ImageError, LayerInfo, parse_name
from sandboxd.isolation.mounts import OverlayRoot

LABEL_PREFIX = "sandboxd-image:"


@dataclass(frozen=True, slots=True)
class Removal:
    """What ``Store.remove`` did."""

    image: Image
    untagged: str = ""  # the name removed, when the image kept others
    deleted: bool = False
    layers_removed: int = 0
    layers_kept: int = 0  # still used by other images


class Store:
    """One image store directory. Cheap to make: nothing is touched until used."""

    def __init__(self, path: str | None = None) -> None:
        self.path = os.path.abspath(path or DEFAULT_STORE)
        self.layers_dir = os.path.join(self.path, "layers")
        self.images_dir = os.path.join(self.path, "images")
        self.tmp_dir = os.path.join(self.path, "tmp")
        self.lock_path = os.path.join(self.path, "lock")

    # -- layout and locking -----------------------------------------------------

    def create(self) -> None:
        """Make the layout (idempotent); refuse a store a container could not reach."""
        for d, mode in ((self.path, 0o755), (self.layers_dir, 0o755),
                        (self.images_dir, 0o755), (self.tmp_dir, 0o700)):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, mode)
        if not os.path.exists(self.lock_path):
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.fchmod(fd, 0o644)
            os.close(fd)
        parent = self.path
        while parent != "/":
            parent = os.path.dirname(parent)
            if not os.stat(parent).st_mode & 0o001:
                raise ImageError(f"{parent} is not traversable by other users (o+x): containers "
                                 f"run as unprivileged host uids and could not reach "
                                 f"{self.path}; choose another store directory")

    def exists(self) -> bool:
        return os.path.isdir(self.images_dir)

    @contextlib.contextmanager
    def locked(self, exclusive: bool = True) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def scratch(self, kind: str = "import") -> Iterator[str]:
        """A private directory under tmp/, flocked while it lives, removed afterwards."""
        path = os.path.join(self.tmp_dir, f"{kind}-{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def gc(self) -> list[str]:
        """Remove what interrupted imports and removals left: unlocked tmp/ entries, and
        layers no record lists. Returns what it removed."""
        if not self.exists():
            return []
        removed: list[str] = []
        with self.locked():
            for name in os.listdir(self.tmp_dir):
                path = os.path.join(self.tmp_dir, name)
                if _lock_free(path):
                    _rmtree(path)
                    removed.append(path)
            used = {layer.hex for image in self.images() for layer in image.layers}
            for name in os.listdir(self.layers_dir):
                if name not in used:
                    removed.append(self._discard_layer(name))
        return removed

    # -- records -------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image, sorted by first name (unnamed ones last), then id."""
        out = []
        if not self.exists():
            return out
        for name in os.listdir(self.images_dir):
            if name.endswith(".json"):
                out.append(self._read(os.path.join(self.images_dir, name)))
        return sorted(out, key=lambda i: (not i.names, i.names[:1], i.id))

    def _read(self, path: str) -> Image:
        try:
            with open(path, "rb") as f:
                return Image.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(f"damaged image record {path}: {e}") from None

    def get(self, image_id: str) -> Image:
        path = os.path.join(self.images_dir, image_id.split(":", 1)[-1] + ".json")
        if not os.path.exists(path):
            raise ImageError(f"no image {image_id} in {self.path}")
        return self._read(path)

    def resolve(self, ref: str) -> Image:
        """An image by name (NAME[:TAG], tag 'latest' by default), id, or unique id prefix."""
        if not self.exists():
            raise ImageError(f"no image {ref!r}: no image store at {self.path} (import an "
                             "image first)")
        images = self.images()
        hex_ref = ref.removeprefix("sha256:")
        if len(hex_ref) >= 12 and all(c in "0123456789abcdef" for c in hex_ref):
            found = [i for i in images if i.hex.startswith(hex_ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ImageError(f"{ref!r} is the prefix of several image ids")
        try:
            name = parse_name(ref)
        except ImageError:
            raise ImageError(f"no image {ref!r} in {self.path}") from None
        for image in images:
            if name in image.names:
                return image
        raise ImageError(f"no image {ref!r} in {self.path}")

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, diff_id.split(":", 1)[-1])

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_path(diff_id))

    def layer_info(self, diff_id: str) -> LayerInfo:
        """What the import that unpacked a stored layer found in it."""
        for image in self.images():
            for layer in image.layers:
                if layer.diff_id == diff_id:
                    return layer
        return LayerInfo(diff_id)

    def overlay_root(self, image_id: str) -> OverlayRoot:
        """How a container mounts this image: the plan's ``overlay`` (see isolation.mounts)."""
        image = self.get(image_id)
        return OverlayRoot(layers_dir=self.layers_dir, lower=image.lower_layers(),
                           lock=self.lock_path, label=LABEL_PREFIX + image.hex,
                           dirs=(image.config.workdir,) if image.config.workdir else ())

    # -- commit and removal ------------------------------------------------------------

    def _write_record(self, image: Image) -> None:
        """Replace images/<hex>.json by one rename of a complete, synced file."""
        tmp = os.path.join(self.tmp_dir, f"record-{secrets.token_hex(6)}")
        with open(tmp, "w") as f:
            json.dump(image.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(self.images_dir, image.hex + ".json"))

    def commit(self, images: Iterable[Image], unpacked: dict[str, str]) -> list[Image]:
        """Make an import visible: rename its new layers into place, then write its records.

        ``unpacked`` maps a layer's hex to its directory in the import's scratch. Names
        given to these images are taken from any other image that had them.
        """
        done: list[Image] = []
        with self.locked():
            for hex_, path in unpacked.items():
                target = os.path.join(self.layers_dir, hex_)
                if os.path.isdir(target):  # another import brought it meanwhile
                    _rmtree(path)
                else:
                    os.rename(path, target)
            _fsync_dir(self.layers_dir)
            for image in images:
                missing = [x.diff_id for x in image.layers if not self.has_layer(x.diff_id)]
                if missing:
                    raise ImageError(f"layer {missing[0]} vanished during the import "
                                     "(removed meanwhile); import again")
                names = set(image.names)
                for other in self.images():
                    if other.id == image.id:
                        names |= set(other.names)
                    elif names & set(other.names):
                        self._write_record(replace(other, names=tuple(
                            n for n in other.names if n not in names)))
                image = replace(image, names=tuple(sorted(names)), imported=time.time())
                self._write_record(image)
                done.append(image)
            _fsync_dir(self.images_dir)
        return done

    def remove(self, ref: str, users: Iterable[tuple[str, str]] = ()) -> Removal:
        """Untag ``ref`` if its image has other names; else delete the image and the layers
        no other image lists. Refused while in use.

        ``users`` are (who, image reference) pairs, e.g. ("profile python3", "py:3.11"),
        whose references are resolved now, as the daemon would resolve them.
        """
        with self.locked():
            image = self.resolve(ref)
            users = list(users)
            try:
                name = parse_name(ref)
            except ImageError:
                name = ""
            if name in image.names and len(image.names) > 1:
                for who, used in users:
                    if _same_name(used, name):
                        raise ImageError(f"{name} is in use by {who}")
                self._write_record(replace(image, names=tuple(n for n in image.names
                                                             if n != name)))
                return Removal(image, untagged=name)
            for who, used in users:
                if self._resolves_to(used, image):
                    raise ImageError(f"{image.ref} is in use by {who}")
            pids = mounted_images().get(image.hex)
            if pids:
                raise ImageError(f"{image.ref} is in use by {len(pids)} running "
                                 f"container(s) (pid "
                                 f"{', '.join(map(str, sorted(pids)[:5]))})")
            os.unlink(os.path.join(self.images_dir, image.hex + ".json"))
            used = {x.hex for other in self.images() for x in other.layers}
            mine = {x.hex for x in image.layers}
            trash = [self._discard_layer(h, delete=False) for h in sorted(mine - used)]
        for path in trash:  # slow, and nobody can see these any more: outside the lock
            _rmtree(path)
        return Removal(image, deleted=True, layers_removed=len(mine - used),
                       layers_kept=len(mine & used))

    def _resolves_to(self, ref: str, image: Image) -> bool:
        try:
            return self.resolve(ref).id == image.id
        except ImageError:
            return False  # a user of a missing image uses none

    def _discard_layer(self, hex_: str, delete: bool = True) -> str:
        """Rename a layer out of layers/ (the atomic step), then delete it unless told not to."""
        trash = os.path.join(self.tmp_dir, f"trash-{secrets.token_hex(4)}-{hex_[:12]}")
        os.rename(os.path.join(self.layers_dir, hex_), trash)
        if delete:
            _rmtree(trash)
        return trash

    def disk_usage(self) -> int:
        """Bytes the layers take on disk (blocks; hard links counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for top, _dirs, files in os.walk(self.layers_dir):
            for name in [*files, "."]:
                st = os.lstat(os.path.join(top, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        return total


def _same_name(ref: str, name: str) -> bool:
    try:
        return parse_name(ref) == name
    except ImageError:
        return False


def mounted_images() -> dict[str, set[int]]:
    """Image hex -> pids whose mount namespace has that image's overlay root mounted.

    Read from /proc/<pid>/mountinfo, once per mount namespace: the label is
    the overlay mount's source (``sandboxd-image:<hex>``).
    """
    found: dict[str, set[int]] = {}
    seen: dict[str, set[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{entry}/ns/mnt")
            if ns not in seen:
                with open(f"/proc/{entry}/mountinfo") as f:
                    seen[ns] = {_label_of(line) for line in f if LABEL_PREFIX in line} - {""}
        except OSError:
            continue
        for hex_ in seen[ns]:
            found.setdefault(hex_, set()).add(int(entry))
    return found


def _label_of(line: str) -> str:
    _, sep, after = line.partition(" - ")
    fields = after.split()
    if sep and len(fields) >= 2 and fields[0] == "overlay" and fields[1].startswith(LABEL_PREFIX):
        return fields[1][len(LABEL_PREFIX):]
    return ""


def _lock_free(path: str) -> bool:
    """True if nobody holds the flock of ``path`` (a directory or a file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _rmtree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
