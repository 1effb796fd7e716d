"""The playground page (``/playground``) in a real browser: Debian's chromium, headless,
driven by selenium through chromium-driver (scripts/install.sh installs both).

The test does what a user does: picks Python, types a program and its stdin, runs
it, watches stdout and stderr stream in while the program still runs, reads the
verdict, CPU, wall time and memory; then starts a program that never ends and runs
another over it, which cancels the first. It keeps a screenshot of the page
(``playground.png`` in the test's tmp dir; its path is printed).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")

PROGRAM = """import sys, time
name = input()
print("hello", name, flush=True)
print("a warning", file=sys.stderr, flush=True)
time.sleep(1.5)
print("done")
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromium-driver are not installed (scripts/install.sh)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for _describe
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, check, page=None, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """``check()`` until it is true; on a timeout, the page's fields and the daemon's last
    log lines in the error (``page``: a (driver, daemon) pair), so that a failure in CI,
    whose tmp dir is gone by the time anyone looks, says where the run stopped."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" +
                                 (_describe(*page) if page is not None else ""))
        time.sleep(0.05)


def _describe(driver, daemon: Daemon) -> str:  # type: ignore[no-untyped-def]
    fields = {name: _text(driver, name)
              for name in ("state", "verdict", "exit", "cpu", "wall", "memory", "output")}
    try:
        console = [e.get("message") for e in driver.get_log("browser")]
    except Exception as e:  # a driver without the log is no reason to hide the rest
        console = [f"(no browser log: {e})"]
    log = daemon.log.read_text(errors="replace").splitlines()[-40:]
    return ("\npage: " + repr(fields) + "\nbrowser console: " + repr(console) +
            "\ndaemon log (last 40 lines):\n" + "\n".join(log))


def _text(driver, element_id: str) -> str:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def test_the_playground_runs_code_and_streams_its_output(
        browser, base_url: str, http_daemon: Daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(f"{base_url}/playground")
    assert driver.title == "sandboxd playground"
    _wait("the profiles", lambda: _text(driver, "state") == "ready", (driver, http_daemon))
    languages = Select(driver.find_element(By.ID, "language"))
    names = {o.get_attribute("value") for o in languages.options}
    assert {"python3", "bash"} <= names, names
    languages.select_by_value("python3")

    code = driver.find_element(By.ID, "code")
    code.clear()
    code.send_keys(PROGRAM)  # typed, key by key
    stdin = driver.find_element(By.ID, "stdin")
    stdin.clear()
    stdin.send_keys("browser\n")
    assert code.get_attribute("value") == PROGRAM
    driver.find_element(By.ID, "run").click()

    # Streamed: the first lines are on the page while the program still sleeps.
    page = (driver, http_daemon)
    _wait("the first lines", lambda: "hello browser" in _text(driver, "output"), page)
    assert "a warning" in _wait("stderr", lambda: _text(driver, "output")
                                if "a warning" in _text(driver, "output") else "", page)
    assert "done" not in _text(driver, "output")
    assert _text(driver, "verdict") == "-" and _text(driver, "state") == "running…"
    stderr = driver.find_elements(By.CSS_SELECTOR, "#output .stderr")
    assert [e.text for e in stderr] == ["a warning\n"] or "a warning" in stderr[0].text

    _wait("the verdict", lambda: _text(driver, "verdict") == "ok", page)
    lines = _text(driver, "output").splitlines()  # two pipes: their order is the reader's
    assert sorted(lines) == ["a warning", "done", "hello browser"] and lines[-1] == "done"
    assert _text(driver, "exit") == "0"
    for field, unit in (("cpu", "s"), ("wall", "s"), ("memory", "iB")):
        assert _text(driver, field).endswith(unit), (field, _text(driver, field))
    shot = tmp_path / "playground.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")

    # A second run while one runs cancels the first.
    with httpx.Client(base_url=base_url, timeout=30) as api:
        cancelled = api.get("/v1/stats").json()["counters"].get("verdict_cancelled", 0)
        code.clear()
        code.send_keys("while True:\n    pass\n")
        driver.find_element(By.ID, "run").click()
        _wait("the endless job", lambda: api.get("/v1/ps").json()["jobs"])
        code.clear()
        code.send_keys("print('second')\n")
        driver.find_element(By.ID, "run").click()
        _wait("the second verdict", lambda: _text(driver, "verdict") == "ok", page)
        assert _text(driver, "output") == "second"
        _wait("the first job's end", lambda: api.get("/v1/stats").json()["counters"].get(
            "verdict_cancelled", 0) == cancelled + 1)
        assert not api.get("/v1/ps").json()["jobs"]
