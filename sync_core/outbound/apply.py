"""Platform → Microsoft 365: the booking's calendar event converged to its newest state.

``apply`` (the ``apply_booking`` queue function) loads what the booking's link says was written,
asks ``domain.outbound.decide`` for the next step (reading the mapping or Outlook when the step
asks for it), and executes it: create, patch only what changed, delete, move, recover or repair.
It is idempotent: running it twice, late, or after a crash leaves exactly one event per booking.
Its outcome for the platform (``booking.conflict``, ``booking.synced``) is written into the link
by the same write that records the calendar's new state, and handed to the deliver path after
it, so a worker that dies in between leaves it owed, and the next message for the booking (the
redelivery at the latest) hands it over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sync_core.clock import iso
from sync_core.domain.booking import (
    BOOKING_PROPERTY_ID,
    Booking,
    BookingEvent,
    content_hash,
    creation_body,
    fingerprints,
    project,
    transaction_id,
)
from sync_core.domain.outbound import (
    NO_TEAMS,
    READS,
    Facts,
    Mapped,
    Step,
    Written,
    decide,
    meeting_warnings,
)
from sync_core.domain.outlook import observable_digest
from sync_core.graph import ErrorKind, GraphError
from sync_core.platform import retry_delay
from sync_core.services import Services
from sync_core.store.history import Outcome
from sync_core.store.links import ConflictError, Link, Owed
from sync_core.store.open_work import STALL
from sync_core.store.queues import APPLY_BOOKING, poison_queue

log = logging.getLogger(__name__)

# -- apply --------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    action: str
    outcome: Outcome
    detail: str = ""


def apply(svc: Services, message: dict[str, Any], *, redelivered: bool = False) -> None:
    """Converge the calendar to the booking's state (the ``apply_booking`` function).

    The intake's message carries the event it stored, and its first delivery applies that. Any
    other (a redelivery, a retry, a repair, a resync) reads the stored state, the newest
    received. A carried event that a newer one overtook in the meantime is applied, and then
    the newer one by its own message; one already overtaken in the calendar is skipped.
    """
    booking_id = str(message["booking_id"])
    _apply(svc, message, booking_id, redelivered=redelivered)
    if message.get("due"):
        # Done, parked or retrying later under a new record: this change is no longer open.
        svc.open_work.close(str(message["due"]), booking_id, int(message["version"]))


def _apply(svc: Services, message: dict[str, Any], booking_id: str, *, redelivered: bool) -> None:
    attempt = int(message.get("attempt", 1))
    carried = None if redelivered else message.get("event")
    if carried is not None:
        # A booking's first state has no link yet; should one appear meanwhile (a concurrent
        # try), the insert of the pending link fails and the redelivery reads it.
        body, link = carried, None if message.get("first") else svc.links.get(booking_id)
    else:
        stored, link = svc.both(
            lambda: svc.bookings.get(booking_id), lambda: svc.links.get(booking_id)
        )
        if stored is None:
            log.warning("apply_booking: no stored state for booking %s", booking_id)
            return
        body = stored.event
    event = BookingEvent.model_validate(body)
    booking = event.data
    projection = project(
        booking, category=svc.settings.event_category, invite_guests=svc.settings.invite_guests
    )
    if link is not None and link.state == "active" and link.outbox:
        # A worker died after the link write: what it owes describes the calendar as it is, so
        # it goes out first, also when this message brings a newer version.
        link = _finish(svc, booking, link, projection)
    facts = Facts(event, _written(link), projection, repair=bool(message.get("repair")))
    try:
        result = _converge(svc, facts, link)
    except GraphError as error:
        _failed(svc, booking, error, message, attempt)
        return
    if result is None:
        return
    svc.health.success(booking.resource_id)
    svc.history.add(booking.resource_id, result.action, booking_id, result.outcome, result.detail)


def _converge(svc: Services, facts: Facts, link: Link | None) -> _Outcome | None:
    """Take the step the decision chooses; None when nothing was done that is worth saying."""
    booking, projection = facts.event.data, facts.projection
    step, facts = _next(svc, facts)
    target = step.mailbox
    if step.kind == "nothing":
        return None
    if step.kind == "ignore":
        svc.history.add(
            booking.resource_id,
            "booking.apply",
            booking.id,
            "ignored",
            "mapping deactivated or reading Outlook only",
        )
        return None
    if step.kind == "gone":
        if link is not None and link.applied_version < booking.version:
            svc.links.save(replace(link, applied_version=booking.version))
        return _Outcome("booking.delete", "ok", "nothing in any calendar")
    if step.kind == "create":
        written, link = _create(svc, booking, link, target, projection)
        created = _Outcome("booking.create", "ok", f"created in {target}")
        return _record(svc, booking, link, projection, written, created)
    assert link is not None, step  # every other step acts on what the link says was written
    if step.kind == "delete":
        _remove(svc, link)
        link = svc.links.save(
            replace(link, state="removed", event_id=None, applied_version=booking.version)
        )
        return _Outcome("booking.delete", "ok", f"removed from {link.mailbox}")
    if step.kind == "reformat":
        # In step but recorded in an earlier projection format (another zone name, all-day by
        # instants): recorded in this one, so reads compare like with like.
        _index(svc, booking, link, projection)
        prints = fingerprints(projection)
        svc.links.save(replace(link, fingerprints=prints, content_hash=content_hash(prints)))
        return None
    if step.kind == "confirm":
        done = replace(link, applied_version=booking.version, resource_id=booking.resource_id)
        synced = _synced(booking, done, meeting_warnings(projection, link.join_url))
        _hand_over(svc, svc.links.save(replace(done, outbox=(synced,))))
        return _Outcome("booking.update", "ok", "calendar already matches" + step.note)

    # The steps that write the event; what Graph answers is then recorded.
    if step.kind == "move":
        _remove(svc, link)
        # A move is applied only once the new calendar holds the event: until then the link is
        # not current, so a worker that dies in between leaves the create to the retry.
        link = svc.links.save(replace(link, state="removed", event_id=None))
        written, link = _create(svc, booking, link, target, projection)
        action, detail = "booking.move", f"moved to {target}"
    elif step.kind == "resume":
        written = svc.graph.create_event(
            target, creation_body(projection, booking.id, link.transaction_id)
        )
        action, detail = "booking.create", f"created in {target}"
    elif step.kind == "adopt":
        for duplicate in step.duplicates:
            svc.graph.delete_event(target, duplicate)
        written = svc.graph.update_event(target, step.event_id, step.fields)
        action, detail = "booking.create", f"adopted the event already in {target}"
    elif step.kind == "recreate":
        written, link = _recreate(svc, booking, link, target, projection)
        action, detail = "booking.repair", f"recreated in {target} after it was deleted"
    else:
        assert step.kind in ("patch", "repair") and link.event_id is not None, step
        # Recorded first: a read of the mailbox between the PATCH and the link write must see
        # this change as ours, not as a person's edit.
        _index(svc, booking, link, projection)
        try:
            written = svc.graph.update_event(target, link.event_id, step.fields)
        except GraphError as error:
            if error.kind is not ErrorKind.ITEM_NOT_FOUND:
                raise
            return _converge(svc, replace(facts, shown="gone"), link)  # a person deleted it
        fields = ", ".join(sorted(step.fields))
        action, detail = (
            ("booking.repair", f"restored {fields} after an edit in Outlook")
            if step.kind == "repair"
            else ("booking.update", f"changed {fields}")
        )
    outcome = _Outcome(action, "ok", detail + step.note)
    return _record(svc, booking, link, projection, written, outcome)


def _next(svc: Services, facts: Facts) -> tuple[Step, Facts]:
    """The step to take, with the facts it was decided on: what a step asks to read is read
    into the facts, and the decision asked again."""
    booking = facts.event.data
    step = decide(facts)
    while step.kind in READS:
        if step.kind == "read_mapping":
            mapping = svc.mappings.recent(booking.resource_id)
            mapped = (
                None
                if mapping is None
                else Mapped(mapping.mailbox, mapping.enabled and mapping.writes_outlook)
            )
            facts = replace(facts, mapping=mapped)
        elif step.kind == "read_event":
            facts = replace(facts, shown=_shown(svc, step.mailbox, step.event_id))
        else:
            found = svc.graph.find_events_by_property(step.mailbox, BOOKING_PROPERTY_ID, booking.id)
            facts = replace(facts, found=found)
        step = decide(facts)
    return step, facts


def _written(link: Link | None) -> Written | None:
    """What the decision knows of the link."""
    if link is None:
        return None
    return Written(
        link.state,
        link.mailbox,
        applied_version=link.applied_version,
        event_id=link.event_id,
        fingerprints=link.fingerprints,
        join_url=link.join_url,
    )


def _create(
    svc: Services, booking: Booking, link: Link | None, target: str, projection: dict[str, Any]
) -> tuple[dict[str, Any], Link]:
    """A new event in ``target``, as the link's next generation."""
    generation = (link.generation + 1) if link else 1
    pending = Link(
        booking_id=booking.id,
        resource_id=booking.resource_id,
        mailbox=target,
        generation=generation,
        transaction_id=transaction_id(booking.id, target, generation),
        state="pending",
        applied_version=link.applied_version if link else 0,
        etag=link.etag if link else None,
    )
    # Both before Graph is called, so a crash or a concurrent mailbox read finds the create.
    saved, _ = svc.both(
        lambda: svc.links.save(pending),
        lambda: svc.links.index(target, pending.transaction_id, booking.id),
    )
    written = svc.graph.create_event(
        target, creation_body(projection, booking.id, saved.transaction_id)
    )
    return written, saved


def _record(
    svc: Services,
    booking: Booking,
    link: Link,
    projection: dict[str, Any],
    written: dict[str, Any],
    outcome: _Outcome,
) -> _Outcome:
    """Record what Graph answered as the calendar's state, with what the platform is owed."""
    event_id, target = str(written["id"]), link.mailbox
    join_url = (
        (written.get("onlineMeeting") or {}).get("joinUrl")
        if "onlineMeeting" in written
        else link.join_url
    )
    # Graph answers 2xx without the meeting when the calendar does not offer Teams.
    warnings = meeting_warnings(projection, join_url)
    if warnings:
        outcome = replace(outcome, detail=f"{outcome.detail}; {NO_TEAMS['message']}")
    prints = fingerprints(projection)
    done = replace(
        link,
        resource_id=booking.resource_id,
        state="active",
        event_id=event_id,
        applied_version=booking.version,
        fingerprints=prints,
        content_hash=content_hash(prints),
        web_link=written.get("webLink") or link.web_link,
        join_url=join_url,
        change_key=str(written.get("changeKey") or ""),
    )
    # The outcome is owed from the moment the calendar's state is recorded: one write for both.
    owed = (*_conflicts(svc, booking, target, event_id), _synced(booking, done, warnings))
    try:
        link = svc.links.save(replace(done, outbox=owed))
    except ConflictError:
        _drop_if_orphaned(svc, booking.id, target, link.transaction_id, event_id)
        raise  # the message is retried and converges to what the other worker left
    _index(svc, booking, link, projection)
    _hand_over(svc, link)
    return outcome


def _index(svc: Services, booking: Booking, link: Link, projection: dict[str, Any]) -> None:
    """Record the written event as ours, with what a person sees of it (drift is told by it)."""
    assert link.event_id is not None
    svc.links.index(
        link.mailbox,
        link.transaction_id,
        booking.id,
        link.event_id,
        observable_digest(projection),
        booking.calendar_span(),
        link.change_key,
    )


def _finish(svc: Services, booking: Booking, link: Link, projection: dict[str, Any]) -> Link:
    """Complete what a worker left undone after the link write that made the booking current:
    the index entry (when ``booking`` is the version applied), then the owed outcome."""
    if booking.version == link.applied_version and link.event_id:
        _index(svc, booking, link, projection)
    return _hand_over(svc, link)


def _hand_over(svc: Services, link: Link) -> Link:
    """Emit what the link owes the platform, then empty its outbox. The emptying is guarded by
    the ETag: a worker that wrote the link since replaced its outbox with what is owed now."""
    sequence = link.sequence
    for owed in link.outbox:
        sequence = svc.platform.emit(
            owed.type, owed.resource_id, owed.data, at_once=True, after=sequence
        )
        if owed.type == "booking.conflict":
            svc.history.add(owed.resource_id, "booking.conflict", link.booking_id, "conflict",
                f"overlaps {len(owed.data['conflicts'])} Outlook event(s) in {link.mailbox}",
            )  # fmt: skip
    try:
        return svc.links.save(replace(link, outbox=(), sequence=sequence))
    except ConflictError:
        return link


def _shown(svc: Services, mailbox: str, event_id: str) -> dict[str, Any] | Literal["gone"]:
    """The event as Outlook shows it in the calendar; "gone" once a person deleted it."""
    try:
        return svc.graph.get_event(mailbox, event_id)
    except GraphError as error:
        if error.kind is not ErrorKind.ITEM_NOT_FOUND:
            raise
        return "gone"


def _recreate(
    svc: Services, booking: Booking, link: Link, target: str, projection: dict[str, Any]
) -> tuple[dict[str, Any], Link]:
    """The event was deleted in Outlook: create it again, as a new generation."""
    svc.links.unindex(target, link.transaction_id)
    generation = link.generation + 1
    link = svc.links.save(
        replace(
            link,
            state="pending",
            event_id=None,
            join_url=None,
            generation=generation,
            transaction_id=transaction_id(booking.id, target, generation),
        )
    )
    svc.links.index(target, link.transaction_id, booking.id)
    written = svc.graph.create_event(
        target, creation_body(projection, booking.id, link.transaction_id)
    )
    return written, link


def _drop_if_orphaned(
    svc: Services, booking_id: str, mailbox: str, transaction_id: str, event_id: str
) -> None:
    """Another worker changed the link while this one wrote ``event_id`` (a cancel, move or
    newer version applied at the same time). If the link no longer leads to this create, nothing
    would ever remove the event (and inbound would take it for a person's): delete it now."""
    latest = svc.links.get(booking_id)
    if (
        latest is not None
        and latest.state != "removed"
        and latest.mailbox == mailbox
        and latest.transaction_id == transaction_id
    ):
        return  # still this create (Graph de-duplicates by transactionId): the link owns it
    try:
        svc.graph.delete_event(mailbox, event_id)
    except GraphError as error:
        if error.kind is not ErrorKind.ITEM_NOT_FOUND:
            raise


def _remove(svc: Services, link: Link) -> None:
    if link.event_id:
        svc.graph.delete_event(link.mailbox, link.event_id)
    elif link.state == "pending":
        for event in svc.graph.find_events_by_property(
            link.mailbox, BOOKING_PROPERTY_ID, link.booking_id
        ):
            svc.graph.delete_event(link.mailbox, str(event["id"]))
    svc.links.unindex(link.mailbox, link.transaction_id)


def _conflicts(svc: Services, booking: Booking, mailbox: str, event_id: str) -> list[Owed]:
    """``booking.conflict`` if the booking overlaps busy Outlook time, or a booking of another
    resource that shares the mailbox (none if it does not)."""
    timed, dated = booking.interval_utc(), booking.calendar_span()
    near = svc.blockers.overlapping(mailbox, min(timed[0], dated[0]), max(timed[1], dated[1]))
    conflicts: list[dict[str, Any]] = []
    for b in near:
        # Two all-day events overlap by their dates; anything else by its time.
        start, end = dated if (booking.all_day and b.all_day) else timed
        if b.event_id != event_id and b.start < end and start < b.end:
            when = {"start": _when(b.start, b.all_day), "end": _when(b.end, b.all_day)}
            conflicts.append({"blocker_id": b.id, **when})
    conflicts += _shared_conflicts(svc, booking, mailbox, timed)
    if not conflicts:
        return []
    data = {"booking_id": booking.id, "conflicts": conflicts}
    return [Owed("booking.conflict", booking.resource_id, data)]


def _shared_conflicts(
    svc: Services, booking: Booking, mailbox: str, span: tuple[datetime, datetime]
) -> list[dict[str, Any]]:
    """Bookings of the other resources mapped to the mailbox that overlap this one: they are in
    the same calendar, so the room is booked twice."""
    others = {m.resource_id for m in svc.mappings.sharing(mailbox)} - {booking.resource_id}
    if not others:
        return []
    start, end = span
    overlapping = {
        own.booking_id: own
        for own in svc.links.projections(mailbox).values()
        if own.booking_id != booking.id
        and own.start is not None
        and own.end is not None
        and own.start < end
        and start < own.end
    }
    found = []
    for booking_id, own in sorted(overlapping.items()):
        link = svc.links.get(booking_id)
        if link is None or link.state != "active" or link.resource_id not in others:
            continue
        assert own.start is not None and own.end is not None
        found.append(
            {"booking_id": booking_id, "resource_id": link.resource_id,
             "start": iso(own.start, "auto"), "end": iso(own.end, "auto")}
        )  # fmt: skip
    return found


def _synced(booking: Booking, link: Link, warnings: list[dict[str, str]] | None = None) -> Owed:
    data = {
        "booking_id": booking.id,
        "version": booking.version,
        "mailbox": link.mailbox,
        "event_id": link.event_id,
        "web_link": link.web_link,
        "online_meeting_url": link.join_url,
        "warnings": warnings or [],
    }
    return Owed("booking.synced", booking.resource_id, data)


def _failed(
    svc: Services, booking: Booking, error: GraphError, message: dict[str, Any], attempt: int
) -> None:
    # Later tries read the stored state, which may have moved on since this event.
    message = {name: value for name, value in message.items() if name != "event"}
    if error.retryable and attempt < svc.settings.retry_attempts:
        delay = max(
            int(error.retry_after or 0), retry_delay(svc.settings.retry_base_seconds, attempt)
        )
        retry = {**message, "attempt": attempt + 1}
        if message.get("due"):  # open until the retry is due, not stalled before it
            later = svc.open_work.open(
                booking.id, int(message["version"]), STALL + timedelta(seconds=delay)
            )
            retry["due"] = later.due
        svc.queues.send(APPLY_BOOKING, retry, delay_seconds=delay)
        svc.history.add(
            booking.resource_id, "booking.apply", booking.id, "retrying",
            f"{error}; try {attempt + 1} in {delay} s",
        )  # fmt: skip
        return
    if error.retryable:  # out of tries: park it where status shows it
        svc.queues.send(poison_queue(APPLY_BOOKING), {**message, "error": error.to_json()})
    svc.health.failure(booking.resource_id, error.to_json())
    svc.history.add(booking.resource_id, "booking.apply", booking.id,
        "parked" if error.retryable else "failed", error.message, error.to_json(),
    )  # fmt: skip
    booking_failed(svc, booking.id, booking.version, booking.resource_id, error.to_json())


def booking_failed(
    svc: Services, booking_id: str, version: int, resource_id: str, error: dict[str, Any]
) -> None:
    """Tell the platform a booking's version will not be applied (``booking.failed``, SPEC §3.3):
    ``error`` is ``{code, message, hint}``."""
    svc.platform.emit(
        "booking.failed",
        resource_id,
        {"booking_id": booking_id, "version": version, "error": error},
        at_once=True,
    )


def _when(moment: datetime, all_day: bool) -> str:
    """A blocker's start or end as the platform gets it: all-day ones by their dates."""
    return moment.date().isoformat() if all_day else iso(moment, "auto")
