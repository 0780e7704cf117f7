"""Mappings: which platform resource is kept in step with which Microsoft 365 mailbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from sync_core.clock import iso
from sync_core.domain.mapping import Direction, Filters, Privacy, reads_outlook, writes_outlook
from sync_core.store.recent import Recent
from sync_core.store.tables import Entity, TableStore, encode_key

TABLE = "mappings"
PARTITION = "mapping"  # one partition: an admin lists them all; 10,000 rows page fine


@dataclass(frozen=True)
class Mapping:
    resource_id: str
    mailbox: str  # SMTP address, lower case; several resources may share one
    privacy: Privacy
    enabled: bool
    created_at: datetime
    updated_at: datetime
    etag: str | None = None
    direction: Direction = "both"
    filters: Filters = field(default_factory=Filters)

    @property
    def writes_outlook(self) -> bool:
        """Its bookings are written into the mailbox."""
        return writes_outlook(self.direction)

    @property
    def reads_outlook(self) -> bool:
        """The mailbox's events come back to it as blockers (it needs the subscription)."""
        return reads_outlook(self.direction)

    def to_json(self) -> dict[str, object]:
        return {
            "resource_id": self.resource_id,
            "mailbox": self.mailbox,
            "privacy": self.privacy,
            "enabled": self.enabled,
            "direction": self.direction,
            "filters": self.filters.to_json(),
            "created_at": iso(self.created_at, "auto"),
            "updated_at": iso(self.updated_at, "auto"),
            "etag": self.etag,
        }


def _to_entity(mapping: Mapping) -> Entity:
    return {
        "PartitionKey": PARTITION,
        "RowKey": encode_key(mapping.resource_id),
        "ResourceId": mapping.resource_id,
        "Mailbox": mapping.mailbox,
        "Privacy": mapping.privacy,
        "Enabled": mapping.enabled,
        "Direction": mapping.direction,
        "Filters": json.dumps(mapping.filters.to_json()),
        "CreatedAt": mapping.created_at,
        "UpdatedAt": mapping.updated_at,
    }


def _from_entity(entity: Entity) -> Mapping:
    return Mapping(
        resource_id=entity["ResourceId"],
        mailbox=entity["Mailbox"],
        privacy=entity["Privacy"],
        enabled=bool(entity["Enabled"]),
        # Rows written before these columns existed read as the defaults.
        direction=entity.get("Direction") or "both",
        filters=Filters.from_json(json.loads(entity["Filters"]) if entity.get("Filters") else None),
        created_at=entity["CreatedAt"],
        updated_at=entity["UpdatedAt"],
        etag=entity.get("etag"),
    )


class MappingRepository:
    RECENT_SECONDS = 5.0  # how old a mapping read for a booking may be

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self._recent: Recent[str, Mapping] = Recent(self.RECENT_SECONDS)
        self._sharing: Recent[str, list[Mapping]] = Recent(self.RECENT_SECONDS)

    def get(self, resource_id: str) -> Mapping | None:
        entity = self.tables.get(TABLE, PARTITION, encode_key(resource_id))
        return _from_entity(entity) if entity else None

    def get_many(self, resource_ids: list[str]) -> dict[str, Mapping]:
        """The mappings of those resources that are mapped, by resource id, in few queries."""
        rows = self.tables.get_many(TABLE, PARTITION, [encode_key(r) for r in resource_ids])
        return {m.resource_id: m for m in map(_from_entity, rows.values())}

    def recent(self, resource_id: str) -> Mapping | None:
        """For the booking path: a mapping read in this process in the last few seconds, or a
        fresh read. Only found mappings are remembered, so a new mapping counts at once; a
        change made through another instance counts within ``RECENT_SECONDS``."""
        return self._recent.get(resource_id, lambda: self.get(resource_id))

    def list_page(
        self, *, page_size: int = 100, continuation: str | None = None, mailbox: str | None = None
    ) -> tuple[list[Mapping], str | None]:
        filter, parameters = "PartitionKey eq @pk", {"pk": PARTITION}
        if mailbox is not None:
            filter += " and Mailbox eq @mailbox"
            parameters["mailbox"] = mailbox.lower()
        page = self.tables.query_page(
            TABLE, filter, parameters, page_size=page_size, continuation=continuation
        )
        return [_from_entity(e) for e in page.items], page.continuation

    def all(self, *, enabled_only: bool = False) -> Iterator[Mapping]:
        filter = "PartitionKey eq @pk" + (" and Enabled eq true" if enabled_only else "")
        for entity in self.tables.query(TABLE, filter, {"pk": PARTITION}):
            yield _from_entity(entity)

    def by_mailbox(self, mailbox: str) -> list[Mapping]:
        return [
            _from_entity(e)
            for e in self.tables.query(
                TABLE,
                "PartitionKey eq @pk and Mailbox eq @mailbox",
                {"pk": PARTITION, "mailbox": mailbox.lower()},
            )
        ]

    def sharing(self, mailbox: str) -> list[Mapping]:
        """For the booking path: the mappings of a mailbox, read in this process in the last
        few seconds or fresh (as :meth:`recent`)."""
        return self._sharing.get(mailbox.lower(), lambda: self.by_mailbox(mailbox)) or []

    def _forget(self, mapping: Mapping) -> None:
        self._recent.forget(mapping.resource_id)
        self._sharing.forget(mapping.mailbox)

    def create(self, mapping: Mapping) -> Mapping:
        """Insert; ``ConflictError`` if the resource is already mapped."""
        created = replace(mapping, etag=self.tables.insert(TABLE, _to_entity(mapping)))
        self._forget(mapping)
        return created

    def replace(self, mapping: Mapping) -> Mapping:
        """Overwrite, guarded by ``mapping.etag``; ``ConflictError`` if it changed meanwhile."""
        if mapping.etag is None:
            raise ValueError("replace needs the ETag the mapping was read with")
        etag = self.tables.replace(TABLE, _to_entity(mapping), mapping.etag)
        self._forget(mapping)
        return replace(mapping, etag=etag)

    def delete(self, resource_id: str, etag: str | None = None) -> bool:
        deleted = self.tables.delete(TABLE, PARTITION, encode_key(resource_id), etag)
        self._recent.forget(resource_id)
        return deleted
