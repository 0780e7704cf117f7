"""Once nothing changes, the product does nothing: Graph writes and platform deliveries per booking
while a synced system is left alone, running as in production.

Starts a fresh Azurite, the simulated tenant (own process), the simulated platform and the local
function host (change notifications on, the safety sweep timer every ``--sweep-seconds``), maps
two rooms (one ``busy_only``), lands one booking of each kind (timed Berlin, timed and all-day in
Europe/Vienna, which Graph does not accept by its IANA name, DST days, all-day, yesterday, beyond
the sync window, Teams, private, guests) and one person's Outlook event, waits until each booking
is synced, then watches for ``--minutes`` while the sweep runs and every mapping is resynced once
a minute. It prints, per booking kind, the Graph writes and the platform deliveries during the
watch: every figure should be 0.

    .venv/bin/python bench/quiet.py [--minutes 10] [--sweep-seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import KEY, ROOM, Stack, wait_until

from sync_core.domain.booking import BOOKING_PROPERTY_ID

ROOM_B = "berlin.havel@contoso.example"
RESOURCES = {"room-42": (ROOM, "full"), "room-43": (ROOM_B, "busy_only")}
WINDOW_DAYS = 120
WRITES = ("POST", "PATCH", "DELETE")


def _next_dst_day(zone_name: str, today: date) -> date:
    zone = ZoneInfo(zone_name)
    day = today + timedelta(days=1)
    while day < today + timedelta(days=400):
        before = datetime.combine(day, clock(0), zone).utcoffset()
        after = datetime.combine(day + timedelta(days=1), clock(0), zone).utcoffset()
        if before != after:
            return day
        day += timedelta(days=1)
    return today + timedelta(days=7)


def _timed(day: date, zone_name: str, hour: int, minutes: int = 90) -> dict[str, Any]:
    zone = ZoneInfo(zone_name)
    start = datetime.combine(day, clock(hour, 30 if hour == 2 else 0), zone)
    end = (start.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(zone)
    return {
        "all_day": False,
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "time_zone": zone_name,
    }


def _all_day(day: date, zone_name: str, days: int = 1) -> dict[str, Any]:
    return {
        "all_day": True,
        "start": day.isoformat(),
        "end": (day + timedelta(days=days)).isoformat(),
        "time_zone": zone_name,
    }


def booking_kinds(today: date) -> dict[str, dict[str, Any]]:
    """Booking kind → overrides of the simulated platform's default booking event."""
    soon = today + timedelta(days=3)
    europe_dst = _next_dst_day("Europe/Berlin", today)
    new_york_dst = _next_dst_day("America/New_York", today)
    return {
        "timed Berlin": _timed(soon, "Europe/Berlin", 9),
        "timed Vienna": _timed(soon, "Europe/Vienna", 11),
        "all-day Vienna": _all_day(soon + timedelta(days=1), "Europe/Vienna"),
        f"DST Berlin {europe_dst}": _timed(europe_dst, "Europe/Berlin", 2),
        f"DST New York {new_york_dst}": _timed(new_york_dst, "America/New_York", 1, 180),
        f"all-day DST {europe_dst}": _all_day(europe_dst, "Europe/Berlin", 2),
        "all-day Berlin": _all_day(soon + timedelta(days=2), "Europe/Berlin"),
        "all-day Sydney": _all_day(soon + timedelta(days=2), "Australia/Sydney"),
        "yesterday": _timed(today - timedelta(days=1), "Europe/Berlin", 14),
        "all-day yesterday": _all_day(today - timedelta(days=1), "America/New_York"),
        "beyond the window": _timed(today + timedelta(days=WINDOW_DAYS + 30), "Europe/Berlin", 9),
        "Teams": {**_timed(soon, "Europe/London", 15), "online_meeting": True},
        "private": {**_timed(soon, "Asia/Kolkata", 10), "private": True},
        "guests": {
            **_timed(soon, "UTC", 13),
            "guests": [
                {"name": "Alan Turing", "email": "alan@contoso.example"},
                {"name": "Grace Hopper", "email": "grace@contoso.example"},
            ],
        },
        "busy_only room, tentative": {
            **_timed(soon, "Europe/Berlin", 16),
            "resource_id": "room-43",
            "status": "tentative",
        },
    }


def booking_of(raw: dict[str, Any]) -> str | None:
    for prop in raw.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == BOOKING_PROPERTY_ID.lower():
            return str(prop.get("value"))
    return None


def resync(stack: Stack, resource_id: str) -> int:
    answer = requests.post(
        f"{stack.base}/api/admin/mappings/{resource_id}/resync",
        headers={"x-functions-key": KEY},
        timeout=60,
    )
    return answer.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sweep-seconds", type=int, default=20, choices=(5, 10, 15, 20, 30, 60))
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    args = parser.parse_args()

    stack = Stack("quiet")
    stack.values.update(
        {
            "SWEEP_SCHEDULE": f"*/{args.sweep_seconds} * * * * *",
            "SYNC_WINDOW_DAYS": str(WINDOW_DAYS),
            "RETRY_BASE_SECONDS": "2",
        }
    )
    stack.start()
    tenant, platform = stack.tenant.control, stack.platform
    print(f"function host log: {stack.log}")
    try:
        for resource_id, (mailbox, privacy) in RESOURCES.items():
            stack.map(resource_id, mailbox, privacy)
        today = datetime.now(UTC).date()
        kinds = booking_kinds(today)
        ids: dict[str, str] = {}  # booking id → kind
        for kind, overrides in kinds.items():
            event = platform.booking_event(**{"resource_id": "room-42", **overrides})
            answer = platform.send_booking(event)
            if answer.status_code != 202:
                print(f"  {kind}: the intake answered {answer.status_code} {answer.text[:200]}")
            ids[event["data"]["id"]] = kind
        # A person's own event in each room: it must become a blocker once, then stay quiet.
        person = {
            "subject": "Dentist",
            "start": {"dateTime": f"{today + timedelta(days=5)}T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{today + timedelta(days=5)}T11:00:00", "timeZone": "UTC"},
        }
        for mailbox, _ in RESOURCES.values():
            tenant.create_event(mailbox, person)

        def outcome() -> dict[str, str]:
            done: dict[str, str] = {}
            for record in platform.received():
                booking_id = (record["data"] or {}).get("booking_id")
                if booking_id in ids and record["type"] in ("booking.synced", "booking.failed"):
                    done[booking_id] = record["type"]
            return done

        landed = wait_until(lambda: len(outcome()) >= len(ids), 120)
        blockers = wait_until(
            lambda: len(platform.received("blocker.upserted")) >= len(RESOURCES), 60
        )
        states = outcome()
        failed = {b: s for b, s in states.items() if s != "booking.synced"}
        print(
            f"landed {len(states)}/{len(ids)} bookings ({len(failed)} failed)"
            + ("" if landed else " before the timeout")
            + f"; {len(platform.received('blocker.upserted'))} blockers sent"
            + ("" if blockers else " (fewer than expected)")
        )
        # Let the first rounds settle (notifications of our own writes, first sweep).
        time.sleep(max(5.0, args.sweep_seconds + 2.0))

        tenant.clear_requests()
        platform.clear()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        resyncs = 0
        next_resync = started  # one at once, then every --resync-seconds
        event_owner: dict[str, str] = {}
        while time.monotonic() < deadline:
            for mailbox, _ in RESOURCES.values():
                for raw in tenant.events(mailbox):
                    owner = booking_of(raw)
                    if owner is not None:
                        event_owner[str(raw["id"])] = owner
            if time.monotonic() >= next_resync:
                for resource_id in RESOURCES:
                    status = resync(stack, resource_id)
                    if status != 202:
                        print(f"  resync of {resource_id} answered {status}")
                resyncs += 1
                next_resync += args.resync_seconds
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        time.sleep(3.0)  # the last resync's work

        writes: Counter[str] = Counter()
        reads = 0
        for entry in tenant.requests(kind="graph"):
            path = str(entry["path"]).split("?", 1)[0]
            if "delta" in path and entry["method"] == "GET":
                reads += 1
            if entry["method"] not in WRITES or not entry.get("mailbox") or "/events" not in path:
                continue
            event_id = path.rsplit("/", 1)[-1]
            owner = event_owner.get(event_id)
            writes[ids.get(owner, "?") if owner else "unattributed (create or unknown event)"] += 1
        deliveries: Counter[str] = Counter()
        types: Counter[str] = Counter()
        for record in platform.received():
            data = record["data"] or {}
            types[str(record["type"])] += 1
            booking_id = data.get("booking_id")
            deliveries[ids.get(booking_id, "?") if booking_id else "blockers"] += 1

        minutes = (time.monotonic() - started) / 60
        print(
            f"watched {minutes:.1f} min: sweep every {args.sweep_seconds} s, {resyncs} resync(s) "
            f"of {len(RESOURCES)} mappings, {reads} delta page reads"
        )
        print(f"  {'booking kind':<34} {'state':<15} {'writes':>6} {'deliveries':>10}")
        for booking_id, kind in ids.items():
            state = states.get(booking_id, "not synced").replace("booking.", "")
            print(f"  {kind:<34} {state:<15} {writes[kind]:>6} {deliveries[kind]:>10}")
        for other in ("unattributed (create or unknown event)", "?"):
            if writes[other]:
                print(f"  {other:<50} {writes[other]:>6}")
        print(f"  {'blockers (events of people)':<50} {'':>6} {deliveries['blockers']:>10}")
        total_writes, total_deliveries = sum(writes.values()), sum(deliveries.values())
        print(
            f"  per booking: {total_writes / len(ids):.2f} Graph writes, "
            f"{total_deliveries / len(ids):.2f} platform deliveries (expected 0 and 0)"
        )
        if types:
            print("  deliveries by type: " + ", ".join(f"{n} {t}" for t, n in types.items()))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
