"""Unpacking one layer: names, kinds, modes, whiteouts, and every way out of the layer refused.

Pure (no root) except where a whiteout needs CAP_MKNOD; each test writes a
layer tar in memory and unpacks it into its own directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from sandboxd.images import ImageError, ImportLimits
from sandboxd.images._layer import (
    OPAQUE_XATTR,
    TarStream,
    normalize,
    sanitize_mode,
    unpack,
    whiteout_of,
)
from sandboxd_testing.images import Entry, layer_bytes

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes (root)")


def unpack_entries(tmp: Path, entries: list[Entry], limits: ImportLimits | None = None,
                   raw: bytes | None = None):  # type: ignore[no-untyped-def]
    limits = limits or ImportLimits()
    data = raw if raw is not None else layer_bytes(entries)
    stream = TarStream(io.BytesIO(data), limits.max_layer_size, limits.max_header, "layer t")
    tmp.mkdir(parents=True, exist_ok=True)
    dest = tmp / "layer"
    stats = unpack(stream, str(dest), limits)
    assert stream.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    return dest, stats


def tree(dest: Path) -> dict[str, str]:
    out = {}
    for top, dirs, files in os.walk(dest):
        for name in dirs + files:
            p = Path(top) / name
            st = os.lstat(p)
            rel = str(p.relative_to(dest))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = "fifo"
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = f"chr {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
            else:
                out[rel] = p.read_bytes().decode(errors="replace")
    return out


# ------------------------------------------------------------------ pure pieces


@pytest.mark.parametrize("name,want", [
    ("a/b", "a/b"), ("./a//b/", "a/b"), ("./", ""), (".", ""), ("a/./b", "a/b"),
])
def test_normalize(name: str, want: str) -> None:
    assert normalize(name) == want


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/..", "a\0b",
                                  "x" * 300, "a/" * 2100])
def test_normalize_refuses(name: str) -> None:
    with pytest.raises(ImageError):
        normalize(name)


def test_whiteout_of() -> None:
    assert whiteout_of("etc/.wh.passwd") == ("whiteout", "etc/passwd")
    assert whiteout_of(".wh.top") == ("whiteout", "top")
    assert whiteout_of("dir/.wh..wh..opq") == ("opaque", "dir")
    assert whiteout_of(".wh..wh..opq") == ("opaque", "")
    assert whiteout_of("x/.wh..wh.plnk") == ("meta", "x/.wh..wh.plnk")
    assert whiteout_of("etc/passwd") is None
    assert whiteout_of("etc/wh.x") is None


def test_sanitize_mode() -> None:
    assert sanitize_mode(0o4755) == (0o755, True)
    assert sanitize_mode(0o2775) == (0o755, True)
    assert sanitize_mode(0o1777) == (0o1755, False)
    assert sanitize_mode(0o666) == (0o644, False)
    assert sanitize_mode(0o100644) == (0o644, False)


# ------------------------------------------------------------------ unpacking


def test_plain_layer(tmp_path: Path) -> None:
    dest, stats = unpack_entries(tmp_path, [
        Entry("usr", "dir", mode=0o755), Entry("usr/bin", "dir", mode=0o555),
        Entry("usr/bin/tool", data=b"#!/bin/sh\n", mode=0o755),
        Entry("etc/conf", data=b"x=1\n"),  # parent not listed: made 0755
        Entry("bin", "symlink", target="usr/bin"),
        Entry("etc/conf2", "hardlink", target="etc/conf"),
        Entry("run/fifo", "fifo", mode=0o600),
    ])
    assert tree(dest) == {"usr": "dir", "usr/bin": "dir", "usr/bin/tool": "#!/bin/sh\n",
                          "etc": "dir", "etc/conf": "x=1\n", "etc/conf2": "x=1\n",
                          "bin": "-> usr/bin", "run": "dir", "run/fifo": "fifo"}
    assert stat.S_IMODE(os.stat(dest / "usr/bin").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest / "etc").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert os.stat(dest / "etc/conf").st_ino == os.stat(dest / "etc/conf2").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert os.stat(dest / "usr/bin/tool").st_mtime == 1_700_000_000
    assert (stats.files, stats.size) == (3, 14)


def test_setuid_setgid_and_group_write_are_stripped(tmp_path: Path) -> None:
    dest, stats = unpack_entries(tmp_path, [
        Entry("su", data=b"x", mode=0o4755), Entry("sg", data=b"x", mode=0o2755),
        Entry("ww", data=b"x", mode=0o666), Entry("tmp", "dir", mode=0o1777),
        Entry("sgdir", "dir", mode=0o2775),
    ])
    modes = {n: stat.S_IMODE(os.lstat(dest / n).st_mode) for n in ("su", "sg", "ww", "tmp",
                                                                      "sgdir")}
    assert modes == {"su": 0o755, "sg": 0o755, "ww": 0o644, "tmp": 0o1755, "sgdir": 0o755}
    assert stats.setid_stripped == 3


def test_device_nodes_are_dropped(tmp_path: Path) -> None:
    dest, stats = unpack_entries(tmp_path, [
        Entry("dev", "dir", mode=0o755), Entry("dev/mem", "chr"), Entry("dev/sda", "blk"),
        Entry("dev/ok", data=b"fine"),
    ])
    assert tree(dest) == {"dev": "dir", "dev/ok": "fine"}
    assert stats.dropped == 2


def test_xattrs_from_the_tar_are_ignored(tmp_path: Path) -> None:
    """An image must not plant overlay attributes (redirects, opaque markers) of its own."""
    dest, _ = unpack_entries(tmp_path, [
        Entry("d", "dir", mode=0o755, pax={"SCHILY.xattr.user.overlay.opaque": "y",
                                           "SCHILY.xattr.user.overlay.redirect": "/etc"}),
        Entry("f", data=b"x", pax={"SCHILY.xattr.security.capability": "\x01"}),
    ])
    assert os.listxattr(dest / "d") == []
    assert os.listxattr(dest / "f") == []


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    dest, _ = unpack_entries(tmp_path, [
        Entry("a", data=b"one"), Entry("a", data=b"two"),
        Entry("d", "dir"), Entry("d/x", data=b"x"), Entry("d", data=b"now a file"),
        Entry("l", "symlink", target="/etc"), Entry("l", "dir"), Entry("l/inside", data=b"ok"),
    ])
    assert tree(dest) == {"a": "two", "d": "now a file", "l": "dir", "l/inside": "ok"}


# ------------------------------------------------------------------ ways out


def test_file_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The classic escape: link -> /etc, then link/passwd."""
    with pytest.raises(ImageError, match="lies below 'escape', which is a symlink"):
        unpack_entries(tmp_path, [Entry("escape", "symlink", target="/etc"),
                                  Entry("escape/passwd", data=b"pwned")])
    with pytest.raises(ImageError, match="symlink"):
        unpack_entries(tmp_path / "2", [Entry("a/up", "symlink", target="../../.."),
                                        Entry("a/up/tmp/x", data=b"pwned")])


def test_symlinks_out_of_the_layer_are_kept_as_text_never_followed(tmp_path: Path) -> None:
    """They resolve inside the container's own root at run time; here they are only text."""
    dest, _ = unpack_entries(tmp_path, [
        Entry("abs", "symlink", target="/etc/shadow"),
        Entry("rel", "symlink", target="../../../../../etc/shadow"),
    ])
    assert os.readlink(dest / "abs") == "/etc/shadow"
    assert os.readlink(dest / "rel") == "../../../../../etc/shadow"


@pytest.mark.parametrize("entries,match", [
    ([Entry("/etc/passwd", data=b"x")], "absolute path"),
    ([Entry("../outside", data=b"x")], r"climbs out"),
    ([Entry("a/../../outside", data=b"x")], r"climbs out"),
    ([Entry("h", "hardlink", target="/etc/passwd")], "absolute path"),
    ([Entry("h", "hardlink", target="../../etc/passwd")], "climbs out"),
    ([Entry("h", "hardlink", target="not/here")], "regular file earlier in this layer"),
    ([Entry("s", "symlink", target="/etc/passwd"), Entry("h", "hardlink", target="s")],
     "regular file earlier"),
    ([Entry("d", "dir"), Entry("h", "hardlink", target="d")], "regular file earlier"),
    ([Entry("h", data=b"x"), Entry("h", "hardlink", target="h")], "regular file earlier"),
    ([Entry("f", data=b"x"), Entry("f/g", data=b"y")], "which is a file"),
])
def test_hostile_members_are_refused(tmp_path: Path, entries: list[Entry], match: str) -> None:
    with pytest.raises(ImageError, match=match):
        unpack_entries(tmp_path, entries)
    assert not (tmp_path.parent / "outside").exists()


def test_too_many_entries(tmp_path: Path) -> None:
    entries = [Entry(f"f{i}", data=b"") for i in range(11)]
    with pytest.raises(ImageError, match="more than 10 entries"):
        unpack_entries(tmp_path, entries, ImportLimits(max_files=10))


def test_layer_larger_than_the_limit(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="more than 65536 bytes uncompressed"):
        unpack_entries(tmp_path, [Entry(f"f{i}", data=b"x" * 30_000) for i in range(3)],
                       ImportLimits(max_layer_size=65536))
    with pytest.raises(ImageError, match="'big' claims 100000 bytes"):
        unpack_entries(tmp_path / "2", [Entry("big", data=b"x" * 100_000)],
                       ImportLimits(max_layer_size=65536))


def test_member_claiming_an_absurd_size(tmp_path: Path) -> None:
    """A PAX size far beyond the limit is refused from its header, before any data."""
    data = bytearray(layer_bytes([Entry("f", data=b"x", pax={"size": str(1 << 40)})]))
    with pytest.raises(ImageError):
        unpack_entries(tmp_path, [], ImportLimits(max_layer_size=1 << 30), raw=bytes(data))


def test_decompression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert len(bomb) < 100_000
    stream = TarStream(gzip.GzipFile(fileobj=io.BytesIO(bomb)), 8 << 20, 1 << 20, "layer b")
    with pytest.raises(ImageError, match="decompression bomb"):
        stream.drain()
    assert stream.size <= (8 << 20) + (1 << 20)


def test_huge_tar_header_is_refused(tmp_path: Path) -> None:
    """A PAX header is read into memory whole: bounded by max_header."""
    with pytest.raises(ImageError, match="bytes of tar headers"):
        unpack_entries(tmp_path, [Entry("f", data=b"x", pax={"comment": "c" * 300_000})],
                       ImportLimits(max_header=100_000))


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a valid tar"):
        unpack_entries(tmp_path, [], raw=b"this is not a tar archive at all" * 40)


# ------------------------------------------------------------------ whiteouts


def test_opaque_directory_is_an_xattr(tmp_path: Path) -> None:
    dest, stats = unpack_entries(tmp_path, [
        Entry("opq", "dir", mode=0o755), Entry("opq/.wh..wh..opq"),
        Entry("opq/kept", data=b"same layer"), Entry("new/.wh..wh..opq"),
    ])
    assert os.getxattr(dest / "opq", OPAQUE_XATTR) == b"y"
    assert os.getxattr(dest / "new", OPAQUE_XATTR) == b"y"
    assert tree(dest) == {"opq": "dir", "opq/kept": "same layer", "new": "dir"}
    assert stats.opaque == 2


@root_only
def test_whiteout_is_a_0_0_char_device(tmp_path: Path) -> None:
    dest, stats = unpack_entries(tmp_path, [
        Entry("etc/.wh.passwd"), Entry(".wh.toplevel"), Entry("x/.wh..wh.plnk", "dir"),
    ])
    assert tree(dest) == {"etc": "dir", "etc/passwd": "chr 0/0", "toplevel": "chr 0/0"}
    assert stats.whiteouts == 2


@root_only
def test_whiteout_never_hides_its_own_layer(tmp_path: Path) -> None:
    dest, _ = unpack_entries(tmp_path, [
        Entry("a", data=b"before"), Entry(".wh.a"),  # whiteout after: the file stays
        Entry(".wh.b"), Entry("b", data=b"after"),  # file after: replaces the whiteout
    ])
    assert tree(dest) == {"a": "before", "b": "after"}


@root_only
def test_directory_replacing_a_whiteout_is_opaque(tmp_path: Path) -> None:
    """Deleted then made anew in one layer: nothing of the lower directory may show."""
    dest, _ = unpack_entries(tmp_path, [Entry(".wh.d"), Entry("d", "dir"),
                                        Entry(".wh.e"), Entry("e/f", data=b"f")])
    assert os.getxattr(dest / "d", OPAQUE_XATTR) == b"y"
    assert os.getxattr(dest / "e", OPAQUE_XATTR) == b"y"
    assert tree(dest) == {"d": "dir", "e": "dir", "e/f": "f"}


@pytest.mark.skipif(os.geteuid() == 0, reason="as root mknod works")
def test_whiteout_without_root_says_why(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="import as root"):
        unpack_entries(tmp_path, [Entry(".wh.a")])
