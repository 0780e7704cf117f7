"""getSchedule as Exchange's availability service answers it: limits, errors, shapes, time zones,
permissions (sources in docs/sandbox.md, "getSchedule"), and Microsoft's own SDK calling it."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, ROOM2, Graph, event_body, get_token
from tests.sandbox.sdk_client import sdk_client

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.users.item.calendar.get_schedule.get_schedule_post_request_body import (
        GetSchedulePostRequestBody,
    )

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:msgraph.*", "ignore::DeprecationWarning:kiota_abstractions.*"
)

PATH = f"/users/{PERSON}/calendar/getSchedule"


def body(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "schedules": [ROOM],
        "startTime": {"dateTime": "2030-01-07T08:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2030-01-07T12:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 60,
    }
    request.update(overrides)
    return request


def error(answer: Any) -> tuple[int, str, str]:
    document = answer.json()["error"]
    return answer.status_code, document["code"], document["message"]


def window(days: float) -> dict[str, Any]:
    from datetime import datetime, timedelta

    start = datetime(2030, 1, 1)
    end = start + timedelta(days=days)
    return {
        "startTime": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "endTime": {"dateTime": end.isoformat(), "timeZone": "UTC"},
    }


def test_twenty_schedules_at_most(graph: Graph) -> None:
    twenty = [f"r{n}@contoso.example" for n in range(20)]
    assert graph.post(PATH, body(schedules=twenty)).status_code == 200
    status, code, message = error(graph.post(PATH, body(schedules=[*twenty, ROOM])))
    assert (status, code) == (400, "ErrorMailboxDataArrayTooBig")
    assert message == (
        "There are too many target users in the EmailAddress array. "
        "The allowed size = 20; the actual size = 21."
    )


def test_the_window_is_shorter_than_62_days(graph: Graph) -> None:
    assert graph.post(PATH, body(**window(61.99))).status_code == 200
    status, code, message = error(graph.post(PATH, body(**window(62))))
    assert (status, code) == (400, "ErrorTimeIntervalTooBig")
    assert "The allowed limit = 62 days" in message
    status, code, _ = error(graph.post(PATH, body(**window(63))))
    assert (status, code) == (400, "ErrorTimeIntervalTooBig")
    backwards = body(startTime=body()["endTime"], endTime=body()["startTime"])
    status, code, _ = error(graph.post(PATH, backwards))
    assert (status, code) == (400, "ErrorInvalidTimeInterval")


@pytest.mark.parametrize("interval", [4, 1441, 240, 300])
def test_the_interval_is_5_to_1440_minutes_and_shorter_than_the_window(
    graph: Graph, interval: int
) -> None:
    # The window is 4 hours: 240 minutes is not shorter than it.
    status, code, message = error(graph.post(PATH, body(availabilityViewInterval=interval)))
    assert (status, code) == (400, "ErrorInvalidMergedFreeBusyInterval")
    assert "between 5 and 1440 minutes" in message


def test_interval_default_text_and_null(graph: Graph) -> None:
    without = {k: v for k, v in body().items() if k != "availabilityViewInterval"}
    answer = graph.post(PATH, without)
    assert answer.status_code == 200
    assert len(answer.json()["value"][0]["availabilityView"]) == 8  # 30 minutes by default
    # Microsoft's concept page sends the interval as text and capitalised parameter names.
    capitalised = {
        "Schedules": [ROOM],
        "StartTime": body()["startTime"],
        "EndTime": body()["endTime"],
        "availabilityViewInterval": "15",
    }
    answer = graph.post(PATH, capitalised)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["value"][0]["availabilityView"]) == 16
    assert graph.post(PATH, body(availabilityViewInterval=None)).status_code == 500
    assert error(graph.post(PATH, body(subject="x")))[:2] == (400, "RequestBodyRead")


def test_unknown_and_denied_schedules_are_items_with_only_an_error(sb: Sandbox) -> None:
    sb.control.scope_calendars([ROOM])  # Exchange RBAC: the app may read ROOM only
    graph = Graph(sb, get_token(sb))
    answer = graph.post(
        f"/users/{ROOM}/calendar/getSchedule",
        body(schedules=[ROOM, "nobody@contoso.example", ROOM2]),
    )
    assert answer.status_code == 200, answer.text
    room, unknown, denied = answer.json()["value"]
    assert set(room) == {"scheduleId", "availabilityView", "scheduleItems", "workingHours"}
    assert unknown == {
        "scheduleId": "nobody@contoso.example",
        "error": {
            "message": "Unable to resolve e-mail address nobody@contoso.example to an Active "
            "Directory object.",
            "responseCode": "5009",
        },
    }
    assert denied == {
        "scheduleId": ROOM2,
        "error": {
            "message": "Access is denied. Check credentials and try again.",
            "responseCode": "ErrorAccessDenied",
        },
    }


def test_calendars_read_or_readwrite_is_required(sb: Sandbox) -> None:
    sb.control.set_roles(["Calendars.ReadBasic.All", "Place.Read.All"])
    answer = Graph(sb, get_token(sb)).post(PATH, body())
    assert error(answer)[:2] == (403, "ErrorAccessDenied")
    sb.control.set_roles(["Calendars.Read"])
    assert Graph(sb, get_token(sb)).post(PATH, body()).status_code == 200


def test_items_are_in_the_preferred_zone_else_utc(graph: Graph) -> None:
    graph.post(
        f"/users/{ROOM}/events",
        event_body("Board", "2030-01-07T09:00:00", "2030-01-07T10:00:00", showAs="oof"),
    )
    request = body(
        startTime={"dateTime": "2030-01-07T09:00:00", "timeZone": "W. Europe Standard Time"},
        endTime={"dateTime": "2030-01-07T13:00:00", "timeZone": "W. Europe Standard Time"},
    )
    plain = graph.post(PATH, request).json()["value"][0]
    (item,) = plain["scheduleItems"]
    assert item["status"] == "oof"
    assert item["start"] == {"dateTime": "2030-01-07T09:00:00.0000000", "timeZone": "UTC"}
    assert plain["availabilityView"] == "0300"  # 08:00-12:00 UTC, hour by hour
    zoned = graph.post(
        PATH, request, headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'}
    )
    assert zoned.headers["Preference-Applied"] == 'outlook.timezone="Pacific Standard Time"'
    assert zoned.json()["value"][0]["scheduleItems"][0]["start"] == {
        "dateTime": "2030-01-07T01:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }


def test_microsofts_sdk_calls_get_schedule(sb: Sandbox) -> None:
    sb.control.create_event(
        ROOM, event_body("Offsite", "2030-01-07T09:00:00", "2030-01-07T10:30:00")
    )
    sent: list[str] = []

    async def scenario() -> Any:
        async with sdk_client(sb, sent) as client:
            request = GetSchedulePostRequestBody(
                schedules=[ROOM, "nobody@contoso.example"],
                start_time=DateTimeTimeZone(date_time="2030-01-07T08:00:00", time_zone="UTC"),
                end_time=DateTimeTimeZone(date_time="2030-01-07T12:00:00", time_zone="UTC"),
                availability_view_interval=30,
            )
            return await client.users.by_user_id(PERSON).calendar.get_schedule.post(request)

    answer = asyncio.run(scenario())
    assert any("/calendar/getSchedule" in line for line in sent)
    room, unknown = answer.value
    assert room.schedule_id == ROOM
    assert room.availability_view == "00222000"
    (item,) = room.schedule_items
    assert item.status is not None and item.status.value == "busy"
    assert (item.start.date_time, item.end.date_time) == (
        "2030-01-07T09:00:00.0000000",
        "2030-01-07T10:30:00.0000000",
    )
    assert unknown.error is not None and unknown.error.response_code == "5009"
    assert not unknown.schedule_items
