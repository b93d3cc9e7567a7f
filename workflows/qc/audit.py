"""The weekly reason audit, pure: has the share of `ignore` reasons risen?

The share of each rejection reason is stable over time unless something changed (a new
advertising campaign, a new manager). A manager, or the whole department, whose share of
ignored reasons rises is probably rejecting leads where no review looks. Each week (and on
demand) every manager's count of `ignore` rejections is tested two ways, one-sided:

- against their own trailing baseline (the `baseline_weeks` weeks before): an exact binomial
  test, P(X >= k) for X ~ Binomial(n, p0), n this week's rejections, p0 the baseline's share;
- against the rest of the department in the same week: Fisher's exact test on the 2x2 table
  (this manager / everyone else x ignored / other reasons), P(a or more ignored by this manager)
  under the hypergeometric law given the table's margins.

The department as a whole is tested against its own baseline. A subject is flagged when a test
gives p below the tenant's significance level. With fewer rejections than `min_week` this week,
or fewer than `min_baseline` in what it is compared with, a test says nothing and the verdict
is "too little data", not "no rise".

Both tests are computed exactly in integers (`math.comb`) and divided once: no SciPy, which
would not fit the Lambda bundle, and no floating-point cancellation in the tail sums.

The spot-check sample is drawn with `random.Random` seeded from the tenant and the ISO week:
the same week gives the same cards on every run (a re-run of the audit sends the same checks),
another week other cards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from math import comb
from typing import Any

from leadwatch.events import EntityRef

_ONE_WEEK = timedelta(days=7)


# ----------------------------------------------------------------------------- the exact tests


def binomial_tail(k: int, n: int, p: Fraction | float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly: sum of C(n, i) p^i (1-p)^(n-i) for i >= k,
    added as one integer numerator over the common denominator."""
    if n < 0 or not 0 <= p <= 1:
        raise ValueError(f"binomial_tail: n={n}, p={p} out of range")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    rate = Fraction(p)
    a, b = rate.numerator, rate.denominator
    numerator = sum(comb(n, i) * a**i * (b - a) ** (n - i) for i in range(k, n + 1))
    return min(1.0, float(numerator / b**n))


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher's exact test of the table [[a, b], [c, d]]: P(the top-left cell >= a)
    under the hypergeometric law with the table's margins (the top row's share of the first
    column no higher than the bottom row's)."""
    if min(a, b, c, d) < 0:
        raise ValueError("fisher_greater: counts must not be negative")
    row, column, total = a + b, a + c, a + b + c + d
    top = min(row, column)
    numerator = sum(comb(column, x) * comb(total - column, row - x) for x in range(a, top + 1))
    return min(1.0, float(numerator / comb(total, row)))


# ----------------------------------------------------------------------------- weeks


@dataclass(frozen=True, order=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @classmethod
    def parse(cls, key: str) -> IsoWeek:
        """From "2025-W46"."""
        year, _, week = key.partition("-W")
        found = cls(int(year), int(week))
        date.fromisocalendar(found.year, found.week, 1)  # refuses a week the year has not
        return found

    @property
    def key(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def first_day(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def last_day(self) -> date:
        return self.first_day + timedelta(days=6)

    def shifted(self, weeks: int) -> IsoWeek:
        return IsoWeek.of(self.first_day + weeks * _ONE_WEEK)

    def start(self, tz: Any) -> datetime:
        """Monday 00:00 in the tenant's zone."""
        return datetime.combine(self.first_day, time(0), tz)


# ----------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class Counts:
    ignored: int = 0
    total: int = 0

    @property
    def share(self) -> float:
        return self.ignored / self.total if self.total else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.ignored + other.ignored, self.total + other.total)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.ignored - other.ignored, self.total - other.total)


@dataclass(frozen=True)
class RejectionRecord:
    """One rejection QC saw: whose, when, and whether its reason was `ignore`."""

    entity: EntityRef
    manager: str | None
    at: datetime
    ignored: bool


@dataclass(frozen=True)
class AuditRules:
    baseline_weeks: int = 8
    significance: float = 0.01
    min_week: int = 5
    min_baseline: int = 20
    weekday: int = 0  # Monday
    at: time = time(9, 30)
    sample_size: int = 5
    sample_when: str = "flagged"

    @classmethod
    def from_config(cls, cfg: Any) -> AuditRules:
        """From a `workflows.qc.config.QcConfig`."""
        audit = cfg.audit
        return cls(
            baseline_weeks=audit.baseline_weeks,
            significance=audit.significance,
            min_week=audit.min_week,
            min_baseline=audit.min_baseline,
            weekday=audit.weekday_number,
            at=audit.time,
            sample_size=cfg.spot_checks.sample_size,
            sample_when=cfg.spot_checks.when,
        )


def tally(
    records: Iterable[RejectionRecord], week: IsoWeek, baseline_weeks: int, tz: Any
) -> tuple[dict[str | None, Counts], dict[str | None, Counts]]:
    """Counts per manager for the audited week, and for the `baseline_weeks` weeks before it
    (by the tenant's local dates); records outside both are left out."""
    start = week.start(tz)
    end = start + _ONE_WEEK
    baseline_start = start - baseline_weeks * _ONE_WEEK
    now: dict[str | None, Counts] = {}
    before: dict[str | None, Counts] = {}
    for record in records:
        at = record.at.astimezone(tz)
        one = Counts(int(record.ignored), 1)
        if start <= at < end:
            now[record.manager] = now.get(record.manager, Counts()) + one
        elif baseline_start <= at < start:
            before[record.manager] = before.get(record.manager, Counts()) + one
    return now, before


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class DriftVerdict:
    """One subject's week: a manager (`subject` their id) or the department (`subject` None)."""

    subject: str | None
    week: Counts
    baseline: Counts
    p_baseline: float | None  # None: too little data for this comparison
    rest: Counts | None  # the rest of the department this week (None for the department)
    p_rest: float | None
    flagged: bool
    min_week: int

    @property
    def too_little_data(self) -> bool:
        return self.week.total < self.min_week or (self.p_baseline is None and self.p_rest is None)

    def to_dict(self) -> dict[str, Any]:
        def counts(c: Counts | None) -> dict[str, Any] | None:
            return None if c is None else {"ignored": c.ignored, "total": c.total, "share": c.share}

        return {
            "subject": self.subject if self.subject is not None else "department",
            "week": counts(self.week),
            "baseline": counts(self.baseline),
            "p_baseline": self.p_baseline,
            "rest": counts(self.rest),
            "p_rest": self.p_rest,
            "flagged": self.flagged,
            "too_little_data": self.too_little_data,
        }


def baseline_rate(baseline: Counts) -> Fraction:
    """The share the baseline gives. A baseline without a single ignored reason would make one
    this week impossible (p = 0, flagged on one lead): read it as half a rejection in n + 1,
    the usual continuity correction, so it takes a real rise to flag."""
    if baseline.ignored == 0:
        return Fraction(1, 2 * (baseline.total + 1))
    return Fraction(baseline.ignored, baseline.total)


def verdict(
    subject: str | None, week: Counts, baseline: Counts, rest: Counts | None, rules: AuditRules
) -> DriftVerdict:
    """Test one subject's week against its baseline (binomial) and, for a manager, against the
    rest of the department (Fisher); each only where the counts are enough."""
    enough = week.total >= rules.min_week
    p_baseline: float | None = None
    p_rest: float | None = None
    if enough and baseline.total >= rules.min_baseline:
        p_baseline = binomial_tail(week.ignored, week.total, baseline_rate(baseline))
    if enough and rest is not None and rest.total >= rules.min_baseline:
        p_rest = fisher_greater(
            week.ignored, week.total - week.ignored, rest.ignored, rest.total - rest.ignored
        )
    flagged = any(p is not None and p < rules.significance for p in (p_baseline, p_rest))
    return DriftVerdict(subject, week, baseline, p_baseline, rest, p_rest, flagged, rules.min_week)


@dataclass(frozen=True)
class AuditResult:
    week: IsoWeek
    baseline_weeks: int
    verdicts: tuple[DriftVerdict, ...]  # the department first, then managers by id

    @property
    def flagged(self) -> list[DriftVerdict]:
        return [v for v in self.verdicts if v.flagged]

    def to_dict(self) -> dict[str, Any]:
        return {
            "week": self.week.key,
            "baseline_weeks": self.baseline_weeks,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def drift(
    week: Mapping[str | None, Counts],
    baseline: Mapping[str | None, Counts],
    rules: AuditRules,
    audited: IsoWeek,
) -> AuditResult:
    """Verdicts for the department and each manager with rejections this week. Rejections of
    cards with no manager count for the department only."""
    department = sum(week.values(), Counts())
    verdicts = [verdict(None, department, sum(baseline.values(), Counts()), None, rules)]
    for manager in sorted(m for m in week if m is not None):
        mine = week[manager]
        verdicts.append(verdict(manager, mine, baseline.get(manager, Counts()), department - mine, rules))
    return AuditResult(audited, rules.baseline_weeks, tuple(verdicts))


def audit(records: Iterable[RejectionRecord], audited: IsoWeek, rules: AuditRules, tz: Any) -> AuditResult:
    """The audit of one week from the rejections of that week and the baseline weeks before."""
    now, before = tally(records, audited, rules.baseline_weeks, tz)
    return drift(now, before, rules, audited)


# ----------------------------------------------------------------------------- schedule


def audited_week(now: datetime, tz: Any) -> IsoWeek:
    """The last complete week at `now`: the one before the current."""
    return IsoWeek.of(now.astimezone(tz).date()).shifted(-1)


def audit_moment(week: IsoWeek, rules: AuditRules, tz: Any) -> datetime:
    """When the audit of `week` goes out: the tenant's audit weekday and time of the week after."""
    day = week.shifted(1).first_day + timedelta(days=rules.weekday)
    return datetime.combine(day, rules.at, tz)


def audit_due(now: datetime, last_audited: IsoWeek | None, rules: AuditRules, tz: Any) -> IsoWeek | None:
    """The week to audit now, if its audit moment has come and it was not audited yet."""
    week = audited_week(now, tz)
    if now < audit_moment(week, rules, tz):
        week = week.shifted(-1)  # this week's audit is still ahead: the one before may be owed
    if last_audited is not None and week <= last_audited:
        return None
    return week if now >= audit_moment(week, rules, tz) else None


def next_audit_at(now: datetime, rules: AuditRules, tz: Any) -> datetime:
    week = audited_week(now, tz)
    moment = audit_moment(week, rules, tz)
    return moment if moment > now else audit_moment(week.shifted(1), rules, tz)


# ----------------------------------------------------------------------------- spot checks


def sample(
    tenant: str, week: IsoWeek, candidates: Iterable[EntityRef], size: int, subject: str | None = None
) -> list[EntityRef]:
    """A reproducible random sample: seeded by tenant and week (and the subject sampled, so two
    managers' samples are drawn apart; a text seed is hashed with SHA-512 by `random.Random`, the
    same in every process), from the candidates in a fixed order, so the order they were listed
    in does not matter."""
    pool = sorted(set(candidates))
    if size <= 0 or not pool:
        return []
    rng = random.Random(f"qc-spot-check:{tenant}:{week.key}:{subject or '*'}")
    return rng.sample(pool, min(size, len(pool)))


def spot_checks(
    tenant: str,
    result: AuditResult,
    records: Sequence[RejectionRecord],
    rules: AuditRules,
    tz: Any,
) -> list[EntityRef]:
    """The cards with `ignore` reasons of the audited week to send to a reviewer: a sample per
    flagged manager (from the whole department when the department is flagged), or from every
    manager when the tenant spot-checks every week."""
    start = result.week.start(tz)
    end = start + _ONE_WEEK
    ignored = [r for r in records if r.ignored and start <= r.at.astimezone(tz) < end]
    if rules.sample_when == "always":
        subjects: list[str | None] = [None]
    else:
        flagged = result.flagged
        subjects = [None] if any(v.subject is None for v in flagged) else [v.subject for v in flagged]
    picked: list[EntityRef] = []
    for subject in subjects:
        pool = [r.entity for r in ignored if subject is None or r.manager == subject]
        picked += [
            e for e in sample(tenant, result.week, pool, rules.sample_size, subject) if e not in picked
        ]
    return picked
