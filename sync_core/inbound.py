"""Microsoft 365 → platform: change notifications in, per-mailbox delta reads, blockers out.

The HTTP endpoints only check and queue (Graph wants an answer within 3 s and the service never
calls Graph inside them). ``sync_mailbox`` does the work: one worker per mailbox at a time (a
lease on the mailbox's cursor), a calendarView delta read from the stored link, the decisions
of ``reconcile``, and ``blocker.upserted`` / ``blocker.deleted`` through ``deliver``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync_core import subscriptions
from sync_core.booking import window_for
from sync_core.graph import DeltaPage, DeltaReset, GraphError
from sync_core.platform import retry_delay
from sync_core.problems import ValidationFailed
from sync_core.reconcile import (
    blocker_id,
    missing_projections,
    plan_full_round,
    plan_page,
    to_blocker,
)
from sync_core.store.blockers import Blocker
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX
from sync_core.store.recent import Recent
from sync_core.store.subscriptions import SubscriptionRecord
from sync_core.web import Request, Response, json_response

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
LEASE_BUSY_DELAY = 2  # seconds before a sync that found the mailbox busy tries again
MAX_HORIZON_WAIT = 2.0  # seconds a queued read waits at most for its horizon


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _validation_echo(request: Request) -> Response | None:
    token = request.query.get("validationToken")
    if token is None:
        return None
    # The query value is already URL-decoded; Graph wants it back verbatim, as text.
    return Response(200, token.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})


def _notifications(request: Request) -> list[dict[str, Any]]:
    body = request.json()
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValidationFailed.single("value", "must be a list of notifications")
    return items


class NotificationGate:
    """Per-process memory that keeps the notification endpoint fast under bursts.

    Subscription records are cached briefly (they change only when renewed or recreated). Reads
    are queued with a *horizon*: the read waits until then and covers every change before it.
    The first notification after a quiet spell gets an immediate read; later ones within
    ``WINDOW`` share one read whose horizon is the end of the window, and windows grow while the
    burst goes on. Every notification is thus covered by a queued read that starts after it
    arrived, and a burst of 200 in a second costs three reads.
    """

    TTL = 300.0
    WINDOW = timedelta(milliseconds=500)
    MAX_WINDOW = timedelta(seconds=2)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: Recent[str, SubscriptionRecord] = Recent(self.TTL)
        self._horizon: dict[str, datetime] = {}  # mailbox → horizon of the last queued read
        self._streak: dict[str, int] = {}  # mailbox → delayed reads queued in a row

    def record(
        self, svc: Services, subscription_id: str, fresh: bool = False
    ) -> SubscriptionRecord | None:
        if fresh:
            self._records.forget(subscription_id)
        return self._records.get(subscription_id, lambda: svc.subscriptions.by_id(subscription_id))

    def queue_read(self, svc: Services, mailbox: str) -> bool:
        """Make sure a read of ``mailbox`` starting after now is queued; True if one was sent."""
        now = _now()
        with self._lock:
            last = self._horizon.get(mailbox)
            if last is not None and last > now:
                return False  # the queued read waits past this moment
            quiet = last is None or now - last > self.WINDOW
            # A burst that goes on gets longer windows (0.5 s, 1 s, 2 s), so it costs few reads.
            streak = 0 if quiet else self._streak.get(mailbox, 0) + 1
            window = min(self.MAX_WINDOW, self.WINDOW * 2 ** max(0, streak - 1))
            horizon = now if quiet else now + window
            self._horizon[mailbox] = horizon
            self._streak[mailbox] = streak
        try:
            svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "requested": _iso(horizon)})
        except BaseException:
            with self._lock:  # nothing was queued: the next notification must queue again
                if self._horizon.get(mailbox) == horizon:
                    self._horizon.pop(mailbox, None)
            raise
        return True


def _verified_mailbox(svc: Services, item: dict[str, Any]) -> str | None:
    """The mailbox a notification is about, if its clientState matches the subscription's."""
    subscription_id = str(item.get("subscriptionId") or "")
    given = str(item.get("clientState") or "")
    record = svc.gate.record(svc, subscription_id) if subscription_id else None
    if record is not None and not hmac.compare_digest(given.encode(), record.client_state.encode()):
        record = svc.gate.record(svc, subscription_id, fresh=True)  # recreated meanwhile?
    if record is None or not hmac.compare_digest(given.encode(), record.client_state.encode()):
        log.warning(
            "dropped a notification for subscription %r: unknown subscription or wrong clientState",
            subscription_id[:64],
        )
        return None
    return record.mailbox


def receive_notifications(svc: Services, request: Request) -> Response:
    """``POST /api/graph/notifications``: check each item, queue one sync per mailbox, 202."""
    echo = _validation_echo(request)
    if echo is not None:
        return echo
    mailboxes = {m for m in (_verified_mailbox(svc, i) for i in _notifications(request)) if m}
    for mailbox in sorted(mailboxes):
        # A failure here propagates as a 5xx, so Graph delivers the batch again.
        svc.gate.queue_read(svc, mailbox)
    return json_response(202, {"accepted": len(mailboxes)})


def receive_lifecycle(svc: Services, request: Request) -> Response:
    """``POST /api/graph/lifecycle``: reauthorize, recreate or resync, in the queue."""
    echo = _validation_echo(request)
    if echo is not None:
        return echo
    queued = 0
    for item in _notifications(request):
        event = str(item.get("lifecycleEvent") or "")
        mailbox = _verified_mailbox(svc, item)
        if mailbox is None or event not in LIFECYCLE_EVENTS:
            continue
        svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "lifecycle": event, "full": True})
        queued += 1
    return json_response(202, {"queued": queued})


# -- the sync -----------------------------------------------------------------------------------


def _mapping_for(svc: Services, mailbox: str) -> Mapping | None:
    return next((m for m in svc.mappings.by_mailbox(mailbox) if m.enabled), None)


def sync_mailbox(svc: Services, message: dict[str, Any]) -> None:
    """Read what changed in one mailbox and bring the platform's blockers in line."""
    mailbox = str(message["mailbox"]).lower()
    mapping = _mapping_for(svc, mailbox)
    if mapping is None:
        return  # unmapped or deactivated: nothing to sync
    cursor = svc.cursors.get(mailbox)
    requested = _parse(message.get("requested"))
    full = bool(message.get("full"))
    if (
        requested is not None
        and not full
        and cursor.round_started_at is not None
        and cursor.round_started_at >= requested
    ):
        return  # a read that began after this notification already covered it
    if requested is not None and requested > _now():
        # Part of a burst: wait for the horizon, so this one read covers all of it.
        time.sleep(min(MAX_HORIZON_WAIT, (requested - _now()).total_seconds()))
    leased = svc.cursors.acquire(mailbox)
    if leased is None:
        svc.queues.send(SYNC_MAILBOX, message, delay_seconds=LEASE_BUSY_DELAY)
        return
    started = _now()
    try:
        lifecycle = message.get("lifecycle")
        if lifecycle == "reauthorizationRequired":
            subscriptions.reauthorize(svc, mapping)
        elif lifecycle == "subscriptionRemoved":
            subscriptions.recreate(svc, mapping)
        window = window_for(started.date(), svc.settings.sync_window_days)
        fresh = full or leased.delta_link is None or leased.window_start != window[0]
        counts, delta_link = _read(svc, mapping, window, None if fresh else leased.delta_link)
    except GraphError as error:
        svc.cursors.release(leased)
        _sync_failed(svc, mapping, message, error)
        return
    except BaseException:
        svc.cursors.release(leased)
        raise
    svc.cursors.release(
        leased,
        delta_link=delta_link,
        window_start=window[0],
        round_started_at=started,
        last_success=_now(),
    )
    svc.health.success(mapping.resource_id)
    if any(counts.values()):
        svc.history.record(
            HistoryEntry(
                at=_now(),
                resource_id=mapping.resource_id,
                action="mailbox.sync",
                subject=mailbox,
                outcome="ok",
                detail=", ".join(f"{n} {what}" for what, n in counts.items() if n),
            )
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
            privacy=mapping.privacy,
            items=page.items,
            stored=digests,
            projections=svc.links.projections(mailbox),
            window=window,
        )
        for state in plan.upserts:
            blocker = Blocker(
                id=state.id,
                mailbox=mailbox,
                resource_id=mapping.resource_id,
                event_id=state.event_id,
                ical_uid=state.ical_uid,
                start=state.start,
                end=state.end,
                all_day=state.all_day,
                show_as=state.show_as,
                title=state.title,
                content_hash=state.digest(),
            )
            _emit_upsert(svc, blocker)
            svc.blockers.put(blocker)
            digests[blocker.id] = blocker.content_hash
            counts["upserted"] += 1
        for bid in plan.deletes:
            _delete(svc, mapping, bid, digests)
            counts["deleted"] += 1
        drifted.update(plan.drifted)
        if link is None:  # a full read: remember everything Outlook still shows
            shown.update(str(e["id"]) for e in page.changed)
            seen.update(
                blocker_id(mailbox, str(e["id"]))
                for e in page.changed
                if to_blocker(mailbox, e, mapping.privacy) is not None
            )
    if link is None:
        # Only after the whole window was read without error: what is gone is really gone.
        for bid in plan_full_round(seen=seen, stored=digests):
            _delete(svc, mapping, bid, digests)
            counts["deleted"] += 1
        drifted.update(missing_projections(projections, shown, window))
    for booking_id in sorted(drifted):
        svc.queues.send(APPLY_BOOKING, {"booking_id": booking_id, "attempt": 1, "repair": True})
        counts["restored"] += 1
    return counts, (last.delta_link if last else link)


def _emit_upsert(svc: Services, blocker: Blocker) -> None:
    svc.platform.emit(
        "blocker.upserted",
        blocker.resource_id,
        {
            "id": blocker.id,
            # All-day blockers carry dates: Outlook keeps no zone for them.
            "start": blocker.start.date().isoformat()
            if blocker.all_day
            else _iso_seconds(blocker.start),
            "end": blocker.end.date().isoformat() if blocker.all_day else _iso_seconds(blocker.end),
            "all_day": blocker.all_day,
            "show_as": blocker.show_as,
            "title": blocker.title,
            "source": {
                "mailbox": blocker.mailbox,
                "event_id": blocker.event_id,
                "ical_uid": blocker.ical_uid,
            },
        },
    )


def _delete(svc: Services, mapping: Mapping, bid: str, digests: dict[str, str]) -> None:
    svc.platform.emit("blocker.deleted", mapping.resource_id, {"id": bid})
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
            at=_now(),
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
        svc.queues.send(SYNC_MAILBOX, {"mailbox": mapping.mailbox, "requested": _iso(_now())})
        count += 1
    return count


def _iso_seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
