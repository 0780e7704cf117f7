"""Platform → Microsoft 365: signed booking events in, the booking's calendar event converged.

``receive`` answers ``POST /api/bookings/events``: it verifies, validates, stores the newest state
of the booking and queues its id (with the event, when it fits). ``apply`` (the ``apply_booking``
queue function) converges Outlook to that state: create, patch only what changed, delete, or
move. It is idempotent: running it twice, late, or after a crash leaves exactly one event per
booking. Its outcome for the platform (``booking.conflict``, ``booking.synced``) is written into
the link by the same write that records the calendar's new state, and handed to the deliver path
after it, so a worker that dies in between leaves it owed, and the next message for the booking
(the redelivery at the latest) hands it over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError

from sync_core import webhooks
from sync_core.clock import iso
from sync_core.domain.booking import (
    BOOKING_PROPERTY_ID,
    Booking,
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
from sync_core.domain.outlook import drifted_fields, observable_digest
from sync_core.graph import ErrorKind, GraphError
from sync_core.platform import retry_delay
from sync_core.problems import Unauthorized, Unavailable
from sync_core.services import Services
from sync_core.store.history import Outcome
from sync_core.store.links import ConflictError, Link, Owed
from sync_core.store.queues import APPLY_BOOKING, poison_queue
from sync_core.store.tables import StoreError
from sync_core.validation import parse_model
from sync_core.web import Request, Response, json_response

log = logging.getLogger(__name__)

NO_TEAMS = {
    "code": "online_meeting_unavailable",
    "message": "no Teams meeting: this calendar does not offer Teams "
    "(allowedOnlineMeetingProviders lacks teamsForBusiness; often an unlicensed room mailbox)",
}

# The largest event sent along with its apply_booking message; larger ones are read back.
CARRIED_EVENT_BYTES = 32 * 1024


# -- intake -------------------------------------------------------------------------------------


def receive(svc: Services, request: Request) -> Response:
    """Verify, validate and durably queue one booking event (SPEC §3.2)."""
    try:
        webhook_id = webhooks.verify(
            [svc.settings.booking_webhook_secret], request.headers, request.body
        )
    except webhooks.SignatureError as exc:
        raise Unauthorized(f"the webhook signature was not accepted: {exc.reason}") from None
    event = parse_model(BookingEvent, request.json())
    booking = event.data
    try:
        if svc.seen.seen(webhook_id):
            return json_response(200, {"status": "duplicate"})
        mapping = svc.mappings.recent(booking.resource_id)
        # A booking moved away from a mapped resource must still leave its old calendar.
        if mapping is None and svc.links.get(booking.id) is None:
            return json_response(200, {"status": "ignored", "reason": "resource not mapped"})
        body = event.model_dump(mode="json")
        message: dict[str, Any] = {"booking_id": booking.id, "attempt": 1}
        if svc.bookings.save_if_newer(booking.id, booking.version, body) and _fits(body):
            message["event"] = body  # the first try need not read back what was just stored
        svc.queues.send(APPLY_BOOKING, message)
        svc.seen.remember(webhook_id)
    except (StoreError, AzureError) as exc:
        # Not accepted: the platform gets a 5xx and sends the event again later.
        log.exception("booking %s could not be queued", booking.id)
        raise Unavailable("the event could not be stored; retry later") from exc
    return json_response(202, {"status": "accepted"})


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
    attempt = int(message.get("attempt", 1))
    carried = None if redelivered else message.get("event")
    if carried is not None:
        body, link = carried, svc.links.get(booking_id)
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
    repair = bool(message.get("repair"))  # a person changed or deleted the projection in Outlook
    if repair and (link is None or link.state == "removed"):
        return  # nothing of ours to restore (it was removed on purpose)
    current = link is not None and link.applied_version >= booking.version
    if link is not None and link.state == "active" and link.outbox:
        # A worker died after the link write: what it owes describes the calendar as it is, so
        # it goes out first, also when this message brings a newer version.
        link = _finish(svc, booking, link)
    if link is not None and link.state != "pending" and current and not repair:
        return  # this version (or a newer one) is already in the calendar
    mapping = svc.mappings.recent(booking.resource_id)
    if mapping is not None and not mapping.enabled:
        svc.history.add(
            booking.resource_id, "booking.apply", booking_id, "ignored", "mapping deactivated"
        )
        return
    target = None if (event.removes or mapping is None) else mapping.mailbox
    try:
        result = _converge(svc, booking, link, target, repair=repair)
    except GraphError as error:
        _failed(svc, booking, error, message, attempt)
        return
    if result is None:
        return
    svc.health.success(booking.resource_id)
    svc.history.add(booking.resource_id, result.action, booking_id, result.outcome, result.detail)


def _converge(
    svc: Services, booking: Booking, link: Link | None, target: str | None, *, repair: bool = False
) -> _Outcome | None:
    """Make the calendar show ``booking``; None when it already did and nothing was done."""
    # 1. Leave the calendar it is in, if it moved or should be gone.
    moved = False
    if link is not None and link.state != "removed" and link.mailbox != target:
        _remove(svc, link)
        moved = target is not None
        # A move is applied only once the new calendar holds the event: until then the link is
        # not current, so a worker that dies in between leaves the create to the retry.
        applied = link.applied_version if moved else booking.version
        link = svc.links.save(
            replace(link, state="removed", event_id=None, applied_version=applied)
        )
        if target is None:
            return _Outcome("booking.delete", "ok", f"removed from {link.mailbox}")

    if target is None:
        if link is not None and link.applied_version < booking.version:
            svc.links.save(replace(link, applied_version=booking.version))
        return _Outcome("booking.delete", "ok", "nothing in any calendar")

    # 2. Be in the target calendar, matching the booking.
    projection = project(
        booking, category=svc.settings.event_category, invite_guests=svc.settings.invite_guests
    )
    prints = fingerprints(projection)
    if link is None or link.state == "removed":
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
        link = saved
        written = svc.graph.create_event(
            target, creation_body(projection, booking.id, link.transaction_id)
        )
        action, detail = (
            ("booking.move", f"moved to {target}")
            if moved
            else ("booking.create", f"created in {target}")
        )
    elif link.state == "pending":
        written, detail = _recover(svc, booking, link, projection)
        action = "booking.create"
    else:
        current_id = link.event_id
        assert current_id is not None
        # A repair of a booking that did not change since it was written restores only what a
        # person changed; rewriting the rest (the body above all) costs writes and the meeting.
        settled = repair and link.applied_version >= booking.version
        shown = _shown(svc, target, current_id) if repair else None
        if repair and shown is None:
            written, link = _recreate(svc, booking, link, target, projection)
            action, detail = "booking.repair", f"recreated in {target} after it was deleted"
        else:
            changes = {} if settled else changed_fields(projection, link.fingerprints)
            if shown is not None:
                changes.update(drifted_fields(projection, shown))
            if link.join_url:  # asking for the meeting again could replace its join link
                changes.pop("isOnlineMeeting", None)
                changes.pop("onlineMeetingProvider", None)
            detail = ""
            if "body" in changes and (link.join_url or (shown or {}).get("isOnlineMeeting")):
                shown = shown or _shown(svc, target, current_id)
                if shown is not None and not _keep_meeting(changes, shown, link):
                    detail = "; notes not rewritten: the Teams block was not found in the body"
            if not changes:
                if settled:
                    _refresh_format(svc, booking, link, target, projection, prints)
                    return None  # the calendar matches the booking: nothing to do or to say
                done = replace(
                    link, applied_version=booking.version, resource_id=booking.resource_id
                )
                synced = _synced(booking, done, _meeting_warnings(projection, link.join_url))
                _hand_over(svc, svc.links.save(replace(done, outbox=(synced,))))
                return _Outcome("booking.update", "ok", "calendar already matches" + detail)
            # Recorded first: a read of the mailbox between the PATCH and the link write must
            # see this change as ours, not as a person's edit.
            svc.links.index(
                target,
                link.transaction_id,
                booking.id,
                current_id,
                observable_digest(projection),
                booking.calendar_span(),
            )
            fields = ", ".join(sorted(changes))
            try:
                written = svc.graph.update_event(target, current_id, changes)
                action, detail = (
                    ("booking.repair", f"restored {fields} after an edit in Outlook" + detail)
                    if settled
                    else ("booking.update", f"changed {fields}" + detail)
                )
            except GraphError as error:
                if error.kind is not ErrorKind.ITEM_NOT_FOUND:
                    raise
                # Someone deleted our event in Outlook: put it back (drift repair).
                written, link = _recreate(svc, booking, link, target, projection)
                action, detail = "booking.repair", f"recreated in {target} after it was deleted"

    event_id = str(written["id"])
    join_url = (
        (written.get("onlineMeeting") or {}).get("joinUrl")
        if "onlineMeeting" in written
        else link.join_url
    )
    # Graph answers 2xx without the meeting when the calendar does not offer Teams.
    warnings = _meeting_warnings(projection, join_url)
    if warnings:
        detail += f"; {NO_TEAMS['message']}"
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
    return _Outcome(action, "ok", detail)


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
    )


def _finish(svc: Services, booking: Booking, link: Link) -> Link:
    """Complete what a worker left undone after the link write that made the booking current:
    the index entry (when ``booking`` is the version applied), then the owed outcome."""
    if booking.version == link.applied_version and link.event_id:
        projection = project(
            booking, category=svc.settings.event_category, invite_guests=svc.settings.invite_guests
        )
        _index(svc, booking, link, projection)
    return _hand_over(svc, link)


def _hand_over(svc: Services, link: Link) -> Link:
    """Emit what the link owes the platform, then empty its outbox. The emptying is guarded by
    the ETag: a worker that wrote the link since replaced its outbox with what is owed now."""
    for owed in link.outbox:
        svc.platform.emit(owed.type, owed.resource_id, owed.data, at_once=True)
        if owed.type == "booking.conflict":
            svc.history.add(owed.resource_id, "booking.conflict", link.booking_id, "conflict",
                f"overlaps {len(owed.data['conflicts'])} Outlook event(s) in {link.mailbox}",
            )  # fmt: skip
    try:
        return svc.links.save(replace(link, outbox=()))
    except ConflictError:
        return link


def _meeting_warnings(projection: dict[str, Any], join_url: str | None) -> list[dict[str, str]]:
    return [NO_TEAMS] if projection.get("isOnlineMeeting") and not join_url else []


def _keep_meeting(changes: dict[str, Any], shown: dict[str, Any], link: Link) -> bool:
    """Put the meeting block of the event as shown into the new body. Without the block the
    body is left out (sending it would end the meeting); False then."""
    join_url = (shown.get("onlineMeeting") or {}).get("joinUrl") or link.join_url
    blob = meeting_blob(str((shown.get("body") or {}).get("content") or ""), join_url)
    if not blob and shown.get("isOnlineMeeting"):
        del changes["body"]
        return False
    changes["body"] = body_keeping_meeting(changes["body"], blob)
    return True


def _refresh_format(
    svc: Services,
    booking: Booking,
    link: Link,
    target: str,
    projection: dict[str, Any],
    prints: dict[str, str],
) -> None:
    """The event matches its booking but was recorded in an earlier projection format (another
    zone name, all-day by instants): record it in this one, so reads compare like with like."""
    if link.fingerprints == prints or link.event_id is None:
        return
    svc.links.index(
        target,
        link.transaction_id,
        booking.id,
        link.event_id,
        observable_digest(projection),
        booking.calendar_span(),
    )
    svc.links.save(replace(link, fingerprints=prints, content_hash=content_hash(prints)))


def _shown(svc: Services, mailbox: str, event_id: str) -> dict[str, Any] | None:
    """The event as Outlook shows it in the calendar; None once a person deleted it."""
    try:
        return svc.graph.get_event(mailbox, event_id)
    except GraphError as error:
        if error.kind is not ErrorKind.ITEM_NOT_FOUND:
            raise
        return None


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


def _recover(
    svc: Services, booking: Booking, link: Link, projection: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """A create was started but not recorded: adopt the event if Graph made it, else create it."""
    found = svc.graph.find_events_by_property(link.mailbox, BOOKING_PROPERTY_ID, booking.id)
    if not found:
        created = svc.graph.create_event(
            link.mailbox, creation_body(projection, booking.id, link.transaction_id)
        )
        return created, f"created in {link.mailbox}"
    keep, *extra = found
    for duplicate in extra:  # only if a transactionId retry was not de-duplicated by Graph
        svc.graph.delete_event(link.mailbox, str(duplicate["id"]))
    changes = dict(projection)
    if keep.get("isOnlineMeeting"):  # the meeting exists: keep it and its join link
        changes.pop("isOnlineMeeting", None)
        changes.pop("onlineMeetingProvider", None)
        join_url = (keep.get("onlineMeeting") or {}).get("joinUrl")
        blob = meeting_blob(str((keep.get("body") or {}).get("content") or ""), join_url)
        changes["body"] = body_keeping_meeting(projection["body"], blob)
    updated = svc.graph.update_event(link.mailbox, str(keep["id"]), changes)
    return updated, f"adopted the event already in {link.mailbox}"


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
    """``booking.conflict`` if the booking overlaps busy Outlook time (none if it does not)."""
    timed, dated = booking.interval_utc(), booking.calendar_span()
    near = svc.blockers.overlapping(mailbox, min(timed[0], dated[0]), max(timed[1], dated[1]))
    conflicts = []
    for b in near:
        # Two all-day events overlap by their dates; anything else by its time.
        start, end = dated if (booking.all_day and b.all_day) else timed
        if b.event_id != event_id and b.start < end and start < b.end:
            conflicts.append(b)
    if not conflicts:
        return []
    data = {
        "booking_id": booking.id,
        "conflicts": [
            {"blocker_id": b.id, "start": _when(b.start, b.all_day), "end": _when(b.end, b.all_day)}
            for b in conflicts
        ],
    }
    return [Owed("booking.conflict", booking.resource_id, data)]


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
        svc.queues.send(APPLY_BOOKING, {**message, "attempt": attempt + 1}, delay_seconds=delay)
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
    svc.platform.emit(
        "booking.failed",
        booking.resource_id,
        {"booking_id": booking.id, "version": booking.version, "error": error.to_json()},
        at_once=True,
    )


def _fits(body: dict[str, Any]) -> bool:
    """Whether an event can ride along in its queue message (64 KiB once base64-encoded)."""
    return len(json.dumps(body, separators=(",", ":")).encode()) <= CARRIED_EVENT_BYTES


def _when(moment: datetime, all_day: bool) -> str:
    """A blocker's start or end as the platform gets it: all-day ones by their dates."""
    return moment.date().isoformat() if all_day else iso(moment, "auto")


def decode(body: bytes) -> dict[str, Any]:
    """A queue message body as JSON."""
    return dict(json.loads(body))
