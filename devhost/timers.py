"""Timer triggers: one thread per timer, firing at the schedule's next occurrence (UTC)."""

from __future__ import annotations

import threading
from datetime import timedelta

from azure.functions.timer import TimerRequest

from devhost.functions import Function, Invoker, log, utc_now
from sync_core import ncrontab

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
        self, fn: Function, schedule: ncrontab.Schedule, invoker: Invoker, stop: threading.Event
    ) -> None:
        super().__init__(name=f"timer-{fn.name}", daemon=True)
        self.fn = fn
        self.schedule = schedule
        self.invoker = invoker
        self.stop = stop

    def run(self) -> None:
        if self.fn.run_on_startup and not self.stop.is_set():
            fire(self.invoker, self.fn)
        due = self.schedule.next_after(utc_now())
        while not self.stop.is_set():
            remaining = (due - utc_now()).total_seconds()
            if remaining > 0:
                # Wake up at least every 30 s, so a changed wall clock is noticed.
                self.stop.wait(min(remaining, 30.0))
                continue
            now = utc_now()
            fire(self.invoker, self.fn, past_due=now - due > PAST_DUE_AFTER)
            due = self.schedule.next_after(max(utc_now(), due))
