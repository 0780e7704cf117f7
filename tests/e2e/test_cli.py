"""``python -m sync_core``: the admin CLI in its own process, against the same Azurite and simulated
tenant as a running function host (the CLI itself never calls the host's HTTP API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from devhost.azurite import free_port
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.domain.booking import BOOKING_PROPERTY_ID
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, ROOT, LocalHost, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]
TEGEL = "berlin.tegel@contoso.example"


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with exactly these settings (no local.settings.json: cwd is elsewhere)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobs")}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "sync_core", *args],
        cwd=cwd or Path(__file__).parent,  # a folder without local.settings.json
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def column_starts(header: str, names: list[str]) -> list[int]:
    return [header.index(name) for name in names]


def assert_aligned(output: str, names: list[str], cells: dict[str, list[str]]) -> None:
    """Every row's cells start where their column's header starts."""
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith(names[0]))
    starts = column_starts(header, names)
    for key, values in cells.items():
        row = next(line for line in lines if f" {key} " in f" {line} ")
        for start, value in zip(starts, values, strict=True):
            assert row[start : start + len(value)] == value, (row, value)
            assert start == 0 or row[start - 1] == " "


def column(output: str, name: str, following: str) -> list[str]:
    """The cells of column ``name`` (up to column ``following``) in each table row."""
    lines = output.splitlines()
    header = lines[0]
    start, end = header.index(name), header.index(following)
    return [line[start:end].strip() for line in lines[1:] if line and not line.startswith(" ")]


def ours(tenant: Sandbox, mailbox: str) -> list[dict[str, Any]]:
    return [
        e
        for e in tenant.control.events(mailbox)
        if any(
            p.get("id", "").lower() == BOOKING_PROPERTY_ID.lower()
            for p in e.get("singleValueExtendedProperties") or []
        )
    ]


def test_a_bad_setting_is_one_line_and_exit_2(settings_env: dict[str, str]) -> None:
    env = {k: v for k, v in settings_env.items() if k != "TENANT_ID"}
    env["TENANT_ID"] = ""
    done = cli(env, "status")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: setting TENANT_ID: is missing (the Entra directory id)\n"

    usage = cli(settings_env, "frobnicate")
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_map_status_resync_history_and_purge_for_people_and_scripts(stack: Stack) -> None:
    host, platform, tenant = stack
    env = host.env

    rooms = cli(env, "rooms", "--resource-ids", "berlin-tegel")
    assert rooms.returncode == 0, rooms.stderr
    assert_aligned(
        rooms.stdout,
        ["ADDRESS", "NAME", "CAPACITY", "ROOM LISTS", "MAPPED TO"],
        {
            ROOM_A: [ROOM_A, "Berlin Spree", "8", "rooms.berlin@contoso.example", "room-42"],
            TEGEL: [TEGEL, "Berlin Tegel", "12", "rooms.berlin@contoso.example", "-"],
        },
    )
    assert "5 room(s) in 2 room list(s)" in rooms.stdout
    assert_aligned(
        rooms.stdout,
        ["RESOURCE", "MAILBOX", "MATCH", "MAPPED NOW"],
        {"berlin-tegel": ["berlin-tegel", TEGEL, "exact", "-"]},
    )

    mapped = cli(env, "map", "room-44", TEGEL, "--privacy", "full")
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.stdout.startswith(
        f"room-44 → {TEGEL}: created; privacy full; direction both; enabled"
    )
    assert any(TEGEL in s["resource"].lower() for s in tenant.control.subscriptions())

    booking = platform.booking_event(resource_id="room-44")
    platform.send_booking(booking)
    wait(lambda: len(ours(tenant, TEGEL)) == 1, what="the booking in the room's calendar")

    off = cli(env, "map", "room-44", "--disable")
    assert off.returncode == 0, off.stderr
    assert "deactivated (sync stopped, entries kept)" in off.stdout
    assert not any(TEGEL in s["resource"].lower() for s in tenant.control.subscriptions())
    on = cli(env, "map", "room-44", "--enable", "--json")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout)["enabled"] is True
    assert json.loads(on.stdout)["privacy"] == "full"  # kept from before

    def all_read() -> str | None:
        shown = cli(env, "status")
        done = "never" not in shown.stdout and "Work: 0 pending" in shown.stdout
        return shown.stdout if shown.returncode == 0 and done else None

    # Reads that follow the enable (a notification, the full read) may still be queued.
    people = wait(all_read, timeout=30, what="every mapping's first read, and no work queued")
    assert "Overall: ok" in people
    assert "Credential (client secret): ok: the client secret is valid until" in people
    assert "Work: 0 pending, 0 parked" in people
    assert_aligned(
        people,
        ["STATE", "RESOURCE", "MAILBOX"],
        {
            "room-42": ["ok", "room-42", ROOM_A],
            "room-44": ["ok", "room-44", TEGEL],
        },
    )
    scripted = cli(env, "status", "--json")
    document = json.loads(scripted.stdout)
    assert {m["resource_id"] for m in document["mappings"]} == {"room-42", "room-43", "room-44"}

    resynced = cli(env, "resync", "room-44")
    assert resynced.returncode == 0, resynced.stderr
    assert "re-applying bookings: 0/1\nre-applying bookings: 1/1" in resynced.stderr
    assert "subscription ok; a full read of the calendar is queued; 1 booking(s)" in (
        resynced.stdout
    )

    shown = cli(env, "history", "--resource", "room-44")
    assert shown.returncode == 0
    actions = column(shown.stdout, "ACTION", "SUBJECT")
    assert actions.index("mapping.resync") < actions.index("mapping.enable")
    assert actions.index("mapping.enable") < actions.index("mapping.deactivate")
    assert actions[-1] == "mapping.create"
    page = json.loads(cli(env, "history", "--resource", "room-44", "--limit", "2", "--json").stdout)
    assert len(page["value"]) == 2
    assert page["continuation"]

    purged = cli(env, "unmap", "room-44", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert "deleting events: 0/1\ndeleting events: 1/1" in purged.stderr
    assert "room-44: unmapped and purged: 1 event(s) deleted (0 already gone)" in purged.stdout
    assert ours(tenant, TEGEL) == []
    again = cli(env, "unmap", "room-44")
    assert again.returncode == 1
    assert again.stderr == "error: resource 'room-44' is not mapped\n"

    checked = cli(env, "doctor")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.splitlines()[0].startswith("[PASS] token")
    assert checked.stdout.rstrip().endswith("doctor: pass")


def test_each_mailbox_error_is_shown_with_its_hint(stack: Stack) -> None:
    host, _, tenant = stack
    env = host.env

    unknown = cli(env, "map", "room-44", "nobody@contoso.example")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == [
        "error: mailbox nobody@contoso.example does not exist in the tenant",
        "code: ErrorInvalidUser",
        "hint: Check the address in the mapping. For a room, use the room's resource mailbox "
        "address (Microsoft 365 admin center → Resources → Rooms & equipment).",
    ]
    scripted = cli(env, "map", "room-44", "nobody@contoso.example", "--json")
    assert scripted.returncode == 1
    problem = json.loads(scripted.stdout)
    assert problem["status"] == 422
    assert problem["code"] == "ErrorInvalidUser"

    tenant.control.set_mailbox_state(TEGEL, "not_enabled")
    disabled = cli(env, "map", "room-44", TEGEL)
    assert disabled.returncode == 1
    assert "code: MailboxNotEnabledForRESTAPI" in disabled.stderr
    assert "hint: Give the user an Exchange Online licence" in disabled.stderr

    tenant.control.set_mailbox_state(ROOM_B, "access_denied")
    denied = cli(env, "resync", "room-43")
    assert denied.returncode == 1
    assert f"error: access to mailbox {ROOM_B} was denied" in denied.stderr
    assert "code: ErrorAccessDenied" in denied.stderr
    assert "hint: Add the mailbox to the mail-enabled security group" in denied.stderr

    shown = cli(env, "status")
    assert shown.returncode == 1
    lines = shown.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if " room-43 " in line)
    assert lines[row].startswith("error")
    assert lines[row + 1] == f"    ErrorAccessDenied: access to mailbox {ROOM_B} was denied"
    assert lines[row + 2].startswith("    hint: Add the mailbox to the mail-enabled security group")
    assert "Overall: error" in shown.stdout

    logged = cli(env, "history", "--resource", "room-43")
    first = logged.stdout.splitlines()[1]
    assert "mapping.check" in first and "failed" in first
    assert logged.stdout.splitlines()[2].startswith("    ErrorAccessDenied: ")
    assert logged.stdout.splitlines()[3].startswith("    hint: Add the mailbox")
    refused = cli(env, "history", "--resource", "room-44")
    codes = [
        line.split(":")[0].strip()
        for line in refused.stdout.splitlines()
        if line.startswith("    ") and not line.startswith("    hint:")
    ]
    assert codes[:2] == ["MailboxNotEnabledForRESTAPI", "ErrorInvalidUser"]

    checked = cli(env, "doctor")
    assert checked.returncode == 1
    failed = next(line for line in checked.stdout.splitlines() if f"mailbox {ROOM_B}" in line)
    assert failed.startswith("[FAIL]")
    assert failed.endswith(f"room-43: access to mailbox {ROOM_B} was denied (ErrorAccessDenied)")
    after = checked.stdout.splitlines()[checked.stdout.splitlines().index(failed) + 1]
    assert after.strip().startswith("hint: Add the mailbox to the mail-enabled security group")
    assert checked.stdout.rstrip().endswith("doctor: fail")


def test_credential_and_permission_errors_are_named(stack: Stack) -> None:
    host, _, tenant = stack
    env = host.env
    (secret,) = tenant.control.app()["passwordCredentials"]

    # The secret's ID pasted where its value belongs.
    wrong = env | {"CLIENT_SECRET": secret["keyId"]}
    checked = cli(wrong, "doctor")
    assert checked.returncode == 1
    token = checked.stdout.splitlines()[0]
    assert token.startswith("[FAIL] token")
    assert token.endswith("(AADSTS7000215)")
    assert "hint: Use the secret's Value, not its Secret ID." in checked.stdout
    shown = cli(wrong, "status", "--json")
    assert shown.returncode == 1
    credential = json.loads(shown.stdout)["credential"]
    assert credential["state"] == "error"
    assert credential["error"]["code"] == "AADSTS7000215"
    resynced = cli(wrong, "resync", "room-42")
    assert resynced.returncode == 1
    assert "code: AADSTS7000215" in resynced.stderr
    logged = cli(wrong, "history", "--resource", "room-42", "--json")
    entry = json.loads(logged.stdout)["value"][0]
    assert entry["error"]["code"] == "AADSTS7000215"
    assert "Secret ID" in entry["error"]["hint"]

    # Rooms need Place.Read.All: the CLI says so.
    tenant.control.set_roles(["Calendars.ReadWrite", "User.Read.All"])
    rooms = cli(env, "rooms")
    assert rooms.returncode == 1
    assert "Place.Read.All" in rooms.stderr
    assert "hint: Grant the application permission Place.Read.All" in rooms.stderr
    tenant.control.set_roles(
        ["Calendars.ReadWrite", "Place.Read.All", "User.Read.All", "Application.ReadWrite.OwnedBy"]
    )

    # The secret expires: every new token is refused, and each command says why.
    tenant.control.expire_secret(secret["keyId"])
    checked = cli(env, "doctor")
    assert checked.returncode == 1
    assert checked.stdout.splitlines()[0].endswith("(AADSTS7000222)")
    assert "hint: Create a new secret under App registrations → Certificates & secrets" in (
        checked.stdout
    )
    shown = cli(env, "status")
    assert shown.returncode == 1
    assert "Credential (client secret): error: the client secret" in shown.stdout
    assert "has expired (AADSTS7000222)" in shown.stdout


def test_doctor_checks_the_notification_url(stack: Stack) -> None:
    host, _, _ = stack
    elsewhere = host.env | {"PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    checked = cli(elsewhere, "doctor", "--json")
    assert checked.returncode == 1
    checks = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert checks["notification_url"]["status"] == "fail"
    assert "not reachable" in checks["notification_url"]["message"]
    assert "PUBLIC_BASE_URL" in checks["notification_url"]["hint"]
    assert checks["subscriptions"]["status"] == "fail"  # they notify the real URL
    assert "notifies another URL" in checks["subscriptions"]["message"]
    # The host itself is fine: its doctor over HTTP passes.
    answer = requests.get(f"{host.base}/api/admin/doctor", headers=KEY_HEADER, timeout=60)
    assert answer.json()["result"] == "pass"
