"""How quality control shows a tenant's cards and people (`messages.QcView`), and the key its page
links are signed with: built from the context wherever a review moves (the pages, the worker, the
deadline sweep), so every link in a task or a reminder opens the pages that check it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from leadwatch.messages import writer_for
from workflows.qc import links
from workflows.qc.messages import QcView

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from workflows.qc.rules import Review


class LinksOff(RuntimeError):
    """The tenant cannot have page links: no read API key to derive their key from, or no address
    the pages are served on."""


def link_key(ctx: Context, config: TenantConfig) -> bytes:
    """The tenant's link key, derived from its read API key (leadwatch.secrets resolves it)."""
    if config.api_key is None:
        raise LinksOff(
            f"tenant {config.tenant}: quality control's page links are signed with a key derived from "
            "the tenant's api_key, and its file has none: add an api_key"
        )
    return links.derive_key(ctx.secrets_of(config)(config.api_key), config.tenant)


def view(ctx: Context, config: TenantConfig, key: bytes) -> QcView:
    """The tenant's writer (language, zone, names), its CRM's card links, and page links signed
    with `key` (`link_key`) on the tenant's `qc.pages_url`."""
    pages_url = config.section("qc").pages_url
    if not pages_url:
        raise LinksOff(f"tenant {config.tenant}: qc.pages_url is not set, so no page link can be made")
    tenant = config.tenant

    def page_link(review: Review, role: str, expires_at: datetime) -> str:
        return links.make_link(pages_url, tenant, review.review_id, role, expires_at, key)

    return QcView(writer=writer_for(ctx, config), card_url=ctx.adapter(config).card_url, page_link=page_link)
