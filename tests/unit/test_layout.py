"""The shape of the framework, checked: the core never imports a process (or the Lambda glue),
process rules stay pure, and every reference a declaration makes resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from leadwatch.process import resolve
from leadwatch.registry import ProcessRegistry
from workflows import PROCESSES

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    """Top-level package names a module imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "leadwatch").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_core_never_imports_a_process_or_the_lambda_glue(path):
    # The local stack and `leadwatch serve` build the app, as a deployment does.
    allowed_glue = {"leadwatch/testing/stack.py", "leadwatch/testing/serve.py"}
    forbidden = {"workflows", "demo", "bench", "app"}
    if str(path.relative_to(ROOT)) not in allowed_glue:
        forbidden.add("functions")
    assert not imported(path) & forbidden


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").glob("*/rules.py")), ids=lambda p: p.parent.name)
def test_process_rules_are_pure(path):
    assert not imported(path) & {"boto3", "botocore", "pynamodb", "requests", "chalice"}
    text = path.read_text(encoding="utf-8")
    assert "datetime.now(" not in text and "time.time(" not in text


def test_each_process_is_one_folder_and_its_declaration_resolves():
    registry = ProcessRegistry(PROCESSES)
    for process in registry:
        folder = ROOT / "workflows" / process.name
        assert (folder / "process.py").is_file() and (folder / "__init__.py").is_file()
        references = [process.config, process.on_events, process.reconcile, process.check, process.new_card]
        references += [s.run for s in process.schedules] + [q.run for q in process.queries]
        for reference in filter(None, references):
            assert callable(resolve(reference)), reference
            assert reference.startswith(f"workflows.{process.name}."), reference


def test_listing_the_processes_imports_none_of_their_code():
    # What a cold start pays for: app.py imports the declarations only.
    import subprocess
    import sys

    probe = (
        "import sys, workflows; "
        "print(sorted(m for m in sys.modules if m.startswith('workflows.') and not m.endswith('.process')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['workflows.dialing', 'workflows.qc', 'workflows.timeliness']"
