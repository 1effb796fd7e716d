"""The HTTP front door's configuration: off by default, never open beyond loopback, and a
clear refusal at start-up (no daemon runs here: no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandboxd.config import ConfigError, load


def test_http_is_off_by_default():
    assert load(None, env={}).http == ""


def test_environment_turns_it_on():
    cfg = load(None, env={"SANDBOXD_HTTP": "127.0.0.1:8080", "SANDBOXD_HTTP_TOKENS": "a,b"})
    assert cfg.http == "127.0.0.1:8080" and cfg.http_tokens == ("a", "b")


@pytest.mark.parametrize(("env", "match"), [
    ({"SANDBOXD_HTTP": "0.0.0.0:8080"}, "not a loopback address, needs a token"),
    ({"SANDBOXD_HTTP": "192.0.2.1:80", "SANDBOXD_HTTP_LOOPBACK_OPEN": "true"},
     "needs a token"),
    ({"SANDBOXD_HTTP": "127.0.0.1:8080"}, "http_loopback_open"),
    ({"SANDBOXD_HTTP": "127.0.0.1"}, "HOST:PORT"),
    ({"SANDBOXD_HTTP": "127.0.0.1:80", "SANDBOXD_HTTP_LOOPBACK_OPEN": "maybe"},
     "true or false"),
])
def test_unsafe_or_unusable_http_is_refused(env: dict[str, str], match: str):
    with pytest.raises(ConfigError, match=match):
        load(None, env=env)


def test_loopback_may_be_open():
    cfg = load(None, env={"SANDBOXD_HTTP": "[::1]:0", "SANDBOXD_HTTP_LOOPBACK_OPEN": "1"})
    assert cfg.http_loopback_open


def test_start_refused_with_a_clear_error_without_a_token(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "sandboxd", "serve", "--socket",
                           str(tmp_path / "s.sock"), "--http", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "needs a token" in proc.stderr and "Traceback" not in proc.stderr


