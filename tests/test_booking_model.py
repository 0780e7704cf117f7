"""Booking events: validation of every field, and the Outlook event they project to (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from sync_core.booking import (
    BOOKING_PROPERTY_ID,
    BookingEvent,
    changed_fields,
    content_hash,
    creation_body,
    fingerprints,
    project,
    transaction_id,
)
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


def test_all_day_bookings_use_dates_in_their_zone() -> None:
    parsed = BookingEvent.model_validate(
        event(all_day=True, start="2026-11-23", end="2026-11-24", time_zone="Europe/Berlin")
    )
    body = project(parsed.data)
    assert body["isAllDay"] is True
    assert body["start"] == {"dateTime": "2026-11-23T00:00:00", "timeZone": "Europe/Berlin"}
    assert body["end"] == {"dateTime": "2026-11-24T00:00:00", "timeZone": "Europe/Berlin"}
    start, end = parsed.data.interval_utc()
    assert start.isoformat() == "2026-11-22T23:00:00+00:00"
    assert (end - start).total_seconds() == 86400
    with pytest.raises(ValidationFailed):
        parse_model(BookingEvent, event(all_day=True, start="2026-11-23T00:00:00+01:00"))


def test_projection_carries_title_notes_guests_privacy_and_teams() -> None:
    parsed = BookingEvent.model_validate(event(private=True, online_meeting=True))
    body = project(parsed.data, category="Booked", invite_guests=True)
    assert body["subject"] == "Sprint review"
    assert body["start"] == {"dateTime": "2026-11-23T08:00:00", "timeZone": "UTC"}
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
