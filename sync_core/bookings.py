"""Platform → Microsoft 365: signed booking events in, the booking's calendar event converged.

``receive`` answers ``POST /api/bookings/events``: it verifies, validates, stores the newest state
of the booking and queues its id (with the event, when it fits). ``apply`` (the ``apply_booking``
queue function) converges Outlook to that state: create, patch only what changed, delete, or
move. It is idempotent: running it twice, late, or after a crash leaves exactly one event per
booking.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError

from sync_core import webhooks
from sync_core.booking import (
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
from sync_core.graph import ErrorKind, GraphError
from sync_core.platform import retry_delay
from sync_core.problems import Unauthorized, Unavailable
from sync_core.reconcile import drifted_fields, observable_digest
from sync_core.services import Services
from sync_core.store.history import Outcome
from sync_core.store.links import ConflictError, Link
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
    if repair and (link is None or link.state != "active"):
        return  # nothing of ours to restore (it was removed on purpose)
    current = link is not None and link.applied_version >= booking.version
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
        link = svc.links.save(
            replace(link, state="removed", event_id=None, applied_version=booking.version)
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
        shown: dict[str, Any] | None = None
        changes = changed_fields(projection, link.fingerprints)
        if repair:
            # Restore only what differs from what Outlook shows: rewriting the rest (the body
            # above all) would cost writes and could drop the Teams meeting.
            shown = _shown(svc, target, current_id)
            if shown is not None:
                changes.update(drifted_fields(projection, shown))
        if link.join_url:  # asking for the meeting again could replace its join link
            changes.pop("isOnlineMeeting", None)
            changes.pop("onlineMeetingProvider", None)
        if shown is None and repair:
            written, link = _recreate(svc, booking, link, target, projection)
            action, detail = "booking.repair", f"recreated in {target} after it was deleted"
        elif not changes:
            if repair and link.applied_version >= booking.version:
                return None  # the calendar matches the booking: nothing to do, nothing to say
            svc.links.save(
                replace(link, applied_version=booking.version, resource_id=booking.resource_id)
            )
            _synced(svc, booking, link)
            return _Outcome("booking.update", "ok", "calendar already matches")
        else:
            if "body" in changes and (link.join_url or (shown or {}).get("isOnlineMeeting")):
                shown = shown or svc.graph.get_event(target, current_id)
                join_url = link.join_url or (shown.get("onlineMeeting") or {}).get("joinUrl")
                blob = meeting_blob(str((shown.get("body") or {}).get("content") or ""), join_url)
                changes["body"] = body_keeping_meeting(changes["body"], blob)
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
            try:
                written = svc.graph.update_event(target, current_id, changes)
                action, detail = (
                    (
                        "booking.repair",
                        f"restored {', '.join(sorted(changes))} after an edit in Outlook",
                    )
                    if repair and link.applied_version >= booking.version
                    else ("booking.update", f"changed {', '.join(sorted(changes))}")
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
    warnings = []
    if projection.get("isOnlineMeeting") and written.get("isOnlineMeeting") is False:
        # Graph answers 2xx without the meeting when the calendar does not offer Teams.
        warnings.append(NO_TEAMS)
        detail += f"; {NO_TEAMS['message']}"
    try:
        link = svc.links.save(
            replace(
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
        )
    except ConflictError:
        _drop_if_orphaned(svc, booking.id, target, link.transaction_id, event_id)
        raise  # the message is retried and converges to what the other worker left
    svc.links.index(
        target,
        link.transaction_id,
        booking.id,
        event_id,
        observable_digest(projection),
        booking.calendar_span(),
    )
    _report_conflicts(svc, booking, target, event_id)
    _synced(svc, booking, link, warnings)
    return _Outcome(action, "ok", detail)


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


def _report_conflicts(svc: Services, booking: Booking, mailbox: str, event_id: str) -> None:
    start, end = booking.interval_utc()
    conflicts = [b for b in svc.blockers.overlapping(mailbox, start, end) if b.event_id != event_id]
    if not conflicts:
        return
    svc.platform.emit(
        "booking.conflict",
        booking.resource_id,
        {
            "booking_id": booking.id,
            "conflicts": [
                {"blocker_id": b.id, "start": _iso(b.start), "end": _iso(b.end)} for b in conflicts
            ],
        },
        at_once=True,
    )
    svc.history.add(booking.resource_id, "booking.conflict", booking.id, "conflict",
        f"overlaps {len(conflicts)} Outlook event(s) in {mailbox}",
    )  # fmt: skip


def _synced(
    svc: Services, booking: Booking, link: Link, warnings: list[dict[str, str]] | None = None
) -> None:
    svc.platform.emit(
        "booking.synced",
        booking.resource_id,
        {
            "booking_id": booking.id,
            "version": booking.version,
            "mailbox": link.mailbox,
            "event_id": link.event_id,
            "web_link": link.web_link,
            "online_meeting_url": link.join_url,
            "warnings": warnings or [],
        },
        at_once=True,
    )


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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decode(body: bytes) -> dict[str, Any]:
    """A queue message body as JSON."""
    return dict(json.loads(body))
