"""Browser tests: the pages as a phone's browser shows them, in headless Chromium.

The browser is Debian's `chromium` package (Playwright's own browser download is not reachable
from where the tests run): installed here with apt when missing, and a missing browser or
Playwright fails the run, loudly. These tests never skip: a page that stops rendering must not
pass for want of a browser.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LEADWATCH_CHROMIUM", "/usr/bin/chromium"))
APT_TIMEOUT = 900  # seconds: an apt-get update and a first install of chromium on a slow mirror


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a browser test, and an integration one (a local stack over HTTP)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            pytest.fail(
                f"{CHROMIUM} is missing and installing it needs root: run `apt-get install -y chromium` "
                "as root (or set LEADWATCH_CHROMIUM to a Chromium binary)",
                pytrace=False,
            )
        prefix = ["sudo", "-n"]
    return subprocess.run(
        [*prefix, "apt-get", *args],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=False,
    )


def ensure_chromium() -> Path:
    """Debian's chromium, installed now if missing (one installer at a time across xdist workers)."""
    if CHROMIUM.exists():
        return CHROMIUM
    with open(Path(tempfile.gettempdir()) / "leadwatch-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists():
            return CHROMIUM
        update = _apt("update", "-q")
        install = _apt("install", "-y", "-q", "chromium")
        if install.returncode != 0 or not CHROMIUM.exists():
            tail = "\n".join(
                (update.stdout + update.stderr + install.stdout + install.stderr).splitlines()[-30:]
            )
            pytest.fail(
                f"the browser tests need Chromium at {CHROMIUM}, and `apt-get install -y chromium` did not "
                f"put it there (exit {install.returncode}):\n{tail}",
                pytrace=False,
            )
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright."""
    path = ensure_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright for Python: run scripts/bootstrap (it is in the dev extras)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), headless=True)
        try:
            yield browser
        finally:
            browser.close()
