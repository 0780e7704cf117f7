"""Blockers: the mirror of Outlook time that blocks a mapped resource (SPEC §3.3, §4)."""

from __future__ import annotations

from datetime import datetime

from sync_core.domain.inbound import Blocker
from sync_core.store.recent import Recent
from sync_core.store.tables import Entity, TableStore, encode_key

# Each column of a blocker's row and the field it holds, for writing and reading alike.
COLUMNS = {
    "BlockerId": "id",
    "Mailbox": "mailbox",
    "ResourceId": "resource_id",
    "EventId": "event_id",
    "ICalUId": "ical_uid",
    "Start": "start",
    "End": "end",
    "AllDay": "all_day",
    "ShowAs": "show_as",
    "Title": "title",
    "ContentHash": "content_hash",
    "Sequence": "sequence",
}
# What a column the table left out (it keeps no empty values, and older rows lack some) reads as.
ABSENT: dict[str, object] = {
    "ICalUId": None,
    "AllDay": False,
    "Title": None,
    "ContentHash": "",
    "Sequence": 0,
}


def _entity(blocker: Blocker) -> Entity:
    return {
        "PartitionKey": encode_key(blocker.mailbox),
        "RowKey": encode_key(blocker.id),
        **{column: getattr(blocker, name) for column, name in COLUMNS.items()},
    }


def _blocker(entity: Entity) -> Blocker:
    values = {
        name: entity[column] if column not in ABSENT else entity.get(column, ABSENT[column])
        for column, name in COLUMNS.items()
    }
    return Blocker(**{**values, "all_day": bool(values["all_day"])})


class BlockerRepository:
    TABLE = "blockers"

    RECENT_SECONDS = 1.0  # how old the mirror may be when a booking is checked for conflicts

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self._recent: Recent[str, list[Blocker]] = Recent(self.RECENT_SECONDS)

    def for_mailbox(self, mailbox: str) -> dict[str, Blocker]:
        return {
            b.id: b
            for b in (
                _blocker(e)
                for e in self.tables.query(
                    self.TABLE, "PartitionKey eq @pk", {"pk": encode_key(mailbox)}
                )
            )
        }

    def overlapping(self, mailbox: str, start: datetime, end: datetime) -> list[Blocker]:
        """Blockers in ``mailbox`` that overlap [start, end): no Graph read needed. A burst of
        bookings for one mailbox shares one read of its mirror per ``RECENT_SECONDS``."""
        mirror = self._recent.get(mailbox, lambda: list(self.for_mailbox(mailbox).values()))
        return [b for b in mirror or [] if b.start < end and b.end > start]

    def put(self, blocker: Blocker) -> None:
        self.tables.upsert(self.TABLE, _entity(blocker))
        self._recent.forget(blocker.mailbox)

    def delete(self, mailbox: str, blocker_id: str) -> None:
        self.tables.delete(self.TABLE, encode_key(mailbox), encode_key(blocker_id), blind=True)
        self._recent.forget(mailbox)
