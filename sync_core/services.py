"""The process's shared clients, built once from the settings (the imperative shell's wiring)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TypeVar

from sync_core import mapping_events
from sync_core.config import Settings, get_settings
from sync_core.credentials.sources import source_for
from sync_core.graph import GraphClient
from sync_core.inbound.gate import NotificationGate
from sync_core.platform import Platform
from sync_core.store.blockers import BlockerRepository
from sync_core.store.health import HealthRepository
from sync_core.store.history import History
from sync_core.store.links import LinkRepository
from sync_core.store.mailbox_slots import SharedSlots
from sync_core.store.mappings import MappingRepository
from sync_core.store.open_work import OpenWork
from sync_core.store.queues import QueueStore
from sync_core.store.records import BookingStates, SequenceClock
from sync_core.store.subscriptions import CursorRepository, SubscriptionRepository
from sync_core.store.tables import TableStore

A = TypeVar("A")
B = TypeVar("B")


class Services:
    """Everything a handler needs; each part is built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def tables(self) -> TableStore:
        return TableStore.from_settings(self.settings.storage)

    @cached_property
    def queues(self) -> QueueStore:
        return QueueStore.from_settings(self.settings.storage)

    @cached_property
    def graph(self) -> GraphClient:
        # The per-mailbox limit is kept in Table Storage, so it holds across instances.
        return GraphClient.from_settings(
            self.settings, source_for(self.settings), SharedSlots(self.tables)
        )

    @cached_property
    def mappings(self) -> MappingRepository:
        return MappingRepository(self.tables)

    @cached_property
    def links(self) -> LinkRepository:
        return LinkRepository(self.tables)

    @cached_property
    def blockers(self) -> BlockerRepository:
        return BlockerRepository(self.tables)

    @cached_property
    def bookings(self) -> BookingStates:
        return BookingStates(self.tables)

    @cached_property
    def open_work(self) -> OpenWork:
        return OpenWork(self.tables)

    @cached_property
    def sequences(self) -> SequenceClock:
        return SequenceClock()

    @cached_property
    def history(self) -> History:
        return History(self.tables)

    @cached_property
    def health(self) -> HealthRepository:
        # Each change of a mapping's state is told to the platform, by the instance that made it.
        return HealthRepository(self.tables, lambda change: mapping_events.announce(self, change))

    @cached_property
    def subscriptions(self) -> SubscriptionRepository:
        return SubscriptionRepository(self.tables)

    @cached_property
    def cursors(self) -> CursorRepository:
        return CursorRepository(self.tables)

    @cached_property
    def gate(self) -> NotificationGate:
        return NotificationGate()

    @cached_property
    def platform(self) -> Platform:
        return Platform(self.settings, self.queues, self.sequences, self.history)

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=16, thread_name_prefix="io")

    def both(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        """Two independent storage calls at once (one round trip of waiting instead of two)."""
        pending = self._pool.submit(first)
        other = second()
        return pending.result(), other


@functools.cache
def services() -> Services:
    return Services(get_settings())
