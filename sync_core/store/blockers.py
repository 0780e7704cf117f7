"""Blockers: the mirror of Outlook time that blocks a mapped resource (SPEC §3.3, §4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sync_core.store.recent import Recent
from sync_core.store.tables import Entity, TableStore, encode_key


@dataclass(frozen=True)
class Blocker:
    id: str
    mailbox: str
    resource_id: str
    event_id: str
    ical_uid: str | None
    start: datetime
    end: datetime
    all_day: bool
    show_as: str
    title: str | None
    content_hash: str = ""  # of what was last sent to the platform
    etag: str | None = None


def _entity(blocker: Blocker) -> Entity:
    return {
        "PartitionKey": encode_key(blocker.mailbox),
        "RowKey": encode_key(blocker.id),
        "BlockerId": blocker.id,
        "Mailbox": blocker.mailbox,
        "ResourceId": blocker.resource_id,
        "EventId": blocker.event_id,
        "ICalUId": blocker.ical_uid,
        "Start": blocker.start,
        "End": blocker.end,
        "AllDay": blocker.all_day,
        "ShowAs": blocker.show_as,
        "Title": blocker.title,
        "ContentHash": blocker.content_hash,
    }


def _blocker(entity: Entity) -> Blocker:
    return Blocker(
        id=entity["BlockerId"],
        mailbox=entity["Mailbox"],
        resource_id=entity["ResourceId"],
        event_id=entity["EventId"],
        ical_uid=entity.get("ICalUId"),
        start=entity["Start"],
        end=entity["End"],
        all_day=bool(entity.get("AllDay")),
        show_as=entity["ShowAs"],
        title=entity.get("Title"),
        content_hash=entity.get("ContentHash", ""),
        etag=entity.get("etag"),
    )


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
        self.tables.delete(self.TABLE, encode_key(mailbox), encode_key(blocker_id))
        self._recent.forget(mailbox)
