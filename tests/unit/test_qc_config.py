"""The `qc:` section of a tenant file: defaults, and every mistake named by file, key and problem."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
import yaml

from leadwatch.config import ConfigError, TenantConfig, parse_tenant, tenant_model
from leadwatch.process import resolve
from workflows import PROCESSES
from workflows.qc.config import QcConfig, check, parse_duration

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
SOURCE = "tenants/acme-b24.yaml"


def model() -> type[TenantConfig]:
    """The registered processes' model plus the qc section (not registered yet)."""
    return tenant_model(
        [(p.name, resolve(p.config)) for p in PROCESSES] + [("qc", QcConfig)],
        [resolve(p.check) for p in PROCESSES if p.check] + [check],
    )


MODEL = model()


def example(name: str = "acme-b24") -> dict:
    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    if data["crm"]["kind"] == "bitrix24":
        data["crm"]["entities"] = ["lead", "deal"]
    return data


def lead_funnel(**extra) -> dict:
    return {
        "stages": ["JUNK"],
        "reason_field": "UF_CRM_1704817400",
        "returned_stage": "1",
        "reasons": [
            {
                "id": 44,
                "name": "Price too high",
                "action": "check",
                "questions": ["What price did they expect?"],
            },
            {"id": 45, "name": "Spam", "action": "ignore"},
        ],
        **extra,
    }


def with_qc(section: dict, name: str = "acme-b24") -> dict:
    data = example(name)
    data["qc"] = section
    return data


def parse(data: dict) -> TenantConfig:
    return parse_tenant(yaml.safe_dump(data, allow_unicode=True), SOURCE, MODEL)


def errors_for(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: invalid tenant configuration")
    return message


def errors_for_text(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_tenant(text, SOURCE, MODEL)
    return str(caught.value)


QC = {"reviewers": [1], "pages_url": "https://lw.example.com", "funnels": [lead_funnel()]}


# ---------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("name", ["acme-b24", "acme-amo"])
def test_a_file_without_the_section_is_valid_and_qc_is_off(name):
    data = example(name)
    data.pop("qc")
    config = parse(data)
    assert config.qc.enabled is False
    assert not config.enabled("qc")


@pytest.mark.parametrize("name", ["acme-b24", "acme-amo"])
def test_the_examples_turn_qc_on(name):
    config = parse(example(name))
    assert config.enabled("qc") and config.qc.funnels and config.qc.pages_url


def test_a_written_section_is_on_with_defaults_for_the_rest():
    qc = parse(with_qc(QC)).qc
    assert qc.enabled and qc.reviewers == ["1"]
    funnel = qc.funnels[0]
    assert funnel.name == "leads" and funnel.entity == "lead"
    assert [r.id for r in funnel.reasons] == ["44", "45"]  # numbers in YAML, ids as text
    assert qc.unknown_reasons == "check"
    assert qc.deadlines.answer.within == 240 and qc.deadlines.answer.remind.percent == 50
    assert qc.deadlines.review.within == 480 and qc.deadlines.review.escalate
    assert qc.audit.weekday == "mon" and qc.audit.time == time(9, 30) and qc.audit.baseline_weeks == 8
    assert qc.spot_checks.sample_size == 5 and qc.links_valid_days == 14


def test_bitrix24_defaults_the_failure_stage_by_card_type():
    section = {
        "reviewers": ["1"],
        "pages_url": "https://lw.example.com",
        "funnels": [
            {"returned_stage": "1", "reason_field": "UF_CRM_1"},
            {"entity": "deal", "returned_stage": "PREPARATION"},
        ],
    }
    qc = parse(with_qc(section)).qc
    assert qc.funnels[0].stages == ["JUNK"] and qc.funnels[1].stages == ["LOSE"]
    assert [f.name for f in qc.funnels] == ["leads", "deals"]


def test_amocrm_defaults_to_status_143_and_its_loss_reason():
    section = {
        "reviewers": [5001],
        "pages_url": "https://lw.example.com",
        "funnels": [
            {
                "pipeline": 7001,
                "returned_stage": 61234502,
                "reasons": [
                    {"id": 9001, "name": "Дорого", "action": "check", "questions": ["Какую цену ждали?"]}
                ],
            }
        ],
    }
    funnel = parse(with_qc(section, "acme-amo")).qc.funnels[0]
    assert funnel.stages == ["143"] and funnel.reason_field == "loss_reason_id"
    assert funnel.pipeline == "7001" and funnel.returned_stage == "61234502" and funnel.name == "leads-7001"


def test_a_deal_funnel_with_its_failure_stages_as_reasons():
    deals = {
        "entity": "deal",
        "stages": ["C1:LOSE", "C1:APOLOGY"],
        "reason_field": "UF_CRM_1704817500",
        "returned_stage": "C1:NEW",
        "reasons": [
            {"stage": "C1:APOLOGY", "name": "Analysis of failure", "action": "check"},
            {"id": 51, "name": "Chose a competitor", "action": "ignore"},
        ],
    }
    qc = parse(with_qc({**QC, "funnels": [lead_funnel(), deals]})).qc
    assert qc.funnels[1].reasons[0].stage == "C1:APOLOGY" and qc.funnels[1].reasons[0].questions == []


@pytest.mark.parametrize(
    ("written", "minutes"), [(90, 90), ("90m", 90), ("90 min", 90), ("4h", 240), ("1h30m", 90), (" 2H ", 120)]
)
def test_a_deadline_is_minutes_or_hours_and_minutes(written, minutes):
    assert parse_duration(written) == minutes
    deadlines = {"answer": {"within": written}}
    assert parse(with_qc({**QC, "deadlines": deadlines})).qc.deadlines.answer.within == minutes


@pytest.mark.parametrize(
    ("written", "percent", "before"),
    [("50%", 50, None), ("1h", None, 60), (30, None, 30), ("off", None, None)],
)
def test_a_reminder_is_a_share_or_a_time_before_the_deadline_or_off(written, percent, before):
    deadlines = {"review": {"within": "8h", "remind": written}}
    remind = parse(with_qc({**QC, "deadlines": deadlines})).qc.deadlines.review.remind
    if percent is None and before is None:
        assert remind is None
    else:
        assert (remind.percent, remind.before_minutes) == (percent, before)


@pytest.mark.parametrize("written", ["10:00", '"10:00"', "'10:00'"])
def test_the_audit_time_reads_alike_quoted_or_not(written):
    text = yaml.safe_dump(with_qc(QC)) + ""
    text = text.replace("qc:\n", f"qc:\n  audit:\n    time: {written}\n", 1)
    assert parse_tenant(text, SOURCE, MODEL).qc.audit.time == time(10, 0)


# ---------------------------------------------------------------------------- mistakes


def test_on_without_funnels_or_reviewers_is_named():
    message = errors_for(with_qc({"enabled": True, "reviewers": [1]}))
    assert "qc: funnels: name at least one funnel while qc is enabled" in message
    message = errors_for(with_qc({"funnels": [lead_funnel()]}))
    assert "qc: reviewers: name at least one reviewer (a CRM user id) while qc is enabled" in message


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            {"returned_stage": "JUNK"},
            "qc.funnels[0].returned_stage: 'JUNK' is one of the funnel's failure stages",
        ),
        ({"stages": ["JUNK", "JUNK"]}, "qc.funnels[0].stages: a stage is listed twice"),
        ({"stages": ["C*:LOSE"]}, "qc.funnels[0].stages: ['C*:LOSE']: list each failure stage (no '*')"),
        ({"reasns": []}, "qc.funnels[0].reasns: unknown key (check the spelling)"),
        ({"entity": "contact"}, "qc.funnels[0].entity: Input should be 'lead' or 'deal'"),
        (
            {
                "reasons": [
                    {"id": 1, "name": "A", "action": "check"},
                    {"id": "1", "name": "B", "action": "ignore"},
                ]
            },
            "qc.funnels[0].reasons: [1]: id '1' is listed twice (first at [0])",
        ),
        (
            {"reasons": [{"id": 1, "name": "Spam", "action": "ignore", "questions": ["Why?"]}]},
            "qc.funnels[0].reasons[0]: questions are put only for a `check` reason",
        ),
        (
            {"reasons": [{"id": 1, "stage": "JUNK", "name": "A", "action": "check"}]},
            "qc.funnels[0].reasons[0]: give exactly one of 'id'",
        ),
        (
            {"reasons": [{"stage": "LOSE", "name": "A", "action": "check"}]},
            "qc.funnels[0].reasons: [0]: stage 'LOSE' is not one of the funnel's stages ['JUNK']",
        ),
        (
            {"reasons": [{"id": 1, "name": "A", "action": "review"}]},
            "qc.funnels[0].reasons[0].action: Input should be 'check' or 'ignore'",
        ),
        (
            {"reasons": [{"id": 1, "name": "A", "action": "check", "questions": ["  "]}]},
            "qc.funnels[0].reasons[0].questions: question [0] is empty",
        ),
        (
            {"reasons": [{"id": 1, "action": "check"}]},
            "qc.funnels[0].reasons[0].name: required key is missing",
        ),
        ({"returned_stage": None}, "qc.funnels[0].returned_stage: Input should be a valid string"),
    ],
)
def test_a_funnel_mistake_is_named_with_its_key(edit, problem):
    funnel = {**lead_funnel(), **edit}
    assert problem in errors_for(with_qc({**QC, "funnels": [funnel]}))


def test_a_missing_returned_stage_is_named():
    funnel = lead_funnel()
    del funnel["returned_stage"]
    assert "qc.funnels[0].returned_stage: required key is missing" in errors_for(
        with_qc({**QC, "funnels": [funnel]})
    )


def test_bitrix24_deal_funnels_stay_within_one_funnel():
    across = {"entity": "deal", "stages": ["C1:LOSE", "C2:LOSE"], "returned_stage": "C1:NEW"}
    message = errors_for(with_qc({**QC, "funnels": [across]}))
    assert (
        "qc.funnels[0].stages: stages ['C1:LOSE', 'C2:LOSE'] are in different deal funnels (1, 2)" in message
    )
    elsewhere = {"entity": "deal", "stages": ["C1:LOSE"], "returned_stage": "C2:NEW"}
    message = errors_for(with_qc({**QC, "funnels": [elsewhere]}))
    assert "qc.funnels[0].returned_stage: 'C2:NEW' is in deal funnel 2" in message
    wrong_pipeline = {"entity": "deal", "stages": ["C1:LOSE"], "returned_stage": "C1:NEW", "pipeline": 3}
    assert "qc.funnels[0]: pipeline '3': the stages ['C1:LOSE'] are in deal funnel 1" in errors_for(
        with_qc({**QC, "funnels": [wrong_pipeline]})
    )


def test_amocrm_has_no_deal_funnels():
    section = {
        "reviewers": [1],
        "pages_url": "https://lw.example.com",
        "funnels": [{"entity": "deal", "returned_stage": 1}],
    }
    assert "qc.funnels[0].entity: amoCRM calls its deals leads" in errors_for(with_qc(section, "acme-amo"))


def test_two_funnels_taking_one_stage_or_one_name_are_named():
    message = errors_for(with_qc({**QC, "funnels": [lead_funnel(), lead_funnel(name="other")]}))
    assert "qc.funnels: [0] and [1] both take stage 'JUNK' of leads" in message
    section = {
        "reviewers": [1],
        "pages_url": "https://lw.example.com",
        "funnels": [{"pipeline": 1, "returned_stage": 2}, {"pipeline": 3, "returned_stage": 4}],
    }
    assert parse(with_qc(section, "acme-amo")).qc.funnels[1].name == "leads-3"  # apart by pipeline
    same_name = [lead_funnel(name="x"), {"name": "x", "entity": "deal", "returned_stage": "NEW"}]
    assert "qc.funnels: [1]: name 'x' is taken by [0]" in errors_for(with_qc({**QC, "funnels": same_name}))


@pytest.mark.parametrize(
    ("deadlines", "problem"),
    [
        (
            {"answer": {"within": "2d"}},
            "qc.deadlines.answer.within: '2d': give working hours or minutes ('8h'), not days",
        ),
        ({"answer": {"within": "soon"}}, "qc.deadlines.answer.within: 'soon' is not a duration"),
        ({"answer": {"within": 1.5}}, "qc.deadlines.answer.within: 1.5 is not a duration"),
        ({"answer": {"within": 0}}, "qc.deadlines.answer.within: Input should be greater than or equal to 1"),
        ({"answer": {}}, "qc.deadlines.answer.within: required key is missing"),
        (
            {"answer": {"within": "4h", "remind": "150%"}},
            "qc.deadlines.answer.remind: '150%': a share of the allowed time is 1% .. 99%",
        ),
        (
            {"answer": {"within": "4h", "remind": "soon"}},
            "qc.deadlines.answer.remind: 'soon' is not a reminder point",
        ),
        (
            {"review": {"within": "1h", "remind": "1h"}},
            "qc.deadlines.review: remind: 60 minutes before the deadline is at or before the task's start",
        ),
        (
            {"review": {"within": "1h", "escalate_after": -5}},
            "qc.deadlines.review.escalate_after: Input should be greater",
        ),
        ({"approve": {"within": "1h"}}, "qc.deadlines.approve: unknown key"),
    ],
)
def test_a_deadline_mistake_is_named(deadlines, problem):
    assert problem in errors_for(with_qc({**QC, "deadlines": deadlines}))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"audit": {"weekday": "monday"}}, "qc.audit.weekday: Input should be 'mon'"),
        ({"audit": {"time": "25:00"}}, "qc.audit.time: '25:00' is not a time of day HH:MM"),
        ({"audit": {"time": 930}}, "qc.audit.time: 930 is not a time of day"),
        (
            {"audit": {"significance": 0.5}},
            "qc.audit.significance: Input should be less than or equal to 0.2",
        ),
        (
            {"audit": {"baseline_weeks": 1}},
            "qc.audit.baseline_weeks: Input should be greater than or equal to 2",
        ),
        ({"audit": {"min_week": 0}}, "qc.audit.min_week: Input should be greater than or equal to 1"),
        (
            {"spot_checks": {"sample_size": -1}},
            "qc.spot_checks.sample_size: Input should be greater than or equal to 0",
        ),
        (
            {"spot_checks": {"when": "sometimes"}},
            "qc.spot_checks.when: Input should be 'flagged' or 'always'",
        ),
        ({"unknown_reasons": "skip"}, "qc.unknown_reasons: Input should be 'check' or 'ignore'"),
        ({"reviewers": [1, "1"]}, "qc.reviewers: a reviewer is listed twice"),
        ({"links_valid_days": 0}, "qc.links_valid_days: Input should be greater than or equal to 1"),
    ],
)
def test_a_section_mistake_is_named(section, problem):
    assert problem in errors_for(with_qc({**QC, **section}))


def test_a_deal_funnel_needs_the_crm_to_watch_deals():
    data = with_qc({**QC, "funnels": [lead_funnel(), {"entity": "deal", "returned_stage": "NEW"}]})
    data["crm"]["entities"] = ["lead"]
    message = errors_for(data)
    assert (
        "qc.funnels[1] is a deal funnel, but crm.entities ['lead'] does not watch deals: add 'deal' there"
        in message
    )


def test_every_mistake_of_the_section_is_reported_at_once():
    funnel = {**lead_funnel(), "returned_stage": "JUNK", "stages": ["JUNK"]}
    message = errors_for(
        with_qc(
            {**QC, "funnels": [funnel], "audit": {"time": "7pm"}, "deadlines": {"answer": {"within": "2d"}}}
        )
    )
    assert "qc.funnels[0].returned_stage" in message
    assert "qc.audit.time" in message
    assert "qc.deadlines.answer.within" in message


def test_the_declaration_builds_a_registry_and_its_references_resolve():
    from leadwatch.registry import ProcessRegistry
    from workflows.qc.process import PROCESS

    registry = ProcessRegistry(PROCESSES)
    assert PROCESS in PROCESSES
    for reference in (PROCESS.config, PROCESS.check):
        assert (
            reference is not None and reference.startswith("workflows.qc.") and callable(resolve(reference))
        )
    config = parse_tenant(yaml.safe_dump(with_qc(QC)), SOURCE, registry.tenant_model())
    assert config.enabled("qc") and registry.is_running(config, "qc")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://x.example.com", "give the https:// address"),
        ("http://lw.example.com", "http only for localhost"),
        ("https://lw.example.com/api?x=1", "without ?query"),
    ],
)
def test_a_pages_url_that_cannot_serve_pages_is_named(url, problem):
    message = errors_for(with_qc({**QC, "pages_url": url}))
    assert "qc.pages_url" in message and problem in message


def test_pages_url_is_required_while_on():
    section = {k: v for k, v in QC.items() if k != "pages_url"}
    assert "qc: pages_url: give the address the answer and review pages are served on" in errors_for(
        with_qc(section)
    )


def test_the_declared_journal_types_are_the_ones_the_rules_write():
    from workflows.qc import rules
    from workflows.qc.process import PROCESS

    assert sorted(t.name for t in PROCESS.violation_types) == sorted(rules.VIOLATION_TYPES)


def test_the_reason_fields_are_named_to_the_crms_card_reads():
    config = parse(example("acme-b24"))
    assert config.card_fields() == ["UF_CRM_1704817400"]
    data = example("acme-b24")
    data["qc"]["enabled"] = False
    assert parse(data).card_fields() == []
