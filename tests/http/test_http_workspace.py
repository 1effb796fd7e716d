"""CI jobs over ``/v1`` (docs/ci.md): ``POST /v1/workspaces`` streams an archive to the
daemon's disk, a job names it, and its artifacts come back as base64. Also: the
upload's bounds (a cap, a stall), a hostile archive, an id that is not one's own, and
a 500 MB upload that must not grow the daemon's memory by anything like its size."""

from __future__ import annotations

import base64
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

DAEMON_CONFIG = {"max_workspace": 600 << 20}


def tar_of(entries: list[tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(client: httpx.Client, body: bytes | Iterator[bytes], status: int = 201) -> dict:
    r = client.post("/v1/workspaces", content=body)
    assert r.status_code == status, r.text
    return r.json()


def spool_of(d: Daemon) -> Path:
    return Path(d.config["state_dir"]) / "sandboxd-workspaces"


def test_upload_then_run_then_artifacts(client: httpx.Client, http_daemon: Daemon) -> None:
    w = upload(client, tar_of([("src/a.txt", b"alpha\n")], gz=True))
    assert w["format"] == "gzip" and w["size"] > 0
    r = client.post("/v1/jobs", json={
        "profile": "bash", "files": {"run.sh": "cat src/a.txt; mkdir -p out; "
                                               "echo '<r/>' > out/r.xml"},
        "argv": ["/bin/bash", "run.sh"], "workspace": w["workspace"],
        "artifacts": ["out/*.xml"]})
    assert r.status_code == 200, r.text
    step = r.json()["steps"][0]
    assert step["stdout"] == "alpha\n"
    assert {k: base64.b64decode(v) for k, v in step["artifacts"].items()} == \
        {"out/r.xml": b"<r/>\n"}
    assert step["artifacts_truncated"] is False
    # Used once: the same id again is refused.
    r = client.post("/v1/jobs", json={"profile": "bash", "files": {"run.sh": "true"},
                                      "argv": ["/bin/bash", "run.sh"],
                                      "workspace": w["workspace"]})
    assert r.status_code == 422 and "no uploaded workspace" in r.json()["message"]
    assert list(spool_of(http_daemon).iterdir()) == []


def test_a_hostile_archive_is_refused_when_the_job_runs(client: httpx.Client) -> None:
    w = upload(client, tar_of([("../../etc/x", b"x")]))
    r = client.post("/v1/jobs", json={"profile": "bash", "files": {"run.sh": "true"},
                                      "argv": ["/bin/bash", "run.sh"],
                                      "workspace": w["workspace"]})
    assert r.status_code == 422 and "'..' is not allowed" in r.json()["message"], r.text


def test_bad_fields(client: httpx.Client) -> None:
    for job, says in (({"workspace": "nope"}, "no uploaded workspace"),
                      ({"artifacts": ["../x"]}, "artifacts"),
                      ({"caches": ["npm"]}, "unknown cache")):
        r = client.post("/v1/jobs", json={"profile": "bash", "files": {"run.sh": "true"},
                                          "argv": ["/bin/bash", "run.sh"], **job})
        assert r.status_code == 422 and says in r.json()["message"], r.text
    r = client.post("/v1/workspaces?format=zip", content=b"x")
    assert r.status_code == 422, r.text


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    """A plain tar of one file of ``total`` zero bytes, made as it is sent."""
    info = tarfile.TarInfo("big")
    info.size = total
    yield info.tobuf()
    zero = b"\0" * size
    for _ in range(total // size):
        yield zero
    yield b"\0" * (1024 - total % 512 if total % 512 else 1024)


@pytest.mark.slow
def test_a_500_mb_upload_is_spooled_not_held(client: httpx.Client, http_daemon: Daemon) -> None:
    before = http_daemon.rss_kib()
    w = upload(client, _chunks(500 << 20))
    after = http_daemon.rss_kib()
    assert w["size"] > 500 << 20
    # The archive went to an unnamed file: the daemon grew by far less than its size.
    assert after - before < 64 << 10, (before, after)
    assert list(spool_of(http_daemon).iterdir()) == []
    # A job too small for it is refused at the cap, and the disk is given back.
    r = client.post("/v1/jobs", json={"profile": "bash", "files": {"run.sh": "true"},
                                      "argv": ["/bin/bash", "run.sh"],
                                      "workspace": w["workspace"]})
    assert r.status_code == 422 and "box_size" in r.json()["message"], r.text


def test_an_upload_past_the_cap_is_refused(client: httpx.Client) -> None:
    r = client.post("/v1/workspaces", content=_chunks(700 << 20))
    assert r.status_code == 413 and "max_workspace" in r.json()["message"], r.text


def test_the_spool_holds_no_named_file(http_daemon: Daemon) -> None:
    spool = spool_of(http_daemon)
    assert not spool.exists() or list(spool.iterdir()) == []
    assert os.stat(http_daemon.config["state_dir"]).st_mode & 0o002 == 0


def test_reattach_to_a_background_jobs_log_from_an_offset(client: httpx.Client,
                                                          base_url: str) -> None:
    script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done"
    r = client.post("/v1/jobs", params={"wait": "false"},
                    json={"profile": "bash", "files": {"run.sh": script},
                          "argv": ["/bin/bash", "run.sh"]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    # A first client reads what there is, then goes away.
    first = b""
    for _ in range(200):
        got = client.get(f"/v1/jobs/{job_id}/log")
        assert got.status_code == 200
        first = got.content
        if first:
            break
        time.sleep(0.05)
    assert first.startswith(b"line1\n")
    # Another connection re-attaches from that offset and follows to the end.
    with httpx.Client(base_url=base_url, timeout=60) as other, other.stream(
            "GET", f"/v1/jobs/{job_id}/log",
            params={"offset": len(first), "follow": "true"}) as s:
        rest = b"".join(s.iter_bytes())
    assert first + rest == b"".join(b"line%d\n" % i for i in range(1, 6))
    assert client.get(f"/v1/jobs/{job_id}/log", params={"offset": "x"}).status_code == 422
    assert client.get("/v1/jobs/nope/log").status_code == 404
