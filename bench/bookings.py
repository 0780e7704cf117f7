"""Bookings into Outlook: latency from the 202 to the event existing, and Graph requests per change.

Starts a fresh Azurite, the simulated tenant, the simulated platform and the local function host,
maps one room, then sends signed booking events at a fixed rate (30/s, then 100/s by default).
Latency is measured from the moment the product answered 202 to the event's creation time in
the simulated tenant (same machine, same clock). Afterwards every booking is updated once and
cancelled once, and the Graph write requests per change are counted from the tenant's log.

The function host runs two Python worker processes by default (``FUNCTIONS_WORKER_PROCESS_COUNT``,
as an app setting does in Azure), so queue work is not held to one core by the GIL.

    .venv/bin/python bench/bookings.py [--rates 30 100] [--seconds 10] [--worker-processes 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import ROOM, Stack, TenantProcess, percentile, wait_until

from sandbox.platform import PlatformSim
from sync_core.domain.booking import BOOKING_PROPERTY_ID

WARM_UP = 40


def created_at(raw: dict[str, Any]) -> float:
    text = str(raw["lastModifiedDateTime"]).rstrip("Z")
    whole, _, fraction = text.partition(".")
    moment = datetime.fromisoformat(whole + "+00:00").timestamp()
    return moment + (float("0." + fraction) if fraction else 0.0)


def booking_of(raw: dict[str, Any]) -> str | None:
    for prop in raw.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == BOOKING_PROPERTY_ID.lower():
            return str(prop.get("value"))
    return None


def created(sandbox: TenantProcess, wanted: set[str]) -> dict[str, float]:
    """Booking id → when its event was created in the simulated tenant."""
    return {
        b: created_at(raw)
        for raw in sandbox.control.events(ROOM)
        if (b := booking_of(raw)) in wanted
    }


def writes(sandbox: TenantProcess) -> dict[str, int]:
    counts = {"POST": 0, "PATCH": 0, "DELETE": 0, "GET": 0}
    for entry in sandbox.control.requests(mailbox=ROOM):
        if entry.get("kind") == "graph" and entry["method"] in counts:
            counts[entry["method"]] += 1
    return counts


def send_at_rate(
    platform: PlatformSim, events: list[dict[str, Any]], rate: float
) -> dict[str, float]:
    """Send each event at its slot; returns booking id → time the 202 arrived."""
    accepted: dict[str, float] = {}
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def send(index: int, event: dict[str, Any]) -> None:
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        answer = platform.send_booking(event)
        if answer.status_code == 202:
            with lock:
                accepted[event["data"]["id"]] = time.time()

    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, event in enumerate(events):
            pool.submit(send, i, event)
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 100.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker-processes", type=int, default=2)
    args = parser.parse_args()

    stack = Stack("bookings", args.worker_processes).start()
    sandbox, platform = stack.tenant, stack.platform
    print(f"function host log: {stack.log}")
    try:
        stack.map("room-42", ROOM)
        # Warm-up, not measured: every worker process loads its clients and signs in once.
        warm = [platform.booking_event(resource_id="room-42") for _ in range(WARM_UP)]
        warmed = set(send_at_rate(platform, warm, 10.0))
        wait_until(lambda: len(created(sandbox, warmed)) >= len(warmed), 60)
        print(
            f"bookings bench: {os.cpu_count()} cores, {args.seconds:.0f} s per rate, "
            f"{args.worker_processes} worker process(es), after {WARM_UP} warm-up bookings"
        )
        for rate in args.rates:
            sandbox.control.clear_requests()
            count = int(rate * args.seconds)
            events = [platform.booking_event(resource_id="room-42") for _ in range(count)]
            accepted = send_at_rate(platform, events, rate)
            wanted = set(accepted)

            wait_until(lambda: len(created(sandbox, wanted)) >= len(wanted), 120)  # noqa: B023
            seen = created(sandbox, wanted)
            latencies = [(seen[b] - accepted[b]) * 1000 for b in wanted if b in seen]
            # The worst latency of each second of sending: flat means the rate is sustained,
            # rising means work queues up faster than it is done.
            first = min(accepted.values())
            by_second: dict[int, float] = {}
            for b in wanted & seen.keys():
                second = int(accepted[b] - first)
                by_second[second] = max(by_second.get(second, 0.0), (seen[b] - accepted[b]) * 1000)
            creates = writes(sandbox)
            print(
                f"  {rate:5.0f}/s  {len(accepted)}/{count} accepted, {len(seen)} in Outlook; "
                f"202 → event exists: p50 {percentile(latencies, 50):6.1f} ms  "
                f"p95 {percentile(latencies, 95):6.1f} ms  "
                f"p99 {percentile(latencies, 99):6.1f} ms  "
                f"(mean {statistics.mean(latencies):.1f} ms)"
            )
            print(
                "         worst per second of sending (ms): "
                + " ".join(f"{by_second[s]:.0f}" for s in sorted(by_second))
            )
            print(
                f"         Graph requests per create: {creates['POST'] / max(1, len(seen)):.2f} "
                f"POST, {creates['GET'] / max(1, len(seen)):.2f} GET"
            )
            # One update and one cancel of each booking, at the same rate.
            sandbox.control.clear_requests()
            updates = [
                platform.booking_event(
                    resource_id="room-42", id=e["data"]["id"], version=2, title="Moved on"
                )
                for e in events
            ]
            send_at_rate(platform, updates, rate)
            wait_until(lambda: writes(sandbox)["PATCH"] >= len(updates), 120)  # noqa: B023
            time.sleep(1.0)
            patched = writes(sandbox)
            sandbox.control.clear_requests()
            cancels = [
                platform.booking_event(
                    "booking.cancelled", resource_id="room-42", id=e["data"]["id"], version=3
                )
                for e in events
            ]
            send_at_rate(platform, cancels, rate)
            wait_until(lambda: writes(sandbox)["DELETE"] >= len(cancels), 120)  # noqa: B023
            time.sleep(1.0)
            deleted = writes(sandbox)
            print(
                f"         Graph requests per update: {patched['PATCH'] / len(updates):.2f} PATCH "
                f"(+{(sum(patched.values()) - patched['PATCH']) / len(updates):.2f} other); "
                f"per cancel: {deleted['DELETE'] / len(cancels):.2f} DELETE "
                f"(+{(sum(deleted.values()) - deleted['DELETE']) / len(cancels):.2f} other)"
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
