"""Signed booking events in (SPEC §3.2): verified, validated, stored and queued for ``apply``.

``authenticate`` checks the Standard Webhooks signature of the raw body; ``accept`` stores the
newest state of the booking and queues its id (with the event, when it fits) for the
``apply_booking`` function. Both take plain values and raise ``Problem``; the HTTP handler reads
the request and shapes the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from azure.core.exceptions import AzureError

from sync_core import webhooks
from sync_core.domain.booking import BookingEvent
from sync_core.problems import Unauthorized, Unavailable
from sync_core.services import Services
from sync_core.store.queues import APPLY_BOOKING
from sync_core.store.tables import StoreError
from sync_core.validation import parse_model

log = logging.getLogger(__name__)

# The largest event sent along with its apply_booking message; larger ones are read back.
CARRIED_EVENT_BYTES = 32 * 1024


@dataclass(frozen=True)
class Receipt:
    """What became of an accepted webhook: queued, a repeat of one already queued, or not
    ours to sync."""

    status: Literal["accepted", "duplicate", "ignored"]
    reason: str = ""


def authenticate(svc: Services, headers: Mapping[str, str], body: bytes) -> str:
    """The webhook id of a booking event signed with the platform's secret; else Unauthorized."""
    try:
        return webhooks.verify([svc.settings.booking_webhook_secret], headers, body)
    except webhooks.SignatureError as exc:
        raise Unauthorized(f"the webhook signature was not accepted: {exc.reason}") from None


def accept(svc: Services, webhook_id: str, payload: Any) -> Receipt:
    """Validate and durably queue one authenticated booking event (its JSON ``payload``)."""
    event = parse_model(BookingEvent, payload)
    booking = event.data
    try:
        mapping = svc.mappings.recent(booking.resource_id)
        # A booking moved away from a mapped resource must still leave its old calendar.
        if mapping is None and svc.links.get(booking.id) is None:
            return Receipt("ignored", "resource not mapped")
        if mapping is not None and not mapping.writes_outlook:
            return Receipt("ignored", "direction")  # the mapping only reads Outlook
        body = event.model_dump(mode="json")
        saved = svc.bookings.save(booking.id, booking.version, body, webhook_id)
        if saved == "duplicate":
            # The first delivery may have failed after keeping the state (and been answered
            # 5xx): unless its version is applied, recovery makes sure it is.
            link = svc.links.get(booking.id)
            if link is None or link.applied_version < booking.version:
                svc.open_work.open(booking.id, booking.version)
            return Receipt("duplicate")
        if saved == "stale":
            return Receipt("accepted")  # the newer version kept is applied by its own message
        # Open until apply finishes it: if this worker's instance dies, recovery runs it again.
        change = svc.open_work.open(booking.id, booking.version)
        message: dict[str, Any] = {
            "booking_id": booking.id,
            "attempt": 1,
            "due": change.due,
            "version": booking.version,
        }
        if _fits(body):
            message["event"] = body  # the first try need not read back what was just stored
            if saved == "first":
                message["first"] = True  # nor look for a link: none can exist yet
        svc.queues.send(APPLY_BOOKING, message)
    except (StoreError, AzureError) as exc:
        # Not accepted: the platform gets a 5xx and sends the event again later.
        log.exception("booking %s could not be queued", booking.id)
        raise Unavailable("the event could not be stored; retry later") from exc
    return Receipt("accepted")


def decode(body: bytes) -> dict[str, Any]:
    """A queue message body as JSON."""
    return dict(json.loads(body))


def _fits(body: dict[str, Any]) -> bool:
    """Whether an event can ride along in its queue message (64 KiB once base64-encoded)."""
    return len(json.dumps(body, separators=(",", ":")).encode()) <= CARRIED_EVENT_BYTES
