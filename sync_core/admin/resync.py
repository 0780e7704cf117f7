"""Resync (SPEC §6): a fresh round in both directions for one mapping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sync_core.admin.catch_up import bookings_to_reapply, queue_bookings
from sync_core.admin.mappings import check_mailbox, get_mapping
from sync_core.admin.problems import problem_for
from sync_core.admin.progress import Progress, no_progress
from sync_core.graph import GraphError
from sync_core.problems import (
    Conflict,
)
from sync_core.store.mappings import Mapping

if TYPE_CHECKING:
    from sync_core.services import Services


@dataclass(frozen=True)
class ResyncReport:
    resource_id: str
    mailbox: str
    subscription: str  # ok, renewed, created, recreated
    mailbox_rounds: int
    bookings_queued: int

    def to_json(self) -> dict[str, Any]:
        return {
            "resource_id": self.resource_id,
            "mailbox": self.mailbox,
            "subscription": self.subscription,
            "mailbox_rounds": self.mailbox_rounds,
            "bookings_queued": self.bookings_queued,
        }


def resync(svc: Services, resource_id: str, *, progress: Progress | None = None) -> ResyncReport:
    """Start a fresh round in both directions: check the mailbox, make sure its subscription is
    alive, read the whole window again (blockers) and re-apply every booking of the resource
    (projections restored to the bookings' state)."""
    from sync_core.store.queues import SYNC_MAILBOX

    report = progress or no_progress
    mapping = get_mapping(svc.mappings, resource_id)
    if not mapping.enabled:
        raise Conflict(
            f"mapping {resource_id!r} is deactivated; enable it (PUT with enabled: true), "
            "which also resyncs it"
        )
    report("checking the mailbox", 0, 1)
    check_mailbox(svc, mapping.mailbox, resource_id)
    report("checking the mailbox", 1, 1)
    try:
        subscription = ensure_live_subscription(svc, mapping)
    except GraphError as error:
        svc.health.failure(resource_id, error.to_json())
        svc.history.add(
            resource_id, "mapping.resync", mapping.mailbox, "failed",
            error.message, error.to_json(),
        )  # fmt: skip
        raise problem_for(error, mapping.mailbox) from None
    svc.queues.send(SYNC_MAILBOX, {"mailbox": mapping.mailbox, "full": True})
    queued = queue_bookings(svc, bookings_to_reapply(svc, resource_id), report)
    svc.history.add(
        resource_id, "mapping.resync", mapping.mailbox, "ok",
        f"subscription {subscription}; full read queued; {queued} booking(s) re-applied",
    )  # fmt: skip
    return ResyncReport(resource_id, mapping.mailbox, subscription, 1, queued)


def ensure_live_subscription(svc: Services, mapping: Mapping) -> str:
    """Make sure Graph still holds the mapping's subscription: create, renew or recreate it."""
    from sync_core.inbound import subscriptions

    record_ = svc.subscriptions.by_mailbox(mapping.mailbox)
    if record_ is None:
        subscriptions.create(svc, mapping)
        return "created"
    alive = record_.expires_at > datetime.now(UTC)
    if alive:
        try:
            svc.graph.request("GET", f"/subscriptions/{quote(record_.subscription_id, safe='')}")
        except GraphError as error:
            if error.status != 404:
                raise
            alive = False
    if not alive:
        subscriptions.recreate(svc, mapping)
        return "recreated"
    renewed = subscriptions.ensure(svc, mapping)
    return "renewed" if renewed.expires_at != record_.expires_at else "ok"
