"""What one anonymous request to the Graph notification route costs: storage requests and warning
log lines caused by a 1,000-item request, for unknown subscription ids and for copies of a known
one, from a fresh process and again while it remembers.

Starts a fresh Azurite, stores one mapping and its subscription, then calls the notification
handler in this process (as the function host would) and counts every request the product's
storage clients send (``StorageTransport.send``) and every warning the endpoint logs.

    .venv/bin/python bench/amplification.py [--items 1000] [--subscriptions 50] [--before REV]

``--before REV`` also measures the endpoint as it was at git revision REV (its
``sync_core/inbound/sync.py``, loaded beside the current one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from sync_core import api  # noqa: E402
from sync_core.config import load_settings  # noqa: E402
from sync_core.inbound import gate, notifications  # noqa: E402
from sync_core.services import Services  # noqa: E402
from sync_core.store.mappings import Mapping  # noqa: E402
from sync_core.store.queues import SYNC_MAILBOX  # noqa: E402
from sync_core.store.subscriptions import SubscriptionRecord  # noqa: E402
from sync_core.store.transport import StorageTransport  # noqa: E402
from sync_core.web import Request, serve  # noqa: E402

ROOM = "room.berlin@contoso.example"


class Counts(logging.Handler):
    """Storage requests sent and warnings logged since the last :meth:`reset`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.storage = 0
        self.warnings = 0
        send = StorageTransport.send

        def counted(transport: StorageTransport, request: Any, **kwargs: Any) -> Any:
            self.storage += 1
            return send(transport, request, **kwargs)

        StorageTransport.send = counted  # type: ignore[method-assign,assignment]

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings += 1

    def reset(self) -> None:
        self.storage = self.warnings = 0


def settings_env(connection_string: str) -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    return {**{k: str(v) for k, v in values.items()}, "AzureWebJobsStorage": connection_string}


def fresh_services(env: dict[str, str], module: ModuleType) -> Services:
    """A new process's services, past their first use (which creates the table and queue)."""
    svc = Services(load_settings(env, Path("/nonexistent/local.settings.json")))
    svc.__dict__["gate"] = module.NotificationGate()
    svc.tables.table(svc.subscriptions.TABLE)
    svc.queues.depth(SYNC_MAILBOX)
    return svc


def current_inbound() -> ModuleType:
    """Today's notification route, called the way ``load_inbound``'s older module is."""
    module = ModuleType(notifications.__name__)
    module.__dict__.update(
        NotificationGate=gate.NotificationGate,
        receive_notifications=lambda svc, r: api.graph_notifications(r, svc),
    )
    return module


def load_inbound(revision: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:sync_core/inbound/sync.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "inbound_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("inbound_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(
    label: str, counts: Counts, call: Callable[[], Any], results: list[tuple[str, int, int, float]]
) -> None:
    counts.reset()
    started = time.perf_counter()
    answer = call()
    elapsed = (time.perf_counter() - started) * 1000
    assert answer.status == 202, (answer.status, answer.body[:200])
    results.append((label, counts.storage, counts.warnings, elapsed))


def run(
    name: str, module: ModuleType, env: dict[str, str], counts: Counts, args: argparse.Namespace
) -> list[tuple[str, int, int, float]]:
    known = {"subscriptionId": "sub-known", "clientState": "right-state", "changeType": "updated"}

    def unknown() -> bytes:
        items = [
            {"subscriptionId": str(uuid.uuid4()), "clientState": "x", "changeType": "updated"}
            for _ in range(args.items)
        ]
        return json.dumps({"value": items}).encode()

    def post(svc: Services, body: bytes) -> Callable[[], Any]:
        request = Request("POST", "", body=body)
        return lambda: serve(lambda r: module.receive_notifications(svc, r), request)

    results: list[tuple[str, int, int, float]] = []
    forged = unknown()
    copies = json.dumps({"value": [known] * args.items}).encode()
    print(f"{name}: one request of {args.items} notifications is {len(forged) / 1024:.0f} KiB")
    svc = fresh_services(env, module)
    measure("unknown ids, fresh process", counts, post(svc, forged), results)
    measure("the same request again", counts, post(svc, forged), results)
    measure("new unknown ids at once", counts, post(svc, unknown()), results)
    time.sleep(gate.NotificationGate.LISTING_AGE)
    measure(f"new unknown ids after {gate.NotificationGate.LISTING_AGE:g} s", counts,
            post(svc, unknown()), results)  # fmt: skip
    svc = fresh_services(env, module)
    measure("copies of a known id, fresh process", counts, post(svc, copies), results)
    measure("the same request again", counts, post(svc, copies), results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--subscriptions", type=int, default=50, help="subscriptions stored")
    parser.add_argument("--before", help="git revision to measure the endpoint of, too")
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("azure").setLevel(logging.ERROR)
    counts = Counts()
    azurite = Azurite().start()
    try:
        env = settings_env(azurite.connection_string)
        setup = Services(load_settings(env, Path("/nonexistent/local.settings.json")))
        moment = datetime.now(UTC)
        setup.mappings.create(Mapping("room-42", ROOM, "full", True, moment, moment))
        expiry = moment + timedelta(days=2)
        records = [SubscriptionRecord(ROOM, "room-42", "sub-known", "right-state", expiry)] + [
            SubscriptionRecord(f"r{n}@contoso.example", f"room-{n}", f"sub-{n}", "s", expiry)
            for n in range(args.subscriptions - 1)
        ]
        setup.subscriptions.save_many(records)
        runs = [("after", current_inbound())]
        if args.before:
            runs.insert(0, (f"before ({args.before})", load_inbound(args.before)))
        for name, module in runs:
            for logger_name in (notifications.__name__, module.__name__):
                logging.getLogger(logger_name).setLevel(logging.WARNING)
                logging.getLogger(logger_name).addHandler(counts)
                logging.getLogger(logger_name).propagate = False
            results = run(name, module, env, counts, args)
            for logger_name in (notifications.__name__, module.__name__):
                logging.getLogger(logger_name).removeHandler(counts)
            print(f"  {'request':<40} {'storage requests':>16} {'warnings':>9} {'time':>9}")
            for label, storage, warnings, ms in results:
                print(f"  {label:<40} {storage:>16} {warnings:>9} {ms:>7.0f}ms")
        print(
            f"({args.subscriptions} subscriptions stored; a known id's request includes its "
            "one queued sync)"
        )
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
