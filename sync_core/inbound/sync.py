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
    blocker_id,
    missing_projections,
    plan_full_round,
    plan_page,
    to_blocker,
)
from sync_core.graph import DeltaPage, DeltaReset, GraphError
from sync_core.inbound import subscriptions
from sync_core.platform import retry_delay
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

LEASE_BUSY_DELAY = 2  # seconds before a sync that found the mailbox busy tries again
MAX_HORIZON_WAIT = 1.0  # seconds a queued read waits at most for its window's end


def _mapping_for(svc: Services, mailbox: str) -> Mapping | None:
    return next((m for m in svc.mappings.by_mailbox(mailbox) if m.enabled), None)


def sync_mailbox(svc: Services, message: dict[str, Any]) -> None:
    """Read what changed in one mailbox and bring the platform's blockers in line.

    One worker reads a mailbox at a time, across instances (a lease on its cursor). A
    notification that arrives while another worker reads asks it to read once more when done
    (``ask_again``) instead of waiting: every notification is covered by a read that starts
    after it arrived, and a burst costs at most two reads, the one running and one after.
    """
    mailbox = str(message["mailbox"]).lower()
    mapping = _mapping_for(svc, mailbox)
    if mapping is None:
        return  # unmapped or deactivated: nothing to sync
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
    counts: dict[str, int] = {}
    while leased is not None:
        started = now()
        try:
            if lifecycle == "reauthorizationRequired":
                subscriptions.reauthorize(svc, mapping)
            elif lifecycle == "subscriptionRemoved":
                subscriptions.recreate(svc, mapping)
            window = sync_window(started.date(), svc.settings.sync_window_days)
            fresh = full or leased.delta_link is None or leased.window_start != window[0]
            found, delta_link = _read(svc, mapping, window, None if fresh else leased.delta_link)
        except GraphError as error:
            svc.cursors.release(leased)
            _sync_failed(svc, mapping, message, error)
            return
        except BaseException:
            svc.cursors.release(leased)
            raise
        for what, n in found.items():
            counts[what] = counts.get(what, 0) + n
        lifecycle, full = None, False
        leased = svc.cursors.release(
            leased,
            read_on=True,
            delta_link=delta_link,
            window_start=window[0],
            round_started_at=started,
            last_success=now(),
        )
    svc.health.success(mapping.resource_id)
    if any(counts.values()):
        svc.history.record(
            HistoryEntry(
                at=now(),
                resource_id=mapping.resource_id,
                action="mailbox.sync",
                subject=mailbox,
                outcome="ok",
                detail=", ".join(f"{n} {what}" for what, n in counts.items() if n),
            )
        )


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


def _read(
    svc: Services, mapping: Mapping, window: tuple[datetime, datetime], link: str | None
) -> tuple[dict[str, int], str | None]:
    """One delta round (or its continuation); a lost delta token restarts it with a full read."""
    try:
        return _apply_round(svc, mapping, window, link)
    except DeltaReset:
        if link is None:
            raise
        log.info("delta token of %s expired; reading the window again", mapping.mailbox)
        return _apply_round(svc, mapping, window, None)


def _apply_round(
    svc: Services, mapping: Mapping, window: tuple[datetime, datetime], link: str | None
) -> tuple[dict[str, int], str | None]:
    mailbox = mapping.mailbox
    stored = svc.blockers.for_mailbox(mailbox)
    digests = {bid: b.content_hash for bid, b in stored.items()}
    sent = {bid: b.sequence for bid, b in stored.items()}  # each blocker's last sequence
    # What this service had written before the read: only a full read needs it (to find
    # projections that are gone); each page reads the index again anyway.
    projections = svc.links.projections(mailbox) if link is None else {}
    counts = {"upserted": 0, "deleted": 0, "restored": 0}
    seen: set[str] = set()  # blocker ids a full read found
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
        plan = plan_page(
            mailbox=mailbox,
            resource_id=mapping.resource_id,
            privacy=mapping.privacy,
            items=page.items,
            stored=digests,
            projections=svc.links.projections(mailbox),
            window=window,
        )
        for blocker in plan.upserts:
            # Queued before it is recorded as sent: a worker that dies in between leaves the
            # digest unchanged, and the redelivered read (the delta link is stored only once the
            # round is complete) sends it again.
            sequence = svc.platform.emit(
                "blocker.upserted",
                blocker.resource_id,
                blocker.to_json(),
                after=sent.get(blocker.id, 0),
            )
            svc.blockers.put(replace(blocker, sequence=sequence))
            digests[blocker.id] = blocker.content_hash
            sent[blocker.id] = sequence
            counts["upserted"] += 1
        for bid in plan.deletes:
            _delete(svc, mapping, bid, digests, sent)
            counts["deleted"] += 1
        drifted.update(plan.drifted)
        if link is None:  # a full read: remember everything Outlook still shows
            shown.update(str(e["id"]) for e in page.changed)
            seen.update(
                blocker_id(mailbox, str(e["id"]))
                for e in page.changed
                if to_blocker(mailbox, e, mapping.privacy, mapping.resource_id) is not None
            )
    if link is None:
        # Only after the whole window was read without error: what is gone is really gone.
        for bid in plan_full_round(seen=seen, stored=digests):
            _delete(svc, mapping, bid, digests, sent)
            counts["deleted"] += 1
        drifted.update(missing_projections(projections, shown, window))
    for booking_id in sorted(drifted):
        svc.queues.send(APPLY_BOOKING, {"booking_id": booking_id, "attempt": 1, "repair": True})
        counts["restored"] += 1
    return counts, (last.delta_link if last else link)


def _delete(
    svc: Services, mapping: Mapping, bid: str, digests: dict[str, str], sent: dict[str, int]
) -> None:
    # Queued before the mirror forgets it, as for upserts: a redelivery deletes it again.
    svc.platform.emit("blocker.deleted", mapping.resource_id, {"id": bid}, after=sent.get(bid, 0))
    svc.blockers.delete(mapping.mailbox, bid)
    digests.pop(bid, None)


def _sync_failed(
    svc: Services, mapping: Mapping, message: dict[str, Any], error: GraphError
) -> None:
    attempt = int(message.get("attempt", 1))
    if error.retryable and attempt < svc.settings.retry_attempts:
        delay = max(
            int(error.retry_after or 0), retry_delay(svc.settings.retry_base_seconds, attempt)
        )
        svc.queues.send(SYNC_MAILBOX, {**message, "attempt": attempt + 1}, delay_seconds=delay)
        return
    svc.health.failure(mapping.resource_id, error.to_json())
    svc.history.record(
        HistoryEntry(
            at=now(),
            resource_id=mapping.resource_id,
            action="mailbox.sync",
            subject=mapping.mailbox,
            outcome="failed",
            detail=error.message,
            error=error.to_json(),
        )
    )


def safety_sweep(svc: Services) -> int:
    """The ``safety_sweep`` timer: queue a sync of every active mapping (lost notifications)."""
    count = 0
    for mapping in svc.mappings.all(enabled_only=True):
        requested = iso(now(), "microseconds")
        svc.queues.send(SYNC_MAILBOX, {"mailbox": mapping.mailbox, "requested": requested})
        count += 1
    return count
