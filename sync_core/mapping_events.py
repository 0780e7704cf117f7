"""A mapping's changes of state, told to the platform (``mapping.error``, ``mapping.recovered``,
``subscription.lost``): the ``on_change`` of :class:`~sync_core.store.health.HealthRepository`,
which reports each change once, from the instance whose write made it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sync_core.store.health import HealthChange

if TYPE_CHECKING:
    from sync_core.services import Services

ERROR_FIELDS = ("code", "message", "hint")


def announce(svc: Services, change: HealthChange) -> int:
    """Queue the event for the platform; returns its ``sequence``. ``data`` names the mailbox
    (the mapping's, or the error's when the mapping is gone) and, for ``mapping.error``, the
    error as ``{code, message, hint}``."""
    error = change.error or {}
    mapping = svc.mappings.get(change.resource_id)
    mailbox = mapping.mailbox if mapping is not None else error.get("mailbox")
    data: dict[str, Any] = {"mailbox": mailbox}
    if change.kind == "mapping.error":
        data["error"] = {name: error.get(name) for name in ERROR_FIELDS}
        return svc.platform.emit("mapping.error", change.resource_id, data)
    if change.kind == "mapping.recovered":
        return svc.platform.emit("mapping.recovered", change.resource_id, data)
    return svc.platform.emit("subscription.lost", change.resource_id, data)
