"""Dialing discipline, as the framework sees it."""

from leadwatch.process import Param, Permission, Process, Query, Schedule, StateDecl, ViolationType

PROCESS = Process(
    name="dialing",
    title="Dialing discipline",
    description=(
        "Every lead is dialed a set number of times on each of its first working days; the head "
        "gets the day's under-dialed leads at report time, and a rejection after too few attempts "
        "is journaled and alerted."
    ),
    config="workflows.dialing.config:DialingConfig",
    check="workflows.dialing.config:check",
    # Its plan starts at the lead's control time, which timeliness keeps on the card.
    requires=("timeliness",),
    events=(
        "lead.created",
        "lead.changed",
        "lead.stage_changed",
        "lead.responsible_changed",
        "activity.added",
        "call.ended",
    ),
    on_events="workflows.dialing.service:on_events",
    # A repeat of any of them changes nothing: stages older than the card's are ignored, the
    # first sighting of a rejection fixes its moment and a judged one is not judged again, calls
    # count once per CRM call (conditional adds keyed by the call), alerts go through the ledger.
    idempotent_events=(
        "lead.created",
        "lead.changed",
        "lead.stage_changed",
        "lead.responsible_changed",
        "activity.added",
        "call.ended",
    ),
    reconcile="workflows.dialing.report:reconcile_calls",
    new_card="workflows.dialing.service:new_card",
    schedules=(
        Schedule(
            name="report",
            every_minutes=1,
            run="workflows.dialing.report:send_due_report",
            # Every minute, but a tenant's report goes out once a working day at its own local
            # report time: tenants live in different zones and calendars.
            description="the day's dialing report at each tenant's report time",
            fan_out="wake",
        ),
    ),
    queries=(
        Query(
            name="dialing",
            path="dialing",
            run="workflows.dialing.queries:report",
            help="the dialing report of a day",
            params=(
                Param("date", "the day, YYYY-MM-DD (default: today in the tenant's time zone)", kind="date"),
                Param("format", "'text' adds the Telegram message to the JSON"),
            ),
        ),
        Query(
            name="calls",
            path="leads/{lead}/calls",
            run="workflows.dialing.queries:calls",
            help="a card's call attempts and successful touches",
            params=(Param("lead", "lead id, or deal:ID", in_path=True),),
        ),
    ),
    state=(
        StateDecl("leads", "<card key>: plan day, rejection moment", ("plan-index",)),
        StateDecl("state", "calls#<day>#<card> (a card's calls of a day), checkpoint#dialing-*"),
        StateDecl("journal", "improper_rejection violations"),
    ),
    effects=("Notify", "RecordViolation"),
    violation_types=(
        ViolationType("improper_rejection", "a card rejected after fewer call attempts than required"),
    ),
    # The effect ledger and the journal rows of its effects are the framework's, and so is feeding
    # the calls it reconciles through the queue (leadwatch.iam).
    permissions=(
        Permission(
            "worker",
            "table:leads",
            ("BatchGetItem", "UpdateItem"),
            "plan day, rejection; when a card arrived",
        ),
        Permission(
            "worker",
            "table:state",
            ("BatchGetItem", "GetItem", "Query", "UpdateItem"),
            "calls held already; calls (a merge re-reads its item); a card's calls",
        ),
        Permission("report", "index:leads/plan-index", ("Query",), "the leads in plan"),
        Permission("report", "table:leads", ("BatchGetItem",), "titles of touched cards; when cards arrived"),
        Permission(
            "report",
            "table:state",
            ("BatchGetItem", "GetItem", "PutItem", "Query", "UpdateItem"),
            "checkpoint, the day's calls, the cards' totals, recordings",
        ),
        Permission(
            "reconcile", "table:state", ("BatchGetItem", "GetItem", "PutItem"), "known calls, checkpoint"
        ),
        Permission("api", "index:leads/plan-index", ("Query",), "the report"),
        Permission("api", "table:leads", ("BatchGetItem",), "a card; titles"),
        Permission(
            "api", "table:state", ("BatchGetItem", "Query"), "a card's calls; the day's calls, totals"
        ),
    ),
)
