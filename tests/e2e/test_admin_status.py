"""Status and doctor over real HTTP, and every SPEC §5 error surfacing in status, history and the
doctor with its hint. Local host + Azurite + the simulated tenant and platform."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, ROOM_B, LocalHost, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]
TEGEL = "berlin.tegel@contoso.example"
ISAR = "munich.isar@contoso.example"


def admin(host: LocalHost, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{host.base}/api/admin/{path}", headers=KEY_HEADER, timeout=60, **kwargs
    )


def status(host: LocalHost) -> dict[str, Any]:
    answer = admin(host, "GET", "status")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    return dict(answer.json())


def rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["resource_id"]: m for m in document["mappings"]}


def doctor(host: LocalHost) -> tuple[str, dict[str, dict[str, Any]]]:
    answer = admin(host, "GET", "doctor")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for check in body["checks"]:
        assert check["status"] in ("pass", "warn", "fail")
        if check["status"] != "pass":
            assert check["hint"], f"{check['name']} says what to do"
    return body["result"], {c["name"]: c for c in body["checks"]}


def history(host: LocalHost, resource_id: str) -> list[dict[str, Any]]:
    answer = admin(host, "GET", "history", params={"resource_id": resource_id})
    return list(answer.json()["value"])


def healthy(host: LocalHost, *resources: str) -> dict[str, Any]:
    """Wait until each mapping's first read succeeded; the status then."""

    def ready() -> dict[str, Any] | None:
        document = status(host)
        found = rows(document)
        return document if all(found[r]["last_success"] for r in resources) else None

    return dict(wait(ready, what="the first successful reads"))


def expire_default_secret(tenant: Sandbox) -> None:
    for secret in tenant.control.app()["passwordCredentials"]:
        tenant.control.expire_secret(secret["keyId"])


# -- a healthy set-up ------------------------------------------------------------------------------


def test_status_of_a_healthy_setup(stack: Stack) -> None:
    host, _, _ = stack
    document = healthy(host, "room-42", "room-43")
    assert document["state"] == "ok"
    assert document["summary"] == {
        "mappings": 2,
        "connected": 2,
        "failed": 0,
        "deactivated": 0,
        "ok": 2,
        "error": 0,
    }
    credential = document["credential"]
    assert credential["kind"] == "client_secret"
    assert credential["state"] == "ok"
    assert credential["days_left"] in (728, 729)  # the sandbox's secret: 730 days from yesterday
    expires = datetime.fromisoformat(credential["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=728) < expires - datetime.now(UTC) < timedelta(days=730)
    assert credential["error"] is None
    room = rows(document)["room-42"]
    assert room["state"] == "ok"
    assert room["mailbox"] == ROOM_A
    assert room["last_error"] is None
    last = datetime.fromisoformat(room["last_success"].replace("Z", "+00:00"))
    assert datetime.now(UTC) - last < timedelta(minutes=1)
    until = datetime.fromisoformat(room["subscription_expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=70) < until - datetime.now(UTC) <= timedelta(minutes=4230)
    assert [q["queue"] for q in document["work"]["queues"]] == [
        "apply-booking",
        "sync-mailbox",
        "deliver",
    ]
    assert document["work"]["parked"] == 0

    admin(host, "PUT", "mappings/room-43", json={"mailbox": ROOM_B, "enabled": False})
    after = rows(status(host))["room-43"]
    assert after["state"] == "deactivated"
    assert after["subscription_expires_at"] is None


def test_doctor_passes_on_a_healthy_setup(stack: Stack) -> None:
    host, _, _ = stack
    result, checks = doctor(host)
    assert result == "pass", checks
    assert list(checks) == [
        "token",
        "permissions",
        f"mailbox {ROOM_A}",
        f"mailbox {ROOM_B}",
        "subscriptions",
        "notification_url",
        "storage",
        "key_vault",
        "credential",
    ]
    assert "Calendars.ReadWrite" in checks["permissions"]["message"]
    assert checks["subscriptions"]["message"] == "2 of 2 alive"
    assert "echoes the validation token" in checks["notification_url"]["message"]


# -- SPEC §5 errors --------------------------------------------------------------------------------


def test_mailbox_errors_surface_in_status_history_and_doctor(stack: Stack) -> None:
    host, _, tenant = stack
    for resource, mailbox in (("room-44", TEGEL), ("room-45", ISAR)):
        assert admin(host, "PUT", f"mappings/{resource}", json={"mailbox": mailbox}).ok
    healthy(host, "room-42", "room-43", "room-44", "room-45")
    tenant.control.set_mailbox_state(ROOM_B, "access_denied")  # out of the app's scope
    tenant.control.set_mailbox_state(TEGEL, "not_enabled")  # unlicensed / on-premises
    tenant.control.delete_mailbox(ISAR)  # gone from the tenant
    expected = {
        "room-43": ("ErrorAccessDenied", "mail-enabled security group"),
        "room-44": ("MailboxNotEnabledForRESTAPI", "Exchange Online licence"),
        "room-45": ("ErrorInvalidUser", "resource mailbox address"),
    }

    # The next sweep reads every mailbox: each failure lands in status and history on its own.
    assert requests.post(
        f"{host.base}/admin/functions/safety_sweep", json={"input": ""}, headers=KEY_HEADER,
        timeout=30,
    ).status_code == 202  # fmt: skip

    def all_failed() -> dict[str, Any] | None:
        document = status(host)
        found = rows(document)
        return document if all(found[r]["state"] == "error" for r in expected) else None

    document = wait(all_failed, timeout=30, what="the sweep to find the broken mailboxes")
    assert document["state"] == "error"
    assert document["summary"]["error"] == 3
    found = rows(document)
    assert found["room-42"]["state"] == "ok"
    for resource, (code, hint) in expected.items():
        error = found[resource]["last_error"]
        assert error["code"] == code
        assert hint in error["hint"]
        assert found[resource]["mailbox"] in error["message"]
        assert error["at"]
        entry = next(e for e in history(host, resource) if e["outcome"] == "failed")
        assert entry["error"]["code"] == code
        assert hint in entry["error"]["hint"]

    # An admin's resync says it at once (422), and records it too.
    answer = admin(host, "POST", "mappings/room-44/resync")
    assert answer.status_code == 422
    assert answer.json()["code"] == "MailboxNotEnabledForRESTAPI"
    assert history(host, "room-44")[0]["action"] == "mapping.check"

    result, checks = doctor(host)
    assert result == "fail"
    assert checks[f"mailbox {ROOM_A}"]["status"] == "pass"
    for resource, (code, hint) in expected.items():
        mailbox = found[resource]["mailbox"]
        check = checks[f"mailbox {mailbox}"]
        assert check["status"] == "fail"
        assert check["code"] == code
        assert check["message"].startswith(f"{resource}: ")
        assert hint in check["hint"]


def test_an_expired_secret_is_named_in_status_doctor_and_history(stack: Stack) -> None:
    host, _, tenant = stack
    healthy(host, "room-42")
    expire_default_secret(tenant)

    # The running app still holds a token: status reads the expiry from the registration.
    credential = status(host)["credential"]
    assert credential["state"] == "error"
    assert credential["error"]["code"] in ("SecretExpired", "AADSTS7000222")
    assert "expired" in credential["message"]
    assert "Certificates & secrets" in credential["hint"]
    assert status(host)["state"] == "error"

    # The doctor asks for a new token, which Entra refuses.
    result, checks = doctor(host)
    assert result == "fail"
    assert checks["token"]["status"] == "fail"
    assert checks["token"]["code"] == "AADSTS7000222"
    assert "has expired" in checks["token"]["message"]
    assert "Certificates & secrets" in checks["token"]["hint"]
    assert checks["credential"]["status"] == "fail"
    assert checks["permissions"]["status"] == "warn"

    # Once the cached token is rejected, the work fails with the same named error.
    tenant.control.add_fault("/calendar$", "GET", status=401, code="InvalidAuthenticationToken")
    answer = admin(host, "POST", "mappings/room-42/resync")
    assert answer.status_code == 502
    assert answer.json()["code"] == "AADSTS7000222"
    assert "Certificates & secrets" in answer.json()["hint"]
    entry = history(host, "room-42")[0]
    assert entry["outcome"] == "failed"
    assert entry["error"]["code"] == "AADSTS7000222"
    room = rows(status(host))["room-42"]
    assert room["state"] == "error"
    assert room["last_error"]["code"] == "AADSTS7000222"
    assert status(host)["credential"]["state"] == "error"


def test_a_rejected_token_is_named_with_its_hint(stack: Stack) -> None:
    host, _, tenant = stack
    healthy(host, "room-42")
    tenant.control.add_fault(
        "/calendar$", "GET", status=401, code="InvalidAuthenticationToken", count=4, mailbox=ROOM_A
    )
    answer = admin(host, "POST", "mappings/room-42/resync")
    assert answer.status_code == 502
    problem = answer.json()
    assert problem["code"] == "InvalidAuthenticationToken"
    assert "GRAPH_ENDPOINT" in problem["hint"]
    entry = history(host, "room-42")[0]
    assert entry["error"]["code"] == "InvalidAuthenticationToken"
    assert rows(status(host))["room-42"]["last_error"]["code"] == "InvalidAuthenticationToken"
    result, checks = doctor(host)
    assert checks[f"mailbox {ROOM_A}"]["code"] == "InvalidAuthenticationToken"
    assert result == "fail"


def test_doctor_names_missing_permissions_and_where_to_grant_them(stack: Stack) -> None:
    host, _, tenant = stack
    tenant.control.set_roles(["Calendars.ReadWrite"])
    result, checks = doctor(host)
    assert result == "fail"
    permissions = checks["permissions"]
    assert permissions["status"] == "fail"
    assert "Place.Read.All" in permissions["message"]
    assert "User.Read.All" in permissions["message"]
    assert "Calendars.ReadWrite" not in permissions["message"]
    assert "API permissions" in permissions["hint"]
    assert "Grant admin consent" in permissions["hint"]
    # Without Application.*, the registration (and so the expiry) cannot be read.
    assert checks["credential"]["status"] == "warn"
    assert "Application.ReadWrite.OwnedBy" in checks["credential"]["hint"]

    tenant.control.set_roles(["Place.Read.All", "User.Read.All", "Application.ReadWrite.OwnedBy"])
    result, checks = doctor(host)
    assert "Calendars.ReadWrite" in checks["permissions"]["message"]
    assert checks[f"mailbox {ROOM_A}"]["status"] == "fail"
    assert checks[f"mailbox {ROOM_A}"]["code"] == "ErrorAccessDenied"
    assert "admin consent for Calendars.ReadWrite" in checks[f"mailbox {ROOM_A}"]["hint"]
    assert checks["credential"]["status"] == "pass"

    tenant.control.set_roles(["Calendars.ReadWrite", "Place.Read.All", "User.Read.All"])
    result, checks = doctor(host)
    assert result == "warn"
    assert checks["permissions"]["status"] == "warn"
    assert "Application.ReadWrite.OwnedBy" in checks["permissions"]["message"]


def test_doctor_finds_a_lost_subscription(stack: Stack) -> None:
    host, _, tenant = stack
    lost = next(s for s in tenant.control.subscriptions() if ROOM_B in s["resource"].lower())
    tenant.control.expire_subscription(lost["id"])
    result, checks = doctor(host)
    assert result == "fail"
    check = checks["subscriptions"]
    assert check["status"] == "fail"
    assert check["message"].startswith("1 of 2 alive; room-43: ")
    assert "resync" in check["hint"]
    assert admin(host, "POST", "mappings/room-43/resync").json()["subscription"] == "recreated"
    assert doctor(host)[1]["subscriptions"]["status"] == "pass"


# -- parked work -----------------------------------------------------------------------------------


@pytest.fixture
def one_try(tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox) -> Iterator[Stack]:
    """The stack with one try per work item, so that a failure is parked at once."""
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_ATTEMPTS": "1",
    }
    host = LocalHost(env).wait_ready()
    platform.product_url = host.base
    admin(host, "PUT", "mappings/room-42", json={"mailbox": ROOM_A}).raise_for_status()
    admin(host, "PUT", "mappings/room-43", json={"mailbox": ROOM_B}).raise_for_status()
    yield host, platform, tenant
    host.stop()


def test_parked_work_shows_per_queue_and_per_mapping(one_try: Stack) -> None:
    host, platform, tenant = one_try
    healthy(host, "room-42", "room-43")
    tenant.control.add_fault(r"/events$", "POST", status=502, mailbox=ROOM_A)
    platform.fail_next(1, 500)  # the booking.failed that follows is not accepted either
    booking = platform.booking_event(resource_id="room-42")
    platform.send_booking(booking)

    def parked() -> dict[str, Any] | None:
        document = status(host)
        return document if document["work"]["parked"] >= 2 else None

    document = wait(parked, timeout=20, what="the booking and its delivery to be parked")
    queues = {q["queue"]: q for q in document["work"]["queues"]}
    assert queues["apply-booking"]["parked"] == 1
    assert queues["deliver"]["parked"] == 1
    room = rows(document)["room-42"]
    assert room["parked"] == 2
    assert rows(document)["room-43"]["parked"] == 0
    assert room["state"] == "error"
    assert room["last_error"]["code"] == "BadGateway"
    assert "retried" in room["last_error"]["hint"]
    outcomes = {(e["action"], e["outcome"]) for e in history(host, "room-42")}
    assert ("booking.apply", "parked") in outcomes
