"""Graph's change and lifecycle notifications (SPEC §3.1): each item's clientState checked
against its subscription, then a read of the mailbox queued. Nothing here calls Graph: Graph
wants an answer within 3 s, and ``sync_mailbox`` does the reading."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from sync_core.problems import PayloadTooLarge, ValidationFailed
from sync_core.store.queues import SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
# Notifications in one request. Graph batches a few per delivery; 256 KiB holds about 500 of
# its real ones, so only a forged request comes near this (and gets 413).
MAX_NOTIFICATIONS = 1000


def receive_notifications(svc: Services, body: Any) -> int:
    """A batch of change notifications (``{"value": [...]}``): queue a read of each mailbox
    that a checked item is about. How many mailboxes that is."""
    items = _notifications(body)
    versions: dict[str, list[tuple[str, str]] | None] = {}
    for item, mailbox in zip(items, _verified_mailboxes(svc, items, "notification"), strict=True):
        if mailbox is not None:
            seen = versions.setdefault(mailbox, [])
            version = _version(item)
            versions[mailbox] = None if seen is None or version is None else [*seen, version]
    for mailbox, changed in sorted(versions.items()):
        # A failure here propagates as a 5xx, so Graph delivers the batch again.
        svc.gate.queue_read(svc, mailbox, changed)
    return len(versions)


def _version(item: dict[str, Any]) -> tuple[str, str] | None:
    """The event id and changeKey a created or updated notification names (Outlook's
    ``resourceData`` carries both: ``id`` and ``@odata.etag``, ``W/"<changeKey>"``)."""
    data = item.get("resourceData")
    if item.get("changeType") not in ("created", "updated") or not isinstance(data, dict):
        return None
    event_id, etag = data.get("id"), data.get("@odata.etag")
    if not isinstance(event_id, str) or not isinstance(etag, str) or not event_id:
        return None
    key = etag.removeprefix("W/").strip('"')
    return (event_id, key) if key else None


def receive_lifecycle(svc: Services, body: Any) -> int:
    """A batch of lifecycle notifications: queue the reauthorization, recreation or resync each
    checked item asks for. How many messages were queued."""
    items = _notifications(body)
    mailboxes = _verified_mailboxes(svc, items, "lifecycle notification")
    # The same event for the same mailbox twice in one request is one message.
    wanted = dict.fromkeys(
        (mailbox, event)
        for item, mailbox in zip(items, mailboxes, strict=True)
        if mailbox is not None
        and (event := str(item.get("lifecycleEvent") or "")) in LIFECYCLE_EVENTS
    )
    for mailbox, event in wanted:
        svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "lifecycle": event, "full": True})
    return len(wanted)


def _notifications(body: Any) -> list[dict[str, Any]]:
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValidationFailed.single("value", "must be a list of notifications")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadTooLarge(
            f"the request has {len(items)} notifications; the limit is {MAX_NOTIFICATIONS}"
        )
    return items


def _matches(given: str, record: SubscriptionRecord) -> bool:
    return hmac.compare_digest(given.encode(), record.client_state.encode())


def _verified_mailboxes(svc: Services, items: list[dict[str, Any]], what: str) -> list[str | None]:
    """For each item, the mailbox it is about if its clientState matches the subscription's.

    Each distinct subscription id is looked up once (:meth:`.gate.NotificationGate.records`)
    and each distinct (id, clientState) pair checked once; what is dropped is one warning per
    request.
    """
    pairs = [
        (str(item.get("subscriptionId") or ""), str(item.get("clientState") or ""))
        for item in items
    ]
    records = svc.gate.records(svc, {sid for sid, _ in pairs if sid})
    verdicts: dict[tuple[str, str], str | None] = {}
    for subscription_id, given in dict.fromkeys(pairs):
        record = records.get(subscription_id)
        if record is not None and not _matches(given, record):
            record = svc.gate.record(svc, subscription_id, fresh=True)  # recreated meanwhile?
        verdicts[(subscription_id, given)] = (
            record.mailbox if record is not None and _matches(given, record) else None
        )
    mailboxes = [verdicts[pair] for pair in pairs]
    dropped = [sid for (sid, _), mailbox in zip(pairs, mailboxes, strict=True) if mailbox is None]
    if dropped:
        log.warning(
            "dropped %d %s(s) for %d subscription(s) (unknown, or wrong clientState), e.g. %r",
            len(dropped),
            what,
            len(set(dropped)),
            dropped[0][:64],
        )
    return mailboxes
