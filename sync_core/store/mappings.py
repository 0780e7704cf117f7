"""Mappings: which platform resource is kept in step with which Microsoft 365 mailbox."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sync_core.clock import iso, now
from sync_core.store.recent import Recent
from sync_core.store.tables import ConflictError, Entity, NotFoundError, TableStore, encode_key

Privacy = Literal["full", "busy_only"]
PRIVACY_LEVELS: tuple[Privacy, ...] = ("full", "busy_only")

TABLE = "mappings"
PARTITION = "mapping"  # one partition: an admin lists them all; 10,000 rows page fine
# One row per mapped mailbox (row key: the address), naming the resource that holds it: the
# insert that fails when the row exists is what keeps one mailbox to one resource across instances.
CLAIM_PARTITION = "mailbox"
# How long a claim may wait for its mapping to be written; after that a claim whose resource does
# not map the mailbox is stale (its writer died) and another resource may take it over.
CLAIM_GRACE = timedelta(minutes=1)
CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Mapping:
    resource_id: str
    mailbox: str  # SMTP address, lower case
    privacy: Privacy
    enabled: bool
    created_at: datetime
    updated_at: datetime
    etag: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "resource_id": self.resource_id,
            "mailbox": self.mailbox,
            "privacy": self.privacy,
            "enabled": self.enabled,
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
        "CreatedAt": mapping.created_at,
        "UpdatedAt": mapping.updated_at,
    }


def _from_entity(entity: Entity) -> Mapping:
    return Mapping(
        resource_id=entity["ResourceId"],
        mailbox=entity["Mailbox"],
        privacy=entity["Privacy"],
        enabled=bool(entity["Enabled"]),
        created_at=entity["CreatedAt"],
        updated_at=entity["UpdatedAt"],
        etag=entity.get("etag"),
    )


@dataclass(frozen=True)
class MailboxClaim:
    mailbox: str
    resource_id: str
    claimed_at: datetime
    etag: str | None = None


class MailboxTaken(Exception):
    """Another resource holds the mailbox (its mapping exists or is being written)."""

    def __init__(self, mailbox: str, resource_id: str) -> None:
        super().__init__(f"mailbox {mailbox} is held by resource {resource_id!r}")
        self.mailbox = mailbox
        self.resource_id = resource_id


def _claim_entity(claim: MailboxClaim) -> Entity:
    return {
        "PartitionKey": CLAIM_PARTITION,
        "RowKey": encode_key(claim.mailbox),
        "Mailbox": claim.mailbox,
        "ResourceId": claim.resource_id,
        "ClaimedAt": claim.claimed_at,
    }


class MappingRepository:
    RECENT_SECONDS = 5.0  # how old a mapping read for a booking may be

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self._recent: Recent[str, Mapping] = Recent(self.RECENT_SECONDS)

    def get(self, resource_id: str) -> Mapping | None:
        entity = self.tables.get(TABLE, PARTITION, encode_key(resource_id))
        return _from_entity(entity) if entity else None

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

    def create(self, mapping: Mapping) -> Mapping:
        """Insert; ``ConflictError`` if the resource is already mapped."""
        created = replace(mapping, etag=self.tables.insert(TABLE, _to_entity(mapping)))
        self._recent.forget(mapping.resource_id)
        return created

    def replace(self, mapping: Mapping) -> Mapping:
        """Overwrite, guarded by ``mapping.etag``; ``ConflictError`` if it changed meanwhile."""
        if mapping.etag is None:
            raise ValueError("replace needs the ETag the mapping was read with")
        etag = self.tables.replace(TABLE, _to_entity(mapping), mapping.etag)
        self._recent.forget(mapping.resource_id)
        return replace(mapping, etag=etag)

    def delete(self, resource_id: str, etag: str | None = None) -> bool:
        deleted = self.tables.delete(TABLE, PARTITION, encode_key(resource_id), etag)
        self._recent.forget(resource_id)
        return deleted

    # -- one mailbox, one resource ---------------------------------------------------------------
    #
    # A mapping is written to a mailbox only after its resource holds the mailbox's claim row:
    # ``claim`` before the write, ``confirm`` after it, ``release`` once the mapping no longer
    # names the mailbox (deleted or moved). Every step is an insert-or-fail or an ETag-guarded
    # write, so the rule holds across processes. Mappings older than the claim rows get theirs
    # on their next write; until then ``by_mailbox`` finds them.

    def claim_of(self, mailbox: str) -> MailboxClaim | None:
        entity = self.tables.get(TABLE, CLAIM_PARTITION, encode_key(mailbox.lower()))
        if entity is None:
            return None
        return MailboxClaim(
            mailbox=entity["Mailbox"],
            resource_id=entity["ResourceId"],
            claimed_at=entity["ClaimedAt"],
            etag=entity.get("etag"),
        )

    def claim(self, mailbox: str, resource_id: str) -> MailboxClaim:
        """Hold the mailbox for the resource before its mapping is written to it.

        A claim of another resource stands while that resource's mapping names the mailbox, or
        while it is younger than :data:`CLAIM_GRACE` (its mapping is being written); then
        :class:`MailboxTaken` names that resource. An older claim whose resource does not map
        the mailbox was left by a writer that died, and is taken over."""
        mailbox = mailbox.lower()
        holder = resource_id
        for _ in range(CLAIM_ATTEMPTS):
            held = self.claim_of(mailbox)
            fresh = MailboxClaim(mailbox, resource_id, now())
            try:
                if held is None:
                    return replace(fresh, etag=self.tables.insert(TABLE, _claim_entity(fresh)))
                if held.resource_id == resource_id:
                    return held
                holder = held.resource_id
                if not self._stale(held):
                    raise MailboxTaken(mailbox, holder)
                assert held.etag is not None
                etag = self.tables.replace(TABLE, _claim_entity(fresh), held.etag)
                return replace(fresh, etag=etag)
            except (ConflictError, NotFoundError):
                continue  # the row changed between the read and the write: read it again
        raise MailboxTaken(mailbox, holder)

    def confirm(self, mailbox: str, resource_id: str) -> MailboxClaim:
        """After the mapping was written: rewrite the claim (ETag-guarded), so that a takeover
        decided on a read from before the write fails. :class:`MailboxTaken` if another
        resource took the mailbox meanwhile; the caller then undoes its write."""
        mailbox = mailbox.lower()
        for _ in range(CLAIM_ATTEMPTS):
            held = self.claim_of(mailbox)
            fresh = MailboxClaim(mailbox, resource_id, now())
            try:
                if held is None:  # released by a concurrent delete of this resource
                    return replace(fresh, etag=self.tables.insert(TABLE, _claim_entity(fresh)))
                if held.resource_id != resource_id:
                    raise MailboxTaken(mailbox, held.resource_id)
                assert held.etag is not None
                etag = self.tables.replace(TABLE, _claim_entity(fresh), held.etag)
                return replace(fresh, etag=etag)
            except (ConflictError, NotFoundError):
                continue
        raise MailboxTaken(mailbox, resource_id)

    def release(self, mailbox: str, resource_id: str) -> bool:
        """Give the mailbox up if the resource holds it and its mapping no longer names it
        (deleted, moved away, or never written). ETag-guarded: a claim rewritten meanwhile (a
        new write of the same mapping, a takeover) stays."""
        held = self.claim_of(mailbox)
        if held is None or held.resource_id != resource_id:
            return False
        current = self.get(resource_id)
        if current is not None and current.mailbox == held.mailbox:
            return False
        try:
            return self.tables.delete(TABLE, CLAIM_PARTITION, encode_key(held.mailbox), held.etag)
        except ConflictError:
            return False

    def _stale(self, claim: MailboxClaim) -> bool:
        if now() - claim.claimed_at <= CLAIM_GRACE:
            return False
        holder = self.get(claim.resource_id)
        return holder is None or holder.mailbox != claim.mailbox
