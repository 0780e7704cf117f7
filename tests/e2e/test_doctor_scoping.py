"""The doctor with calendars granted by Exchange Online RBAC for Applications (MAILBOX_SCOPE=rbac):
the token carries no Calendars.ReadWrite, access is proven per mapped mailbox, a mailbox outside
the scope is a scoping problem, and Teams is checked where bookings ask for it. Local host +
Azurite + the simulated tenant and platform."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.admin.doctor import Check, check_permissions
from sync_core.config import ConfigError
from tests.conftest import FUNCTION_KEY, ROOM_A, ROOM_B, LocalHost, settings_with, wait
from tests.e2e.test_admin_status import admin, doctor, healthy

Stack = tuple[LocalHost, PlatformSim, Sandbox]
TEGEL = "berlin.tegel@contoso.example"  # its calendar offers no Teams (the sandbox's seed)
ENTRA_ROLES = ["Place.Read.All", "User.Read.All", "Application.ReadWrite.OwnedBy"]


def texts(checks: dict[str, dict[str, Any]]) -> str:
    return " ".join(f"{c['message']} {c['hint']}" for c in checks.values())


def never_asks_for_tenant_wide_calendars(checks: dict[str, dict[str, Any]]) -> None:
    said = texts(checks)
    assert "admin consent for Calendars.ReadWrite" not in said
    assert "add Calendars.ReadWrite" not in said
    assert "missing application permissions" not in said


@pytest.fixture
def scoped(tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox) -> Iterator[Stack]:
    """The stack with MAILBOX_SCOPE=rbac; Exchange grants Calendars.ReadWrite for the two mapped
    rooms and Tegel, and Entra ID grants no calendar role."""
    tenant.control.scope_calendars([ROOM_A, ROOM_B, TEGEL])
    assert "Calendars.ReadWrite" not in tenant.control.app()["roles"]
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_BASE_SECONDS": "1",
        "MAILBOX_SCOPE": "rbac",
    }
    host = LocalHost(env).wait_ready()
    platform.product_url = host.base
    host.map("room-42", ROOM_A)
    host.map("room-43", ROOM_B)
    yield host, platform, tenant
    host.stop()


def test_doctor_passes_with_calendars_from_exchange(scoped: Stack) -> None:
    host, _, tenant = scoped
    healthy(host, "room-42", "room-43")  # the product itself syncs with the scoped grant
    since = tenant.control.requests()[-1]["seq"]
    result, checks = doctor(host)
    assert result == "pass", checks
    permissions = checks["permissions"]
    assert permissions["status"] == "pass"
    assert "Calendars.ReadWrite from Exchange RBAC for Applications" in permissions["message"]
    assert "Calendars.ReadWrite" not in permissions["message"].split(";")[0]  # not from Entra
    assert checks[f"mailbox {ROOM_A}"]["status"] == "pass"
    assert checks[f"mailbox {ROOM_B}"]["status"] == "pass"
    assert checks["subscriptions"]["status"] == "pass"
    assert "signed in with its client secret" in checks["token"]["message"]
    # Access is proven by one small read of each mapped calendar.
    for mailbox in (ROOM_A, ROOM_B):
        reads = [
            r
            for r in tenant.control.requests(mailbox=mailbox, since=since)
            if r["method"] == "GET" and r["path"].split("?")[0].endswith("/calendar")
        ]
        assert len(reads) == 1, reads
        assert reads[0]["status"] == 200


def test_a_mailbox_outside_the_scope_fails_with_the_scoping_hint(scoped: Stack) -> None:
    host, _, tenant = scoped
    healthy(host, "room-42", "room-43")
    tenant.control.change_scope(remove=[ROOM_B])
    result, checks = doctor(host)
    assert result == "fail"
    assert checks["permissions"]["status"] == "pass"
    assert checks[f"mailbox {ROOM_A}"]["status"] == "pass"
    denied = checks[f"mailbox {ROOM_B}"]
    assert denied["status"] == "fail"
    assert denied["code"] == "ErrorAccessDenied"
    assert denied["message"].startswith("room-43: ")
    assert "outside the app's mailbox scope" in denied["message"]
    assert f"Add-DistributionGroupMember -Identity <group> -Member {ROOM_B}" in denied["hint"]
    client_id = tenant.client_id
    assert f"mailbox-scope.sh --client-id {client_id} --test {ROOM_B}" in denied["hint"]
    assert "30 minutes to 2 hours" in denied["hint"]
    never_asks_for_tenant_wide_calendars(checks)

    # Back in the scope: the next run passes.
    tenant.control.change_scope(add=[ROOM_B])
    assert doctor(host)[0] == "pass"


def test_a_tenant_wide_grant_next_to_the_scope_is_named(scoped: Stack) -> None:
    host, _, tenant = scoped
    tenant.control.set_roles([*ENTRA_ROLES, "Calendars.ReadWrite"])
    result, checks = doctor(host)
    assert result == "warn"
    permissions = checks["permissions"]
    assert permissions["status"] == "warn"
    assert permissions["code"] == "ScopeBypassed"
    assert "narrows nothing" in permissions["message"]
    assert "Remove Calendars.ReadWrite" in permissions["hint"]


def test_missing_entra_permissions_never_include_calendars(scoped: Stack) -> None:
    host, _, tenant = scoped
    tenant.control.set_roles(["Application.ReadWrite.OwnedBy"])
    result, checks = doctor(host)
    assert result == "fail"
    permissions = checks["permissions"]
    assert permissions["code"] == "PermissionMissing"
    assert "Place.Read.All" in permissions["hint"]
    assert "User.Read.All" in permissions["hint"]
    assert "Calendars.ReadWrite" not in permissions["message"]
    assert "Calendars.ReadWrite" not in permissions["hint"]
    assert checks[f"mailbox {ROOM_A}"]["status"] == "pass"


def test_teams_is_checked_where_bookings_ask_for_it(scoped: Stack) -> None:
    host, platform, _ = scoped
    admin(host, "PUT", "mappings/room-44", json={"mailbox": TEGEL}).raise_for_status()
    healthy(host, "room-44")
    result, checks = doctor(host)
    tegel = checks[f"mailbox {TEGEL}"]
    assert tegel["status"] == "pass", tegel
    assert "no booking asked for Teams" in tegel["message"]
    assert result == "pass"

    booking = platform.booking_event(resource_id="room-44", online_meeting=True)
    assert platform.send_booking(booking).status_code == 202
    wait(
        lambda: [
            r
            for r in platform.received("booking.synced")
            if r["data"]["booking_id"] == booking["data"]["id"]
        ],
        what="the Teams booking to be synced without its meeting",
    )
    result, checks = doctor(host)
    tegel = checks[f"mailbox {TEGEL}"]
    assert tegel["status"] == "warn"
    assert tegel["code"] == "TeamsUnavailable"
    assert "teamsForBusiness" in tegel["message"]
    assert "Teams licence" in tegel["hint"]
    assert checks[f"mailbox {ROOM_A}"]["status"] == "pass"  # Teams offered there
    assert result == "warn"


def test_without_the_setting_a_scoped_grant_is_recognised(stack: Stack) -> None:
    """MAILBOX_SCOPE left at tenant while Exchange grants calendars: the doctor says to set it,
    and does not ask for a tenant-wide grant."""
    host, _, tenant = stack
    healthy(host, "room-42", "room-43")
    tenant.control.scope_calendars([ROOM_A, ROOM_B])
    result, checks = doctor(host)
    assert result == "warn"
    permissions = checks["permissions"]
    assert permissions["status"] == "warn"
    assert permissions["code"] == "MailboxScopeSetting"
    assert "Set MAILBOX_SCOPE=rbac" in permissions["hint"]
    never_asks_for_tenant_wide_calendars(checks)


# -- the messages follow the settings (no host needed) --------------------------------------------


def test_permission_messages_follow_the_credential_and_scope_modes() -> None:
    settings = settings_with(
        CREDENTIAL_MODE="managed_identity",
        MANAGED_IDENTITY_CLIENT_ID="5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        CLIENT_SECRET=None,
        MAILBOX_SCOPE="rbac",
    )
    check = check_permissions({"roles": ["Calendars.ReadWrite"]}, settings, [])
    assert check.status == "fail"
    assert "the managed identity 5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b signs in as it" in check.hint
    assert "Calendars.ReadWrite" not in check.hint.split("Application permissions: add")[1]

    tenant = settings_with(MAILBOX_SCOPE="tenant")
    denied = Check("mailbox x", "fail", "room: denied", "hint", "ErrorAccessDenied")
    check = check_permissions({"roles": ENTRA_ROLES}, tenant, [denied])
    assert check.status == "fail"
    assert "Calendars.ReadWrite" in check.message
    assert "set MAILBOX_SCOPE=rbac" in check.hint

    assert settings_with(MAILBOX_SCOPE=None).mailbox_scope == "tenant"
    with pytest.raises(ConfigError, match="MAILBOX_SCOPE: must be one of rbac, policy, tenant"):
        settings_with(MAILBOX_SCOPE="everything")
