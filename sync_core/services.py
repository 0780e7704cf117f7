"""The process's shared clients, built once from the settings (the imperative shell's wiring)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sync_core.config import Settings, get_settings
from sync_core.store.mappings import MappingRepository
from sync_core.store.queues import QueueStore
from sync_core.store.tables import TableStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    tables: TableStore
    queues: QueueStore
    mappings: MappingRepository

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        tables = TableStore.from_settings(settings.storage)
        return cls(
            settings=settings,
            tables=tables,
            queues=QueueStore.from_settings(settings.storage),
            mappings=MappingRepository(tables),
        )


@functools.cache
def services() -> Services:
    return Services.from_settings(get_settings())
