"""Timer triggers: one thread per timer, firing at the schedule's next occurrence (UTC).

With several instances (``DEVHOST_INSTANCES``) every instance has the thread, and a lease
(devhost/singleton.py) decides which one runs an occurrence.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from azure.functions.timer import TimerRequest

from devhost.functions import Function, Invoker, log, utc_now
from sync_core import ncrontab

if TYPE_CHECKING:
    from devhost.singleton import TimerLease

# A run that starts this much later than its scheduled time is reported as past due.
PAST_DUE_AFTER = timedelta(seconds=1)


def fire(
    invoker: Invoker, fn: Function, past_due: bool = False, via: str = ""
) -> tuple[bool, BaseException | None]:
    """Run a timer function unless it is already running (then skip it): (ran, its exception)."""
    if not fn.running.acquire(blocking=False):
        log.warning("function %s: still running, this run is skipped", fn.name)
        return False, None
    try:
        return True, invoker.run(fn, TimerRequest(past_due=past_due), via=via)
    finally:
        fn.running.release()


class TimerThread(threading.Thread):
    def __init__(
        self,
        fn: Function,
        schedule: ncrontab.Schedule,
        invoker: Invoker,
        stop: threading.Event,
        lease: TimerLease | None = None,
    ) -> None:
        super().__init__(name=f"timer-{fn.name}", daemon=True)
        self.fn = fn
        self.schedule = schedule
        self.invoker = invoker
        self.stop = stop
        self.lease = lease

    def _mine(self, occurrence: datetime) -> bool:
        """Whether this instance runs ``occurrence`` (always, without a lease)."""
        return self.lease is None or self.lease.claim(occurrence)

    def run(self) -> None:
        if self.fn.run_on_startup and not self.stop.is_set() and self._mine(utc_now()):
            fire(self.invoker, self.fn, via="startup")
        due = self.schedule.next_after(utc_now())
        while not self.stop.is_set():
            remaining = (due - utc_now()).total_seconds()
            if remaining > 0:
                # Wake up at least every 30 s, so a changed wall clock is noticed.
                self.stop.wait(min(remaining, 30.0))
                continue
            if self._mine(due):
                past_due = utc_now() - due > PAST_DUE_AFTER
                occurrence = due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                fire(self.invoker, self.fn, past_due, via=f"schedule occurrence={occurrence}")
            due = self.schedule.next_after(max(utc_now(), due))
