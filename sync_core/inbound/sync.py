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
from collections.abc import Callable
from datetime import datetime, timedelta
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
from sync_core.problems import PayloadTooLarge, ValidationFailed
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
# Notifications in one request. Graph batches a few per delivery; 256 KiB holds about 500 of
# its real ones, so only a forged request comes near this (and gets 413).
MAX_NOTIFICATIONS = 1000
# Graph's subscription ids are GUIDs; a longer one is unknown without a look-up.
MAX_SUBSCRIPTION_ID = 128


def _validation_echo(request: Request) -> Response | None:
    token = request.query.get("validationToken")
    if token is None:
        return None
    # The query value is already URL-decoded; Graph wants it back verbatim, as text.
    return Response(
        200,
        token.encode("utf-8"),
        # Echoed caller text: never let a browser sniff it into HTML.
        {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def _notifications(request: Request) -> list[dict[str, Any]]:
    body = request.json()
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValidationFailed.single("value", "must be a list of notifications")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadTooLarge(
            f"the request has {len(items)} notifications; the limit is {MAX_NOTIFICATIONS}"
        )
    return items


class NotificationGate:
    """Per-process memory that keeps the notification endpoint fast under bursts.

    Subscription records are cached briefly (they change only when renewed or recreated). Reads
    are queued with a *horizon*: the read waits until then and covers every change before it.
    The first notification after a quiet spell gets an immediate read; later ones within
    ``WINDOW`` share one read whose horizon is the end of the window, and windows grow while the
    burst goes on. Every notification is thus covered by a queued read that starts after it
    arrived, and a burst of 200 in a second costs three reads.

    The routes are anonymous, so what one request can cost is bounded too (:meth:`records`):
    each distinct subscription id is looked up once per request, a few with point reads and
    more with one query of every subscription (a deployment has one per mapping). Ids found
    nowhere are remembered as unknown for ``UNKNOWN_TTL``, and the look-up behind that memory
    may be ``LISTING_AGE`` old, so a forged request costs at most one query and a repeated one
    none. That memory is forgotten whenever this process writes a subscription record, so a
    subscription it creates is accepted at once. One that another instance creates can be
    taken as unknown here for up to ``UNKNOWN_TTL`` after its record was written, if this
    instance looked its id up (or listed every subscription, as it does under forged traffic)
    just before the write. Nothing is lost for good then: reads are delta reads, so the next
    accepted notification of the mailbox, or the safety sweep, reads what those dropped ones
    were about.
    """

    TTL = 300.0
    WINDOW = timedelta(milliseconds=500)
    MAX_WINDOW = timedelta(seconds=2)
    UNKNOWN_TTL = 30.0  # seconds an id found nowhere is taken as unknown without a read
    MAX_UNKNOWN = 10_000  # unknown ids remembered at most
    POINT_READS = 3  # up to this many ids are looked up one by one; more with one query
    LISTING_AGE = 2.0  # seconds a query of every subscription is reused for other ids
    RECHECK = 5.0  # a record whose clientState did not match is read again if older than this

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: Recent[str, SubscriptionRecord] = Recent(self.TTL)
        self._unknown: dict[str, float] = {}  # subscription id → when it was found nowhere
        self._listing: tuple[float, set[str]] | None = None  # when, the ids every query found
        self._last_miss = float("-inf")  # when an id was last found nowhere
        self._writes = 0  # svc.subscriptions.writes the two above hold for
        self._horizon: dict[str, datetime] = {}  # mailbox → horizon of the last queued read
        self._streak: dict[str, int] = {}  # mailbox → delayed reads queued in a row

    def record(
        self, svc: Services, subscription_id: str, fresh: bool = False
    ) -> SubscriptionRecord | None:
        """One subscription's record; ``fresh`` reads it again if older than ``RECHECK``."""
        return self._records.get(
            subscription_id,
            lambda: svc.subscriptions.by_id(subscription_id),
            self.RECHECK if fresh else None,
        )

    def records(self, svc: Services, subscription_ids: set[str]) -> dict[str, SubscriptionRecord]:
        """The records of those ids that name a subscription, with at most ``POINT_READS``
        point reads or one query of every subscription."""
        writes = svc.subscriptions.writes  # before any read: a write after it voids what is read
        now = time.monotonic()
        found: dict[str, SubscriptionRecord] = {}
        pending: list[str] = []
        with self._lock:
            if writes != self._writes:
                self._unknown.clear()
                self._listing = None
                self._writes = writes
            listing = self._listing
            if listing is not None and now - listing[0] >= self.LISTING_AGE:
                listing = None
            for subscription_id in subscription_ids:
                record = self._records.peek(subscription_id)
                if record is not None:
                    found[subscription_id] = record
                elif len(subscription_id) > MAX_SUBSCRIPTION_ID or self._known_unknown(
                    subscription_id, now
                ):
                    continue
                elif listing is not None and subscription_id not in listing[1]:
                    self._unknown[subscription_id] = self._last_miss = listing[0]
                else:
                    pending.append(subscription_id)
        if not pending:
            return found
        # Point reads for a few ids, unless ids were found nowhere lately (forged requests):
        # then one query, which later requests share for LISTING_AGE.
        listed = len(pending) > self.POINT_READS or now - self._last_miss < self.UNKNOWN_TTL
        if not listed:
            known = {i: r for i in pending if (r := self._records.get(i, self._loader(svc, i)))}
        else:
            known = svc.subscriptions.all_by_id()
            for subscription_id, record in known.items():
                self._records.put(subscription_id, record)
        with self._lock:
            if writes == self._writes:  # else a record was written meanwhile: remember nothing
                if listed:
                    self._listing = (now, set(known))
                if len(self._unknown) + len(pending) > self.MAX_UNKNOWN:
                    cutoff = now - self.UNKNOWN_TTL
                    self._unknown = {k: t for k, t in self._unknown.items() if t > cutoff}
                    if len(self._unknown) + len(pending) > self.MAX_UNKNOWN:
                        self._unknown.clear()
                for subscription_id in pending:
                    if subscription_id not in known:
                        self._unknown[subscription_id] = now
                        self._last_miss = now
        found.update((i, known[i]) for i in pending if i in known)
        return found

    def _known_unknown(self, subscription_id: str, now: float) -> bool:
        since = self._unknown.get(subscription_id)
        return since is not None and now - since < self.UNKNOWN_TTL

    @staticmethod
    def _loader(svc: Services, subscription_id: str) -> Callable[[], SubscriptionRecord | None]:
        return lambda: svc.subscriptions.by_id(subscription_id)

    def queue_read(self, svc: Services, mailbox: str) -> bool:
        """Make sure a read of ``mailbox`` starting after now is queued; True if one was sent."""
        moment = now()
        with self._lock:
            last = self._horizon.get(mailbox)
            if last is not None and last > moment:
                return False  # the queued read waits past this moment
            quiet = last is None or moment - last > self.WINDOW
            # A burst that goes on gets longer windows (0.5 s, 1 s, 2 s), so it costs few reads.
            streak = 0 if quiet else self._streak.get(mailbox, 0) + 1
            window = min(self.MAX_WINDOW, self.WINDOW * 2 ** max(0, streak - 1))
            horizon = moment if quiet else moment + window
            self._horizon[mailbox] = horizon
            self._streak[mailbox] = streak
        try:
            requested = iso(horizon, "microseconds")
            svc.queues.send(SYNC_MAILBOX, {"mailbox": mailbox, "requested": requested})
        except BaseException:
            with self._lock:  # nothing was queued: the next notification must queue again
                if self._horizon.get(mailbox) == horizon:
                    self._horizon.pop(mailbox, None)
            raise
        return True


def _matches(given: str, record: SubscriptionRecord) -> bool:
    return hmac.compare_digest(given.encode(), record.client_state.encode())


def _verified_mailboxes(svc: Services, items: list[dict[str, Any]], what: str) -> list[str | None]:
    """For each item, the mailbox it is about if its clientState matches the subscription's.

    Each distinct subscription id is looked up once (:meth:`NotificationGate.records`) and each
    distinct (id, clientState) pair checked once; what is dropped is one warning per request.
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


def receive_notifications(svc: Services, request: Request) -> Response:
    """``POST /api/graph/notifications``: check each item, queue one sync per mailbox, 202."""
    echo = _validation_echo(request)
    if echo is not None:
        return echo
    items = _notifications(request)
    mailboxes = {m for m in _verified_mailboxes(svc, items, "notification") if m}
    for mailbox in sorted(mailboxes):
        # A failure here propagates as a 5xx, so Graph delivers the batch again.
        svc.gate.queue_read(svc, mailbox)
    return json_response(202, {"accepted": len(mailboxes)})


def receive_lifecycle(svc: Services, request: Request) -> Response:
    """``POST /api/graph/lifecycle``: reauthorize, recreate or resync, in the queue."""
    echo = _validation_echo(request)
    if echo is not None:
        return echo
    items = _notifications(request)
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
    return json_response(202, {"queued": len(wanted)})


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
    requested = parse_iso(message.get("requested"))
    full = bool(message.get("full"))
    if (
        requested is not None
        and not full
        and cursor.round_started_at is not None
        and cursor.round_started_at >= requested
    ):
        return  # a read that began after this notification already covered it
    if requested is not None and requested > now():
        # Part of a burst: wait for the horizon, so this one read covers all of it.
        time.sleep(min(MAX_HORIZON_WAIT, (requested - now()).total_seconds()))
    leased = svc.cursors.acquire(mailbox)
    if leased is None:
        svc.queues.send(SYNC_MAILBOX, message, delay_seconds=LEASE_BUSY_DELAY)
        return
    started = now()
    try:
        lifecycle = message.get("lifecycle")
        if lifecycle == "reauthorizationRequired":
            subscriptions.reauthorize(svc, mapping)
        elif lifecycle == "subscriptionRemoved":
            subscriptions.recreate(svc, mapping)
        window = sync_window(started.date(), svc.settings.sync_window_days)
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
            # Queued before it is recorded as sent: a worker that dies in between leaves the
            # digest unchanged, and the redelivered read (the delta link is stored only once the
            # round is complete) sends it again.
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
            "start": blocker.start.date().isoformat() if blocker.all_day else iso(blocker.start),
            "end": blocker.end.date().isoformat() if blocker.all_day else iso(blocker.end),
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
    # Queued before the mirror forgets it, as for upserts: a redelivery deletes it again.
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
