"""Once nothing changes, the product does nothing: a hypothesis state machine.

In the style of vdirsyncer's sync state-machine tests. Rules book, change, move and cancel
bookings on two mapped rooms (room-a: titles shown; room-b: busy_only), in many zones, on DST
days, all-day, in the past and beyond the sync window, with Teams, privacy, guests and notes; and
people edit Outlook: they change or delete the service's projections and create, change and
delete their own events. The product runs in this process
(``tests/integration/quiet_world.py``): booking events go in as signed webhooks through
``bookings.receive``, and the queues are drained here with the handlers the function app calls,
so every run is the same.

The check (a rule, and always at the end): drain; safety sweep; drain (production's quiet state),
and the calendars equal the bookings and the platform holds a blocker for each person's blocking
event in the window. Then with the request log and the platform's inbox cleared, a safety sweep
plus a resync of every mapping, drained, must make **no Graph write, no platform delivery and no
``booking.repair``**, and leave the calendars as they were. At the end a positive control shows
that the same counters do see a change: a person's new event reaches the platform and a booking
change costs one write.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, note, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sync_core.admin import mappings as admin
from sync_core.domain.booking import Booking
from sync_core.domain.inbound import BLOCKING, blocker_id
from sync_core.domain.mapping import Filters
from tests.integration.quiet_world import (
    FILTERS,
    MAILBOXES,
    PRIVACY,
    RESOURCES,
    WINDOWS_ZONES,
    World,
    booking_of,
    instant,
    local_date,
    window,
)

WINDOW_DAYS = 120
SHRINK_SECONDS = int(os.environ.get("QUIET_SHRINK_SECONDS", "120"))
TODAY = datetime.now(UTC).date()
WINDOW = window(TODAY, WINDOW_DAYS)
ZONES = (
    "Europe/Berlin",
    "Europe/Vienna",  # not a zone Graph accepts by its IANA name
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
    "UTC",
)
# DST changes: Europe, New York, Sydney; and the next ones from today, whatever today is.
FIXED_DST_DAYS = (date(2027, 3, 28), date(2027, 10, 31), date(2027, 3, 14))


def _next_transitions(zone_name: str, count: int = 2) -> list[date]:
    zone, found = ZoneInfo(zone_name), []
    day = TODAY
    while len(found) < count and day < TODAY + timedelta(days=400):
        a = datetime.combine(day, time(0), zone).utcoffset()
        b = datetime.combine(day + timedelta(days=1), time(0), zone).utcoffset()
        if a != b:
            found.append(day)
        day += timedelta(days=1)
    return found


DST_DAYS = tuple(
    sorted(
        set(FIXED_DST_DAYS)
        | {
            d
            for z in ("Europe/Berlin", "America/New_York", "Australia/Sydney")
            for d in _next_transitions(z)
        }
    )
)
# Days relative to today (UTC): yesterday, today, inside, the last day, beyond the window.
OFFSETS = (-1, 0, 1, 6, 30, WINDOW_DAYS - 1, WINDOW_DAYS + 9, WINDOW_DAYS + 200)
# People's own events stay clear of the window's edges (all-day events are floating dates).
PERSON_OFFSETS = (-6, 2, 9, 45, WINDOW_DAYS - 8, WINDOW_DAYS + 20)

PEOPLE = (
    {"name": "Alan Turing", "email": "alan@contoso.example"},
    {"name": "Grace Hopper", "email": "grace@contoso.example"},
    {"name": "Zoë Müller", "email": "zoe@fabrikam.example"},
)
TITLES = ("Sprint review", "Quartalsplanung Raum Spree", "1:1", "Board 🎉", "Retro")
NOTES = (None, "Bring the demo laptop", "Catering: 12 people\nvegetarian")


@st.composite
def booking_times(draw: st.DrawFn) -> dict[str, Any]:
    zone_name = draw(st.sampled_from(ZONES))
    day = draw(
        st.one_of(
            st.sampled_from(OFFSETS).map(lambda n: TODAY + timedelta(days=n)),
            st.sampled_from(DST_DAYS),
        )
    )
    if draw(st.booleans()):
        length = draw(st.sampled_from((1, 2, 3)))
        return {
            "all_day": True,
            "start": day.isoformat(),
            "end": (day + timedelta(days=length)).isoformat(),
            "time_zone": zone_name,
        }
    zone = ZoneInfo(zone_name)
    hour = draw(st.sampled_from((9, 0, 2, 13, 23)))  # 02:xx falls into the gap on DST days
    minute = draw(st.sampled_from((0, 30)))
    minutes = draw(st.sampled_from((60, 30, 90, 180, 24 * 60)))
    start = datetime.combine(day, time(hour, minute), zone)
    end = (start.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(zone)
    return {
        "all_day": False,
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "time_zone": zone_name,
    }


contents = st.fixed_dictionaries(
    {
        "title": st.sampled_from(TITLES),
        "notes": st.sampled_from(NOTES),
        "guests": st.lists(st.sampled_from(PEOPLE), max_size=2, unique_by=lambda p: p["email"]),
        "private": st.booleans(),
        "online_meeting": st.booleans(),
        "status": st.sampled_from(("confirmed", "tentative")),
    }
)


@dataclass(frozen=True)
class PersonEvent:
    mailbox: str
    subject: str
    all_day: bool
    start: str  # local wall time (timed) or date (all-day), in `zone`
    end: str
    zone: str  # a Windows zone name, as Outlook writes
    show_as: str
    sensitivity: str

    def graph(self) -> dict[str, Any]:
        suffix = "T00:00:00" if self.all_day else ""
        return {
            "subject": self.subject,
            "start": {"dateTime": self.start + suffix, "timeZone": self.zone},
            "end": {"dateTime": self.end + suffix, "timeZone": self.zone},
            "isAllDay": self.all_day,
            "showAs": self.show_as,
            "sensitivity": self.sensitivity,
        }

    def interval(self) -> tuple[datetime, datetime]:
        if self.all_day:  # a floating date: midnight UTC, as Graph reads it back in UTC
            return (
                datetime.combine(date.fromisoformat(self.start), time(0), UTC),
                datetime.combine(date.fromisoformat(self.end), time(0), UTC),
            )
        zone = ZoneInfo(WINDOWS_ZONES[self.zone])
        return (
            datetime.fromisoformat(self.start).replace(tzinfo=zone).astimezone(UTC),
            datetime.fromisoformat(self.end).replace(tzinfo=zone).astimezone(UTC),
        )


@st.composite
def person_times(draw: st.DrawFn) -> dict[str, Any]:
    day = TODAY + timedelta(days=draw(st.sampled_from(PERSON_OFFSETS)))
    zone = draw(st.sampled_from(tuple(WINDOWS_ZONES)))
    if draw(st.booleans()):
        length = draw(st.sampled_from((1, 2)))
        return {
            "all_day": True,
            "start": day.isoformat(),
            "end": (day + timedelta(days=length)).isoformat(),
            "zone": zone,
        }
    hour = draw(st.sampled_from((10, 7, 16)))
    start = datetime.combine(day, time(hour, 0))
    end = start + timedelta(minutes=draw(st.sampled_from((60, 30, 150))))
    return {
        "all_day": False,
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "zone": zone,
    }


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Remember that a step failed, so teardown does not run the final check over it."""

    @functools.wraps(method)
    def wrapper(self: QuietMachine, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.broken = True
            raise

    return wrapper  # type: ignore[return-value]


class QuietMachine(RuleBasedStateMachine):
    world: World  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.checked = 0
        self.svc = self.world.fresh()
        self.bookings: dict[str, dict[str, Any]] = {}  # id → data of the newest version sent
        self.removed: set[str] = set()
        self.person: dict[tuple[str, str], PersonEvent] = {}  # (mailbox, event id) → event
        # What the platform holds, by resource id and blocker id.
        self.blockers: dict[tuple[str, str], dict[str, Any]] = {}
        self.filters = {r: Filters.from_json(FILTERS.get(r)) for r in RESOURCES}
        self.privacy = dict(PRIVACY)
        self.failures: dict[str, Any] = {}  # booking id → last booking.failed error
        self.serial = 0

    # -- helpers -----------------------------------------------------------------------------

    def live(self) -> list[str]:
        return sorted(b for b in self.bookings if b not in self.removed)

    def send(self, kind: str, data: dict[str, Any]) -> None:
        timestamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        status = self.world.send_booking({"type": kind, "timestamp": timestamp, "data": data})
        assert status == 202, f"intake answered {status} for {kind} {data['id']}"

    def next_version(self, booking_id: str, **changes: Any) -> dict[str, Any]:
        old = self.bookings[booking_id]
        data = {**old, **changes, "version": old["version"] + 1}
        self.bookings[booking_id] = data
        return data

    def projection(self, booking_id: str) -> tuple[str, dict[str, Any]] | None:
        """The booking's event in its room, if it is there and clearly inside the window."""
        data = self.bookings[booking_id]
        start, end = Booking.model_validate(data).interval_utc()
        if start < WINDOW[0] + timedelta(days=1) or end > WINDOW[1] - timedelta(days=1):
            return None  # the product does not read there: an edit would stay unseen
        mailbox = RESOURCES[data["resource_id"]]
        found = [
            e for e in self.world.tenant.control.events(mailbox) if booking_of(e) == booking_id
        ]
        return (mailbox, found[0]) if found else None

    def fold_deliveries(self) -> list[dict[str, Any]]:
        """Take in what the platform received since it was last cleared; clear it."""
        received = self.world.platform.received()
        self.world.platform.clear()
        for record in received:
            data = record["data"] or {}
            if record["type"] == "blocker.upserted":
                self.blockers[(data["resource_id"], data["id"])] = data
            elif record["type"] == "blocker.deleted":
                self.blockers.pop((data["resource_id"], data["id"]), None)
            elif record["type"] == "booking.failed":
                self.failures[data["booking_id"]] = data.get("error")
            elif record["type"] == "booking.synced":
                self.failures.pop(data["booking_id"], None)
        return received

    # -- bookings ----------------------------------------------------------------------------

    @rule(resource=st.sampled_from(sorted(RESOURCES)), times=booking_times(), content=contents)
    @guarded
    def create_booking(self, resource: str, times: dict[str, Any], content: dict[str, Any]) -> None:
        self.serial += 1
        booking_id = f"bk_{self.serial:03d}"
        data = {
            "id": booking_id,
            "version": 1,
            "resource_id": resource,
            "organizer": {"name": "Ada Lovelace", "email": "ada@contoso.example"},
            **content,
            **times,
        }
        self.bookings[booking_id] = data
        self.send("booking.created", data)

    @precondition(lambda self: bool(self.live()))
    @rule(
        data=st.data(),
        content=st.fixed_dictionaries(
            {},
            optional={
                "title": st.sampled_from(TITLES),
                "notes": st.sampled_from(NOTES),
                "guests": st.lists(
                    st.sampled_from(PEOPLE), max_size=2, unique_by=lambda p: p["email"]
                ),
                "private": st.booleans(),
                "online_meeting": st.booleans(),
            },
        ),
        times=st.one_of(st.none(), booking_times()),
    )
    @guarded
    def update_booking(
        self, data: st.DataObject, content: dict[str, Any], times: dict[str, Any] | None
    ) -> None:
        booking_id = data.draw(st.sampled_from(self.live()), label="booking")
        self.send("booking.updated", self.next_version(booking_id, **content, **(times or {})))

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data())
    @guarded
    def move_booking(self, data: st.DataObject) -> None:
        booking_id = data.draw(st.sampled_from(self.live()), label="booking")
        here = self.bookings[booking_id]["resource_id"]
        other = data.draw(st.sampled_from([r for r in sorted(RESOURCES) if r != here]), "to")
        self.send("booking.updated", self.next_version(booking_id, resource_id=other))

    @rule(
        ignore_all_day=st.booleans(),
        pattern=st.sampled_from((None, "lunch", "^dent")),
        privacy=st.sampled_from(("full", "busy_only")),
    )
    @guarded
    def change_desk_mapping(self, ignore_all_day: bool, pattern: str | None, privacy: str) -> None:
        """An admin changes the filters and privacy of the resource that shares a mailbox."""
        filters = {"ignore_all_day": ignore_all_day, "ignore_title_pattern": pattern}
        body = {"mailbox": RESOURCES["desk-a"], "privacy": privacy, "filters": filters}
        admin.save_mapping(self.svc, "desk-a", body)
        self.filters["desk-a"] = Filters.from_json(filters)
        self.privacy["desk-a"] = privacy

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data(), kind=st.sampled_from(("booking.cancelled", "booking.deleted")))
    @guarded
    def cancel_booking(self, data: st.DataObject, kind: str) -> None:
        booking_id = data.draw(st.sampled_from(self.live()), label="booking")
        status = "cancelled" if kind == "booking.cancelled" else self.bookings[booking_id]["status"]
        self.send(kind, self.next_version(booking_id, status=status))
        self.removed.add(booking_id)

    # -- a person edits the service's events in Outlook ----------------------------------------

    @precondition(lambda self: bool(self.live()))
    @rule(
        data=st.data(),
        edit=st.sampled_from(("subject", "later", "delete", "free", "timed", "private")),
    )
    @guarded
    def edit_projection(self, data: st.DataObject, edit: str) -> None:
        booking_id = data.draw(st.sampled_from(self.live()), label="booking")
        found = self.projection(booking_id)
        if found is None:
            note(f"{booking_id} has no event inside the window to edit")
            return
        mailbox, event = found
        control = self.world.tenant.control
        start, end = instant(event["start"]), instant(event["end"])
        if edit == "delete":
            control.delete_event(mailbox, event["id"])
            return
        changes: dict[str, Any] = {
            "subject": {"subject": "Changed in Outlook"},
            "free": {"showAs": "free"},
            "private": {
                "sensitivity": "private" if event.get("sensitivity") != "private" else "normal"
            },
        }.get(edit, {})
        if edit in ("later", "timed"):
            if event.get("isAllDay") or edit == "timed":
                start = start.replace(hour=10, minute=0)
                end = start + timedelta(hours=1)
            else:
                start, end = start + timedelta(hours=1), end + timedelta(hours=1)
            changes = {
                "isAllDay": False,
                "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            }
        control.update_event(mailbox, event["id"], changes)

    # -- a person's own events -----------------------------------------------------------------

    @rule(
        mailbox=st.sampled_from(MAILBOXES),
        times=person_times(),
        subject=st.sampled_from(("Dentist", "Team lunch", "Workshop")),
        show_as=st.sampled_from(("busy", "free", "tentative", "oof")),
        sensitivity=st.sampled_from(("normal", "private")),
    )
    @guarded
    def create_person_event(
        self, mailbox: str, times: dict[str, Any], subject: str, show_as: str, sensitivity: str
    ) -> None:
        event = PersonEvent(mailbox, subject, show_as=show_as, sensitivity=sensitivity, **times)
        created = self.world.tenant.control.create_event(mailbox, event.graph())
        self.person[(mailbox, str(created["id"]))] = event

    @precondition(lambda self: bool(self.person))
    @rule(
        data=st.data(),
        times=st.one_of(st.none(), person_times()),
        subject=st.one_of(st.none(), st.sampled_from(("Dentist (moved)", "Offsite"))),
        show_as=st.one_of(st.none(), st.sampled_from(("busy", "free"))),
    )
    @guarded
    def edit_person_event(
        self,
        data: st.DataObject,
        times: dict[str, Any] | None,
        subject: str | None,
        show_as: str | None,
    ) -> None:
        key = data.draw(st.sampled_from(sorted(self.person)), label="event")
        event = replace(
            self.person[key],
            **(times or {}),
            **({"subject": subject} if subject else {}),
            **({"show_as": show_as} if show_as else {}),
        )
        self.world.tenant.control.update_event(key[0], key[1], event.graph())
        self.person[key] = event

    @precondition(lambda self: bool(self.person))
    @rule(data=st.data())
    @guarded
    def delete_person_event(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.person)), label="event")
        self.world.tenant.control.delete_event(*key)
        del self.person[key]

    # -- the check -----------------------------------------------------------------------------

    @rule()
    @guarded
    def quiesce(self) -> None:
        self.check_quiet()

    def teardown(self) -> None:
        try:
            if not self.broken:
                self.check_quiet()
                self.positive_control()
        finally:
            self.world.close()

    def check_quiet(self) -> None:
        world = self.world
        settled = world.drain()
        world.sweep()
        settled_sweep = world.drain()
        self.fold_deliveries()
        note(f"check {self.checked}: settled with {settled}; the sweep ran {settled_sweep}")
        self.assert_calendars("after the system settled (drain, sweep, drain)")

        world.tenant.control.clear_requests()
        started = datetime.now(UTC)
        world.sweep()
        world.resync_all()
        stats = world.drain()
        writes = world.graph_writes()
        deliveries = [
            f"{r['type']} {r['data'].get('booking_id') or r['data'].get('id')}"
            for r in self.fold_deliveries()
        ]
        repairs = world.repairs_since(started)
        note(
            f"check {self.checked}: sweep + resync ran {stats}; {len(writes)} Graph write(s), "
            f"{len(deliveries)} deliveries, {len(repairs)} repair(s)"
        )
        self.checked += 1
        assert not writes, (
            f"a sweep and a resync of a quiet system wrote to Graph {len(writes)} time(s) "
            f"(work: {stats}): {writes}"
        )
        assert not deliveries, (
            f"a sweep and a resync of a quiet system sent {len(deliveries)} deliveries: "
            f"{deliveries}"
        )
        assert not repairs, f"a resync of matching projections recorded repairs: {repairs}"
        self.assert_calendars("after a sweep and a resync")

    def positive_control(self) -> None:
        """The same counters see a change: a person's event, a booking change."""
        world = self.world
        world.tenant.control.clear_requests()
        event = PersonEvent(
            MAILBOXES[0], "Positive control", False,
            (TODAY + timedelta(days=3)).isoformat() + "T12:00:00",
            (TODAY + timedelta(days=3)).isoformat() + "T13:00:00",
            "UTC", "busy", "normal",
        )  # fmt: skip
        created = world.tenant.control.create_event(event.mailbox, event.graph())
        self.person[(event.mailbox, str(created["id"]))] = event
        world.sweep()
        world.drain()
        arrived = [r["type"] for r in self.fold_deliveries()]
        assert "blocker.upserted" in arrived, f"a person's new event was not sent: {arrived}"
        self.create_booking("room-a", {
            "all_day": False, "time_zone": "UTC",
            "start": (TODAY + timedelta(days=4)).isoformat() + "T09:00:00+00:00",
            "end": (TODAY + timedelta(days=4)).isoformat() + "T10:00:00+00:00",
        }, {"title": "Control", "notes": None, "guests": [], "private": False,
            "online_meeting": False, "status": "confirmed"})  # fmt: skip
        world.drain()
        writes = world.graph_writes()
        assert [w.split()[0] for w in writes] == ["POST"], f"one create expected: {writes}"
        self.fold_deliveries()
        self.assert_calendars("after the positive control")

    def assert_calendars(self, when: str) -> None:
        control = self.world.tenant.control
        shown = {mailbox: control.events(mailbox) for mailbox in MAILBOXES}
        problems: list[str] = []
        for booking_id, data in sorted(self.bookings.items()):
            wanted = None if booking_id in self.removed else RESOURCES[data["resource_id"]]
            for mailbox, events in shown.items():
                found = [e for e in events if booking_of(e) == booking_id]
                if mailbox != wanted:
                    problems += [f"{booking_id} is still in {mailbox}" for _ in found]
                elif len(found) != 1:
                    failed = self.failures.get(booking_id)
                    problems.append(
                        f"{booking_id} has {len(found)} events in {mailbox}"
                        + (f" (booking.failed: {failed})" if failed else "")
                        + f"; booking {_brief(data)}"
                    )
                else:
                    problems += [
                        f"{booking_id} in {mailbox}: {p}; booking {_brief(data)}"
                        for p in _differences(data, found[0])
                    ]
        for mailbox, events in shown.items():
            for e in events:
                owner = booking_of(e)
                if owner is not None and owner not in self.bookings:
                    problems.append(f"{mailbox} holds an event of unknown booking {owner}")
                if owner is None and (mailbox, e["id"]) not in self.person:
                    problems.append(f"{mailbox} holds an unknown event {e.get('subject')!r}")
        assert not problems, f"calendars differ from the bookings {when}: {problems}"

        expected = {
            (resource, blocker_id(key[0], key[1])): (key, event)
            for key, event in self.person.items()
            for resource, mailbox in RESOURCES.items()
            if mailbox == key[0]
            and event.show_as.lower() in BLOCKING
            and event.interval()[0] < WINDOW[1]
            and event.interval()[1] > WINDOW[0]
            and not self.filters[resource].ignores(event.graph())
        }
        wrong: list[str] = []
        for bid in sorted(set(expected) | set(self.blockers)):
            if bid not in self.blockers:
                wrong.append(f"missing blocker of {bid[0]} for {expected[bid][1]}")
            elif bid not in expected:
                wrong.append(f"blocker {self.blockers[bid]} stands for no blocking event")
            else:
                _, event = expected[bid]
                wrong += [
                    f"blocker {bid} of {event}: {p}"
                    for p in _blocker_differences(event, self.blockers[bid], self.privacy[bid[0]])
                ]
        assert not wrong, f"the platform's blockers differ from Outlook {when}: {wrong}"


def _brief(data: dict[str, Any]) -> str:
    keys = ("resource_id", "version", "all_day", "start", "end", "time_zone", "title", "status")
    return str({k: data[k] for k in keys})


def _differences(data: dict[str, Any], event: dict[str, Any]) -> Iterator[str]:
    booking = Booking.model_validate(data)
    if event.get("subject") != booking.title:
        yield f"subject {event.get('subject')!r}, booked {booking.title!r}"
    if bool(event.get("isAllDay")) != booking.all_day:
        yield f"isAllDay {event.get('isAllDay')}, booked {booking.all_day}"
    elif booking.all_day:
        shown = (
            local_date(event["start"], event.get("startTimeZone")),
            local_date(event["end"], event.get("endTimeZone") or event.get("startTimeZone")),
        )
        booked = (booking.start_value(), booking.end_value())
        if shown != booked:
            yield f"dates {shown[0]}..{shown[1]}, booked {booked[0]}..{booked[1]}"
    else:
        shown_at = (instant(event["start"]), instant(event["end"]))
        if shown_at != booking.interval_utc():
            yield (
                f"times {event['start']}..{event['end']}, booked "
                f"{booking.interval_utc()[0]:%Y-%m-%dT%H:%M:%SZ}.."
                f"{booking.interval_utc()[1]:%Y-%m-%dT%H:%M:%SZ}"
            )
    show_as = "tentative" if booking.status in ("tentative", "pending") else "busy"
    if str(event.get("showAs")).lower() != show_as:
        yield f"showAs {event.get('showAs')}, wanted {show_as}"
    sensitivity = "private" if booking.private else "normal"
    if str(event.get("sensitivity")).lower() != sensitivity:
        yield f"sensitivity {event.get('sensitivity')}, wanted {sensitivity}"
    if booking.online_meeting and not event.get("isOnlineMeeting"):
        yield "no Teams meeting"
    body = str(event.get("body") or "")
    for guest in booking.guests:
        if (guest.name or guest.email) not in body:
            yield f"guest {guest.name} not in the body"
    if booking.notes and booking.notes.splitlines()[0] not in body:
        yield "notes not in the body"


def _blocker_differences(
    event: PersonEvent, blocker: dict[str, Any], privacy: str
) -> Iterator[str]:
    start, end = event.interval()
    if bool(blocker.get("all_day")) != event.all_day:
        yield f"all_day {blocker.get('all_day')}"
    if event.all_day:
        got = (str(blocker["start"])[:10], str(blocker["end"])[:10])
        if got != (event.start, event.end):
            yield f"dates {got}, wanted {(event.start, event.end)}"
    elif (instant(blocker["start"]), instant(blocker["end"])) != (start, end):
        yield f"times {blocker['start']}..{blocker['end']}, wanted {start}..{end}"
    if str(blocker.get("show_as")).lower() != event.show_as.lower():
        yield f"show_as {blocker.get('show_as')}"
    title = None if privacy != "full" or event.sensitivity != "normal" else event.subject
    if blocker.get("title") != title:
        yield f"title {blocker.get('title')!r}, wanted {title!r}"


@pytest.mark.timeout(600)
def test_once_nothing_changes_the_product_does_nothing(
    quiet_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = quiet_world
    # Shrinking re-runs the product many times; a failure is reported within the test's budget.
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS)
    QuietMachine.world = world
    run_state_machine_as_test(
        QuietMachine,
        settings=settings(
            max_examples=int(os.environ.get("QUIET_EXAMPLES", "10")),
            stateful_step_count=int(os.environ.get("QUIET_STEPS", "12")),
            deadline=None,
            phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),  # no explain
            derandomize=not os.environ.get("QUIET_RANDOM"),
            database=None,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.verbose if os.environ.get("QUIET_VERBOSE") else Verbosity.normal,
        ),
    )
