"""Places (rooms, room lists), getSchedule, and the app registration's credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, Graph, event_body, get_token, token_response


def test_rooms_and_room_lists_with_paging(sb: Sandbox, graph: Graph) -> None:
    # Places page by $top/$skip and never send @odata.nextLink (docs issues #341, #6427, #18604).
    first = graph.get("/places/microsoft.graph.room?$top=2").json()
    assert first["@odata.context"].endswith("/v1.0/$metadata#places/microsoft.graph.room")
    assert "@odata.nextLink" not in first
    rooms, skip, page = list(first["value"]), 2, first
    while len(page["value"]) == 2:
        page = graph.get(f"/places/microsoft.graph.room?$top=2&$skip={skip}").json()
        assert "@odata.nextLink" not in page
        rooms += page["value"]
        skip += 2
    assert len(rooms) == 5
    assert ROOM in {r["emailAddress"] for r in rooms}
    assert all(isinstance(r["capacity"], int) for r in rooms)
    everything = graph.get("/places/microsoft.graph.room").json()
    assert len(everything["value"]) == 5 and "@odata.nextLink" not in everything

    lists = graph.get("/places/microsoft.graph.roomlist").json()["value"]
    assert {(r["displayName"], r["emailAddress"]) for r in lists} == {
        ("Berlin", "rooms.berlin@contoso.example"),
        ("Munich", "rooms.munich@contoso.example"),
    }
    berlin = graph.get("/places/rooms.berlin@contoso.example/microsoft.graph.roomlist/rooms").json()
    assert len(berlin["value"]) == 3
    assert "places('rooms.berlin%40contoso.example')" in berlin["@odata.context"]
    sb.control.add_mailbox(
        "berlin.new@contoso.example",
        "Berlin New",
        kind="room",
        roomLists=["rooms.berlin@contoso.example"],
    )
    grown = graph.get("/places/rooms.berlin@contoso.example/microsoft.graph.roomList/rooms").json()
    assert len(grown["value"]) == 4
    missing = graph.get("/places/nowhere@contoso.example/microsoft.graph.roomlist/rooms")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"
    upper = graph.get("/places/ROOMS.Berlin@contoso.example/microsoft.graph.roomlist/rooms")
    assert len(upper.json()["value"]) == 4


def test_get_schedule(sb: Sandbox, graph: Graph) -> None:
    graph.post(
        f"/users/{ROOM}/events", event_body("busy", "2030-01-07T09:00:00", "2030-01-07T10:00:00")
    )
    sb.control.create_event(
        ROOM,
        event_body(
            "maybe",
            "2030-01-07T10:30:00",
            "2030-01-07T11:00:00",
            showAs="tentative",
            sensitivity="private",
        ),
    )
    sb.control.create_event(
        ROOM,
        event_body("cancelled", "2030-01-07T11:00:00", "2030-01-07T12:00:00", isCancelled=True),
    )
    request = {
        "schedules": [ROOM, "nobody@contoso.example"],
        "startTime": {"dateTime": "2030-01-07T09:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2030-01-07T12:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 60,
    }
    answer = graph.post(f"/users/{PERSON}/calendar/getSchedule", request)
    assert answer.status_code == 200, answer.text
    room, unknown = answer.json()["value"]
    assert room["scheduleId"] == ROOM
    assert room["availabilityView"] == "210"
    assert [i["status"] for i in room["scheduleItems"]] == ["busy", "tentative"]
    assert room["scheduleItems"][0]["subject"] == "busy"
    assert room["scheduleItems"][1]["isPrivate"] is True
    assert "subject" not in room["scheduleItems"][1]
    assert unknown["scheduleId"] == "nobody@contoso.example"
    assert unknown["error"]["responseCode"] == "5009"
    too_many = graph.post(
        f"/users/{PERSON}/calendar/getSchedule",
        {**request, "schedules": [f"r{n}@contoso.example" for n in range(21)]},
    )
    assert too_many.status_code == 400
    too_fine = graph.post(
        f"/users/{PERSON}/calendar/getSchedule", {**request, "availabilityViewInterval": 1}
    )
    assert too_fine.status_code == 400


def test_add_and_remove_password_through_graph(sb: Sandbox, graph: Graph) -> None:
    app = graph.get(f"/applications(appId='{sb.client_id}')")
    assert app.status_code == 200
    body = app.json()
    assert body["appId"] == sb.client_id
    assert body["@odata.context"].endswith("/v1.0/$metadata#applications/$entity")
    (default,) = body["passwordCredentials"]
    assert default["secretText"] is None
    assert default["hint"] == sb.client_secret[:3]
    by_object = graph.get(f"/applications/{body['id']}").json()
    assert by_object["appId"] == sb.client_id

    added = graph.post(
        f"/applications/{body['id']}/addPassword",
        {"passwordCredential": {"displayName": "rotated by calendar sync"}},
    )
    assert added.status_code == 200
    credential = added.json()
    assert len(credential["secretText"]) == 40
    assert credential["hint"] == credential["secretText"][:3]
    end = datetime.fromisoformat(credential["endDateTime"].replace("Z", "+00:00")[:26] + "+00:00")
    assert abs(end - (datetime.now(UTC) + timedelta(days=730))) < timedelta(minutes=5)
    assert token_response(sb, client_secret=credential["secretText"]).status_code == 200
    listed = graph.get(f"/applications/{body['id']}").json()["passwordCredentials"]
    assert {c["keyId"] for c in listed} == {default["keyId"], credential["keyId"]}
    assert all(c["secretText"] is None for c in listed)

    removed = graph.post(
        f"/applications(appId='{sb.client_id}')/removePassword", {"keyId": default["keyId"]}
    )
    assert removed.status_code == 204
    old = token_response(sb)
    assert (old.status_code, old.json()["error_codes"]) == (401, [7000215])
    again = Graph(sb, get_token(sb, client_secret=credential["secretText"]))
    explicit_end = again.post(
        f"/applications/{body['id']}/addPassword",
        {"passwordCredential": {"displayName": "short", "endDateTime": "2031-01-01T00:00:00Z"}},
    ).json()
    assert explicit_end["endDateTime"].startswith("2031-01-01T00:00:00")

    sb.control.update_app(ownedBySelf=False)
    not_owner = again.post(f"/applications/{body['id']}/addPassword", {})
    assert not_owner.status_code == 403
    assert not_owner.json()["error"]["code"] == "Authorization_RequestDenied"
