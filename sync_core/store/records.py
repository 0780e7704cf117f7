"""Small records the sync directions share: the sequence clock of outbound events and the
latest booking states (with the webhook ids that delivered them).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sync_core.clock import now
from sync_core.store.tables import ConflictError, Entity, NotFoundError, TableStore, encode_key

TEXT_CHUNK = 30_000  # Table Storage string properties hold at most 64 KiB (32K UTF-16 units)


def _spread(value: str) -> str:
    """A partition key that spreads ids evenly (two hex digits)."""
    return hashlib.sha256(value.encode()).hexdigest()[:2]


def put_text(entity: Entity, name: str, text: str) -> None:
    """Store a long text across numbered properties (``Name0``, ``Name1``, ...)."""
    chunks = [text[i : i + TEXT_CHUNK] for i in range(0, len(text), TEXT_CHUNK)] or [""]
    entity[f"{name}Parts"] = len(chunks)
    for index, chunk in enumerate(chunks):
        entity[f"{name}{index}"] = chunk


def get_text(entity: Entity, name: str) -> str:
    return "".join(entity[f"{name}{i}"] for i in range(int(entity.get(f"{name}Parts", 0))))


class SequenceClock:
    """The ``sequence`` of outbound events (SPEC §3.3), without a shared counter to contend for.

    A hybrid logical clock: microseconds since the epoch, raised past the last number this
    process gave out and past ``after``, the last number sent for the same object (a blocker's
    row, a booking's link keeps it). So numbers grow per object whatever the instances' clocks
    say, and per resource as far as their clocks agree; platforms compare them per object.
    Numbers from the earlier per-resource counter are far smaller, so they stay older.
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self, after: int = 0) -> int:
        with self._lock:
            self._last = max(self._clock() // 1000, self._last + 1, after + 1)
            return self._last


Saved = Literal["first", "new", "duplicate", "stale"]
KEPT_IDS = 16  # webhook ids a booking's row remembers (one per version kept)


def _webhook_ids(entity: Entity) -> tuple[str, ...]:
    return tuple(json.loads(entity.get("WebhookIds") or "[]"))


@dataclass(frozen=True)
class StoredBooking:
    booking_id: str
    version: int
    event: dict[str, Any]  # the whole webhook body: type, timestamp, data
    received_at: datetime


class BookingStates:
    """The newest state received for each booking. Older versions never overwrite newer ones."""

    TABLE = "bookings"
    REMEMBERED = 10_000  # bookings whose last write this process keeps the ETag of

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        # booking id → (version, ETag, webhook ids) of this process's last write. A replace
        # guarded by that ETag needs no read first; if anyone wrote since, it fails and the row
        # is read.
        self._written: OrderedDict[str, tuple[int, str, tuple[str, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, booking_id: str) -> StoredBooking | None:
        entity = self.tables.get(self.TABLE, _spread(booking_id), encode_key(booking_id))
        if entity is None:
            return None
        return StoredBooking(
            booking_id=booking_id,
            version=int(entity["Version"]),
            event=json.loads(get_text(entity, "Event")),
            received_at=entity["ReceivedAt"],
        )

    def save(self, booking_id: str, version: int, event: dict[str, Any], webhook_id: str) -> Saved:
        """Keep ``event`` if its version is newer than the stored one ("new", or "first" when
        nothing was stored for the booking); "duplicate" if
        ``webhook_id`` delivered a version already kept, "stale" if a newer one is kept.

        The row remembers the webhook ids of the last ``KEPT_IDS`` versions it kept, so a
        redelivery is recognised without a table of its own: a redelivered webhook carries the
        version it carried the first time."""
        with self._lock:
            current = self._written.get(booking_id)
        for attempt in range(20):
            # A first version is inserted without reading first; a later one replaces what this
            # process wrote last, or else what a read finds.
            if attempt or (version > 1 and (current is None or current[0] >= version)):
                found = self.tables.get(self.TABLE, _spread(booking_id), encode_key(booking_id))
                current = (
                    (int(found["Version"]), found["etag"], _webhook_ids(found)) if found else None
                )
            if current is not None:
                if webhook_id in current[2]:
                    return "duplicate"
                if current[0] >= version:
                    return "stale"
            ids = ((current[2] if current else ()) + (webhook_id,))[-KEPT_IDS:]
            entity: Entity = {
                "PartitionKey": _spread(booking_id),
                "RowKey": encode_key(booking_id),
                "BookingId": booking_id,
                "Version": version,
                "ReceivedAt": now(),
                "WebhookIds": json.dumps(ids, separators=(",", ":")),
            }
            put_text(entity, "Event", json.dumps(event, separators=(",", ":")))
            try:
                if current is None:
                    etag = self.tables.insert(self.TABLE, entity)
                else:
                    etag = self.tables.replace(self.TABLE, entity, current[1])
            except (ConflictError, NotFoundError):
                continue
            self._remember(booking_id, version, etag, ids)
            return "first" if current is None else "new"
        raise ConflictError(f"bookings: {booking_id!r} is being written concurrently")

    def _remember(self, booking_id: str, version: int, etag: str, ids: tuple[str, ...]) -> None:
        with self._lock:
            self._written[booking_id] = (version, etag, ids)
            self._written.move_to_end(booking_id)
            if len(self._written) > self.REMEMBERED:
                self._written.popitem(last=False)
