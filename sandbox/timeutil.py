"""Dates and time zones as Microsoft Graph writes and reads them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

# The IANA names dateTimeTimeZone.timeZone accepts besides Windows names: the "Additional time
# zones" of GD api-reference/v1.0/resources/datetimetimezone.md, in its order. The page lists
# "Europe/Kyiv (Kiev)", "Asia/Toshkent (Tashkent)", "Asia/Astana (Almaty)" and
# "Asia/Yangon (Rangoon)"; both spellings are accepted. Any other IANA name (Europe/Vienna,
# Europe/Zurich, ...) is 400 TimeZoneNotSupportedException (docs issues #4758, #4242).
GRAPH_IANA_ZONES: frozenset[str] = frozenset(
    {
        "Etc/GMT+12",
        "Etc/GMT+11",
        "Pacific/Honolulu",
        "America/Anchorage",
        "America/Santa_Isabel",
        "America/Los_Angeles",
        "America/Phoenix",
        "America/Chihuahua",
        "America/Denver",
        "America/Guatemala",
        "America/Chicago",
        "America/Mexico_City",
        "America/Regina",
        "America/Bogota",
        "America/New_York",
        "America/Indiana/Indianapolis",
        "America/Caracas",
        "America/Asuncion",
        "America/Halifax",
        "America/Cuiaba",
        "America/La_Paz",
        "America/Santiago",
        "America/St_Johns",
        "America/Sao_Paulo",
        "America/Argentina/Buenos_Aires",
        "America/Cayenne",
        "America/Godthab",
        "America/Montevideo",
        "America/Bahia",
        "Etc/GMT+2",
        "Atlantic/Azores",
        "Atlantic/Cape_Verde",
        "Africa/Casablanca",
        "Etc/GMT",
        "Europe/London",
        "Atlantic/Reykjavik",
        "Europe/Berlin",
        "Europe/Budapest",
        "Europe/Paris",
        "Europe/Warsaw",
        "Africa/Lagos",
        "Africa/Windhoek",
        "Europe/Bucharest",
        "Asia/Beirut",
        "Africa/Cairo",
        "Asia/Damascus",
        "Africa/Johannesburg",
        "Europe/Kyiv",
        "Europe/Kiev",
        "Europe/Istanbul",
        "Asia/Jerusalem",
        "Asia/Amman",
        "Asia/Baghdad",
        "Europe/Kaliningrad",
        "Asia/Riyadh",
        "Africa/Nairobi",
        "Asia/Tehran",
        "Asia/Dubai",
        "Asia/Baku",
        "Europe/Moscow",
        "Indian/Mauritius",
        "Asia/Tbilisi",
        "Asia/Yerevan",
        "Asia/Kabul",
        "Asia/Karachi",
        "Asia/Toshkent",
        "Asia/Tashkent",
        "Asia/Kolkata",
        "Asia/Colombo",
        "Asia/Kathmandu",
        "Asia/Astana",
        "Asia/Almaty",
        "Asia/Dhaka",
        "Asia/Yekaterinburg",
        "Asia/Yangon",
        "Asia/Rangoon",
        "Asia/Bangkok",
        "Asia/Novosibirsk",
        "Asia/Shanghai",
        "Asia/Krasnoyarsk",
        "Asia/Singapore",
        "Australia/Perth",
        "Asia/Taipei",
        "Asia/Ulaanbaatar",
        "Asia/Irkutsk",
        "Asia/Tokyo",
        "Asia/Seoul",
        "Australia/Adelaide",
        "Australia/Darwin",
        "Australia/Brisbane",
        "Australia/Sydney",
        "Pacific/Port_Moresby",
        "Australia/Hobart",
        "Asia/Yakutsk",
        "Pacific/Guadalcanal",
        "Asia/Vladivostok",
        "Pacific/Auckland",
        "Etc/GMT-12",
        "Pacific/Fiji",
        "Asia/Magadan",
        "Pacific/Tongatapu",
        "Pacific/Apia",
        "Pacific/Kiritimati",
    }
)
# Names on the list that the IANA database spells differently.
_IANA_SPELLING = {"Asia/Toshkent": "Asia/Tashkent", "Asia/Astana": "Asia/Almaty"}
# Windows zone ids (CLDR windowsZones, as tzlocal ships it) -> IANA, matched case-insensitively.
_WINDOWS = {name.lower(): iana for name, iana in win_tz.items()}
_IANA = {name.lower(): name for name in GRAPH_IANA_ZONES}

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


class TimeZoneError(ValueError):
    pass


def zone(name: str) -> tzinfo:
    """The zone for a name Graph accepts (a Windows zone id, "UTC" or a listed IANA name);
    TimeZoneError for anything else."""
    key = (name or "").strip().lower()
    if key == "utc":
        return UTC
    iana = _WINDOWS.get(key)
    if iana is None and key in _IANA:
        listed = _IANA[key]
        iana = _IANA_SPELLING.get(listed, listed)
    if iana is None:
        raise TimeZoneError(name)
    try:
        found = ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise TimeZoneError(name) from error
    return UTC if iana in ("UTC", "Etc/UTC") else found


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
