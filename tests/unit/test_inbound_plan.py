"""The inbound decisions (pure): what blocks, privacy, series, echoes and drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sync_core.domain.booking import BookingEvent, project
from sync_core.domain.inbound import (
    TRANSACTION_PREFIX,
    Own,
    Plan,
    blocker_id,
    outside_window,
    plan_full_round,
    plan_page,
    to_blocker,
)
from sync_core.domain.outlook import drifted_fields, observable_digest

MAILBOX = "room.berlin@contoso.example"
RESOURCE = "room-42"
WINDOW = (datetime(2026, 11, 22, tzinfo=UTC), datetime(2027, 5, 21, tzinfo=UTC))


def decide(changed: list[dict[str, Any]], removed: list[str], **kwargs: Any) -> Plan:
    """plan_page with Graph's delta items: the changed events, then the removals."""
    gone = [{"id": i, "@removed": {"reason": "deleted"}} for i in removed]
    return plan_page(items=[*changed, *gone], **kwargs)


def outlook(event_id: str, **fields: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "subject": "Board meeting",
        "start": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-23T10:00:00.0000000", "timeZone": "UTC"},
        "isAllDay": False,
        "showAs": "busy",
        "sensitivity": "normal",
        "isCancelled": False,
        "type": "singleInstance",
        "iCalUId": "ical-" + event_id,
    }
    event.update(fields)
    return event


@pytest.mark.parametrize(
    ("show_as", "blocks"),
    [
        ("busy", True),
        ("tentative", True),
        ("oof", True),
        ("workingElsewhere", True),
        ("free", False),
        ("unknown", False),
    ],
)
def test_what_blocks(show_as: str, blocks: bool) -> None:
    assert (
        to_blocker(MAILBOX, outlook("e1", showAs=show_as), "full", RESOURCE) is not None
    ) == blocks


def test_cancelled_events_and_series_masters_do_not_block() -> None:
    assert to_blocker(MAILBOX, outlook("e1", isCancelled=True), "full", RESOURCE) is None
    assert to_blocker(MAILBOX, outlook("e1", type="seriesMaster"), "full", RESOURCE) is None
    occurrence = to_blocker(MAILBOX, outlook("e1-occ", type="occurrence"), "full", RESOURCE)
    assert occurrence is not None


@pytest.mark.parametrize(
    ("privacy", "sensitivity", "title"),
    [
        ("full", "normal", "Board meeting"),
        ("busy_only", "normal", None),
        ("full", "private", None),
        ("full", "personal", None),
        ("full", "confidential", None),
    ],
)
def test_privacy(privacy: str, sensitivity: str, title: str | None) -> None:
    blocker = to_blocker(MAILBOX, outlook("e1", sensitivity=sensitivity), privacy, RESOURCE)
    assert blocker is not None
    assert blocker.title == title


def test_ids_are_stable_per_occurrence_and_mailbox() -> None:
    assert blocker_id(MAILBOX, "e1") == blocker_id(MAILBOX.upper(), "e1")
    assert blocker_id(MAILBOX, "e1") != blocker_id(MAILBOX, "e2")
    assert blocker_id(MAILBOX, "e1") != blocker_id("other@contoso.example", "e1")


def test_unchanged_blockers_are_not_sent_again() -> None:
    first = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[outlook("e1")],
        removed=[],
        stored={},
        projections={},
        window=WINDOW,
    )
    assert [b.event_id for b in first.upserts] == ["e1"]
    sent = {first.upserts[0].id: first.upserts[0].content_hash}
    again = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[outlook("e1")],
        removed=[],
        stored=sent,
        projections={},
        window=WINDOW,
    )
    assert again.upserts == [] and again.deletes == []
    moved = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        removed=[],
        stored=sent,
        projections={},
        window=WINDOW,
        changed=[outlook("e1", end={"dateTime": "2026-11-23T11:00:00", "timeZone": "UTC"})],
    )
    assert [b.id for b in moved.upserts] == [first.upserts[0].id]


def test_turning_free_or_removed_deletes_the_blocker() -> None:
    bid = blocker_id(MAILBOX, "e1")
    free = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[outlook("e1", showAs="free")],
        removed=[],
        stored={bid: "x"},
        projections={},
        window=WINDOW,
    )
    assert free.deletes == [bid]
    gone = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[],
        removed=["e1", "never-seen"],
        stored={bid: "x"},
        projections={},
        window=WINDOW,
    )
    assert gone.deletes == [bid]


def booking_projection() -> dict[str, Any]:
    event = BookingEvent.model_validate(
        {
            "type": "booking.created",
            "timestamp": "2026-11-22T10:00:00Z",
            "data": {
                "id": "bk_1",
                "version": 1,
                "resource_id": "room-42",
                "start": "2026-11-23T09:00:00+01:00",
                "end": "2026-11-23T10:00:00+01:00",
                "time_zone": "Europe/Berlin",
                "title": "Sprint review",
            },
        }
    )
    return project(event.data)


def test_own_projections_are_never_blockers_and_echoes_are_not_drift() -> None:
    projection = booking_projection()
    # What Graph shows for the event the service wrote: times in UTC with 7 decimals.
    echo = {
        **projection,
        "id": "ours",
        "start": {"dateTime": "2026-11-23T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"},
    }
    own = {"ours": Own("bk_1", observable_digest(projection))}
    plan = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[echo],
        removed=[],
        stored={},
        projections=own,
        window=WINDOW,
    )
    assert plan.upserts == [] and plan.drifted == []
    edited = {**echo, "subject": "Hijacked"}
    plan = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[edited],
        removed=[],
        stored={},
        projections=own,
        window=WINDOW,
    )
    assert plan.drifted == ["bk_1"] and plan.upserts == []
    deleted = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[],
        removed=["ours"],
        stored={},
        projections=own,
        window=WINDOW,
    )
    assert deleted.drifted == ["bk_1"] and deleted.deletes == []


def test_a_create_not_yet_recorded_is_recognised_by_its_transaction_id() -> None:
    fresh = outlook("new-id", transactionId="txn-1")
    plan = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[fresh],
        removed=[],
        stored={},
        projections={TRANSACTION_PREFIX + "txn-1": Own("bk_9")},
        window=WINDOW,
    )
    assert plan.upserts == [] and plan.drifted == []


def test_full_round_deletes_only_what_is_gone_and_the_window_retires_old_ones() -> None:
    stored = {"a": "1", "b": "2", "c": "3"}
    assert plan_full_round(seen={"a", "c"}, stored=stored) == ["b"]
    assert plan_full_round(seen={"a", "b", "c"}, stored=stored) == []
    ends = {
        "old": (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)),
        "now": (datetime(2026, 11, 21, 23, tzinfo=UTC), datetime(2026, 11, 22, 1, tzinfo=UTC)),
    }
    assert outside_window(ends, WINDOW) == ["old"]


def test_events_outside_the_window_do_not_block() -> None:
    late = outlook(
        "e9",
        start={"dateTime": "2027-06-01T09:00:00", "timeZone": "UTC"},
        end={"dateTime": "2027-06-01T10:00:00", "timeZone": "UTC"},
    )
    plan = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[late],
        removed=[],
        stored={},
        projections={},
        window=WINDOW,
    )
    assert plan.upserts == []


def booking(**data: Any) -> Any:
    base = {
        "id": "bk_1",
        "version": 1,
        "resource_id": "room-42",
        "start": "2026-11-23T09:00:00+01:00",
        "end": "2026-11-23T10:00:00+01:00",
        "time_zone": "Europe/Berlin",
        "title": "Sprint review",
    }
    body = {"type": "booking.created", "timestamp": "2026-11-22T10:00:00Z", "data": base | data}
    return BookingEvent.model_validate(body).data


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Los_Angeles", "Pacific/Auckland"])
def test_an_all_day_projection_read_back_at_midnight_is_no_edit(zone: str) -> None:
    """Outlook reads every all-day event back as midnight to midnight, whatever its zone."""
    written = booking(all_day=True, start="2026-11-23", end="2026-11-25", time_zone=zone)
    projection = project(written)
    shown = {
        **projection,
        "id": "ours",
        "start": {"dateTime": "2026-11-23T00:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-25T00:00:00.0000000", "timeZone": "UTC"},
    }
    assert observable_digest(shown) == observable_digest(projection)
    assert drifted_fields(projection, shown) == {}
    moved = {**shown, "end": {"dateTime": "2026-11-24T00:00:00.0000000", "timeZone": "UTC"}}
    assert set(drifted_fields(projection, moved)) == {"start", "end", "isAllDay"}


def test_a_persons_all_day_event_is_a_blocker_of_dates() -> None:
    event = outlook(
        "day-off",
        isAllDay=True,
        start={"dateTime": "2026-11-23T00:00:00.0000000", "timeZone": "Pacific Standard Time"},
        end={"dateTime": "2026-11-24T00:00:00.0000000", "timeZone": "Pacific Standard Time"},
    )
    blocker = to_blocker(MAILBOX, event, "full", RESOURCE)
    assert blocker is not None and blocker.all_day
    assert (blocker.start.isoformat(), blocker.end.isoformat()) == (
        "2026-11-23T00:00:00+00:00",
        "2026-11-24T00:00:00+00:00",
    )


def test_removed_outside_the_window_is_not_a_deletion() -> None:
    """calendarView/delta also says @removed of events outside its window that changed since
    the last round (event-delta page); only a projection inside the window can be restored."""
    start, end = WINDOW
    own = {
        "past": Own("bk_past", "x", start - timedelta(days=1, hours=2), start - timedelta(days=1)),
        "far": Own("bk_far", "x", end + timedelta(days=20), end + timedelta(days=20, hours=1)),
        "edge": Own("bk_edge", "x", start - timedelta(hours=1), start + timedelta(hours=1)),
        "in": Own("bk_in", "x", start + timedelta(days=3), start + timedelta(days=3, hours=1)),
    }
    plan = decide(
        mailbox=MAILBOX,
        resource_id=RESOURCE,
        privacy="full",
        changed=[],
        removed=["past", "far", "edge", "in"],
        stored={},
        projections=own,
        window=WINDOW,
    )
    assert plan.drifted == ["bk_edge", "bk_in"]


def test_drift_names_only_what_a_person_changed() -> None:
    projection = project(booking(online_meeting=True, notes="Bring the laptop"))
    shown = {**projection, "body": {"contentType": "html", "content": "<html>Teams</html>"}}
    shown["start"] = {"dateTime": "2026-11-23T08:00:00.0000000", "timeZone": "UTC"}
    shown["end"] = {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"}
    assert drifted_fields(projection, shown) == {}  # the same instants, another zone
    assert drifted_fields(projection, {**shown, "subject": "Mine now"}) == {
        "subject": "Sprint review"
    }
    assert drifted_fields(projection, {**shown, "showAs": "free"}) == {"showAs": "busy"}
