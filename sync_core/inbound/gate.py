"""The notification routes' per-process memory: which subscription ids are known, and which
reads of a mailbox are already queued, so a burst or a forged flood costs little."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sync_core.clock import iso, now
from sync_core.store.queues import SYNC_MAILBOX
from sync_core.store.recent import Recent
from sync_core.store.subscriptions import SubscriptionRecord

if TYPE_CHECKING:
    from sync_core.services import Services

# Graph's subscription ids are GUIDs; a longer one is unknown without a look-up.
MAX_SUBSCRIPTION_ID = 128


class NotificationGate:
    """Per-process memory that keeps the notification endpoint fast under bursts.

    Subscription records are cached briefly (they change only when renewed or recreated), and
    reads are queued at most once per ``WINDOW`` and mailbox (:meth:`queue_read`).

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
    WINDOW = timedelta(milliseconds=250)  # reads of a mailbox queued here at most this often
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
        # mailbox → (when the read queued last starts, whether it may be skipped as an echo)
        self._queued: dict[str, tuple[datetime, bool]] = {}

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

    def queue_read(
        self, svc: Services, mailbox: str, changed: list[tuple[str, str]] | None = None
    ) -> None:
        """Make sure a read of ``mailbox`` that starts after now is queued.

        After a quiet spell the read runs at once. This process queues reads of one mailbox
        at most once per ``WINDOW``: a notification within it is covered by the read queued
        for the window's end, so a burst costs a few messages and reads, and none waits longer
        than the window. Across instances, a read that notifications arrived during reads once
        more when done (``sync_mailbox``).

        ``changed``: the (event id, changeKey) of every change notified, when all are known, so
        a read of nothing but this service's own writes can be skipped; such a message covers
        nothing else.
        """
        moment = now()
        with self._lock:
            last = self._queued.get(mailbox)
            if last is not None and last[0] > moment and not last[1]:
                return  # the read queued for the window's end starts after this moment
            spaced = last is not None and not last[1] and moment - last[0] < self.WINDOW
            horizon = last[0] + self.WINDOW if last is not None and spaced else moment
            self._queued[mailbox] = (horizon, bool(changed))
        message: dict[str, object] = {"mailbox": mailbox, "requested": iso(horizon, "microseconds")}
        if changed:
            message["changed"] = [list(pair) for pair in changed]
        try:
            svc.queues.send(SYNC_MAILBOX, message)
        except BaseException:
            with self._lock:  # nothing was queued: the next notification must queue again
                if self._queued.get(mailbox) == (horizon, bool(changed)):
                    self._queued.pop(mailbox, None)
            raise
