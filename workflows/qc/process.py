"""Quality control of rejected leads and deals, as the framework sees it."""

from leadwatch.process import Param, Permission, Process, Query, Route, Schedule, StateDecl, ViolationType

# The journal's types (workflows.qc.rules names them too; a test keeps both the same). Written out:
# listing the processes must not import their code.
ANSWER_OVERDUE, REVIEW_OVERDUE = "qc_answer_overdue", "qc_review_overdue"
RETURNED_TO_WORK, CONFIRMED = "qc_returned_to_work", "qc_confirmed"
CARD_EVENTS = ("lead.created", "lead.changed", "lead.stage_changed", "lead.responsible_changed")
# Everything QC keeps is its own records in the state table (workflows/qc/reviews.py): reviews and
# their pointers are read, created, updated over a version and deleted; rejections and open
# reviews are queried by prefix.
RECORDS = ("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem")

PROCESS = Process(
    name="qc",
    title="Quality control of rejections",
    description=(
        "A rejection with a reason worth checking puts clarifying questions to the manager and "
        "their answers to a reviewer, who returns the card to work or confirms the rejection, each "
        "task under a deadline in working time with a reminder and an escalation to the head; a "
        "weekly audit flags a rising share of ignored reasons and sends a sample for spot checks."
    ),
    config="workflows.qc.config:QcConfig",
    check="workflows.qc.config:check",
    events=(*CARD_EVENTS, "lead.deleted"),
    on_events="workflows.qc.service:on_events",
    # A repeat changes nothing: a card's place is kept as of its CRM modification time, a
    # rejection and its review have ids of their own, effects go through the ledger.
    idempotent_events=CARD_EVENTS,
    schedules=(
        Schedule(
            name="sweep",
            every_minutes=1,
            run="workflows.qc.service:sweep",
            description="reminders, overdue tasks and escalations of open reviews; pending effects",
            fan_out="wake",
        ),
        Schedule(
            name="audit",
            every_minutes=60,
            run="workflows.qc.audit_job:weekly",
            description="the weekly reason audit and its spot checks",
            fan_out="wake",
        ),
    ),
    queries=(
        Query(
            name="qc-audit",
            path="qc/audit",
            run="workflows.qc.audit_job:audit_query",
            help="the reason audit of one week: shares of ignored reasons, p-values, flags",
            params=(
                Param("week", "the ISO week, e.g. 2026-W47 (default: the last complete week)"),
                Param("format", "'text' adds the report, in the tenant's language, to the JSON"),
            ),
        ),
    ),
    routes=(
        Route(
            "answer_page",
            "qc/answer/{token}",
            "workflows.qc.routes:answer_page",
            "the manager's questions about a rejection, and their answers (a signed link)",
            methods=("GET", "POST"),
            auth="none",
        ),
        Route(
            "review_page",
            "qc/review/{token}",
            "workflows.qc.routes:review_page",
            "a rejection's answers and card history, and the reviewer's decision (a signed link)",
            methods=("GET", "POST"),
            auth="none",
        ),
    ),
    state=(
        StateDecl(
            "state",
            "p#qc#review#<review id>, p#qc#open#<review id>, p#qc#card#<card>, "
            "p#qc#rejection#<month>#<card>#<moment>, p#qc#audit#last",
        ),
        StateDecl("leads", "read only: a card's arrival and timeliness verdict, for the review page"),
        StateDecl("journal", "qc_answer_overdue, qc_review_overdue, qc_returned_to_work, qc_confirmed rows"),
    ),
    effects=("Notify", "RecordViolation", "CreateTask", "CompleteTask", "RemindUser", "MoveStage", "AddNote"),
    violation_types=(
        ViolationType(ANSWER_OVERDUE, "a manager did not answer a rejection's questions by the deadline"),
        ViolationType(REVIEW_OVERDUE, "a reviewer did not decide on a rejection by the deadline"),
        ViolationType(RETURNED_TO_WORK, "a reviewer returned a rejected card to work"),
        ViolationType(CONFIRMED, "a reviewer confirmed a rejection"),
    ),
    permissions=(
        Permission("worker", "table:state", RECORDS, "reviews, rejections, cards' places"),
        Permission("sweep", "table:state", RECORDS, "open reviews and their deadlines"),
        Permission("audit", "table:state", RECORDS, "the week's rejections; spot checks; last audited"),
        Permission("api", "table:state", RECORDS, "the pages: a review read, decided, kept; the audit"),
        Permission("api", "table:leads", ("BatchGetItem",), "the review page: the card's timeliness"),
        # Page links are signed with a key derived from the tenant's read-API key (workflows/qc/links.py):
        # whoever makes a task or a reminder with a link reads it.
        Permission("worker", "secret:api-key", ("GetParameter", "GetParameters"), "sign page links"),
        Permission("sweep", "secret:api-key", ("GetParameter", "GetParameters"), "sign page links"),
        Permission("audit", "secret:api-key", ("GetParameter", "GetParameters"), "sign page links"),
    ),
)
