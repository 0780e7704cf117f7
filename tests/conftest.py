"""Shared fixtures: a real Azurite for the test session, clean storage per test, valid settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.azurite import Azurite, free_port, port_open
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.config import Settings, StorageSettings, load_settings
from sync_core.store.queues import QueueStore
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


def example_settings() -> dict[str, str]:
    """The safe local values of local.settings.example.json."""
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    return {k: str(v) for k, v in values.items()}


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


class LocalHost:
    """`python -m devhost` in a subprocess, for tests over real HTTP."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path = ROOT) -> None:

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Graph (the simulated tenant) calls this host back: it is the public base URL.
        self.env = {**env, "PUBLIC_BASE_URL": self.base}
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobs")}
        full_env.update(self.env)

        # A file, not a pipe: nobody reads while tests run, and a full pipe would block the host.
        self.log = tempfile.NamedTemporaryFile(prefix="devhost-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(self.port), *args],
            cwd=cwd,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> LocalHost:

        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"devhost exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("devhost did not start in time")
            time.sleep(0.05)
        return self

    def map(self, resource_id: str, mailbox: str, privacy: str | None = "full") -> None:
        """Map a resource through the admin API (which also subscribes to the mailbox)."""
        body = {"mailbox": mailbox} | ({"privacy": privacy} if privacy else {})
        requests.put(
            f"{self.base}/api/admin/mappings/{resource_id}",
            json=body,
            headers=KEY_HEADER,
            timeout=30,
        ).raise_for_status()

    def stop(self) -> str:

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.output()


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
    sim = PlatformSim(
        platform_secret=tenant_env["PLATFORM_WEBHOOK_SECRET"],
        booking_secret=tenant_env["BOOKING_WEBHOOK_SECRET"],
        function_key=FUNCTION_KEY,
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def stack(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> Iterator[tuple[LocalHost, PlatformSim, Sandbox]]:
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_BASE_SECONDS": "1",
        "EVENT_CATEGORY": "Booked via platform",
    }
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
