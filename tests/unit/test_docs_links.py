"""The documentation holds together: every relative link in README.md and docs/*.md reaches a file
of this repository (and a heading of it, for `#anchor`, by GitHub's slug rules), and nothing in the
repository points at a rules page it does not have or at material outside it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Spelled in pieces so this file does not name what it forbids.
FORBIDDEN = ("DOMAIN" + ".md", ".." + "/shared", "/work" + "/shared", "CRM-PROTOCOLS" + ".md")
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "vendor",
    "__pycache__",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    "out",
}

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"""<a\s[^>]*(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its visible text, lower case, punctuation dropped (hyphens
    and underscores kept), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (repeats numbered as GitHub does) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    found.update(a.lower() for a in _HTML_ID.findall(text))
    return found


def relative_links(page: Path) -> list[str]:
    targets = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        targets += _LINK.findall(line)
        reference = _REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
    return [t for t in targets if not _SCHEME.match(t) and not t.startswith("//")]


def problem(page: Path, target: str) -> str | None:
    """Why a relative link from `page` does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / unquote(path_part)).resolve() if path_part else page
    try:
        destination.relative_to(ROOT)
    except ValueError:
        return "points outside the repository"
    if not destination.exists():
        return "no such file"
    if not anchor:
        return None
    if destination.suffix.lower() == ".md":
        if unquote(anchor).lower() not in anchors(destination):
            return f"no heading with the anchor #{anchor} in {destination.relative_to(ROOT)}"
        return None
    if not re.fullmatch(r"L\d+(-L\d+)?", anchor):
        return f"#{anchor} is not a line anchor of a non-Markdown file"
    return None


def test_the_documentation_pages_exist() -> None:
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {
        "README.md",
        "timeliness.md",
        "dialing.md",
        "calendar.md",
        "architecture.md",
        "operations.md",
    } <= names


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = [f"{target}: {why}" for target in relative_links(page) if (why := problem(page, target))]
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_the_docs_index_links_every_page() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in relative_links(index)}
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p != index and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


def _repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (git), or a walk of the tree without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8", "surrogateescape")
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            names += [str((Path(folder) / f).relative_to(ROOT)) for f in files]
    paths = (ROOT / name for name in names if Path(name).parts[0] not in SKIPPED_DIRS)
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def test_nothing_cites_material_the_repository_does_not_have() -> None:
    files = _repository_files()
    assert files, "no files found"
    citing = [
        f"{path.relative_to(ROOT)}: {word}"
        for path in files
        for word in FORBIDDEN
        if word.encode() in path.read_bytes()
    ]
    assert not citing, "cited but not in the repository (use the pages under docs/):\n" + "\n".join(citing)


def test_slugs_follow_github() -> None:
    assert slug("What is kept, and for how long") == "what-is-kept-and-for-how-long"
    assert slug("`leadwatch processes` and the [docs](docs/README.md)") == "leadwatch-processes-and-the-docs"
    assert slug("Limits & throttling") == "limits--throttling"
    assert slug("snake_case stays") == "snake_case-stays"
