"""The outbound decision (pure): which step brings Outlook to a booking's newest state.

Each row is a booking event, what its link says was written, and what was read of the mapping
and of Outlook; the answer is the one step the shell takes next.
"""

from __future__ import annotations

import html
from dataclasses import replace
from typing import Any, get_args

import pytest

from sync_core.domain.booking import BookingEvent, fingerprints, project
from sync_core.domain.outbound import (
    MEETING_FIELDS,
    NOTES_KEPT,
    Facts,
    Kind,
    Mapped,
    Step,
    Written,
    decide,
)

ROOM = "room.berlin@contoso.example"
PARIS = "room.paris@contoso.example"
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_1"
BLOB = f'<div>________________<br><a href="{JOIN}">Join the meeting now</a></div>'
NOTES = "Booked by Ada Lovelace <ada@contoso.example>\n\nGuests: Alan Turing"
BERLIN = "W. Europe Standard Time"


def booking(version: int = 1, kind: str = "", **data: Any) -> BookingEvent:
    base = {
        "id": "bk_123",
        "version": version,
        "resource_id": "room-42",
        "start": "2026-11-23T09:00:00+01:00",
        "end": "2026-11-23T10:30:00+01:00",
        "time_zone": "Europe/Berlin",
        "title": "Sprint review",
        "notes": "Bring the demo laptop",
        "organizer": {"name": "Ada Lovelace", "email": "ada@contoso.example"},
        "guests": [{"name": "Alan Turing", "email": "alan@contoso.example"}],
        **data,
    }
    kind = kind or ("booking.created" if version == 1 else "booking.updated")
    return BookingEvent.model_validate(
        {"type": kind, "timestamp": "2026-11-22T10:00:00Z", "data": base}
    )


V1 = booking()
TEAMS = booking(online_meeting=True)
ALL_DAY = booking(all_day=True, start="2026-11-23", end="2026-11-24")


def written(of: BookingEvent, state: str = "active", mailbox: str = ROOM, **fields: Any) -> Written:
    """The link after ``of`` was written (a pending or removed link has no event)."""
    return Written(
        state,  # type: ignore[arg-type]
        mailbox,
        applied_version=of.data.version,
        event_id="evt-1" if state == "active" else None,
        fingerprints=fingerprints(project(of.data)),
        **fields,
    )


def facts(event: BookingEvent, link: Written | None = None, **read: Any) -> Facts:
    """``event`` to apply over ``link``, with the room mapped unless ``read`` says otherwise."""
    read.setdefault("mapping", Mapped(ROOM))
    return Facts(event, link, project(event.data), **read)


def shown(of: BookingEvent, **fields: Any) -> dict[str, Any]:
    """The event as Outlook shows it after ``of`` was written, then changed by ``fields``."""
    return {"id": "evt-1", **project(of.data), **fields}


def teams_shown(of: BookingEvent) -> dict[str, Any]:
    """A Teams event: Outlook put the meeting block into its (HTML) body."""
    body = {"contentType": "html", "content": f"<html><body><div>x</div>{BLOB}</body></html>"}
    return shown(of, body=body, onlineMeeting={"joinUrl": JOIN})


def kept(text: str) -> dict[str, str]:
    """A body rewritten as HTML with the meeting block after it."""
    lines = html.escape(text).replace("\n", "<br>\r\n")
    return {"contentType": "html", "content": f"<html><body><div>{lines}</div>{BLOB}</body></html>"}


def times(start: str, end: str, zone: str = BERLIN) -> dict[str, Any]:
    return {
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
    }


CASES = [
    # -- a booking the calendar does not show yet
    pytest.param(
        facts(V1, mapping="unread"), Step("read_mapping"), id="new-booking-reads-the-mapping"
    ),
    pytest.param(facts(V1), Step("create", ROOM), id="new-booking-creates"),
    pytest.param(
        facts(booking(2), written(V1, "removed")), Step("create", ROOM), id="rebooked-after-cancel"
    ),
    pytest.param(facts(ALL_DAY), Step("create", ROOM), id="all-day-creates"),
    # -- already in the calendar: nothing to do, not even a mapping read
    pytest.param(
        facts(V1, written(V1), mapping="unread"), Step("nothing"), id="unchanged-redelivery"
    ),
    pytest.param(
        facts(booking(2, title="Old"), written(booking(3)), mapping="unread"),
        Step("nothing"),
        id="older-version-than-stored",
    ),
    pytest.param(
        facts(booking(2, kind="booking.cancelled"), written(booking(2), "removed")),
        Step("nothing"),
        id="cancel-already-applied",
    ),
    pytest.param(facts(V1, repair=True), Step("nothing"), id="repair-of-unknown-booking"),
    pytest.param(
        facts(V1, written(V1, "removed"), repair=True),
        Step("nothing"),
        id="repair-of-removed-booking",
    ),
    pytest.param(
        facts(booking(2, title="Retro"), written(V1), mapping=Mapped(ROOM, enabled=False)),
        Step("ignore"),
        id="mapping-deactivated",
    ),
    # -- should be in no calendar
    pytest.param(
        facts(booking(2, kind="booking.cancelled"), written(V1)),
        Step("delete", ROOM),
        id="cancellation-deletes",
    ),
    pytest.param(
        facts(booking(2, kind="booking.deleted"), written(V1)),
        Step("delete", ROOM),
        id="deletion-deletes",
    ),
    pytest.param(
        facts(booking(2, status="cancelled"), written(V1)),
        Step("delete", ROOM),
        id="cancelled-status-deletes",
    ),
    pytest.param(
        facts(booking(2), written(V1), mapping=None),
        Step("delete", ROOM),
        id="resource-unmapped-deletes",
    ),
    pytest.param(
        facts(booking(2, kind="booking.cancelled"), written(V1, "pending")),
        Step("delete", ROOM),
        id="cancel-during-unrecorded-create-deletes",
    ),
    pytest.param(
        facts(booking(1, kind="booking.cancelled")), Step("gone"), id="cancel-of-unknown-booking"
    ),
    pytest.param(
        facts(booking(3, kind="booking.deleted"), written(booking(2), "removed")),
        Step("gone"),
        id="delete-after-cancel",
    ),
    # -- another calendar
    pytest.param(
        facts(booking(2, resource_id="room-7"), written(V1), mapping=Mapped(PARIS)),
        Step("move", PARIS),
        id="resource-remapped-moves",
    ),
    pytest.param(
        facts(V1, written(V1, "pending"), mapping=Mapped(PARIS)),
        Step("move", PARIS),
        id="unrecorded-create-remapped-moves",
    ),
    pytest.param(
        facts(V1, written(V1), repair=True, mapping=Mapped(PARIS)),
        Step("move", PARIS),
        id="repair-after-remap-moves",
    ),
    # -- a create a worker started but did not record
    pytest.param(
        facts(V1, written(V1, "pending")), Step("find_events", ROOM), id="pending-create-looks"
    ),
    pytest.param(
        facts(V1, written(V1, "pending"), found=[]), Step("resume", ROOM), id="pending-not-made"
    ),
    pytest.param(
        facts(V1, written(V1, "pending"), found=[{"id": "evt-9"}]),
        Step("adopt", ROOM, project(V1.data), event_id="evt-9"),
        id="pending-made-is-adopted",
    ),
    pytest.param(
        facts(V1, written(V1, "pending"), found=[{"id": "evt-9"}, {"id": "evt-10"}]),
        Step("adopt", ROOM, project(V1.data), event_id="evt-9", duplicates=("evt-10",)),
        id="pending-made-twice-drops-the-duplicate",
    ),
    pytest.param(
        facts(TEAMS, written(TEAMS, "pending"), found=[{**teams_shown(TEAMS), "id": "evt-9"}]),
        Step(
            "adopt",
            ROOM,
            {
                **{k: v for k, v in project(TEAMS.data).items() if k not in MEETING_FIELDS},
                "body": kept(f"Bring the demo laptop\n\n{NOTES}"),
            },
            event_id="evt-9",
        ),
        id="pending-made-with-teams-keeps-the-meeting",
    ),
    # -- the booking changed: only what changed is sent
    pytest.param(
        facts(booking(2, title="Retro"), written(V1)),
        Step("patch", ROOM, {"subject": "Retro"}),
        id="title-change-patches-subject",
    ),
    pytest.param(
        facts(booking(2, notes="Bring cake"), written(V1)),
        Step("patch", ROOM, {"body": {"contentType": "text", "content": f"Bring cake\n\n{NOTES}"}}),
        id="notes-change-patches-body",
    ),
    pytest.param(
        facts(booking(2, guests=[]), written(V1)),
        Step(
            "patch",
            ROOM,
            {
                "body": {
                    "contentType": "text",
                    "content": "Bring the demo laptop\n\n"
                    "Booked by Ada Lovelace <ada@contoso.example>",
                }
            },
        ),
        id="guests-change-patches-body",
    ),
    pytest.param(
        facts(
            booking(2, start="2026-11-23T14:00:00+01:00", end="2026-11-23T15:00:00+01:00"),
            written(V1),
        ),
        Step("patch", ROOM, times("2026-11-23T14:00:00", "2026-11-23T15:00:00")),
        id="time-move-patches-times",
    ),
    pytest.param(
        facts(booking(2, private=True, status="tentative"), written(V1)),
        Step("patch", ROOM, {"showAs": "tentative", "sensitivity": "private"}),
        id="privacy-and-status-patch",
    ),
    pytest.param(
        facts(booking(2), written(V1)), Step("confirm", ROOM), id="new-version-same-content"
    ),
    pytest.param(
        facts(booking(2, all_day=True, start="2026-11-24", end="2026-11-26"), written(ALL_DAY)),
        Step("patch", ROOM, times("2026-11-24T00:00:00", "2026-11-26T00:00:00")),
        id="all-day-moved-patches-dates",
    ),
    pytest.param(
        facts(booking(2, all_day=True, start="2026-11-23", end="2026-11-24"), written(V1)),
        Step(
            "patch", ROOM, {**times("2026-11-23T00:00:00", "2026-11-24T00:00:00"), "isAllDay": True}
        ),
        id="timed-to-all-day-patches-times-and-flag",
    ),
    pytest.param(
        facts(booking(2, title="Retro"), written(V1), shown="gone"),
        Step("recreate", ROOM),
        id="patch-found-the-event-deleted-recreates",
    ),
    # -- Teams: the meeting survives a body rewrite
    pytest.param(
        facts(booking(2, online_meeting=True, notes="Bring cake"), written(TEAMS, join_url=JOIN)),
        Step("read_event", ROOM, event_id="evt-1"),
        id="teams-body-change-reads-the-event",
    ),
    pytest.param(
        facts(
            booking(2, online_meeting=True, notes="Bring cake"),
            written(TEAMS, join_url=JOIN),
            shown=teams_shown(TEAMS),
        ),
        Step("patch", ROOM, {"body": kept(f"Bring cake\n\n{NOTES}")}),
        id="teams-kept-on-body-rewrite",
    ),
    pytest.param(
        facts(
            booking(2, online_meeting=True, notes="Bring cake", title="Retro"),
            written(TEAMS, join_url=JOIN),
            shown=shown(TEAMS, isOnlineMeeting=True),
        ),
        Step("patch", ROOM, {"subject": "Retro"}, note=NOTES_KEPT),
        id="teams-block-missing-leaves-notes",
    ),
    pytest.param(
        facts(
            booking(2, online_meeting=True, notes="Bring cake"),
            written(TEAMS, join_url=JOIN),
            shown=shown(TEAMS, isOnlineMeeting=True),
        ),
        Step("confirm", ROOM, note=NOTES_KEPT),
        id="teams-block-missing-and-nothing-else",
    ),
    pytest.param(
        facts(booking(2, online_meeting=True), written(V1, join_url=JOIN)),
        Step("confirm", ROOM),
        id="teams-never-asked-for-again",
    ),
    pytest.param(
        facts(booking(2, online_meeting=True), written(V1)),
        Step("patch", ROOM, {"isOnlineMeeting": True, "onlineMeetingProvider": "teamsForBusiness"}),
        id="teams-turned-on",
    ),
    # -- a person changed the projection in Outlook (repair)
    pytest.param(
        facts(V1, written(V1), repair=True),
        Step("read_event", ROOM, event_id="evt-1"),
        id="repair-reads-the-event",
    ),
    pytest.param(
        facts(V1, written(V1), repair=True, shown="gone"),
        Step("recreate", ROOM),
        id="deleted-in-outlook-recreates",
    ),
    pytest.param(
        facts(V1, written(V1), repair=True, shown=shown(V1, subject="Mine now")),
        Step("repair", ROOM, {"subject": "Sprint review"}),
        id="title-drift-repairs-title-only",
    ),
    pytest.param(
        facts(V1, written(V1), repair=True, shown=shown(V1, showAs="free", body={})),
        Step("repair", ROOM, {"showAs": "busy"}),
        id="show-as-drift-repairs-it-not-the-body",
    ),
    pytest.param(
        facts(
            V1,
            written(V1),
            repair=True,
            shown=shown(V1, **times("2026-11-23T11:00:00", "2026-11-23T12:00:00")),
        ),
        Step(
            "repair",
            ROOM,
            {**times("2026-11-23T09:00:00", "2026-11-23T10:30:00"), "isAllDay": False},
        ),
        id="time-drift-repairs-times",
    ),
    pytest.param(
        facts(ALL_DAY, written(ALL_DAY), repair=True, shown=shown(ALL_DAY, isAllDay=False)),
        Step(
            "repair",
            ROOM,
            {**times("2026-11-23T00:00:00", "2026-11-24T00:00:00"), "isAllDay": True},
        ),
        id="all-day-drift-repairs-the-day",
    ),
    pytest.param(
        facts(V1, written(V1), repair=True, shown=shown(V1, showAs="BUSY")),
        Step("nothing"),
        id="repair-finds-no-drift",
    ),
    pytest.param(
        facts(
            V1, replace(written(V1), fingerprints={"subject": "0"}), repair=True, shown=shown(V1)
        ),
        Step("reformat", ROOM),
        id="repair-finds-an-earlier-format",
    ),
    pytest.param(
        facts(
            booking(2, notes="Bring cake"), written(V1), repair=True, shown=shown(V1, subject="X")
        ),
        Step(
            "patch",
            ROOM,
            {
                "body": {"contentType": "text", "content": f"Bring cake\n\n{NOTES}"},
                "subject": "Sprint review",
            },
        ),
        id="repair-of-a-changed-booking-patches-both",
    ),
    pytest.param(
        facts(
            booking(2, online_meeting=True, notes="Bring cake"),
            written(TEAMS),
            repair=True,
            shown=teams_shown(TEAMS),
        ),
        Step("patch", ROOM, {"body": kept(f"Bring cake\n\n{NOTES}")}),
        id="repair-keeps-a-meeting-the-link-did-not-know",
    ),
]


@pytest.mark.parametrize(("given", "step"), CASES)
def test_the_next_step(given: Facts, step: Step) -> None:
    assert decide(given) == step


def test_every_kind_of_step_has_a_case() -> None:
    assert {case.values[1].kind for case in CASES} == set(get_args(Kind))  # type: ignore[union-attr]


def test_a_read_is_never_asked_for_twice() -> None:
    """The shell reads what a step asks for and decides again: that always moves on."""
    asked = facts(V1, written(V1, "pending"), mapping="unread")
    seen = []
    for _ in range(4):
        step = decide(asked)
        seen.append(step.kind)
        if step.kind == "read_mapping":
            asked = replace(asked, mapping=Mapped(ROOM))
        elif step.kind == "find_events":
            asked = replace(asked, found=[])
        else:
            break
    assert seen == ["read_mapping", "find_events", "resume"]
