"""How the service reads an Outlook event as Graph shows it: its span in UTC, what a person
sees of it, and which of a projection's fields it no longer matches.
Pure; both directions use it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sync_core.domain.zones import zone

# What a person can change on a projection that the service must put back.
DRIFT_FIELDS = ("subject", "isAllDay", "showAs", "sensitivity")


def parse_graph_time(value: Mapping[str, Any]) -> datetime:
    """A Graph dateTimeTimeZone (Windows or IANA zone name) as an aware UTC datetime."""
    text = str(value["dateTime"])
    if "." in text:
        text = text[: text.index(".")]
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=zone(str(value.get("timeZone") or "UTC"))).astimezone(UTC)


def event_span(event: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """Start and end of a Graph event in UTC. All-day events count by their dates: Outlook reads
    them back as midnight to midnight whatever zone they were written or are read in
    (microsoft-graph-docs #6003, #16798), so their zone says nothing."""
    if event.get("isAllDay"):
        return _midnight(event["start"]), _midnight(event["end"])
    return parse_graph_time(event["start"]), parse_graph_time(event["end"])


def _midnight(value: Mapping[str, Any]) -> datetime:
    return datetime.combine(
        date.fromisoformat(str(value["dateTime"])[:10]), datetime.min.time(), UTC
    )


def observable_digest(event: Mapping[str, Any]) -> str:
    """What a person sees of an event and could change: title, times, all-day, showAs, privacy.

    Computed the same way from the projection the service wrote and from the event Graph shows,
    so an echo of the service's own write matches and a person's edit does not.
    """
    values: list[Any] = [event.get(name) for name in DRIFT_FIELDS]
    values += [moment.isoformat() for moment in event_span(event)]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:24]


def drifted_fields(projection: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``projection`` to write again so that ``event`` (as Graph shows it) matches
    it in everything a person sees and could change; empty when it already does."""
    changes = {
        name: projection[name]
        for name in DRIFT_FIELDS
        if name in projection
        and _shown_as(name, projection[name]) != _shown_as(name, event.get(name))
    }
    if "isAllDay" in changes or event_span(projection) != event_span(event):
        changes.update({name: projection[name] for name in ("start", "end", "isAllDay")})
    return changes


def _shown_as(name: str, value: Any) -> Any:
    """A field's value as a person sees it: Graph's enums in any case are the same value."""
    return str(value).lower() if name in ("showAs", "sensitivity") else value
