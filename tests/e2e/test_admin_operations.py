"""The admin operations over real HTTP: rooms, the mailbox check on PUT, deactivate and enable,
delete with purge, resync and history. Local host + Azurite + the simulated tenant and platform."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.domain.booking import BOOKING_PROPERTY_ID
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]
TEGEL = "berlin.tegel@contoso.example"


def admin(host: LocalHost, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{host.base}/api/admin/{path}", headers=KEY_HEADER, timeout=30, **kwargs
    )


def mapping_url(resource_id: str) -> str:
    return f"mappings/{quote(resource_id, safe='')}"


def history(host: LocalHost, resource_id: str | None = None, **params: str) -> list[dict[str, Any]]:
    query = {"resource_id": resource_id, **params} if resource_id else dict(params)
    answer = admin(host, "GET", "history", params=query)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["value"])


def ours(tenant: Sandbox, mailbox: str, booking_id: str | None = None) -> list[dict[str, Any]]:
    """Events in the mailbox that carry our booking property (for one booking, or any)."""
    found = []
    for event in tenant.control.events(mailbox):
        for prop in event.get("singleValueExtendedProperties") or []:
            if prop.get("id", "").lower() == BOOKING_PROPERTY_ID.lower() and (
                booking_id is None or prop.get("value") == booking_id
            ):
                found.append(event)
    return found


def synced(platform: PlatformSim, booking_id: str, version: int = 1) -> None:
    platform.wait_for(
        lambda got: any(
            r["type"] == "booking.synced"
            and r["data"]["booking_id"] == booking_id
            and r["data"]["version"] == version
            for r in got
        ),
        timeout=15,
    )


def slot(day: int, hour: int) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    end = start + timedelta(hours=1)
    return {
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
    }


def person_event(tenant: Sandbox, mailbox: str, subject: str, day: int = 3) -> dict[str, Any]:
    return tenant.control.create_event(
        mailbox, {"subject": subject, "showAs": "busy", **slot(day, 13)}
    )


def blocker_for(platform: PlatformSim, event_id: str) -> list[dict[str, Any]]:
    """The blocker.upserted deliveries for one Outlook event."""
    return [
        r
        for r in platform.received("blocker.upserted")
        if r["data"]["source"]["event_id"] == event_id
    ]


def subscribed(tenant: Sandbox, mailbox: str) -> bool:
    return any(
        mailbox in s["resource"].lower() and not s.get("expired")
        for s in tenant.control.subscriptions()
    )


# -- rooms -----------------------------------------------------------------------------------------


def test_rooms_follow_graph_paging_and_suggest_mappings(stack: Stack) -> None:
    host, _, tenant = stack
    tenant.control.update_settings(places_page_size=2)  # five rooms come in three pages
    try:
        answer = admin(
            host,
            "GET",
            "rooms",
            params={"resource_ids": "berlin-tegel,Munich Isar,room-42,Projector"},
        )
    finally:
        tenant.control.update_settings(places_page_size=100)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rooms = {r["address"]: r for r in body["rooms"]}
    assert sorted(rooms) == sorted(
        [ROOM_A, ROOM_B, TEGEL, "munich.isar@contoso.example", "munich.alps@contoso.example"]
    )
    assert rooms[ROOM_A]["mapped_to"] == "room-42"
    assert rooms[ROOM_B]["mapped_to"] == "room-43"
    assert rooms[TEGEL]["mapped_to"] is None
    assert rooms[TEGEL]["display_name"] == "Berlin Tegel"
    assert rooms[TEGEL]["capacity"] == 12
    assert rooms[TEGEL]["room_lists"] == ["rooms.berlin@contoso.example"]
    lists = {r["address"]: r for r in body["room_lists"]}
    assert lists["rooms.berlin@contoso.example"]["display_name"] == "Berlin"
    assert sorted(lists["rooms.munich@contoso.example"]["rooms"]) == [
        "munich.alps@contoso.example",
        "munich.isar@contoso.example",
    ]
    suggestions = {s["resource_id"]: s for s in body["suggestions"]}
    assert suggestions["berlin-tegel"]["mailbox"] == TEGEL
    assert suggestions["berlin-tegel"]["match"] == "exact"
    assert suggestions["Munich Isar"]["mailbox"] == "munich.isar@contoso.example"
    assert suggestions["room-42"]["mapped_mailbox"] == ROOM_A
    assert suggestions["Projector"] == {
        "resource_id": "Projector",
        "mailbox": None,
        "display_name": None,
        "match": "none",
        "mapped_mailbox": None,
    }


def test_rooms_without_place_permission_say_which_permission(stack: Stack) -> None:
    host, _, tenant = stack
    tenant.control.add_fault(
        "/places/", "GET", status=403, code="ErrorAccessDenied", message="Access is denied."
    )
    answer = admin(host, "GET", "rooms")
    assert answer.status_code == 502
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "ErrorAccessDenied"
    assert "Place.Read.All" in problem["detail"]
    assert "Place.Read.All" in problem["hint"]
    assert "admin consent" in problem["hint"]


# -- PUT checks the mailbox -----------------------------------------------------------------------


def test_put_refuses_an_unusable_mailbox_and_saves_nothing(stack: Stack) -> None:
    host, _, tenant = stack
    tenant.control.set_mailbox_state(TEGEL, "not_enabled")
    tenant.control.set_mailbox_state("munich.isar@contoso.example", "access_denied")
    cases = [
        ("nobody@contoso.example", "ErrorInvalidUser", "resource mailbox address"),
        (TEGEL, "MailboxNotEnabledForRESTAPI", "Exchange Online licence"),
        ("munich.isar@contoso.example", "ErrorAccessDenied", "mail-enabled security group"),
    ]
    for mailbox, code, hint in cases:
        answer = admin(host, "PUT", mapping_url("room-99"), json={"mailbox": mailbox})
        assert answer.status_code == 422, answer.text
        assert answer.headers["Content-Type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == "urn:calendar-sync:problem:mailbox-unreachable"
        assert problem["code"] == code
        assert mailbox in problem["detail"]
        assert hint in problem["hint"]
        assert problem["mailbox"] == mailbox
        assert problem["errors"][0]["field"] == "mailbox"
        assert admin(host, "GET", mapping_url("room-99")).status_code == 404
    assert not subscribed(tenant, TEGEL)

    # Graph refusing the token is not the mailbox's fault: 502, with Graph's code and the hint.
    tenant.control.add_fault("/calendar$", "GET", status=401, count=2)
    answer = admin(
        host, "PUT", mapping_url("room-99"), json={"mailbox": "munich.alps@contoso.example"}
    )
    assert answer.status_code == 502
    assert answer.json()["type"].endswith("graph-error")
    assert answer.json()["hint"]
    assert admin(host, "GET", mapping_url("room-99")).status_code == 404

    # Every refusal is in the resource's history, newest first, with its hint.
    entries = history(host, "room-99")
    assert [e["action"] for e in entries] == ["mapping.check"] * 4
    assert all(e["outcome"] == "failed" for e in entries)
    assert [e["error"]["code"] for e in entries[1:]] == [
        "ErrorAccessDenied",
        "MailboxNotEnabledForRESTAPI",
        "ErrorInvalidUser",
    ]
    assert "Exchange Online licence" in entries[2]["error"]["hint"]

    # A broken mailbox can still be mapped deactivated (nothing is read from it).
    parked = admin(host, "PUT", mapping_url("room-99"), json={"mailbox": TEGEL, "enabled": False})
    assert parked.status_code == 201
    assert parked.json()["enabled"] is False


def test_put_check_happens_after_validation(stack: Stack) -> None:
    host, _, tenant = stack
    tenant.control.clear_requests()
    bad = admin(
        host, "PUT", mapping_url("room-99"), json={"mailbox": "nobody@contoso.example", "x": 1}
    )
    assert bad.status_code == 400
    pattern = {"mailbox": ROOM_A, "filters": {"ignore_title_pattern": "(["}}
    assert admin(host, "PUT", mapping_url("room-99"), json=pattern).status_code == 400
    assert not [r for r in tenant.control.requests() if re.search(r"/calendar(\?|$)", r["path"])]


# -- deactivate, enable ----------------------------------------------------------------------------


def test_deactivate_stops_both_directions_keeps_entries_and_enable_catches_up(
    stack: Stack,
) -> None:
    host, platform, tenant = stack
    first = platform.booking_event(resource_id="room-42", title="Planning")
    platform.send_booking(first)
    synced(platform, first["data"]["id"])
    before = person_event(tenant, ROOM_A, "Dentist", day=2)
    platform.wait_for(lambda got: blocker_for(platform, before["id"]))
    assert subscribed(tenant, ROOM_A)

    off = admin(
        host,
        "PUT",
        mapping_url("room-42"),
        json={"mailbox": ROOM_A, "privacy": "full", "enabled": False},
    )
    assert off.status_code == 200, off.text
    assert off.json()["enabled"] is False
    assert not subscribed(tenant, ROOM_A)
    # Entries kept: the projection stays in Outlook, the blocker stays at the platform.
    assert len(ours(tenant, ROOM_A, first["data"]["id"])) == 1
    assert platform.received("blocker.deleted") == []

    # While deactivated nothing moves either way.
    updated = platform.booking_event(
        resource_id="room-42", id=first["data"]["id"], version=2, title="Planning (moved)"
    )
    platform.send_booking(updated)
    fresh = platform.booking_event(resource_id="room-42", title="Retro")
    platform.send_booking(fresh)
    during = person_event(tenant, ROOM_A, "Workshop", day=4)
    wait(
        lambda: len([e for e in history(host, "room-42") if e["outcome"] == "ignored"]) >= 2,
        what="both bookings to be ignored",
    )
    assert ours(tenant, ROOM_A, first["data"]["id"])[0]["subject"] == "Planning"
    assert ours(tenant, ROOM_A, fresh["data"]["id"]) == []
    assert blocker_for(platform, during["id"]) == []

    on = admin(host, "PUT", mapping_url("room-42"), json={"mailbox": ROOM_A, "privacy": "full"})
    assert on.status_code == 200, on.text
    assert on.json()["enabled"] is True
    assert on.json()["bookings_queued"] == 2
    assert subscribed(tenant, ROOM_A)
    wait(
        lambda: (
            [e["subject"] for e in ours(tenant, ROOM_A, first["data"]["id"])]
            == ["Planning (moved)"]
        ),
        what="the update made while deactivated to reach Outlook",
    )
    wait(lambda: len(ours(tenant, ROOM_A, fresh["data"]["id"])) == 1, what="the new booking")
    platform.wait_for(lambda got: blocker_for(platform, during["id"]), timeout=15)
    actions = [e["action"] for e in history(host, "room-42") if e["action"].startswith("mapping")]
    assert actions[:2] == ["mapping.enable", "mapping.deactivate"]
    assert "2 booking(s) re-applied" in next(
        e["detail"] for e in history(host, "room-42") if e["action"] == "mapping.enable"
    )


def test_moving_a_mapping_to_another_mailbox_moves_its_events_and_blockers(stack: Stack) -> None:
    host, platform, tenant = stack
    booking = platform.booking_event(resource_id="room-43")
    platform.send_booking(booking)
    synced(platform, booking["data"]["id"])
    person = person_event(tenant, ROOM_B, "Cleaning")
    platform.wait_for(lambda got: blocker_for(platform, person["id"]))
    blocker_id = blocker_for(platform, person["id"])[0]["data"]["id"]

    moved = admin(host, "PUT", mapping_url("room-43"), json={"mailbox": TEGEL, "privacy": "full"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["bookings_queued"] == 1
    wait(lambda: len(ours(tenant, TEGEL, booking["data"]["id"])) == 1, what="the event to move")
    wait(lambda: ours(tenant, ROOM_B, booking["data"]["id"]) == [], what="the old event to go")
    deleted = platform.wait_for(
        lambda got: [
            r for r in got if r["type"] == "blocker.deleted" and r["data"]["id"] == blocker_id
        ]
    )
    assert deleted
    assert not subscribed(tenant, ROOM_B)
    assert subscribed(tenant, TEGEL)
    moves = [e for e in history(host, "room-43") if e["action"] == "mapping.move"]
    assert moves[0]["detail"] == f"moved from {ROOM_B} to {TEGEL}; 1 booking(s) re-applied"


# -- delete, purge ---------------------------------------------------------------------------------


def test_delete_keeps_entries_and_purge_removes_what_the_service_wrote(stack: Stack) -> None:
    host, platform, tenant = stack
    bookings = [platform.booking_event(resource_id="room-42", title=f"B{i}") for i in range(3)]
    for booking in bookings:
        platform.send_booking(booking)
    for booking in bookings:
        synced(platform, booking["data"]["id"])
    people = [person_event(tenant, ROOM_A, f"Person {i}", day=5 + i) for i in range(2)]
    platform.wait_for(lambda got: all(blocker_for(platform, p["id"]) for p in people))
    blocker_ids = {blocker_for(platform, p["id"])[0]["data"]["id"] for p in people}
    other = platform.booking_event(resource_id="room-43")
    platform.send_booking(other)
    synced(platform, other["data"]["id"])

    # Deactivated first, so the person's deletion below is not repaired before the purge.
    admin(host, "PUT", mapping_url("room-42"), json={"mailbox": ROOM_A, "enabled": False})
    gone = ours(tenant, ROOM_A, bookings[0]["data"]["id"])[0]
    tenant.control.delete_event(ROOM_A, gone["id"])

    answer = admin(host, "DELETE", mapping_url("room-42"), params={"purge": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"deleted_events": 2, "already_gone": 1, "deleted_blockers": 2}
    assert ours(tenant, ROOM_A) == []
    subjects = sorted(e["subject"] for e in tenant.control.events(ROOM_A))
    assert subjects == ["Person 0", "Person 1"]  # people's events are never touched
    deleted = platform.wait_for(
        lambda got: {r["data"]["id"] for r in got if r["type"] == "blocker.deleted"} >= blocker_ids
    )
    assert {r["data"]["resource_id"] for r in deleted if r["type"] == "blocker.deleted"} == {
        "room-42"
    }
    assert admin(host, "GET", mapping_url("room-42")).status_code == 404
    assert (
        admin(host, "DELETE", mapping_url("room-42"), params={"purge": "true"}).status_code == 404
    )
    purge = next(e for e in history(host, "room-42") if e["action"] == "mapping.purge")
    assert purge["outcome"] == "ok"
    assert "deleted 2 event(s) (1 already gone) and 2 blocker(s)" in purge["detail"]

    # Without purge: 204, and everything the service wrote stays.
    assert admin(host, "DELETE", mapping_url("room-43")).status_code == 204
    assert len(ours(tenant, ROOM_B, other["data"]["id"])) == 1
    assert not subscribed(tenant, ROOM_B)
    bad = admin(host, "DELETE", mapping_url("room-43"), params={"purge": "maybe"})
    assert bad.status_code == 400


def test_a_purge_graph_interrupts_leaves_the_mapping_deactivated_to_retry(stack: Stack) -> None:
    host, platform, tenant = stack
    booking = platform.booking_event(resource_id="room-42")
    platform.send_booking(booking)
    synced(platform, booking["data"]["id"])
    tenant.control.add_fault("/events/", "DELETE", status=403, code="ErrorAccessDenied")
    answer = admin(host, "DELETE", mapping_url("room-42"), params={"purge": "true"})
    assert answer.status_code == 502
    assert "purge again" in answer.json()["detail"]
    assert answer.json()["code"] == "ErrorAccessDenied"
    mapping = admin(host, "GET", mapping_url("room-42")).json()
    assert mapping["enabled"] is False
    retried = admin(host, "DELETE", mapping_url("room-42"), params={"purge": "true"})
    assert retried.status_code == 200
    assert retried.json()["deleted_events"] == 1
    assert ours(tenant, ROOM_A) == []


# -- resync ----------------------------------------------------------------------------------------


def test_resync_recreates_a_lost_subscription_and_rereads_both_directions(stack: Stack) -> None:
    host, platform, tenant = stack
    booking = platform.booking_event(resource_id="room-42", title="Board meeting")
    platform.send_booking(booking)
    synced(platform, booking["data"]["id"])
    subscription = next(
        s for s in tenant.control.subscriptions() if ROOM_A in s["resource"].lower()
    )
    tenant.control.expire_subscription(subscription["id"])  # Graph stops notifying

    # Unseen changes: a person's event, and an edit of the projection.
    missed = person_event(tenant, ROOM_A, "Unseen meeting")
    projection = ours(tenant, ROOM_A, booking["data"]["id"])[0]
    tenant.control.update_event(ROOM_A, projection["id"], {"subject": "Hijacked"})

    answer = admin(host, "POST", f"{mapping_url('room-42')}/resync")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "resource_id": "room-42",
        "mailbox": ROOM_A,
        "subscription": "recreated",
        "mailbox_rounds": 1,
        "bookings_queued": 1,
    }
    assert subscribed(tenant, ROOM_A)
    platform.wait_for(lambda got: blocker_for(platform, missed["id"]), timeout=15)
    wait(
        lambda: ours(tenant, ROOM_A, booking["data"]["id"])[0]["subject"] == "Board meeting",
        what="the projection to be restored",
    )
    entry = next(e for e in history(host, "room-42") if e["action"] == "mapping.resync")
    assert entry["outcome"] == "ok"
    assert "subscription recreated" in entry["detail"]

    again = admin(host, "POST", f"{mapping_url('room-42')}/resync")
    assert again.json()["subscription"] == "ok"

    assert admin(host, "POST", f"{mapping_url('nope')}/resync").status_code == 404
    admin(host, "PUT", mapping_url("room-43"), json={"mailbox": ROOM_B, "enabled": False})
    deactivated = admin(host, "POST", f"{mapping_url('room-43')}/resync")
    assert deactivated.status_code == 409
    assert "enable" in deactivated.json()["detail"]


# -- history ---------------------------------------------------------------------------------------


def test_history_is_newest_first_paged_and_filtered(stack: Stack) -> None:
    host, _, _ = stack
    for _ in range(3):
        assert admin(host, "POST", f"{mapping_url('room-42')}/resync").status_code == 202
    admin(host, "POST", f"{mapping_url('room-43')}/resync")

    first = admin(host, "GET", "history", params={"resource_id": "room-42", "limit": "2"}).json()
    assert len(first["value"]) == 2
    assert first["continuation"]
    second = admin(
        host,
        "GET",
        "history",
        params={"resource_id": "room-42", "limit": "2", "continuation": first["continuation"]},
    ).json()
    entries = first["value"] + second["value"]
    assert {e["resource_id"] for e in entries} == {"room-42"}
    stamps = [e["at"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert [e["action"] for e in entries[:3]] == ["mapping.resync"] * 3
    assert set(entries[0]) == {
        "at",
        "resource_id",
        "action",
        "subject",
        "outcome",
        "detail",
        "error",
    }

    everything = history(host, limit="100")
    assert {"room-42", "room-43"} <= {e["resource_id"] for e in everything}
    assert everything[0]["resource_id"] == "room-43"

    assert admin(host, "GET", "history", params={"limit": "0"}).status_code == 400
    assert admin(host, "GET", "history", params={"limit": "x"}).status_code == 400
    bad = admin(host, "GET", "history", params={"continuation": "not-a-token"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "continuation"
