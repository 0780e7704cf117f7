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
from sync_core.reconcile import blocker_id, plan_full_round, plan_page, to_blocker
from sync_core.store.blockers import Blocker
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord
from sync_core.web import Request, Response, json_response

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
LEASE_BUSY_DELAY = 2  # seconds before a sync that found the mailbox busy tries again
MIN_INTERVAL = timedelta(seconds=1)  # between two delta reads of one mailbox in a burst


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

    Subscription records are cached briefly (they change only when renewed or recreated). For
    each mailbox the first notification queues a read at once; later ones within a second share
    one delayed read, which is queued to start after all of them arrived, so every notification
    is still covered by a queued read that begins after it, and a burst of 200 costs two reads.
    """

    TTL = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, tuple[SubscriptionRecord, float]] = {}
        self._immediate: dict[str, float] = {}  # mailbox → when a read was last queued at once
        self._trailing: dict[str, float] = {}  # mailbox → when the shared delayed read starts

    def record(
        self, svc: Services, subscription_id: str, fresh: bool = False
    ) -> SubscriptionRecord | None:
        now = time.monotonic()
        with self._lock:
            cached = self._records.get(subscription_id)
        if cached is not None and not fresh and now - cached[1] < self.TTL:
            return cached[0]
        record = svc.subscriptions.by_id(subscription_id)
        with self._lock:
            if record is None:
                self._records.pop(subscription_id, None)
            else:
                self._records[subscription_id] = (record, now)
        return record

    def queue_read(self, svc: Services, mailbox: str) -> bool:
        """Make sure a read of ``mailbox`` that starts after now is queued; True if one was sent."""
        now_mono, now = time.monotonic(), _now()
        with self._lock:
            if now_mono - self._immediate.get(mailbox, -1e9) >= 1.0:
                self._immediate[mailbox] = now_mono
                delay = 0
            elif self._trailing.get(mailbox, -1e9) > now_mono:
                return False  # the shared delayed read starts after this notification
            else:
                self._trailing[mailbox] = now_mono + 1.0
                delay = 1
        # The read must cover everything up to when it becomes visible.
        requested = now + timedelta(seconds=delay)
        try:
            svc.queues.send(
                SYNC_MAILBOX,
                {"mailbox": mailbox, "requested": _iso(requested)},
                delay_seconds=delay,
            )
        except BaseException:
            with self._lock:  # nothing was queued: the next notification must queue again
                self._immediate.pop(mailbox, None)
                self._trailing.pop(mailbox, None)
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
    if (
        not full
        and cursor.round_started_at is not None
        and _now() - cursor.round_started_at < MIN_INTERVAL
    ):
        # A burst: the first notification was read at once; the rest wait for one more read
        # a moment later, which covers them all.
        svc.queues.send(SYNC_MAILBOX, message, delay_seconds=1)
        return
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
    projections = svc.links.projections(mailbox)
    counts = {"upserted": 0, "deleted": 0, "restored": 0}
    seen: set[str] = set()
    drifted: set[str] = set()
    pages = (
        svc.graph.calendar_delta(mailbox, start=window[0], end=window[1])
        if link is None
        else svc.graph.calendar_delta(mailbox, link=link)
    )
    last: DeltaPage | None = None
    for page in pages:
        last = page
        plan = plan_page(
            mailbox=mailbox,
            privacy=mapping.privacy,
            changed=page.changed,
            removed=page.removed,
            stored=digests,
            projections=projections,
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
        if link is None:  # a full read: remember every blocker Outlook still shows
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
            "start": _iso_seconds(blocker.start),
            "end": _iso_seconds(blocker.end),
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
