"""Outlook into the platform: latency from a change in Outlook to the blocker at the platform,
and the notification endpoint's answer time under a steady stream of notifications.

Starts a fresh Azurite, the simulated tenant (own process), the simulated platform and the local
function host; maps one room; then
1. creates events in the room as a person would, one every ``--interval`` seconds, and measures
   the time from the tenant's change to the signed ``blocker.upserted`` arriving at the platform;
2. posts valid change notifications at 200/s for a few seconds and measures each answer time.

    .venv/bin/python bench/inbound.py [--events 30] [--interval 1.0] [--rate 200] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from _stack import ROOM, Stack, percentile, wait_until

from sync_core.config import load_settings
from sync_core.services import Services


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    stack = Stack("inbound").start()
    print(f"function host log: {stack.log}")
    try:
        stack.map("room-42", ROOM)
        time.sleep(2.0)  # the first full read of the new mapping
        stack.platform.clear()

        changed_at: dict[str, float] = {}
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(args.events):
            start = day + timedelta(days=1 + i // 8, hours=8 + i % 8)
            event = stack.tenant.control.create_event(
                ROOM,
                {
                    "subject": f"Meeting {i}",
                    "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "end": {
                        "dateTime": (start + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%S"),
                        "timeZone": "UTC",
                    },
                },
            )
            changed_at[event["id"]] = time.time()
            time.sleep(args.interval)

        def arrived() -> dict[str, float]:
            return {
                r["data"]["source"]["event_id"]: parse(r["received_at"])
                for r in stack.platform.received("blocker.upserted")
            }

        wait_until(lambda: len(arrived()) >= len(changed_at), 60)
        got = arrived()
        latencies = [(got[e] - t) * 1000 for e, t in changed_at.items() if e in got]
        # When the simulated tenant posted the notification for each event.
        notified: dict[str, float] = {}
        for delivery in stack.tenant.control.deliveries():
            sent = parse(str(delivery["time"])) - float(delivery.get("durationMs") or 0) / 1000
            for item in delivery.get("items") or []:
                event_id = str((item.get("resourceData") or {}).get("id") or "")
                if event_id in changed_at and event_id not in notified:
                    notified[event_id] = sent
        after_notification = [(got[e] - t) * 1000 for e, t in notified.items() if e in got]
        print(
            f"Outlook change → blocker at the platform ({len(latencies)}/{len(changed_at)}, "
            f"one change every {args.interval:g} s): "
            f"p50 {percentile(latencies, 50):6.1f} ms  p95 {percentile(latencies, 95):6.1f} ms  "
            f"p99 {percentile(latencies, 99):6.1f} ms"
        )
        if after_notification:
            print(
                f"notification sent → blocker at the platform ({len(after_notification)}): "
                f"p50 {percentile(after_notification, 50):6.1f} ms  "
                f"p95 {percentile(after_notification, 95):6.1f} ms  "
                f"p99 {percentile(after_notification, 99):6.1f} ms"
            )

        svc = Services(load_settings(stack.env, Path("/nonexistent")))
        record = svc.subscriptions.by_mailbox(ROOM)
        assert record is not None, "no subscription was created"
        item = {
            "subscriptionId": record.subscription_id,
            "clientState": record.client_state,
            "changeType": "updated",
            "resource": f"Users/{ROOM}/Events/AAMkBench",
            "tenantId": stack.tenant.env()["TENANT_ID"],
        }
        count = int(args.rate * args.seconds)
        answers: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()
        local = threading.local()
        begin = time.monotonic() + 0.2

        def post(index: int) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            delay = begin + index / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            answer = session.post(
                f"{stack.base}/api/graph/notifications", json={"value": [item]}, timeout=10
            )
            took = (time.perf_counter() - sent) * 1000
            with lock:
                answers.append(took)
                statuses.append(answer.status_code)

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(post, range(count)))
        elapsed = time.monotonic() - begin
        print(
            f"notification answers at {args.rate:.0f}/s ({count} in {elapsed:.1f} s, "
            f"{statuses.count(202)} answered 202): p50 {percentile(answers, 50):5.1f} ms  "
            f"p99 {percentile(answers, 99):5.1f} ms  max {max(answers):5.1f} ms"
        )
        reads = sum(
            1
            for r in stack.tenant.control.requests(mailbox=ROOM)
            if "calendarView/delta" in r["path"] and r["method"] == "GET"
        )
        print(f"  delta reads of the mailbox during the whole run: {reads}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
