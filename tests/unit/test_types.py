"""The production code type-checks clean under the project's mypy settings ([tool.mypy] in
pyproject.toml, also run by scripts/lint), so a type error fails the tests, not only CI's lint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("leadwatch", "crm_adapters", "workflows", "functions")


def test_the_production_code_has_no_type_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # The configured paths are relative to the repository root, and the cache there is the one
    # scripts/lint has just warmed.
    monkeypatch.chdir(ROOT)
    report, errors, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, f"mypy found type errors:\n{report}{errors}"
    # Every module of the production packages, and app.py, is checked: a package left out of the
    # configuration would pass unseen.
    checked = re.search(r"no issues found in (\d+) source files", report)
    expected = sum(1 for package in PRODUCTION for _ in (ROOT / package).rglob("*.py")) + 1
    assert checked is not None and int(checked.group(1)) == expected, report
