"""Dates and time zones as Microsoft Graph writes and reads them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Windows time zone names Outlook uses, mapped to IANA (CLDR windowsZones, the common ones).
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "E. Australia Standard Time": "Australia/Brisbane",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "Canada Central Standard Time": "America/Regina",
    "Central America Standard Time": "America/Guatemala",
    "SA Pacific Standard Time": "America/Bogota",
    "Mexico Standard Time": "America/Mexico_City",
}

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


class TimeZoneError(ValueError):
    pass


def zone(name: str) -> tzinfo:
    """The zone for an IANA or Windows name; TimeZoneError when neither is known."""
    key = (name or "").strip()
    if not key:
        raise TimeZoneError(name)
    if key.upper() in ("UTC", "GMT", "ETC/UTC", "Z"):
        return UTC
    mapped = WINDOWS_ZONES.get(key)
    if mapped is None:
        for windows, iana in WINDOWS_ZONES.items():
            if windows.lower() == key.lower():
                mapped = iana
                break
    try:
        found = ZoneInfo(mapped or key)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise TimeZoneError(name) from error
    return UTC if str(found) == "UTC" else found


def parse_iso(text: str) -> tuple[datetime, bool]:
    """Parse an ISO 8601 date-time; return it and whether it carried an offset."""
    match = _ISO.match((text or "").strip())
    if not match:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    value = datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro
    )
    if offset is None:
        return value, False
    if offset == "Z":
        return value.replace(tzinfo=UTC), True
    sign = 1 if offset[0] == "+" else -1
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value.replace(tzinfo=UTC) - sign * delta, True


def parse_instant(text: str) -> datetime:
    """A query-string instant: its offset if it has one, else UTC (as calendarView reads it)."""
    value, has_offset = parse_iso(text)
    return value.astimezone(UTC) if has_offset else value.replace(tzinfo=UTC)


def from_graph(date_time: str, time_zone: str) -> datetime:
    """A Graph dateTimeTimeZone to an aware UTC instant."""
    value, has_offset = parse_iso(date_time)
    if has_offset:
        return value.astimezone(UTC)
    return value.replace(tzinfo=zone(time_zone)).astimezone(UTC)


def graph_local(instant: datetime, time_zone: str) -> str:
    """Format an instant as Graph does in dateTimeTimeZone: local wall time, 7 fraction digits."""
    local = instant.astimezone(zone(time_zone)).replace(tzinfo=None)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0"


def graph_stamp(instant: datetime) -> str:
    """createdDateTime style: UTC with 7 fraction digits and Z."""
    value = instant.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z"


def graph_offset_stamp(instant: datetime) -> str:
    """subscriptionExpirationDateTime style in notifications: 7 fraction digits and an offset."""
    value = instant.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0+00:00"


def entra_stamp(instant: datetime) -> str:
    """Entra's `timestamp` in error bodies: 2026-11-22 10:00:00Z."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso_z(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


def parse_date(text: str) -> date:
    return date.fromisoformat(text[:10])
