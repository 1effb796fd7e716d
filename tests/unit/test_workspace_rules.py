"""sandboxd/workspace.py without a container: the glob rules, the spool's cap and its
unnamed file, and the unpack rules on a plain directory (as the test's own user)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import trio

from sandboxd.workspace import Upload, WorkspaceError, _match, check_globs, collect, unpack


@pytest.mark.parametrize(("glob", "path", "hit"), [
    ("reports/*.xml", "reports/a.xml", True),
    ("reports/*.xml", "reports/sub/a.xml", False),
    ("**/*.xml", "a.xml", True),
    ("**/*.xml", "a/b/c.xml", True),
    ("reports/**", "reports/a/b", True),
    ("coverage.json", "coverage.json", True),
    ("coverage.json", "x/coverage.json", False),
    ("r?.txt", "r1.txt", True),
    ("[ab].txt", "c.txt", False),
])
def test_globs(glob: str, path: str, hit: bool) -> None:
    assert _match(check_globs([glob])[0], path.split("/")) is hit


@pytest.mark.parametrize("glob", ["", "/abs", "../x", "a/../../x", "."])
def test_globs_that_leave_box_are_refused(glob: str) -> None:
    with pytest.raises(WorkspaceError):
        check_globs([glob])


def test_the_spool_is_unnamed_and_capped(tmp_path: Path) -> None:
    spool = tmp_path / "sandboxd-workspaces"
    up = Upload(str(spool), "tar", max_bytes=10)
    assert list(spool.iterdir()) == []  # unlinked at once
    up.write(b"12345")
    with pytest.raises(WorkspaceError, match="max_workspace"):
        up.write(b"123456")

    async def wait() -> None:
        await up.wait()

    with pytest.raises(WorkspaceError, match="max_workspace"):
        trio.run(wait)
    up.close()
    up.close()  # idempotent
    assert list(spool.iterdir()) == []


def test_an_upload_closed_before_its_end_fails_its_job(tmp_path: Path) -> None:
    up = Upload(str(tmp_path), "gzip", max_bytes=100)
    up.close()

    async def wait() -> None:
        await up.wait()

    with pytest.raises(WorkspaceError, match="before workspace_end"):
        trio.run(wait)


def _spooled(tmp_path: Path, entries: list[tuple[str, bytes]]) -> Upload:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    up = Upload(str(tmp_path / "spool"), "tar", max_bytes=1 << 20)
    up.write(buf.getvalue())
    up.finish()
    return up


def test_unpack_then_collect_on_a_directory(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    up = _spooled(tmp_path, [("a/b.txt", b"hello"), ("c.xml", b"<c/>")])
    got = unpack(up.fd, "tar", str(box), max_files=10, max_bytes=1000)
    up.close()
    assert (got.files, got.bytes) == (2, 9)
    assert (box / "a" / "b.txt").read_bytes() == b"hello"
    os.symlink("/etc/passwd", box / "evil.xml")
    found = collect(str(box), ["**/*.xml", "a/*"], max_files=10, max_bytes=1000)
    assert found.files == {"a/b.txt": b"hello", "c.xml": b"<c/>"} and not found.truncated


def test_unpack_caps(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    up = _spooled(tmp_path, [(f"f{i}", b"x" * 10) for i in range(5)])
    with pytest.raises(WorkspaceError, match="more than 3 entries"):
        unpack(up.fd, "tar", str(box), max_files=3, max_bytes=1000)
    with pytest.raises(WorkspaceError, match="box_size"):
        unpack(up.fd, "tar", str(box), max_files=10, max_bytes=25)
    up.close()


def test_a_stalled_upload_fails_its_job(tmp_path: Path) -> None:
    up = Upload(str(tmp_path), "tar", max_bytes=100, idle_timeout=0.2)
    caught: list[WorkspaceError] = []

    async def main() -> None:
        async def trickle() -> None:
            for _ in range(3):  # bytes keep it alive...
                await trio.sleep(0.1)
                up.write(b"x")

        async with trio.open_nursery() as n:
            n.start_soon(trickle)
            try:
                await up.wait()  # ...then nothing: it fails 0.2 s after the last
            except WorkspaceError as e:
                caught.append(e)

    trio.run(main)
    assert len(caught) == 1 and "stalled" in str(caught[0]) and up.size == 3
    up.close()
