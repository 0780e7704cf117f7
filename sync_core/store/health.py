"""Per-mapping health: the last success and the last error, as status and the doctor show them,
and the changes of state the platform is told about.

A mapping is ``ok`` or ``error``; apart from that, its change feed (the Graph subscription of
its mailbox) may be marked *lost*. Every write of a row carries the ETag it was read with, so
when several instances see the same change at once, one write wins, the others read again and
find nothing left to change. Only the winner reports the change (``on_change``):

- ``mapping.error``: ok → error. A new error while already in error (another code, another
  message) is stored for status and reported no further;
- ``mapping.recovered``: error → ok, on the first success after the error (written at once,
  however recently the mapping last worked);
- ``subscription.lost``: the feed marked lost. It is reported once until the feed is restored
  (:meth:`HealthRepository.restored`), which clears the mark without an event of its own; while
  it is lost, successes are recorded but the mapping stays in error, so ``mapping.recovered``
  means working again, change feed included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sync_core.store.recent import Recent
from sync_core.store.tables import (
    ConflictError,
    Entity,
    NotFoundError,
    TableStore,
    decode_key,
    encode_key,
)

log = logging.getLogger(__name__)

Health = Literal["ok", "error"]
ChangeKind = Literal["mapping.error", "mapping.recovered", "subscription.lost"]
RECENT_SECONDS = 60  # a healthy mapping's last success is rewritten at most this often
HEALTHY_SECONDS = 5.0  # how long this process trusts that a mapping it saw healthy still is
ATTEMPTS = 8  # reads and guarded writes of one row before giving up (others keep changing it)


@dataclass(frozen=True)
class MappingHealth:
    resource_id: str
    state: Health = "ok"
    last_success: datetime | None = None
    last_error: dict[str, Any] | None = None  # {code, message, hint}
    last_error_at: datetime | None = None
    subscription_lost: bool = False


@dataclass(frozen=True)
class HealthChange:
    """A change of a mapping's state, reported once across instances."""

    kind: ChangeKind
    resource_id: str
    error: dict[str, Any] | None = None  # the error that caused it (mapping.error, .lost)


class HealthRepository:
    TABLE = "health"

    def __init__(
        self, tables: TableStore, on_change: Callable[[HealthChange], object] | None = None
    ) -> None:
        self.tables = tables
        self.on_change = on_change
        # Mappings this process saw healthy in the last few seconds: a burst of successes costs
        # one read, and a recovery recorded elsewhere is still seen within that time.
        self._healthy: Recent[str, bool] = Recent(HEALTHY_SECONDS)

    def get(self, resource_id: str) -> MappingHealth:
        return _health(resource_id, self._read(resource_id))

    def success(self, resource_id: str) -> None:
        """The mapping worked just now: state ok (the last error stays for reference).

        Reads the row unless this process saw the mapping healthy in the last
        ``HEALTHY_SECONDS``, so a recovery is seen within seconds, whichever instance recorded
        the error; while the mapping stays healthy, the last success is rewritten at most once
        a minute (status shows it to the minute), so a busy room does not pay a write, or a
        read, per booking.
        """
        if self._healthy.peek(resource_id):
            return
        moment = datetime.now(UTC)
        state: list[str] = []

        def change(current: MappingHealth) -> tuple[dict[str, Any], ChangeKind | None] | None:
            recovering = current.state == "error" and not current.subscription_lost
            state[:] = ["ok" if recovering else current.state]
            if not recovering and _recent(current.last_success, moment):
                return None
            return {"state": state[0], "last_success": moment}, (
                "mapping.recovered" if recovering else None
            )

        self._update(resource_id, change)
        if state == ["ok"]:
            self._healthy.put(resource_id, True)

    def failure(self, resource_id: str, error: dict[str, Any]) -> None:
        # The line the mapping-errors alert rule matches (infra/app/alerts.bicep).
        log.warning(
            "mapping.error resource=%s code=%s: %s",
            resource_id,
            error.get("code"),
            error.get("message"),
        )
        self._healthy.forget(resource_id)
        moment = datetime.now(UTC)

        def change(current: MappingHealth) -> tuple[dict[str, Any], ChangeKind | None]:
            kind: ChangeKind | None = "mapping.error" if current.state == "ok" else None
            return {"state": "error", "last_error": error, "last_error_at": moment}, kind

        self._update(resource_id, change, error)

    def lost(self, resource_id: str, error: dict[str, Any] | None = None) -> bool:
        """The mapping's change feed could not be restored; True when this call marked it."""

        def change(current: MappingHealth) -> tuple[dict[str, Any], ChangeKind | None] | None:
            if current.subscription_lost:
                return None
            return {"subscription_lost": True}, "subscription.lost"

        return self._update(resource_id, change, error)

    def restored(self, resource_id: str) -> bool:
        """The mapping's change feed is live again; True when it had been marked lost."""

        def change(current: MappingHealth) -> tuple[dict[str, Any], ChangeKind | None] | None:
            if not current.subscription_lost:
                return None
            return {"subscription_lost": False}, None

        return self._update(resource_id, change)

    def lost_ones(self) -> set[str]:
        """The resource ids whose change feed is marked lost."""
        found = self.tables.query(
            self.TABLE,
            "PartitionKey eq @p and SubscriptionLost eq @lost",
            {"p": "health", "lost": True},
        )
        return {decode_key(str(e["RowKey"])) for e in found}

    def clear(self, resource_id: str) -> None:
        self.tables.delete(self.TABLE, "health", encode_key(resource_id))

    # -- guarded writes ------------------------------------------------------------------------

    def _read(self, resource_id: str) -> Entity | None:
        return self.tables.get(self.TABLE, "health", encode_key(resource_id))

    def _update(
        self,
        resource_id: str,
        change: Callable[[MappingHealth], tuple[dict[str, Any], ChangeKind | None] | None],
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Read the row, ask ``change`` what to write (None: nothing), write it with the ETag
        read (an insert when there is no row), and report the change when this write made it.
        Read again when another instance wrote in between. True when this call wrote."""
        for _ in range(ATTEMPTS):
            entity = self._read(resource_id)
            current = _health(resource_id, entity)
            decided = change(current)
            if decided is None:
                return False
            fields, kind = decided
            row = _row({**current.__dict__, **fields})
            try:
                if entity is None:
                    self.tables.insert(self.TABLE, row)
                else:
                    self.tables.replace(self.TABLE, row, str(entity["etag"]))
            except (ConflictError, NotFoundError):
                continue  # another instance wrote (or cleared) it since: decide again
            if kind is not None:
                self._report(HealthChange(kind, resource_id, error))
            return True
        log.warning("health of %s kept changing under this write; not recorded", resource_id)
        return False

    def _report(self, change: HealthChange) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception:  # the state is recorded; telling the platform must not undo the caller
            log.exception("could not report %s of %s", change.kind, change.resource_id)


def _recent(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and (now - moment).total_seconds() < RECENT_SECONDS


def _health(resource_id: str, entity: Entity | None) -> MappingHealth:
    if entity is None:
        return MappingHealth(resource_id)
    return MappingHealth(
        resource_id=resource_id,
        state=entity.get("State", "ok"),
        last_success=entity.get("LastSuccess"),
        last_error=json.loads(entity["LastError"]) if entity.get("LastError") else None,
        last_error_at=entity.get("LastErrorAt"),
        subscription_lost=bool(entity.get("SubscriptionLost")),
    )


def _row(merged: dict[str, Any]) -> Entity:
    return {
        "PartitionKey": "health",
        "RowKey": encode_key(merged["resource_id"]),
        "State": merged["state"],
        "LastSuccess": merged["last_success"],
        "LastError": json.dumps(merged["last_error"]) if merged["last_error"] else None,
        "LastErrorAt": merged["last_error_at"],
        "SubscriptionLost": merged["subscription_lost"],
    }
