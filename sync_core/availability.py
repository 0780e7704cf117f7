"""Availability (SPEC §9): when resources and mailboxes are busy, from the service's own mirror
where it is current, else from Graph's getSchedule.

The decisions are pure (:func:`mirror_state`, :func:`graph_windows`, :func:`schedule_busy`,
:func:`mirror_busy`); :func:`availability` is the thin shell that reads storage and Graph.

A resource is answered from storage, without a Graph request, when its mapping is enabled and
reads Outlook (its blockers are mirrored), its mailbox's change feed succeeded within one safety
sweep interval plus a margin, its subscription is live, and the asked window lies inside the sync
window. Everything else (mailboxes asked by address, stale or missing mirrors, windows beyond
the sync window) goes to getSchedule, at most 20 schedules and less than 62 days a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sync_core import ncrontab
from sync_core.clock import iso, now, parse_iso, sync_window
from sync_core.domain.inbound import Blocker, Own
from sync_core.domain.outlook import parse_graph_time
from sync_core.graph import ErrorKind, GraphError
from sync_core.graph.errors import classify
from sync_core.problems import FieldError, ValidationFailed
from sync_core.store.mappings import Mapping
from sync_core.store.subscriptions import Cursor, SubscriptionRecord
from sync_core.validation import MAILBOX, MAX_ID_LENGTH, is_proper_text, parse_model

MAX_IDS = 100  # resource ids and mailboxes together, per request
MAX_WINDOW = timedelta(days=62)  # SPEC §9
# getSchedule: at most 20 schedules, and a window shorter than 62 days, per request
# (docs/sandbox.md, "getSchedule").
MAX_SCHEDULES = 20
GRAPH_WINDOW = timedelta(days=61)
INTERVAL_MINUTES = 30  # availabilityViewInterval; the view itself is not used
# The interval must be shorter than the window: shorter windows are asked for this long.
SHORTEST_GRAPH_WINDOW = timedelta(minutes=INTERVAL_MINUTES + 1)
# A mirror counts as current for one safety sweep interval (every mapping is read at least that
# often) plus this margin for the sweep's own queue and read.
FRESHNESS_MARGIN = timedelta(minutes=10)
GRAPH_CONCURRENCY = 4  # getSchedule requests in flight for one answer
STORAGE_CONCURRENCY = 8  # mailbox mirrors read at once for one answer

# freeBusyStatus values that block a slot; Graph's concept page capitalises them ("Busy").
BLOCKING = {
    "busy": "busy",
    "tentative": "tentative",
    "oof": "oof",
    "workingelsewhere": "workingElsewhere",
}

# responseCode of a schedule's own error: the availability service answers numbers for some
# (docs issue #11225: 5009, an address it cannot resolve).
SCHEDULE_CODES = {
    "5009": ErrorKind.MAILBOX_UNKNOWN,
    "errormailrecipientnotfound": ErrorKind.MAILBOX_UNKNOWN,
    "errorinvalidsmtpaddress": ErrorKind.MAILBOX_UNKNOWN,
}

Source = Literal["blocker", "booking", "graph"]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _instant(value: Any) -> datetime:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 time with an offset, like 2030-01-07T09:00:00Z")
    moment = parse_iso(value)
    if moment is None:
        raise ValueError("is not a valid time")
    return moment.astimezone(UTC)


def _resource_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be a resource id of 1 to {MAX_ID_LENGTH} characters")
    if not is_proper_text(value) or any(ord(c) < 32 for c in value):
        raise ValueError("must be printable text")
    return value


def _mailbox(value: Any) -> str:
    if not isinstance(value, str) or not MAILBOX.match(value):
        raise ValueError("must be an SMTP address, like room@contoso.com")
    return value.lower()


Instant = Annotated[datetime, BeforeValidator(_instant)]
ResourceId = Annotated[str, BeforeValidator(_resource_id)]
Address = Annotated[str, BeforeValidator(_mailbox)]


class AvailabilityRequest(BaseModel):
    """The body of ``POST /api/availability``."""

    model_config = ConfigDict(extra="forbid")

    resource_ids: list[ResourceId] = Field(default_factory=list, max_length=MAX_IDS)
    mailboxes: list[Address] = Field(default_factory=list, max_length=MAX_IDS)
    start: Instant
    end: Instant


def parse_request(body: Any) -> AvailabilityRequest:
    """The request, or :class:`ValidationFailed` naming every bad field."""
    errors: list[FieldError] = []
    try:
        request = parse_model(AvailabilityRequest, body)
    except ValidationFailed as failed:
        errors = list(failed.errors)
        request = None
    if request is not None:
        count = len(request.resource_ids) + len(request.mailboxes)
        if count == 0:
            errors.append(FieldError("resource_ids", "give resource_ids and/or mailboxes"))
        elif count > MAX_IDS:
            errors.append(
                FieldError(
                    "resource_ids",
                    f"at most {MAX_IDS} resource_ids and mailboxes together (got {count})",
                )
            )
        if request.end <= request.start:
            errors.append(FieldError("end", "must be after start"))
        elif request.end - request.start > MAX_WINDOW:
            errors.append(FieldError("end", "must be at most 62 days after start"))
    if errors:
        raise ValidationFailed(f"{len(errors)} field(s) are not valid", errors)
    assert request is not None
    return request


# -- pure decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Busy:
    start: datetime
    end: datetime
    show_as: str
    source: Source

    def to_json(self) -> dict[str, str]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "show_as": self.show_as,
            "source": self.source,
        }


@dataclass
class Item:
    """One entry of the answer: a resource (with its mailbox) or a mailbox asked by address."""

    resource_id: str | None
    mailbox: str | None
    busy: list[Busy] = field(default_factory=list)
    error: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self.resource_id is not None:
            document["resource_id"] = self.resource_id
        document["mailbox"] = self.mailbox
        document["busy"] = [b.to_json() for b in sorted(self.busy, key=_order)]
        if self.error is not None:
            document["error"] = self.error
        return document


def _order(busy: Busy) -> tuple[datetime, datetime, str]:
    return busy.start, busy.end, busy.source


def freshness(sweep_schedule: str, at: datetime) -> timedelta:
    """How old a mailbox's last successful read may be for its mirror to count as current:
    the safety sweep's interval around ``at`` plus a margin."""
    try:
        schedule = ncrontab.parse(sweep_schedule)
        first = schedule.next_after(at)
        interval = schedule.next_after(first) - first
    except ValueError:
        interval = timedelta(hours=1)
    return interval + FRESHNESS_MARGIN


def mirror_state(
    mapping: Mapping,
    cursor: Cursor,
    subscription: SubscriptionRecord | None,
    *,
    start: datetime,
    end: datetime,
    at: datetime,
    window_days: int,
    max_age: timedelta,
) -> str | None:
    """None when the mapping's mirror can answer for [start, end); else why not."""
    if not mapping.enabled:
        return "the mapping is deactivated"
    if not mapping.reads_outlook:
        return "the mapping does not read Outlook"
    if cursor.last_success is None or at - cursor.last_success > max_age:
        return "the mailbox was not read recently"
    if subscription is None or subscription.expires_at <= at:
        return "the mailbox has no live subscription"
    window_start, window_end = sync_window(at.date(), window_days)
    if start < window_start or end > window_end:
        return "the window is outside the sync window"
    return None


def mirror_busy(
    blockers: Iterable[Blocker],
    projections: dict[str, Own],
    start: datetime,
    end: datetime,
) -> list[Busy]:
    """Outlook blockers and the service's own booking events that overlap [start, end)."""
    found = [
        Busy(b.start, b.end, b.show_as, "blocker")
        for b in blockers
        if b.start < end and b.end > start
    ]
    seen: set[tuple[str, datetime, datetime]] = set()
    for key, own in projections.items():
        if key.startswith("txn:"):
            continue
        own_start, own_end = _moment(own.start), _moment(own.end)
        if own_start is None or own_end is None or not (own_start < end and own_end > start):
            continue
        if (own.booking_id, own_start, own_end) in seen:
            continue
        seen.add((own.booking_id, own_start, own_end))
        found.append(Busy(own_start, own_end, "busy", "booking"))
    return found


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_iso(value)


def graph_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) in getSchedule windows: each shorter than 62 days and longer than the
    view interval (a short window is asked for longer; its items are cut to the asked one)."""
    windows = []
    cursor = start
    while cursor < end:
        chunk_end = min(cursor + GRAPH_WINDOW, end)
        windows.append((cursor, max(chunk_end, cursor + SHORTEST_GRAPH_WINDOW)))
        cursor = chunk_end
    return windows


def chunks(addresses: Sequence[str], size: int = MAX_SCHEDULES) -> list[list[str]]:
    return [list(addresses[i : i + size]) for i in range(0, len(addresses), size)]


def schedule_busy(schedule: dict[str, Any], start: datetime, end: datetime) -> list[Busy]:
    """The blocking items of one scheduleInformation that overlap [start, end); subject and
    location are never read."""
    found = []
    for entry in schedule.get("scheduleItems") or []:
        show_as = BLOCKING.get(str(entry.get("status") or "").lower())
        if show_as is None:
            continue
        try:
            item_start = parse_graph_time(entry["start"])
            item_end = parse_graph_time(entry["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if item_start < end and item_end > start:
            found.append(Busy(item_start, item_end, show_as, "graph"))
    return found


def schedule_error(schedule: dict[str, Any], mailbox: str) -> dict[str, str] | None:
    """A schedule's own error (unknown address, access denied) as {code, message, hint}."""
    error = schedule.get("error")
    if not isinstance(error, dict):
        return None
    code = str(error.get("responseCode") or "")
    kind = SCHEDULE_CODES.get(code.lower()) or classify(code, None)
    return GraphError(
        kind=kind,
        code=code or "ScheduleError",
        detail=str(error.get("message") or ""),
        mailbox=mailbox,
    ).to_json()


def not_mapped(resource_id: str) -> dict[str, str]:
    return {
        "code": "ResourceNotMapped",
        "message": f"resource {resource_id} is not mapped to a mailbox",
        "hint": "Map it first: PUT /api/admin/mappings/{resource_id} or "
        "python -m sync_core map RESOURCE MAILBOX.",
    }


# -- the shell ---------------------------------------------------------------------------------

_pool = ThreadPoolExecutor(max_workers=GRAPH_CONCURRENCY + STORAGE_CONCURRENCY)


@dataclass
class Answer:
    items: list[Item]
    graph_requests: int = 0  # getSchedule requests this answer needed

    def to_json(self) -> dict[str, Any]:
        return {"value": [i.to_json() for i in self.items]}


def availability(svc: Any, request: AvailabilityRequest, at: datetime | None = None) -> Answer:
    """Busy times of each resource and mailbox of ``request`` (``svc``: the Services)."""
    at = at or now()
    start, end = request.start, request.end
    max_age = freshness(svc.settings.sweep_schedule, at)

    resource_ids = list(dict.fromkeys(request.resource_ids))
    found = svc.mappings.get_many(resource_ids)
    mappings = {r: found.get(r) for r in resource_ids}

    # Each mapped mailbox: is its mirror current, and if so, what it holds.
    mapped_mailboxes = list(dict.fromkeys(m.mailbox for m in mappings.values() if m))

    cursors, subscriptions = svc.both(
        lambda: svc.cursors.get_many(mapped_mailboxes),
        lambda: svc.subscriptions.by_mailboxes(mapped_mailboxes),
    )

    def read_mirror(mailbox: str) -> tuple[list[Blocker], dict[str, Own]] | None:
        cursor, subscription = cursors[mailbox], subscriptions.get(mailbox)
        readers = [m for m in mappings.values() if m and m.mailbox == mailbox]
        current = any(
            mirror_state(
                m,
                cursor,
                subscription,
                start=start,
                end=end,
                at=at,
                window_days=svc.settings.sync_window_days,
                max_age=max_age,
            )
            is None
            for m in readers
        )
        if not current:
            return None
        return svc.both(  # type: ignore[no-any-return]
            lambda: svc.blockers.in_mailbox(mailbox), lambda: svc.links.projections(mailbox)
        )

    mirrors = dict(zip(mapped_mailboxes, _each(read_mirror, mapped_mailboxes), strict=True))

    # Everything the mirror cannot answer goes to getSchedule, each mailbox once; mailboxes
    # asked by address always do.
    wanted = [mb for mb in mapped_mailboxes if mirrors[mb] is None] + list(request.mailboxes)
    wanted = list(dict.fromkeys(wanted))
    callers = [m.mailbox for m in mappings.values() if m and m.enabled]
    if wanted and not callers and not _last_caller:
        # A mailbox known to exist to make the request as: any mapped one.
        page, _ = svc.mappings.list_page(page_size=5)
        callers = [m.mailbox for m in page if m.enabled]
    schedules, requests_sent = _get_schedules(svc.graph, wanted, callers, start, end)

    items = []
    for resource_id in resource_ids:
        mapping = mappings[resource_id]
        if mapping is None:
            items.append(Item(resource_id, None, error=not_mapped(resource_id)))
            continue
        mirror = mirrors[mapping.mailbox]
        if mirror is not None:
            # The resource's own blockers: its filters decide what blocks it.
            blockers, projections = mirror
            own = [b for b in blockers if b.resource_id == resource_id]
            busy, error = mirror_busy(own, projections, start, end), None
        else:
            busy, error = schedules[mapping.mailbox]
        items.append(Item(resource_id, mapping.mailbox, list(busy), error))
    for mailbox in dict.fromkeys(request.mailboxes):
        busy, error = schedules.get(mailbox, ([], None))
        items.append(Item(None, mailbox, list(busy), error))
    return Answer(items, requests_sent)


def _each(function: Callable[[str], Any], keys: Sequence[str]) -> list[Any]:
    if len(keys) <= 1:
        return [function(k) for k in keys]
    return list(_pool.map(function, keys))


Schedules = dict[str, tuple[list[Busy], dict[str, str] | None]]


def _get_schedules(
    graph: Any, mailboxes: list[str], known: list[str], start: datetime, end: datetime
) -> tuple[Schedules, int]:
    """getSchedule for ``mailboxes`` over [start, end): 20 a request, windows under 62 days,
    a few requests at once. ``known`` mailboxes (mapped ones) are preferred as the caller."""
    if not mailboxes:
        return {}, 0
    jobs = [(chunk, window) for chunk in chunks(mailboxes) for window in graph_windows(start, end)]
    results = list(_pool.map(lambda job: _one_request(graph, job[0], job[1], known), jobs))
    found: Schedules = {mb: ([], None) for mb in mailboxes}
    seen: dict[str, set[Busy]] = {mb: set() for mb in mailboxes}
    sent = 0
    for (chunk, _), (answers, count) in zip(jobs, results, strict=True):
        sent += count
        for mailbox in chunk:
            busy, error = found[mailbox]
            schedule = answers.get(mailbox)
            if isinstance(schedule, GraphError):
                found[mailbox] = busy, error or replace(schedule, mailbox=mailbox).to_json()
                continue
            if schedule is None:
                continue
            error = error or schedule_error(schedule, mailbox)
            for entry in schedule_busy(schedule, start, end):
                if entry not in seen[mailbox]:  # an item spanning two windows comes twice
                    seen[mailbox].add(entry)
                    busy.append(entry)
            found[mailbox] = busy, error
    return found, sent


CALLER_TRIES = 3  # mailboxes tried as the request's caller before the error is the answer
_last_caller: list[str] = []  # the last mailbox a getSchedule request was made as, successfully


def _one_request(
    graph: Any, chunk: list[str], window: tuple[datetime, datetime], known: list[str]
) -> tuple[dict[str, Any], int]:
    """One getSchedule request for ``chunk``: each mailbox's scheduleInformation, or the
    GraphError that failed the whole request. The request is made as a mailbox that worked
    before, else a mapped one, else one of the chunk's; when that mailbox itself cannot be used,
    as the next."""
    callers = list(dict.fromkeys([*_last_caller, *known, *chunk]))
    sent = 0
    failure: GraphError | None = None
    for caller in callers[:CALLER_TRIES]:
        sent += 1
        try:
            value = graph.get_schedule(
                caller, chunk, window[0], window[1], interval=INTERVAL_MINUTES
            )
        except GraphError as error:
            failure = error
            if error.kind in (
                ErrorKind.MAILBOX_UNKNOWN,
                ErrorKind.MAILBOX_NOT_ENABLED,
                ErrorKind.ACCESS_DENIED,
            ):
                continue
            break
        _last_caller[:] = [caller]
        by_id: dict[str, Any] = {}
        for schedule in value:
            if isinstance(schedule, dict):
                by_id[str(schedule.get("scheduleId") or "").lower()] = schedule
        # Graph answers in the order asked; match by id, else by position.
        return {
            mb: by_id.get(mb, value[i] if i < len(value) else None) for i, mb in enumerate(chunk)
        }, sent
    assert failure is not None
    return {mb: failure for mb in chunk}, sent
