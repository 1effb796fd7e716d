"""A CI job's files: a workspace archive in, artifacts out, both through /box.

Strategy: the archive arrives in chunks (msgpack ``workspace`` messages, or an
HTTP body) and is spooled, as it comes, to an *unnamed* file of the daemon's
state directory (created, then unlinked at once): the daemon never holds it in
memory, its disk is freed when the job lets go of it, and a crash leaves no
file behind. Its size is capped as it arrives (``Upload.write``).

When the job's container is leased, the supervisor (host root) unpacks the
archive into the container's /box through ``/proc/<init>/root/box``. Nothing of
the job runs in that container yet (it is single-use and its job process waits
for the hand-over), and every path is still opened one component at a time
relative to a directory descriptor with ``O_NOFOLLOW``, so no link, planted or
archived, can lead a write out of /box. The defences are those of image layers
(sandboxd/images/_layer.py), stricter where a workspace needs no more: no
absolute name, no ``..`` component, a symlink only if its target stays inside
/box, a hard link only to a file the archive already made, no device node,
FIFO or socket (refused: a source tree has none), setuid/setgid/sticky bits
dropped, everything owned by the job user. Caps: entries (``max_files``),
bytes written (the job's ``box_size``, which the /box tmpfs enforces as well:
a decompression bomb stops at the cap, after at most that many bytes, and is
refused by name).

Artifacts go the other way after the step: the job's globs are matched against
the regular files under /box, walked with directory descriptors and never
following a symlink (a link named like an artifact is skipped), with caps on
their count and bytes; over a cap the result says ``truncated``. The job has
run by then: a file swapped for a symlink or a FIFO between the walk and the
open is refused by ``O_NOFOLLOW`` and ``fstat``.

This module knows nothing of trio's scheduling beyond one ``Event``, sockets or
the wire protocol.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import gzip
import os
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import trio

from sandboxd.isolation import _libc

FORMATS = ("tar", "gzip")
COPY_CHUNK = 1 << 20
MAX_DEPTH = 64
MAX_NAME = 4095


class WorkspaceError(ValueError):
    """The workspace or the artifacts request breaks a rule; the message says which."""


# ------------------------------------------------------------------ upload (spool)


class Upload:
    """An archive arriving in chunks, spooled to an unnamed file under ``spool_dir``.

    ``write`` refuses more than ``max_bytes`` (the upload is then failed); the job
    waits in ``wait`` until ``finish`` (or a failure). ``close`` frees the disk.
    """

    def __init__(self, spool_dir: str, fmt: str, max_bytes: int,
                 idle_timeout: float = 0.0) -> None:
        if fmt not in FORMATS:
            raise WorkspaceError(f"workspace format {fmt!r} is not supported (one of "
                                 f"{', '.join(FORMATS)})")
        os.makedirs(spool_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="sandboxd-workspace-", dir=spool_dir)
        os.unlink(path)  # unnamed from here on: nothing can be left behind
        self.fd = fd
        self.fmt = fmt
        self.max_bytes = max_bytes
        self.size = 0
        self.error: str | None = None
        self.done = trio.Event()
        # A job waiting for its archive holds a queue place: a client that stops sending
        # (or trickles nothing) for this long loses it. 0: no limit.
        self.idle_timeout = idle_timeout
        self._last = time.monotonic()

    def write(self, data: bytes) -> None:
        """Append one chunk; past ``max_bytes`` the upload fails (``WorkspaceError``)."""
        if self.error is not None or self.done.is_set() or self.fd < 0:
            return  # a failed or finished upload ignores what still comes
        if self.size + len(data) > self.max_bytes:
            self.fail(f"the workspace archive is larger than the server's cap of "
                      f"{self.max_bytes} bytes (max_workspace)")
            raise WorkspaceError(self.error or "")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            self.fail(f"cannot spool the workspace archive: {e.strerror}")
            raise WorkspaceError(self.error or "") from None
        self.size += len(data)
        self._last = time.monotonic()

    def finish(self) -> None:
        self.done.set()

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.done.set()

    async def wait(self) -> None:
        """Until the whole archive is in; ``WorkspaceError`` if it never will be."""
        while not self.done.is_set():
            if not self.idle_timeout:
                await self.done.wait()
                break
            left = self._last + self.idle_timeout - time.monotonic()
            if left <= 0:
                self.fail(f"the workspace upload stalled: no bytes for "
                          f"{self.idle_timeout:g} s (idle_timeout)")
                break
            with trio.move_on_after(left):
                await self.done.wait()
        if self.error is not None:
            raise WorkspaceError(self.error)
        if self.fd < 0:
            raise WorkspaceError("the workspace archive was discarded")

    def close(self) -> None:
        """Free the spooled bytes. Idempotent."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.done.is_set():
            self.fail("the upload ended before workspace_end")


# ------------------------------------------------------------------ unpack


@dataclass(slots=True)
class Unpacked:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def _parts(name: str, what: str = "name") -> list[str]:
    """The components of an archive path, or ``WorkspaceError``."""
    if "\x00" in name or len(name) > MAX_NAME:
        raise WorkspaceError(f"archive entry {name[:200]!r}: a bad {what}")
    if name.startswith("/"):
        raise WorkspaceError(f"archive entry {name[:200]!r}: an absolute {what} is not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise WorkspaceError(f"archive entry {name[:200]!r}: '..' is not allowed in a {what}")
    if len(parts) > MAX_DEPTH:
        raise WorkspaceError(f"archive entry {name[:200]!r}: more than {MAX_DEPTH} levels deep")
    return parts


@contextlib.contextmanager
def as_owner_of(fd: int) -> Iterator[None]:
    """This thread's filesystem ids become those of ``fd``'s owner (the job user) for the
    block: /box is a tmpfs of the container's user namespace, where the host's root has
    no id to own a new file by (EOVERFLOW), and what we make is the job's anyway.
    setfsuid is per thread; the worker thread gets its ids back after."""
    st = os.fstat(fd)
    old_gid = _libc.setfsgid(st.st_gid)
    old_uid = _libc.setfsuid(st.st_uid)
    try:
        yield
    finally:
        _libc.setfsuid(old_uid)
        _libc.setfsgid(old_gid)


class _Tree:
    """Directory descriptors under /box, opened one component at a time, never through
    a symlink; what it makes is owned by the job user (``as_owner_of`` /box)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._dirs: dict[tuple[str, ...], int] = {(): root}

    def dir(self, parts: list[str], mode: int = 0o755) -> int:
        key = tuple(parts)
        fd = self._dirs.get(key)
        if fd is not None:
            return fd
        parent = self.dir(parts[:-1])
        name = parts[-1]
        try:
            os.mkdir(name, mode, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=parent)
        except OSError as e:
            raise WorkspaceError(f"archive entry {'/'.join(parts)!r}: not a directory "
                                 f"({e.strerror}): a link or file is in the way") from None
        self._dirs[key] = fd
        return fd

    def close(self) -> None:
        for key, fd in self._dirs.items():
            if key:
                os.close(fd)
        self._dirs.clear()


def _open_dir(box: str | int) -> int:
    """A descriptor of ``box``: a path, or a descriptor already open (ours to close)."""
    if isinstance(box, int):
        return box
    return os.open(box, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def unpack(fd: int, fmt: str, box: str | int, *, max_files: int, max_bytes: int) -> Unpacked:
    """Unpack the spooled archive ``fd`` into the directory ``box`` (a container's /box,
    seen from the host; a path or an open descriptor, which this closes). Blocking:
    run it in a thread. ``WorkspaceError`` on any rule."""
    # A file description of its own (its own offset): the tests of one job unpack the
    # same spooled archive into their containers at the same time. Opened as root,
    # before the thread takes the job user's filesystem ids.
    root = _open_dir(box)
    try:
        with open(f"/proc/self/fd/{fd}", "rb") as raw, as_owner_of(root):
            return _unpack(raw, fmt, root, max_files, max_bytes)
    finally:
        os.close(root)


def _unpack(raw: BinaryIO, fmt: str, root: int, max_files: int, max_bytes: int) -> Unpacked:
    tree = _Tree(root)
    done = Unpacked()
    regular: set[tuple[str, ...]] = set()
    try:
        src = gzip.GzipFile(fileobj=raw, mode="rb") if fmt == "gzip" else raw
        tar: tarfile.TarFile | None = None
        try:
            tar = tarfile.open(fileobj=src, mode="r|")  # type: ignore[arg-type]  # noqa: SIM115
            for m in tar:
                done.files += 1
                if done.files > max_files:
                    raise WorkspaceError(f"the workspace archive has more than {max_files} "
                                         "entries (the server's cap)")
                _entry(tar, m, tree, done, regular, max_bytes)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise WorkspaceError(f"the workspace is not a valid {fmt} archive: {e}") from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WorkspaceError(f"the workspace does not fit in /box (box_size "
                                     f"{max_bytes} bytes, or its inodes)") from None
            raise WorkspaceError(f"unpacking the workspace: {e.strerror}") from None
        finally:
            if tar is not None:
                tar.close()
    finally:
        tree.close()
    return done


def _entry(tar: tarfile.TarFile, m: tarfile.TarInfo, tree: _Tree, done: Unpacked,
           regular: set[tuple[str, ...]], max_bytes: int) -> None:
    parts = _parts(m.name)
    if not parts:
        return  # "." itself: /box is there already
    mode = m.mode & 0o777  # no setuid, setgid or sticky bit, ever
    if m.isdir():
        tree.dir(parts, mode | 0o700)
        return
    parent = tree.dir(parts[:-1])
    name = parts[-1]
    if m.isreg():
        if done.bytes + m.size > max_bytes:
            raise WorkspaceError(f"archive entry {m.name[:200]!r} declares {m.size} bytes: the "
                                 f"workspace would exceed {max_bytes} bytes (box_size)")
        _replace(name, parent)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      mode | 0o600, dir_fd=parent)
        try:
            src = tar.extractfile(m)
            assert src is not None
            while chunk := src.read(COPY_CHUNK):
                done.bytes += len(chunk)
                if done.bytes > max_bytes:  # a member that inflates past what it declared
                    raise WorkspaceError(f"the workspace inflates past {max_bytes} bytes "
                                         "(box_size): refused")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.fchmod(out, mode | 0o600)
            os.utime(out, (m.mtime, m.mtime))
        finally:
            os.close(out)
        regular.add(tuple(parts))
    elif m.issym():
        target = m.linkname
        if target.startswith("/") or "\x00" in target:
            raise WorkspaceError(f"archive entry {m.name[:200]!r}: a symlink to an absolute "
                                 f"path ({target[:200]!r}) would leave /box")
        depth = len(parts) - 1
        for p in target.split("/"):
            depth += -1 if p == ".." else 0 if p in ("", ".") else 1
            if depth < 0:
                raise WorkspaceError(f"archive entry {m.name[:200]!r}: its symlink target "
                                     f"{target[:200]!r} leads out of /box")
        _replace(name, parent)
        os.symlink(target, name, dir_fd=parent)
    elif m.islnk():
        tparts = _parts(m.linkname, "link target")
        if tuple(tparts) not in regular:
            raise WorkspaceError(f"archive entry {m.name[:200]!r}: a hard link may only name "
                                 f"a file the archive made before it ({m.linkname[:200]!r})")
        _replace(name, parent)
        os.link(tparts[-1], name, src_dir_fd=tree.dir(tparts[:-1]), dst_dir_fd=parent,
                follow_symlinks=False)
        regular.add(tuple(parts))
    else:
        kind = ("a device node" if m.ischr() or m.isblk() else
                "a FIFO" if m.isfifo() else f"an entry of type {m.type!r}")
        raise WorkspaceError(f"archive entry {m.name[:200]!r}: {kind} is not allowed")


def _replace(name: str, parent: int) -> None:
    """A later entry of the same name wins, as with tar; never a directory's contents."""
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise WorkspaceError(f"archive entry {name!r}: a directory is in the way") from None


# ------------------------------------------------------------------ artifacts


def check_globs(globs: list[str] | tuple[str, ...]) -> list[list[str]]:
    """Each glob's components, or ``WorkspaceError`` for one that names no path in /box."""
    out = []
    for g in globs:
        if not g or g.startswith("/") or "\x00" in g:
            raise WorkspaceError(f"artifact glob {g[:200]!r} must be relative to /box")
        parts = [p for p in g.split("/") if p not in ("", ".")]
        if ".." in parts or not parts:
            raise WorkspaceError(f"artifact glob {g[:200]!r} must stay inside /box (no '..')")
        out.append(parts)
    return out


def _match(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match(pat[1:], parts[1:])


@dataclass(slots=True)
class Artifacts:
    files: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False


def collect(box: str | int, globs: list[str] | tuple[str, ...], *, max_files: int, max_bytes: int,
            max_walk: int = 200_000) -> Artifacts:
    """The regular files under ``box`` that a glob matches, sorted by path, within the caps.
    Blocking: run it in a thread."""
    pats = check_globs(globs)
    found = Artifacts()
    budget = [max_bytes, max_walk]
    root = _open_dir(box)
    try:
        _walk(root, [], pats, found, budget, max_files)
    finally:
        os.close(root)
    return found


def _walk(dfd: int, where: list[str], pats: list[list[str]], found: Artifacts,
          budget: list[int], max_files: int) -> None:
    if len(where) > MAX_DEPTH:
        return
    try:
        entries = sorted(os.scandir(dfd), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        budget[1] -= 1
        if budget[1] < 0:
            found.truncated = True  # /box holds more than we walk
            return
        rel = [*where, e.name]
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dfd)
            except OSError:
                continue
            try:
                _walk(sub, rel, pats, found, budget, max_files)
            finally:
                os.close(sub)
            continue
        if not stat.S_ISREG(st.st_mode) or not any(_match(p, rel) for p in pats):
            continue  # symlinks, FIFOs and the rest never come back
        if len(found.files) >= max_files or budget[0] <= 0:
            found.truncated = True
            continue
        try:
            fd = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = bytearray()
            while len(data) <= budget[0]:
                chunk = os.read(fd, min(COPY_CHUNK, budget[0] + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) > budget[0]:
            data = data[:budget[0]]
            found.truncated = True
        budget[0] -= len(data)
        found.files["/".join(rel)] = bytes(data)
