"""The README's test tiers select what they say: `-m "not integration"` is the unit tier, and no
integration test slips into it for lack of a marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-p", "no:xdist", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "AWS_DEFAULT_REGION": "eu-central-1"},
        timeout=300,
    )
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: nothing collected
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_every_integration_test_is_marked_integration() -> None:
    assert collected("tests/integration", "-m", "not integration") == []
    assert len(collected("tests/integration", "-m", "integration")) > 100


def test_the_slow_replays_are_integration_and_slow() -> None:
    slow = collected("tests", "-m", "slow")
    assert slow and all(item.startswith("tests/integration/") for item in slow)
    assert collected("tests", "-m", "slow and not integration") == []


def test_the_browser_tests_are_collected_marked_and_never_skipped() -> None:
    browser = collected("tests/browser", "-m", "browser and integration")
    assert browser and collected("tests/browser", "-m", "not browser") == []
    # A missing browser fails the run (tests/browser/conftest.py installs it or says why not).
    for path in (ROOT / "tests" / "browser").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "skip" not in text.replace("never skip", ""), path
