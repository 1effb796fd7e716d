"""Unpack one layer tar into a directory, refusing or neutralising whatever could leave it.

Strategy: the layer is read as a stream (``tarfile`` mode ``r|``), member by
member, and each member's name is validated and normalised *before* anything
is written: an absolute name or a ``..`` component is refused. The unpacker
keeps its own table of what this layer has created (path -> kind), so it
never asks the filesystem whether a parent is a directory: a member below a
symlink, a file or a device of this layer is refused (the classic
``link -> /etc`` then ``link/passwd`` escape), and every leaf is created with
``O_NOFOLLOW | O_EXCL``. Symlinks are stored as they are and never followed
here; in a container they resolve inside its own root. A hard link must name
a regular file this layer already holds.

What is kept is sanitised: setuid and setgid bits and group/other write bits
are removed (the store is shared by every container and readable on the
host), device nodes are dropped, ownership is not kept (everything belongs to
whoever imports; inside a container that is "nobody"), xattrs from the tar
are ignored, so no image can plant an ``overlay.*`` attribute.

Whiteouts become what overlayfs reads when mounted with ``userxattr``:
``.wh.NAME`` a 0/0 character device NAME (needs CAP_MKNOD: import as root),
``.wh..wh..opq`` the ``user.overlay.opaque=y`` xattr on its directory. A
whiteout never hides an entry of its own layer; a directory that replaces a
whiteout of its own layer is made opaque (it was deleted, then created anew).

Sizes are bounded by ``TarStream``: the uncompressed bytes of the layer, and
the bytes ``tarfile`` may read for headers between two members (a PAX header
is read into memory whole).

This module knows nothing of manifests, the store or containers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, Protocol

from sandboxd.images._model import ImageError, ImportLimits

DIR, FILE, SYMLINK, WHITEOUT, FIFO = "directory", "file", "symlink", "whiteout", "fifo"
OPAQUE_XATTR = "user.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
CHUNK = 1 << 20
PATH_MAX = 4096
NAME_MAX = 255
# Mode bits never kept: setuid, setgid, and write for group and other.
STRIPPED_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def normalize(name: str, what: str = "member") -> str:
    """A tar member name as a relative path without '.', '' components; '' is the layer root.

    Absolute names and '..' components are refused, not rewritten: no tool
    that builds images writes them, so one that does is hostile or broken.
    """
    if "\0" in name:
        raise ImageError(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise ImageError(f"{what} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{what} {name!r} climbs out of the layer with '..'")
    path = "/".join(parts)
    if len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX or any(
            len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise ImageError(f"{what} {name[:80]!r}...: path or name too long")
    return path


def whiteout_of(path: str) -> tuple[str, str] | None:
    """('opaque', dir), ('whiteout', hidden path), ('meta', path) or None for an ordinary entry."""
    parent, _, base = path.rpartition("/")
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    if base == OPAQUE_MARKER:
        return ("opaque", parent)
    if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        return ("meta", path)  # AUFS bookkeeping (.wh..wh.plnk ...): nothing to apply
    hidden = base[len(WHITEOUT_PREFIX):]
    if hidden in ("", ".", ".."):
        raise ImageError(f"whiteout {path!r} names no entry")
    return ("whiteout", f"{parent}/{hidden}" if parent else hidden)


def sanitize_mode(mode: int) -> tuple[int, bool]:
    """(mode without setuid/setgid/group-write/other-write, whether setuid/setgid was set)."""
    mode &= 0o7777
    return mode & ~STRIPPED_BITS, bool(mode & (stat.S_ISUID | stat.S_ISGID))


class TarStream:
    """The uncompressed layer as ``tarfile`` reads it: hashed (its diff_id) and bounded.

    ``in_header`` is set by the unpacker while ``tarfile`` looks for the next
    member; what it reads then is counted against ``max_header``.
    """

    def __init__(self, raw: Reader, max_size: int, max_header: int, what: str) -> None:
        self.raw = raw
        self.max_size = max_size
        self.max_header = max_header
        self.what = what
        self.size = 0
        self.header_bytes = 0
        self.in_header = False
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n >= 0 else CHUNK)
        self.size += len(data)
        self._hash.update(data)
        if self.size > self.max_size:
            raise ImageError(f"{self.what}: more than {self.max_size} bytes uncompressed "
                             "(an absurd layer, or a decompression bomb)")
        if self.in_header:
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header:
                raise ImageError(f"{self.what}: more than {self.max_header} bytes of tar "
                                 "headers between two members")
        return data

    def drain(self) -> None:
        """Read to the end (tar padding, trailing blocks) so that the digest covers it all."""
        self.in_header = False
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(slots=True)
class LayerStats:
    entries: int = 0
    files: int = 0  # regular files and hard links
    size: int = 0  # bytes of regular files
    dropped: int = 0  # device nodes
    setid_stripped: int = 0
    whiteouts: int = 0
    opaque: int = 0


class Unpacker:
    """Writes one layer's members into ``dest`` (an empty directory it owns alone)."""

    def __init__(self, dest: str, limits: ImportLimits, what: str) -> None:
        self.dest = dest
        self.limits = limits
        self.what = what
        self.kinds: dict[str, str] = {"": DIR}
        self.dir_meta: dict[str, tuple[int, float]] = {}
        self.stats = LayerStats()

    def _abs(self, path: str) -> str:
        return os.path.join(self.dest, path) if path else self.dest

    def _refuse(self, message: str) -> ImageError:
        return ImageError(f"{self.what}: {message}")

    # -- the table of what exists ---------------------------------------------

    def _parents(self, path: str) -> None:
        """Make sure every parent of ``path`` is a directory of this layer; never follow."""
        parent = path.rpartition("/")[0]
        if not parent or self.kinds.get(parent) == DIR:
            return
        prefix = ""
        for part in parent.split("/"):
            prefix = f"{prefix}/{part}" if prefix else part
            kind = self.kinds.get(prefix)
            if kind == DIR:
                continue
            if kind == WHITEOUT:  # deleted, then something created below it: a new directory
                self._remove(prefix, kind)
                self._mkdir(prefix, opaque=True)
            elif kind is None:
                self._mkdir(prefix)
            else:
                raise self._refuse(f"{path!r} lies below {prefix!r}, which is a {kind} in "
                                   "this layer (refused: it could lead out of the layer)")

    def _mkdir(self, path: str, opaque: bool = False) -> None:
        os.mkdir(self._abs(path), 0o755)
        self.kinds[path] = DIR
        if opaque:
            self._set_opaque(path)

    def _set_opaque(self, path: str) -> None:
        try:
            os.setxattr(self._abs(path), OPAQUE_XATTR, b"y", follow_symlinks=False)
        except OSError as e:
            raise self._refuse(f"cannot mark {path or '/'!r} opaque: {e.strerror} (the store's "
                               "filesystem must support user xattrs)") from e
        self.stats.opaque += 1

    def _remove(self, path: str, kind: str) -> None:
        if kind == DIR:
            shutil.rmtree(self._abs(path))
            prefix = path + "/"
            for key in [k for k in self.kinds if k.startswith(prefix)]:
                del self.kinds[key]
                self.dir_meta.pop(key, None)
        else:
            os.unlink(self._abs(path))
        del self.kinds[path]
        self.dir_meta.pop(path, None)

    def _make_room(self, path: str, new_kind: str) -> bool:
        """Parents in place and ``path`` free; True if an existing directory is kept instead.

        A later member replaces an earlier one of the same name, as tar does.
        """
        self._parents(path)
        old = self.kinds.get(path)
        if old is None:
            return False
        if old == DIR and new_kind == DIR:
            return True
        self._remove(path, old)
        if old == WHITEOUT and new_kind == DIR:
            self._mkdir(path, opaque=True)
            return True
        return False

    # -- members --------------------------------------------------------------

    def add(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_files:
            raise self._refuse(f"more than {self.limits.max_files} entries")
        path = normalize(member.name)
        special = whiteout_of(path)
        if special is not None:
            self._whiteout(*special)
        elif path == "":
            pass  # the layer's root: always 0755, whatever the tar says
        elif member.isdir():
            self._dir(path, member)
        elif member.isreg():
            assert data is not None
            self._file(path, member, data)
        elif member.issym():
            self._symlink(path, member)
        elif member.islnk():
            self._hardlink(path, member)
        elif member.isfifo():
            self._fifo(path, member)
        elif member.ischr() or member.isblk():
            self.stats.dropped += 1  # never a device from an image; /dev is made per container
        else:
            raise self._refuse(f"{path!r}: unsupported member type {member.type!r}")

    def _mode(self, member: tarfile.TarInfo) -> int:
        mode, stripped = sanitize_mode(member.mode)
        self.stats.setid_stripped += stripped
        return mode

    def _dir(self, path: str, member: tarfile.TarInfo) -> None:
        if not self._make_room(path, DIR):
            os.mkdir(self._abs(path), 0o700)
            self.kinds[path] = DIR
        # Applied at the end: a read-only directory must still take its children.
        self.dir_meta[path] = (self._mode(member), member.mtime)

    def _file(self, path: str, member: tarfile.TarInfo, data: IO[bytes]) -> None:
        if member.size > self.limits.max_layer_size:
            raise self._refuse(f"{path!r} claims {member.size} bytes")
        self._make_room(path, FILE)
        fd = os.open(self._abs(path),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := data.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fchmod(fd, self._mode(member))
            _utime(fd, member.mtime)
        finally:
            os.close(fd)
        self.kinds[path] = FILE
        self.stats.files += 1
        self.stats.size += member.size

    def _symlink(self, path: str, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if not target or "\0" in target or len(target) >= PATH_MAX:
            raise self._refuse(f"symlink {path!r} has an invalid target")
        self._make_room(path, SYMLINK)
        os.symlink(target, self._abs(path))
        _utime(self._abs(path), member.mtime, follow=False)
        self.kinds[path] = SYMLINK

    def _hardlink(self, path: str, member: tarfile.TarInfo) -> None:
        target = normalize(member.linkname, "hard link target")
        if self.kinds.get(target) != FILE or target == path:
            raise self._refuse(f"hard link {path!r} -> {member.linkname!r}: the target must be "
                               "a regular file earlier in this layer")
        self._make_room(path, FILE)
        os.link(self._abs(target), self._abs(path), follow_symlinks=False)
        self.kinds[path] = FILE
        self.stats.files += 1

    def _fifo(self, path: str, member: tarfile.TarInfo) -> None:
        self._make_room(path, FIFO)
        os.mkfifo(self._abs(path), self._mode(member))
        self.kinds[path] = FIFO

    def _whiteout(self, kind: str, path: str) -> None:
        if kind == "meta":
            return
        if kind == "opaque":
            if self.kinds.get(path) != DIR and not self._make_room(path, DIR):
                self._mkdir(path)
            self._set_opaque(path)
            return
        if path in self.kinds:
            return  # a whiteout hides lower layers only, never its own layer's entries
        self._parents(path)
        try:
            os.mknod(self._abs(path), stat.S_IFCHR | 0o600, os.makedev(0, 0))
        except PermissionError as e:
            raise self._refuse("deletes files of a lower layer, and overlayfs whiteouts are "
                               "device nodes: import as root (CAP_MKNOD)") from e
        self.kinds[path] = WHITEOUT
        self.stats.whiteouts += 1

    def finish(self) -> LayerStats:
        """Directory modes and times, deepest first (a parent's time changes with its children)."""
        for path in sorted(self.dir_meta, key=lambda p: p.count("/"), reverse=True):
            mode, mtime = self.dir_meta[path]
            os.chmod(self._abs(path), mode, follow_symlinks=False)
            _utime(self._abs(path), mtime, follow=False)
        os.chmod(self.dest, 0o755)
        return self.stats


def _utime(target: int | str, mtime: float, follow: bool = True) -> None:
    try:
        if isinstance(target, int):
            os.utime(target, (mtime, mtime))
        else:
            os.utime(target, (mtime, mtime), follow_symlinks=follow)
    except (OverflowError, ValueError, OSError):
        pass  # an absurd time is not worth refusing an image for


def unpack(stream: TarStream, dest: str, limits: ImportLimits) -> LayerStats:
    """Unpack the tar read from ``stream`` into the new directory ``dest``; read it to the end."""
    os.mkdir(dest, 0o700)
    unpacker = Unpacker(dest, limits, stream.what)
    try:
        stream.in_header = True
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                stream.in_header = False
                data = tar.extractfile(member) if member.isreg() else None
                if data is not None and whiteout_of(normalize(member.name)) is not None:
                    while data.read(CHUNK):  # a whiteout's content, if any, means nothing
                        pass
                    data = None
                unpacker.add(member, data)
                stream.in_header = True
    except tarfile.TarError as e:
        raise ImageError(f"{stream.what}: not a valid tar: {e}") from None
    except EOFError:
        raise ImageError(f"{stream.what}: truncated tar") from None
    stream.drain()
    return unpacker.finish()
