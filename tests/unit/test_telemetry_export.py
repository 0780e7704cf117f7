"""configure_export: the Azure Monitor distro is set up only where Application Insights is named.

The distro is replaced at the module edge (``azure.monitor.opentelemetry`` in ``sys.modules``, the
module configure_export imports), so nothing here sets up a real exporter or a global provider.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from sync_core import telemetry

CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x/"
DISTRO = "azure.monitor.opentelemetry"


@pytest.fixture
def distro(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A stand-in distro recording each configure_azure_monitor call; a fresh once-per-process."""
    calls: list[dict[str, Any]] = []
    fake = ModuleType(DISTRO)
    fake.configure_azure_monitor = lambda **options: calls.append(options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, DISTRO, fake)
    monkeypatch.setattr(telemetry, "_export_decided", threading.Event())
    yield calls


def test_nothing_without_a_connection_string(distro: list[dict[str, Any]]) -> None:
    assert telemetry.configure_export({}) is False
    assert telemetry.configure_export({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False
    assert distro == []
    # and nothing decided: a later call that names Application Insights still sets it up
    assert telemetry.configure_export({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION})
    assert len(distro) == 1


def test_without_a_connection_string_the_distro_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "_export_decided", threading.Event())
    imported: list[str] = []
    monkeypatch.setattr(importlib, "import_module", imported.append)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    assert telemetry.configure_export() is False  # the process environment, as at start-up
    assert imported == []


def test_the_connection_string_sets_up_azure_monitor_once(distro: list[dict[str, Any]]) -> None:
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": f" {CONNECTION} "}
    assert telemetry.configure_export(env) is True
    assert telemetry.configure_export(env) is False  # start-up, then the first span: once
    [options] = distro
    assert options["connection_string"] == CONNECTION
    assert "credential" not in options  # the distro's own: connection string only
    # no second span per Graph call from requests/urllib3, no storage calls with their keys
    assert options["instrumentation_options"] == {
        "azure_sdk": {"enabled": False},
        "requests": {"enabled": False},
        "urllib": {"enabled": False},
        "urllib3": {"enabled": False},
    }


def test_entra_authentication_uses_the_named_identity(
    distro: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []

    def azure_credential(client_id: str | None) -> str:
        asked.append(client_id)
        return "cred"

    monkeypatch.setattr("sync_core.identity.azure_credential", azure_credential)
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION,
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=abc-123;Authorization=AAD",
    }
    assert telemetry.configure_export(env) is True
    assert asked == ["abc-123"]
    assert distro[0]["credential"] == "cred"


def test_not_twice_where_the_functions_worker_sets_it_up(distro: list[dict[str, Any]]) -> None:
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION,
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    }
    assert telemetry.configure_export(env) is False
    assert distro == []


def test_a_failing_set_up_never_stops_the_app(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**options: Any) -> None:
        raise RuntimeError("no network")

    fake = ModuleType(DISTRO)
    fake.configure_azure_monitor = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, DISTRO, fake)
    monkeypatch.setattr(telemetry, "_export_decided", threading.Event())
    assert (
        telemetry.configure_export({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION}) is False
    )
    assert "Azure Monitor could not be set up" in caplog.text
