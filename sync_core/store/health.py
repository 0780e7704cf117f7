"""Per-mapping health: the last success and the last error, as status and the doctor show them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sync_core.store.tables import TableStore, encode_key

log = logging.getLogger(__name__)

Health = Literal["ok", "error"]
RECENT_SECONDS = 60


@dataclass(frozen=True)
class MappingHealth:
    resource_id: str
    state: Health = "ok"
    last_success: datetime | None = None
    last_error: dict[str, Any] | None = None  # {code, message, hint}
    last_error_at: datetime | None = None


class HealthRepository:
    TABLE = "health"

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self._recent: dict[str, datetime] = {}  # resource → when this process last wrote "ok"

    def get(self, resource_id: str) -> MappingHealth:
        entity = self.tables.get(self.TABLE, "health", encode_key(resource_id))
        if entity is None:
            return MappingHealth(resource_id)
        return MappingHealth(
            resource_id=resource_id,
            state=entity.get("State", "ok"),
            last_success=entity.get("LastSuccess"),
            last_error=json.loads(entity["LastError"]) if entity.get("LastError") else None,
            last_error_at=entity.get("LastErrorAt"),
        )

    def success(self, resource_id: str) -> None:
        """The mapping worked just now: state ok; the last error stays for reference.

        Written at most once a minute per mapping while it stays healthy (status shows the
        last success to the minute), so a busy room does not pay a write per booking.
        """
        moment = datetime.now(UTC)
        written = self._recent.get(resource_id)
        if written is not None and (moment - written).total_seconds() < RECENT_SECONDS:
            return
        current = self.get(resource_id)
        self._write(current, state="ok", last_success=moment)
        self._recent[resource_id] = moment

    def failure(self, resource_id: str, error: dict[str, Any]) -> None:
        # The line the mapping-errors alert rule matches (infra/app/alerts.bicep).
        log.warning(
            "mapping.error resource=%s code=%s: %s",
            resource_id,
            error.get("code"),
            error.get("message"),
        )
        self._recent.pop(resource_id, None)
        current = self.get(resource_id)
        self._write(current, state="error", last_error=error, last_error_at=datetime.now(UTC))

    def clear(self, resource_id: str) -> None:
        self._recent.pop(resource_id, None)
        self.tables.delete(self.TABLE, "health", encode_key(resource_id))

    def _write(self, current: MappingHealth, **changes: Any) -> None:
        merged = {**current.__dict__, **changes}
        self.tables.upsert(
            self.TABLE,
            {
                "PartitionKey": "health",
                "RowKey": encode_key(current.resource_id),
                "State": merged["state"],
                "LastSuccess": merged["last_success"],
                "LastError": json.dumps(merged["last_error"]) if merged["last_error"] else None,
                "LastErrorAt": merged["last_error_at"],
            },
        )
