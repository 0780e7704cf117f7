"""Graph behaviours that break naive sync, enforced by the sandbox (docs/sandbox.md, "Graph
behaviours the sandbox enforces, and their sources"): time zones, all-day events, online
meetings, Deleted Items, places paging."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, Graph, event_body
from tests.sandbox.test_delta import WINDOW, round_pages

TEGEL = "berlin.tegel@contoso.example"  # the seed's room whose calendar offers no Teams
TEAMS = {"isOnlineMeeting": True, "onlineMeetingProvider": "teamsForBusiness"}


def create(graph: Graph, mailbox: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = graph.post(f"/users/{mailbox}/events", body, headers=headers)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def view_ids(graph: Graph, mailbox: str, start: str, end: str) -> list[str]:
    answer = graph.get(
        f"/users/{mailbox}/calendarView?startDateTime={start}&endDateTime={end}",
        headers={"Prefer": "odata.maxpagesize=100"},
    )
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()["value"]]


# -- time zones -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone",
    [
        "Europe/Berlin",
        "Europe/Paris",
        "Europe/Warsaw",
        "Europe/Budapest",
        "Europe/London",
        "W. Europe Standard Time",
        "Romance Standard Time",
        "Tokyo Standard Time",
        "UTC",
    ],
)
def test_windows_names_and_the_listed_iana_names_are_accepted(graph: Graph, zone: str) -> None:
    answer = graph.post(
        f"/users/{ROOM}/events",
        event_body("ok", "2030-01-07T09:00:00", "2030-01-07T10:00:00", zone),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["originalStartTimeZone"] == zone


@pytest.mark.parametrize(
    "zone",
    ["Europe/Vienna", "Europe/Zurich", "Europe/Amsterdam", "Europe/Rome", "Europe/Madrid", "GMT"],
)
def test_iana_names_off_the_documented_list_are_refused(
    sb: Sandbox, graph: Graph, zone: str
) -> None:
    answer = graph.post(
        f"/users/{ROOM}/events",
        event_body("no", "2030-01-07T09:00:00", "2030-01-07T10:00:00", zone),
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "TimeZoneNotSupportedException"
    assert answer.json()["error"]["message"] == (
        "A valid TimeZone value must be specified. The following TimeZone value is not "
        f"supported: '{zone}'."
    )
    assert sb.control.events(ROOM) == []


def test_prefer_outlook_timezone_takes_a_listed_iana_name(graph: Graph) -> None:
    event = create(graph, ROOM, event_body("x", "2030-07-07T09:00:00", "2030-07-07T10:00:00"))
    london = graph.get(
        f"/users/{ROOM}/events/{event['id']}",
        headers={"Prefer": 'outlook.timezone="Europe/London"'},
    ).json()
    assert london["start"] == {
        "dateTime": "2030-07-07T10:00:00.0000000",
        "timeZone": "Europe/London",
    }


# -- all-day events ---------------------------------------------------------------------------


def test_all_day_events_read_back_as_midnight_in_any_zone(sb: Sandbox, graph: Graph) -> None:
    body = event_body(
        "Holiday",
        "2030-01-07T00:00:00",
        "2030-01-09T00:00:00",
        "Tokyo Standard Time",
        isAllDay=True,
    )
    event = create(graph, ROOM, body)
    for zone in ("UTC", "Pacific Standard Time", "Europe/Berlin", "Tokyo Standard Time"):
        read = graph.get(
            f"/users/{ROOM}/events/{event['id']}",
            headers={"Prefer": f'outlook.timezone="{zone}"'},
        ).json()
        assert read["start"] == {"dateTime": "2030-01-07T00:00:00.0000000", "timeZone": zone}
        assert read["end"] == {"dateTime": "2030-01-09T00:00:00.0000000", "timeZone": zone}
    assert event["start"] == {"dateTime": "2030-01-07T00:00:00.0000000", "timeZone": "UTC"}
    # Midnight in the zone it is written in is still required.
    shifted = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "off", "2030-01-07T00:00:00", "2030-01-08T00:00:00", "Europe/Berlin", isAllDay=True
        )
        | {"start": {"dateTime": "2030-01-06T23:00:00", "timeZone": "UTC"}},
    )
    assert shifted.status_code == 400
    # A PATCH of other fields keeps the dates; moving it uses the new zone's midnight.
    patched = graph.patch(f"/users/{ROOM}/events/{event['id']}", {"subject": "Holiday 2"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["start"]["dateTime"] == "2030-01-07T00:00:00.0000000"
    moved = graph.patch(
        f"/users/{ROOM}/events/{event['id']}",
        {
            "start": {"dateTime": "2030-01-10T00:00:00", "timeZone": "Pacific Standard Time"},
            "end": {"dateTime": "2030-01-11T00:00:00", "timeZone": "Pacific Standard Time"},
        },
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["start"]["dateTime"] == "2030-01-10T00:00:00.0000000"
    assert moved.json()["end"]["dateTime"] == "2030-01-11T00:00:00.0000000"


def test_all_day_events_overlap_windows_as_utc_dates(graph: Graph) -> None:
    body = event_body(
        "Offsite", "2030-01-07T00:00:00", "2030-01-08T00:00:00", "Europe/Berlin", isAllDay=True
    )
    event = create(graph, ROOM, body)
    # [2030-01-07 00:00 UTC, 2030-01-08 00:00 UTC), not Berlin's [06 23:00, 07 23:00).
    assert view_ids(graph, ROOM, "2030-01-06T23:00:00Z", "2030-01-07T00:00:00Z") == []
    assert view_ids(graph, ROOM, "2030-01-07T23:00:00Z", "2030-01-08T00:00:00Z") == [event["id"]]
    schedule = graph.post(
        f"/users/{ROOM}/calendar/getSchedule",
        {
            "schedules": [ROOM],
            "startTime": {"dateTime": "2030-01-07T00:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2030-01-08T00:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 360,
        },
        headers={"Prefer": 'outlook.timezone="Eastern Standard Time"'},
    ).json()["value"][0]
    assert schedule["availabilityView"] == "2222"
    assert schedule["scheduleItems"][0]["start"] == {
        "dateTime": "2030-01-07T00:00:00.0000000",
        "timeZone": "Eastern Standard Time",
    }


def test_an_all_day_series_keeps_its_dates(graph: Graph) -> None:
    master = create(
        graph,
        ROOM,
        event_body(
            "Weekly day off",
            "2030-01-07T00:00:00",
            "2030-01-08T00:00:00",
            "Pacific Standard Time",
            isAllDay=True,
            recurrence={
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3},
            },
        ),
    )
    items = graph.get(
        f"/users/{ROOM}/calendarView?startDateTime=2030-01-01T00:00:00Z"
        "&endDateTime=2030-02-01T00:00:00Z",
        headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'},
    ).json()["value"]
    assert [(i["start"]["dateTime"], i["end"]["dateTime"]) for i in items] == [
        (f"2030-01-{d:02d}T00:00:00.0000000", f"2030-01-{d + 1:02d}T00:00:00.0000000")
        for d in (7, 14, 21)
    ]
    assert {i["seriesMasterId"] for i in items} == {master["id"]}


# -- online meetings --------------------------------------------------------------------------


def test_a_calendar_without_teams_gives_no_meeting(sb: Sandbox, graph: Graph) -> None:
    calendar = graph.get(f"/users/{TEGEL}/calendar").json()
    assert calendar["allowedOnlineMeetingProviders"] == ["unknown"]
    assert calendar["defaultOnlineMeetingProvider"] == "unknown"
    assert graph.get(f"/users/{ROOM}/calendar").json()["allowedOnlineMeetingProviders"] == [
        "teamsForBusiness"
    ]
    event = create(
        graph, TEGEL, event_body("Call", "2030-01-07T09:00:00", "2030-01-07T10:00:00", **TEAMS)
    )
    assert (event["isOnlineMeeting"], event["onlineMeetingProvider"]) == (False, "unknown")
    assert event["onlineMeeting"] is None
    assert "Microsoft Teams meeting" not in event["body"]["content"]
    patched = graph.patch(f"/users/{TEGEL}/events/{event['id']}", {"isOnlineMeeting": True})
    assert patched.status_code == 200
    assert (patched.json()["isOnlineMeeting"], patched.json()["onlineMeeting"]) == (False, None)

    # The control API sets a mailbox's providers.
    assert sb.control.set_meeting_providers(PERSON, "unknown")["allowedOnlineMeetingProviders"] == [
        "unknown"
    ]
    person = create(
        graph, PERSON, event_body("c", "2030-01-07T09:00:00", "2030-01-07T10:00:00", **TEAMS)
    )
    assert person["isOnlineMeeting"] is False
    sb.control.set_meeting_providers(PERSON, "teamsForBusiness")
    again = create(
        graph, PERSON, event_body("c", "2030-01-07T09:00:00", "2030-01-07T10:00:00", **TEAMS)
    )
    assert again["onlineMeeting"]["joinUrl"].startswith(
        "https://teams.microsoft.com/l/meetup-join/"
    )


def test_the_teams_block_looks_like_outlooks(graph: Graph) -> None:
    event = create(
        graph,
        PERSON,
        event_body(
            "Call",
            "2030-01-07T09:00:00",
            "2030-01-07T10:00:00",
            body={"contentType": "html", "content": "<p>Agenda</p>"},
            **TEAMS,
        ),
    )
    content = event["body"]["content"]
    join = event["onlineMeeting"]["joinUrl"]
    assert content.index("<p>Agenda</p>") < content.index("_" * 80)
    assert content.count("_" * 80) == 2
    for text in (
        "Microsoft Teams meeting",
        "Join on your computer, mobile app or room device",
        f'href="{join}"',
        "Click here to join the meeting",
        "Meeting ID: ",
        "Passcode: ",
        "Meeting options",
    ):
        assert text in content, text
    assert content.rstrip().endswith("</html>")


def test_a_body_without_the_meeting_blob_removes_the_meeting(graph: Graph) -> None:
    event = create(
        graph, PERSON, event_body("Call", "2030-01-07T09:00:00", "2030-01-07T10:00:00", **TEAMS)
    )
    url = f"/users/{PERSON}/events/{event['id']}"
    join = event["onlineMeeting"]["joinUrl"]
    # Editing the body read back (blob kept) keeps the meeting.
    kept = graph.patch(
        url,
        {"body": {"contentType": "html", "content": "<p>New</p>" + event["body"]["content"]}},
    ).json()
    assert kept["onlineMeeting"] == {"joinUrl": join}
    # A body written from scratch drops it.
    dropped = graph.patch(url, {"body": {"contentType": "text", "content": "Just text"}}).json()
    assert (dropped["isOnlineMeeting"], dropped["onlineMeetingProvider"]) == (False, "unknown")
    assert dropped["onlineMeeting"] is None
    assert join not in dropped["body"]["content"]
    assert graph.get(url).json()["onlineMeeting"] is None


def test_body_with_is_online_meeting_again_makes_a_new_join_url(graph: Graph) -> None:
    event = create(
        graph, PERSON, event_body("Call", "2030-01-07T09:00:00", "2030-01-07T10:00:00", **TEAMS)
    )
    url = f"/users/{PERSON}/events/{event['id']}"
    first = event["onlineMeeting"]["joinUrl"]
    same = graph.patch(url, {"subject": "Call 2", "isOnlineMeeting": True}).json()
    assert same["onlineMeeting"]["joinUrl"] == first  # without body the meeting stays
    renewed = graph.patch(
        url, {"body": {"contentType": "html", "content": event["body"]["content"]}, **TEAMS}
    ).json()
    second = renewed["onlineMeeting"]["joinUrl"]
    assert renewed["isOnlineMeeting"] is True and second != first
    assert first not in renewed["body"]["content"]
    assert renewed["body"]["content"].count("Microsoft Teams meeting") == 1


# -- Deleted Items ----------------------------------------------------------------------------


def test_a_deleted_event_moves_to_deleted_items(sb: Sandbox, graph: Graph) -> None:
    prop = "String {66f5a359-4659-4830-9070-00040ec6ac6e} Name BookingId"
    event = create(
        graph,
        ROOM,
        event_body(
            "booking",
            "2030-01-10T09:00:00",
            "2030-01-10T10:00:00",
            transactionId="bk_9-v1",
            singleValueExtendedProperties=[{"id": prop, "value": "bk_9"}],
        ),
    )
    event_id = quote(event["id"], safe="")
    _, delta_link, _ = round_pages(graph, f"/users/{ROOM}/calendarView/delta?{WINDOW}", 10)
    sb.control.delete_event(ROOM, event["id"])  # a person deletes it in Outlook

    assert [e["id"] for e in sb.control.deleted_events(ROOM)] == [event["id"]]
    assert sb.control.events(ROOM) == []
    assert view_ids(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z") == []
    changes, _, _ = round_pages(graph, delta_link, 10)
    assert changes == [
        {
            "@odata.type": "#microsoft.graph.event",
            "id": event["id"],
            "@removed": {"reason": "deleted"},
        }
    ]
    for path in (f"/users/{ROOM}/events", f"/users/{ROOM}/calendar/events"):
        assert graph.get(path).json()["value"] == []
    query = (
        f"$filter=singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and ep/value eq 'bk_9')"
    )
    assert graph.get(f"/users/{ROOM}/events?{query}").json()["value"] == []
    in_calendar = f"/users/{ROOM}/calendar/events/{event_id}"
    for answer in (
        graph.get(in_calendar),
        graph.patch(in_calendar, {"subject": "x"}),
        graph.delete(in_calendar),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "ErrorItemNotFound"

    # The immutable id still finds it through /events/{id}; a PATCH succeeds unseen.
    in_mailbox = f"/users/{ROOM}/events/{event_id}"
    assert graph.get(in_mailbox).json()["subject"] == "booking"
    patched = graph.patch(in_mailbox, {"subject": "changed in the bin"})
    assert patched.status_code == 200
    assert view_ids(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z") == []
    # A create repeating its transactionId returns the deleted event.
    again = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "booking", "2030-01-10T09:00:00", "2030-01-10T10:00:00", transactionId="bk_9-v1"
        ),
    )
    assert again.status_code == 201
    assert again.json()["id"] == event["id"]
    assert view_ids(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z") == []
    # DELETE through /events/{id} empties it from Deleted Items.
    assert graph.delete(in_mailbox).status_code == 204
    assert graph.get(in_mailbox).status_code == 404
    assert sb.control.deleted_events(ROOM) == []


def test_app_deletes_and_moves_outside_the_window_come_as_removed(
    sb: Sandbox, graph: Graph
) -> None:
    inside = create(graph, ROOM, event_body("in", "2030-01-10T09:00:00", "2030-01-10T10:00:00"))
    outside = create(graph, ROOM, event_body("out", "2030-05-10T09:00:00", "2030-05-10T10:00:00"))
    _, delta_link, _ = round_pages(graph, f"/users/{ROOM}/calendarView/delta?{WINDOW}", 10)
    assert graph.delete(f"/users/{ROOM}/calendar/events/{inside['id']}").status_code == 204
    assert graph.delete(f"/users/{ROOM}/events/{outside['id']}").status_code == 204
    made = create(graph, ROOM, event_body("new", "2030-06-10T09:00:00", "2030-06-10T10:00:00"))
    changes, _, _ = round_pages(graph, delta_link, 10)
    assert {c["id"] for c in changes} == {inside["id"], outside["id"], made["id"]}
    assert all(c["@removed"] == {"reason": "deleted"} for c in changes)
    assert {e["id"] for e in sb.control.deleted_events(ROOM)} == {inside["id"], outside["id"]}


def test_a_deleted_occurrence_stays_a_cancelled_occurrence(sb: Sandbox, graph: Graph) -> None:
    create(
        graph,
        ROOM,
        event_body(
            "Daily",
            "2030-01-07T09:00:00",
            "2030-01-07T09:30:00",
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 3},
            },
        ),
    )
    ids = view_ids(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z")
    assert graph.delete(f"/users/{ROOM}/events/{ids[1]}").status_code == 204
    assert sb.control.deleted_events(ROOM) == []
    assert view_ids(graph, ROOM, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z") == [
        ids[0],
        ids[2],
    ]


# -- places -----------------------------------------------------------------------------------


def test_places_never_send_a_next_link(sb: Sandbox, graph: Graph) -> None:
    for path in ("/places/microsoft.graph.room", "/places/microsoft.graph.roomlist"):
        page = graph.get(f"{path}?$top=1").json()
        assert len(page["value"]) == 1
        assert "@odata.nextLink" not in page
        assert len(graph.get(f"{path}?$top=1&$skip=1").json()["value"]) == 1
    sb.control.update_settings(places_page_size=2)
    default = graph.get("/places/microsoft.graph.room").json()
    assert len(default["value"]) == 2 and "@odata.nextLink" not in default
    assert graph.get("/places/microsoft.graph.room?$skip=4").json()["value"][0]["emailAddress"]
    assert graph.get("/places/microsoft.graph.room?$skip=5").json()["value"] == []
