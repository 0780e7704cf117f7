"""Bookings against Outlook as Microsoft documents it, end to end (local host, Azurite, the
simulated tenant): all-day events read back at midnight, delta's `@removed` for events outside
its window, Teams meetings that live in the body, calendars without Teams, Deleted Items, zones
Graph refuses by IANA name, and places without `@odata.nextLink`.

Each "nothing more happens" check waits for evidence that the work it is about ran (the reads a
sweep and a resync make) before it counts writes and deliveries.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import KEY_HEADER, ROOM_A, LocalHost, wait
from tests.e2e.test_bookings import ours, synced

Stack = tuple[LocalHost, PlatformSim, Sandbox]


def app_requests(tenant: Sandbox, mailbox: str, since: int = 0) -> list[dict[str, Any]]:
    return [
        r
        for r in tenant.control.requests(mailbox=mailbox)
        if r.get("kind") == "graph" and r.get("seq", 0) > since
    ]


def writes(requests_: list[dict[str, Any]]) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in requests_ if r["method"] != "GET"]


def last_seq(tenant: Sandbox) -> int:
    return max((r.get("seq", 0) for r in tenant.control.requests()), default=0)


def sweep_and_resync(host: LocalHost, tenant: Sandbox, platform: PlatformSim, bookings: int) -> int:
    """Run the safety sweep and a resync of room-42, wait until both did their reads (a delta
    read each, one calendar read per booking), and return where the request log stood before."""
    mark = last_seq(tenant)
    platform.clear()
    requests.post(f"{host.base}/admin/functions/safety_sweep", json={"input": ""}, timeout=30)
    answer = requests.post(
        f"{host.base}/api/admin/mappings/room-42/resync", headers=KEY_HEADER, timeout=60
    )
    assert answer.status_code == 202, answer.text

    def done() -> bool:
        seen = app_requests(tenant, ROOM_A, mark)
        deltas = [r for r in seen if "/calendarView/delta" in r["path"]]
        reads = [r for r in seen if r["method"] == "GET" and "/calendar/events/" in r["path"]]
        # The sweep's read may be covered by the resync's full read (it then reads nothing).
        return len(deltas) >= 1 and len(reads) >= bookings

    wait(done, timeout=30, what="the sweep's and the resync's reads")
    # Positive control: a person's event made now is read and reaches the platform, so the
    # queues have moved past everything the sweep and the resync queued before it.
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Control",
            "start": {"dateTime": f"{tomorrow}T05:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{tomorrow}T06:00:00", "timeZone": "UTC"},
        },
    )
    requests.post(f"{host.base}/admin/functions/safety_sweep", json={"input": ""}, timeout=30)
    platform.wait_for(lambda got: any(r["type"] == "blocker.upserted" for r in got), timeout=30)
    return mark


def assert_quiet(tenant: Sandbox, platform: PlatformSim, mark: int) -> None:
    assert writes(app_requests(tenant, ROOM_A, mark)) == []
    assert [r["type"] for r in platform.received()] == ["blocker.upserted"]  # the control only


def send(platform: PlatformSim, **data: Any) -> dict[str, Any]:
    event = platform.booking_event(**data)
    assert platform.send_booking(event).status_code == 202
    return event


def test_all_day_outside_window_and_refused_zones_land_once_and_stay_quiet(stack: Stack) -> None:
    host, platform, tenant = stack
    today = datetime.now(UTC).date()
    kinds = {
        "all-day in Vienna": {
            "all_day": True,
            "start": str(today + timedelta(days=3)),
            "end": str(today + timedelta(days=4)),
            "time_zone": "Europe/Vienna",
        },
        "all-day in Los Angeles": {
            "all_day": True,
            "start": str(today + timedelta(days=5)),
            "end": str(today + timedelta(days=7)),
            "time_zone": "America/Los_Angeles",
        },
        "yesterday": _timed(today - timedelta(days=1), "Europe/Berlin"),
        "beyond the window": _timed(today + timedelta(days=200), "Europe/Berlin"),
        "Zurich (refused by IANA name)": _timed(today + timedelta(days=2), "Europe/Zurich"),
    }
    sent = {name: send(platform, **data) for name, data in kinds.items()}
    for event in sent.values():
        synced(platform, event["data"]["id"], 1)
    for name, event in sent.items():
        found = ours(tenant, ROOM_A, event["data"]["id"])
        assert len(found) == 1, name
    vienna = ours(tenant, ROOM_A, sent["all-day in Vienna"]["data"]["id"])[0]
    assert vienna["isAllDay"] is True
    zurich = ours(tenant, ROOM_A, sent["Zurich (refused by IANA name)"]["data"]["id"])[0]
    assert zurich["startTimeZone"] == "W. Europe Standard Time"

    mark = sweep_and_resync(host, tenant, platform, bookings=len(sent))
    assert_quiet(tenant, platform, mark)


def _timed(day: date, zone: str) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    start = datetime.combine(day, datetime.min.time().replace(hour=9), ZoneInfo(zone))
    return {
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "time_zone": zone,
    }


def test_teams_meeting_survives_notes_changes_and_repairs(stack: Stack) -> None:
    host, platform, tenant = stack
    event = send(platform, online_meeting=True)
    booking_id = event["data"]["id"]
    first = synced(platform, booking_id, 1)["data"]["online_meeting_url"]
    assert first and first in ours(tenant, ROOM_A, booking_id)[0]["body"]

    # New notes: the body is rewritten with the meeting block kept.
    update = platform.booking_event(
        type="booking.updated", id=booking_id, version=2, online_meeting=True, notes="New agenda"
    )
    assert platform.send_booking(update).status_code == 202
    assert synced(platform, booking_id, 2)["data"]["online_meeting_url"] == first
    now = ours(tenant, ROOM_A, booking_id)[0]
    assert now["isOnlineMeeting"] is True and first in now["body"] and "New agenda" in now["body"]

    # A person renames it in Outlook: only the subject is written back.
    mark = last_seq(tenant)
    tenant.control.update_event(ROOM_A, now["id"], {"subject": "Mine"})
    wait(lambda: ours(tenant, ROOM_A, booking_id)[0]["subject"] == "Sprint review", timeout=30,
         what="the repair")  # fmt: skip
    patches = [r for r in app_requests(tenant, ROOM_A, mark) if r["method"] == "PATCH"]
    assert len(patches) == 1
    restored = ours(tenant, ROOM_A, booking_id)[0]
    assert restored["isOnlineMeeting"] is True and first in restored["body"]

    mark = sweep_and_resync(host, tenant, platform, bookings=1)
    assert_quiet(tenant, platform, mark)


def test_a_deleted_projection_is_recreated_not_patched_in_deleted_items(stack: Stack) -> None:
    _, platform, tenant = stack
    event = send(platform)
    booking_id = event["data"]["id"]
    synced(platform, booking_id, 1)
    old = ours(tenant, ROOM_A, booking_id)[0]["id"]
    tenant.control.delete_event(ROOM_A, old)  # a person deletes it: it goes to Deleted Items
    found = wait(
        lambda: [e for e in ours(tenant, ROOM_A, booking_id) if e["id"] != old],
        timeout=30,
        what="the recreated event",
    )
    assert len(found) == 1 and len(ours(tenant, ROOM_A, booking_id)) == 1
    assert not [
        r
        for r in app_requests(tenant, ROOM_A)
        if r["method"] == "PATCH" and old.replace("=", "") in r["path"].replace("%3D", "")
    ]


def test_a_calendar_without_teams_gets_the_event_and_a_warning(stack: Stack) -> None:
    host, platform, tenant = stack
    tenant.control.update_mailbox(ROOM_A, allowedOnlineMeetingProviders=["unknown"])
    event = send(platform, online_meeting=True)
    data = synced(platform, event["data"]["id"], 1)["data"]
    assert data["online_meeting_url"] is None
    assert [w["code"] for w in data["warnings"]] == ["online_meeting_unavailable"]
    assert len(ours(tenant, ROOM_A, event["data"]["id"])) == 1
    doctor = requests.get(f"{host.base}/api/admin/doctor", headers=KEY_HEADER, timeout=60).json()
    check = next(c for c in doctor["checks"] if c["name"] == f"mailbox {ROOM_A}")
    assert check["status"] == "warn" and "Teams" in check["message"]


def test_room_discovery_reads_past_the_first_hundred(stack: Stack) -> None:
    host, _, tenant = stack
    for n in range(130):
        tenant.control.add_mailbox(f"extra.room{n:03}@contoso.example", kind="room")
    answer = requests.get(f"{host.base}/api/admin/rooms", headers=KEY_HEADER, timeout=60)
    assert answer.status_code == 200, answer.text
    addresses = {r["address"] for r in answer.json()["rooms"]}
    assert {f"extra.room{n:03}@contoso.example" for n in range(130)} <= addresses
