"""Bookings into Microsoft 365, end to end: platform → local host → Azurite → simulated tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.admin import mappings as admin
from sync_core.config import load_settings
from sync_core.domain.booking import BOOKING_PROPERTY_ID
from sync_core.outbound import apply as bookings
from sync_core.services import Services
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost, control_booking, wait


def ours(tenant: Sandbox, mailbox: str, booking_id: str) -> list[dict[str, Any]]:
    events = tenant.control.events(mailbox)
    return [
        e
        for e in events
        if any(
            p.get("id", "").lower() == BOOKING_PROPERTY_ID.lower() and p.get("value") == booking_id
            for p in e.get("singleValueExtendedProperties") or []
        )
    ]


def synced(platform: PlatformSim, booking_id: str, version: int) -> dict[str, Any]:
    found = platform.wait_for(
        lambda got: [
            r
            for r in got
            if r["type"] == "booking.synced"
            and r["data"]["booking_id"] == booking_id
            and r["data"]["version"] == version
        ]
    )
    return next(
        r for r in found if r["type"] == "booking.synced" and r["data"]["version"] == version
    )


def graph_writes(tenant: Sandbox, mailbox: str) -> list[str]:
    return [
        f"{r['method']}"
        for r in tenant.control.requests(mailbox=mailbox)
        if r.get("kind") == "graph" and r["method"] in ("POST", "PATCH", "DELETE")
    ]


def test_create_update_stale_duplicate_cancel(
    stack: tuple[LocalHost, PlatformSim, Sandbox],
) -> None:
    host, platform, tenant = stack
    event = platform.booking_event(resource_id="room-42")
    booking_id = event["data"]["id"]
    assert platform.send_booking(event, webhook_id="msg_c1").status_code == 202
    delivery = synced(platform, booking_id, 1)
    created = wait(lambda: ours(tenant, ROOM_A, booking_id), what="the event")
    assert len(created) == 1
    assert created[0]["subject"] == "Sprint review"
    assert created[0]["categories"] == ["Booked via platform"]
    assert delivery["data"]["event_id"] == created[0]["id"]
    assert delivery["data"]["web_link"]
    assert delivery["data"]["mailbox"] == ROOM_A
    assert not delivery["problems"]
    assert graph_writes(tenant, ROOM_A) == ["POST"]  # exactly one request for the create

    tenant.control.clear_requests()
    updated = platform.booking_event(resource_id="room-42", id=booking_id, version=2, title="Retro")
    assert platform.send_booking(updated).status_code == 202
    synced(platform, booking_id, 2)
    event_now = ours(tenant, ROOM_A, booking_id)
    assert [e["subject"] for e in event_now] == ["Retro"]
    assert event_now[0]["id"] == created[0]["id"]
    assert graph_writes(tenant, ROOM_A) == ["PATCH"]

    # A stale version and a repeat of the same version under a new webhook id change nothing.
    stale = platform.booking_event(resource_id="room-42", id=booking_id, version=1, title="Old")
    assert platform.send_booking(stale).status_code == 202
    assert platform.send_booking(updated, webhook_id="msg_new_id").status_code == 202
    assert platform.send_booking(event, webhook_id="msg_c1").json() == {"status": "duplicate"}
    control = control_booking(host, platform)
    assert [e["subject"] for e in ours(tenant, ROOM_A, booking_id)] == ["Retro"]
    assert len(ours(tenant, ROOM_A, control)) == 1
    assert graph_writes(tenant, ROOM_A) == ["PATCH", "POST"]  # the POST is the control's

    cancelled = platform.booking_event(
        "booking.cancelled", resource_id="room-42", id=booking_id, version=3
    )
    assert platform.send_booking(cancelled).status_code == 202
    wait(lambda: not ours(tenant, ROOM_A, booking_id), what="the event to be deleted")
    assert graph_writes(tenant, ROOM_A) == ["PATCH", "POST", "DELETE"]


def test_delete_and_move_between_rooms(stack: tuple[LocalHost, PlatformSim, Sandbox]) -> None:
    _, platform, tenant = stack
    event = platform.booking_event(resource_id="room-42")
    booking_id = event["data"]["id"]
    platform.send_booking(event)
    wait(lambda: ours(tenant, ROOM_A, booking_id), what="the event")
    moved = platform.booking_event(resource_id="room-43", id=booking_id, version=2)
    assert platform.send_booking(moved).status_code == 202
    synced(platform, booking_id, 2)
    assert ours(tenant, ROOM_A, booking_id) == []
    assert len(ours(tenant, ROOM_B, booking_id)) == 1
    deleted = platform.booking_event(
        "booking.deleted", resource_id="room-43", id=booking_id, version=3
    )
    assert platform.send_booking(deleted).status_code == 202
    wait(lambda: not ours(tenant, ROOM_B, booking_id), what="the event to be deleted")


def test_all_day_private_teams_and_guests(stack: tuple[LocalHost, PlatformSim, Sandbox]) -> None:
    _, platform, tenant = stack
    all_day = platform.booking_event(
        resource_id="room-42",
        all_day=True,
        start="2026-12-01",
        end="2026-12-03",
        private=True,
        online_meeting=True,
    )
    booking_id = all_day["data"]["id"]
    assert platform.send_booking(all_day).status_code == 202
    delivery = synced(platform, booking_id, 1)
    (event,) = ours(tenant, ROOM_A, booking_id)
    assert event["isAllDay"] is True
    assert event["sensitivity"] == "private"
    assert event["isOnlineMeeting"] is True
    join_url = (event.get("onlineMeeting") or {}).get("joinUrl") or event.get("joinUrl")
    assert join_url and delivery["data"]["online_meeting_url"] == join_url
    assert "Alan Turing" in str(event["body"])  # guests listed in the body: no invitations
    assert event["attendees"] == []


def test_conflicts_are_reported(stack: tuple[LocalHost, PlatformSim, Sandbox]) -> None:
    _, platform, tenant = stack
    event = platform.booking_event(resource_id="room-42")
    booked = bookings.BookingEvent.model_validate(event).data
    start, end = booked.interval_utc()
    # Someone books the same time in Outlook; it reaches the platform as a blocker.
    tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Board",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        },
    )
    arrived = platform.wait_for(
        lambda got: [r for r in got if r["type"] == "blocker.upserted"], timeout=20
    )
    blocker = next(r for r in arrived if r["type"] == "blocker.upserted")
    platform.send_booking(event)
    found = platform.wait_for(lambda got: [r for r in got if r["type"] == "booking.conflict"])
    conflict = next(r for r in found if r["type"] == "booking.conflict")
    assert conflict["data"]["booking_id"] == booked.id
    assert [c["blocker_id"] for c in conflict["data"]["conflicts"]] == [blocker["data"]["id"]]
    assert len(ours(tenant, ROOM_A, booked.id)) == 1  # written anyway


def test_permanent_errors_are_reported_and_retryable_ones_land_once(
    stack: tuple[LocalHost, PlatformSim, Sandbox],
) -> None:
    host, platform, tenant = stack
    tenant.control.set_mailbox_state(ROOM_B, "access_denied")
    denied = platform.booking_event(resource_id="room-43")
    platform.send_booking(denied)
    found = platform.wait_for(lambda got: [r for r in got if r["type"] == "booking.failed"])
    failure = next(r for r in found if r["type"] == "booking.failed")
    assert failure["data"]["error"]["code"] == "ErrorAccessDenied"
    assert "scope" in failure["data"]["error"]["hint"]
    history = requests.get(
        f"{host.base}/api/admin/mappings/room-43", headers=KEY_HEADER, timeout=10
    )
    assert history.status_code == 200

    tenant.control.add_fault(r"/users/.*/events$", "POST", status=429, retry_after=1)
    tenant.control.add_fault(r"/users/.*/events$", "POST", status=503)
    throttled = platform.booking_event(resource_id="room-42")
    platform.send_booking(throttled)
    synced(platform, throttled["data"]["id"], 1)
    assert len(ours(tenant, ROOM_A, throttled["data"]["id"])) == 1


@pytest.fixture
def svc(
    tenant_env: dict[str, str], platform: PlatformSim, monkeypatch: pytest.MonkeyPatch
) -> Services:
    """The product's services called in this process (no host), with room-42 mapped to room A."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    env = tenant_env | {"PLATFORM_WEBHOOK_URL": platform.webhook_url}
    svc = Services(load_settings(env, Path("/nonexistent")))
    admin.put_mapping(svc.mappings, "room-42", {"mailbox": ROOM_A})
    return svc


def test_a_crash_between_the_graph_write_and_the_link_write_leaves_one_event(
    svc: Services,
    tenant: Sandbox,
    platform: PlatformSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = platform.booking_event(resource_id="room-42")
    booking_id = event["data"]["id"]
    svc.bookings.save(booking_id, 1, event, "msg_1")

    # Storage fails at the moment the link would record the created event: the worker dies.
    real_update = TableClient.update_entity

    def storage_down(self: TableClient, entity: Any, *args: Any, **kwargs: Any) -> Any:
        if self.table_name == "links" and entity.get("State") == "active":
            raise ServiceRequestError("connection reset by peer")
        return real_update(self, entity, *args, **kwargs)

    monkeypatch.setattr(TableClient, "update_entity", storage_down)
    with pytest.raises(ServiceRequestError):
        bookings.apply(svc, {"booking_id": booking_id, "attempt": 1})
    assert len(ours(tenant, ROOM_A, booking_id)) == 1
    monkeypatch.setattr(TableClient, "update_entity", real_update)

    bookings.apply(svc, {"booking_id": booking_id, "attempt": 1})  # the queue delivers it again
    assert len(ours(tenant, ROOM_A, booking_id)) == 1
    link = svc.links.get(booking_id)
    assert link is not None and link.state == "active"
    assert link.event_id == ours(tenant, ROOM_A, booking_id)[0]["id"]


def test_the_largest_booking_is_read_back_instead_of_carried(
    stack: tuple[LocalHost, PlatformSim, Sandbox],
) -> None:
    _, platform, tenant = stack
    notes = "Grüße " * 5_000  # 30,000 characters, over 32 KiB as JSON: too big for the message
    event = platform.booking_event(resource_id="room-42", notes=notes)
    assert platform.send_booking(event).status_code == 202
    synced(platform, event["data"]["id"], 1)
    (created,) = ours(tenant, ROOM_A, event["data"]["id"])
    assert notes.strip() in str(created["body"])


def test_a_carried_event_that_was_overtaken_still_converges(
    svc: Services,
    tenant: Sandbox,
    platform: PlatformSim,
) -> None:
    first = platform.booking_event(resource_id="room-42", title="First")
    booking_id = first["data"]["id"]
    second = platform.booking_event(resource_id="room-42", id=booking_id, version=2, title="Second")
    third = platform.booking_event(resource_id="room-42", id=booking_id, version=3, title="Third")
    for webhook_id, event in (("msg_1", first), ("msg_2", second)):
        svc.bookings.save(booking_id, event["data"]["version"], event, webhook_id)

    def subjects() -> list[str]:
        return [e["subject"] for e in ours(tenant, ROOM_A, booking_id)]

    # Version 1's message, delivered after version 2 was stored: version 1, then 2 by its own.
    bookings.apply(svc, {"booking_id": booking_id, "attempt": 1, "event": first})
    assert subjects() == ["First"]
    bookings.apply(svc, {"booking_id": booking_id, "attempt": 1, "event": second})
    assert subjects() == ["Second"]
    tenant.control.clear_requests()
    bookings.apply(svc, {"booking_id": booking_id, "attempt": 1, "event": first})
    assert graph_writes(tenant, ROOM_A) == []  # already overtaken in the calendar: skipped
    assert subjects() == ["Second"]

    # A redelivered message reads the stored state, whatever it carries.
    svc.bookings.save(booking_id, 3, third, "msg_3")
    bookings.apply(svc, {"booking_id": booking_id, "attempt": 1, "event": first}, redelivered=True)
    assert subjects() == ["Third"]
