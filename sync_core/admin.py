"""Admin operations, shared by the HTTP API (``api.py``) and the CLI (``cli.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, field_validator

from sync_core.problems import Conflict, NotFound, PreconditionFailed, ValidationFailed
from sync_core.store.mappings import Mapping, MappingRepository, Privacy, now
from sync_core.store.tables import ConflictError, NotFoundError
from sync_core.validation import check_identifier, normalize_mailbox, parse_model

if TYPE_CHECKING:
    from sync_core.services import Services

MAX_PAGE_SIZE = 1000


class MappingInput(BaseModel):
    """Body of ``PUT /api/admin/mappings/{resource_id}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mailbox: str
    privacy: Privacy = "busy_only"  # titles are shown only when an admin opts in
    enabled: bool = True

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        return normalize_mailbox(value)


@dataclass(frozen=True)
class PutResult:
    mapping: Mapping
    created: bool
    warnings: list[dict[str, str]] = field(default_factory=list)


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
    repo: MappingRepository, resource_id: str, body: object, *, if_match: str | None = None
) -> PutResult:
    """Create or update a mapping. ``if_match`` (an ETag) guards against lost updates."""
    check_identifier("resource_id", resource_id)
    wanted = parse_model(MappingInput, body)
    current = repo.get(resource_id)
    if if_match is not None and (current is None or if_match not in ("*", current.etag)):
        raise PreconditionFailed(
            f"mapping {resource_id!r} changed since it was read (If-Match did not match); "
            "read it again and retry"
        )
    for other in repo.by_mailbox(wanted.mailbox):
        if other.resource_id != resource_id:
            raise Conflict(
                f"mailbox {wanted.mailbox} is already mapped to resource {other.resource_id!r}; "
                "unmap it there first"
            )
    moment = now()
    try:
        if current is None:
            created = Mapping(
                resource_id=resource_id,
                mailbox=wanted.mailbox,
                privacy=wanted.privacy,
                enabled=wanted.enabled,
                created_at=moment,
                updated_at=moment,
            )
            return PutResult(repo.create(created), created=True)
        updated = replace(
            current,
            mailbox=wanted.mailbox,
            privacy=wanted.privacy,
            enabled=wanted.enabled,
            updated_at=moment,
        )
        return PutResult(repo.replace(updated), created=False)
    except (ConflictError, NotFoundError) as exc:
        raise Conflict(
            f"mapping {resource_id!r} was changed at the same time ({exc}); retry"
        ) from None


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


def activate(svc: Services, result: PutResult) -> PutResult:
    """Start or stop sync for a mapping that was just written: subscribe (or unsubscribe) at
    once and read the mailbox fresh. A Graph failure is reported, not fatal: the mapping is
    saved, its status shows the error, and the next renewal pass tries again."""
    from sync_core import subscriptions
    from sync_core.graph import GraphError
    from sync_core.store.queues import SYNC_MAILBOX

    mapping = result.mapping
    try:
        if mapping.enabled:
            subscriptions.ensure(svc, mapping)
            svc.queues.send(SYNC_MAILBOX, {"mailbox": mapping.mailbox, "full": True})
        else:
            subscriptions.remove(svc, mapping.mailbox)
    except GraphError as error:
        svc.health.failure(mapping.resource_id, error.to_json())
        return replace(result, warnings=[error.to_json()])
    return result


def deactivate(svc: Services, mapping: Mapping) -> None:
    """After a mapping was deleted: stop its subscription (best effort, renewal cleans up)."""
    from sync_core import subscriptions
    from sync_core.graph import GraphError

    try:
        subscriptions.remove(svc, mapping.mailbox)
    except GraphError as error:
        svc.health.failure(mapping.resource_id, error.to_json())
