"""Bookings accepted and not yet applied, by when they are overdue.

A queued message is invisible while a worker runs it; if that worker's instance dies, the queue
shows it again only after the Functions host's processing timeout (10 minutes). So the intake
records each accepted change here before it answers 202, keyed by the time it is *due*
(``STALL`` later), and ``apply`` removes the record once the change is done or visibly parked.
The ``recover_stalled`` timer finds what is past due with one range query (the table holds only
open work) and queues it again.

Partition = due time (to the second), row = booking id and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sync_core.clock import iso, now
from sync_core.store.tables import TableStore, encode_key

TABLE = "openwork"
STALL = timedelta(seconds=60)  # an accepted change not applied by then is run again


@dataclass(frozen=True)
class OpenChange:
    due: str  # the partition: when the change counts as stalled
    booking_id: str
    version: int
    tries: int = 0  # times recovery queued it again

    @property
    def row(self) -> str:
        return f"{encode_key(self.booking_id)}|{self.version}"


class OpenWork:
    def __init__(self, tables: TableStore) -> None:
        self.tables = tables

    def open(
        self, booking_id: str, version: int, after: timedelta = STALL, tries: int = 0
    ) -> OpenChange:
        change = OpenChange(iso(now() + after, "seconds"), booking_id, version, tries)
        self.tables.upsert(
            TABLE,
            {
                "PartitionKey": change.due,
                "RowKey": change.row,
                "BookingId": booking_id,
                "Version": version,
                "Tries": tries,
            },
        )
        return change

    def close(self, due: str, booking_id: str, version: int) -> None:
        self.tables.delete(TABLE, due, OpenChange(due, booking_id, version).row, blind=True)

    def postpone(self, change: OpenChange, after: timedelta = STALL) -> OpenChange:
        """Due again later: written anew before the old record goes, so it is never absent."""
        later = self.open(change.booking_id, change.version, after, change.tries + 1)
        self.close(change.due, change.booking_id, change.version)
        return later

    def overdue(self, at: datetime | None = None, limit: int = 1000) -> list[OpenChange]:
        cutoff = iso(at or now(), "seconds")
        found: list[OpenChange] = []
        for entity in self.tables.query(TABLE, "PartitionKey le @cutoff", {"cutoff": cutoff}):
            found.append(
                OpenChange(
                    str(entity["PartitionKey"]),
                    str(entity["BookingId"]),
                    int(entity["Version"]),
                    int(entity.get("Tries", 0)),
                )
            )
            if len(found) >= limit:
                break
        return found


__all__ = ["STALL", "OpenChange", "OpenWork"]
