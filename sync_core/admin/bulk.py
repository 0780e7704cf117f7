"""Bulk mapping (SPEC §9): many mappings in one request, from an explicit list or a rule (every
room of a room list, or a list of mailboxes, with a resource id made from each address), and
bulk deactivation and deletion.

Every item goes through the same path as a single ``PUT`` or ``DELETE``
(:func:`~sync_core.admin.mappings.save_mapping`, :func:`~sync_core.admin.purge.remove_mapping`),
on its own: one item's error is reported in its result and the others go on. A request that is
malformed as a whole (no list, no rule, an unknown placeholder, too many items) is refused with
400 before anything is done.

- An item whose mapping already has exactly the requested values is ``unchanged``: nothing is
  read from Graph, nothing is written, no subscription or resync is started, so repeating a
  bulk request costs no Graph request.
- A dry run validates every item and checks each mailbox through Graph as the real run would,
  and writes nothing (no mapping, no history, no health): its results predict the real run's.
  It judges each item against the stored mappings, not against the other items of the request.
- Items run a few at a time (:data:`WORKERS`); results keep the request's order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sync_core.admin import mappings as admin
from sync_core.admin.problems import GraphProblem, problem_for
from sync_core.admin.purge import remove_mapping
from sync_core.graph import ErrorKind, GraphError
from sync_core.problems import (
    Conflict,
    FieldError,
    NotFound,
    PreconditionFailed,
    Problem,
    ValidationFailed,
)
from sync_core.store.mappings import Mapping
from sync_core.validation import check_identifier, normalize_mailbox, parse_model

if TYPE_CHECKING:
    from sync_core.services import Services

MAX_ITEMS = 500  # per request: ~100 bytes an item stays far below the 256 KiB body limit
WORKERS = 4  # items handled at once (the Graph client also limits requests per mailbox)
PLACEHOLDERS = {
    "local": "the part of the address before the @",
    "address": "the whole address, lower case",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
RULE_KEYS = ("room_list", "mailboxes", "resource_id_template")

PLACES_HINT = (
    "Grant the application permission Place.Read.All (App registrations → API permissions → "
    "Microsoft Graph → Application permissions), then grant admin consent; or list the "
    "mailboxes in the rule instead of a room list."
)

Status = Literal["created", "updated", "unchanged", "deactivated", "deleted", "error"]
T = TypeVar("T")


# -- request bodies ------------------------------------------------------------------------------


def _template(value: str) -> str:
    names = _PLACEHOLDER.findall(value)
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        known = ", ".join("{" + n + "}" for n in PLACEHOLDERS)
        raise ValueError(
            f"has an unknown placeholder {{{unknown[0]}}}; the placeholders are {known}"
        )
    if "{" in _PLACEHOLDER.sub("", value) or "}" in _PLACEHOLDER.sub("", value):
        raise ValueError("has an unmatched { or }")
    if not names:
        raise ValueError("must contain a placeholder such as {local}, so that each id differs")
    return value


class MappingRule(BaseModel):
    """``rule``: the mailboxes (a room list's rooms, or listed) and how each resource id is made
    from its address. Any other key is a mapping field (``privacy``, ``enabled``, ...) given to
    every mapping the rule makes."""

    model_config = ConfigDict(extra="allow", strict=True)

    room_list: str | None = None
    mailboxes: list[Annotated[str, AfterValidator(normalize_mailbox)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ITEMS
    )
    resource_id_template: str

    @field_validator("room_list")
    @classmethod
    def _room_list(cls, value: str | None) -> str | None:
        return None if value is None else normalize_mailbox(value)

    @field_validator("resource_id_template")
    @classmethod
    def _resource_id_template(cls, value: str) -> str:
        return _template(value)

    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MappingItem(BaseModel):
    """One item of ``mappings``: its resource id, and the body of its ``PUT`` (checked on its
    own, so that one item's bad field is that item's error)."""

    model_config = ConfigDict(extra="allow", strict=True)

    resource_id: str

    def body(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BulkMappings(BaseModel):
    """Body of ``POST /api/admin/mappings/bulk``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mappings: list[MappingItem] | None = Field(default=None, max_length=MAX_ITEMS)
    rule: MappingRule | None = None
    dry_run: bool = False


class BulkResources(BaseModel):
    """Body of ``POST /api/admin/mappings/bulk-deactivate`` and ``.../bulk-delete``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    resource_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    all: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> BulkResources:
        if (self.resource_ids is None) == (not self.all):
            raise ValueError('give either resource_ids or "all": true')
        return self


# -- results -------------------------------------------------------------------------------------


@dataclass
class ItemResult:
    resource_id: str
    mailbox: str | None
    status: Status
    error: dict[str, Any] | None = None
    warnings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    purged: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "resource_id": self.resource_id,
            "mailbox": self.mailbox,
            "status": self.status,
        }
        if self.error is not None:
            document["error"] = self.error
        if self.warnings:
            document["warnings"] = self.warnings
        if self.purged is not None:
            document["purged"] = self.purged
        return document


@dataclass
class BulkReport:
    results: list[ItemResult]
    statuses: tuple[Status, ...]
    dry_run: bool = False
    remaining: int | None = None  # with "all": mappings left for another request

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(self.statuses, 0)
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "results": [r.to_json() for r in self.results],
            "counts": self.counts(),
        }
        if "created" in self.statuses:
            document["dry_run"] = self.dry_run
        if self.remaining is not None:
            document["remaining"] = self.remaining
        return document


ERROR_HINTS: dict[type[Problem], str] = {
    ValidationFailed: "Correct the fields named in errors and send the item again.",
    Conflict: "The mapping was changed at the same time: send the request again.",
    NotFound: "Check the resource id: GET /api/admin/mappings lists the mapped ones.",
    PreconditionFailed: "The mapping changed meanwhile: send the request again.",
}


def item_error(problem: Problem) -> dict[str, Any]:
    """An item's error as ``{code, message, hint}`` (and ``errors`` for a validation error)."""
    if isinstance(problem, GraphProblem):
        error: dict[str, Any] = {"code": problem.code, "message": problem.detail}
        error["hint"] = problem.hint
    else:
        hint = next(
            (h for kind, h in ERROR_HINTS.items() if isinstance(problem, kind)),
            "See the message.",
        )
        error = {"code": problem.slug, "message": problem.detail, "hint": hint}
    if problem.errors:
        error["errors"] = [{"field": e.field, "message": e.message} for e in problem.errors]
    return error


def _failed(resource_id: str, mailbox: Any, problem: Problem) -> ItemResult:
    shown = mailbox if isinstance(mailbox, str) else None
    return ItemResult(resource_id, shown, "error", item_error(problem))


def run_each(items: Sequence[T], work: Callable[[T], ItemResult]) -> list[ItemResult]:
    """``work`` for every item, a few at a time; results in the items' order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(work, items))


# -- bulk mapping --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One mapping to write: its resource id and the body of its ``PUT``."""

    resource_id: str
    body: dict[str, Any]
    duplicate: bool = False


def expand_template(template: str, address: str) -> str:
    values = {"local": address.split("@", 1)[0], "address": address}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def rule_mailboxes(svc: Services, rule: MappingRule) -> list[str]:
    """The rule's mailboxes in order, once each: listed, or the room list's rooms from Graph."""
    if rule.mailboxes is not None:
        return list(dict.fromkeys(rule.mailboxes))
    assert rule.room_list is not None
    try:
        rooms = list(svc.graph.rooms_in(rule.room_list))
    except GraphError as error:
        if error.status == 404:
            raise ValidationFailed.single(
                "rule.room_list", f"{rule.room_list} is not a room list of the tenant"
            ) from None
        if error.kind in (ErrorKind.ACCESS_DENIED, ErrorKind.PERMISSION_MISSING):
            raise GraphProblem(
                {
                    "code": error.code,
                    "message": "the app may not read room lists (Place.Read.All)",
                    "hint": PLACES_HINT,
                }
            ) from None
        raise GraphProblem(error.to_json()) from None
    addresses = [str(r.get("emailAddress") or "").strip().lower() for r in rooms]
    return list(dict.fromkeys(a for a in addresses if a))


def plan(svc: Services, request: BulkMappings) -> list[Planned]:
    """The mappings the request asks for, in its order. Raises 400 for what makes the request
    as a whole unusable (a rule's fields that are not valid, too many mappings)."""
    items: list[tuple[str, dict[str, Any]]] = []
    if request.mappings is not None:
        items = [(item.resource_id, item.body()) for item in request.mappings]
    else:
        rule = request.rule
        assert rule is not None
        fields = rule.fields()
        addresses = rule_mailboxes(svc, rule)
        if len(addresses) > MAX_ITEMS:
            raise ValidationFailed.single(
                "rule",
                f"makes {len(addresses)} mappings, more than {MAX_ITEMS} in one request; list "
                f"the mailboxes in parts of at most {MAX_ITEMS} (rule.mailboxes)",
            )
        items = [
            (expand_template(rule.resource_id_template, address), {**fields, "mailbox": address})
            for address in addresses
        ]
    seen: set[str] = set()
    planned = []
    for resource_id, body in items:
        planned.append(Planned(resource_id, body, duplicate=resource_id in seen))
        seen.add(resource_id)
    return planned


def _given(document: dict[str, Any], name: str) -> bool:
    return document.get(name) is not None


def source_errors(body: object) -> list[FieldError]:
    """Where the mappings come from: a list or a rule; a rule's room list or its mailboxes."""
    if not isinstance(body, dict):
        return []
    errors = []
    if _given(body, "mappings") == _given(body, "rule"):
        errors.append(FieldError("body", "give either mappings (a list) or rule"))
    rule = body.get("rule")
    if isinstance(rule, dict) and _given(rule, "room_list") == _given(rule, "mailboxes"):
        errors.append(FieldError("rule", "give either room_list or mailboxes"))
    return errors


def rule_field_errors(rule: object) -> list[FieldError]:
    """What is wrong with the mapping fields a rule gives every mapping (``rule.*``)."""
    if not isinstance(rule, dict):
        return []
    fields = {k: v for k, v in rule.items() if k not in RULE_KEYS}
    taken = [FieldError(f"rule.{k}", "comes from the rule") for k in ("mailbox", "resource_id")]
    errors = [e for e in taken if e.field.removeprefix("rule.") in fields]
    try:
        parse_model(admin.MappingInput, {**fields, "mailbox": "check@example.com"})
    except ValidationFailed as failed:
        errors += [FieldError(f"rule.{e.field}", e.message) for e in failed.errors]
    return errors


def _plain(value: Any) -> Any:
    """A field's value as plain data (dicts, lists, scalars), for comparing a stored mapping
    with a request."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_MISSING = object()


def same_values(wanted: admin.MappingInput, current: Mapping) -> bool:
    """Whether the stored mapping already has every value of the request (field by field over
    the request model's fields)."""
    asked = wanted.model_dump()
    return all(
        _plain(getattr(current, name, _MISSING)) == _plain(asked[name])
        for name in type(wanted).model_fields
    )


class _Checked(Exception):
    """The dry run's check passed: stop before anything is written."""


def _dry_check(svc: Services) -> Callable[[admin.MappingInput, Mapping | None], None]:
    def check(wanted: admin.MappingInput, current: Mapping | None) -> None:
        if wanted.enabled:
            try:
                svc.graph.check_mailbox(wanted.mailbox)
            except GraphError as error:
                error.mailbox = error.mailbox or wanted.mailbox
                raise problem_for(error, wanted.mailbox) from None
        raise _Checked

    return check


def map_one(svc: Services, item: Planned, dry_run: bool) -> ItemResult:
    mailbox = item.body.get("mailbox")
    if item.duplicate:
        return _failed(
            item.resource_id,
            mailbox,
            ValidationFailed.single(
                "resource_id", "appears more than once in the request; only its first is used"
            ),
        )
    try:
        check_identifier("resource_id", item.resource_id)
        wanted = parse_model(admin.MappingInput, item.body)
        mailbox = wanted.mailbox
        current = svc.mappings.get(item.resource_id)
        if current is not None and same_values(wanted, current):
            return ItemResult(item.resource_id, mailbox, "unchanged")
        if dry_run:
            with contextlib.suppress(_Checked):  # raised once the check passed
                admin.put_mapping(svc.mappings, item.resource_id, item.body, check=_dry_check(svc))
            return ItemResult(
                item.resource_id, mailbox, "created" if current is None else "updated"
            )
        result = admin.save_mapping(svc, item.resource_id, item.body)
    except Problem as problem:
        return _failed(item.resource_id, mailbox, problem)
    except GraphError as error:
        return _failed(item.resource_id, mailbox, problem_for(error, mailbox))
    return ItemResult(
        item.resource_id,
        result.mapping.mailbox,
        "created" if result.created else "updated",
        warnings=result.warnings,
    )


def bulk_map(svc: Services, body: object) -> BulkReport:
    """``POST /api/admin/mappings/bulk``."""
    errors = source_errors(body)
    if isinstance(body, dict):
        errors += rule_field_errors(body.get("rule"))
    try:
        request = parse_model(BulkMappings, body)
    except ValidationFailed as failed:
        errors = failed.errors + errors
    if errors:
        raise ValidationFailed(f"{len(errors)} field(s) are not valid", errors)
    planned = plan(svc, request)
    results = run_each(planned, lambda item: map_one(svc, item, request.dry_run))
    return BulkReport(
        results, ("created", "updated", "unchanged", "error"), dry_run=request.dry_run
    )


# -- bulk deactivate and delete ------------------------------------------------------------------


def _targets(
    svc: Services, request: BulkResources, wanted: Callable[[Mapping], bool]
) -> tuple[list[str], int | None]:
    """The resource ids to act on, and with ``all`` how many are left for another request."""
    if request.resource_ids is not None:
        return list(dict.fromkeys(request.resource_ids)), None
    ids = sorted(m.resource_id for m in svc.mappings.all() if wanted(m))
    return ids[:MAX_ITEMS], max(0, len(ids) - MAX_ITEMS)


def _input_of(mapping: Mapping) -> dict[str, Any]:
    """The ``PUT`` body that writes the mapping as it is (every field the request model has)."""
    return {
        name: _plain(getattr(mapping, name))
        for name in admin.MappingInput.model_fields
        if hasattr(mapping, name)
    }


def deactivate_one(svc: Services, resource_id: str) -> ItemResult:
    mailbox: str | None = None
    try:
        current = admin.get_mapping(svc.mappings, resource_id)
        mailbox = current.mailbox
        if not current.enabled:
            return ItemResult(resource_id, mailbox, "unchanged")
        result = admin.save_mapping(
            svc, resource_id, {**_input_of(current), "enabled": False}, if_match=current.etag
        )
    except Problem as problem:
        return _failed(resource_id, mailbox, problem)
    except GraphError as error:
        return _failed(resource_id, mailbox, problem_for(error))
    return ItemResult(resource_id, mailbox, "deactivated", warnings=result.warnings)


def bulk_deactivate(svc: Services, body: object) -> BulkReport:
    """``POST /api/admin/mappings/bulk-deactivate``: stop sync, keep every entry."""
    request = parse_model(BulkResources, body)
    ids, remaining = _targets(svc, request, lambda m: m.enabled)
    results = run_each(ids, lambda resource_id: deactivate_one(svc, resource_id))
    return BulkReport(results, ("deactivated", "unchanged", "error"), remaining=remaining)


def delete_one(svc: Services, resource_id: str, purge: bool) -> ItemResult:
    mailbox: str | None = None
    try:
        mailbox = admin.get_mapping(svc.mappings, resource_id).mailbox
        counts = remove_mapping(svc, resource_id, purge=purge)
    except Problem as problem:
        return _failed(resource_id, mailbox, problem)
    except GraphError as error:
        return _failed(resource_id, mailbox, problem_for(error))
    return ItemResult(
        resource_id, mailbox, "deleted", purged=counts.to_json() if counts is not None else None
    )


def bulk_delete(svc: Services, body: object, *, purge: bool = False) -> BulkReport:
    """``POST /api/admin/mappings/bulk-delete[?purge=true]``."""
    request = parse_model(BulkResources, body)
    ids, remaining = _targets(svc, request, lambda m: True)
    results = run_each(ids, lambda resource_id: delete_one(svc, resource_id, purge))
    return BulkReport(results, ("deleted", "error"), remaining=remaining)
