"""Pure decisions of the outbound direction: what to do in Outlook for a booking's newest state.

No I/O. Given the booking event, what its link says was last written (``Written``), the
booking's projection, and what was read of the mapping and of Outlook so far (``Facts``),
``decide`` answers with the one ``Step`` that brings the calendar closer to the booking: create,
patch only what changed, move to another mailbox, delete, recover a create a worker did not
record, repair what a person changed, or nothing. A step that needs something read first asks
for it (``read_mapping``, ``read_event``, ``find_events``); the shell reads it into the facts
and asks again. The shell in ``outbound/apply.py`` loads state, calls this, executes the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sync_core.domain.booking import (
    BookingEvent,
    body_keeping_meeting,
    changed_fields,
    fingerprints,
    meeting_blob,
)
from sync_core.domain.outlook import drifted_fields

NO_TEAMS = {
    "code": "online_meeting_unavailable",
    "message": "no Teams meeting: this calendar does not offer Teams "
    "(allowedOnlineMeetingProviders lacks teamsForBusiness; often an unlicensed room mailbox)",
}
NOTES_KEPT = "; notes not rewritten: the Teams block was not found in the body"
# Asking for the meeting again could replace its join link.
MEETING_FIELDS = ("isOnlineMeeting", "onlineMeetingProvider")

Unread = Literal["unread"]
UNREAD: Unread = "unread"

Kind = Literal[
    "nothing",  # the calendar already shows the booking (or there is nothing of ours to restore)
    "ignore",  # the mapping is deactivated: leave the calendar as it is
    "reformat",  # in step, but recorded in an earlier projection format: record it in this one
    "delete",  # leave ``mailbox``: the booking is cancelled, deleted or no longer mapped
    "gone",  # the booking should be in no calendar and is in none: record its version
    "create",  # a new event (a new generation of the link) in ``mailbox``
    "move",  # leave the link's calendar, then create in ``mailbox``
    "resume",  # a create was started but not recorded, and Graph has none: send it again
    "adopt",  # ... and Graph made it: keep ``event_id``, delete ``duplicates``, patch ``fields``
    "recreate",  # a person deleted the event in Outlook: create it again, as a new generation
    "patch",  # the booking changed: send ``fields`` only
    "repair",  # the booking did not change but a person did: send ``fields`` back
    "confirm",  # the booking changed in nothing Outlook shows: record its version as applied
    "read_mapping",  # read the resource's mapping first
    "read_event",  # read ``event_id`` in ``mailbox`` as Outlook shows it first
    "find_events",  # find the events in ``mailbox`` that carry the booking's id first
]
READS = frozenset({"read_mapping", "read_event", "find_events"})


@dataclass(frozen=True)
class Written:
    """What the booking's link says was last written to Outlook."""

    state: Literal["pending", "active", "removed"]
    mailbox: str
    applied_version: int = 0
    event_id: str | None = None
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    join_url: str | None = None


@dataclass(frozen=True)
class Mapped:
    """The mapping of the booking's resource, as far as this direction cares."""

    mailbox: str
    enabled: bool = True


@dataclass(frozen=True)
class Facts:
    """Everything a decision is taken on; the last three are filled in as steps ask for them."""

    event: BookingEvent
    link: Written | None
    projection: dict[str, Any]
    repair: bool = False  # a person changed or deleted the projection in Outlook
    mapping: Mapped | Unread | None = UNREAD
    shown: Mapping[str, Any] | Literal["unread", "gone"] = UNREAD  # "gone": a 404 from Graph
    found: Sequence[Mapping[str, Any]] | Unread = UNREAD


@dataclass(frozen=True)
class Step:
    """What to do next: ``kind`` says what, the rest where and with what."""

    kind: Kind
    mailbox: str = ""  # the calendar the step acts in
    fields: dict[str, Any] = field(default_factory=dict)  # what a PATCH sends
    event_id: str = ""  # read_event and adopt: the event
    duplicates: tuple[str, ...] = ()  # adopt: events Graph made twice for the same create
    note: str = ""  # said after the step's outcome in the history


NOTHING = Step("nothing")


def decide(facts: Facts) -> Step:
    """The next step towards a calendar that shows ``facts.event`` (see ``Kind``)."""
    booking, link = facts.event.data, facts.link
    if facts.repair and (link is None or link.state == "removed"):
        return NOTHING  # nothing of ours to restore (it was removed on purpose)
    current = link is not None and link.applied_version >= booking.version
    if link is not None and link.state != "pending" and current and not facts.repair:
        return NOTHING  # this version (or a newer one) is already in the calendar
    if facts.mapping == UNREAD:
        return Step("read_mapping")
    mapping = facts.mapping
    if mapping is not None and not mapping.enabled:
        return Step("ignore")
    target = None if (facts.event.removes or mapping is None) else mapping.mailbox
    if link is not None and link.state != "removed" and link.mailbox != target:
        return Step("delete", link.mailbox) if target is None else Step("move", target)
    if target is None:
        return Step("gone")
    if link is None or link.state == "removed":
        return Step("create", target)
    if link.state == "pending":
        return _recover(facts, target)
    return _update(facts, link, target)


def _recover(facts: Facts, mailbox: str) -> Step:
    """A create was started but not recorded: adopt the event if Graph made it, else create it."""
    if facts.found == UNREAD:
        return Step("find_events", mailbox)
    if not facts.found:
        return Step("resume", mailbox)
    keep, *extra = facts.found
    changes = dict(facts.projection)
    if keep.get("isOnlineMeeting"):  # the meeting exists: keep it and its join link
        for name in MEETING_FIELDS:
            changes.pop(name, None)
        blob = _blob(keep, None)
        changes["body"] = body_keeping_meeting(facts.projection["body"], blob)
    # Duplicates only if a transactionId retry was not de-duplicated by Graph.
    duplicates = tuple(str(event["id"]) for event in extra)
    return Step("adopt", mailbox, changes, event_id=str(keep["id"]), duplicates=duplicates)


def _update(facts: Facts, link: Written, mailbox: str) -> Step:
    """The event is in ``mailbox``: patch what changed, or (repair) what a person changed."""
    assert link.event_id is not None
    booking, projection, shown = facts.event.data, facts.projection, facts.shown
    if shown == "gone":
        return Step("recreate", mailbox)
    read = Step("read_event", mailbox, event_id=link.event_id)
    if facts.repair and shown == UNREAD:
        return read
    # A repair of a booking that did not change since it was written restores only what a
    # person changed; rewriting the rest (the body above all) costs writes and the meeting.
    settled = facts.repair and link.applied_version >= booking.version
    changes = {} if settled else changed_fields(projection, dict(link.fingerprints))
    if facts.repair and not isinstance(shown, str):
        changes.update(drifted_fields(projection, shown))
    if link.join_url:
        for name in MEETING_FIELDS:
            changes.pop(name, None)
    note = ""
    if "body" in changes and (link.join_url or (facts.repair and _meeting(shown))):
        if isinstance(shown, str):
            return read  # the body must keep the meeting block the event shows
        if not _keep_meeting(changes, shown, link.join_url):
            note = NOTES_KEPT
    if changes:
        return Step("repair" if settled else "patch", mailbox, changes, note=note)
    if not settled:
        return Step("confirm", mailbox, note=note)
    if link.fingerprints != fingerprints(projection):
        return Step("reformat", mailbox)
    return NOTHING  # the calendar matches the booking: nothing to do or to say


def meeting_warnings(projection: Mapping[str, Any], join_url: str | None) -> list[dict[str, str]]:
    """What ``booking.synced`` warns of: Graph answers 2xx without the meeting when the calendar
    does not offer Teams."""
    return [NO_TEAMS] if projection.get("isOnlineMeeting") and not join_url else []


def _meeting(shown: Mapping[str, Any] | str) -> bool:
    return not isinstance(shown, str) and bool(shown.get("isOnlineMeeting"))


def _blob(shown: Mapping[str, Any], join_url: str | None) -> str:
    join_url = (shown.get("onlineMeeting") or {}).get("joinUrl") or join_url
    return meeting_blob(str((shown.get("body") or {}).get("content") or ""), join_url)


def _keep_meeting(changes: dict[str, Any], shown: Mapping[str, Any], join_url: str | None) -> bool:
    """Put the meeting block of the event as shown into the new body. Without the block the
    body is left out (sending it would end the meeting); False then."""
    blob = _blob(shown, join_url)
    if not blob and shown.get("isOnlineMeeting"):
        del changes["body"]
        return False
    changes["body"] = body_keeping_meeting(changes["body"], blob)
    return True
