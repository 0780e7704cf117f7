"""What every end-to-end benchmark starts: the local stack of devhost/stack.py (Azurite, the
simulated tenant in its own process, the simulated platform and the local function host, on
free ports), and the benchmarks' small helpers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost import stack  # noqa: E402
from devhost.stack import TenantProcess  # noqa: E402

__all__ = ["KEY", "ROOM", "Stack", "TenantProcess", "percentile", "wait_until"]

KEY = "bench-key"
ROOM = "room.berlin@contoso.example"


class Stack(stack.Stack):
    """The whole product locally, with the benchmarks' function key; its state in /tmp/bench-*."""

    def __init__(self, name: str, worker_processes: int = 1) -> None:
        super().__init__(f"bench-{name}", worker_processes, function_key=KEY)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
