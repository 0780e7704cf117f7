"""Shared fixtures: a real Azurite for the test session, clean storage per test, valid settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.azurite import Azurite
from sync_core.store.queues import QueueStore
from sync_core.store.tables import TableStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite on free ports for the whole test session."""
    server = Azurite().start()
    yield server
    server.stop()


def wipe(connection_string: str) -> None:
    tables = TableServiceClient.from_connection_string(connection_string)
    for table in tables.list_tables():
        tables.delete_table(table.name)
    queues = QueueServiceClient.from_connection_string(connection_string)
    for queue in queues.list_queues():
        queues.delete_queue(queue.name)


@pytest.fixture
def storage(azurite: Azurite) -> str:
    """Azurite's connection string, with every table and queue removed before the test."""
    wipe(azurite.connection_string)
    return azurite.connection_string


@pytest.fixture
def tables(storage: str) -> TableStore:
    return TableStore(TableServiceClient.from_connection_string(storage))


@pytest.fixture
def queues(storage: str) -> QueueStore:
    return QueueStore(QueueServiceClient.from_connection_string(storage))


def example_settings() -> dict[str, str]:
    """The safe local values of local.settings.example.json."""
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    return {k: str(v) for k, v in values.items()}


@pytest.fixture
def settings_env(storage: str) -> dict[str, str]:
    """A complete, valid set of settings pointing at the test Azurite."""
    env = example_settings()
    env["AzureWebJobsStorage"] = storage
    return env
