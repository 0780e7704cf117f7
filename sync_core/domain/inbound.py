"""Pure decisions of the inbound direction: Outlook events → blockers, and drift of projections.

No I/O. Given what Outlook shows (a delta page or a full read) and what was stored and sent
before, decide which blockers to upsert, which to delete, and which of the service's own events
drifted from their booking. ``sync_core.inbound.sync`` loads state, calls this and applies the
plan.

Rules (SPEC §4): ``showAs`` busy, tentative, oof and workingElsewhere block; free, unknown and
cancelled events do not. A private, personal or confidential event never shows its title; a
``busy_only`` mapping shows no titles at all. Each occurrence of a series is its own blocker.
The service's own projections never become blockers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sync_core.clock import iso
from sync_core.domain.mapping import Filters
from sync_core.domain.outlook import event_span, observable_digest

BLOCKING = frozenset({"busy", "tentative", "oof", "workingelsewhere"})
SECRET_SENSITIVITY = frozenset({"private", "personal", "confidential"})
TRANSACTION_PREFIX = "txn:"


@dataclass(frozen=True)
class Blocker:
    """Outlook time that blocks a mapped resource: what the platform is sent (SPEC §3.3
    ``blocker.upserted``) and what the service's mirror of it keeps."""

    id: str
    mailbox: str
    resource_id: str
    event_id: str
    ical_uid: str | None
    start: datetime
    end: datetime
    all_day: bool
    show_as: str
    title: str | None
    # Digest of what the platform sees of it; the mirror keeps the one last sent, so a blocker
    # is sent again only when what the platform would see changed.
    content_hash: str = ""
    sequence: int = 0  # of the last event sent about it, so the next one is larger

    def to_json(self) -> dict[str, Any]:
        """The data of ``blocker.upserted``."""
        return {
            "id": self.id,
            # All-day blockers carry dates: Outlook keeps no zone for them.
            "start": self.start.date().isoformat() if self.all_day else iso(self.start),
            "end": self.end.date().isoformat() if self.all_day else iso(self.end),
            "all_day": self.all_day,
            "show_as": self.show_as,
            "title": self.title,
            "source": {
                "mailbox": self.mailbox,
                "event_id": self.event_id,
                "ical_uid": self.ical_uid,
            },
        }


def _content_hash(
    start: datetime, end: datetime, all_day: bool, show_as: str, title: str | None
) -> str:
    values = [start.isoformat(), end.isoformat(), all_day, show_as, title]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:24]


class Own(NamedTuple):
    """An event this service wrote: its booking, what a person sees of it, and when it is."""

    booking_id: str
    digest: str = ""  # observable digest of what was written; "" while not known yet
    start: datetime | None = None
    end: datetime | None = None
    change_key: str = ""  # the event's changeKey after this service's last write to it


@dataclass(frozen=True)
class View:
    """How one resource mapped to the mailbox sees it: its privacy and its filters."""

    resource_id: str
    privacy: str
    filters: Filters = field(default_factory=Filters)


@dataclass
class Plan:
    upserts: list[Blocker] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # blocker ids
    drifted: list[str] = field(default_factory=list)  # booking ids whose projection drifted


def blocker_id(mailbox: str, event_id: str) -> str:
    """Stable per Outlook occurrence: immutable ids make the same occurrence the same blocker."""
    return "blk_" + hashlib.sha256(f"{mailbox.lower()}\n{event_id}".encode()).hexdigest()[:32]


def to_blocker(
    mailbox: str,
    event: Mapping[str, Any],
    privacy: str,
    resource_id: str,
    filters: Filters | None = None,
) -> Blocker | None:
    """The blocker an Outlook event in ``mailbox`` makes for ``resource_id``, or None if it does
    not block (or the mapping's filters leave it out)."""
    if event.get("type") == "seriesMaster" or event.get("isCancelled"):
        return None
    if filters is not None and filters.ignores(event):
        return None
    show_as = str(event.get("showAs") or "busy")
    if show_as.lower() not in BLOCKING:
        return None
    secret = str(event.get("sensitivity") or "normal").lower() in SECRET_SENSITIVITY
    title = None if (privacy != "full" or secret) else (event.get("subject") or None)
    start, end = event_span(event)
    all_day = bool(event.get("isAllDay"))
    return Blocker(
        id=blocker_id(mailbox, str(event["id"])),
        mailbox=mailbox,
        resource_id=resource_id,
        event_id=str(event["id"]),
        ical_uid=event.get("iCalUId"),
        start=start,
        end=end,
        all_day=all_day,
        show_as=show_as,
        title=title,
        content_hash=_content_hash(start, end, all_day, show_as, title),
    )


def plan_page(
    *,
    mailbox: str,
    resource_id: str,
    privacy: str,
    items: Iterable[Mapping[str, Any]],
    stored: Mapping[str, str],
    projections: Mapping[str, Own],
    window: tuple[datetime, datetime],
    filters: Filters | None = None,
) -> Plan:
    """:func:`plan_views` for a mailbox mapped to one resource."""
    view = View(resource_id, privacy, filters or Filters())
    plans, drifted = plan_views(
        mailbox=mailbox,
        views=[view],
        items=items,
        stored={resource_id: stored},
        projections=projections,
        window=window,
    )
    plan = plans[resource_id]
    plan.drifted = drifted
    return plan


def plan_views(
    *,
    mailbox: str,
    views: Iterable[View],
    items: Iterable[Mapping[str, Any]],
    stored: Mapping[str, Mapping[str, str]],
    projections: Mapping[str, Own],
    window: tuple[datetime, datetime],
) -> tuple[dict[str, Plan], list[str]]:
    """Decide for one page of a delta round, taking its items in order: the blockers of each
    resource that reads the mailbox (its plan's upserts and deletes, by resource id), and the
    bookings whose projection drifted.

    ``items`` are Graph's: full events, or ``{"id", "@removed": {...}}`` for removed ones; the
    same event may come more than once, and the last mention wins. ``stored`` maps each
    resource id → blocker id → digest last sent; ``projections`` maps the service's own event
    ids (or ``txn:`` + transaction id, for creates not yet recorded) → (booking id, observable
    digest of what it wrote, or "" if unknown). Only blockers whose digest changed are sent
    again; an own event has drifted only if what a person sees of it changed. With no views
    (the mailbox's mappings only write to it) only drift is decided.
    """
    start, end = window
    views = list(views)
    # resource id → blocker id → its last state on this page
    final: dict[str, dict[str, Blocker | None]] = {v.resource_id: {} for v in views}
    drifted: dict[str, None] = {}  # ordered set of booking ids
    for item in items:
        event_id = str(item["id"])
        bid = blocker_id(mailbox, event_id)
        own = projections.get(event_id)
        if own is None and item.get("transactionId"):
            # Created but not yet recorded under its id: known by its transaction id.
            own = projections.get(TRANSACTION_PREFIX + str(item["transactionId"]))
        if own is not None:
            if "@removed" in item:
                # Also said of events outside the window that changed since the last round
                # (event-delta page): only a projection inside the window can have been deleted.
                if own.start is None or own.end is None or (own.start < end and start < own.end):
                    drifted[own.booking_id] = None
            elif own.digest and observable_digest(item) != own.digest:
                drifted[own.booking_id] = None  # a person edited it: restore the booking
            for view in views:
                if bid in stored.get(view.resource_id, {}):
                    # Sent as a blocker before it was known as ours (e.g. read between the
                    # create and the link write under a lost race): take that blocker back.
                    final[view.resource_id][bid] = None
            continue
        for view in views:
            blocker = (
                None
                if "@removed" in item
                else to_blocker(mailbox, item, view.privacy, view.resource_id, view.filters)
            )
            if blocker is not None and (blocker.end <= start or blocker.start >= end):
                blocker = None
            final[view.resource_id][bid] = blocker
    plans: dict[str, Plan] = {}
    for view in views:
        plan = plans[view.resource_id] = Plan()
        sent = stored.get(view.resource_id, {})
        for bid, blocker in final[view.resource_id].items():
            if blocker is None:
                if bid in sent:
                    plan.deletes.append(bid)
            elif sent.get(bid) != blocker.content_hash:
                plan.upserts.append(blocker)
    return plans, list(drifted)


def plan_full_round(
    *,
    seen: set[str],
    stored: Mapping[str, str],
) -> list[str]:
    """After a complete full read: stored blockers that Outlook no longer shows.

    Only called when the whole round was read without error, so an error or an interrupted read
    can never look like "everything was deleted".
    """
    return sorted(bid for bid in stored if bid not in seen)


def outside_window(
    blockers: Mapping[str, tuple[datetime, datetime]], window: tuple[datetime, datetime]
) -> list[str]:
    """Blockers that ended before the window starts (the window moved on)."""
    start, _ = window
    return sorted(bid for bid, (_, end) in blockers.items() if end <= start)


def missing_projections(
    projections: Mapping[str, Own], seen: set[str], window: tuple[datetime, datetime]
) -> list[str]:
    """After a complete full read: bookings whose event in this window Outlook no longer shows
    (deleted by a person while the change feed was lost). They are restored."""
    start, end = window
    missing = {
        own.booking_id
        for key, own in projections.items()
        if not key.startswith(TRANSACTION_PREFIX)
        and key not in seen
        and own.start is not None
        and own.end is not None
        and own.start < end
        and start < own.end
    }
    return sorted(missing)
