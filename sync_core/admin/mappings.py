"""Mappings (SPEC §6): create, change, read and delete the link between a booking-platform
resource and a mailbox, and start or stop sync when one is written.

The admin modules (mappings, rooms, purge, resync, status, doctor) are shared by the HTTP API
(``api.py``) and the CLI (``cli.py``). Every operation takes the process's
:class:`~sync_core.services.Services` and raises a :class:`~sync_core.problems.Problem` when the
caller can act on what went wrong; the API turns it into problem+json, the CLI into a line with
the hint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, field_validator

from sync_core.admin.catch_up import bookings_to_reapply, queue_bookings
from sync_core.admin.problems import problem_for
from sync_core.admin.progress import Progress, no_progress
from sync_core.clock import now
from sync_core.domain.mapping import Direction, Filters, Privacy, pattern_problem
from sync_core.graph import GraphError
from sync_core.problems import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from sync_core.store.mappings import Mapping, MappingRepository
from sync_core.store.tables import ConflictError, NotFoundError
from sync_core.validation import check_identifier, normalize_mailbox, parse_model

if TYPE_CHECKING:
    from sync_core.services import Services

MAX_PAGE_SIZE = 1000
QUIESCE_SECONDS = 30.0  # how long a deactivation waits for a mailbox read in flight


class FiltersInput(BaseModel):
    """Outlook events a mapping leaves out (SPEC §9); every filter is off unless set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ignore_all_day: bool = False
    ignore_title_pattern: str | None = None
    ignore_declined: bool = False

    @field_validator("ignore_title_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        problem = pattern_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def to_filters(self) -> Filters:
        return Filters(**self.model_dump())


class MappingInput(BaseModel):
    """Body of ``PUT /api/admin/mappings/{resource_id}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mailbox: str
    privacy: Privacy = "busy_only"  # titles are shown only when an admin opts in
    enabled: bool = True
    direction: Direction = "both"
    filters: FiltersInput = FiltersInput()

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        return normalize_mailbox(value)


@dataclass(frozen=True)
class PutResult:
    mapping: Mapping
    created: bool
    warnings: list[dict[str, str]] = field(default_factory=list)
    previous: Mapping | None = None
    bookings_queued: int = 0


def list_mappings(
    repo: MappingRepository,
    *,
    page_size: int = 100,
    continuation: str | None = None,
    mailbox: str | None = None,
) -> tuple[list[Mapping], str | None]:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationFailed.single("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    try:
        return repo.list_page(page_size=page_size, continuation=continuation, mailbox=mailbox)
    except ValueError as exc:  # a continuation token that is not ours
        raise ValidationFailed.single("continuation", str(exc)) from None


def put_mapping(
    repo: MappingRepository,
    resource_id: str,
    body: object,
    *,
    if_match: str | None = None,
    check: Callable[[MappingInput, Mapping | None], None] | None = None,
) -> PutResult:
    """Create or update a mapping. ``if_match`` (an ETag) guards against lost updates;
    ``check`` runs after the request was validated and before anything is written."""
    check_identifier("resource_id", resource_id)
    wanted = parse_model(MappingInput, body)
    current = repo.get(resource_id)
    if if_match is not None and (current is None or if_match not in ("*", current.etag)):
        raise PreconditionFailed(
            f"mapping {resource_id!r} changed since it was read (If-Match did not match); "
            "read it again and retry"
        )
    if check is not None:
        check(wanted, current)
    moment = now()
    try:
        if current is None:
            result = PutResult(
                repo.create(
                    Mapping(
                        resource_id=resource_id,
                        mailbox=wanted.mailbox,
                        privacy=wanted.privacy,
                        enabled=wanted.enabled,
                        created_at=moment,
                        updated_at=moment,
                        direction=wanted.direction,
                        filters=wanted.filters.to_filters(),
                    )
                ),
                created=True,
            )
        else:
            updated = replace(
                current,
                mailbox=wanted.mailbox,
                privacy=wanted.privacy,
                enabled=wanted.enabled,
                updated_at=moment,
                direction=wanted.direction,
                filters=wanted.filters.to_filters(),
            )
            result = PutResult(repo.replace(updated), created=False, previous=current)
    except (ConflictError, NotFoundError) as exc:
        raise Conflict(
            f"mapping {resource_id!r} was changed at the same time ({exc}); retry"
        ) from None
    return result


def get_mapping(repo: MappingRepository, resource_id: str) -> Mapping:
    check_identifier("resource_id", resource_id)
    mapping = repo.get(resource_id)
    if mapping is None:
        raise NotFound(f"resource {resource_id!r} is not mapped")
    return mapping


def delete_mapping(
    repo: MappingRepository, resource_id: str, *, if_match: str | None = None
) -> Mapping:
    """Remove a mapping; returns what was removed."""
    mapping = get_mapping(repo, resource_id)
    if if_match is not None and if_match not in ("*", mapping.etag):
        raise PreconditionFailed(
            f"mapping {resource_id!r} changed since it was read; read it again"
        )
    try:
        repo.delete(resource_id, etag=mapping.etag)
    except ConflictError:
        raise Conflict(f"mapping {resource_id!r} was changed at the same time; retry") from None
    return mapping


def check_mailbox(svc: Services, mailbox: str, resource_id: str | None = None) -> None:
    """Prove the mailbox exists, is in Exchange Online and is in the app's scope (reads its
    calendar). Raises :class:`MailboxUnreachable` (422) or :class:`GraphProblem` (502) and
    records the failure in history (and in the mapping's health when it is the mapped one)."""
    try:
        svc.graph.check_mailbox(mailbox)
    except GraphError as error:
        error.mailbox = error.mailbox or mailbox
        svc.history.add(
            resource_id, "mapping.check", mailbox, "failed", error.message, error.to_json()
        )
        if resource_id is not None:
            current = svc.mappings.get(resource_id)
            if current is not None and current.mailbox == mailbox:
                svc.health.failure(resource_id, error.to_json())
        raise problem_for(error, mailbox) from None


def save_mapping(
    svc: Services,
    resource_id: str,
    body: object,
    *,
    if_match: str | None = None,
    progress: Progress | None = None,
) -> PutResult:
    """``PUT`` a mapping: validate, check the mailbox through Graph (when the mapping is to be
    enabled), save, then start or stop sync. Nothing is saved when the check fails.

    - deactivating (``enabled: false``) removes the subscription and keeps every entry;
    - enabling again, creating, or moving to another mailbox re-applies the resource's bookings
      (so what changed meanwhile reaches the calendar) and reads the mailbox fresh;
    - moving to another mailbox also retires the old mailbox's subscription and blockers.
    """

    def graph_check(wanted: MappingInput, current: Mapping | None) -> None:
        if wanted.enabled:
            check_mailbox(svc, wanted.mailbox, resource_id)

    result = put_mapping(svc.mappings, resource_id, body, if_match=if_match, check=graph_check)
    mapping, previous = result.mapping, result.previous
    moved = previous is not None and previous.mailbox != mapping.mailbox
    if result.created:
        action, detail = "mapping.create", f"mapped to {mapping.mailbox} ({mapping.privacy})"
    elif previous is not None and previous.enabled and not mapping.enabled:
        action, detail = "mapping.deactivate", "sync stopped in both directions; entries kept"
    elif previous is not None and not previous.enabled and mapping.enabled:
        action, detail = "mapping.enable", f"sync started again with {mapping.mailbox}"
    elif moved and previous is not None:
        action, detail = "mapping.move", f"moved from {previous.mailbox} to {mapping.mailbox}"
    else:
        action, detail = "mapping.update", f"{mapping.mailbox} ({mapping.privacy})"
    if mapping.direction != "both":
        detail += f", {mapping.direction.replace('_', ' ')} only"
    if not mapping.enabled and result.created:
        detail += "; deactivated"
    catch_up = mapping.enabled and (
        result.created or moved or (previous is not None and not previous.enabled)
    )
    # Read before this change is recorded: the catch-up looks back to the last such entry.
    booking_ids = bookings_to_reapply(svc, resource_id) if catch_up else {}

    warnings: list[dict[str, str]] = []
    stops_reading = (
        previous is not None
        and previous.enabled
        and previous.reads_outlook
        and mapping.enabled
        and not mapping.reads_outlook
    )
    if previous is not None and previous.enabled and (moved or not mapping.enabled):
        wait_for_reads(svc, previous.mailbox)
    if moved and previous is not None:
        warnings += _retire_mailbox(svc, previous)
    elif stops_reading:
        # Now only written to Outlook: the platform no longer gets this mailbox's time for it.
        wait_for_reads(svc, mapping.mailbox)
        withdraw_blockers(svc, resource_id, mapping.mailbox, no_progress)
        detail += "; its blockers were withdrawn"
    result = activate(svc, result)
    warnings = result.warnings + warnings
    # Outlook writes do not need the subscription: re-apply even if it could not be made.
    queued = queue_bookings(svc, booking_ids, progress or no_progress) if catch_up else 0
    if queued:
        detail += f"; {queued} booking(s) re-applied"
    svc.history.add(resource_id, action, mapping.mailbox, "ok", detail)
    return replace(result, warnings=warnings, bookings_queued=queued)


def wait_for_reads(svc: Services, mailbox: str, timeout: float = QUIESCE_SECONDS) -> bool:
    """Wait until no worker is reading the mailbox (its read lease is free), so that after a
    deactivation or purge returns no read that began before it sends blockers. Reads that start
    later find the mapping deactivated. False if a lease was still held at ``timeout`` (a
    crashed worker's lease expires on its own)."""
    deadline = time.monotonic() + timeout
    while True:
        leased = svc.cursors.acquire(mailbox, seconds=30)
        if leased is not None:
            with contextlib.suppress(ConflictError):  # taken over meanwhile: it is free anyway
                svc.cursors.release(leased)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _retire_mailbox(svc: Services, old: Mapping) -> list[dict[str, str]]:
    """The mapping moved to another mailbox: stop the old subscription and withdraw the old
    mailbox's blockers from the platform (the new mailbox's are sent by its fresh read)."""
    from sync_core.inbound import subscriptions

    warnings: list[dict[str, str]] = []
    try:
        subscriptions.remove(svc, old.mailbox)
    except GraphError as error:
        warnings.append(error.to_json())
    withdraw_blockers(svc, old.resource_id, old.mailbox, no_progress)
    return warnings


def activate(svc: Services, result: PutResult) -> PutResult:
    """Start or stop sync for a mapping that was just written: subscribe (or unsubscribe, when
    it no longer reads Outlook) at once and read the mailbox fresh. A Graph failure is
    reported, not fatal: the mapping is saved, its status shows the error, and the next renewal
    pass tries again."""
    from sync_core.inbound import subscriptions
    from sync_core.store.queues import SYNC_MAILBOX

    mapping = result.mapping
    try:
        if mapping.enabled and mapping.reads_outlook:
            subscriptions.ensure(svc, mapping)
        else:  # kept while another resource reads the same mailbox
            subscriptions.remove(svc, mapping.mailbox)
        if mapping.enabled:
            # Also for a mapping that only writes: the read finds its events people changed.
            svc.queues.send(SYNC_MAILBOX, {"mailbox": mapping.mailbox, "full": True})
    except GraphError as error:
        svc.health.failure(mapping.resource_id, error.to_json())
        svc.history.add(
            mapping.resource_id,
            "subscription.ensure" if mapping.enabled else "subscription.remove",
            mapping.mailbox,
            "failed",
            error.message,
            error.to_json(),
        )
        return replace(result, warnings=[error.to_json()])
    return result


def deactivate(svc: Services, mapping: Mapping) -> None:
    """After a mapping was deleted: stop its subscription (best effort, renewal cleans up)."""
    from sync_core.inbound import subscriptions

    try:
        subscriptions.remove(svc, mapping.mailbox)
    except GraphError as error:
        svc.health.failure(mapping.resource_id, error.to_json())


def withdraw_blockers(svc: Services, resource_id: str, mailbox: str, progress: Progress) -> int:
    """Tell the platform every blocker of the mailbox is gone, and forget them."""
    blockers = list(svc.blockers.for_resource(mailbox, resource_id).values())
    progress("withdrawing blockers", 0, len(blockers))
    for done, blocker in enumerate(blockers, 1):
        svc.platform.emit(
            "blocker.deleted", resource_id, {"id": blocker.id}, after=blocker.sequence
        )
        svc.blockers.delete(mailbox, resource_id, blocker.id)
        progress("withdrawing blockers", done, len(blockers))
    return len(blockers)
