"""The one place that talks to Azure Table Storage.

Repositories (``mappings.py`` and the ones that follow) build on :class:`TableStore`: it creates a
table the first time it is used, turns the SDK's ETag and existence errors into
:class:`ConflictError` / :class:`NotFoundError`, and pages queries with an opaque continuation
token. Filters always go through the SDK's ``@name`` parameter substitution: callers pass values,
never pre-formatted filter text.

Every integer property is stored as Edm.Int64, whatever its value: versions, sequences and
counters may pass 2^31 (platforms use epoch milliseconds and 64-bit row versions), and one type
per property keeps filters on it meaningful. Reads give plain ``int`` back, also for rows
written as Edm.Int32 before; integer filter parameters are compared as Int64 too.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode

from sync_core.config import StorageSettings
from sync_core.store.transport import storage_transport

Entity = dict[str, Any]
BATCH_LIMIT = 100  # entities per transaction, all in one partition
MANY_ROWS = 14  # row keys per query of get_many: with the partition, 15 comparisons
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what an integer property can hold

# Characters Table Storage forbids in PartitionKey / RowKey, plus '%' so the encoding is reversible.
_KEY_UNSAFE = {c: f"%{ord(c):02X}" for c in "%/\\#?"} | {
    chr(i): f"%{i:02X}" for i in list(range(0x20)) + list(range(0x7F, 0xA0))
}


def encode_key(value: str) -> str:
    """A Table Storage key for any string (reversible with :func:`decode_key`)."""
    return "".join(_KEY_UNSAFE.get(c, c) for c in value)


def decode_key(key: str) -> str:
    from urllib.parse import unquote

    return unquote(key)


class StoreError(Exception):
    """Table Storage could not do what was asked."""


class ConflictError(StoreError):
    """The entity changed since it was read (ETag mismatch), or it already exists."""


class NotFoundError(StoreError):
    """No entity with these keys."""


@dataclass(frozen=True)
class Page:
    items: list[Entity]
    continuation: str | None  # opaque; pass back to get the next page, None on the last page


def _encode_continuation(token: Mapping[str, str] | None) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(dict(token)).encode()).decode()


_TOKEN_PART = re.compile(r"[!-~]{0,1024}")


def _decode_continuation(token: str | None) -> dict[str, str] | None:
    if not token:
        return None
    if len(token) > 4096:
        raise ValueError("continuation token is not valid")
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("continuation token is not valid") from None
    # The service's own tokens are short printable ASCII under these two names; anything else
    # would only reach the service as odd request headers.
    if (
        not isinstance(value, dict)
        or not set(value) <= {"PartitionKey", "RowKey"}
        or not all(isinstance(v, str) and _TOKEN_PART.fullmatch(v) for v in value.values())
    ):
        raise ValueError("continuation token is not valid")
    return value


class TableStore:
    """Tables of one storage account; each table is created on first use."""

    def __init__(self, service: TableServiceClient) -> None:
        self._service = service
        self._ready: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, storage: StorageSettings) -> TableStore:
        if storage.connection_string:
            return cls(
                TableServiceClient.from_connection_string(
                    storage.connection_string, transport=storage_transport()
                )
            )
        from sync_core.identity import azure_credential

        assert storage.table_endpoint
        return cls(
            TableServiceClient(
                storage.table_endpoint,
                credential=azure_credential(storage.client_id),
                transport=storage_transport(),
            )
        )

    def table(self, name: str) -> TableClient:
        client = self._ready.get(name)
        if client is None:
            with self._lock:
                client = self._ready.get(name)
                if client is None:
                    client = self._service.create_table_if_not_exists(name)
                    self._ready[name] = client
        return client

    def ping(self) -> None:
        """Raise if the account cannot be reached (used by health checks and the doctor)."""
        next(iter(self._service.list_tables(results_per_page=1).by_page()), None)

    # -- single entities ---------------------------------------------------------------------

    def get(self, table: str, partition: str, row: str) -> Entity | None:
        try:
            return _plain(self.table(table).get_entity(partition, row))
        except ResourceNotFoundError:
            return None

    def get_many(self, table: str, partition: str, rows: Iterable[str]) -> dict[str, Entity]:
        """The entities of ``rows`` in one partition that exist, by row key: one query per
        ``MANY_ROWS`` keys (a filter may hold at most 15 comparisons), instead of a read each."""
        wanted = list(dict.fromkeys(rows))
        found: dict[str, Entity] = {}
        for i in range(0, len(wanted), MANY_ROWS):
            chunk = wanted[i : i + MANY_ROWS]
            names = {f"r{n}": row for n, row in enumerate(chunk)}
            either = " or ".join(f"RowKey eq @{name}" for name in names)
            for entity in self.query(
                # Spaces around the parentheses: the SDK finds each @name as a word of its own.
                table,
                f"PartitionKey eq @pk and ( {either} )",
                {"pk": partition, **names},
            ):
                found[entity["RowKey"]] = entity
        return found

    def insert(self, table: str, entity: Entity) -> str:
        """Create; :class:`ConflictError` if it exists. Returns the new ETag."""
        try:
            return str(self.table(table).create_entity(_writable(entity))["etag"])
        except ResourceExistsError:
            raise ConflictError(
                f"{table}: an entry {entity['PartitionKey']}/{entity['RowKey']} already exists"
            ) from None

    def replace(self, table: str, entity: Entity, etag: str) -> str:
        """Replace only if unchanged since ``etag`` was read; returns the new ETag."""
        try:
            result = self.table(table).update_entity(
                _writable(entity),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            raise ConflictError(
                f"{table}: {entity['PartitionKey']}/{entity['RowKey']} was changed by someone "
                "else; read it again and retry"
            ) from None
        except ResourceNotFoundError:
            raise NotFoundError(
                f"{table}: {entity['PartitionKey']}/{entity['RowKey']} no longer exists"
            ) from None
        return str(result["etag"])

    def upsert(self, table: str, entity: Entity) -> str:
        """Write regardless of what is there (for records with a single writer)."""
        entity = _writable(entity)
        return str(self.table(table).upsert_entity(entity, mode=UpdateMode.REPLACE)["etag"])

    def upsert_many(self, table: str, entities: list[Entity]) -> None:
        """Write many entities with as few requests as the service allows (100 per partition)."""
        by_partition: dict[str, list[Entity]] = {}
        for entity in entities:
            by_partition.setdefault(str(entity["PartitionKey"]), []).append(entity)
        client = self.table(table)
        chunks = [
            group[start : start + BATCH_LIMIT]
            for group in by_partition.values()
            for start in range(0, len(group), BATCH_LIMIT)
        ]

        def send(chunk: list[Entity]) -> None:
            client.submit_transaction(
                [("upsert", _writable(e), {"mode": UpdateMode.REPLACE}) for e in chunk]
            )

        with ThreadPoolExecutor(max_workers=min(4, len(chunks) or 1)) as pool:
            list(pool.map(send, chunks))

    def delete(
        self, table: str, partition: str, row: str, etag: str | None = None, *, blind: bool = False
    ) -> bool:
        """Delete; with ``etag`` only if unchanged. False if it did not exist.

        ``blind`` skips finding out whether it existed (one request instead of two).
        """
        client = self.table(table)
        try:
            if blind:
                client.delete_entity(partition, row)
            elif etag is None:
                # The SDK answers a missing entity with success; look first to report it.
                if self.get(table, partition, row) is None:
                    return False
                client.delete_entity(partition, row)
            else:
                client.delete_entity(
                    partition, row, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except ResourceModifiedError:
            raise ConflictError(
                f"{table}: {partition}/{row} was changed by someone else; read it again and retry"
            ) from None
        except ResourceNotFoundError:
            return False
        return True

    # -- queries --------------------------------------------------------------------------------

    def query_page(
        self,
        table: str,
        filter: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        page_size: int = 100,
        continuation: str | None = None,
    ) -> Page:
        """One page of a query; ``filter`` has ``@name`` placeholders filled from ``parameters``."""
        filter, values = _typed_filter(filter, parameters)
        pages = (
            self.table(table)
            .query_entities(filter, parameters=values, results_per_page=page_size)
            .by_page(continuation_token=_decode_continuation(continuation))  # type: ignore[arg-type]
        )
        try:
            items = [_plain(e) for e in next(pages)]
        except StopIteration:
            return Page([], None)
        except HttpResponseError as exc:
            if continuation and exc.status_code == 400:
                raise ValueError("continuation token is not valid") from None
            raise StoreError(f"{table}: query failed ({exc.reason})") from exc
        return Page(items, _encode_continuation(pages.continuation_token))  # type: ignore[attr-defined]

    def query(
        self, table: str, filter: str, parameters: Mapping[str, Any] | None = None
    ) -> Iterator[Entity]:
        """Every entity matching ``filter``, page after page."""
        filter, values = _typed_filter(filter, parameters)
        for entity in self.table(table).query_entities(
            filter, parameters=values, results_per_page=1000
        ):
            yield _plain(entity)


_READ_ONLY = ("etag", "timestamp")


def _plain(entity: Any) -> Entity:
    """A plain dict with the ETag under ``etag`` and the service's last-write time under
    ``timestamp`` (the SDK keeps both in metadata); Int64 properties as plain ``int``."""
    plain = {
        key: int(value.value) if isinstance(value, EntityProperty) and _is_int64(value) else value
        for key, value in entity.items()
    }
    plain["etag"] = entity.metadata["etag"]
    plain["timestamp"] = entity.metadata.get("timestamp")
    return plain


def _is_int64(value: EntityProperty) -> bool:
    return bool(value.edm_type == EdmType.INT64)


def _int64(name: str, value: int) -> EntityProperty:
    if not INT64_MIN <= value <= INT64_MAX:
        # Callers validate at the edge (a booking's version is at most 2^63-1); this is the
        # backstop that names the property instead of letting the SDK fail obscurely.
        raise ValueError(f"{name} = {value} does not fit a 64-bit integer property")
    return EntityProperty(value, EdmType.INT64)


def _writable(entity: Entity) -> Entity:
    """An entity to write: without the keys :func:`_plain` adds, so a read can be written back,
    and with every integer typed as Edm.Int64 (the SDK would send Edm.Int32 and refuse 2^31)."""
    return {
        key: _int64(key, value) if type(value) is int else value
        for key, value in entity.items()
        if key not in _READ_ONLY
    }


def _typed_filter(filter: str, parameters: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The filter with integer parameters written as Int64 literals (``5L``), the type every
    integer property has; the SDK would write small ones as Int32, which matches no Int64."""
    values = dict(parameters or {})
    for name, value in list(values.items()):
        if type(value) is int:
            literal = f"{_int64(name, value).value}L"
            filter = " ".join(literal if word == f"@{name}" else word for word in filter.split(" "))
            del values[name]
    return filter, values
