"""Links: which Outlook event projects which booking, and what was last written to it.

One entity per booking (partition ``link``) plus an index entity per projected event
(partition = mailbox, row = event id) so the inbound direction can recognise its own events.

The link is also the outbox of its booking's outcome: the write that makes the calendar's state
done (``active`` at ``applied_version``) records the events the platform is owed for it
(``booking.conflict``, ``booking.synced``), and they stay there until handed to the deliver path.
Only an active link owes anything: one that is pending or removed has no outcome to report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sync_core.domain.inbound import TRANSACTION_PREFIX, Own
from sync_core.store.records import get_text, put_text
from sync_core.store.tables import ConflictError, Entity, TableStore, decode_key, encode_key

LinkState = Literal["pending", "active", "removed"]


@dataclass(frozen=True)
class Owed:
    """An event for the platform (SPEC §3.3) that a link's write made due and that was not yet
    handed to the deliver path."""

    type: str
    resource_id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Link:
    booking_id: str
    resource_id: str
    mailbox: str
    generation: int  # how many events were created for this booking (a move creates a new one)
    transaction_id: str
    state: LinkState
    event_id: str | None = None
    applied_version: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""
    web_link: str | None = None
    join_url: str | None = None
    outbox: tuple[Owed, ...] = ()  # in order; emptied once handed over
    sequence: int = 0  # of the last event handed over for this booking
    change_key: str = ""  # the event's changeKey as Graph answered this service's last write
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    etag: str | None = None


def _entity(link: Link) -> Entity:
    entity: Entity = {
        "PartitionKey": "link",
        "RowKey": encode_key(link.booking_id),
        "BookingId": link.booking_id,
        "ResourceId": link.resource_id,
        "Mailbox": link.mailbox,
        "Generation": link.generation,
        "TransactionId": link.transaction_id,
        "State": link.state,
        "EventId": link.event_id,
        "AppliedVersion": link.applied_version,
        "Fingerprints": json.dumps(link.fingerprints, sort_keys=True),
        "ContentHash": link.content_hash,
        "WebLink": link.web_link,
        "JoinUrl": link.join_url,
        "UpdatedAt": link.updated_at,
        "Sequence": link.sequence,
        "ChangeKey": link.change_key,
    }
    if link.outbox:
        owed = [{"type": o.type, "resource_id": o.resource_id, "data": o.data} for o in link.outbox]
        put_text(entity, "Outbox", json.dumps(owed, separators=(",", ":")))
    return entity


def _link(entity: Entity) -> Link:
    return Link(
        booking_id=entity["BookingId"],
        resource_id=entity["ResourceId"],
        mailbox=entity["Mailbox"],
        generation=int(entity["Generation"]),
        transaction_id=entity["TransactionId"],
        state=entity["State"],
        event_id=entity.get("EventId"),
        applied_version=int(entity.get("AppliedVersion", 0)),
        fingerprints=json.loads(entity.get("Fingerprints") or "{}"),
        content_hash=entity.get("ContentHash", ""),
        web_link=entity.get("WebLink"),
        join_url=entity.get("JoinUrl"),
        outbox=tuple(
            Owed(str(o["type"]), str(o["resource_id"]), dict(o["data"]))
            for o in json.loads(get_text(entity, "Outbox") or "[]")
        ),
        updated_at=entity["UpdatedAt"],
        sequence=int(entity.get("Sequence", 0)),
        change_key=entity.get("ChangeKey") or "",
        etag=entity.get("etag"),
    )


class LinkRepository:
    TABLE = "links"
    INDEX = "projections"

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables

    def get(self, booking_id: str) -> Link | None:
        entity = self.tables.get(self.TABLE, "link", encode_key(booking_id))
        return _link(entity) if entity else None

    def save(self, link: Link) -> Link:
        """Insert (no ETag) or replace guarded by the ETag it was read with."""
        stamped = replace(link, updated_at=datetime.now(UTC))
        if link.state != "active":
            stamped = replace(stamped, outbox=())
        if link.etag is None:
            etag = self.tables.insert(self.TABLE, _entity(stamped))
        else:
            etag = self.tables.replace(self.TABLE, _entity(stamped), link.etag)
        return replace(stamped, etag=etag)

    def for_resource(self, resource_id: str) -> list[Link]:
        return [
            _link(e)
            for e in self.tables.query(
                self.TABLE,
                "PartitionKey eq @pk and ResourceId eq @resource",
                {"pk": "link", "resource": resource_id},
            )
        ]

    # -- the projection index: what this service wrote into a mailbox ---------------------------
    # One row per created event, keyed by its transaction id (known before Graph is called), so
    # an event is recognised as ours even if its id was not recorded yet.

    def index(
        self,
        mailbox: str,
        transaction: str,
        booking_id: str,
        event_id: str = "",
        digest: str = "",
        span: tuple[datetime, datetime] | None = None,
        change_key: str = "",
    ) -> None:
        self.tables.upsert(
            self.INDEX,
            {
                "PartitionKey": encode_key(mailbox),
                "RowKey": encode_key(transaction),
                "BookingId": booking_id,
                "EventId": event_id,
                "Digest": digest,
                "Start": span[0] if span else None,
                "End": span[1] if span else None,
                "ChangeKey": change_key,
            },
        )

    def unindex(self, mailbox: str, transaction: str) -> None:
        self.tables.delete(self.INDEX, encode_key(mailbox), encode_key(transaction), blind=True)

    def projections(self, mailbox: str) -> dict[str, Own]:
        """Everything this service wrote into ``mailbox``, by event id and by ``txn:`` +
        transaction id (for creates whose event id is not recorded yet)."""
        found: dict[str, Own] = {}
        for e in self.tables.query(self.INDEX, "PartitionKey eq @pk", {"pk": encode_key(mailbox)}):
            own = Own(
                str(e["BookingId"]),
                str(e.get("Digest") or ""),
                e.get("Start"),
                e.get("End"),
                str(e.get("ChangeKey") or ""),
            )
            found[TRANSACTION_PREFIX + decode_key(e["RowKey"])] = own
            if e.get("EventId"):
                found[str(e["EventId"])] = own
        return found


__all__ = ["ConflictError", "Link", "LinkRepository", "Owed"]
