"""Booking events from the platform (SPEC §3.2) and the Outlook event each booking projects to.

Pure: no I/O. ``BookingEvent`` validates a webhook body and lists every bad field;
``project`` turns a booking into the Graph event body the service writes; ``fingerprints`` hash
each projected field so an update patches only what changed and an unchanged booking costs no
Graph request at all.
"""

from __future__ import annotations

import hashlib
import html
import json
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sync_core.domain.zones import graph_wall_time, windows_name
from sync_core.validation import MAX_ID_LENGTH, MAX_VERSION, is_proper_text, normalize_mailbox

# The extended property that marks events this service owns, and the namespace for transaction
# ids. Both are fixed for the life of the product: changing them would orphan every projection.
PROPERTY_NAMESPACE = "5b7d2f5e-3c1a-4f8e-9d2b-6a4c8e0f1b37"
BOOKING_PROPERTY_ID = f"String {{{PROPERTY_NAMESPACE}}} Name BookingId"
TRANSACTION_NAMESPACE = uuid.UUID(PROPERTY_NAMESPACE)

EventType = Literal["booking.created", "booking.updated", "booking.cancelled", "booking.deleted"]
Status = Literal["confirmed", "tentative", "pending", "cancelled"]
REMOVING_TYPES = frozenset({"booking.cancelled", "booking.deleted"})


def _printable_id(value: str) -> str:
    if (
        not value
        or len(value) > MAX_ID_LENGTH
        or not is_proper_text(value)
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise ValueError(f"must be 1-{MAX_ID_LENGTH} printable characters")
    return value


def _mailbox(value: str) -> str:
    return normalize_mailbox(value)


PlatformId = Annotated[str, AfterValidator(_printable_id)]
Address = Annotated[str, AfterValidator(_mailbox)]


class Person(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str | None = Field(default=None, max_length=255)
    email: Address


class Booking(BaseModel):
    """The booking's whole current state, as the platform sends it."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: PlatformId
    # Stored as a 64-bit integer: epoch milliseconds and 64-bit row versions fit, larger is a 400.
    version: StrictInt = Field(ge=1, le=MAX_VERSION)
    resource_id: PlatformId
    status: Status = "confirmed"
    all_day: StrictBool = False  # before start/end: their format depends on it
    start: str
    end: str
    time_zone: str = "UTC"
    title: str = Field(default="Booking", max_length=255)
    notes: str | None = Field(default=None, max_length=32_000)
    organizer: Person | None = None
    guests: list[Person] = Field(default_factory=list, max_length=100)
    private: StrictBool = False
    online_meeting: StrictBool = False

    @field_validator("start", "end")
    @classmethod
    def _moment_format(cls, value: str, info: ValidationInfo) -> str:
        _moment(value, bool(info.data.get("all_day")), str(info.field_name))
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
            raise ValueError("must be an IANA time zone such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _times(self) -> Booking:
        start, end = self.start_value(), self.end_value()
        if end <= start:
            raise ValueError("end must be after start")
        return self

    def start_value(self) -> datetime | date:
        return _moment(self.start, self.all_day, "start")

    def end_value(self) -> datetime | date:
        return _moment(self.end, self.all_day, "end")

    def calendar_span(self) -> tuple[datetime, datetime]:
        """Where the booking's event sits in a calendar read: all-day events by their dates
        (Outlook reads them back as midnight to midnight, whatever their zone), others by time."""
        start, end = self.start_value(), self.end_value()
        if isinstance(start, datetime) or isinstance(end, datetime):
            return self.interval_utc()
        return (
            datetime.combine(start, datetime.min.time(), UTC),
            datetime.combine(end, datetime.min.time(), UTC),
        )

    def interval_utc(self) -> tuple[datetime, datetime]:
        """The booked time in UTC; all-day bookings run midnight to midnight in their zone."""
        start, end = self.start_value(), self.end_value()
        if isinstance(start, datetime) and isinstance(end, datetime):
            return start.astimezone(UTC), end.astimezone(UTC)
        zone = ZoneInfo(self.time_zone)
        return (
            datetime.combine(start, datetime.min.time(), zone).astimezone(UTC),
            datetime.combine(end, datetime.min.time(), zone).astimezone(UTC),
        )


class BookingEvent(BaseModel):
    """A webhook body of ``POST /api/bookings/events``."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: EventType
    timestamp: str
    data: Booking

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        _aware(value, "timestamp")
        return value

    @property
    def removes(self) -> bool:
        """True when the booking should no longer be in any calendar."""
        return self.type in REMOVING_TYPES or self.data.status == "cancelled"


def _aware(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name} must be an RFC 3339 date-time like 2026-11-23T09:00:00+01:00"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} must carry a UTC offset (Z or +01:00)")
    return moment


def _moment(value: str, all_day: bool, name: str) -> datetime | date:
    if all_day:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a date like 2026-11-23 for an all-day booking"
            ) from None
    if "T" not in value:
        raise ValueError(f"{name} must be an RFC 3339 date-time like 2026-11-23T09:00:00+01:00")
    return _aware(value, name)


# -- projection ------------------------------------------------------------------------------


def transaction_id(booking_id: str, mailbox: str, generation: int) -> str:
    """Graph's ``transactionId`` for creating this booking's event: the same on every retry.

    ``generation`` counts the events created for the booking (a move creates a new one), so a
    legitimately new event is never mistaken for a retry of an old one.
    """
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, f"{booking_id}\n{mailbox}\n{generation}"))


def project(booking: Booking, *, category: str = "", invite_guests: bool = False) -> dict[str, Any]:
    """The Outlook event (Graph JSON) that represents ``booking``.

    Times are written in the Windows zone of the booking's zone (Graph refuses most IANA names,
    and Outlook shows the zone it was written in); all-day bookings run midnight to midnight, as
    Outlook requires. Guests become attendees only with ``invite_guests`` (Outlook then sends
    them invitations); otherwise they are listed in the body.
    """
    start, end = booking.start_value(), booking.end_value()
    if booking.all_day:
        zone_name = windows_name(booking.time_zone)
        times = {
            "start": {"dateTime": f"{start.isoformat()[:10]}T00:00:00", "timeZone": zone_name},
            "end": {"dateTime": f"{end.isoformat()[:10]}T00:00:00", "timeZone": zone_name},
        }
    else:
        assert isinstance(start, datetime) and isinstance(end, datetime)
        times = {
            "start": graph_wall_time(start, booking.time_zone),
            "end": graph_wall_time(end, booking.time_zone),
        }
    lines = [booking.notes] if booking.notes else []
    if booking.organizer:
        who = booking.organizer.name or booking.organizer.email
        lines.append(f"Booked by {who} <{booking.organizer.email}>")
    if booking.guests and not invite_guests:
        guests = ", ".join(g.name or g.email for g in booking.guests)
        lines.append(f"Guests: {guests}")
    event: dict[str, Any] = {
        "subject": booking.title,
        "body": {"contentType": "text", "content": "\n\n".join(lines)},
        **times,
        "isAllDay": booking.all_day,
        "showAs": "tentative" if booking.status in ("tentative", "pending") else "busy",
        "sensitivity": "private" if booking.private else "normal",
        "categories": [category] if category else [],
        "attendees": [
            {"type": "required", "emailAddress": {"name": g.name or g.email, "address": g.email}}
            for g in booking.guests
        ]
        if invite_guests
        else [],
        "isReminderOn": False,
        "allowNewTimeProposals": False,
        "responseRequested": False,
    }
    if booking.online_meeting:
        # Teams cannot be switched off again on an event, so it is only ever turned on.
        event["isOnlineMeeting"] = True
        event["onlineMeetingProvider"] = "teamsForBusiness"
    return event


def meeting_blob(body_html: str, join_url: str | None) -> str:
    """The online meeting block Outlook put in an event's HTML body ("" if there is none).

    Graph keeps a meeting only while its block stays in the body (event update page: "preserve
    the meeting blob for online meeting"). The block is the part from the ruler of underscores
    that precedes the join link to the end of the body.
    """
    if not join_url:
        return ""
    lower = body_html.lower()
    at = max(body_html.find(join_url), body_html.find(html.escape(join_url)))
    if at < 0:
        return ""
    ruler = body_html.rfind("________", 0, at)
    begin = lower.rfind("<div", 0, ruler if ruler >= 0 else at)
    if begin < 0:
        return ""
    end = lower.find("</body>", at)
    return body_html[begin : end if end >= 0 else len(body_html)]


def body_keeping_meeting(body: dict[str, Any], blob: str) -> dict[str, Any]:
    """``body`` (text) as HTML with the meeting block after it, so the meeting survives."""
    if not blob:
        return body
    text = html.escape(str(body.get("content") or "")).replace("\n", "<br>\r\n")
    return {"contentType": "html", "content": f"<html><body><div>{text}</div>{blob}</body></html>"}


def creation_body(projection: dict[str, Any], booking_id: str, transaction: str) -> dict[str, Any]:
    """The create request: the projection plus our ownership marker and retry key."""
    return {
        **projection,
        "transactionId": transaction,
        "singleValueExtendedProperties": [{"id": BOOKING_PROPERTY_ID, "value": booking_id}],
    }


def fingerprints(projection: dict[str, Any]) -> dict[str, str]:
    """A short hash per field, so an update can send only the fields that changed."""
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for name, value in projection.items()
    }


def content_hash(prints: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()[:32]


def changed_fields(projection: dict[str, Any], applied: dict[str, str] | None) -> dict[str, Any]:
    """The fields of ``projection`` whose fingerprint differs from what was last written."""
    current = fingerprints(projection)
    applied = applied or {}
    return {
        name: projection[name] for name, digest in current.items() if applied.get(name) != digest
    }
