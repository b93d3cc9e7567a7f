"""Every `leadwatch` command the README and docs show is one the command line takes (parsed, not
run: most need a deployment), and the check-config lines run on the files they name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from leadwatch.cli import build_parser, main
from leadwatch.registry import default_registry

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"\.venv/bin/leadwatch((?: [^`#\n]+)?)")


def shown() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for match in COMMAND.finditer(page.read_text(encoding="utf-8")):
            words = shlex.split(match.group(1).strip())
            found.append((f"{page.name}: leadwatch {' '.join(words)}", words))
    return found


@pytest.mark.parametrize(("where", "words"), shown(), ids=[where for where, _ in shown()])
def test_each_command_shown_parses(where: str, words: list[str]) -> None:
    if not words:
        return  # "`.venv/bin/leadwatch`" named in prose
    parser = build_parser(default_registry())
    parser.parse_args(words)  # argparse exits (SystemExit) on anything it would refuse


def test_the_readme_check_config_lines_pass_on_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / "examples")]) == 0
    assert "2 tenant(s) valid" in capsys.readouterr().out


def test_there_are_commands_to_check() -> None:
    assert len(shown()) >= 10
