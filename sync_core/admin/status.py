"""What an admin reads: status, history and the doctor, assembled for the API, the page and the CLI.

- :func:`build_status`: the credential and its expiry, and per mapping its state (ok, error,
  deactivated), last success, last error (code, message, hint), subscription expiry, and the
  work that waits for it or was parked.
- :func:`history_page`: what the service did, newest first, per resource or for all.
- :func:`run_doctor`: every check of the set-up, each pass / warn / fail with a hint.
- :func:`credential_tone`: how a credential's state reads for an admin (ok, warning, error).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sync_core.clock import iso, now
from sync_core.credentials.status import credential_status
from sync_core.problems import ValidationFailed
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import (
    APPLY_BOOKING,
    DELIVER,
    SYNC_MAILBOX,
    decode_message,
    poison_queue,
)
from sync_core.validation import check_identifier

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

WORK_QUEUES = (APPLY_BOOKING, SYNC_MAILBOX, DELIVER)
PEEK = 32  # Storage queues show at most 32 messages without taking them
MAX_HISTORY_PAGE = 1000


CREDENTIAL_OK = frozenset({"ok"})
CREDENTIAL_WARNING = frozenset({"warning", "unknown"})  # anything else is an error


def credential_tone(state: object) -> Literal["ok", "warning", "error"]:
    """How a credential's state reads for an admin: ``unknown`` (not checkable just now) warns."""
    if state in CREDENTIAL_OK:
        return "ok"
    return "warning" if state in CREDENTIAL_WARNING else "error"


# -- queued and parked work ------------------------------------------------------------------------


@dataclass
class WorkCounts:
    pending: int = 0
    parked: int = 0


def _peek(svc: Services, queue: str) -> list[dict[str, Any]]:
    try:
        messages = svc.queues.queue(queue).peek_messages(max_messages=PEEK)
    except Exception:
        log.warning("could not peek into queue %s", queue, exc_info=True)
        return []
    found = []
    for message in messages:
        try:
            body = json.loads(decode_message(message.content))
        except (ValueError, TypeError):
            continue
        if isinstance(body, dict):
            found.append(body)
    return found


def _resource_of(
    svc: Services, queue: str, body: dict[str, Any], by_mailbox: dict[str, str]
) -> str | None:
    if queue == SYNC_MAILBOX:
        return by_mailbox.get(str(body.get("mailbox", "")).lower())
    if queue == DELIVER:
        data = (body.get("body") or {}).get("data") or {}
        value = data.get("resource_id")
        return str(value) if value is not None else None
    booking_id = body.get("booking_id")
    if booking_id is None:
        return None
    link = svc.links.get(str(booking_id))
    if link is not None:
        return link.resource_id
    stored = svc.bookings.get(str(booking_id))
    if stored is not None:
        value = (stored.event.get("data") or {}).get("resource_id")
        return str(value) if value is not None else None
    return None


def work_report(
    svc: Services, mappings: list[Mapping]
) -> tuple[list[dict[str, Any]], dict[str, WorkCounts]]:
    """Per queue: messages waiting and parked (the queue's approximate count). Per resource:
    what could be attributed by looking at the first messages of each queue (messages that wait
    for a later retry are not visible, so they count only in the queue totals)."""
    by_mailbox = {m.mailbox: m.resource_id for m in mappings}
    per_resource: dict[str, WorkCounts] = {}
    queues = []
    for queue in WORK_QUEUES:
        pending = svc.queues.depth(queue)
        parked = svc.queues.depth(poison_queue(queue))
        queues.append({"queue": queue, "pending": pending, "parked": parked})
        for name, count, attr in (
            (queue, pending, "pending"),
            (poison_queue(queue), parked, "parked"),
        ):
            if not count:
                continue
            for body in _peek(svc, name):
                resource = _resource_of(svc, queue, body, by_mailbox)
                if resource is not None:
                    counts = per_resource.setdefault(resource, WorkCounts())
                    setattr(counts, attr, getattr(counts, attr) + 1)
    return queues, per_resource


# -- status ----------------------------------------------------------------------------------------

MappingState = Literal["ok", "error", "deactivated"]


def mapping_status(
    svc: Services, mapping: Mapping, subscription_expiry: datetime | None, work: WorkCounts
) -> dict[str, Any]:
    health = svc.health.get(mapping.resource_id)
    state: MappingState = "deactivated" if not mapping.enabled else health.state
    last_error = None
    if health.last_error:
        last_error = {**health.last_error, "at": iso(health.last_error_at)}
    return {
        "resource_id": mapping.resource_id,
        "mailbox": mapping.mailbox,
        "privacy": mapping.privacy,
        "enabled": mapping.enabled,
        "direction": mapping.direction,
        "filters": mapping.filters.to_json(),
        "state": state,
        "last_success": iso(health.last_success),
        "last_error": last_error,
        # A mapping that only writes to Outlook has no subscription of its own.
        "subscription_expires_at": iso(subscription_expiry) if mapping.reads_outlook else None,
        "subscription_lost": health.subscription_lost,
        "pending": work.pending,
        "parked": work.parked,
    }


def build_status(svc: Services) -> dict[str, Any]:
    """``GET /api/admin/status``: everything an admin checks at a glance."""
    mappings = sorted(svc.mappings.all(), key=lambda m: m.resource_id)
    subscriptions = {r.mailbox: r.expires_at for r in svc.subscriptions.all()}
    queues, per_resource = work_report(svc, mappings)
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(
            pool.map(
                lambda m: mapping_status(
                    svc,
                    m,
                    subscriptions.get(m.mailbox) if m.enabled else None,
                    per_resource.get(m.resource_id, WorkCounts()),
                ),
                mappings,
            )
        )
        credential = credential_status(svc)
    connected = sum(1 for r in rows if r["state"] == "ok")  # enabled and healthy
    failed = sum(1 for r in rows if r["state"] == "error")
    summary = {
        "mappings": len(rows),
        "connected": connected,
        "failed": failed,
        "deactivated": sum(1 for r in rows if r["state"] == "deactivated"),
        "ok": connected,  # the same counts by the mapping states' names
        "error": failed,
    }
    pending = sum(q["pending"] for q in queues)
    parked = sum(q["parked"] for q in queues)
    tone = credential_tone(credential.get("state"))
    if summary["error"] or tone == "error":
        overall = "error"
    elif parked or tone == "warning":
        overall = "warning"
    else:
        overall = "ok"
    return {
        "generated_at": iso(now()),
        "state": overall,
        "credential": credential,
        "work": {"pending": pending, "parked": parked, "queues": queues},
        "summary": summary,
        "mappings": rows,
    }


# -- history ---------------------------------------------------------------------------------------


def history_page(
    svc: Services,
    *,
    resource_id: str | None = None,
    limit: int = 50,
    continuation: str | None = None,
) -> tuple[list[HistoryEntry], str | None]:
    """``GET /api/admin/history``: newest first; one resource's, or everything."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise ValidationFailed.single("limit", f"must be between 1 and {MAX_HISTORY_PAGE}")
    if resource_id is not None:
        check_identifier("resource_id", resource_id)
    try:
        return svc.history.page(resource_id=resource_id, page_size=limit, continuation=continuation)
    except ValueError as exc:  # a continuation token that is not ours
        raise ValidationFailed.single("continuation", str(exc)) from None
