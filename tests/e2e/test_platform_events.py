"""What the platform hears about trouble, over the local host, the simulated tenant and platform:
``mapping.error`` once when a mapping starts failing (however many operations fail),
``mapping.recovered`` once when it works again, ``subscription.lost`` once while its change
feed cannot be restored; and ``POST /api/admin/platform/test`` (HTTP and CLI) with a platform
that answers, fails, or cannot be reached."""

from __future__ import annotations

import json
from typing import Any

import requests

from devhost.azurite import free_port
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import (
    FUNCTION_KEY,
    KEY_HEADER,
    ROOM_B,
    LocalHost,
    drained,
    send_and_sync,
    wait,
)
from tests.e2e.test_cli import cli

Stack = tuple[LocalHost, PlatformSim, Sandbox]


def of(received: list[dict[str, Any]], kind: str, resource_id: str) -> list[dict[str, Any]]:
    return [
        r for r in received if r["type"] == kind and r["data"].get("resource_id") == resource_id
    ]


def settle(host: LocalHost) -> None:
    """Wait until every queued piece of work (deliveries included) is done."""
    wait(lambda: drained(host), timeout=30, what="the queued work to be done")


def run_function(host: LocalHost, name: str) -> None:
    """Run a timer function once through the local host (it answers when the run is over)."""
    answer = requests.post(
        f"{host.base}/admin/functions/{name}", json={"input": ""}, headers=KEY_HEADER, timeout=60
    )
    assert answer.status_code == 202, answer.text


def test_a_failing_mapping_is_reported_once_and_its_recovery_once(stack: Stack) -> None:
    host, platform, tenant = stack
    tenant.control.set_mailbox_state(ROOM_B, "access_denied")
    for n in range(3):
        event = platform.booking_event(resource_id="room-43", title=f"Denied {n}")
        assert platform.send_booking(event).status_code == 202
    platform.wait_for(lambda got: len(of(got, "booking.failed", "room-43")) == 3, timeout=30)
    settle(host)
    received = platform.received()
    errors = of(received, "mapping.error", "room-43")
    assert len(errors) == 1, errors
    data = errors[0]["data"]
    assert data["mailbox"] == ROOM_B
    assert data["error"]["code"] == "ErrorAccessDenied"
    assert data["error"]["hint"] and data["error"]["message"]
    assert isinstance(data["sequence"], int)
    assert not errors[0]["problems"]
    assert of(received, "mapping.recovered", "room-43") == []

    # Works again: the next booking is written, and the recovery reported once.
    tenant.control.set_mailbox_state(ROOM_B, "ok")
    send_and_sync(platform, platform.booking_event(resource_id="room-43", title="Allowed"))
    platform.wait_for(lambda got: of(got, "mapping.recovered", "room-43"), timeout=15)
    send_and_sync(platform, platform.booking_event(resource_id="room-43", title="Again"))
    settle(host)
    received = platform.received()
    recovered = of(received, "mapping.recovered", "room-43")
    assert len(recovered) == 1
    assert recovered[0]["data"]["mailbox"] == ROOM_B and not recovered[0]["problems"]
    assert recovered[0]["data"]["sequence"] > data["sequence"]
    assert len(of(received, "mapping.error", "room-43")) == 1
    # The healthy mapping beside it was never reported.
    assert of(received, "mapping.error", "room-42") == []
    assert of(received, "mapping.recovered", "room-42") == []
    status = requests.get(f"{host.base}/api/admin/status", headers=KEY_HEADER, timeout=30).json()
    states = {m["resource_id"]: m["state"] for m in status["mappings"]}
    assert states["room-43"] == "ok"


def subscription_of(tenant: Sandbox, mailbox: str) -> dict[str, Any]:
    return next(s for s in tenant.control.subscriptions() if mailbox in s["resource"].lower())


def test_a_lost_change_feed_is_reported_once_until_it_is_restored(stack: Stack) -> None:
    host, platform, tenant = stack
    settle(host)
    refuse = {"status": 403, "code": "ExtensionError", "message": "Access is denied.", "count": 50}
    fault = tenant.control.add_fault(r"/subscriptions$", "POST", **refuse)
    # Graph removes the subscription; creating it again is refused.
    tenant.control.send_lifecycle(subscription_of(tenant, ROOM_B)["id"], "subscriptionRemoved")
    platform.wait_for(lambda got: of(got, "subscription.lost", "room-43"), timeout=30)
    settle(host)
    # The renewal pass tries again and is refused again: nothing new to report.
    run_function(host, "renew_subscriptions")
    hits = next(f for f in tenant.control.faults() if f["id"] == fault["id"])["hits"]
    assert hits >= 2
    settle(host)
    received = platform.received()
    lost = of(received, "subscription.lost", "room-43")
    assert len(lost) == 1
    assert lost[0]["data"]["mailbox"] == ROOM_B and not lost[0]["problems"]
    assert len(of(received, "mapping.error", "room-43")) == 1
    assert of(received, "mapping.recovered", "room-43") == []
    assert of(received, "subscription.lost", "room-42") == []

    # Allowed again: the next pass creates it, and the full read that follows is a success.
    tenant.control.clear_faults()
    run_function(host, "renew_subscriptions")
    platform.wait_for(lambda got: of(got, "mapping.recovered", "room-43"), timeout=30)
    settle(host)
    received = platform.received()
    assert len(of(received, "subscription.lost", "room-43")) == 1
    assert len(of(received, "mapping.recovered", "room-43")) == 1

    # Lost once more after it was restored: reported once more.
    tenant.control.add_fault(r"/subscriptions$", "POST", **refuse)
    tenant.control.send_lifecycle(subscription_of(tenant, ROOM_B)["id"], "subscriptionRemoved")
    platform.wait_for(lambda got: len(of(got, "subscription.lost", "room-43")) == 2, timeout=30)


def test_platform_test_over_http_and_the_command_line(stack: Stack) -> None:
    host, platform, _ = stack
    settle(host)
    platform.clear()

    def test_once() -> requests.Response:
        return requests.post(f"{host.base}/api/admin/platform/test", headers=KEY_HEADER, timeout=30)

    answer = test_once()
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["delivered"] is True and result["status"] == 204
    assert isinstance(result["latency_ms"], int) and "error" not in result
    (arrived,) = platform.received("platform.test")  # verified: signed like every delivery
    assert not arrived["problems"] and isinstance(arrived["data"]["sequence"], int)

    platform.fail_next(1, 500)
    failed = test_once().json()
    assert failed["delivered"] is False and failed["status"] == 500
    assert "500" in failed["error"]
    # Not queued, not retried: the next one is the platform's next request, and nothing is left.
    assert test_once().json()["delivered"] is True
    settle(host)
    assert len(platform.received("platform.test")) == 2
    assert [f["status"] for f in platform.failed()] == [500]
    history = requests.get(f"{host.base}/api/admin/history", headers=KEY_HEADER, timeout=30).json()[
        "value"
    ]
    tests = [e["outcome"] for e in history if e["action"] == "deliver.platform.test"]
    assert tests == ["ok", "failed", "ok"]  # newest first
    assert requests.post(f"{host.base}/api/admin/platform/test", timeout=30).status_code == 401

    # The command line: here with the app's settings, and against the host's admin API.
    local = cli(host.env, "platform-test")
    assert local.returncode == 0, local.stderr
    assert "delivered: HTTP 204" in local.stdout
    remote = cli({}, "--url", host.base, "--key", FUNCTION_KEY, "platform-test", "--json")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["delivered"] is True
    wait(lambda: len(platform.received("platform.test")) == 4, what="the CLI's test events")

    platform.fail_next(1, 503)
    refused = cli({}, "--url", host.base, "--key", FUNCTION_KEY, "platform-test")
    assert refused.returncode == 1
    assert "NOT delivered (HTTP 503" in refused.stdout and "hint:" in refused.stdout

    nowhere = host.env | {"PLATFORM_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook"}
    unreachable = cli(nowhere, "platform-test", "--json")
    assert unreachable.returncode == 1, unreachable.stderr
    document = json.loads(unreachable.stdout)
    assert document["delivered"] is False and document["status"] is None
    assert "could not be reached" in document["error"]


def test_the_healthy_room_a_stays_silent(stack: Stack) -> None:
    """Bookings that work send no mapping event at all (the control: their booking.synced)."""
    host, platform, _ = stack
    for n in range(3):
        send_and_sync(platform, platform.booking_event(resource_id="room-42", title=f"Fine {n}"))
    settle(host)
    kinds = {r["type"] for r in platform.received()}
    assert not kinds & {"mapping.error", "mapping.recovered", "subscription.lost"}
