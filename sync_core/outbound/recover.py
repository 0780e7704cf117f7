"""The ``recover_stalled`` timer: accepted booking changes whose worker died are applied again.

Every change the intake accepts is recorded as open work (``sync_core.store.open_work``) until
``apply`` finishes it. One still open when it is due (a minute after it was accepted, or after
its retry was due) lost its worker, or its queue message: it is queued again, and its record
postponed, so it is tried once per interval until it is done. ``apply`` is idempotent (the
transaction id finds an event a dead worker created), so the new try never duplicates one.
A change that stalls ``MAX_TRIES`` times is parked where status and history show it, and the
platform gets ``booking.failed`` for it (code ``ApplyStalled``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sync_core.outbound.apply import booking_failed
from sync_core.store.queues import APPLY_BOOKING

if TYPE_CHECKING:
    from sync_core.services import Services
    from sync_core.store.open_work import OpenChange

log = logging.getLogger(__name__)

MAX_TRIES = 5  # recoveries of one change before it is parked
STALLED_CODE = "ApplyStalled"


def recover_stalled(svc: Services) -> int:
    """Queue every overdue open change again; returns how many were queued."""
    queued = 0
    for change in svc.open_work.overdue():
        link = svc.links.get(change.booking_id)
        if link is not None and link.applied_version >= change.version:
            # Applied (its worker died before closing the record), or a redelivery's record.
            svc.open_work.close(change.due, change.booking_id, change.version)
            continue
        if change.tries >= MAX_TRIES:
            _park(svc, change, link.resource_id if link else None)
            continue
        later = svc.open_work.postpone(change)
        svc.queues.send(
            APPLY_BOOKING,
            {
                "booking_id": change.booking_id,
                "attempt": 1,
                "due": later.due,
                "version": change.version,
            },
        )
        log.warning(
            "booking %s version %d was not applied in time; queued again",
            change.booking_id,
            change.version,
        )
        queued += 1
    return queued


def _park(svc: Services, change: OpenChange, resource_id: str | None) -> None:
    """Give up on a change that keeps stalling: closed, in history, and ``booking.failed``."""
    if resource_id is None:  # never applied: the resource is the stored booking's
        stored = svc.bookings.get(change.booking_id)
        data = stored.event.get("data") if stored is not None else None
        resource_id = str(data["resource_id"]) if isinstance(data, dict) else None
    message = f"version {change.version} stalled {change.tries} times; resync to retry it"
    error = {
        "code": STALLED_CODE,
        "message": f"booking {change.booking_id} version {change.version} was not applied: "
        f"its work stalled {change.tries} times",
        "hint": "Resync the resource to apply it again (python -m sync_core resync RESOURCE, or "
        "POST /api/admin/mappings/{resource_id}/resync); if it stalls again, look in the "
        "function app's log for apply_booking ending early (timeouts, the instance stopping).",
    }
    svc.history.add(resource_id, "booking.apply", change.booking_id, "parked", message, error)
    if resource_id is not None:
        booking_failed(svc, change.booking_id, change.version, resource_id, error)
    # Closed last: should this die before, the next pass parks it again (at least once).
    svc.open_work.close(change.due, change.booking_id, change.version)
