"""Events as Microsoft Graph returns them (v1.0 event resource)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sandbox import timeutil
from sandbox.calendar import Mailbox, StoredEvent, preview, text_body


@dataclass
class ViewOptions:
    time_zone: str = "UTC"
    body_type: str = "html"  # from Prefer: outlook.body-content-type
    expand: set[str] | None = None  # extended property ids (lower case); empty = all
    select: set[str] | None = None  # lower-case property names


def etag(ev: StoredEvent) -> str:
    return f'W/"{ev.change_key}"'


def web_link(event_id: str) -> str:
    return (
        f"https://outlook.office365.com/owa/?itemid={quote(event_id, safe='')}"
        "&exvsurl=1&path=/calendar/item"
    )


def date_time_zone(ev: StoredEvent, instant: datetime, zone: str) -> dict[str, str]:
    """A start or end as Graph reads it back. All-day events come back as midnight of their
    dates in whatever zone is asked for (Microsoft on microsoft-graph-docs #6003, #16798)."""
    if ev.is_all_day:
        return {"dateTime": instant.strftime("%Y-%m-%dT00:00:00.0000000"), "timeZone": zone}
    return {"dateTime": timeutil.graph_local(instant, zone), "timeZone": zone}


def render_event(
    ev: StoredEvent, mailbox: Mailbox, options: ViewOptions, *, typed: bool = False
) -> dict[str, Any]:
    zone = options.time_zone
    body_content = ev.body_html
    body_type = "html"
    if options.body_type == "text":
        body_content = text_body(ev.body_html)
        body_type = "text"
    result: dict[str, Any] = {}
    if typed:
        result["@odata.type"] = "#microsoft.graph.event"
    result.update(
        {
            "@odata.etag": etag(ev),
            "id": ev.id,
            "createdDateTime": timeutil.graph_stamp(ev.created),
            "lastModifiedDateTime": timeutil.graph_stamp(ev.modified),
            "changeKey": ev.change_key,
            "categories": list(ev.categories),
            "transactionId": ev.transaction_id,
            "originalStartTimeZone": ev.start_tz,
            "originalEndTimeZone": ev.end_tz,
            "iCalUId": ev.ical_uid,
            "reminderMinutesBeforeStart": ev.reminder_minutes,
            "isReminderOn": ev.is_reminder_on,
            "hasAttachments": False,
            "subject": ev.subject,
            "bodyPreview": preview(ev.body_html),
            "importance": ev.importance,
            "sensitivity": ev.sensitivity,
            "isAllDay": ev.is_all_day,
            "isCancelled": ev.is_cancelled,
            "isOrganizer": ev.is_organizer,
            "responseRequested": ev.response_requested,
            "seriesMasterId": ev.series_master_id,
            "showAs": ev.show_as,
            "type": ev.kind,
            "webLink": web_link(ev.id),
            "onlineMeetingUrl": None,
            "isOnlineMeeting": ev.is_online_meeting,
            "onlineMeetingProvider": ev.online_meeting_provider,
            "allowNewTimeProposals": ev.allow_new_time_proposals,
            "isDraft": False,
            "hideAttendees": ev.hide_attendees,
            "responseStatus": {
                "response": "organizer" if ev.is_organizer else (ev.response or "accepted"),
                "time": "0001-01-01T00:00:00Z",
            },
            "body": {"contentType": body_type, "content": body_content},
            "start": date_time_zone(ev, ev.start, zone),
            "end": date_time_zone(ev, ev.end, zone),
            "location": copy.deepcopy(ev.location)
            or {
                "displayName": "",
                "locationType": "default",
                "uniqueIdType": "unknown",
                "address": {},
                "coordinates": {},
            },
            "locations": copy.deepcopy(ev.locations),
            "recurrence": copy.deepcopy(ev.recurrence),
            "attendees": copy.deepcopy(ev.attendees),
            "organizer": copy.deepcopy(ev.organizer or mailbox.owner),
            "onlineMeeting": {"joinUrl": ev.join_url} if ev.join_url else None,
        }
    )
    if ev.original_start is not None:
        result["originalStart"] = timeutil.iso_z(ev.original_start)
    if options.expand is not None:
        props = [
            {"id": prop_id, "value": value}
            for key, (prop_id, value) in ev.ext_props.items()
            if not options.expand or key in options.expand
        ]
        if props:
            result["singleValueExtendedProperties"] = props
    if options.select:
        keep = options.select | {"id", "@odata.etag", "@odata.type"}
        result = {k: v for k, v in result.items() if k.lower() in keep}
    return result


def removed(event_id: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": event_id,
        "@removed": {"reason": "deleted"},
    }
