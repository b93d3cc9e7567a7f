"""The weekly reason audit as a job and as a query.

The job runs hourly per tenant and acts once a week: at the tenant's audit weekday and time it
audits the last complete week (a job that missed its hour catches up on the next run), tells the
head in Telegram (counts and p-values; "too little data" where the counts are not enough) and
sends the week's spot checks to the reviewers through the same review page. The week is marked
audited only once the message is out; spot checks are reviews with stable ids, so a repeat makes
none twice. The query (`leadwatch qc-audit TENANT --week 2026-W47`, `GET /tenants/{t}/qc/audit`)
computes any week's audit on demand, sending nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from leadwatch import executor
from leadwatch.effects import Notify
from leadwatch.events import EntityRef
from leadwatch.process import QueryError, QueryResult
from workflows.qc import audit, messages, rules
from workflows.qc.service import Tenant, start

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context

LAST_AUDITED = "audit#last"


def records_for(t: Tenant, week: audit.IsoWeek, baseline_weeks: int) -> list[audit.RejectionRecord]:
    """The rejections noted from the first baseline week to the end of `week`."""
    first = week.shifted(-baseline_weeks).first_day - timedelta(days=1)
    last = week.last_day + timedelta(days=1)
    months = {f"{d:%Y-%m}" for d in _days(first, last)}
    out = []
    for record in t.reviews.rejections(months):
        value = record.value
        out.append(
            audit.RejectionRecord(
                entity=EntityRef.parse(value["entity"]),
                manager=value.get("manager"),
                at=datetime.fromisoformat(value["at"]),
                ignored=value.get("action") == "ignore",
            )
        )
    return out


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def run_audit(t: Tenant, week: audit.IsoWeek) -> tuple[audit.AuditResult, list[audit.RejectionRecord]]:
    arules = audit.AuditRules.from_config(t.config.section("qc"))
    records = records_for(t, week, arules.baseline_weeks)
    return audit.audit(records, week, arules, t.calendar.tz), records


@dataclass
class AuditReport:
    week: str = ""
    flagged: list[str] = field(default_factory=list)
    spot_checks: int = 0
    sent: bool = False
    wake_at: datetime | None = None


def weekly(ctx: Context, config: TenantConfig, now: datetime, budget: Any) -> AuditReport | None:
    t = Tenant.of(ctx, config)
    arules = audit.AuditRules.from_config(config.section("qc"))
    tz = t.calendar.tz
    record = t.reviews.state.get(config.tenant, LAST_AUDITED)
    last = audit.IsoWeek.parse(record.value["week"]) if record is not None else None
    week = audit.audit_due(now, last, arules, tz)
    if week is None:
        return AuditReport(wake_at=audit.next_audit_at(now, arules, tz))
    result, records = run_audit(t, week)
    report = AuditReport(week=week.key, flagged=[v.subject or "department" for v in result.flagged])
    report.spot_checks = _spot_checks(t, result, records, arules, week, now)
    notice = Notify(f"qc:audit:{config.tenant}:{week.key}", messages.audit_message(result, t.view.writer))
    outcome = executor.perform(ctx, config, [notice], budget)
    report.sent = notice.effect_id in outcome.done
    if report.sent:
        value = {"week": week.key, "at": now.astimezone(UTC).isoformat()}
        if record is None:
            t.reviews.state.create(config.tenant, LAST_AUDITED, value)
        else:
            t.reviews.state.update(config.tenant, LAST_AUDITED, value, record.version)
    report.wake_at = audit.next_audit_at(now, arules, tz)
    return report


def _spot_checks(
    t: Tenant,
    result: audit.AuditResult,
    records: list[audit.RejectionRecord],
    arules: audit.AuditRules,
    week: audit.IsoWeek,
    now: datetime,
) -> int:
    picked = audit.spot_checks(t.config.tenant, result, records, arules, t.calendar.tz)
    if not picked:
        return 0
    wanted = {e.key for e in picked}
    rows = {
        r.value["entity"]: r.value
        for r in t.reviews.rejections({f"{d:%Y-%m}" for d in _days(week.first_day, week.last_day)})
        if r.value["entity"] in wanted and r.value.get("action") == "ignore"
    }
    made = 0
    for entity in picked:
        value = rows.get(entity.key)
        funnel = t.rules.funnel(value["funnel"]) if value and value.get("funnel") else None
        if value is None or funnel is None:
            continue  # its funnel is no longer configured
        card = SimpleNamespace(
            entity=entity,
            stage=value["stage"],
            responsible=value.get("manager"),
            title=value.get("title") or "",
        )
        reason = funnel.reason_for_id(value["reason_id"]) if value.get("reason_id") else None
        reason = reason or funnel.reason_for_stage(value["stage"])
        routing = rules.Routing("ignore", "spot check", funnel, reason, value.get("reason_id"))
        review = rules.open_spot_check(
            t.config.tenant, card, routing, datetime.fromisoformat(value["at"]), week.key, t.rules
        )
        t.reviews.create(review, now)
        start(t, review.review_id, now)
        made += 1
    return made


def audit_query(ctx: Context, config: TenantConfig, today: date, params: dict[str, Any]) -> QueryResult:
    """`qc-audit`: one week's audit, the last complete one by default."""
    week, format = params.get("week"), params.get("format")
    t = Tenant.of(ctx, config)
    try:
        audited = audit.IsoWeek.parse(week) if week else audit.IsoWeek.of(today).shifted(-1)
    except ValueError as exc:
        raise QueryError(f"week: {exc} (write it as 2026-W47)") from exc
    result, _ = run_audit(t, audited)
    from leadwatch.messages import terminal, writer_for

    text = terminal(messages.audit_message(result, writer_for(ctx, config)))
    data = result.to_dict()
    if format == "text":
        data["text"] = text
    return QueryResult(data, text)
