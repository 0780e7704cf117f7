"""Shared fixtures: a real Azurite for the test session, clean storage per test, valid settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.azurite import Azurite
from devhost.stack import HostProcess, example_settings, start_platform
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.config import Settings, StorageSettings, load_settings
from sync_core.store.queues import APPLY_BOOKING, DELIVER, SYNC_MAILBOX, QueueStore
from sync_core.store.tables import TableStore

if TYPE_CHECKING:
    from tests.integration.quiet_world import World

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_KEY = "test-function-key"
KEY_HEADER = {"x-functions-key": FUNCTION_KEY}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A passed test shows what it prints (soak counts, fuzz totals), not its captured logs."""
    if report.passed:
        report.sections = [s for s in report.sections if "stdout" in s[0]]


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
    return TableStore.from_settings(StorageSettings(connection_string=storage))


@pytest.fixture
def queues(storage: str) -> QueueStore:
    return QueueStore.from_settings(StorageSettings(connection_string=storage))


NO_LOCAL_SETTINGS = Path("/nonexistent/local.settings.json")


def settings_with(**overrides: str | None) -> Settings:
    """The example settings with some changed (None removes one), validated."""
    env = example_settings()
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return load_settings(env, NO_LOCAL_SETTINGS)


@pytest.fixture
def settings_env(storage: str) -> dict[str, str]:
    """A complete, valid set of settings pointing at the test Azurite."""
    env = example_settings()
    env["AzureWebJobsStorage"] = storage
    return env


# `python -m devhost` in a subprocess, isolated from the shell's settings, for tests over real
# HTTP: started as `make run` and the benchmarks start it (devhost/stack.py).
LocalHost = HostProcess


@pytest.fixture
def function_host(tenant_env: dict[str, str]) -> Iterator[LocalHost]:
    """The product's function app served by the local host, with a function key, against
    Azurite and the simulated tenant."""
    env = tenant_env | {"FUNCTIONS_KEY": FUNCTION_KEY}
    host = LocalHost(env).wait_ready()
    yield host
    host.stop()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One simulated Microsoft 365 tenant (login + Graph over HTTPS) for the session."""
    server = Sandbox(state_dir=tmp_path_factory.mktemp("m365")).start()
    yield server
    server.stop()


@pytest.fixture
def tenant(sandbox: Sandbox) -> Sandbox:
    """The simulated tenant, reset to its seed (rooms, people; no faults, no subscriptions)."""
    sandbox.control.reset()
    sandbox.control.clear_faults()
    sandbox.control.clear_requests()
    return sandbox


@pytest.fixture
def tenant_env(settings_env: dict[str, str], tenant: Sandbox) -> dict[str, str]:
    """Valid settings pointing at Azurite and the simulated tenant."""
    return settings_env | tenant.env()


ROOM_A = "room.berlin@contoso.example"
ROOM_B = "berlin.havel@contoso.example"


@pytest.fixture
def platform(tenant_env: dict[str, str]) -> Iterator[PlatformSim]:
    sim = start_platform(tenant_env, FUNCTION_KEY)
    yield sim
    sim.stop()


def product_env(tenant_env: dict[str, str], platform: PlatformSim) -> dict[str, str]:
    """Settings for a local host against the simulated tenant and platform, with a function key
    and quick retries."""
    return tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_BASE_SECONDS": "1",
    }


@pytest.fixture
def stack(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> Iterator[tuple[LocalHost, PlatformSim, Sandbox]]:
    env = product_env(tenant_env, platform) | {"EVENT_CATEGORY": "Booked via platform"}
    host = LocalHost(env).wait_ready()
    platform.product_url = host.base
    host.map("room-42", ROOM_A)
    host.map("room-43", ROOM_B)
    yield host, platform, tenant
    host.stop()


@pytest.fixture
def quiet_world(
    request: pytest.FixtureRequest,
    tenant_env: dict[str, str],
    tenant: Sandbox,
    platform: PlatformSim,
    storage: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    """The product run in this process with its queues drained by the test
    (tests/integration/quiet_world.py); the module's ``WINDOW_DAYS`` sets the sync window (30 days
    without one)."""
    from tests.integration.quiet_world import World, notification_sink  # it imports this module

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    with notification_sink() as sink:
        env = tenant_env | {
            "PLATFORM_WEBHOOK_URL": platform.webhook_url,
            "PUBLIC_BASE_URL": sink,
            "SYNC_WINDOW_DAYS": str(getattr(request.module, "WINDOW_DAYS", 30)),
            "RETRY_BASE_SECONDS": "1",
            "RETRY_ATTEMPTS": "3",
        }
        built = World(tenant=tenant, platform=platform, env=env, storage=storage)
        yield built
        built.close()


def wait(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def drained(host: LocalHost) -> bool:
    """Whether the host's work queues are empty. A message counts in its queue until its
    function has run (also while it runs, or waits for a retry or for its read's horizon), so
    once they are empty, everything queued before has had its effect."""
    store = QueueStore.from_settings(
        StorageSettings(connection_string=host.env["AzureWebJobsStorage"])
    )
    return all(store.depth(queue) == 0 for queue in (APPLY_BOOKING, SYNC_MAILBOX, DELIVER))


def control_booking(host: LocalHost, platform: PlatformSim, resource_id: str = "room-42") -> str:
    """A positive control for "nothing happened" after bookings were sent: a new booking sent
    now must be synced, and then no work may be left queued. The earlier bookings were queued
    before their 202, so by then whatever they caused is done, however slow the worker.
    Returns the control's booking id."""
    booking_id = send_and_sync(
        platform, platform.booking_event(resource_id=resource_id, title="Control")
    )
    wait(lambda: drained(host), what="the queued work to be done")
    return booking_id


def send_and_sync(platform: PlatformSim, event: dict[str, Any], timeout: float = 15.0) -> str:
    """Send a booking event (202) and wait for its ``booking.synced``; the booking's id."""
    assert platform.send_booking(event).status_code == 202
    booking_id = str(event["data"]["id"])
    wait(
        lambda: [
            r for r in platform.received("booking.synced") if r["data"]["booking_id"] == booking_id
        ],
        timeout=timeout,
        what=f"booking {booking_id} to be synced",
    )
    return booking_id
