"""Quality control of rejected leads and deals, as the framework sees it.

Not registered in `workflows/__init__.py` yet: its rules, configuration and texts are here, its
event handler, deadline sweep, audit job, pages and queries are not, and the framework cannot
perform its CRM effects yet (see workflows/qc/effects.py: tasks, stage moves, notes and
reminders need adapter methods and a way for the executor to perform a process's own effect
kinds). The declaration below is what it will need.
"""

from leadwatch.process import Process, Route, StateDecl

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
    state=(
        StateDecl(
            "state", "qc#review#<review id> (a review and its tasks), qc#rejection#<card> (for the audit)"
        ),
        StateDecl(
            "journal",
            "qc_answer_overdue, qc_review_overdue, qc_returned_to_work, qc_confirmed rows",
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
    effects=("Notify", "RecordViolation", "CreateTask", "CompleteTask", "RemindUser", "MoveStage", "AddNote"),
)
