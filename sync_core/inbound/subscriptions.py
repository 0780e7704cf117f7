"""Graph subscriptions: one per active mapping, created, renewed, recreated and removed.

Renewal walks every active mapping: a missing subscription is created, one with less than half
its lifetime left is renewed (in ``$batch`` requests of 20), one Graph no longer knows (404) is
created again, and subscriptions of mappings that are gone or deactivated are deleted. Once a day,
after a removal, or after a create that never recorded its result, the pass also lists what Graph
holds for this app's notification URL and deletes every subscription no enabled mapping owns:
those of unmapped mailboxes and duplicates beside a mailbox's recorded one.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sync_core.clock import now, parse_iso
from sync_core.graph import BatchRequest, GraphError
from sync_core.store.mappings import Mapping
from sync_core.store.queues import SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"
ORPHAN_GRACE = timedelta(minutes=10)  # a create still unrecorded after this has failed midway
SWEEP_INTERVAL = timedelta(days=1)  # how often a pass lists Graph's subscriptions unasked
SETTLE = timedelta(minutes=1)  # a by-id row this young may belong to a create still recording
# How long a create waits for another worker's create of the same mailbox (Graph's validation
# request to both URLs must be answered within 10 seconds each).
CREATE_WAIT = timedelta(seconds=25)
_EVENTS_RESOURCE = re.compile(r"^/?users/([^/]+)/events$", re.IGNORECASE)


@dataclass
class RenewalReport:
    created: int = 0
    renewed: int = 0
    recreated: int = 0
    deleted: int = 0
    failed: int = 0
    unchanged: int = 0


def _lifetime(svc: Services) -> timedelta:
    return timedelta(minutes=svc.settings.subscription_lifetime_minutes)


def create(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """A new subscription for the mapping's mailbox (Graph first checks both URLs answer).
    Should another worker be creating it right now, its record is waited for instead."""
    # Written first: if this worker dies after Graph created the subscription but before the
    # record below is saved, the next renewal pass knows to look for the orphan.
    if not svc.subscriptions.claim_create(mapping.mailbox, CREATE_WAIT):
        deadline = time.monotonic() + CREATE_WAIT.total_seconds()
        while time.monotonic() < deadline:
            record = svc.subscriptions.by_mailbox(mapping.mailbox)
            if record is not None:
                return record
            time.sleep(0.25)
        svc.subscriptions.intend(mapping.mailbox)  # it did not finish: make one (swept later)
    client_state = secrets.token_urlsafe(32)
    created = svc.graph.create_subscription(
        resource=f"users/{mapping.mailbox}/events",
        change_type=CHANGE_TYPES,
        notification_url=svc.settings.notification_url,
        lifecycle_url=svc.settings.lifecycle_url,
        expiration=now() + _lifetime(svc),
        client_state=client_state,
    )
    record = SubscriptionRecord(
        mailbox=mapping.mailbox,
        resource_id=mapping.resource_id,
        subscription_id=str(created["id"]),
        client_state=client_state,
        expires_at=parse_iso(created.get("expirationDateTime")) or now() + _lifetime(svc),
    )
    svc.subscriptions.save(record)
    svc.subscriptions.fulfilled(mapping.mailbox)
    _restored(svc, mapping.mailbox)
    return record


def ensure(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """Make sure the mapping's mailbox has a live subscription; renew or recreate as needed."""
    record = svc.subscriptions.by_mailbox(mapping.mailbox)
    if record is None:
        return create(svc, mapping)
    if record.expires_at - now() > _lifetime(svc) / 2:
        return record
    try:
        answer = svc.graph.renew_subscription(record.subscription_id, now() + _lifetime(svc))
    except GraphError as error:
        if error.status != 404:
            raise
        svc.subscriptions.delete(record)
        return create(svc, mapping)
    renewed = replace(
        record,
        expires_at=parse_iso(answer.get("expirationDateTime")) or now() + _lifetime(svc),
    )
    svc.subscriptions.save(renewed)
    _restored(svc, mapping.mailbox)
    return renewed


def recreate(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """After ``subscriptionRemoved``: forget the old one and create a new one. A failure that
    retrying will not mend marks the mailbox's change feed lost (``subscription.lost``)."""
    try:
        old = svc.subscriptions.by_mailbox(mapping.mailbox)
        if old is not None:
            svc.subscriptions.delete(old)
            try:
                svc.graph.delete_subscription(old.subscription_id)
            except GraphError:
                log.info("old subscription %s was already gone", old.subscription_id)
        return create(svc, mapping)
    except GraphError as error:
        if not error.retryable:
            lost(svc, mapping, error)
        raise


def reauthorize(svc: Services, mapping: Mapping) -> None:
    """After ``reauthorizationRequired``: reauthorize, or recreate if Graph lost it. A failure
    that retrying will not mend marks the mailbox's change feed lost (``subscription.lost``)."""
    record = svc.subscriptions.by_mailbox(mapping.mailbox)
    try:
        if record is None:
            create(svc, mapping)
            return
        try:
            svc.graph.reauthorize_subscription(record.subscription_id)
        except GraphError as error:
            if error.status != 404:
                raise
            recreate(svc, mapping)
            return
    except GraphError as error:
        if not error.retryable:
            lost(svc, mapping, error)
        raise
    _restored(svc, mapping.mailbox)


def lost(svc: Services, mapping: Mapping, error: GraphError) -> None:
    """The mailbox's change feed could not be restored: every enabled mapping that reads it is
    marked, and the platform gets ``subscription.lost`` once per mapping until a subscription
    is created or renewed again. (A lifecycle event's read that gives up after its retries
    calls this too.)"""
    log.warning("change feed of %s lost: %s", mapping.mailbox, error)
    for resource_id in _readers(svc, mapping):
        svc.health.lost(resource_id, error.to_json())


def _readers(svc: Services, mapping: Mapping) -> list[str]:
    """The resources whose blockers come from the mapping's mailbox (at least its own)."""
    found = {
        m.resource_id
        for m in svc.mappings.by_mailbox(mapping.mailbox)
        if m.enabled and m.reads_outlook
    }
    return sorted(found | {mapping.resource_id})


def _restored(svc: Services, mailbox: str, marked: set[str] | None = None) -> None:
    """The mailbox has a live subscription: clear the lost mark of the mappings that read it
    (of those in ``marked`` only, when the caller already knows which are marked)."""
    for m in svc.mappings.by_mailbox(mailbox):
        if marked is None or m.resource_id in marked:
            svc.health.restored(m.resource_id)


def remove(svc: Services, mailbox: str, *, ask_sweep: bool = True) -> bool:
    """Stop notifications for a mailbox (mapping deactivated, deleted, moved away or only writing
    now), unless an enabled mapping that reads the mailbox names it (another resource shares
    the mailbox and uses the subscription). Asks the next renewal pass to sweep, for
    duplicates a concurrent create made.
    """
    if any(m.enabled and m.reads_outlook for m in svc.mappings.by_mailbox(mailbox)):
        return False
    if ask_sweep:
        svc.subscriptions.request_sweep()
    record = svc.subscriptions.by_mailbox(mailbox)
    if record is None:
        return False
    try:
        svc.graph.delete_subscription(record.subscription_id)
    finally:
        svc.subscriptions.delete(record)
    return True


def renew_all(svc: Services) -> RenewalReport:
    """The ``renew_subscriptions`` timer: one pass over every mapping and subscription.

    When the last all-at-once renewal is due (or there was none), every live subscription is
    renewed together and one :class:`RenewalMark` records it, instead of a row per
    subscription; otherwise only the few due ones (new since, or failed last time) are.
    """
    report = RenewalReport()
    mappings, stored = svc.both(
        lambda: list(svc.mappings.all(enabled_only=True)), svc.subscriptions.all
    )
    # One subscription per mailbox that an enabled mapping reads (resources may share one).
    active = {
        m.mailbox: m for m in sorted(mappings, key=lambda m: m.resource_id) if m.reads_outlook
    }
    records = {r.mailbox: r for r in stored}
    kept: list[SubscriptionRecord] = []  # rows not renewed by this pass

    for mailbox, record in records.items():
        if mailbox not in active:  # mapping gone or deactivated
            try:
                if remove(svc, mailbox):
                    report.deleted += 1
                elif (current := svc.subscriptions.by_mailbox(mailbox)) is not None:
                    kept.append(current)  # mapped again since the pass began: not renewed now
            except GraphError as error:
                log.warning("could not delete subscription for %s: %s", mailbox, error)
                report.failed += 1
                kept.append(record)

    live = [r for m, r in records.items() if m in active]
    threshold = now() + _lifetime(svc) / 2
    due = [r for r in live if r.expires_at <= threshold]
    mark = svc.subscriptions.last_mark()
    together = bool(due) and (mark is None or mark.until <= threshold)
    if together:
        due_ids = {r.subscription_id for r in due}
        kept.extend(r for r in live if r.subscription_id not in due_ids)
        due = live
    report.unchanged = len(live) - len(due)
    expiration = now() + _lifetime(svc)
    answers = svc.graph.batch(
        [
            BatchRequest(
                str(i),
                "PATCH",
                f"/subscriptions/{r.subscription_id}",
                body={"expirationDateTime": expiration.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )
            for i, r in enumerate(due)
        ]
    )
    by_id = {a.id: a for a in answers}
    renewed: list[SubscriptionRecord] = []
    for i, record in enumerate(due):
        answer = by_id.get(str(i))
        if answer is not None and answer.error is None:
            body = answer.body if isinstance(answer.body, dict) else {}
            expires = parse_iso(body.get("expirationDateTime")) or expiration
            renewed.append(replace(record, expires_at=expires))
            report.renewed += 1
            continue
        if answer is not None and answer.status == 404:
            try:
                recreate(svc, active[record.mailbox])
                _queue_full_sync(svc, record.mailbox)
                report.recreated += 1
            except GraphError as error:
                _record_failure(svc, active[record.mailbox], error)
                report.failed += 1
            continue
        report.failed += 1
        kept.append(record)
    if together and renewed:
        until = min(r.expires_at for r in renewed)  # Graph may shorten some; never overstate
        svc.subscriptions.renewed_together(renewed, kept, until)
    else:
        svc.subscriptions.save_many(renewed, renewed_only=True)
    if renewed and (marked := svc.health.lost_ones()):
        # Renewed fine: a feed marked lost (a reauthorization refused) is back.
        back = {r.mailbox for r in renewed}
        for mailbox in sorted({m.mailbox for m in mappings if m.resource_id in marked} & back):
            _restored(svc, mailbox, marked)

    for mailbox, mapping in active.items():
        if mailbox in records:
            continue
        try:
            create(svc, mapping)
            _queue_full_sync(svc, mailbox)
            report.created += 1
        except GraphError as error:
            _record_failure(svc, mapping, error)
            report.failed += 1
    if svc.subscriptions.unfinished(older_than=ORPHAN_GRACE) or svc.subscriptions.sweep_due(
        SWEEP_INTERVAL
    ):
        deleted, failed = sweep(svc)
        report.deleted += deleted
        report.failed += failed
    log.info("subscription renewal: %s", report)
    return report


@dataclass(frozen=True)
class Unowned:
    """A subscription Graph holds for this app that no enabled mapping owns."""

    subscription_id: str
    mailbox: str
    reason: str  # "no enabled mapping" or "duplicate" (the mailbox's recorded one is another)
    recorded: bool  # it is the mailbox's recorded subscription

    def describe(self) -> str:
        return f"{self.subscription_id} ({self.mailbox}: {self.reason})"


def mailbox_of(subscription: dict[str, Any]) -> str | None:
    """The mailbox of a ``users/{mailbox}/events`` subscription, None for any other resource."""
    match = _EVENTS_RESOURCE.match(str(subscription.get("resource") or ""))
    return unquote(match.group(1)).lower() if match else None


def ours(svc: Services, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listed subscriptions that notify this deployment about a mailbox's events."""
    url = svc.settings.notification_url
    return [s for s in listed if s.get("notificationUrl") == url and mailbox_of(s) is not None]


def unowned(svc: Services, listed: list[dict[str, Any]]) -> list[Unowned]:
    """Of ``listed`` (read from Graph before this call), the subscriptions of this deployment no
    enabled mapping owns. Left out, as possibly a create in flight: those of a mailbox whose
    create started less than :data:`ORPHAN_GRACE` ago, and those recorded less than
    :data:`SETTLE` ago."""
    mapped = {m.mailbox for m in svc.mappings.all(enabled_only=True) if m.reads_outlook}
    recorded = {r.mailbox: r.subscription_id for r in svc.subscriptions.all()}
    intents = svc.subscriptions.intents()
    moment = now()
    found: list[Unowned] = []
    for sub in ours(svc, listed):
        mailbox, sub_id = mailbox_of(sub), str(sub.get("id") or "")
        if mailbox is None or not sub_id:
            continue
        is_recorded = recorded.get(mailbox) == sub_id
        if mailbox in mapped and is_recorded:
            continue
        started = intents.get(mailbox)
        if started is not None and moment - started < ORPHAN_GRACE:
            continue
        row = None if is_recorded else svc.subscriptions.by_id(sub_id)
        if row is not None and row.written_at is not None and moment - row.written_at < SETTLE:
            continue
        reason = "duplicate" if mailbox in mapped else "no enabled mapping"
        found.append(Unowned(sub_id, mailbox, reason, is_recorded))
    return found


def sweep(svc: Services) -> tuple[int, int]:
    """List Graph's subscriptions for this app and delete those no enabled mapping owns, with
    their records. Returns (deleted, failed); the sweep counts as done only without failures."""
    started = now()
    try:
        listed = list(svc.graph.subscriptions())
    except GraphError as error:
        log.warning("could not list subscriptions to find orphans: %s", error)
        return 0, 1
    deleted = failed = 0
    for found in unowned(svc, listed):
        try:
            if found.recorded:  # the record goes too, unless a mapping took the mailbox since
                deleted += remove(svc, found.mailbox, ask_sweep=False)
                continue
            svc.graph.delete_subscription(found.subscription_id)
            svc.subscriptions.forget_id(found.subscription_id)
            deleted += 1
        except GraphError as error:
            log.warning("could not delete subscription %s: %s", found.describe(), error)
            failed += 1
    svc.subscriptions.clear_unfinished(older_than=ORPHAN_GRACE)
    if not failed:
        svc.subscriptions.swept(started)
    return deleted, failed


def _queue_full_sync(svc: Services, mailbox: str) -> None:
    svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "full": True})


def _record_failure(svc: Services, mapping: Mapping, error: GraphError) -> None:
    log.warning("subscription for %s failed: %s", mapping.mailbox, error)
    for resource_id in _readers(svc, mapping):
        svc.health.failure(resource_id, error.to_json())
    lost(svc, mapping, error)
