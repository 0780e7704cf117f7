"""Time zone names as Microsoft Graph takes and gives them.

Graph's ``dateTimeTimeZone.timeZone`` takes Windows zone names and only a short, fixed list of
IANA names (resources/datetimetimezone.md); any other IANA name is refused with 400
``TimeZoneNotSupportedException``. Bookings carry IANA names, so the service writes the Windows
name CLDR's windowsZones table gives for them (as shipped by ``tzlocal``) and reads back either.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import tz_win, win_tz

UTC_NAMES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "tzone://Microsoft/Utc"})


@cache
def windows_name(iana: str) -> str:
    """The Windows zone Outlook shows for ``iana``; "UTC" where CLDR has no mapping."""
    if iana in UTC_NAMES:
        return "UTC"
    return tz_win.get(iana) or "UTC"


@cache
def zone(name: str) -> tzinfo:
    """A zone from a Windows or IANA name as Graph returns it; UTC for names it cannot know."""
    if name in UTC_NAMES or not name:
        return UTC
    try:
        return ZoneInfo(win_tz.get(name, name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC  # the service asks Graph for UTC (Prefer: outlook.timezone="UTC")


def graph_wall_time(moment: datetime, iana: str) -> dict[str, str]:
    """``moment`` as a Graph dateTimeTimeZone in the Windows zone of ``iana``.

    The wall time is computed in the Windows zone's own rules (CLDR's representative zone), so
    Graph turns it back into exactly ``moment``. A wall time that names two instants (the hour
    repeated when clocks go back) is written in UTC instead, which names one.
    """
    name = windows_name(iana)
    tz = zone(name)
    local = moment.astimezone(tz).replace(tzinfo=None, fold=0)
    if tz.utcoffset(local) != tz.utcoffset(local.replace(fold=1)):
        name, local = "UTC", moment.astimezone(UTC).replace(tzinfo=None)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": name}
