"""Scale: 10,000 mappings. The subscription renewal pass (Graph HTTP requests, time, peak
memory) and the initial sync fan-out (never more than 4 requests in flight per mailbox).

The simulated tenant runs in its own process (as Graph is elsewhere) with 10,000 room mailboxes
and one subscription each, all close to expiry; Azurite holds 10,000 mappings and subscription
records. ``renew_all`` then runs exactly as the ``renew_subscriptions`` timer would.

    .venv/bin/python bench/scale.py [--mappings 10000] [--fanout 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from azure.data.tables import TableServiceClient  # noqa: E402

from devhost.azurite import Azurite  # noqa: E402
from sandbox import Sandbox, SandboxControl  # noqa: E402
from sync_core.config import load_settings  # noqa: E402
from sync_core.inbound import subscriptions  # noqa: E402
from sync_core.inbound import sync as inbound  # noqa: E402
from sync_core.services import Services  # noqa: E402
from sync_core.store.mappings import PARTITION, TABLE  # noqa: E402
from sync_core.store.tables import encode_key  # noqa: E402


def batched(rows: list[dict[str, object]], size: int = 100) -> list[list[dict[str, object]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def serve_tenant(state: Path, conn: Connection) -> None:
    """The simulated tenant's process: start, say how to reach it, add the mailboxes and
    subscriptions it is sent, serve until told to stop."""
    sandbox = Sandbox(state_dir=state, seed=False).start()
    conn.send(sandbox.env())
    urls, wanted, expiration = conn.recv()
    for i, (address, sub_id, client_state) in enumerate(wanted):
        sandbox.tenant.add_mailbox(address, f"Room {i}", kind="room")
        sandbox.tenant.subscribe(
            address,
            notification_url=urls[0],
            lifecycle_url=urls[1],
            expiration=expiration,
            client_state=client_state,
            subscription_id=sub_id,
        )
    conn.send("ready")
    conn.recv()
    sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mappings", type=int, default=10_000)
    parser.add_argument("--fanout", type=int, default=200, help="mailboxes in the sync fan-out")
    args = parser.parse_args()
    count = args.mappings

    state = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    azurite = Azurite().start()
    conn, child_end = multiprocessing.get_context("spawn").Pipe()
    tenant_process = multiprocessing.get_context("spawn").Process(
        target=serve_tenant, args=(state / "m365", child_end), daemon=True
    )
    tenant_process.start()
    try:
        values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
        env = {**values, **conn.recv(), "AzureWebJobsStorage": azurite.connection_string}
        os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
        svc = Services(load_settings(env, Path("/nonexistent")))
        control = SandboxControl(env["GRAPH_ENDPOINT"], Path(env["REQUESTS_CA_BUNDLE"]))

        started = time.perf_counter()
        now = datetime.now(UTC)
        soon = now + timedelta(hours=2)  # less than half of the lifetime left: all due
        mapping_rows, sub_rows, wanted = [], [], []
        for i in range(count):
            address = f"room{i:05d}@contoso.example"
            sub_id = str(uuid.uuid4())
            wanted.append((address, sub_id, f"state-{i}"))
            mapping_rows.append(
                {
                    "PartitionKey": PARTITION,
                    "RowKey": encode_key(f"room-{i:05d}"),
                    "ResourceId": f"room-{i:05d}",
                    "Mailbox": address,
                    "Privacy": "busy_only",
                    "Enabled": True,
                    "CreatedAt": now,
                    "UpdatedAt": now,
                }
            )
            record = {
                "Mailbox": address,
                "ResourceId": f"room-{i:05d}",
                "SubscriptionId": sub_id,
                "ClientState": f"state-{i}",
                "ExpiresAt": soon,
            }
            sub_rows.append({**record, "PartitionKey": "mailbox", "RowKey": encode_key(address)})
            sub_rows.append({**record, "PartitionKey": "id", "RowKey": encode_key(sub_id)})
        conn.send(((svc.settings.notification_url, svc.settings.lifecycle_url), wanted, soon))
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        for table, rows in ((TABLE, mapping_rows), ("subscriptions", sub_rows)):
            client = service.create_table_if_not_exists(table)
            by_partition: dict[str, list[dict[str, object]]] = {}
            for row in rows:
                by_partition.setdefault(str(row["PartitionKey"]), []).append(row)
            for group in by_partition.values():
                for chunk in batched(group):
                    client.submit_transaction([("upsert", row) for row in chunk])
        assert conn.recv() == "ready"
        print(
            f"set-up: {count} mailboxes, mappings and subscriptions "
            f"in {time.perf_counter() - started:.1f} s"
        )

        control.clear_requests()
        svc.graph.tokens.token()  # sign-in is not part of the pass
        before = svc.graph.requests_sent
        tracemalloc.start()
        started = time.perf_counter()
        report = subscriptions.renew_all(svc)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sent = svc.graph.requests_sent - before
        print(
            f"renewal pass: {report.renewed} renewed, {report.created} created, "
            f"{report.recreated} recreated, {report.deleted} deleted, {report.failed} failed; "
            f"{sent} Graph HTTP requests, {elapsed:.1f} s, peak Python memory {peak / 2**20:.1f} MB"
        )

        # Initial sync fan-out: many mailboxes read at once, each with a few events.
        fanout = [f"room{i:05d}@contoso.example" for i in range(min(args.fanout, count))]
        for address in fanout:
            for hour in (8, 10, 12):
                control.create_event(
                    address,
                    {
                        "subject": "Busy",
                        "start": {
                            "dateTime": (now + timedelta(days=1)).strftime(
                                f"%Y-%m-%dT{hour:02d}:00:00"
                            ),
                            "timeZone": "UTC",
                        },
                        "end": {
                            "dateTime": (now + timedelta(days=1)).strftime(
                                f"%Y-%m-%dT{hour:02d}:30:00"
                            ),
                            "timeZone": "UTC",
                        },
                    },
                )
        control.clear_requests()
        in_flight: dict[str, int] = {}
        peak_in_flight: dict[str, int] = {}
        lock = threading.Lock()
        original = svc.graph.session.request

        def counting(method: str, url: str, **kwargs: object) -> object:
            key = next((a for a in fanout if a in url), "")
            with lock:
                in_flight[key] = in_flight.get(key, 0) + 1
                peak_in_flight[key] = max(peak_in_flight.get(key, 0), in_flight[key])
            try:
                return original(method, url, **kwargs)  # type: ignore[arg-type]
            finally:
                with lock:
                    in_flight[key] -= 1

        svc.graph.session.request = counting  # type: ignore[method-assign,assignment]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(
                pool.map(lambda a: inbound.sync_mailbox(svc, {"mailbox": a, "full": True}), fanout)
            )
        elapsed = time.perf_counter() - started
        throttled = sum(1 for r in control.requests() if r["status"] == 429)
        worst = max(peak_in_flight.get(a, 0) for a in fanout)
        blockers = sum(len(svc.blockers.in_mailbox(a)) for a in fanout)
        print(
            f"initial sync fan-out: {len(fanout)} mailboxes with 32 workers in {elapsed:.1f} s, "
            f"{blockers} blockers; most requests in flight for one mailbox: {worst}; "
            f"429 answers: {throttled}"
        )
        # 32 workers on one mailbox at once: the client holds them to Outlook's 4.
        control.clear_requests()
        peak_in_flight.clear()
        one = fanout[0]
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda _: svc.graph.check_mailbox(one), range(200)))
        throttled = sum(1 for r in control.requests() if r["status"] == 429)
        print(
            f"200 requests to one mailbox from 32 workers: most in flight {peak_in_flight[one]}; "
            f"429 answers: {throttled}"
        )
    finally:
        conn.send("stop")
        tenant_process.join(timeout=15)
        azurite.stop()


if __name__ == "__main__":
    main()
