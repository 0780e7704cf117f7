"""Table layer throughput against a fresh in-memory Azurite: inserts, ETag-guarded replaces, paging.

Prints operations per second for each step and the paged read of all mappings.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.data.tables import TableServiceClient

from devhost.azurite import Azurite
from sync_core.clock import now
from sync_core.store.mappings import Mapping, MappingRepository
from sync_core.store.tables import TableStore

COUNT = 2000


def timed(label: str, count: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    print(f"{label:<34} {count:6d} in {elapsed:6.2f} s  = {count / elapsed:8.0f} /s")


def main() -> None:
    azurite = Azurite().start()
    try:
        repo = MappingRepository(
            TableStore(TableServiceClient.from_connection_string(azurite.connection_string))
        )
        moment = now()
        start = time.perf_counter()
        created = [
            repo.create(
                Mapping(f"room-{i:05d}", f"room{i}@contoso.example", "full", True, moment, moment)
            )
            for i in range(COUNT)
        ]
        timed("insert mapping", COUNT, start)
        start = time.perf_counter()
        for m in created:
            repo.replace(replace(m, privacy="busy_only"))
        timed("replace mapping (If-Match)", COUNT, start)
        start = time.perf_counter()
        pages, token, seen = 0, None, 0
        while True:
            items, token = repo.list_page(page_size=1000, continuation=token)
            pages += 1
            seen += len(items)
            if not token:
                break
        timed(f"paged read ({pages} pages of <=1000)", seen, start)
        start = time.perf_counter()
        total = sum(1 for _ in repo.all(enabled_only=True))
        timed("iterate all enabled", total, start)
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
