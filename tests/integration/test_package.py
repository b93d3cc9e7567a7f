"""`chalice package` produces a bundle that works: the app imports in a clean
interpreter from the unzipped package, and the template (with infra/ merged)
holds the tables, queue and schedules and is clean under cfn-lint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "AWS_DEFAULT_REGION": "eu-central-1"}
    result = subprocess.run(
        [str(BIN / "chalice"), "package", "--merge-template", "infra/resources.yaml", str(out / "sam")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "sam"


def test_app_imports_from_the_unzipped_bundle_in_a_clean_interpreter(package, tmp_path):
    with zipfile.ZipFile(package / "deployment.zip") as bundle:
        names = bundle.namelist()
        bundle.extractall(tmp_path)
    for top in (
        "app.py",
        "functions/",
        "crm_adapters/",
        "workflows/",
        "runtime/",
        "storage/",
        "tenancy/",
        "config/",
    ):
        assert any(n == top or n.startswith(top) for n in names), f"{top} missing from the bundle"
    assert not any(n.startswith(("tests/", "fakes/", "demo/", "bench/")) for n in names)
    # -I: no user site, no PYTHON* variables, no cwd on sys.path; only the bundle, like Lambda's /var/task.
    probe = (
        "import sys; sys.path.insert(0, '.');"
        "import app;"
        "import functions.worker, functions.schedules, functions.webhooks, functions.api;"
        "import runtime.ingress, runtime.worker, runtime.sweep, runtime.reconcile;"
        "import crm_adapters.bitrix24, crm_adapters.amocrm, crm_adapters.telegram, workflows.calendar;"
        "print(sorted(app.app.routes))"
    )
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    result = subprocess.run(
        [python, "-I", "-c", probe],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-central-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/hooks/{tenant}" in result.stdout


def _template(package: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((package / "sam.yaml").read_text(), Loader=Loader)


def test_template_has_tables_queue_schedules_and_partial_batch_failures(package):
    resources = _template(package)["Resources"]
    types = {name: res["Type"] for name, res in resources.items()}
    for table in ("InboxTable", "LeadsTable", "JournalTable", "StateTable"):
        assert types[table] == "AWS::DynamoDB::Table"
    assert types["EventsQueue"] == "AWS::SQS::Queue"
    assert resources["LeadsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "due-index"
    worker_events = resources["Worker"]["Properties"]["Events"]
    assert worker_events["WorkerSqsEventSource"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    sweep_events = resources["DeadlineSweep"]["Properties"]["Events"]
    assert any(e["Properties"]["Schedule"] == "rate(1 minute)" for e in sweep_events.values())
    reconcile_events = resources["Reconcile"]["Properties"]["Events"]
    assert any(e["Properties"]["Schedule"] == "rate(10 minutes)" for e in reconcile_events.values())


def test_cfn_lint_reports_no_errors(package):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(package / "sam.yaml")], capture_output=True, text=True, timeout=300
    )
    # cfn-lint's exit code is a bit mask: 2 means errors (4 warnings, 8 informational).
    assert result.returncode & 2 == 0, result.stdout[-3000:]
