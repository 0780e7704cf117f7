"""At most four Graph requests in flight per mailbox, across every instance of the app.

Outlook allows an app four concurrent requests per mailbox and answers the fifth with 429
``ApplicationThrottled`` "MailboxConcurrency" (docs/sandbox.md, throttling). Azure runs this app on
many instances, so a per-process semaphore is not enough: the four slots are entities in Table
Storage (partition = mailbox, rows ``0``-``3``), each leased by one process until ``Until``.

A process claims a slot when it has more requests for the mailbox in flight than slots it holds,
keeps it while it has work, renews it before the lease lapses, and gives it back once it has been
idle for ``LINGER``. A burst thus costs a claim and a release per slot, not per request; a lone
request costs two writes (insert, delete). A process that dies holds its slots until their
lease lapses (``LEASE``), then any other process takes them over.

Leases compare wall-clock times written by different instances; ``SKEW`` keeps a lease taken
over only once it is clearly past, whatever the clocks' small differences.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync_core.store.tables import ConflictError, NotFoundError, TableStore, encode_key

log = logging.getLogger(__name__)

TABLE = "mailboxslots"
LIMIT = 4  # Outlook's concurrent requests per app and mailbox
LEASE = 15.0  # seconds a claimed slot stays ours without renewal
LINGER = 0.25  # seconds an idle slot is kept, so a burst's next request needs no claim
SKEW = 2.0  # seconds of clock difference between instances a lease tolerates
POLL = (0.02, 0.25)  # first and longest wait before asking the table again for a free slot


@dataclass
class _Held:
    etag: str
    until: float  # wall-clock seconds


@dataclass
class _Mailbox:
    held: dict[int, _Held] = field(default_factory=dict)
    busy: int = 0  # requests in flight in this process
    peak: int = 0  # most requests in flight since the keeper last looked
    claiming: bool = False  # one thread of this process claims at a time
    misses: int = 0  # claims in a row that found no free slot


class SharedSlots:
    """The mailbox slots of one process; ``hold(mailbox)`` around each Graph request."""

    def __init__(
        self,
        tables: TableStore,
        *,
        lease: float = LEASE,
        linger: float = LINGER,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.tables = tables
        self.lease = lease
        self.linger = linger
        self.wall = wall
        self.owner = uuid.uuid4().hex
        self.claims = 0  # table writes that took a slot (for benchmarks)
        self._cond = threading.Condition()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._keeper: threading.Thread | None = None

    @contextmanager
    def hold(self, mailbox: str) -> Iterator[None]:
        key = mailbox.lower()
        self._acquire(key)
        try:
            yield
        finally:
            with self._cond:
                box = self._mailboxes[key]
                box.busy -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Give every slot back (shutdown)."""
        with self._cond:
            held = [(k, i, h) for k, b in self._mailboxes.items() for i, h in b.held.items()]
            for box in self._mailboxes.values():
                box.held.clear()
        for key, index, slot in held:
            self._give_back(key, index, slot)

    # -- claiming ------------------------------------------------------------------------------

    def _acquire(self, key: str) -> None:
        with self._cond:
            box = self._mailboxes.setdefault(key, _Mailbox())
            while True:
                if box.busy < len(box.held):
                    box.busy += 1
                    box.peak = max(box.peak, box.busy)
                    return
                if box.claiming or len(box.held) >= LIMIT:
                    self._cond.wait(self._backoff(box))  # a local release notifies
                    continue
                box.claiming = True
                taken = set(box.held)
                self._cond.release()
                unavailable = False
                try:
                    claimed = self._claim(key, taken)
                except Exception:
                    # Storage unreachable: let the request go (Graph's 429 and the retry policy
                    # still hold it back) rather than stop all work on the mailbox.
                    log.warning("mailbox slots of %s unavailable", key, exc_info=True)
                    claimed, unavailable = None, True
                finally:
                    self._cond.acquire()
                    box.claiming = False
                    self._cond.notify_all()
                if unavailable:
                    box.busy += 1
                    return
                if claimed is not None:
                    box.held[claimed[0]] = claimed[1]
                    box.misses = 0
                    self._ensure_keeper()
                    continue
                # Other instances hold every free slot: wait for ours to free up or theirs to
                # lapse, asking the table less often the longer it takes.
                box.misses += 1
                self._cond.wait(self._backoff(box))

    def _backoff(self, box: _Mailbox) -> float:
        first, longest = POLL
        return min(longest, first * 2.0 ** min(box.misses, 6)) * random.uniform(0.75, 1.25)  # noqa: S311 (jitter)

    def _claim(self, key: str, taken: set[int]) -> tuple[int, _Held] | None:
        """Take a free or lapsed slot of ``key``: the first try inserts without a read, so a
        lone request costs one write; after a conflict, one query shows every slot."""
        partition = encode_key(key)
        free = [i for i in range(LIMIT) if i not in taken]
        first = free[hash(self.owner) % len(free)]
        until = self.wall() + self.lease
        try:
            etag = self.tables.insert(TABLE, self._entity(partition, first, until))
            self.claims += 1
            return first, _Held(etag, until)
        except ConflictError:
            pass
        rows = {
            int(e["RowKey"]): e
            for e in self.tables.query(TABLE, "PartitionKey eq @pk", {"pk": partition})
        }
        now = self.wall()
        for index in free:
            row = rows.get(index)
            try:
                if row is None:
                    etag = self.tables.insert(TABLE, self._entity(partition, index, until))
                elif float(row.get("Until", 0)) + SKEW < now:
                    etag = self.tables.replace(
                        TABLE, self._entity(partition, index, until), row["etag"]
                    )
                else:
                    continue
            except (ConflictError, NotFoundError):
                continue  # another process was quicker
            self.claims += 1
            return index, _Held(etag, until)
        return None

    def _entity(self, partition: str, index: int, until: float) -> dict[str, object]:
        return {
            "PartitionKey": partition,
            "RowKey": str(index),
            "Owner": self.owner,
            "Until": until,
            "UntilTime": datetime.fromtimestamp(until, UTC),  # for people reading the table
        }

    # -- keeping and giving back ---------------------------------------------------------------

    def _ensure_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="mailbox-slots", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        """Renew slots in use before they lapse; give back those not needed for ``LINGER``
        (more slots than requests were in flight at once since the last look)."""
        try:
            while True:
                time.sleep(self.linger)
                self._keep_once()
        except BaseException:  # the process is going down: what it holds lapses on its own
            log.debug("mailbox slots keeper stopped", exc_info=True)

    def _keep_once(self) -> None:
        renew: list[tuple[str, int, _Held]] = []
        release: list[tuple[str, int, _Held]] = []
        wall = self.wall()
        with self._cond:
            for key, box in self._mailboxes.items():
                spare = len(box.held) - max(box.peak, box.busy)
                box.peak = box.busy
                for index in sorted(box.held, reverse=True):
                    if spare > 0:
                        release.append((key, index, box.held.pop(index)))
                        spare -= 1
                    elif box.held[index].until - wall < self.lease / 2:
                        renew.append((key, index, box.held[index]))
        for key, index, slot in release:
            self._give_back(key, index, slot)
        for key, index, slot in renew:
            self._renew(key, index, slot)

    def _renew(self, key: str, index: int, slot: _Held) -> None:
        until = self.wall() + self.lease
        try:
            etag = self.tables.replace(
                TABLE, self._entity(encode_key(key), index, until), slot.etag
            )
        except (ConflictError, NotFoundError):
            log.warning("mailbox slot %s/%d was taken over; giving it up", key, index)
            with self._cond:
                self._mailboxes.get(key, _Mailbox()).held.pop(index, None)
                self._cond.notify_all()
            return
        except Exception:  # storage briefly unreachable: try again on the next round
            log.warning("could not renew mailbox slot %s/%d", key, index, exc_info=True)
            return
        with self._cond:
            box = self._mailboxes.get(key)
            if box is not None and index in box.held:
                box.held[index] = _Held(etag, until)

    def _give_back(self, key: str, index: int, slot: _Held) -> None:
        try:
            self.tables.delete(TABLE, encode_key(key), str(index), slot.etag)
        except ConflictError:
            pass  # lapsed and taken over: it is someone else's now
        except Exception:  # it lapses on its own
            log.warning("could not give back mailbox slot %s/%d", key, index, exc_info=True)


__all__ = ["LIMIT", "SharedSlots"]
