"""Bulk mapping of a 100-room room list through the admin API: a dry run, the real run, and the
same request again; for each the wall time and the Graph requests per mapping (reads and writes,
from the simulated tenant's request log).

    .venv/bin/python bench/bulk_mapping.py [--rooms 100]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import requests
from _stack import KEY, Stack

ROOM_LIST = "rooms.bench@contoso.example"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=100)
    args = parser.parse_args()
    stack = Stack("bulk").start()
    try:
        tenant = stack.tenant.control
        tenant.add_room_list(ROOM_LIST, "Bench")
        for n in range(args.rooms):
            tenant.add_mailbox(
                f"bench.room{n:03d}@contoso.example", kind="room", room_lists=[ROOM_LIST]
            )
        rule = {"room_list": ROOM_LIST, "resource_id_template": "room-{local}"}

        def run(name: str, body: dict[str, Any]) -> None:
            since = max((e["seq"] for e in tenant.requests()), default=0)
            started = time.perf_counter()
            answer = requests.post(
                f"{stack.base}/api/admin/mappings/bulk",
                json=body,
                headers={"x-functions-key": KEY},
                timeout=600,
            )
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
            graph = [e for e in tenant.requests(since=since) if e["kind"] == "graph"]
            writes = [e for e in graph if e["method"] in WRITES]
            counts = answer.json()["counts"]
            print(
                f"{name:<8} {elapsed:6.2f} s  {counts}  Graph requests during the call: "
                f"{len(graph)} ({len(graph) / args.rooms:.2f} per mapping), writes "
                f"{len(writes)} ({len(writes) / args.rooms:.2f} per mapping)",
                flush=True,
            )

        run("dry run", {"rule": rule, "dry_run": True})
        run("run", {"rule": rule})
        time.sleep(5)  # the queued first reads of the mailboxes finish
        run("rerun", {"rule": rule})
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
