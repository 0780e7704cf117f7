"""Catching a resource up: the bookings to apply again when a mapping is created, enabled,
moved or resynced, and queueing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sync_core.admin.progress import Progress

if TYPE_CHECKING:
    from sync_core.services import Services

# How far back in a resource's history a catch-up looks for bookings that arrived while the
# mapping was deactivated (they have no link yet; history is their only per-resource record).
CATCH_UP_HISTORY_LIMIT = 5000


# History entries after which nothing older needs catching up: a deactivation or removal starts
# the period in which bookings were ignored; an enable or create already caught up before it.
CATCH_UP_MARKERS = frozenset(
    {"mapping.deactivate", "mapping.delete", "mapping.purge", "mapping.enable", "mapping.create"}
)


def bookings_to_reapply(svc: Services, resource_id: str) -> dict[str, bool]:
    """Booking ids of the resource → whether the message is a repair (an active projection
    is rewritten to the booking's state even if its version was applied).

    Bookings with a link are found through it. Bookings that arrived while the mapping was
    deactivated have none yet: they are found in the resource's history (``booking.apply``
    ``ignored``), read back to the newest entry that starts or ends such a period
    (:data:`CATCH_UP_MARKERS`)."""
    found: dict[str, bool] = {}
    for link in svc.links.for_resource(resource_id):
        found[link.booking_id] = link.state == "active"
    continuation: str | None = None
    read = 0
    while read < CATCH_UP_HISTORY_LIMIT:
        entries, continuation = svc.history.page(
            resource_id=resource_id, page_size=200, continuation=continuation
        )
        for entry in entries:
            read += 1
            if entry.action in CATCH_UP_MARKERS:
                return found
            if (
                entry.action == "booking.apply"
                and entry.outcome == "ignored"
                and entry.subject not in found
            ):
                found[entry.subject] = False
        if continuation is None:
            break
    return found


def queue_bookings(svc: Services, bookings: dict[str, bool], progress: Progress) -> int:
    from sync_core.store.queues import APPLY_BOOKING

    total = len(bookings)
    progress("re-applying bookings", 0, total)
    for done, (booking_id, repair) in enumerate(sorted(bookings.items()), 1):
        message: dict[str, Any] = {"booking_id": booking_id, "attempt": 1}
        if repair:
            message["repair"] = True
        svc.queues.send(APPLY_BOOKING, message)
        progress("re-applying bookings", done, total)
    return total
