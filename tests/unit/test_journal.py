"""The violation journal's one interface (leadwatch.journal) on the memory store: filters, rows
with names and links, the CSV a spreadsheet opens, the read API's answer; and the command line
over in-process moto."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leadwatch import journal
from leadwatch.cli import build_parser, main
from leadwatch.config import TenantRegistry, load_tenant_file
from leadwatch.context import Context
from leadwatch.effects import Violation
from leadwatch.events import EntityRef, EntityType
from leadwatch.names import cached_only
from leadwatch.process import Process, Query, QueryError, ViolationType
from leadwatch.registry import ProcessRegistry, default_registry
from leadwatch.store.ledger import GAVE_UP_TYPE, UNCONFIRMED_TYPE
from leadwatch.store.memory import MemoryStore
from leadwatch.testing.stack import SimClock

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2025, 11, 11, 12, 0, tzinfo=MSK)
TODAY = NOW.date()
EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
KNOWN = [
    "gave_up",
    "improper_rejection",
    "late_first_processing",
    "qc_answer_overdue",
    "qc_confirmed",
    "qc_returned_to_work",
    "qc_review_overdue",
    "unconfirmed_message",
]
TRICKY = 'Кухня, "под ключ"\nвторая строка; «ёлка»'


@dataclass
class StubCrm:
    """Builds links; any CRM request (a names read) is recorded."""

    asked: list[str] = field(default_factory=list)

    def card_url(self, entity: EntityRef) -> str:
        return f"https://acme.bitrix24.ru/crm/{entity.type.value}/details/{entity.id}/"

    def list_users(self) -> dict[str, str]:
        self.asked.append("list_users")
        return {"9": '=HYPERLINK("http://evil")', "5": 'Петров, Иван "Ваня"'}

    def list_stages(self) -> dict:
        self.asked.append("list_stages")
        return {}


def context(crm: StubCrm | None = None) -> Context:
    config = load_tenant_file(EXAMPLES / "acme-b24.yaml")
    return Context(
        registry=TenantRegistry({config.tenant: config}),
        store=MemoryStore(),
        queue=None,  # type: ignore[arg-type]
        secrets=lambda ref: "unused",
        clock=SimClock(NOW),
        adapter_factory=lambda config, secrets: crm or StubCrm(),  # type: ignore[return-value,arg-type]
        processes=default_registry(),
    )


def lead(n: int, kind: EntityType = EntityType.LEAD) -> EntityRef:
    return EntityRef(kind, str(n))


def record(ctx: Context, vid: str, when: datetime, type: str, manager: str | None, subject=None, **details):
    violation = Violation(vid, type, subject or lead(int(vid.split(":")[-1])), manager, when, details)
    assert ctx.store.put_violation("acme-b24", violation, when)


def journal_ctx(crm: StubCrm | None = None) -> Context:
    """A week of rows in Moscow time, of each kind, with names known and unknown."""
    ctx = context(crm)
    record(ctx, "late:1", NOW - timedelta(days=7), "late_first_processing", "7")  # before the week
    record(ctx, "late:2", NOW - timedelta(days=6, hours=11, minutes=59), "late_first_processing", "7")
    record(ctx, "rej:3", NOW - timedelta(days=1), "improper_rejection", "1", title=TRICKY, attempts=3)
    record(ctx, "late:4", NOW.replace(hour=23, minute=30), "late_first_processing", "5")  # 20:30 UTC
    ledger = ctx.store.ledger
    ledger.record_gave_up("acme-b24", "e1", "telegram:-100", "chat gone", {"text": "<b>hi</b>"}, NOW)
    record(ctx, "late:6", NOW + timedelta(hours=13), "late_first_processing", "7")  # tomorrow, Moscow
    return ctx


def query(**params: str) -> journal.JournalQuery:
    return journal.parse_query(params, TODAY, KNOWN)


# ----------------------------------------------------------------------------- the filters


def test_the_default_period_is_the_seven_days_ending_today():
    assert query() == journal.JournalQuery(date(2025, 11, 5), TODAY)
    # An empty parameter is the same as none: a form left blank.
    assert query(**{"from": "", "to": "", "type": "", "manager": ""}) == query()
    assert query(to="2025-11-01") == journal.JournalQuery(date(2025, 10, 26), date(2025, 11, 1))


def test_types_are_one_or_several_and_each_known():
    assert query(type="gave_up").types == ("gave_up",)
    assert query(type=" improper_rejection,gave_up,,gave_up").types == ("improper_rejection", "gave_up")
    with pytest.raises(QueryError, match="unknown violation type 'late'; known types: gave_up, improper_"):
        query(type="gave_up,late")
    with pytest.raises(QueryError) as refused:
        query(type="x" * 500)
    assert len(str(refused.value)) < 300 and refused.value.status == 400


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2025-13-01"}, "'from' must be a date like 2025-11-05, got '2025-13-01'"),
        ({"to": "yesterday"}, "'to' must be a date like"),
        ({"from": "2025-11-12", "to": "2025-11-11"}, "'from' (2025-11-12) is after 'to' (2025-11-11)"),
        ({"from": "2024-01-01", "to": "2025-11-11"}, "at most 366 days"),
        ({"manager": "7\n8"}, "'manager' must be a CRM user id"),
        ({"manager": "7\n"}, "'manager' must be a CRM user id"),
        ({"manager": "9" * 65}, "'manager' must be a CRM user id"),
        ({"manager": "\ud800"}, "'manager' must be a CRM user id"),
    ],
)
def test_a_wrong_filter_is_a_clear_400(params, message):
    with pytest.raises(QueryError, match=None) as refused:
        query(**params)
    assert message in str(refused.value) and refused.value.status == 400


def test_the_period_is_the_tenants_days_and_the_calendars_ends_are_clamped():
    start, end = journal.bounds(date(2025, 11, 11), date(2025, 11, 11), MSK)
    assert start == datetime(2025, 11, 10, 21, 0, tzinfo=UTC)
    assert end == datetime(2025, 11, 11, 20, 59, 59, 999999, tzinfo=UTC)
    start, end = journal.bounds(date.min, date.max, MSK)
    assert start == datetime.min.replace(tzinfo=UTC) and end.date() == date.max
    start, end = journal.bounds(date.max, date.max, ZoneInfo("America/New_York"))
    assert end == datetime.max.replace(tzinfo=UTC)


# ----------------------------------------------------------------------------- the rows


def test_rows_have_names_links_and_local_times_without_asking_the_crm():
    crm = StubCrm()
    ctx = journal_ctx(crm)
    config = ctx.tenant("acme-b24")
    with cached_only():  # as the read API reads them
        found = journal.read(ctx, config, query())
    assert crm.asked == []
    assert [e.id for e in found] == ["late:2", "rej:3", "gave_up:e1", "late:4"]
    late, rejected, gave_up, evening = found
    assert late.when == datetime(2025, 11, 5, 0, 1, tzinfo=MSK) and late.when.utcoffset() == timedelta(
        hours=3
    )
    assert (late.manager, late.manager_name) == ("7", "Ivan Sidorov")  # the tenant file's names
    assert rejected.manager_name == "Anna Petrova" and rejected.details == {"title": TRICKY, "attempts": 3}
    assert rejected.link == "https://acme.bitrix24.ru/crm/lead/details/3/"
    # The framework's row: no card, no manager, no link.
    assert (gave_up.card, gave_up.manager, gave_up.manager_name, gave_up.link) == (
        "telegram:-100",
        None,
        None,
        None,
    )
    assert gave_up.details["detail"] == "chat gone"
    # 23:30 in Moscow is today's, though it is 20:30 UTC; the CRM's name is unknown when cached only.
    assert evening.when.date() == TODAY and evening.manager_name == "user 5"
    assert late.to_dict() == {
        "id": "late:2",
        "type": "late_first_processing",
        "tenant": "acme-b24",
        "card": "lead:2",
        "manager": "7",
        "manager_name": "Ivan Sidorov",
        "when": "2025-11-05T00:01:00+03:00",
        "details": {},
        "link": "https://acme.bitrix24.ru/crm/lead/details/2/",
    }


def test_filters_by_type_and_manager():
    ctx = journal_ctx()
    config = ctx.tenant("acme-b24")

    def ids(**params: str) -> list[str]:
        return [e.id for e in journal.read(ctx, config, query(**params))]

    assert ids(type="late_first_processing") == ["late:2", "late:4"]
    assert ids(type="gave_up,improper_rejection") == ["rej:3", "gave_up:e1"]
    assert ids(manager="7") == ["late:2"]
    assert ids(manager="7", to="2025-11-12") == ["late:6"]  # the week ending tomorrow
    assert ids(manager="7", type="improper_rejection") == ids(manager="42") == []
    assert ids(**{"from": "2025-11-04", "manager": "7"}) == ["late:1", "late:2"]


def test_a_deal_gets_its_own_link_and_an_odd_subject_none():
    ctx = context()
    config = ctx.tenant("acme-b24")
    assert journal.card_link(ctx, config, "deal:7") == "https://acme.bitrix24.ru/crm/deal/details/7/"
    for key in ("telegram:-100", "lead:", "lead:abc", "task:5", ""):
        assert journal.card_link(ctx, config, key) is None, key


# ----------------------------------------------------------------------------- CSV


def rows_of(text: str, sep: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))


def test_csv_starts_with_the_bom_and_reads_back_one_row_per_violation():
    ctx = journal_ctx()
    found = journal.read(ctx, ctx.tenant("acme-b24"), query())
    data = journal.as_csv(found).encode("utf-8")
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")  # as Excel and LibreOffice read it
    header, *rows = rows_of(text)
    assert header == ["when", "type", "card", "card_link", "manager_id", "manager_name", "details"]
    assert len(rows) == len(found) == 4 and all(len(row) == 7 for row in rows)
    assert rows[0][:6] == [
        "2025-11-05T00:01:00+03:00",
        "late_first_processing",
        "lead:2",
        "https://acme.bitrix24.ru/crm/lead/details/2/",
        "7",
        "Ivan Sidorov",
    ]
    assert rows[0][6] == ""  # nothing recorded
    # Commas, quotes, a line break and Russian in the details come back whole, as JSON.
    assert json.loads(rows[1][6]) == {"title": TRICKY, "attempts": 3}
    assert "«ёлка»" in rows[1][6]
    assert rows[2][2:6] == ["telegram:-100", "", "", ""]
    assert data.count(b"\r\n") == 5  # CRLF line ends; the line break inside JSON is escaped
    datetime.fromisoformat(rows[3][0])  # ISO 8601, every one


def test_csv_quotes_what_needs_it_and_keeps_formulas_from_running():
    crm = StubCrm()
    ctx = context(crm)
    for n, manager in ((1, "9"), (2, "5")):
        record(ctx, f"late:{n}", NOW, "late_first_processing", manager, note=TRICKY)
    found = journal.read(ctx, ctx.tenant("acme-b24"), query())  # outside the API: the CRM names them
    assert crm.asked == ["list_users"]
    text = journal.as_csv(found)
    _, formula, quoted = rows_of(text.removeprefix(journal.BOM))
    assert formula[5] == '\'=HYPERLINK("http://evil")'
    assert quoted[5] == 'Петров, Иван "Ваня"'
    assert '"Петров, Иван ""Ваня"""' in text  # RFC 4180 quoting: the comma stays in its cell
    assert json.loads(quoted[6]) == {"note": TRICKY}


def test_csv_with_another_separator():
    ctx = journal_ctx()
    found = journal.read(ctx, ctx.tenant("acme-b24"), query(type="improper_rejection"))
    text = journal.as_csv(found, ";").removeprefix(journal.BOM)
    assert text.startswith("when;type;card;card_link;manager_id;manager_name;details\r\n")
    [_, row] = rows_of(text, ";")
    assert json.loads(row[6])["title"] == TRICKY  # the ";" inside it is quoted
    assert journal.separator({"sep": "semicolon"}) == ";" and journal.separator({}) == ","
    with pytest.raises(QueryError, match="'sep' must be comma, semicolon or tab"):
        journal.separator({"sep": "|"})


# ----------------------------------------------------------------------------- the API's answer


def test_the_api_answer_as_json_and_as_csv():
    ctx = journal_ctx()
    config = ctx.tenant("acme-b24")
    answer = journal.answer(ctx, config, TODAY, {"type": "late_first_processing"})
    assert answer.status == 200 and answer.content_type == "application/json"
    data = json.loads(answer.body)
    assert {k: data[k] for k in ("tenant", "from", "to", "time_zone", "types", "manager", "count")} == {
        "tenant": "acme-b24",
        "from": "2025-11-05",
        "to": "2025-11-11",
        "time_zone": "Europe/Moscow",
        "types": ["late_first_processing"],
        "manager": None,
        "count": 2,
    }
    assert data["by_type"] == {"late_first_processing": 2}
    assert [v["when"] for v in data["violations"]] == [
        "2025-11-05T00:01:00+03:00",
        "2025-11-11T23:30:00+03:00",
    ]
    csv_answer = journal.answer(ctx, config, TODAY, {"format": "csv", "sep": "tab"})
    assert csv_answer.content_type == "text/csv; charset=utf-8" and csv_answer.body.startswith(journal.BOM)
    assert csv_answer.headers == {
        "Content-Disposition": 'attachment; filename="violations-acme-b24-2025-11-05-2025-11-11.csv"'
    }
    assert len(rows_of(csv_answer.body, "\t")) == 5
    with pytest.raises(QueryError, match="'format' must be json or csv, got 'xml'"):
        journal.answer(ctx, config, TODAY, {"format": "xml"})


def test_the_api_refuses_more_than_it_can_answer(monkeypatch):
    ctx = journal_ctx()
    config = ctx.tenant("acme-b24")
    monkeypatch.setattr(journal, "MAX_API_ROWS", 3)
    with pytest.raises(QueryError, match="more than 3 violations from 2025-11-05 to 2025-11-11") as refused:
        journal.answer(ctx, config, TODAY, {})
    assert "`leadwatch violations` has no such limit" in str(refused.value)
    assert json.loads(journal.answer(ctx, config, TODAY, {"manager": "7"}).body)["count"] == 1
    monkeypatch.setattr(journal, "MAX_API_BYTES", 100)
    with pytest.raises(QueryError, match="MB of violations"):
        journal.answer(ctx, config, TODAY, {"manager": "7"})


# ----------------------------------------------------------------------------- the declarations


def test_the_framework_types_are_the_ledgers():
    assert {t.name for t in journal.FRAMEWORK_TYPES} == {GAVE_UP_TYPE, UNCONFIRMED_TYPE}
    assert sorted(t.name for _, t in default_registry().violation_types()) == KNOWN


def _process(name: str, **fields) -> Process:
    return Process(name=name, title=name, config="workflows.timeliness.config:TimelinessConfig", **fields)


def test_a_type_or_path_the_framework_or_another_process_has_is_refused():
    with pytest.raises(ValueError, match="violation type 'gave_up' is taken by the framework"):
        ProcessRegistry([_process("qc", violation_types=(ViolationType("gave_up", "x"),))])
    twice = (ViolationType("overdue_task", "x"),)
    with pytest.raises(ValueError, match="violation type 'overdue_task' is declared by both 'qa' and 'qc'"):
        ProcessRegistry([_process("qa", violation_types=twice), _process("qc", violation_types=twice)])
    with pytest.raises(ValueError, match="route path 'violations' is taken by the framework"):
        ProcessRegistry([_process("qc", queries=(Query("journal", "violations", "x:y", "x"),))])
    with pytest.raises(ValueError, match="needs a plain name"):
        _process("qc", violation_types=(ViolationType("Overdue Task", "x"),))
    with pytest.raises(ValueError, match="needs a plain name"):
        _process("qc", violation_types=(ViolationType("overdue_task", " "),))
    registry = ProcessRegistry([_process("qc", violation_types=twice)])
    assert ("qc", twice[0]) in registry.violation_types()
    assert [d["violation_types"] for d in registry.describe()] == [[{"name": "overdue_task", "help": "x"}]]


def test_a_row_of_an_undeclared_type_is_kept_and_logged(caplog):
    from leadwatch.effects import RecordViolation
    from leadwatch.executor import perform

    ctx = context()
    config = ctx.tenant("acme-b24")
    effects = [
        RecordViolation(Violation("made:1", "made_up", lead(1), "7", NOW)),
        RecordViolation(Violation("late:2", "late_first_processing", lead(2), "7", NOW)),
    ]
    with caplog.at_level("WARNING", logger="leadwatch.executor"):
        perform(ctx, config, effects)
    assert [r.getMessage() for r in caplog.records] == [
        "journal type 'made_up' is declared by no process (Process.violation_types): the journal's "
        "type filter refuses it"
    ]
    assert [e.type for e in journal.read(ctx, config, query())] == ["late_first_processing", "made_up"]


# ----------------------------------------------------------------------------- the command line


def cli(*args: str) -> int:
    return main(["--tenants-dir", str(EXAMPLES), "violations", "acme-b24", *args])


@pytest.fixture
def stored(aws) -> None:
    from leadwatch.store.dynamodb import Store

    store = Store()
    for vid, moment, type, manager, details in (
        ("late:2", datetime(2025, 11, 10, 9, 0, tzinfo=MSK), "late_first_processing", "7", {}),
        ("rej:3", datetime(2025, 11, 10, 15, 0, tzinfo=MSK), "improper_rejection", "1", {"title": TRICKY}),
        ("late:4", datetime(2025, 11, 11, 23, 30, tzinfo=MSK), "late_first_processing", "1", {}),
    ):
        store.put_violation(
            "acme-b24", Violation(vid, type, lead(int(vid[-1])), manager, moment, details), moment
        )


def test_cli_csv_to_a_file_with_every_filter(stored, tmp_path, capsys):
    out = tmp_path / "journal.csv"
    period = ["--from", "2025-11-10", "--to", "2025-11-11"]
    assert (
        cli(
            *period,
            "--type",
            "improper_rejection",
            "--type",
            "late_first_processing",
            "--csv",
            "--out",
            str(out),
        )
        == 0
    )
    assert capsys.readouterr().out == f"3 violation(s) from 2025-11-10 to 2025-11-11 written to {out}\n"
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    _, *rows = rows_of(data.decode("utf-8-sig"))
    assert [r[0] for r in rows] == [
        "2025-11-10T09:00:00+03:00",
        "2025-11-10T15:00:00+03:00",
        "2025-11-11T23:30:00+03:00",
    ]
    assert rows[1][3:6] == ["https://acme.bitrix24.ru/crm/lead/details/3/", "1", "Anna Petrova"]
    assert json.loads(rows[1][6]) == {"title": TRICKY}
    assert (
        cli(*period, "--manager", "1", "--type", "late_first_processing", "--csv", "--sep", "semicolon") == 0
    )
    [_, row] = rows_of(capsys.readouterr().out.removeprefix(journal.BOM), ";")
    assert row[:3] == ["2025-11-11T23:30:00+03:00", "late_first_processing", "lead:4"]


def test_cli_json_text_and_mistakes(stored, capsys):
    assert cli("--from", "2025-11-10", "--to", "2025-11-11", "--manager", "7", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 1 and data["violations"][0]["manager_name"] == "Ivan Sidorov"
    assert cli("--from", "2025-11-10", "--to", "2025-11-11") == 0
    out = capsys.readouterr().out
    assert "2025-11-10 15:00  improper_rejection" in out and "Anna Petrova" in out and "3 violation(s)" in out
    assert cli("--type", "late") == 2
    assert "unknown violation type 'late'; known types: gave_up," in capsys.readouterr().err
    assert cli("--sep", "tab") == 2 and "--sep goes with --csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("--csv", "--json")  # one output at a time
    assert cli("--from", "2025-11-12", "--to", "2025-11-11") == 2
    assert "is after 'to'" in capsys.readouterr().err


def test_every_violations_option_has_help():
    parser = build_parser(default_registry())
    [sub] = [a for a in parser._actions if a.dest == "command"]
    violations = sub.choices["violations"]  # type: ignore[attr-defined]
    options = {o for a in violations._actions for o in a.option_strings}
    assert {"--type", "--manager", "--from", "--to", "--csv", "--json", "--sep", "--out"} <= options
