"""``POST /api/availability`` for 20 mapped rooms over 7 days: answer latency and Graph requests
per answer, once from current mirrors (resource ids) and once all through Graph's getSchedule
(the same rooms asked by address).

Starts a fresh Azurite, the simulated tenant (own process), the simulated platform and the local
function host; maps 20 rooms (the seeded ones plus ``bench.roomK@contoso.example``), puts a few
Outlook events in each, waits until every mailbox has been read, then asks ``--answers`` times
each way and prints p50/p95 of the answer time and the getSchedule requests per answer (from the
tenant's request log).

    .venv/bin/python bench/availability.py [--answers 30] [--rooms 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from _stack import KEY, Stack, percentile, wait_until

from devhost import stack as local_stack
from sandbox.client import SandboxControl
from sync_core.config import load_settings
from sync_core.services import Services

TARGET_MS = 500


def rooms(control: SandboxControl, count: int) -> list[str]:
    found = [m["address"].lower() for m in control.mailboxes() if m.get("kind") == "room"]
    k = 0
    while len(found) < count:
        k += 1
        address = f"bench.room{k}@contoso.example"
        if address not in found:
            control.add_mailbox(address, f"Bench Room {k}", kind="room")
            found.append(address)
    return found[:count]


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def measure(
    stack: local_stack.Stack, body: dict[str, object], answers: int
) -> tuple[list[float], list[int], int]:
    control = stack.tenant.control
    latencies, graph_requests, busy = [], [], 0
    session = requests.Session()
    for _ in range(answers):
        since = max((r["seq"] for r in control.requests()), default=0)
        began = time.perf_counter()
        answer = session.post(
            f"{stack.base}/api/availability",
            json=body,
            headers={"x-functions-key": KEY},
            timeout=60,
        )
        latencies.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
        busy = sum(len(item["busy"]) for item in answer.json()["value"])
        graph_requests.append(
            sum(
                1
                for r in control.requests(since=since)
                if r["path"].endswith("/calendar/getSchedule")
            )
        )
    return latencies, graph_requests, busy


def report(name: str, latencies: list[float], graph_requests: list[int], busy: int) -> None:
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    verdict = "ok" if p95 <= TARGET_MS else f"over the {TARGET_MS} ms target"
    print(
        f"{name:<18} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
        f"getSchedule requests/answer {statistics.mean(graph_requests):.1f}  "
        f"busy intervals {busy}  ({verdict})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--rooms", type=int, default=20)
    args = parser.parse_args()

    stack = Stack("availability").start()
    print(f"function host log: {stack.log}", flush=True)
    try:
        control = stack.tenant.control
        addresses = rooms(control, args.rooms)
        resource_ids = [f"res-{n}" for n in range(len(addresses))]
        for resource_id, mailbox in zip(resource_ids, addresses, strict=True):
            stack.map(resource_id, mailbox)
        today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for n, mailbox in enumerate(addresses):
            for day in range(1, 6):
                start = today + timedelta(days=day, hours=n % 5)
                control.create_event(
                    mailbox,
                    {
                        "subject": "Planning",
                        "start": {
                            "dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC",
                        },
                        "end": {
                            "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC",
                        },
                    },
                )
        svc = Services(load_settings(stack.env, Path("/nonexistent")))
        expected = len(addresses) * 5

        def mirrored() -> bool:
            read = all(svc.cursors.get(mb).last_success for mb in addresses)
            return (
                read
                and sum(
                    len(
                        svc.blockers.overlapping(
                            mb, datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
                        )
                    )
                    for mb in addresses
                )
                >= expected
            )

        if not wait_until(mirrored, 120):
            print("warning: not every mailbox was read within 120 s", flush=True)
        window = {"start": z(today), "end": z(today + timedelta(days=7))}
        print(f"{len(addresses)} mapped rooms, 7 days, {args.answers} answers each way", flush=True)
        report(
            "current mirrors",
            *measure(stack, {"resource_ids": resource_ids, **window}, args.answers),
        )
        report(
            "all through Graph",
            *measure(stack, {"mailboxes": addresses, **window}, args.answers),
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
