"""Mailboxes and their calendars: events, series, occurrences and exceptions.

Callers hold the tenant lock. Every mutation returns the changes it made as
`(changeType, event_id)` pairs, which the tenant turns into change notifications.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sandbox import recurrence, timeutil
from sandbox.messages import GraphError

SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
SENSITIVITY = ("normal", "personal", "private", "confidential")
IMPORTANCE = ("low", "normal", "high")
PROVIDERS = ("unknown", "teamsForBusiness", "skypeForBusiness", "skypeForConsumer")
ATTENDEE_TYPES = ("required", "optional", "resource")
MAILBOX_STATES = ("ok", "access_denied", "not_enabled")

WRITABLE = {
    "subject",
    "body",
    "start",
    "end",
    "isAllDay",
    "showAs",
    "sensitivity",
    "importance",
    "categories",
    "attendees",
    "location",
    "locations",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "recurrence",
    "singleValueExtendedProperties",
    "transactionId",
}
# Settable only by a person acting through the control API (Graph has actions for these).
CONTROL_ONLY = {"isCancelled", "organizer", "isOrganizer"}
READ_ONLY = {
    "id",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "iCalUId",
    "uid",
    "webLink",
    "type",
    "seriesMasterId",
    "originalStart",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "bodyPreview",
    "hasAttachments",
    "isDraft",
    "onlineMeeting",
    "onlineMeetingUrl",
    "responseStatus",
    "occurrenceId",
    "attachments",
    "calendar",
    "extensions",
    "instances",
    "multiValueExtendedProperties",
    "cancelledOccurrences",
    "exceptionOccurrences",
    "isCancelled",
    "organizer",
    "isOrganizer",
}

# responseType (https://learn.microsoft.com/graph/api/resources/responsestatus)
RESPONSES = frozenset(
    {"none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded"}
)
OCCURRENCE_PREFIX = "AAMkOC"
EVENT_PREFIX = "AAMkAD"
NOT_FOUND = "The specified object was not found in the store."


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def new_event_id() -> str:
    return EVENT_PREFIX + _b64(uuid.uuid4().bytes + uuid.uuid4().bytes)


def new_change_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


def occurrence_key(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def occurrence_id(master_id: str, key: str) -> str:
    return OCCURRENCE_PREFIX + _b64(f"{master_id}|{key}".encode())


def split_occurrence_id(event_id: str) -> tuple[str, str] | None:
    if not event_id.startswith(OCCURRENCE_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(event_id[len(OCCURRENCE_PREFIX) :].encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    master_id, sep, key = raw.partition("|")
    return (master_id, key) if sep else None


def html_body(content_type: str, content: str) -> str:
    """Outlook stores event bodies as HTML; text is escaped and wrapped, as Exchange does."""
    if not content:
        return ""
    if content_type == "text":
        inner = html.escape(content).replace("\r\n", "\n").replace("\n", "<br>\r\n")
    elif "<html" in content.lower():
        return content
    else:
        inner = content
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; '
        'charset=utf-8">\r\n</head>\r\n<body>\r\n' + inner + "\r\n</body>\r\n</html>\r\n"
    )


_TAG = re.compile(r"<[^>]+>")
_BREAK = re.compile(r"<br\s*/?>|</p>|</div>", re.IGNORECASE)
_HEAD = re.compile(r"<head>.*?</head>", re.IGNORECASE | re.DOTALL)


def text_body(value: str) -> str:
    stripped = _HEAD.sub("", value)
    stripped = _BREAK.sub("\n", stripped.replace("\r\n", "").replace("\n", ""))
    return html.unescape(_TAG.sub("", stripped)).strip()


def preview(value: str) -> str:
    return re.sub(r"\s+", " ", text_body(value)).strip()[:255]


_FONT = "font-family:'Segoe UI','Helvetica Neue',Helvetica,Arial,sans-serif"
_LINK = f"font-size:14px; text-decoration:underline; color:#6264a7; {_FONT}"
_RULE = (
    '<div style="width:100%"><span style="white-space:nowrap; color:#5F5F5F; opacity:.36">'
    + "_" * 80
    + "</span></div>\r\n"
)
# The Teams block Outlook writes into a meeting's body: between two rules of underscores.
TEAMS_BLOCK = re.compile(re.escape(_RULE) + r".*?" + re.escape(_RULE), re.DOTALL)


def _teams_block(join_url: str, organizer_id: str, tenant_id: str) -> str:
    """The meeting blob as Outlook/Teams puts it in the body (join link, meeting ID, passcode)."""
    digits = "".join(secrets.choice("0123456789") for _ in range(13))
    meeting_id = f"{digits[:3]} {digits[3:6]} {digits[6:9]} {digits[9:12]} {digits[12]}"
    passcode = "".join(
        secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789") for _ in range(8)
    )
    thread = join_url.split("/meetup-join/", 1)[-1].split("/", 1)[0]
    thread = thread.replace("%3a", ":").replace("%40", "@").replace(":", "_", 1)
    options = html.escape(
        f"https://teams.microsoft.com/meetingOptions/?organizerId={organizer_id}"
        f"&tenantId={tenant_id}&threadId={thread}&messageId=0&language=en-US"
    )
    return (
        _RULE + f'<div class="me-email-text" lang="en-US" style="color:#252424; {_FONT}">\r\n'
        '<div style="margin-top:24px; margin-bottom:20px"><span style="font-size:24px; '
        'color:#252424">Microsoft Teams meeting</span> </div>\r\n'
        '<div style="margin-bottom:20px">\r\n'
        '<div style="margin-top:0px; margin-bottom:0px; font-weight:bold"><span '
        'style="font-size:14px; color:#252424">Join on your computer, mobile app or room device'
        "</span> </div>\r\n"
        f'<a href="{html.escape(join_url)}" class="me-email-headline" style="font-size:14px; '
        "font-family:'Segoe UI Semibold','Segoe UI','Helvetica Neue',Helvetica,Arial,sans-serif; "
        'text-decoration:underline; color:#6264a7">Click here to join the meeting</a> </div>\r\n'
        '<div style="margin-bottom:20px; margin-top:20px">\r\n'
        '<div style="margin-bottom:4px"><span data-tid="meeting-code" style="font-size:14px; '
        f'color:#252424">Meeting ID: <span style="font-size:16px; color:#252424">{meeting_id}'
        "</span> </span><br>\r\n"
        '<span style="font-size:14px; color:#252424">Passcode: </span><span '
        f'style="font-size:16px; color:#252424">{passcode} </span>\r\n'
        '<div style="font-size:14px"><a href="https://www.microsoft.com/en-us/microsoft-teams/'
        f'download-app" class="me-email-link" style="{_LINK}">Download Teams</a> | <a '
        'href="https://www.microsoft.com/microsoft-teams/join-a-meeting" class="me-email-link" '
        f'style="{_LINK}">Join on the web</a></div>\r\n'
        "</div>\r\n</div>\r\n"
        '<div style="margin-bottom:24px; margin-top:20px"><a '
        'href="https://aka.ms/JoinTeamsMeeting" '
        f'class="me-email-link" style="{_LINK}">Learn more</a> | <a href="{options}" '
        f'class="me-email-link" style="{_LINK}">Meeting options</a> </div>\r\n'
        "</div>\r\n"
        f'<div style="font-size:14px; margin-bottom:4px; {_FONT}">\r\n</div>\r\n'
        '<div style="font-size:12px"></div>\r\n' + _RULE
    )


@dataclass
class StoredEvent:
    id: str
    kind: str  # singleInstance | seriesMaster | exception | occurrence (views only)
    created: datetime
    modified: datetime
    change_key: str
    ical_uid: str
    start: datetime  # UTC
    end: datetime  # UTC
    start_tz: str
    end_tz: str
    subject: str = ""
    body_html: str = ""
    is_all_day: bool = False
    show_as: str = "busy"
    sensitivity: str = "normal"
    importance: str = "normal"
    is_cancelled: bool = False
    categories: list[str] = field(default_factory=list)
    attendees: list[dict[str, Any]] = field(default_factory=list)
    organizer: dict[str, Any] = field(default_factory=dict)
    is_organizer: bool = True
    # The mailbox's own answer to a meeting it was invited to (set in Outlook; read-only in Graph)
    response: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    locations: list[dict[str, Any]] = field(default_factory=list)
    is_online_meeting: bool = False
    online_meeting_provider: str = "unknown"
    join_url: str | None = None
    is_reminder_on: bool = True
    reminder_minutes: int = 15
    response_requested: bool = True
    allow_new_time_proposals: bool = True
    hide_attendees: bool = False
    transaction_id: str | None = None
    ext_props: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower id -> (id, value)
    recurrence: dict[str, Any] | None = None
    series_master_id: str | None = None
    original_start: datetime | None = None
    exceptions: dict[str, StoredEvent] = field(default_factory=dict)
    deleted_occurrences: set[str] = field(default_factory=set)
    created_by: str = "person"

    def overlaps(self, start: datetime, end: datetime) -> bool:
        if self.start == self.end:
            return start <= self.start < end
        return self.start < end and self.end > start

    def touch(self) -> None:
        self.change_key = new_change_key()
        self.modified = timeutil.now()

    def raw(self) -> dict[str, Any]:
        """Everything stored, for the control API's raw view."""
        return {
            "id": self.id,
            "type": self.kind,
            "createdBy": self.created_by,
            "changeKey": self.change_key,
            "subject": self.subject,
            "start": timeutil.iso_z(self.start),
            "end": timeutil.iso_z(self.end),
            "startTimeZone": self.start_tz,
            "endTimeZone": self.end_tz,
            "isAllDay": self.is_all_day,
            "showAs": self.show_as,
            "sensitivity": self.sensitivity,
            "isCancelled": self.is_cancelled,
            "categories": list(self.categories),
            "transactionId": self.transaction_id,
            "iCalUId": self.ical_uid,
            "isOnlineMeeting": self.is_online_meeting,
            "onlineMeetingProvider": self.online_meeting_provider,
            "joinUrl": self.join_url,
            "body": self.body_html,
            "attendees": copy.deepcopy(self.attendees),
            "organizer": copy.deepcopy(self.organizer),
            "location": copy.deepcopy(self.location),
            "singleValueExtendedProperties": [
                {"id": pid, "value": value} for pid, value in self.ext_props.values()
            ],
            "recurrence": copy.deepcopy(self.recurrence),
            "seriesMasterId": self.series_master_id,
            "originalStart": timeutil.iso_z(self.original_start) if self.original_start else None,
            "exceptions": [e.raw() for e in self.exceptions.values()],
            "deletedOccurrences": sorted(self.deleted_occurrences),
            "lastModifiedDateTime": timeutil.graph_stamp(self.modified),
        }


@dataclass
class SyncState:
    """A delta round's server-side state: the window and what the client has seen."""

    start: datetime
    end: datetime
    snapshot: dict[str, str]  # view item id -> changeKey, as of this state
    seq: int
    pending: list[tuple[str, bool]] | None = None  # items still to page out: (id, removed)


@dataclass
class Mailbox:
    id: str
    address: str
    display_name: str
    kind: str = "user"  # user | room
    state: str = "ok"
    room_lists: list[str] = field(default_factory=list)
    capacity: int | None = None
    building: str | None = None
    floor: int | None = None
    events: dict[str, StoredEvent] = field(default_factory=dict)
    tx_index: dict[str, str] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)  # event id -> seq of last change
    seq: int = 0
    sync_states: dict[str, SyncState] = field(default_factory=dict)
    # Deleted Items: events moved out of the calendar; their ids stay valid (immutable ids).
    deleted: dict[str, StoredEvent] = field(default_factory=dict)
    # The calendar's allowedOnlineMeetingProviders.
    meeting_providers: list[str] = field(default_factory=lambda: ["teamsForBusiness"])

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "displayName": self.display_name,
            "kind": self.kind,
            "state": self.state,
            "roomLists": list(self.room_lists),
            "capacity": self.capacity,
            "building": self.building,
            "floor": self.floor,
            "events": len(self.events),
            "deletedItems": len(self.deleted),
            "allowedOnlineMeetingProviders": list(self.meeting_providers),
        }

    @property
    def default_meeting_provider(self) -> str:
        return "teamsForBusiness" if "teamsForBusiness" in self.meeting_providers else "unknown"

    def mark(self, event_id: str) -> None:
        self.seq += 1
        self.changed[event_id] = self.seq

    @property
    def owner(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.display_name, "address": self.address}}


# -- input ------------------------------------------------------------------------------------


def _enum(value: Any, allowed: tuple[str, ...], type_name: str) -> str:
    text = str(value)
    for option in allowed:
        if option.lower() == text.lower():
            return option
    raise GraphError(
        400,
        "RequestBodyRead",
        f"Requested value '{text}' was not found for type 'microsoft.graph.{type_name}'.",
    )


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise GraphError(
        400,
        "RequestBodyRead",
        f"Cannot convert the literal '{value}' to the expected type "
        f"'Edm.Boolean' for property '{name}'.",
    )


def _string(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise GraphError(
        400,
        "RequestBodyRead",
        f"Cannot convert the literal '{value}' to the expected type "
        f"'Edm.String' for property '{name}'.",
    )


def parse_date_time_zone(value: Any, name: str) -> tuple[datetime, str, datetime]:
    """A dateTimeTimeZone → (UTC instant, zone name, naive local wall time)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise GraphError(400, "RequestBodyRead", f"The property '{name}' needs a dateTime.")
    zone_name = str(value.get("timeZone") or "UTC")
    try:
        tz = timeutil.zone(zone_name)
    except timeutil.TimeZoneError as error:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{zone_name}'.",
        ) from error
    try:
        parsed, has_offset = timeutil.parse_iso(str(value["dateTime"]))
    except ValueError as error:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{value['dateTime']}' to the expected type "
            "'Edm.DateTime'.",
        ) from error
    instant = parsed.astimezone(UTC) if has_offset else parsed.replace(tzinfo=tz).astimezone(UTC)
    return instant, zone_name, instant.astimezone(tz).replace(tzinfo=None)


def _attendees(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise GraphError(400, "RequestBodyRead", "attendees must be an array.")
    result = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("emailAddress"), dict):
            raise GraphError(400, "RequestBodyRead", "Each attendee needs an emailAddress.")
        address = item["emailAddress"]
        result.append(
            {
                "type": _enum(item.get("type") or "required", ATTENDEE_TYPES, "attendeeType"),
                "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {
                    "name": str(address.get("name") or address.get("address") or ""),
                    "address": str(address.get("address") or ""),
                },
            }
        )
    return result


def _location(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GraphError(400, "RequestBodyRead", "location must be an object.")
    name = str(value.get("displayName") or "")
    result: dict[str, Any] = {
        "displayName": name,
        "locationType": str(value.get("locationType") or "default")[:1].lower()
        + str(value.get("locationType") or "default")[1:],
        "uniqueId": str(value.get("uniqueId") or name),
        "uniqueIdType": "private" if name else "unknown",
    }
    for key in ("address", "coordinates", "locationEmailAddress"):
        if key in value:
            result[key] = copy.deepcopy(value[key])
    return result


def _ext_props(value: Any) -> dict[str, tuple[str, str]]:
    if not isinstance(value, list):
        raise GraphError(400, "RequestBodyRead", "singleValueExtendedProperties must be an array.")
    result: dict[str, tuple[str, str]] = {}
    for item in value:
        if not isinstance(item, dict) or not item.get("id"):
            raise GraphError(400, "RequestBodyRead", "Each extended property needs an id.")
        prop_id = str(item["id"])
        if not re.match(r"^\w+\s+(\{[0-9a-fA-F-]{36}\}\s+(Name|Id)\s+\S+|0x[0-9a-fA-F]+)", prop_id):
            raise GraphError(
                400,
                "ErrorInvalidProperty",
                f"The extended property id '{prop_id}' is not valid.",
            )
        result[prop_id.lower()] = (prop_id, _string(item.get("value"), "value"))
    return result


class Writer:
    """Applies a request body to an event, with Graph's validation."""

    def __init__(self, mailbox: Mailbox, tenant_id: str, control: bool) -> None:
        self.mailbox = mailbox
        self.tenant_id = tenant_id
        self.control = control

    def check_names(self, data: dict[str, Any]) -> None:
        for name in data:
            if name.startswith("@odata.") or name in WRITABLE:
                continue
            if name in CONTROL_ONLY and self.control:
                continue
            if name in READ_ONLY:
                continue
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make "
                "sure to only use property names that are defined by the type or mark the type "
                "as open type.",
            )

    def apply(self, ev: StoredEvent, data: dict[str, Any], creating: bool) -> bool:
        """Apply fields; return whether the time or pattern changed."""
        self.check_names(data)
        if "subject" in data:
            ev.subject = _string(data["subject"], "subject")
        body_written = False
        if "body" in data:
            body = data["body"] or {}
            if not isinstance(body, dict):
                raise GraphError(400, "RequestBodyRead", "body must be an itemBody object.")
            kind = _enum(body.get("contentType") or "html", ("text", "html"), "bodyType")
            ev.body_html = html_body(kind, _string(body.get("content"), "content"))
            body_written = True
        timing_changed = self._apply_times(ev, data, creating)
        if "showAs" in data:
            ev.show_as = _enum(data["showAs"], SHOW_AS, "freeBusyStatus")
        if "sensitivity" in data:
            ev.sensitivity = _enum(data["sensitivity"], SENSITIVITY, "sensitivity")
        if "importance" in data:
            ev.importance = _enum(data["importance"], IMPORTANCE, "importance")
        if "categories" in data:
            if not isinstance(data["categories"], list):
                raise GraphError(400, "RequestBodyRead", "categories must be an array.")
            ev.categories = [_string(c, "categories") for c in data["categories"]]
        if "attendees" in data:
            ev.attendees = _attendees(data["attendees"] or [])
        if "location" in data:
            ev.location = _location(data["location"])
        if "locations" in data:
            ev.locations = [_location(v) for v in data["locations"] or []]
        for key, attr in (
            ("isReminderOn", "is_reminder_on"),
            ("responseRequested", "response_requested"),
            ("allowNewTimeProposals", "allow_new_time_proposals"),
            ("hideAttendees", "hide_attendees"),
        ):
            if key in data:
                setattr(ev, attr, _bool(data[key], key))
        if "reminderMinutesBeforeStart" in data:
            ev.reminder_minutes = int(data["reminderMinutesBeforeStart"])
        if "singleValueExtendedProperties" in data:
            ev.ext_props.update(_ext_props(data["singleValueExtendedProperties"]))
        self._apply_meeting(ev, data, creating, body_written)
        if self.control:
            if "isCancelled" in data:
                ev.is_cancelled = _bool(data["isCancelled"], "isCancelled")
            if "organizer" in data and isinstance(data["organizer"], dict):
                address = data["organizer"].get("emailAddress") or {}
                ev.organizer = {
                    "emailAddress": {
                        "name": str(address.get("name") or address.get("address") or ""),
                        "address": str(address.get("address") or ""),
                    }
                }
                ev.is_organizer = (
                    str(address.get("address") or "").lower() == self.mailbox.address.lower()
                )
            if "isOrganizer" in data:
                ev.is_organizer = _bool(data["isOrganizer"], "isOrganizer")
            answer = (data.get("responseStatus") or {}).get("response")
            if answer is not None:
                if answer not in RESPONSES:
                    raise GraphError(400, "RequestBodyRead", f"unknown response {answer!r}.")
                ev.response = str(answer)
        return timing_changed

    def _apply_times(self, ev: StoredEvent, data: dict[str, Any], creating: bool) -> bool:
        """start, end, isAllDay. An all-day event must be written at midnight in its zone and is
        stored as floating dates: start and end at 00:00 UTC of its dates."""
        was_all_day = ev.is_all_day and not creating

        def wall(instant: datetime, zone_name: str) -> datetime:
            return _local(instant, "UTC" if was_all_day else zone_name)

        start_local = end_local = None
        changed = False
        if "start" in data:
            ev.start, ev.start_tz, start_local = parse_date_time_zone(data["start"], "start")
            changed = True
        if "end" in data:
            ev.end, ev.end_tz, end_local = parse_date_time_zone(data["end"], "end")
            changed = True
        if "isAllDay" in data:
            ev.is_all_day = _bool(data["isAllDay"], "isAllDay")
            changed = True
        if start_local is None:
            start_local = wall(ev.start, ev.start_tz)
        if end_local is None:
            end_local = wall(ev.end, ev.end_tz)
        if ev.is_all_day and (changed or creating):
            if (
                start_local.time() != time(0)
                or end_local.time() != time(0)
                or end_local <= start_local
            ):
                raise GraphError(
                    400,
                    "ErrorInvalidRequest",
                    "Your request can't be completed. For an all-day event, start and end must "
                    "be at midnight and at least one day apart.",
                )
            ev.start = start_local.replace(tzinfo=UTC)
            ev.end = end_local.replace(tzinfo=UTC)
        elif was_all_day and not ev.is_all_day:
            ev.start = _to_utc(start_local, ev.start_tz)
            ev.end = _to_utc(end_local, ev.end_tz)
        if ev.end < ev.start:
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. The end time must be at or after the start time.",
            )
        return changed

    def _apply_meeting(
        self, ev: StoredEvent, data: dict[str, Any], creating: bool, body_written: bool
    ) -> None:
        """isOnlineMeeting and onlineMeetingProvider, as Exchange treats them:

        - a provider the calendar does not allow gives no meeting (201/200, isOnlineMeeting
          false, provider unknown: docs issue #9741);
        - a body written without the current join URL removes the meeting (event-update page:
          "preserve the meeting blob for online meeting");
        - body plus isOnlineMeeting true on an event that has a meeting makes a new one
          (cal.com #13823, docs issue #18896);
        - otherwise a meeting, once made, stays.
        """
        provider = None
        if "onlineMeetingProvider" in data:
            provider = _enum(data["onlineMeetingProvider"], PROVIDERS, "onlineMeetingProviderType")
        wanted = None
        if "isOnlineMeeting" in data:
            wanted = _bool(data["isOnlineMeeting"], "isOnlineMeeting")
        kept = ev.join_url is not None and (
            ev.join_url in ev.body_html or html.escape(ev.join_url) in ev.body_html
        )
        if ev.join_url is not None and body_written and not creating and (wanted or not kept):
            ev.body_html = TEAMS_BLOCK.sub("", ev.body_html)
            ev.join_url = None
            ev.is_online_meeting = False
            ev.online_meeting_provider = "unknown"
        if ev.join_url is not None:
            return  # a meeting cannot be switched off or to another provider
        if provider is not None:
            ev.online_meeting_provider = provider
        if wanted is not None:
            ev.is_online_meeting = wanted
            if wanted and provider is None:
                ev.online_meeting_provider = self.mailbox.default_meeting_provider
        if not ev.is_online_meeting:
            return
        provider = ev.online_meeting_provider
        if provider == "unknown" or provider not in self.mailbox.meeting_providers:
            ev.is_online_meeting = False
            ev.online_meeting_provider = "unknown"
            return
        if ev.online_meeting_provider == "teamsForBusiness":
            ev.join_url = self._join_url()
            ev.body_html = self._with_teams_block(
                ev.body_html, _teams_block(ev.join_url, self.mailbox.id, self.tenant_id)
            )

    def _join_url(self) -> str:
        meeting = base64.b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")
        return (
            f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{meeting}%40thread.v2/0"
            f"?context=%7b%22Tid%22%3a%22{self.tenant_id}%22%2c%22Oid%22%3a%22"
            f"{self.mailbox.id}%22%7d"
        )

    @staticmethod
    def _with_teams_block(body: str, block: str) -> str:
        if not body:
            return html_body("html", block)
        index = body.lower().rfind("</body>")
        return body[:index] + block + body[index:] if index >= 0 else body + block


# -- the calendar ----------------------------------------------------------------------------


def _ical_uid() -> str:
    return "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper()


def create_event(
    mailbox: Mailbox, data: dict[str, Any], actor: str, tenant_id: str, control: bool = False
) -> tuple[StoredEvent, list[tuple[str, str]]]:
    """Create an event; a repeated transactionId returns the existing event and no changes."""
    transaction = data.get("transactionId")
    if transaction:
        existing = mailbox.tx_index.get(str(transaction))
        found = mailbox.events.get(existing or "") or mailbox.deleted.get(existing or "")
        if found is not None:
            # Also when the event is in Deleted Items (not documented; the strict reading).
            return found, []
    stamp = timeutil.now()
    if "start" not in data or "end" not in data:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. An event needs both start and end.",
        )
    ev = StoredEvent(
        id=new_event_id(),
        kind="singleInstance",
        created=stamp,
        modified=stamp,
        change_key=new_change_key(),
        ical_uid=_ical_uid(),
        start=stamp,
        end=stamp,
        start_tz="UTC",
        end_tz="UTC",
        organizer=mailbox.owner,
        created_by=actor,
        transaction_id=str(transaction) if transaction else None,
    )
    writer = Writer(mailbox, tenant_id, control)
    writer.apply(ev, data, creating=True)
    if data.get("recurrence"):
        _set_recurrence(ev, data["recurrence"])
    mailbox.events[ev.id] = ev
    if ev.transaction_id:
        mailbox.tx_index[ev.transaction_id] = ev.id
    mailbox.mark(ev.id)
    return ev, [("created", ev.id)]


def _wall_zone(ev: StoredEvent) -> str:
    """The zone an event's stored instants are wall times in: UTC for all-day (floating) ones."""
    return "UTC" if ev.is_all_day else ev.start_tz


def _set_recurrence(ev: StoredEvent, value: Any) -> None:
    local = ev.start.astimezone(timeutil.zone(_wall_zone(ev)))
    try:
        ev.recurrence = recurrence.normalize(value, local.date(), ev.start_tz)
    except recurrence.RecurrenceError as error:
        raise GraphError(400, "ErrorInvalidRecurrence", str(error)) from error
    ev.kind = "seriesMaster"


def _occurrence_view(master: StoredEvent, original: datetime) -> StoredEvent:
    view = copy.copy(master)
    zone_name = _wall_zone(master)
    duration_local = _local(master.end, zone_name) - _local(master.start, zone_name)
    start_local = _local(original, zone_name)
    view.id = occurrence_id(master.id, occurrence_key(original))
    view.kind = "occurrence"
    view.start = original
    view.end = _to_utc(start_local + duration_local, zone_name)
    view.recurrence = None
    view.series_master_id = master.id
    view.original_start = original
    view.exceptions = {}
    view.deleted_occurrences = set()
    digest = hashlib.sha256(f"{master.id}|{view.id}".encode()).hexdigest()[:16].upper()
    view.ical_uid = master.ical_uid[:-16] + digest
    return view


def _local(instant: datetime, zone_name: str) -> datetime:
    return instant.astimezone(timeutil.zone(zone_name)).replace(tzinfo=None)


def _to_utc(local: datetime, zone_name: str) -> datetime:
    return local.replace(tzinfo=timeutil.zone(zone_name)).astimezone(UTC)


def _original_starts(master: StoredEvent, until: date) -> list[datetime]:
    assert master.recurrence is not None
    zone_name = _wall_zone(master)
    clock = _local(master.start, zone_name).time()
    return [
        _to_utc(datetime.combine(day, clock), zone_name)
        for day in recurrence.occurrence_dates(master.recurrence, until)
    ]


def instances(master: StoredEvent, start: datetime, end: datetime) -> list[StoredEvent]:
    """Occurrences and exceptions of a series that overlap [start, end)."""
    if master.recurrence is None:
        return []
    found: list[StoredEvent] = []
    span = master.end - master.start
    until = (end.astimezone(timeutil.zone(_wall_zone(master))) + timedelta(days=1)).date()
    for original in _original_starts(master, until):
        key = occurrence_key(original)
        if key in master.deleted_occurrences or key in master.exceptions:
            continue
        if original >= end or original + span + timedelta(days=1) < start:
            continue
        view = _occurrence_view(master, original)
        if view.overlaps(start, end):
            found.append(view)
    found.extend(e for e in master.exceptions.values() if e.overlaps(start, end))
    return found


def view_items(mailbox: Mailbox, start: datetime, end: datetime) -> list[StoredEvent]:
    """What calendarView shows: single instances, occurrences, exceptions; by start time."""
    items: list[StoredEvent] = []
    for ev in mailbox.events.values():
        if ev.kind == "seriesMaster":
            items.extend(instances(ev, start, end))
        elif ev.overlaps(start, end):
            items.append(ev)
    items.sort(key=lambda e: (e.start, e.end, e.id))
    return items


def find(mailbox: Mailbox, event_id: str, deleted_items: bool = False) -> StoredEvent:
    """An event, series master, exception or occurrence by id; 404 ErrorItemNotFound if none.

    With `deleted_items` an event in Deleted Items is found too, as `/users/{m}/events/{id}`
    finds it (the id addresses the mailbox, not the calendar)."""
    ev = mailbox.events.get(event_id)
    if ev is not None:
        return ev
    if deleted_items and event_id in mailbox.deleted:
        return mailbox.deleted[event_id]
    parts = split_occurrence_id(event_id)
    if parts is not None:
        master = mailbox.events.get(parts[0])
        if master is not None and master.recurrence is not None:
            key = parts[1]
            if key in master.exceptions:
                return master.exceptions[key]
            if key not in master.deleted_occurrences:
                try:
                    original = datetime.strptime(key, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                except ValueError:
                    original = None
                if original is not None:
                    until = original.astimezone(timeutil.zone(_wall_zone(master))).date()
                    if original in _original_starts(master, until):
                        return _occurrence_view(master, original)
    raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)


def update_event(
    mailbox: Mailbox,
    event_id: str,
    data: dict[str, Any],
    actor: str,
    tenant_id: str,
    control: bool = False,
    deleted_items: bool = False,
) -> tuple[StoredEvent, list[tuple[str, str]]]:
    current = find(mailbox, event_id, deleted_items)
    writer = Writer(mailbox, tenant_id, control)
    if current.id in mailbox.deleted:
        # Changed where nobody looks: no calendar view, delta or notification shows it.
        body = {k: v for k, v in data.items() if k != "recurrence"}
        writer.apply(current, body, creating=False)
        current.touch()
        return current, []
    if current.kind in ("occurrence", "exception"):
        if "recurrence" in data and data["recurrence"] is not None:
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. The recurrence of an occurrence can't be set.",
            )
        master = mailbox.events[current.series_master_id or ""]
        assert current.original_start is not None
        key = occurrence_key(current.original_start)
        target = master.exceptions.get(key)
        if target is None:
            target = copy.copy(current)
            target.kind = "exception"
            target.attendees = copy.deepcopy(current.attendees)
            target.categories = list(current.categories)
            target.ext_props = dict(current.ext_props)
            target.created_by = actor
        body = {k: v for k, v in data.items() if k != "recurrence"}
        writer.apply(target, body, creating=False)
        target.touch()
        master.exceptions[key] = target
        mailbox.mark(master.id)
        return target, [("updated", target.id), ("updated", master.id)]
    ev = current
    before = (ev.start, ev.end, ev.start_tz, ev.recurrence)
    timing = writer.apply(ev, {k: v for k, v in data.items() if k != "recurrence"}, False)
    if "recurrence" in data:
        if data["recurrence"] is None:
            ev.recurrence = None
            ev.kind = "singleInstance"
        else:
            _set_recurrence(ev, data["recurrence"])
        timing = True
    if (
        ev.kind == "seriesMaster"
        and timing
        and before
        != (
            ev.start,
            ev.end,
            ev.start_tz,
            ev.recurrence,
        )
    ):
        # As Outlook: changing a series' time or pattern drops its exceptions and deletions.
        ev.exceptions.clear()
        ev.deleted_occurrences.clear()
    ev.touch()
    mailbox.mark(ev.id)
    return ev, [("updated", ev.id)]


def delete_event(
    mailbox: Mailbox, event_id: str, deleted_items: bool = False
) -> list[tuple[str, str]]:
    """Delete as Outlook does: an occurrence is cancelled in its series; an event or a series
    moves to Deleted Items (its id stays valid). With `deleted_items`, an event already in
    Deleted Items is deleted for good."""
    current = find(mailbox, event_id, deleted_items)
    if current.id in mailbox.deleted:
        del mailbox.deleted[current.id]
        if current.transaction_id and mailbox.tx_index.get(current.transaction_id) == current.id:
            del mailbox.tx_index[current.transaction_id]
        return []
    if current.kind in ("occurrence", "exception"):
        master = mailbox.events[current.series_master_id or ""]
        assert current.original_start is not None
        key = occurrence_key(current.original_start)
        master.exceptions.pop(key, None)
        master.deleted_occurrences.add(key)
        mailbox.mark(master.id)
        return [("deleted", current.id), ("updated", master.id)]
    del mailbox.events[current.id]
    current.touch()  # a move gives a new changeKey
    mailbox.deleted[current.id] = current
    mailbox.mark(current.id)
    return [("deleted", current.id)]


# -- queries ---------------------------------------------------------------------------------

_ANY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'((?:[^']|'')*)'"
    r"(?:\s+and\s+\1/value\s+eq\s+'((?:[^']|'')*)')?\s*\)\s*$",
    re.IGNORECASE,
)
_EXPAND = re.compile(
    r"^\s*singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*id\s+eq\s+'((?:[^']|'')*)'\s*\))?"
    r"\s*$",
    re.IGNORECASE,
)


def parse_filter(text: str) -> tuple[str, str | None]:
    match = _ANY.match(text)
    if not match:
        raise GraphError(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        )
    value = match.group(3)
    return match.group(2).replace("''", "'"), value.replace("''", "'") if value else None


def matches_filter(ev: StoredEvent, prop_id: str, value: str | None) -> bool:
    found = ev.ext_props.get(prop_id.lower())
    return found is not None and (value is None or found[1] == value)


def parse_expand(text: str) -> set[str] | None:
    """Extended property ids (lower case) to expand; an empty set expands all."""
    if not text:
        return None
    match = _EXPAND.match(text)
    if not match:
        raise GraphError(
            400, "BadRequest", f"Parsing OData Select and Expand failed: could not expand '{text}'."
        )
    return {match.group(1).replace("''", "'").lower()} if match.group(1) else set()
