"""The demo's quality control, end to end on a smaller week: `python -m demo` over three days with
six managers a CRM (one of them dumps leads into reasons nobody reviews), then its report and its
saved state. The report has the QC part in each tenant's language, its figures agree with what the
plan and the simulated people did (the demo exits non-zero otherwise), and the reason audit flags
exactly the dumping manager with a p-value under the significance level: the audit's own code on
the rejections the replay stored, read back through the read API and the CLI.

A replay minute by minute (about 5,000 simulated minutes): a slow test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo.__main__ import main
from demo.rejections import plan_rejections
from demo.replay import DEMO_TENANTS
from demo.week import demo_week
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# A small week in which the audit has enough to go on: the seed is one where, in both CRMs, the
# dumping manager has at least five rejections in the audited week (demo.rejections).
ARGS = {"seed": 10, "leads_per_day": 16, "managers": 6, "days": 3}
SIGNIFICANCE = 0.01  # the demo tenants' audit.significance (the default)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in ARGS.items()]
    code = main([*argv, f"--out={out}"])
    week = demo_week(DEMO_TENANTS, **ARGS)
    return {
        "code": code,
        "out": out,
        "data": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "markdown": (out / "report.md").read_text(encoding="utf-8"),
        "dumpers": {tenant: m.crm_id for tenant, m in plan_rejections(week, ARGS["seed"]).dumpers.items()},
    }


def test_the_demo_checks_out(ran: dict) -> None:
    data = ran["data"]
    assert ran["code"] == 0
    assert data["mismatches"] == data["dialing"]["mismatches"] == data["qc"]["mismatches"] == 0


def test_the_report_has_the_qc_part_in_each_tenants_language(ran: dict) -> None:
    markdown, qc = ran["markdown"], ran["data"]["qc"]
    assert "## Quality control of rejections" in markdown
    assert f"### {B24_TENANT}: контроль качества отказов" in markdown
    assert f"### {AMO_TENANT}: quality control of rejections" in markdown
    assert "Аудит причин отказов" in markdown and "Rejection reason audit" in markdown
    assert qc["history"]["rejections"] > 0 and qc["audited_week"] == "2025-W44"
    for tenant in DEMO_TENANTS:
        mine = qc["tenants"][tenant]
        assert mine["rejections"] == mine["planned_rejections"]
        assert mine["rejections"]["checked"] > 0 and mine["rejections"]["ignored"] > 0
        reviews = mine["reviews"]
        assert reviews["returned"] + reviews["confirmed"] + reviews["open"] > 0
        # The journal by type covers every process: the dialing process's rows are there too.
        assert mine["journal_by_type"].get("improper_rejection", 0) > 0
        decided = mine["journal_by_type"].get("qc_returned_to_work", 0) + mine["journal_by_type"].get(
            "qc_confirmed", 0
        )
        assert decided == reviews["returned"] + reviews["confirmed"] > 0


def test_the_audit_flags_the_dumping_manager_with_a_real_p_value(ran: dict) -> None:
    for tenant in DEMO_TENANTS:
        mine = ran["data"]["qc"]["tenants"][tenant]
        dumper = ran["dumpers"][tenant]
        assert mine["dumper"]["id"] == dumper
        [flag] = mine["flagged"]
        assert flag["subject"] == dumper and mine["flag_is_the_dumper"]
        assert min(p for p in (flag["p_baseline"], flag["p_rest"]) if p is not None) < SIGNIFICANCE
        assert flag["week"]["total"] >= 5 and flag["week"]["ignored"] == flag["week"]["total"]
        # The head's text names them in its first part, the flagged (the quiet and those with too
        # little data follow).
        assert mine["dumper"]["name"] in mine["audit"]["text"].split("\n\n")[1]


def leadwatch(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LEADWATCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "leadwatch.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean,
        timeout=120,
    )


def test_the_saved_state_answers_qc_audit_and_the_journal(ran: dict) -> None:
    state = str(ran["out"] / "state")
    for tenant in DEMO_TENANTS:
        done = leadwatch("--state", state, "qc-audit", tenant, "--week", "2025-W44", "--json")
        assert done.returncode == 0, done.stderr
        flagged = [
            v for v in json.loads(done.stdout)["verdicts"] if v["flagged"] and v["subject"] != "department"
        ]
        assert [v["subject"] for v in flagged] == [ran["dumpers"][tenant]]
        done = leadwatch(
            "--state",
            state,
            "violations",
            tenant,
            "--type",
            "qc_confirmed",
            "--from",
            "2025-10-29",
            "--to",
            "2025-11-05",
        )
        assert done.returncode == 0, done.stderr
        assert "qc_confirmed" in done.stdout
