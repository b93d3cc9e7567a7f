"""Timeliness control, as the framework sees it."""

from leadwatch.process import Param, Permission, Process, Query, Schedule, StateDecl, ViolationType

CARD_EVENTS = ("lead.created", "lead.changed", "lead.stage_changed", "lead.responsible_changed")

PROCESS = Process(
    name="timeliness",
    title="Timeliness control",
    description=(
        "Every new lead must be processed by its control time (the reaction time counted in the "
        "tenant's working hours, carried-over leads by the control start); the verdict goes into "
        "the card, a late lead to the journal and to the head in Telegram."
    ),
    config="workflows.timeliness.config:TimelinessConfig",
    check="workflows.timeliness.config:check",
    events=(*CARD_EVENTS, "lead.deleted", "activity.added", "call.ended"),
    on_events="workflows.timeliness.service:on_events",
    # A repeat of these changes nothing: the card's stage, owner and title move only forward in
    # the CRM's modification time, processing is kept once learnt (only moved earlier), and the
    # intake stamp goes through the ledger. A card's arrival and deletion stay deduped.
    idempotent_events=(
        "lead.changed",
        "lead.stage_changed",
        "lead.responsible_changed",
        "activity.added",
        "call.ended",
    ),
    schedules=(
        Schedule(
            name="sweep",
            every_minutes=1,
            run="workflows.timeliness.sweep:sweep_tenant",
            description="verdicts for the cards whose control time has come",
            fan_out="wake",
        ),
    ),
    queries=(
        Query(
            name="timeliness",
            path="timeliness",
            run="workflows.timeliness.queries:timeliness",
            help="on time / late per manager over a period",
            params=(
                Param("from", "first day, YYYY-MM-DD (default: six days before --to)", kind="date"),
                Param("to", "last day, YYYY-MM-DD (default: today in the tenant's time zone)", kind="date"),
                Param("format", "'text' adds the table, in the tenant's language, to the JSON"),
            ),
        ),
    ),
    state=(
        StateDecl(
            "leads", "<card key> (created, control time, stage, owner, processing, verdict)", ("due-index",)
        ),
        StateDecl("state", "stats#timeliness#<day>#<manager>, checkpoint#sweep"),
        StateDecl("journal", "late_first_processing violations"),
    ),
    effects=("SetCardFields", "Notify", "RecordViolation"),
    violation_types=(ViolationType("late_first_processing", "a new lead not processed by its control time"),),
    # The effect ledger and the journal rows of its effects are the framework's (leadwatch.iam).
    permissions=(
        Permission(
            "worker", "table:leads", ("BatchGetItem", "PutItem", "UpdateItem"), "read, create, update cards"
        ),
        Permission("sweep", "index:leads/due-index", ("Query",), "the cards falling due"),
        Permission(
            "sweep", "table:leads", ("BatchGetItem", "UpdateItem"), "read, claim, release, refresh, close"
        ),
        Permission(
            "sweep", "table:state", ("GetItem", "PutItem", "UpdateItem"), "checkpoint, manager counters"
        ),
        Permission("api", "table:state", ("Query",), "statistics"),
    ),
)
