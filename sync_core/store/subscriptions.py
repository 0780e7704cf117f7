"""Graph subscriptions this service holds (one per active mapping) and per-mailbox sync cursors."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_core.store.tables import ConflictError, Entity, TableStore, decode_key, encode_key


@dataclass(frozen=True)
class SubscriptionRecord:
    mailbox: str
    resource_id: str
    subscription_id: str
    client_state: str
    expires_at: datetime
    written_at: datetime | None = None  # the storage service's time of the row's last write


@dataclass(frozen=True)
class RenewalMark:
    """One renewal pass that renewed every subscription at once: each by-mailbox row last
    written at or before ``covers`` (storage time) expires at ``until``. One row instead of a
    row per subscription; rows written later (creates, single renewals, the pass's failures)
    carry their own expiry."""

    until: datetime
    covers: datetime


class SubscriptionRepository:
    """Two rows per subscription: by mailbox (what renewal walks) and by id (what a
    notification names), so a notification is checked with one point read. The live expiry is
    the by-mailbox row's, or the last :class:`RenewalMark`'s for the rows it covers."""

    TABLE = "subscriptions"
    MARK = ("renewal", "mark")

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        # Changes with every record write through this repository (never back to an earlier
        # value): a per-process memory of unknown ids holds only while it has not changed.
        self.writes = 0
        self._write_numbers = itertools.count(1)

    def by_mailbox(self, mailbox: str) -> SubscriptionRecord | None:
        entity = self.tables.get(self.TABLE, "mailbox", encode_key(mailbox))
        return _record(entity, self.last_mark()) if entity else None

    def by_mailboxes(self, mailboxes: list[str]) -> dict[str, SubscriptionRecord]:
        """The recorded subscriptions of those mailboxes, by mailbox, in few queries."""
        rows = self.tables.get_many(self.TABLE, "mailbox", [encode_key(m) for m in mailboxes])
        mark = self.last_mark() if rows else None
        return {r.mailbox: r for r in (_record(e, mark) for e in rows.values())}

    def by_id(self, subscription_id: str) -> SubscriptionRecord | None:
        """For checking a notification; ``expires_at`` is the one of its creation (use
        :meth:`by_mailbox` or :meth:`all` for the live expiry)."""
        entity = self.tables.get(self.TABLE, "id", encode_key(subscription_id))
        return _record(entity) if entity else None

    def all_by_id(self) -> dict[str, SubscriptionRecord]:
        """Every subscription under its id, in one query (a page per 1,000), for checking a
        batch of notifications that names many ids; ``expires_at`` as in :meth:`by_id`."""
        rows = self.tables.query(self.TABLE, "PartitionKey eq @pk", {"pk": "id"})
        return {record.subscription_id: record for record in map(_record, rows)}

    def all(self) -> list[SubscriptionRecord]:
        mark = self.last_mark()
        return [
            _record(e, mark)
            for e in self.tables.query(self.TABLE, "PartitionKey eq @pk", {"pk": "mailbox"})
        ]

    def last_mark(self) -> RenewalMark | None:
        entity = self.tables.get(self.TABLE, *self.MARK)
        return RenewalMark(entity["Until"], entity["Covers"]) if entity else None

    def renewed_together(
        self, renewed: list[SubscriptionRecord], others: list[SubscriptionRecord], until: datetime
    ) -> None:
        """After a pass renewed ``renewed`` to ``until``: the rows in ``others`` (read in the
        same pass, not renewed) are written again with their expiry, so the new mark, written
        last, covers exactly the renewed ones. Writes whichever side is smaller."""
        stamps = [r.written_at for r in renewed if r.written_at is not None]
        if len(others) > len(renewed) or len(stamps) < len(renewed):
            self.save_many(renewed, renewed_only=True)
            return
        self.save_many(others, renewed_only=True)
        mark, row = self.MARK
        self.tables.upsert(
            self.TABLE, {"PartitionKey": mark, "RowKey": row, "Until": until, "Covers": max(stamps)}
        )

    def save(self, record: SubscriptionRecord) -> None:
        self.save_many([record])

    def save_many(self, records: list[SubscriptionRecord], *, renewed_only: bool = False) -> None:
        """Both rows of each record, batched. After a renewal only the expiry changed, which
        only the by-mailbox row is read for, so ``renewed_only`` writes just that row."""
        rows = []
        for record in records:
            row = _entity(record)
            if not renewed_only:
                rows.append(
                    {**row, "PartitionKey": "id", "RowKey": encode_key(record.subscription_id)}
                )
            rows.append({**row, "PartitionKey": "mailbox", "RowKey": encode_key(record.mailbox)})
        try:
            self.tables.upsert_many(self.TABLE, rows)
        finally:
            self.writes = next(self._write_numbers)  # after the write: later checks see it

    # -- creations in flight: how a crash between Graph's answer and our record is noticed --

    def intend(self, mailbox: str) -> None:
        self.tables.upsert(
            self.TABLE,
            {"PartitionKey": "intent", "RowKey": encode_key(mailbox), "At": datetime.now(UTC)},
        )

    def claim_create(self, mailbox: str, fresh: timedelta) -> bool:
        """Record that this worker creates the mailbox's subscription, unless another one
        started to less than ``fresh`` ago (then False: wait for its record instead). Resources
        that share a mailbox, mapped at once on several instances, so make one subscription."""
        key = encode_key(mailbox)
        intent = {"PartitionKey": "intent", "RowKey": key, "At": datetime.now(UTC)}
        for _ in range(3):
            try:
                self.tables.insert(self.TABLE, intent)
                return True
            except ConflictError:
                held = self.tables.get(self.TABLE, "intent", key)
                if held is None:
                    continue  # fulfilled meanwhile: try again
                if datetime.now(UTC) - held["At"] < fresh:
                    return False
                try:  # a create that never finished: take it over
                    self.tables.replace(self.TABLE, intent, held["etag"])
                    return True
                except ConflictError:
                    return False
        return False

    def fulfilled(self, mailbox: str) -> None:
        self.tables.delete(self.TABLE, "intent", encode_key(mailbox), blind=True)

    def unfinished(self, older_than: timedelta) -> list[str]:
        """Mailboxes whose subscription create started long ago and never recorded its result."""
        cutoff = datetime.now(UTC) - older_than
        return [
            str(e["RowKey"])
            for e in self.tables.query(
                self.TABLE,
                "PartitionKey eq @pk and At lt @cutoff",
                {"pk": "intent", "cutoff": cutoff},
            )
        ]

    def clear_unfinished(self, older_than: timedelta) -> None:
        for key in self.unfinished(older_than):
            self.tables.delete(self.TABLE, "intent", key, blind=True)

    def intents(self) -> dict[str, datetime]:
        """Every mailbox with a subscription create in flight (or left unfinished) → its start."""
        return {
            decode_key(str(e["RowKey"])): e["At"]
            for e in self.tables.query(self.TABLE, "PartitionKey eq @pk", {"pk": "intent"})
        }

    def forget_id(self, subscription_id: str) -> None:
        """Drop the by-id row of a subscription that is not its mailbox's (a deleted duplicate)."""
        self.tables.delete(self.TABLE, "id", encode_key(subscription_id), blind=True)

    # -- sweeps: when a renewal pass lists Graph's subscriptions to delete those nobody owns --

    SWEEP = ("renewal", "sweep")
    SWEEP_REQUEST = ("renewal", "sweep-request")

    def sweep_due(self, interval: timedelta) -> bool:
        """No sweep yet, the last one is older than ``interval``, or one was asked for since."""
        last = self.tables.get(self.TABLE, *self.SWEEP)
        if last is None or last["At"] <= datetime.now(UTC) - interval:
            return True
        asked = self.tables.get(self.TABLE, *self.SWEEP_REQUEST)
        return asked is not None and asked["At"] >= last["At"]

    def request_sweep(self) -> None:
        """Ask the next renewal pass to sweep (a subscription was removed: a duplicate of it
        made by a concurrent create would otherwise stay until the daily sweep)."""
        partition, row = self.SWEEP_REQUEST
        self.tables.upsert(
            self.TABLE, {"PartitionKey": partition, "RowKey": row, "At": datetime.now(UTC)}
        )

    def swept(self, started: datetime) -> None:
        """A sweep that listed Graph at ``started`` is done; requests made since stay due."""
        partition, row = self.SWEEP
        self.tables.upsert(self.TABLE, {"PartitionKey": partition, "RowKey": row, "At": started})

    def delete(self, record: SubscriptionRecord) -> None:
        self.tables.delete(self.TABLE, "id", encode_key(record.subscription_id), blind=True)
        current = self.by_mailbox(record.mailbox)
        if current is not None and current.subscription_id == record.subscription_id:
            self.tables.delete(self.TABLE, "mailbox", encode_key(record.mailbox), blind=True)


def _entity(record: SubscriptionRecord) -> Entity:
    return {
        "Mailbox": record.mailbox,
        "ResourceId": record.resource_id,
        "SubscriptionId": record.subscription_id,
        "ClientState": record.client_state,
        "ExpiresAt": record.expires_at,
    }


def _record(entity: Entity, mark: RenewalMark | None = None) -> SubscriptionRecord:
    written = entity.get("timestamp")
    covered = mark is not None and written is not None and written <= mark.covers
    return SubscriptionRecord(
        mailbox=entity["Mailbox"],
        resource_id=entity["ResourceId"],
        subscription_id=entity["SubscriptionId"],
        client_state=entity["ClientState"],
        expires_at=mark.until if covered and mark else entity["ExpiresAt"],
        written_at=written,
    )


@dataclass(frozen=True)
class Cursor:
    """Where a mailbox's change feed stands, and who is reading it right now."""

    mailbox: str
    delta_link: str | None = None
    window_start: datetime | None = None
    round_started_at: datetime | None = None  # when the last completed read began
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_success: datetime | None = None
    # Set while the lease is held when a notification arrived during the read: the holder reads
    # once more before it gives the lease back.
    read_again: datetime | None = None
    etag: str | None = None


class CursorRepository:
    TABLE = "cursors"
    LEASE = 300  # seconds a read holds its mailbox; a dead worker's read is taken over after it

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables

    def get(self, mailbox: str) -> Cursor:
        return _cursor(mailbox, self.tables.get(self.TABLE, "cursor", encode_key(mailbox)))

    def get_many(self, mailboxes: list[str]) -> dict[str, Cursor]:
        """The cursors of those mailboxes (a blank one for a mailbox never read), few queries."""
        rows = self.tables.get_many(self.TABLE, "cursor", [encode_key(m) for m in mailboxes])
        return {m: _cursor(m, rows.get(encode_key(m))) for m in mailboxes}

    def acquire(
        self, mailbox: str, seconds: int | None = None, current: Cursor | None = None
    ) -> Cursor | None:
        """Take the mailbox's lease for ``seconds`` (``LEASE``); None if another worker holds
        it (ETag-guarded). ``current``: the cursor as just read, to save reading it again."""
        seconds = seconds or self.LEASE
        cursor = current or self.get(mailbox)
        now = datetime.now(UTC)
        if cursor.lease_owner and cursor.lease_until and cursor.lease_until > now:
            return None
        leased = replace(
            cursor, lease_owner=uuid.uuid4().hex, lease_until=now + timedelta(seconds=seconds)
        )
        try:
            return self._write(leased)
        except ConflictError:
            return None  # someone else took it between our read and write

    def ask_again(self, mailbox: str, requested: datetime | None) -> bool:
        """While another worker reads ``mailbox``: make sure it reads once more when done.
        True once that is owed (asked now, or already); False if nobody holds the lease (any
        more): then the caller reads itself."""
        for _ in range(20):
            cursor = self.get(mailbox)
            if not (cursor.lease_until and cursor.lease_until > datetime.now(UTC)):
                return False
            if cursor.read_again is not None:
                return True  # a read that starts after this moment is owed already
            try:
                self._write(replace(cursor, read_again=requested or datetime.now(UTC)))
            except ConflictError:
                continue
            return True
        return False

    def release(self, cursor: Cursor, *, read_on: bool = False, **changes: Any) -> Cursor | None:
        """Store the new position (``changes``) and give the lease back. With ``read_on``, when
        a notification asked for another read meanwhile (:meth:`ask_again`), keep the lease
        instead and return the cursor to read on from; without, that request is dropped (the
        read failed, and its retry reads anyway)."""
        try:
            self._write(replace(cursor, lease_owner=None, lease_until=None, **changes))
            return None
        except ConflictError:
            current = self.get(cursor.mailbox)
            if current.lease_owner != cursor.lease_owner or current.read_again is None:
                raise  # the lease lapsed and was taken over
        if not read_on:
            self._write(
                replace(current, lease_owner=None, lease_until=None, read_again=None, **changes)
            )
            return None
        until = datetime.now(UTC) + timedelta(seconds=self.LEASE)
        return self._write(replace(current, read_again=None, lease_until=until, **changes))

    def _write(self, cursor: Cursor) -> Cursor:
        entity: Entity = {
            "PartitionKey": "cursor",
            "RowKey": encode_key(cursor.mailbox),
            "DeltaLink": cursor.delta_link or "",
            "WindowStart": cursor.window_start,
            "RoundStartedAt": cursor.round_started_at,
            "LeaseOwner": cursor.lease_owner or "",
            "LeaseUntil": cursor.lease_until,
            "LastSuccess": cursor.last_success,
            "ReadAgain": cursor.read_again,
        }
        if cursor.etag is None:
            etag = self.tables.insert(self.TABLE, entity)
        else:
            etag = self.tables.replace(self.TABLE, entity, cursor.etag)
        return replace(cursor, etag=etag)


def _cursor(mailbox: str, entity: Entity | None) -> Cursor:
    if entity is None:
        return Cursor(mailbox)
    return Cursor(
        mailbox=mailbox,
        delta_link=entity.get("DeltaLink") or None,
        window_start=entity.get("WindowStart"),
        round_started_at=entity.get("RoundStartedAt"),
        lease_owner=entity.get("LeaseOwner") or None,
        lease_until=entity.get("LeaseUntil"),
        last_success=entity.get("LastSuccess"),
        read_again=entity.get("ReadAgain"),
        etag=entity.get("etag"),
    )
