"""Graph subscriptions: one per active mapping, created, renewed, recreated and removed.

Renewal walks every active mapping: a missing subscription is created, one with less than half
its lifetime left is renewed (in ``$batch`` requests of 20), one Graph no longer knows (404) is
created again, and subscriptions of mappings that are gone or deactivated are deleted.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sync_core.graph import BatchRequest, GraphError
from sync_core.graph.client import parse_graph_timestamp
from sync_core.store.mappings import Mapping
from sync_core.store.queues import SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"
ORPHAN_GRACE = timedelta(minutes=10)  # a create still unrecorded after this has failed midway


@dataclass
class RenewalReport:
    created: int = 0
    renewed: int = 0
    recreated: int = 0
    deleted: int = 0
    failed: int = 0
    unchanged: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _lifetime(svc: Services) -> timedelta:
    return timedelta(minutes=svc.settings.subscription_lifetime_minutes)


def create(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """A new subscription for the mapping's mailbox (Graph first checks both URLs answer)."""
    client_state = secrets.token_urlsafe(32)
    # Written first: if this worker dies after Graph created the subscription but before the
    # record below is saved, the next renewal pass knows to look for the orphan.
    svc.subscriptions.intend(mapping.mailbox)
    created = svc.graph.create_subscription(
        resource=f"users/{mapping.mailbox}/events",
        change_type=CHANGE_TYPES,
        notification_url=svc.settings.notification_url,
        lifecycle_url=svc.settings.lifecycle_url,
        expiration=_now() + _lifetime(svc),
        client_state=client_state,
    )
    record = SubscriptionRecord(
        mailbox=mapping.mailbox,
        resource_id=mapping.resource_id,
        subscription_id=str(created["id"]),
        client_state=client_state,
        expires_at=parse_graph_timestamp(created.get("expirationDateTime"))
        or _now() + _lifetime(svc),
    )
    svc.subscriptions.save(record)
    svc.subscriptions.fulfilled(mapping.mailbox)
    return record


def ensure(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """Make sure the mapping's mailbox has a live subscription; renew or recreate as needed."""
    record = svc.subscriptions.by_mailbox(mapping.mailbox)
    if record is None:
        return create(svc, mapping)
    if record.expires_at - _now() > _lifetime(svc) / 2:
        return record
    try:
        answer = svc.graph.renew_subscription(record.subscription_id, _now() + _lifetime(svc))
    except GraphError as error:
        if error.status != 404:
            raise
        svc.subscriptions.delete(record)
        return create(svc, mapping)
    renewed = replace(
        record,
        expires_at=parse_graph_timestamp(answer.get("expirationDateTime"))
        or _now() + _lifetime(svc),
    )
    svc.subscriptions.save(renewed)
    return renewed


def recreate(svc: Services, mapping: Mapping) -> SubscriptionRecord:
    """After ``subscriptionRemoved``: forget the old one and create a new one."""
    old = svc.subscriptions.by_mailbox(mapping.mailbox)
    if old is not None:
        svc.subscriptions.delete(old)
        try:
            svc.graph.delete_subscription(old.subscription_id)
        except GraphError:
            log.info("old subscription %s was already gone", old.subscription_id)
    return create(svc, mapping)


def reauthorize(svc: Services, mapping: Mapping) -> None:
    """After ``reauthorizationRequired``: reauthorize, or recreate if Graph lost it."""
    record = svc.subscriptions.by_mailbox(mapping.mailbox)
    if record is None:
        create(svc, mapping)
        return
    try:
        svc.graph.reauthorize_subscription(record.subscription_id)
    except GraphError as error:
        if error.status != 404:
            raise
        recreate(svc, mapping)


def remove(svc: Services, mailbox: str) -> bool:
    """Stop notifications for a mailbox (mapping deactivated or deleted)."""
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
    active = {m.mailbox: m for m in mappings}
    records = {r.mailbox: r for r in stored}
    kept: list[SubscriptionRecord] = []  # rows not renewed by this pass

    for mailbox, record in records.items():
        if mailbox not in active:  # mapping gone or deactivated
            try:
                remove(svc, mailbox)
                report.deleted += 1
            except GraphError as error:
                log.warning("could not delete subscription for %s: %s", mailbox, error)
                report.failed += 1
                kept.append(record)

    live = [r for m, r in records.items() if m in active]
    threshold = _now() + _lifetime(svc) / 2
    due = [r for r in live if r.expires_at <= threshold]
    mark = svc.subscriptions.last_mark()
    together = bool(due) and (mark is None or mark.until <= threshold)
    if together:
        due_ids = {r.subscription_id for r in due}
        kept.extend(r for r in live if r.subscription_id not in due_ids)
        due = live
    report.unchanged = len(live) - len(due)
    expiration = _now() + _lifetime(svc)
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
            expires = parse_graph_timestamp(body.get("expirationDateTime")) or expiration
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
    if svc.subscriptions.unfinished(older_than=ORPHAN_GRACE):
        # Only after a create that never recorded its result: list what Graph holds for us.
        report.deleted += _delete_unknown(svc, {r.subscription_id for r in svc.subscriptions.all()})
        svc.subscriptions.clear_unfinished(older_than=ORPHAN_GRACE)
    log.info("subscription renewal: %s", report)
    return report


def _delete_unknown(svc: Services, known: set[str]) -> int:
    """Subscriptions Graph holds for our URL that no record knows (a crash after creating one)."""
    deleted = 0
    try:
        for sub in list(svc.graph.subscriptions()):
            if (
                sub.get("notificationUrl") == svc.settings.notification_url
                and sub["id"] not in known
            ):
                svc.graph.delete_subscription(str(sub["id"]))
                deleted += 1
    except GraphError as error:
        log.warning("could not list subscriptions to find orphans: %s", error)
    return deleted


def _queue_full_sync(svc: Services, mailbox: str) -> None:
    svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "full": True})


def _record_failure(svc: Services, mapping: Mapping, error: GraphError) -> None:
    log.warning("subscription for %s failed: %s", mapping.mailbox, error)
    svc.health.failure(mapping.resource_id, error.to_json())
