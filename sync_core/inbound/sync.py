"""Microsoft 365 → platform: per-mailbox delta reads, blockers out.

``sync_mailbox`` runs for each queued read (from a notification, a lifecycle event, a resync or
the safety sweep): one worker per mailbox at a time (a lease on the mailbox's cursor), a
calendarView delta read from the stored link, the decisions of ``sync_core.domain.inbound``,
and ``blocker.upserted`` / ``blocker.deleted`` through ``deliver``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sync_core.clock import iso, now, parse_iso, sync_window
from sync_core.domain.inbound import (
    View,
    blocker_id,
    missing_projections,
    plan_full_round,
    plan_views,
    to_blocker,
)
from sync_core.graph import DeltaPage, DeltaReset, GraphError
from sync_core.inbound import subscriptions
from sync_core.platform import retry_delay
from sync_core.store.mappings import Mapping
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

LEASE_BUSY_DELAY = 2  # seconds before a sync that found the mailbox busy tries again
MAX_HORIZON_WAIT = 1.0  # seconds a queued read waits at most for its window's end


def _mappings_for(svc: Services, mailbox: str) -> list[Mapping]:
    """The enabled mappings of the mailbox (several resources may share it), in a fixed order."""
    return sorted(
        (m for m in svc.mappings.by_mailbox(mailbox) if m.enabled), key=lambda m: m.resource_id
    )


def sync_mailbox(svc: Services, message: dict[str, Any]) -> None:
    """Read what changed in one mailbox and bring the platform's blockers in line.

    One worker reads a mailbox at a time, across instances (a lease on its cursor). A
    notification that arrives while another worker reads asks it to read once more when done
    (``ask_again``) instead of waiting: every notification is covered by a read that starts
    after it arrived, and a burst costs at most two reads, the one running and one after.
    """
    mailbox = str(message["mailbox"]).lower()
    mappings = _mappings_for(svc, mailbox)
    if not mappings:
        return  # unmapped or deactivated: nothing to sync
    # The subscription belongs to the mailbox; any mapping that reads it stands for it.
    reader = next((m for m in mappings if m.reads_outlook), None)
    requested = parse_iso(message.get("requested"))
    full = bool(message.get("full"))
    if not full and _only_own_writes(svc, mailbox, message.get("changed")):
        return  # the echo of this service's own create or update: nothing to read
    cursor = svc.cursors.get(mailbox)
    if (
        requested is not None
        and not full
        and cursor.round_started_at is not None
        and cursor.round_started_at >= requested
    ):
        return  # a read that began after this notification already covered it
    if requested is not None and requested > now():
        # Queued for the end of a burst's window (at most NotificationGate.WINDOW away).
        time.sleep(min(MAX_HORIZON_WAIT, (requested - now()).total_seconds()))
    leased = svc.cursors.acquire(mailbox, current=cursor)
    if leased is None and not full:
        if svc.cursors.ask_again(mailbox, requested):
            # The reader reads once more when done. Should it die first, its own message comes
            # back (the queue's processing timeout) and reads after the lease lapsed.
            return
        leased = svc.cursors.acquire(mailbox)  # the lease ended meanwhile
    if leased is None:
        svc.queues.send(SYNC_MAILBOX, message, delay_seconds=LEASE_BUSY_DELAY)
        return
    lifecycle = message.get("lifecycle")
    counts: dict[str, dict[str, int]] = {}  # resource id → what happened → how often
    while leased is not None:
        started = now()
        try:
            if reader is not None and lifecycle == "reauthorizationRequired":
                subscriptions.reauthorize(svc, reader)
            elif reader is not None and lifecycle == "subscriptionRemoved":
                subscriptions.recreate(svc, reader)
            window = sync_window(started.date(), svc.settings.sync_window_days)
            fresh = full or leased.delta_link is None or leased.window_start != window[0]
            found, delta_link = _read(
                svc, mailbox, mappings, window, None if fresh else leased.delta_link
            )
        except GraphError as error:
            svc.cursors.release(leased)
            _sync_failed(svc, mailbox, mappings, message, error)
            return
        except BaseException:
            svc.cursors.release(leased)
            raise
        for resource_id, done in found.items():
            total = counts.setdefault(resource_id, {})
            for what, n in done.items():
                total[what] = total.get(what, 0) + n
        lifecycle, full = None, False
        leased = svc.cursors.release(
            leased,
            read_on=True,
            delta_link=delta_link,
            window_start=window[0],
            round_started_at=started,
            last_success=now(),
        )
    for mapping in mappings:
        svc.health.success(mapping.resource_id)
        done = counts.get(mapping.resource_id, {})
        if any(done.values()):
            detail = ", ".join(f"{n} {what}" for what, n in done.items() if n)
            svc.history.add(mapping.resource_id, "mailbox.sync", mailbox, "ok", detail)


def _only_own_writes(svc: Services, mailbox: str, changed: Any) -> bool:
    """Whether every notified change is this service's own last write to one of its events:
    the event id is in the projection index with the changeKey Graph answered that write.
    A person's edit gets a new changeKey, and a read then follows."""
    if not isinstance(changed, list) or not changed:
        return False
    own = svc.links.projections(mailbox)
    return all(
        isinstance(pair, list)
        and len(pair) == 2
        and (written := own.get(str(pair[0]))) is not None
        and written.change_key == pair[1]
        for pair in changed
    )


Counts = dict[str, dict[str, int]]  # resource id → what happened → how often


def _read(
    svc: Services,
    mailbox: str,
    mappings: list[Mapping],
    window: tuple[datetime, datetime],
    link: str | None,
) -> tuple[Counts, str | None]:
    """One delta round (or its continuation); a lost delta token restarts it with a full read."""
    try:
        return _apply_round(svc, mailbox, mappings, window, link)
    except DeltaReset:
        if link is None:
            raise
        log.info("delta token of %s expired; reading the window again", mailbox)
        return _apply_round(svc, mailbox, mappings, window, None)


def _apply_round(
    svc: Services,
    mailbox: str,
    mappings: list[Mapping],
    window: tuple[datetime, datetime],
    link: str | None,
) -> tuple[Counts, str | None]:
    """Read the mailbox once; each resource that reads it gets its own blockers (its privacy,
    its filters), and the bookings of any of them whose event a person changed are restored."""
    views = [View(m.resource_id, m.privacy, m.filters) for m in mappings if m.reads_outlook]
    digests: dict[str, dict[str, str]] = {v.resource_id: {} for v in views}
    sent: dict[str, dict[str, int]] = {v.resource_id: {} for v in views}  # last sequences
    for stored in svc.blockers.in_mailbox(mailbox):
        if stored.resource_id in digests:
            digests[stored.resource_id][stored.id] = stored.content_hash
            sent[stored.resource_id][stored.id] = stored.sequence
    # What this service had written before the read: only a full read needs it (to find
    # projections that are gone); each page reads the index again anyway.
    projections = svc.links.projections(mailbox) if link is None else {}
    counts: Counts = {m.resource_id: {} for m in mappings}
    seen: dict[str, set[str]] = {v.resource_id: set() for v in views}  # what a full read found
    shown: set[str] = set()  # event ids a full read found
    drifted: set[str] = set()
    pages = (
        svc.graph.calendar_delta(mailbox, start=window[0], end=window[1])
        if link is None
        else svc.graph.calendar_delta(mailbox, link=link)
    )
    last: DeltaPage | None = None
    for page in pages:
        last = page
        # Read again after the page: the service indexes a create before asking Graph for it, so
        # an event this page shows that a concurrent apply created is known as ours here (the
        # snapshot taken before the read would not know it and send it as a blocker).
        plans, page_drifted = plan_views(
            mailbox=mailbox,
            views=views,
            items=page.items,
            stored=digests,
            projections=svc.links.projections(mailbox),
            window=window,
        )
        for resource_id, plan in plans.items():
            done = counts[resource_id]
            for blocker in plan.upserts:
                # Queued before it is recorded as sent: a worker that dies in between leaves
                # the digest unchanged, and the redelivered read (the delta link is stored only
                # once the round is complete) sends it again.
                sequence = svc.platform.emit(
                    "blocker.upserted",
                    resource_id,
                    blocker.to_json(),
                    after=sent[resource_id].get(blocker.id, 0),
                )
                svc.blockers.put(replace(blocker, sequence=sequence))
                digests[resource_id][blocker.id] = blocker.content_hash
                sent[resource_id][blocker.id] = sequence
                done["upserted"] = done.get("upserted", 0) + 1
            for bid in plan.deletes:
                _delete(svc, mailbox, resource_id, bid, digests, sent)
                done["deleted"] = done.get("deleted", 0) + 1
        drifted.update(page_drifted)
        if link is None:  # a full read: remember everything Outlook still shows
            shown.update(str(e["id"]) for e in page.changed)
            for view in views:
                seen[view.resource_id].update(
                    blocker_id(mailbox, str(e["id"]))
                    for e in page.changed
                    if to_blocker(mailbox, e, view.privacy, view.resource_id, view.filters)
                    is not None
                )
    if link is None:
        # Only after the whole window was read without error: what is gone is really gone.
        for view in views:
            resource_id = view.resource_id
            for bid in plan_full_round(seen=seen[resource_id], stored=digests[resource_id]):
                _delete(svc, mailbox, resource_id, bid, digests, sent)
                done = counts[resource_id]
                done["deleted"] = done.get("deleted", 0) + 1
        drifted.update(missing_projections(projections, shown, window))
    for booking_id in sorted(drifted):
        svc.queues.send(APPLY_BOOKING, {"booking_id": booking_id, "attempt": 1, "repair": True})
    if drifted:
        for mapping in mappings:
            if mapping.writes_outlook:
                counts[mapping.resource_id]["restored"] = len(drifted)
    return counts, (last.delta_link if last else link)


def _delete(
    svc: Services,
    mailbox: str,
    resource_id: str,
    bid: str,
    digests: dict[str, dict[str, str]],
    sent: dict[str, dict[str, int]],
) -> None:
    # Queued before the mirror forgets it, as for upserts: a redelivery deletes it again.
    svc.platform.emit(
        "blocker.deleted", resource_id, {"id": bid}, after=sent[resource_id].get(bid, 0)
    )
    svc.blockers.delete(mailbox, resource_id, bid)
    digests[resource_id].pop(bid, None)


def _sync_failed(
    svc: Services,
    mailbox: str,
    mappings: list[Mapping],
    message: dict[str, Any],
    error: GraphError,
) -> None:
    attempt = int(message.get("attempt", 1))
    if error.retryable and attempt < svc.settings.retry_attempts:
        delay = max(
            int(error.retry_after or 0), retry_delay(svc.settings.retry_base_seconds, attempt)
        )
        svc.queues.send(SYNC_MAILBOX, {**message, "attempt": attempt + 1}, delay_seconds=delay)
        return
    reader = next((m for m in mappings if m.reads_outlook), None)
    if message.get("lifecycle") and reader is not None:
        # The subscription was to be restored (reauthorized or made anew) and could not be.
        subscriptions.lost(svc, reader, error)
    for mapping in mappings:
        svc.health.failure(mapping.resource_id, error.to_json())
        svc.history.add(
            mapping.resource_id, "mailbox.sync", mailbox, "failed", error.message, error.to_json()
        )


def safety_sweep(svc: Services) -> int:
    """The ``safety_sweep`` timer: queue a sync of every mailbox with an active mapping (lost
    notifications; for mappings that only write, the read that finds edited events)."""
    mailboxes = sorted({m.mailbox for m in svc.mappings.all(enabled_only=True)})
    for mailbox in mailboxes:
        requested = iso(now(), "microseconds")
        svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "requested": requested})
    return len(mailboxes)
