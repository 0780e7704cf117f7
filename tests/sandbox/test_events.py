"""Events in mailbox calendars: CRUD, changeKey, time zones, transactionId, extended properties,
series with occurrences and exceptions, calendarView paging, mailbox states."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, Graph, event_body

PROP = "String {66f5a359-4659-4830-9070-00040ec6ac6e} Name BookingId"
UTC = {"Prefer": 'outlook.timezone="UTC"'}


def view(graph: Graph, mailbox: str, start: str, end: str, **headers: str) -> list[dict[str, Any]]:
    answer = graph.get(
        f"/users/{mailbox}/calendarView?startDateTime={start}&endDateTime={end}",
        headers={"Prefer": "odata.maxpagesize=100", **headers},
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["value"])


def test_create_get_patch_delete_with_a_new_change_key_each_time(graph: Graph) -> None:
    created = graph.post(
        f"/users/{ROOM}/events",
        event_body("Sprint review", "2030-01-07T09:00:00", "2030-01-07T10:30:00", "Europe/Berlin"),
        headers={"Prefer": 'outlook.timezone="UTC", IdType="ImmutableId"'},
    )
    assert created.status_code == 201
    event = created.json()
    assert event["@odata.context"].endswith(f"/v1.0/$metadata#users('{ROOM}')/events/$entity")
    assert event["start"] == {"dateTime": "2030-01-07T08:00:00.0000000", "timeZone": "UTC"}
    assert event["originalStartTimeZone"] == "Europe/Berlin"
    assert event["type"] == "singleInstance"
    assert event["@odata.etag"] == f'W/"{event["changeKey"]}"'
    assert event["organizer"]["emailAddress"]["address"] == ROOM
    assert 'IdType="ImmutableId"' in created.headers["Preference-Applied"]

    fetched = graph.get(f"/users/{ROOM}/events/{quote(event['id'], safe='')}", headers=UTC).json()
    assert fetched["changeKey"] == event["changeKey"]
    assert fetched["subject"] == "Sprint review"

    patched = graph.patch(f"/users/{ROOM}/events/{event['id']}", {"subject": "Sprint review 2"})
    assert patched.status_code == 200
    assert patched.json()["changeKey"] != event["changeKey"]
    assert patched.json()["lastModifiedDateTime"] >= event["lastModifiedDateTime"]
    again = graph.patch(f"/users/{ROOM}/events/{event['id']}", {"showAs": "tentative"}).json()
    assert again["changeKey"] not in (event["changeKey"], patched.json()["changeKey"])
    assert again["showAs"] == "tentative"

    # DELETE moves the event to Deleted Items: gone from the calendar, its id still valid.
    assert graph.delete(f"/users/{ROOM}/events/{event['id']}").status_code == 204
    gone = graph.get(f"/users/{ROOM}/calendar/events/{event['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "ErrorItemNotFound"
    assert graph.get(f"/users/{ROOM}/events/{event['id']}").status_code == 200
    # Deleting it from Deleted Items deletes it for good.
    assert graph.delete(f"/users/{ROOM}/events/{event['id']}").status_code == 204
    assert graph.get(f"/users/{ROOM}/events/{event['id']}").status_code == 404
    assert graph.delete(f"/users/{ROOM}/events/{event['id']}").status_code == 404


def test_time_zones_in_and_out(graph: Graph) -> None:
    windows = graph.post(
        f"/users/{ROOM}/events",
        event_body("w", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "W. Europe Standard Time"),
    )
    assert windows.status_code == 201
    # Without Prefer, Graph answers in UTC.
    assert windows.json()["start"] == {"dateTime": "2030-01-07T08:00:00.0000000", "timeZone": "UTC"}
    pacific = graph.get(
        f"/users/{ROOM}/events/{windows.json()['id']}",
        headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'},
    ).json()
    assert pacific["start"] == {
        "dateTime": "2030-01-07T00:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
    bad = graph.post(
        f"/users/{ROOM}/events",
        event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00", "Mars"),
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "TimeZoneNotSupportedException"
    backwards = graph.post(
        f"/users/{ROOM}/events", event_body("x", "2030-01-07T10:00:00", "2030-01-07T09:00:00")
    )
    assert backwards.status_code == 400


def test_all_day_events_need_midnight_in_their_zone(graph: Graph) -> None:
    bad = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "off", "2030-01-07T09:00:00", "2030-01-08T09:00:00", "Europe/Berlin", isAllDay=True
        ),
    )
    assert bad.status_code == 400
    good = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "off", "2030-01-07T00:00:00", "2030-01-08T00:00:00", "Europe/Berlin", isAllDay=True
        ),
        headers={"Prefer": 'outlook.timezone="Europe/Berlin"'},
    )
    assert good.status_code == 201
    assert good.json()["isAllDay"] is True
    assert good.json()["start"]["dateTime"] == "2030-01-07T00:00:00.0000000"


def test_transaction_id_makes_a_repeated_create_return_the_same_event(
    sb: Sandbox, graph: Graph
) -> None:
    body = event_body(
        "booking", "2030-01-07T09:00:00", "2030-01-07T10:00:00", transactionId="bk_1-v1"
    )
    first = graph.post(f"/users/{ROOM}/events", body)
    second = graph.post(f"/users/{ROOM}/events", body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["transactionId"] == "bk_1-v1"
    other = graph.post(f"/users/{ROOM}/events", {**body, "transactionId": "bk_2-v1"})
    assert other.json()["id"] != first.json()["id"]
    stored = sb.control.events(ROOM)
    assert sorted(e["transactionId"] for e in stored) == ["bk_1-v1", "bk_2-v1"]
    assert {e["createdBy"] for e in stored} == {f"app:{sb.client_id}"}


def test_extended_property_filter_and_expand(graph: Graph) -> None:
    for booking in ("bk_1", "bk_2"):
        answer = graph.post(
            f"/users/{ROOM}/events",
            event_body(
                booking,
                "2030-01-07T09:00:00",
                "2030-01-07T10:00:00",
                singleValueExtendedProperties=[{"id": PROP, "value": booking}],
            ),
        )
        assert answer.status_code == 201
    graph.post(
        f"/users/{ROOM}/events", event_body("person", "2030-01-07T11:00:00", "2030-01-07T12:00:00")
    )
    query = (
        f"$filter=singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'bk_2')"
        f"&$expand=singleValueExtendedProperties($filter=id eq '{PROP}')"
    )
    found = graph.get(f"/users/{ROOM}/events?{query}").json()["value"]
    assert [e["subject"] for e in found] == ["bk_2"]
    assert found[0]["singleValueExtendedProperties"] == [{"id": PROP, "value": "bk_2"}]
    plain = graph.get(f"/users/{ROOM}/events").json()["value"]
    assert len(plain) == 3
    assert all("singleValueExtendedProperties" not in e for e in plain)
    bad = graph.get(f"/users/{ROOM}/events?$filter=subject eq 'x'")
    assert bad.status_code == 400


def test_unknown_properties_are_rejected_as_graph_does(graph: Graph) -> None:
    answer = graph.post(
        f"/users/{ROOM}/events",
        event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00", colour="red"),
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "RequestBodyRead"
    enum = graph.post(
        f"/users/{ROOM}/events",
        event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00", showAs="sleeping"),
    )
    assert enum.status_code == 400


def test_mailbox_states_and_unknown_addresses(sb: Sandbox, graph: Graph) -> None:
    sb.control.add_mailbox("blocked@contoso.example", "Blocked", state="access_denied")
    sb.control.add_mailbox("onprem@contoso.example", "On prem", state="not_enabled")
    denied = graph.get("/users/blocked@contoso.example/events")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ErrorAccessDenied"
    assert denied.json()["error"]["message"] == "Access to OData is disabled."
    disabled = graph.get(
        "/users/onprem@contoso.example/calendarView?startDateTime=2030-01-01&endDateTime=2030-01-02"
    )
    assert disabled.status_code == 404
    assert disabled.json()["error"] == {
        **disabled.json()["error"],
        "code": "MailboxNotEnabledForRESTAPI",
        "message": "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    }
    unknown = graph.post(
        "/users/nobody@contoso.example/events",
        event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00"),
    )
    assert unknown.status_code == 404
    assert (
        unknown.json()["error"]["message"]
        == "The requested user 'nobody@contoso.example' is invalid."
    )
    assert unknown.json()["error"]["code"] == "ErrorInvalidUser"
    user = graph.get("/users/nobody@contoso.example")
    assert (user.status_code, user.json()["error"]["code"]) == (404, "Request_ResourceNotFound")
    # The directory still knows a blocked mailbox's user; mailbox ids work like addresses.
    blocked = graph.get("/users/blocked@contoso.example").json()
    assert graph.get(f"/users/{blocked['id']}/events").status_code == 403
    ada = graph.get(f"/users/{PERSON}").json()
    assert graph.get(f"/users/{ada['id']}/events").status_code == 200


def test_teams_meeting_and_body_as_outlook_stores_it(graph: Graph) -> None:
    created = graph.post(
        f"/users/{PERSON}/events",
        event_body(
            "Call",
            "2030-01-07T09:00:00",
            "2030-01-07T10:00:00",
            body={"contentType": "text", "content": "Bring <laptop>\nand charger"},
            isOnlineMeeting=True,
            onlineMeetingProvider="teamsForBusiness",
        ),
    ).json()
    join = created["onlineMeeting"]["joinUrl"]
    assert join.startswith("https://teams.microsoft.com/l/meetup-join/")
    assert created["body"]["contentType"] == "html"
    assert "Bring &lt;laptop&gt;<br>" in created["body"]["content"]
    assert "Microsoft Teams meeting" in created["body"]["content"]
    assert created["bodyPreview"].startswith("Bring <laptop>")
    text = graph.get(
        f"/users/{PERSON}/events/{created['id']}",
        headers={"Prefer": 'outlook.body-content-type="text"'},
    ).json()
    assert text["body"]["contentType"] == "text"
    assert text["body"]["content"].startswith("Bring <laptop>\nand charger")
    # The meeting cannot be switched off again; its join URL stays.
    off = graph.patch(f"/users/{PERSON}/events/{created['id']}", {"isOnlineMeeting": False}).json()
    assert off["isOnlineMeeting"] is True
    assert off["onlineMeeting"]["joinUrl"] == join


def test_series_occurrences_an_exception_and_a_deleted_occurrence(
    sb: Sandbox, graph: Graph
) -> None:
    master = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "Standup",
            "2030-01-07T10:00:00",
            "2030-01-07T10:15:00",
            "Europe/Berlin",
            recurrence={
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["Monday", "Wednesday"]},
                "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 6},
            },
        ),
    ).json()
    assert master["type"] == "seriesMaster"
    assert master["recurrence"]["pattern"]["daysOfWeek"] == ["monday", "wednesday"]
    assert master["recurrence"]["range"]["recurrenceTimeZone"] == "Europe/Berlin"
    listed = graph.get(f"/users/{ROOM}/events").json()["value"]
    assert [e["type"] for e in listed] == ["seriesMaster"]

    items = view(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z", **UTC)
    assert [i["start"]["dateTime"][:16] for i in items] == [
        "2030-01-07T09:00",
        "2030-01-09T09:00",
        "2030-01-14T09:00",
        "2030-01-16T09:00",
        "2030-01-21T09:00",
        "2030-01-23T09:00",
    ]
    assert {i["type"] for i in items} == {"occurrence"}
    assert {i["seriesMasterId"] for i in items} == {master["id"]}
    again = view(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")
    assert [i["id"] for i in again] == [i["id"] for i in items]

    second, third = items[1], items[2]
    edited = graph.patch(f"/users/{ROOM}/events/{second['id']}", {"subject": "Standup (moved)"})
    assert edited.status_code == 200
    assert edited.json()["type"] == "exception"
    assert edited.json()["id"] == second["id"]
    assert graph.delete(f"/users/{ROOM}/events/{third['id']}").status_code == 204
    assert graph.get(f"/users/{ROOM}/events/{third['id']}").status_code == 404

    after = view(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")
    assert len(after) == 5
    by_id = {i["id"]: i for i in after}
    assert by_id[second["id"]]["subject"] == "Standup (moved)"
    assert by_id[second["id"]]["type"] == "exception"
    assert by_id[items[0]["id"]]["subject"] == "Standup"
    assert third["id"] not in by_id
    instances = graph.get(
        f"/users/{ROOM}/events/{master['id']}/instances"
        "?startDateTime=2030-01-01T00:00:00Z&endDateTime=2030-01-10T00:00:00Z"
    ).json()["value"]
    assert [i["id"] for i in instances] == [items[0]["id"], second["id"]]


def test_daily_and_monthly_patterns(graph: Graph) -> None:
    graph.post(
        f"/users/{PERSON}/events",
        event_body(
            "Every other day",
            "2030-03-01T08:00:00",
            "2030-03-01T08:30:00",
            recurrence={
                "pattern": {"type": "daily", "interval": 2},
                "range": {"type": "endDate", "startDate": "2030-03-01", "endDate": "2030-03-07"},
            },
        ),
    )
    graph.post(
        f"/users/{PERSON}/events",
        event_body(
            "Month end",
            "2030-01-31T16:00:00",
            "2030-01-31T17:00:00",
            recurrence={
                "pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
                "range": {"type": "noEnd", "startDate": "2030-01-31"},
            },
        ),
    )
    items = view(graph, PERSON, "2030-01-01T00:00:00Z", "2030-04-01T00:00:00Z")
    days = [(i["subject"], i["start"]["dateTime"][:10]) for i in items]
    assert days == [
        ("Month end", "2030-01-31"),
        ("Month end", "2030-02-28"),
        ("Every other day", "2030-03-01"),
        ("Every other day", "2030-03-03"),
        ("Every other day", "2030-03-05"),
        ("Every other day", "2030-03-07"),
        ("Month end", "2030-03-31"),
    ]


def test_calendar_view_pages(graph: Graph) -> None:
    for day in range(1, 26):
        answer = graph.post(
            f"/users/{ROOM}/events",
            event_body(f"e{day:02d}", f"2030-05-{day:02d}T09:00:00", f"2030-05-{day:02d}T10:00:00"),
        )
        assert answer.status_code == 201
    url = (
        f"/users/{ROOM}/calendarView"
        "?startDateTime=2030-05-01T00:00:00Z&endDateTime=2030-06-01T00:00:00Z"
    )
    first = graph.get(url).json()
    assert len(first["value"]) == 10  # Graph's default page size for calendarView
    pages, seen, link = 0, [], url
    while link:
        page = graph.get(link, headers={"Prefer": "odata.maxpagesize=7"}).json()
        seen += [e["subject"] for e in page["value"]]
        link = page.get("@odata.nextLink")
        pages += 1
    assert pages == 4
    assert seen == [f"e{d:02d}" for d in range(1, 26)]
