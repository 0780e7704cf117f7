"""History: what the service did, to what, and how it went; newest first, per resource or all."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sync_core.store.tables import TableStore, encode_key

Outcome = Literal["ok", "failed", "ignored", "conflict", "retrying", "parked", "repaired"]
ALL = "all"
_MAX_TICKS = 10**19  # row keys sort ascending: store the inverted time, so newest comes first


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    resource_id: str | None
    action: str  # e.g. booking.create, booking.update, blocker.upsert, mapping.put
    subject: str  # what it acted on: a booking id, an event id, a mailbox
    outcome: Outcome
    detail: str = ""
    error: dict[str, Any] | None = None  # {code, message, hint} for failures

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "resource_id": self.resource_id,
            "action": self.action,
            "subject": self.subject,
            "outcome": self.outcome,
            "detail": self.detail,
            "error": self.error,
        }


class History:
    TABLE = "history"

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables

    def add(
        self,
        resource_id: str | None,
        action: str,
        subject: str,
        outcome: Outcome,
        detail: str = "",
        error: dict[str, Any] | None = None,
    ) -> None:
        """Record what just happened (now)."""
        self.record(
            HistoryEntry(datetime.now(UTC), resource_id, action, subject, outcome, detail, error)
        )

    def record(self, entry: HistoryEntry) -> None:
        ticks = _MAX_TICKS - int(entry.at.timestamp() * 1_000_000)
        row = f"{ticks:020d}-{uuid.uuid4().hex[:8]}"
        entity = {
            "RowKey": row,
            "At": entry.at,
            "ResourceId": entry.resource_id,
            "Action": entry.action,
            "Subject": entry.subject,
            "Outcome": entry.outcome,
            "Detail": entry.detail[:4000],
            "Error": json.dumps(entry.error) if entry.error else None,
        }
        # Written twice: once to the global log, once to the resource's own, so both read
        # newest first with a plain partition scan.
        self.tables.upsert(self.TABLE, {**entity, "PartitionKey": ALL})
        if entry.resource_id:
            self.tables.upsert(
                self.TABLE, {**entity, "PartitionKey": "r-" + encode_key(entry.resource_id)}
            )

    def page(
        self,
        *,
        resource_id: str | None = None,
        page_size: int = 50,
        continuation: str | None = None,
    ) -> tuple[list[HistoryEntry], str | None]:
        partition = "r-" + encode_key(resource_id) if resource_id else ALL
        result = self.tables.query_page(
            self.TABLE,
            "PartitionKey eq @pk",
            {"pk": partition},
            page_size=page_size,
            continuation=continuation,
        )
        return [_entry(e) for e in result.items], result.continuation


def _entry(entity: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        at=entity["At"],
        resource_id=entity.get("ResourceId"),
        action=entity["Action"],
        subject=entity["Subject"],
        outcome=entity["Outcome"],
        detail=entity.get("Detail") or "",
        error=json.loads(entity["Error"]) if entity.get("Error") else None,
    )
