"""What both adapters do alike with a work item (leadwatch.effects.CrmWork) before sending it."""

from __future__ import annotations


def task_description(text: str, link: str | None, *, title: str | None = None) -> str:
    """A task's description: the title first where the CRM's task has none of its own (amoCRM
    keeps only a text), then the text, then the link on a line of its own unless the text already
    holds it (CreateTask.text usually does)."""
    parts = [part for part in (title, text) if part]
    if link and link not in text:
        parts.append(link)
    return "\n".join(parts)
