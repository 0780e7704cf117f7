"""Booking events: validation of every field, and the Outlook event they project to (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from sync_core.domain.booking import (
    BOOKING_PROPERTY_ID,
    BookingEvent,
    body_keeping_meeting,
    changed_fields,
    content_hash,
    creation_body,
    fingerprints,
    meeting_blob,
    project,
    transaction_id,
)
from sync_core.domain.outlook import parse_graph_time
from sync_core.problems import ValidationFailed
from sync_core.validation import parse_model


def event(**data: Any) -> dict[str, Any]:
    base = {
        "id": "bk_123",
        "version": 7,
        "resource_id": "room-42",
        "status": "confirmed",
        "start": "2026-11-23T09:00:00+01:00",
        "end": "2026-11-23T10:30:00+01:00",
        "all_day": False,
        "time_zone": "Europe/Berlin",
        "title": "Sprint review",
        "notes": "Bring the demo laptop",
        "organizer": {"name": "Ada Lovelace", "email": "ada@contoso.example"},
        "guests": [{"name": "Alan Turing", "email": "alan@contoso.example"}],
        "private": False,
        "online_meeting": False,
    }
    base.update(data)
    return {"type": "booking.created", "timestamp": "2026-11-22T10:00:00Z", "data": base}


def test_the_spec_example_is_valid() -> None:
    parsed = BookingEvent.model_validate(event())
    assert parsed.data.interval_utc()[0].isoformat() == "2026-11-23T08:00:00+00:00"
    assert not parsed.removes


def test_every_bad_field_is_listed() -> None:
    bad = event(
        version=0,
        resource_id="",
        start="tomorrow",
        time_zone="Mars/Olympus",
        guests=[{"email": "nope"}],
        private="yes",
    )
    bad["type"] = "booking.exploded"
    with pytest.raises(ValidationFailed) as caught:
        parse_model(BookingEvent, bad)
    fields = {e.field for e in caught.value.errors}
    assert {
        "type",
        "data.version",
        "data.resource_id",
        "data.start",
        "data.time_zone",
        "data.guests.0.email",
        "data.private",
    } <= fields


def test_end_must_follow_start_and_offsets_are_required() -> None:
    with pytest.raises(ValidationFailed, match="not valid") as caught:
        parse_model(BookingEvent, event(end="2026-11-23T08:00:00+01:00"))
    assert "end must be after start" in caught.value.errors[0].message
    with pytest.raises(ValidationFailed) as caught:
        parse_model(BookingEvent, event(start="2026-11-23T09:00:00"))
    assert "UTC offset" in caught.value.errors[0].message


def test_all_day_bookings_use_dates_in_their_windows_zone() -> None:
    parsed = BookingEvent.model_validate(
        event(all_day=True, start="2026-11-23", end="2026-11-24", time_zone="Europe/Vienna")
    )
    body = project(parsed.data)
    assert body["isAllDay"] is True
    # Graph refuses Europe/Vienna by name; CLDR's Windows zone for it is accepted.
    assert body["start"] == {
        "dateTime": "2026-11-23T00:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert body["end"] == {"dateTime": "2026-11-24T00:00:00", "timeZone": "W. Europe Standard Time"}
    start, end = parsed.data.interval_utc()
    assert start.isoformat() == "2026-11-22T23:00:00+00:00"
    assert (end - start).total_seconds() == 86400
    # Where it sits in a calendar read: by its dates, as Outlook reads all-day events back.
    span = parsed.data.calendar_span()
    assert [m.isoformat() for m in span] == [
        "2026-11-23T00:00:00+00:00",
        "2026-11-24T00:00:00+00:00",
    ]
    with pytest.raises(ValidationFailed):
        parse_model(BookingEvent, event(all_day=True, start="2026-11-23T00:00:00+01:00"))


def test_projection_carries_title_notes_guests_privacy_and_teams() -> None:
    parsed = BookingEvent.model_validate(event(private=True, online_meeting=True))
    body = project(parsed.data, category="Booked", invite_guests=True)
    assert body["subject"] == "Sprint review"
    # Written in the booking's zone (as Windows names it), so Outlook does not show "UTC".
    assert body["start"] == {
        "dateTime": "2026-11-23T09:00:00",
        "timeZone": "W. Europe Standard Time",
    }
    assert "Bring the demo laptop" in body["body"]["content"]
    assert "Ada Lovelace" in body["body"]["content"]
    assert body["attendees"][0]["emailAddress"]["address"] == "alan@contoso.example"
    assert body["sensitivity"] == "private"
    assert body["categories"] == ["Booked"]
    assert body["isOnlineMeeting"] is True
    assert body["onlineMeetingProvider"] == "teamsForBusiness"
    quiet = project(parsed.data, invite_guests=False)
    assert quiet["attendees"] == []
    assert "Alan Turing" in quiet["body"]["content"]


def test_creation_marks_ownership_and_retries_reuse_the_transaction() -> None:
    first = transaction_id("bk_1", "room@contoso.example", 1)
    assert first == transaction_id("bk_1", "room@contoso.example", 1)
    assert first != transaction_id("bk_1", "room@contoso.example", 2)
    assert first != transaction_id("bk_1", "other@contoso.example", 1)
    body = creation_body({"subject": "x"}, "bk_1", first)
    assert body["transactionId"] == first
    assert body["singleValueExtendedProperties"] == [{"id": BOOKING_PROPERTY_ID, "value": "bk_1"}]


def test_only_changed_fields_are_patched() -> None:
    before = project(BookingEvent.model_validate(event()).data)
    after = project(BookingEvent.model_validate(event(title="Retro", version=8)).data)
    applied = fingerprints(before)
    assert changed_fields(after, applied) == {"subject": "Retro"}
    assert changed_fields(before, applied) == {}
    assert content_hash(fingerprints(before)) != content_hash(fingerprints(after))
    assert content_hash(fingerprints(before)) == content_hash(applied)


def test_cancelled_status_removes() -> None:
    assert BookingEvent.model_validate(event(status="cancelled")).removes
    deleted = event()
    deleted["type"] = "booking.deleted"
    assert BookingEvent.model_validate(deleted).removes


@pytest.mark.parametrize(
    ("zone", "start", "windows", "wall"),
    [
        ("Europe/Berlin", "2027-03-28T01:30:00+01:00", "W. Europe Standard Time", "01:30"),
        # The spring DST change: 03:30 summer time is the instant 01:30Z.
        ("Europe/Zurich", "2027-03-28T03:30:00+02:00", "W. Europe Standard Time", "03:30"),
        ("America/New_York", "2027-11-07T00:30:00-04:00", "Eastern Standard Time", "00:30"),
        # The hour repeated when clocks go back: both of its 01:30s are written in UTC.
        ("America/New_York", "2027-11-07T01:30:00-04:00", "UTC", "05:30"),
        ("America/New_York", "2027-11-07T01:30:00-05:00", "UTC", "06:30"),
        ("Asia/Kolkata", "2027-11-07T09:00:00+05:30", "India Standard Time", "09:00"),
        ("Australia/Sydney", "2027-11-07T02:30:00+11:00", "AUS Eastern Standard Time", "02:30"),
        ("UTC", "2027-11-07T09:00:00+00:00", "UTC", "09:00"),
    ],
)
def test_timed_bookings_keep_their_instant_in_the_windows_zone(
    zone: str, start: str, windows: str, wall: str
) -> None:
    """The wall time Graph gets, read in the Windows zone, is exactly the booked instant."""
    booking = BookingEvent.model_validate(
        event(start=start, end="2027-12-31T00:00:00+00:00", time_zone=zone)
    ).data
    body = project(booking)
    assert body["start"]["timeZone"] == windows
    assert body["start"]["dateTime"].endswith(f"T{wall}:00")
    assert parse_graph_time(body["start"]) == booking.interval_utc()[0]


TEAMS_BODY = (
    '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    "\r\n</head>\r\n<body>\r\n<div>Bring the demo laptop</div>\r\n"
    '<div style="width:100%;height: 20px;"><span style="white-space:nowrap;color:#5F5F5F;'
    'opacity:.36;">________________________________________________________________________________'
    '</span></div>\r\n<div class="me-email-text" lang="en-US" style="color:#252424;">'
    '<div style="margin-bottom: 24px;"><span style="font-size: 24px;">Microsoft Teams</span>'
    '</div><a href="https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0'
    '?context=%7b%7d" target="_blank">Join the meeting now</a><div>Meeting ID: 123</div></div>'
    "\r\n</body>\r\n</html>\r\n"
)
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0?context=%7b%7d"


def test_a_new_body_keeps_the_meeting_block() -> None:
    blob = meeting_blob(TEAMS_BODY, JOIN)
    assert blob.startswith('<div style="width:100%;height: 20px;">')
    assert JOIN in blob and "Meeting ID: 123" in blob and "demo laptop" not in blob
    body = body_keeping_meeting({"contentType": "text", "content": "Bring <snacks>\nand tea"}, blob)
    assert body["contentType"] == "html"
    assert "Bring &lt;snacks&gt;<br>" in body["content"] and body["content"].count(JOIN) == 1
    assert meeting_blob(TEAMS_BODY, None) == "" and meeting_blob("<html></html>", JOIN) == ""
    plain = {"contentType": "text", "content": "x"}
    assert body_keeping_meeting(plain, "") == plain
