"""A mapping's options end to end (SPEC §9): several resources on one mailbox, the direction of
each mapping, and the Outlook events a mapping filters out; through the admin API, the CLI, the
local host, Azurite and the simulated tenant and platform."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import KEY_HEADER, ROOM_A, LocalHost, drained, product_env, send_and_sync, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]


@pytest.fixture
def bare(tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox) -> Iterator[Stack]:
    """The product with no mapping yet."""
    host = LocalHost(product_env(tenant_env, platform)).wait_ready()
    platform.product_url = host.base
    yield host, platform, tenant
    host.stop()


def put(host: LocalHost, resource_id: str, **body: Any) -> requests.Response:
    return requests.put(
        f"{host.base}/api/admin/mappings/{resource_id}", json=body, headers=KEY_HEADER, timeout=60
    )


def slot(day: int, hour: int, minutes: int = 60) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    end = start + timedelta(minutes=minutes)
    return {
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
    }


def upserts(platform: PlatformSim, event_id: str) -> dict[str, dict[str, Any]]:
    """The last ``blocker.upserted`` of an Outlook event, by resource id."""
    found: dict[str, dict[str, Any]] = {}
    for r in platform.received("blocker.upserted"):
        if r["data"]["source"]["event_id"] == event_id:
            found[r["data"]["resource_id"]] = r["data"]
    return found


def deletes(platform: PlatformSim, blocker_id: str) -> set[str]:
    return {
        r["data"]["resource_id"]
        for r in platform.received("blocker.deleted")
        if r["data"]["id"] == blocker_id
    }


def idle(host: LocalHost) -> None:
    wait(lambda: drained(host), what="the queued work to be done")


def test_two_resources_on_one_mailbox_each_get_its_blockers_and_bookings(bare: Stack) -> None:
    host, platform, tenant = bare
    assert put(host, "room-42", mailbox=ROOM_A, privacy="full").status_code == 201
    assert put(host, "desk-1", mailbox=ROOM_A, privacy="busy_only").status_code == 201
    idle(host)

    event = tenant.control.create_event(ROOM_A, {"subject": "Board meeting", **slot(2, 9)})
    both = wait(lambda: (u := upserts(platform, event["id"])) and len(u) == 2 and u, what="both")
    assert both["room-42"]["id"] == both["desk-1"]["id"]  # the same Outlook occurrence
    assert both["room-42"]["title"] == "Board meeting"
    assert both["desk-1"]["title"] is None  # each mapping's own privacy

    # Each resource's bookings land in the shared calendar.
    first = send_and_sync(platform, platform.booking_event(resource_id="room-42"))
    second = send_and_sync(platform, platform.booking_event(resource_id="desk-1"))
    ids = {e.get("subject") for e in tenant.control.events(ROOM_A) if e.get("subject") != "Board"}
    assert "Sprint review" in ids
    synced = {r["data"]["booking_id"]: r["data"] for r in platform.received("booking.synced")}
    assert synced[first]["mailbox"] == synced[second]["mailbox"] == ROOM_A
    assert synced[first]["event_id"] != synced[second]["event_id"]
    # Both bookings are at the same time: the second one is told the room is booked twice.
    conflicts = [
        r["data"]
        for r in platform.received("booking.conflict")
        if r["data"]["booking_id"] == second
    ]
    assert conflicts, "the overlapping booking of the other resource was not reported"
    assert {"booking_id": first, "resource_id": "room-42"}.items() <= conflicts[-1]["conflicts"][
        0
    ].items()
    # The service's own events are no blockers for either resource.
    idle(host)
    own = {synced[first]["event_id"], synced[second]["event_id"]}
    assert not [
        r for r in platform.received("blocker.upserted") if r["data"]["source"]["event_id"] in own
    ]

    # Deleting the Outlook event withdraws the blocker from both resources.
    tenant.control.delete_event(ROOM_A, event["id"])
    wait(
        lambda: deletes(platform, both["room-42"]["id"]) == {"room-42", "desk-1"},
        what="both deletions",
    )


def test_filters_leave_events_out_and_turning_them_off_brings_them_back(bare: Stack) -> None:
    host, platform, tenant = bare
    filters = {"ignore_all_day": True, "ignore_title_pattern": "^lunch\\b", "ignore_declined": True}
    answer = put(host, "room-42", mailbox=ROOM_A, filters=filters)
    assert answer.status_code == 201
    assert answer.json()["filters"] == filters
    idle(host)

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    all_day = tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Company holiday",
            "isAllDay": True,
            "start": {"dateTime": f"{day}T00:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{day + timedelta(days=1)}T00:00:00", "timeZone": "UTC"},
        },
    )
    lunch = tenant.control.create_event(ROOM_A, {"subject": "Lunch with the team", **slot(3, 12)})
    declined = tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Vendor pitch",
            "isOrganizer": False,
            "responseStatus": {"response": "declined"},
            **slot(3, 14),
        },
    )
    assert declined["responseStatus"]["response"] == "declined"
    # Positive control: an event no filter matches arrives, after the three above were read.
    kept = tenant.control.create_event(ROOM_A, {"subject": "Launch review", **slot(3, 16)})
    wait(lambda: upserts(platform, kept["id"]), what="the control's blocker")
    idle(host)
    left_out = [all_day["id"], lunch["id"], declined["id"]]
    assert not [e for e in left_out if upserts(platform, e)]

    # Filters off: the next (full) read sends what they held back.
    assert put(host, "room-42", mailbox=ROOM_A).json()["filters"] == {
        "ignore_all_day": False,
        "ignore_title_pattern": None,
        "ignore_declined": False,
    }
    wait(lambda: all(upserts(platform, e) for e in left_out), what="the filtered events")
    # And on again: they are withdrawn.
    blocker_ids = {upserts(platform, e)["room-42"]["id"] for e in left_out}
    put(host, "room-42", mailbox=ROOM_A, filters=filters)
    wait(
        lambda: all(deletes(platform, b) == {"room-42"} for b in blocker_ids),
        what="the filtered blockers to be withdrawn",
    )
    assert not deletes(platform, upserts(platform, kept["id"])["room-42"]["id"])


def test_direction_decides_what_flows(bare: Stack) -> None:
    host, platform, tenant = bare
    assert put(host, "reader", mailbox=ROOM_A, direction="from_outlook").status_code == 201
    assert put(host, "writer", mailbox=ROOM_A, direction="to_outlook").status_code == 201
    idle(host)

    # from_outlook: its bookings are not written.
    ignored = platform.send_booking(platform.booking_event(resource_id="reader"))
    assert ignored.status_code == 200
    assert ignored.json() == {"status": "ignored", "reason": "direction"}
    # to_outlook: its bookings are.
    booking_id = send_and_sync(platform, platform.booking_event(resource_id="writer"))
    assert booking_id

    # An Outlook event reaches the reader only.
    event = tenant.control.create_event(ROOM_A, {"subject": "Walk-in", **slot(4, 9)})
    wait(lambda: "reader" in upserts(platform, event["id"]), what="the reader's blocker")
    requests.post(
        f"{host.base}/admin/functions/safety_sweep", json={"input": ""}, headers=KEY_HEADER,
        timeout=30,
    )  # fmt: skip
    later = tenant.control.create_event(ROOM_A, {"subject": "Control", **slot(4, 11)})
    wait(lambda: "reader" in upserts(platform, later["id"]), what="the control's blocker")
    idle(host)
    assert set(upserts(platform, event["id"])) == {"reader"}

    # The reader turned to both: it now writes too, and keeps its blockers.
    answer = put(host, "reader", mailbox=ROOM_A, direction="both")
    assert answer.json()["direction"] == "both"
    assert send_and_sync(platform, platform.booking_event(resource_id="reader"))
    # Then to to_outlook: its blockers are withdrawn; and the mailbox keeps no subscription.
    blocker_id = upserts(platform, event["id"])["reader"]["id"]
    put(host, "reader", mailbox=ROOM_A, direction="to_outlook")
    wait(lambda: deletes(platform, blocker_id) == {"reader"}, what="the reader's blockers to go")
    assert not [
        s for s in tenant.control.subscriptions() if s["resource"].endswith(f"{ROOM_A}/events")
    ]
    status = requests.get(f"{host.base}/api/admin/status", headers=KEY_HEADER, timeout=30).json()
    rows = {m["resource_id"]: m for m in status["mappings"]}
    assert rows["writer"]["direction"] == "to_outlook"
    assert rows["writer"]["subscription_expires_at"] is None
    assert rows["writer"]["state"] == "ok" and not rows["writer"]["subscription_lost"]
    page = requests.get(f"{host.base}/api/admin/ui", headers=KEY_HEADER, timeout=30).text
    assert "to Outlook only" in page


def test_bad_options_are_refused_with_every_field_named(bare: Stack) -> None:
    host, _, _ = bare
    answer = put(
        host,
        "room-42",
        mailbox=ROOM_A,
        direction="sideways",
        filters={"ignore_title_pattern": "([unclosed", "ignore_weekends": True},
    )
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert {"direction", "filters.ignore_title_pattern", "filters.ignore_weekends"} <= fields
    listed = requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER, timeout=10)
    assert listed.json()["value"] == []


def test_the_cli_sets_direction_and_filters(bare: Stack) -> None:
    host = bare[0]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sync_core", "--url", host.base, "--key",
             KEY_HEADER["x-functions-key"], *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = cli("map", "room-42", ROOM_A, "--direction", "from_outlook", "--ignore-all-day",
               "--ignore-title", "^private")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "direction from_outlook" in done.stdout
    assert "all-day events" in done.stdout and "'^private'" in done.stdout
    # A later change keeps what it does not name.
    done = cli("map", "room-42", "--no-ignore-all-day", "--ignore-declined")
    assert done.returncode == 0, done.stderr
    mapping = requests.get(
        f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER, timeout=10
    ).json()
    assert mapping["direction"] == "from_outlook"
    assert mapping["filters"] == {
        "ignore_all_day": False,
        "ignore_title_pattern": "^private",
        "ignore_declined": True,
    }
    done = cli("map", "room-42", "--ignore-title", "([")
    assert done.returncode != 0
    assert "ignore_title_pattern" in done.stdout + done.stderr
    # A second resource on the same mailbox.
    done = cli("map", "desk-1", ROOM_A, "--json")
    assert done.returncode == 0, done.stderr
    listed = requests.get(
        f"{host.base}/api/admin/mappings", params={"mailbox": ROOM_A}, headers=KEY_HEADER,
        timeout=10,
    ).json()["value"]  # fmt: skip
    assert sorted(m["resource_id"] for m in listed) == ["desk-1", "room-42"]


def test_reading_only_works_with_read_only_calendar_access_and_the_doctor_asks_for_that(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> None:
    """With Calendars.Read alone (no write access anywhere), a from_outlook mapping subscribes
    and sends blockers, and the doctor passes; a mapping that writes makes it ask for
    Calendars.ReadWrite."""
    tenant.control.set_roles(
        ["Calendars.Read", "Place.Read.All", "User.Read.All", "Application.ReadWrite.OwnedBy"]
    )
    env = product_env(tenant_env, platform) | {"MAILBOX_SCOPE": "tenant"}
    host = LocalHost(env).wait_ready()
    try:
        assert put(host, "reader", mailbox=ROOM_A, direction="from_outlook").status_code == 201
        event = tenant.control.create_event(ROOM_A, {"subject": "Walk-in", **slot(2, 9)})
        wait(lambda: "reader" in upserts(platform, event["id"]), what="the reader's blocker")

        def permissions() -> dict[str, Any]:
            report = requests.get(f"{host.base}/api/admin/doctor", headers=KEY_HEADER, timeout=60)
            return next(c for c in report.json()["checks"] if c["name"] == "permissions")

        assert permissions()["status"] == "pass", permissions()
        assert put(host, "writer", mailbox=ROOM_A, direction="to_outlook").status_code == 201
        check = permissions()
        assert check["status"] == "fail"
        assert check["code"] == "PermissionMissing"
        assert "Calendars.ReadWrite" in check["message"]
    finally:
        host.stop()
