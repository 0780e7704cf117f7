"""Timers as singletons across instances: one lease per timer function, kept in Azurite.

When a function app runs on several instances, Azure runs each timer function on one instance
only: the timer trigger takes a storage lock (a blob lease in the ``azure-webjobs-hosts``
container), renews it while it holds it, and another instance takes it over once it lapses
("Timer trigger for Azure Functions", sections "Scale-out" and "Function apps sharing Storage":
https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#scale-out).

Locally azure-storage-blob is not installed, so the lease is an entity in the table
``devhostlocks`` (partition: the host id, row: the function name) that is only ever written with
its last ETag:

- ``owner`` — the instance that holds it; ``expires`` — epoch milliseconds; ``occurrence`` — the
  last schedule occurrence that was run (ISO 8601, UTC, fixed width, so text order is time order).
- An instance runs an occurrence only after an ETag-guarded write that takes (or keeps) the lease
  and raises ``occurrence`` to it: two instances cannot both win the write, and an occurrence
  already recorded is never run again, so each occurrence runs on exactly one instance, also
  while the lease changes hands.
- The holder renews every third of the lease period, also while its function runs (so no other
  instance starts the timer meanwhile: Azure does not start it again while an invocation is still
  running), and releases the lease when it stops cleanly. If the holder dies, the lease lapses
  and the first instance to reach an occurrence after that takes it over: within one lease
  period (15 s, ``DEVHOST_TIMER_LEASE_SECONDS``) plus the schedule's interval.

Only used with ``DEVHOST_INSTANCES`` above 1; a single instance runs its timers without a lease.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from devhost.functions import log
from sync_core.config import ConfigError
from sync_core.store.tables import ConflictError, NotFoundError, TableStore, encode_key

LOCK_TABLE = "devhostlocks"
LEASE_SETTING = "DEVHOST_TIMER_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60


def lease_seconds() -> int:
    """``DEVHOST_TIMER_LEASE_SECONDS``: 2 to 60, default 15 (a blob lease's shortest period)."""
    raw = os.environ.get(LEASE_SETTING, "").strip() or str(DEFAULT_LEASE_SECONDS)
    if not raw.isdigit() or not 2 <= int(raw) <= MAX_LEASE_SECONDS:
        raise ConfigError(LEASE_SETTING, f"must be a whole number from 2 to {MAX_LEASE_SECONDS}")
    return int(raw)


def host_id(port: int) -> str:
    """The instances of one local app share this id: they serve one port on one machine."""
    return encode_key(f"{socket.gethostname().lower()}:{port}")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


class TimerLease:
    """The lease of one timer function, as seen from this instance."""

    def __init__(
        self, tables: TableStore, host: str, function: str, owner: str, seconds: int
    ) -> None:
        self.tables = tables
        self.partition = host
        self.row = encode_key(function)
        self.function = function
        self.owner = owner
        self.seconds = seconds
        self._lock = threading.Lock()  # claim and renew write the same entity
        self._etag: str | None = None  # set while this instance holds the lease
        self._occurrence = ""  # what the entity says was run last, while held
        self._failing = False

    @property
    def held(self) -> bool:
        return self._etag is not None

    def _record(self, expires: int, occurrence: str) -> dict[str, object]:
        return {
            "PartitionKey": self.partition,
            "RowKey": self.row,
            "owner": self.owner,
            "expires": expires,
            "occurrence": occurrence,
        }

    def claim(self, occurrence: datetime) -> bool:
        """Take or keep the lease and record ``occurrence`` as run: True when this instance
        must run it, False when another instance holds the lease or ran it already."""
        wanted = stamp(occurrence)
        with self._lock:
            was_held = self.held
            try:
                entity = self.tables.get(LOCK_TABLE, self.partition, self.row)
                self._recovered()
                record = self._record(_millis(time.time() + self.seconds), wanted)
                if entity is None:
                    self._etag = self.tables.insert(LOCK_TABLE, record)
                else:
                    mine = entity.get("owner") == self.owner
                    if not mine and int(entity.get("expires") or 0) > _millis(time.time()):
                        self._lost(was_held, "another instance holds it")
                        return False
                    if str(entity.get("occurrence") or "") >= wanted:
                        if mine:  # still held: keep renewing what is there
                            self._etag = str(entity["etag"])
                            self._occurrence = str(entity.get("occurrence"))
                        return False  # run already (a start-up run, or the last holder)
                    self._etag = self.tables.replace(LOCK_TABLE, record, str(entity["etag"]))
            except (ConflictError, NotFoundError):  # another instance wrote first
                self._lost(was_held, "another instance took it")
                return False
            except Exception as exc:  # storage unreachable: run nothing rather than twice
                self._trouble(exc)
                return False
            self._occurrence = wanted
            if not was_held:
                log.info("timer %s: this instance holds its lease", self.function)
            return True

    def renew(self) -> None:
        """Extend the lease if this instance holds it (called every third of the period)."""
        with self._lock:
            if self._etag is None:
                return
            record = self._record(_millis(time.time() + self.seconds), self._occurrence)
            try:
                self._etag = self.tables.replace(LOCK_TABLE, record, self._etag)
            except (ConflictError, NotFoundError):
                self._lost(True, "it lapsed and another instance took it")
            except Exception as exc:  # kept: the next renewal tries again
                self._trouble(exc)
            else:
                self._recovered()

    def release(self) -> None:
        """Let another instance take over at once (clean shutdown); the occurrence stays."""
        with self._lock:
            if self._etag is None:
                return
            try:
                self.tables.replace(LOCK_TABLE, self._record(0, self._occurrence), self._etag)
            except Exception as exc:  # it lapses by itself
                log.info("timer %s: lease not released (%r); it lapses", self.function, exc)
            self._etag = None

    def _lost(self, was_held: bool, why: str) -> None:
        self._etag = None
        if was_held:
            log.warning("timer %s: lease lost (%s)", self.function, why)

    def _trouble(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("timer %s: cannot reach its lease: %r", self.function, exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("timer %s: its lease is reachable again", self.function)
        self._failing = False


class TimerLeases(threading.Thread):
    """The leases of this instance's timers, renewed every third of the lease period."""

    def __init__(
        self,
        tables: TableStore,
        host: str,
        functions: list[str],
        seconds: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="timer-leases", daemon=True)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases = {name: TimerLease(tables, host, name, owner, seconds) for name in functions}
        self.seconds = seconds
        self.stop = stop

    def run(self) -> None:
        while not self.stop.wait(self.seconds / 3):
            for lease in self.leases.values():
                lease.renew()

    def release(self) -> None:
        """At shutdown, once the timers have stopped: the other instances take over at once."""
        for lease in self.leases.values():
            lease.release()
