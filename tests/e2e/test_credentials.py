"""Secret rotation end to end: the local function host runs ``credential_watch`` against the
simulated tenant and its Key Vault double while bookings keep syncing before, during and after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.defaults import MANAGED_IDENTITY_CLIENT_ID
from sandbox.platform import PlatformSim
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, LocalHost

SECRET_NAME = "graph-client-secret"


@pytest.fixture
def rotating_stack(
    tenant_env: dict[str, str], tenant: Sandbox, platform: PlatformSim
) -> Iterator[tuple[LocalHost, dict[str, Any]]]:
    """The host with its client secret in Key Vault, 20 days from expiry, rotation on."""
    old = tenant.control.add_secret("expiring soon", expires_in_days=20)
    tenant.control.set_vault_secret(SECRET_NAME, old["secretText"])
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_BASE_SECONDS": "1",
        "CLIENT_SECRET": "",
        "KEY_VAULT_URL": tenant.key_vault_url,
        "MANAGED_IDENTITY_CLIENT_ID": MANAGED_IDENTITY_CLIENT_ID,
        # The App Service managed identity protocol, as Azure sets it for the app.
        "IDENTITY_ENDPOINT": tenant.msi_endpoint,
        "IDENTITY_HEADER": "sandbox",
        "ROTATION_ENABLED": "true",
    }
    host = LocalHost(env).wait_ready()
    platform.product_url = host.base
    try:
        host.map("room-42", ROOM_A)
        yield host, old
    finally:
        host.stop()
        tenant.control.update_settings(credential_propagation_seconds=0)


def book(platform: PlatformSim) -> str:
    event = platform.booking_event(resource_id="room-42")
    assert platform.send_booking(event).status_code == 202
    return str(event["data"]["id"])


def synced_at(platform: PlatformSim, booking_id: str, timeout: float = 20.0) -> float:
    platform.wait_for(
        lambda got: any(
            r["type"] == "booking.synced" and r["data"]["booking_id"] == booking_id for r in got
        ),
        timeout=timeout,
    )
    return time.monotonic()


def test_rotation_in_the_function_host_while_bookings_sync(
    rotating_stack: tuple[LocalHost, dict[str, Any]], tenant: Sandbox, platform: PlatformSim
) -> None:
    host, old = rotating_stack
    synced_at(platform, book(platform))  # before

    # Entra takes 3 s to accept a new secret: the rotation waits for it, sync does not. (The
    # delay applies to every secret: wait until the one in use is accepted by a fresh sign-in.)
    tenant.control.update_settings(credential_propagation_seconds=3)
    time.sleep(3.2)
    outcome: dict[str, Any] = {}

    def run_watch() -> None:
        answer = requests.post(
            f"{host.base}/admin/functions/credential_watch",
            json={"input": ""},
            headers=KEY_HEADER,
            timeout=120,
        )
        outcome["status"] = answer.status_code
        outcome["finished"] = time.monotonic()

    runner = threading.Thread(target=run_watch)
    started = time.monotonic()
    runner.start()
    time.sleep(0.5)
    during = synced_at(platform, book(platform))
    runner.join(timeout=120)
    assert outcome.get("status") == 202, host.output()[-3000:]
    assert started < during < outcome["finished"], "the booking did not sync during rotation"

    synced_at(platform, book(platform))  # after: signed in with the new secret

    app = tenant.control.app()
    keys = {p["keyId"] for p in app["passwordCredentials"]}
    assert old["keyId"] not in keys
    latest = tenant.control.vault_secret(SECRET_NAME)[-1]
    assert latest["tags"]["keyId"] in keys
    assert latest["value"] != old["secretText"]

    expiring = platform.wait_for(lambda got: [r for r in got if r["type"] == "credential.expiring"])
    [event] = [r for r in expiring if r["type"] == "credential.expiring"]
    assert event["data"]["rotated"] is True
    assert event["data"]["days_left"] == 19
    assert event["data"]["resource_id"] == "_tenant"
    assert not event["problems"]

    output = host.output()
    assert "rotated the client secret" in output
    assert old["secretText"] not in output
    assert latest["value"] not in output
