"""CI jobs (issue 19): a workspace archive in, read-only caches, artifacts out, by attack.

One daemon for the module, with a cache directory the operator declared. Each test
sends a real archive over the msgpack protocol (the client's ``workspace=``), and the
job itself reports what it sees in /box and /cache: the oracle is the job's own view
(``ls``, ``stat``, a write attempt), never our own bookkeeping. Hostile archives are
built in memory (or streamed: the bomb is never on disk), and each must end with a
typed error naming the rule, the daemon's spool directory empty afterwards.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd_client import Client, JobRejected
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cache_dir() -> Iterator[Path]:
    # Not under /tmp: the container makes its root there, which hides the host's /tmp
    # from the mount (the configuration refuses such a cache).
    d = Path(tempfile.mkdtemp(prefix="sandboxd-cache-", dir="/var/tmp"))
    try:
        (d / "wheel.txt").write_text("from the cache\n")
        # Open to everyone: only the read-only mount may stop the job's writes.
        d.chmod(0o777)
        (d / "wheel.txt").chmod(0o666)
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = leftovers.snapshot()
    d = Daemon(tmp_path_factory.mktemp("ci"), pool_size=1, concurrency=2,
               caches=f"wheels={cache_dir}", max_workspace=8 << 20,
               workspace_max_files=2000, artifacts_max_files=5,
               artifacts_max_bytes=64 << 10).start()
    try:
        yield d
    finally:
        assert d.stop() == 0, d.log.read_text()[-3000:]
        left = leftovers.new_leftovers(before, settle=10.0, view=leftovers.only_ours(d.instance))
        assert not left, f"the module's daemon left things behind: {left}"


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    d: Daemon = request.getfixturevalue("daemon")
    yield leftovers.daemon_view(d.pid, d.instance)


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.socket) as c:
        yield c
    spool = Path(daemon.config["state_dir"]) / "sandboxd-workspaces"
    if spool.exists():  # unnamed files: nothing is ever listed there
        assert list(spool.iterdir()) == []


def tar_of(entries: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for e in entries:
            if isinstance(e, tuple):
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                info.mode = 0o644
                t.addfile(info, io.BytesIO(e[1]))
            else:
                t.addfile(e)
    return buf.getvalue()


def info(name: str, kind: bytes, **kw: object) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = kind
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def sh(client: Client, script: str, archive: bytes | None = None, **kw: object):  # type: ignore[no-untyped-def]
    if archive is not None:
        kw["workspace"] = io.BytesIO(archive)
    return client.run("bash", {"run.sh": script}, argv=["/bin/bash", "run.sh"], **kw)


# ------------------------------------------------------------------ workspace in


def test_a_gzip_workspace_is_unpacked_into_box_owned_by_the_job(client: Client) -> None:
    archive = tar_of([("src/pkg/mod.txt", b"X = 1\n"), ("README", b"hi\n"),
                      info("src/link", tarfile.SYMTYPE, linkname="pkg/mod.txt"),
                      info("src/hard", tarfile.LNKTYPE, linkname="README"),
                      ("tool.sh", b"#!/bin/sh\necho tool\n")], gz=True)
    r = sh(client, "cat src/pkg/mod.txt src/link README src/hard; stat -c '%U %a' src/pkg/mod.txt;"
           " touch src/pkg/new && echo writable", archive)
    assert r.ok, r
    assert r.stdout.decode().splitlines() == ["X = 1", "X = 1", "hi", "hi", "sandbox 644",
                                              "writable"]


def test_setuid_bits_are_dropped(client: Client) -> None:
    i = tarfile.TarInfo("suid")
    i.mode = 0o6755
    i.size = 3
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.addfile(i, io.BytesIO(b"abc"))
    r = sh(client, "stat -c %a suid", buf.getvalue())
    assert r.ok and r.stdout == b"755\n", r


@pytest.mark.parametrize(("entry", "says"), [
    (("../escape", b"x"), "'..' is not allowed"),
    (("/etc/evil", b"x"), "absolute"),
    (("a/../../x", b"x"), "'..' is not allowed"),
    (info("ln", tarfile.SYMTYPE, linkname="/etc/passwd"), "absolute path"),
    (info("d/ln", tarfile.SYMTYPE, linkname="../../x"), "leads out of /box"),
    (info("hl", tarfile.LNKTYPE, linkname="/etc/shadow"), "absolute"),
    (info("hl", tarfile.LNKTYPE, linkname="never-made"), "hard link may only name"),
    (info("null", tarfile.CHRTYPE, devmajor=1, devminor=3), "device node"),
    (info("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), "device node"),
    (info("fifo", tarfile.FIFOTYPE), "FIFO"),
])
def test_a_hostile_archive_is_refused_by_name(client: Client, entry: object, says: str) -> None:
    with pytest.raises(JobRejected, match=says):
        sh(client, "echo ran", tar_of([entry]))  # type: ignore[list-item]


def test_a_path_through_an_archived_symlink_is_refused(client: Client) -> None:
    archive = tar_of([info("up", tarfile.SYMTYPE, linkname="."), ("up/../../x", b"x")])
    with pytest.raises(JobRejected, match=r"'\.\.'"):
        sh(client, "echo ran", archive)
    archive = tar_of([info("d", tarfile.SYMTYPE, linkname="sub"), ("d/file", b"x")])
    with pytest.raises(JobRejected, match="not a directory"):
        sh(client, "echo ran", archive)


def test_too_many_entries_are_refused_quickly(client: Client) -> None:
    # The daemon's cap is 2000 entries (the default is 100000; /box's inodes bound it too).
    archive = tar_of([(f"f{i}", b"") for i in range(3000)])
    t = time.monotonic()
    with pytest.raises(JobRejected, match="more than 2000 entries"):
        sh(client, "echo ran", archive)
    assert time.monotonic() - t < 120


def _bomb() -> Iterator[bytes]:
    """A tar header declaring 100 GB (base-256 size field), then gzip members of zeros:
    each 1 KiB member inflates to 1 MiB. Made as it is sent, never stored."""
    header = tarfile.TarInfo("bomb")
    header.size = 100 * 10**9
    head = header.tobuf(format=tarfile.GNU_FORMAT)
    yield gzip.compress(head)
    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9)
    for _ in range(200):  # 200 MiB inflated at most: far past this daemon's box_size
        yield member


class _Stream(io.RawIOBase):
    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts, self.buf = parts, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self.buf:
            nxt = next(self.parts, None)
            if nxt is None:
                return 0
            self.buf = nxt
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n

    def seek(self, off: int, whence: int = 0) -> int:  # only the client's peek at the magic
        return 0


def test_a_decompression_bomb_is_refused(client: Client) -> None:
    stream = _Stream(_bomb())
    first = next(stream.parts)
    stream.buf = first
    with pytest.raises(JobRejected, match="declares 100000000000 bytes"):
        client.run("bash", {"run.sh": "echo ran"}, argv=["/bin/bash", "run.sh"],
                   workspace=io.BufferedReader(stream))


def test_an_archive_that_inflates_past_box_size_is_refused(client: Client) -> None:
    big = gzip.compress(tar_of([("zeros", b"\0" * (3 << 20))]))
    with pytest.raises(JobRejected, match="box_size"):
        sh(client, "echo ran", big, limits={"box_size": "1M"})


def test_an_upload_past_the_cap_is_refused(client: Client) -> None:
    # max_workspace is 8 MiB here: a 9 MiB incompressible upload stops at the cap.
    noise = tar_of([("noise", os.urandom(9 << 20))])
    with pytest.raises(JobRejected, match="max_workspace"):
        sh(client, "echo ran", noise)


def test_not_an_archive_is_refused(client: Client) -> None:
    with pytest.raises(JobRejected, match="not a valid"):
        sh(client, "echo ran", b"\x1f\x8b" + b"garbage" * 100)


# ------------------------------------------------------------------ caches


def test_a_cache_is_mounted_read_only(client: Client) -> None:
    r = sh(client, "cat /cache/wheels/wheel.txt; touch /cache/wheels/x 2>&1 || echo refused;"
           " rm /cache/wheels/wheel.txt 2>&1 || echo refused", caches=["wheels"])
    assert r.ok, r
    out = r.stdout.decode()
    assert out.startswith("from the cache\n") and out.count("refused") == 2, out
    assert out.count("Read-only file system") == 2, out


def test_the_cache_is_unchanged_after_an_attack(client: Client, cache_dir: Path) -> None:
    sh(client, "echo gone > /cache/wheels/wheel.txt; mount -o remount,rw /cache/wheels;"
       " chmod 777 /cache/wheels", caches=["wheels"])
    assert (cache_dir / "wheel.txt").read_text() == "from the cache\n"
    assert sorted(p.name for p in cache_dir.iterdir()) == ["wheel.txt"]


def test_an_unknown_cache_is_refused(client: Client) -> None:
    with pytest.raises(JobRejected, match="unknown cache 'npm'"):
        sh(client, "echo ran", caches=["npm"])


# ------------------------------------------------------------------ artifacts


def test_artifacts_come_back_by_glob(client: Client) -> None:
    r = sh(client, "mkdir -p reports/sub; echo '<x/>' > reports/a.xml; echo b > reports/b.txt;"
           " echo c > reports/sub/c.xml; echo '{}' > coverage.json",
           artifacts=["reports/*.xml", "coverage.json", "nothing/*"])
    assert r.ok, r
    step = r.steps[0]
    assert step.artifacts == {"coverage.json": b"{}\n", "reports/a.xml": b"<x/>\n"}
    assert not step.artifacts_truncated
    r = sh(client, "mkdir -p a/b/c; echo 1 > a/b/c/d.xml; echo 2 > top.xml", artifacts=["**/*.xml"])
    assert r.steps[0].artifacts == {"a/b/c/d.xml": b"1\n", "top.xml": b"2\n"}


def test_a_glob_cannot_escape_box(client: Client) -> None:
    for glob in ("../etc/passwd", "/etc/passwd", "a/../../x"):
        with pytest.raises(JobRejected, match="artifacts"):
            sh(client, "echo ran", artifacts=[glob])
    # A symlink the job plants is never followed, whatever its name.
    r = sh(client, "ln -s /etc/passwd out.txt; mkdir d; ln -s /etc d/etc; mkfifo f.txt",
           artifacts=["*.txt", "d/**"])
    assert r.ok, r
    assert r.steps[0].artifacts == {}


def test_artifacts_over_the_caps_are_truncated_and_say_so(client: Client) -> None:
    # The daemon's caps here: 5 files, 64 KiB.
    r = sh(client, "for i in 1 2 3 4 5 6 7; do echo $i > f$i.log; done", artifacts=["*.log"])
    assert len(r.steps[0].artifacts) == 5 and r.steps[0].artifacts_truncated
    r = sh(client, "head -c 100000 /dev/zero > big.bin", artifacts=["big.bin"])
    assert r.steps[0].artifacts == {"big.bin": b"\0" * (64 << 10)}
    assert r.steps[0].artifacts_truncated


def test_a_job_that_fills_box_still_gets_its_artifacts(client: Client) -> None:
    r = sh(client, "echo keep > keep.txt; head -c 10M /dev/zero > fill; echo $?",
           artifacts=["keep.txt", "f*"], limits={"box_size": "1M"})
    assert r.ok and r.stdout == b"1\n", r  # head hit the full /box
    found = r.steps[0].artifacts
    # Sorted by path, "fill" comes first and takes the whole 64 KiB: said so.
    assert found == {"fill": b"\0" * (64 << 10)} and r.steps[0].artifacts_truncated
    r = sh(client, "echo keep > keep.txt; head -c 10M /dev/zero > fill; echo $?",
           artifacts=["keep.txt"], limits={"box_size": "1M"})
    assert r.steps[0].artifacts == {"keep.txt": b"keep\n"}, r


def test_the_async_client_sends_a_workspace_too(daemon: Daemon) -> None:
    import trio

    from sandboxd_client import AsyncClient

    archive = tar_of([("data.txt", b"async\n")], gz=True)

    async def main() -> bytes:
        async with AsyncClient(daemon.socket) as c:
            r = await c.run("bash", {"run.sh": "cat data.txt"}, argv=["/bin/bash", "run.sh"],
                            workspace=io.BytesIO(archive))
            return r.stdout

    assert trio.run(main) == b"async\n"


def test_every_test_of_a_batch_gets_the_whole_workspace(client: Client) -> None:
    # The tests' containers unpack the one spooled archive at the same time.
    archive = tar_of([(f"d/f{i}", bytes([65 + i % 26]) * 50_000) for i in range(40)], gz=True)
    r = sh(client, "cat d/* | md5sum", archive, tests=[{}, {}, {}, {}])
    import hashlib
    want = hashlib.md5(b"".join(bytes([65 + i % 26]) * 50_000
                                for i in sorted(range(40), key=lambda i: f"f{i}"))).hexdigest()
    assert [s.stdout.decode().split()[0] for s in r.steps] == [want] * 4, r


def _million_empty_files() -> Iterator[bytes]:
    """A gzip tar of 10^6 empty files, made as it is sent: one header template whose name
    and checksum are patched per entry (tarfile would take a minute for a million)."""
    import zlib

    base = bytearray(tarfile.TarInfo("d000/f000").tobuf(format=tarfile.USTAR_FORMAT))
    base[148:156] = b" " * 8
    base_sum = sum(base)
    old = sum(base[:9])
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = []
    for i in range(10**6):
        name = b"d%03d/f%03d" % (i // 1000, i % 1000)
        base[:9] = name
        base[148:156] = b"%06o\0 " % (base_sum - old + sum(name))
        out.append(gz.compress(bytes(base)))
        if len(out) == 4096:
            yield b"".join(out)
            out = []
    out.append(gz.compress(b"\0" * 1024))
    out.append(gz.flush())
    yield b"".join(out)


@pytest.mark.slow
def test_a_million_empty_files_are_refused_in_bounded_time(tmp_path: Path) -> None:
    # The default caps (100000 entries, 1 GiB): /box's 65536 inodes run out first.
    d = Daemon(tmp_path, pool_size=1).start()
    try:
        t = time.monotonic()
        with Client(d.socket) as c, pytest.raises(JobRejected, match="does not fit in /box"):
            c.run("bash", {"run.sh": "echo ran"}, argv=["/bin/bash", "run.sh"],
                  workspace=io.BufferedReader(_Stream(_million_empty_files())))  # type: ignore[arg-type]
        assert time.monotonic() - t < 600
        assert list((Path(d.config["state_dir"]) / "sandboxd-workspaces").iterdir()) == []
    finally:
        assert d.stop() == 0
