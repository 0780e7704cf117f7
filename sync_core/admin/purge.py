"""Deleting a mapping (SPEC §6): stop sync and forget it, and with purge also delete the events
the service wrote and withdraw its blockers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sync_core.admin.mappings import deactivate, get_mapping, wait_for_reads, withdraw_blockers
from sync_core.admin.problems import GraphProblem
from sync_core.admin.progress import Progress, no_progress
from sync_core.clock import now
from sync_core.graph import GraphError
from sync_core.problems import (
    Conflict,
    PreconditionFailed,
)
from sync_core.store.tables import ConflictError, NotFoundError

if TYPE_CHECKING:
    from sync_core.services import Services


@dataclass
class PurgeReport:
    deleted_events: int = 0
    already_gone: int = 0  # projections someone had already deleted in Outlook
    deleted_blockers: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "deleted_events": self.deleted_events,
            "already_gone": self.already_gone,
            "deleted_blockers": self.deleted_blockers,
        }


def remove_mapping(
    svc: Services,
    resource_id: str,
    *,
    if_match: str | None = None,
    purge: bool = False,
    progress: Progress | None = None,
) -> PurgeReport | None:
    """``DELETE`` a mapping: stop sync and forget it. With ``purge`` also delete the events the
    service wrote into the calendar and withdraw its blockers from the platform (returns the
    counts). A purge that Graph interrupts leaves the mapping deactivated, so it can be retried.
    """
    report = progress or no_progress
    mapping = get_mapping(svc.mappings, resource_id)
    if if_match is not None and if_match not in ("*", mapping.etag):
        raise PreconditionFailed(
            f"mapping {resource_id!r} changed since it was read; read it again"
        )
    counts: PurgeReport | None = None
    if purge:
        if mapping.enabled:  # first stop both directions, so nothing new is written meanwhile
            try:
                mapping = svc.mappings.replace(replace(mapping, enabled=False, updated_at=now()))
            except (ConflictError, NotFoundError):
                raise Conflict(
                    f"mapping {resource_id!r} was changed at the same time; retry"
                ) from None
        deactivate(svc, mapping)
        wait_for_reads(svc, mapping.mailbox)  # no read in flight may re-send a blocker
        counts = PurgeReport()
        try:
            _delete_projections(svc, resource_id, counts, report)
        except GraphError as error:
            svc.history.add(
                resource_id, "mapping.purge", mapping.mailbox, "failed",
                f"stopped after deleting {counts.deleted_events} event(s): {error.message}",
                error.to_json(),
            )  # fmt: skip
            raise GraphProblem(
                error.to_json(),
                f"the purge stopped after deleting {counts.deleted_events} event(s): "
                f"{error.message}. The mapping is deactivated; delete it with purge again to "
                "finish.",
            ) from None
        counts.deleted_blockers = withdraw_blockers(svc, resource_id, mapping.mailbox, report)
    try:
        svc.mappings.delete(resource_id, etag=mapping.etag)
    except ConflictError:
        raise Conflict(f"mapping {resource_id!r} was changed at the same time; retry") from None
    if not purge:
        deactivate(svc, mapping)
    svc.health.clear(resource_id)
    if counts is None:
        svc.history.add(resource_id, "mapping.delete", mapping.mailbox, "ok", "entries kept")
    else:
        svc.history.add(
            resource_id, "mapping.purge", mapping.mailbox, "ok",
            f"deleted {counts.deleted_events} event(s) ({counts.already_gone} already gone) "
            f"and {counts.deleted_blockers} blocker(s)",
        )  # fmt: skip
    return counts


def _delete_projections(
    svc: Services, resource_id: str, counts: PurgeReport, progress: Progress
) -> None:
    """Delete every Outlook event this service wrote for the resource's bookings."""
    from sync_core.domain.booking import BOOKING_PROPERTY_ID

    links = [link for link in svc.links.for_resource(resource_id) if link.state != "removed"]
    progress("deleting events", 0, len(links))
    for done, link in enumerate(links, 1):
        event_ids: list[str] = []
        if link.event_id:
            event_ids.append(link.event_id)
        else:  # a create that was started but not recorded: find it by our property
            event_ids += [
                str(e["id"])
                for e in svc.graph.find_events_by_property(
                    link.mailbox, BOOKING_PROPERTY_ID, link.booking_id
                )
            ]
        for event_id in event_ids:
            if svc.graph.delete_event(link.mailbox, event_id):
                counts.deleted_events += 1
            else:
                counts.already_gone += 1
        svc.links.unindex(link.mailbox, link.transaction_id)
        # Not in any calendar any more, and not applied: a later mapping re-creates it.
        svc.links.save(replace(link, state="removed", event_id=None, applied_version=0))
        progress("deleting events", done, len(links))
