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


def _row_key(blocker_id: str, resource_id: str) -> str:
    # One row per blocker and resource: resources that share a mailbox each get its blockers.
    return f"{encode_key(blocker_id)}.{encode_key(resource_id)}"


def _entity(blocker: Blocker) -> Entity:
    return {
        "PartitionKey": encode_key(blocker.mailbox),
        "RowKey": _row_key(blocker.id, blocker.resource_id),
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

    def in_mailbox(self, mailbox: str) -> list[Blocker]:
        """The mailbox's blockers, of every resource mapped to it."""
        found = []
        for entity in self.tables.query(
            self.TABLE, "PartitionKey eq @pk", {"pk": encode_key(mailbox)}
        ):
            blocker = _blocker(entity)
            if entity["RowKey"] != _row_key(blocker.id, blocker.resource_id):
                # A row keyed by the blocker alone (from before mailboxes could be shared): it
                # moves to its key once, so that a later delete finds it.
                self.tables.upsert(self.TABLE, _entity(blocker))
                self.tables.delete(self.TABLE, entity["PartitionKey"], entity["RowKey"], blind=True)
            found.append(blocker)
        return found

    def for_resource(self, mailbox: str, resource_id: str) -> dict[str, Blocker]:
        return {b.id: b for b in self.in_mailbox(mailbox) if b.resource_id == resource_id}

    def overlapping(self, mailbox: str, start: datetime, end: datetime) -> list[Blocker]:
        """Outlook time in ``mailbox`` that overlaps [start, end), each occurrence once whichever
        resources it blocks: no Graph read needed. A burst of bookings for one mailbox shares
        one read of its mirror per ``RECENT_SECONDS``."""
        mirror = self._recent.get(mailbox, lambda: self.in_mailbox(mailbox))
        near = {b.id: b for b in reversed(mirror or []) if b.start < end and b.end > start}
        return sorted(near.values(), key=lambda b: (b.start, b.id))

    def put(self, blocker: Blocker) -> None:
        self.tables.upsert(self.TABLE, _entity(blocker))
        self._recent.forget(blocker.mailbox)

    def delete(self, mailbox: str, resource_id: str, blocker_id: str) -> None:
        self.tables.delete(
            self.TABLE, encode_key(mailbox), _row_key(blocker_id, resource_id), blind=True
        )
        self._recent.forget(mailbox)
