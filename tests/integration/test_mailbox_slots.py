"""The per-mailbox limit across processes: slots leased in Table Storage (Azurite).

Each process stands for one instance of the app: its own ``SharedSlots``, many threads asking
for the same mailbox. The intervals they report are merged, so the limit is checked across all
of them together, not per process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from sync_core.config import StorageSettings
from sync_core.store.mailbox_slots import LIMIT, TABLE, SharedSlots
from sync_core.store.tables import TableStore

MAILBOX = "Room.Busy@contoso.example"
CONTEXT = multiprocessing.get_context("spawn")


def _instance(connection_string: str, requests: int, threads: int, lease: float, out: Connection):
    """One instance: ``requests`` holds of the mailbox from ``threads`` threads, each 40 ms."""
    tables = TableStore.from_settings(StorageSettings(connection_string=connection_string))
    slots = SharedSlots(tables, lease=lease)
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()
    out.send(("ready", os.getpid()))

    def one(_: int) -> None:
        with slots.hold(MAILBOX):
            start = time.time()
            time.sleep(0.04)
            end = time.time()
        with lock:
            intervals.append((start, end))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    out.send(("done", intervals, slots.claims))
    slots.close()


def _holder(connection_string: str, lease: float, out: Connection) -> None:
    """An instance that takes all four slots and then hangs, until it is killed."""
    tables = TableStore.from_settings(StorageSettings(connection_string=connection_string))
    slots = SharedSlots(tables, lease=lease)
    entered = threading.Barrier(LIMIT + 1)

    def hang() -> None:
        with slots.hold(MAILBOX):
            entered.wait()
            time.sleep(3600)

    for _ in range(LIMIT):
        threading.Thread(target=hang, daemon=True).start()
    entered.wait()
    out.send("holding")
    time.sleep(3600)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def test_three_instances_never_hold_more_than_four_requests_of_one_mailbox(storage: str) -> None:
    pipes, processes = [], []
    for _ in range(3):
        parent, child = CONTEXT.Pipe()
        process = CONTEXT.Process(target=_instance, args=(storage, 30, 8, 15.0, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    intervals: list[tuple[float, float]] = []
    claims = 0
    try:
        for pipe in pipes:
            assert pipe.poll(60) and pipe.recv()[0] == "ready"
        for pipe in pipes:
            assert pipe.poll(120), "an instance did not finish its requests"
            _, found, claimed = pipe.recv()
            intervals += found
            claims += claimed
    finally:
        for process in processes:
            process.join(30)
    assert len(intervals) == 90
    # Small allowance for clock reads inside and outside the slot: a fifth request at once
    # would overlap by a whole 40 ms request.
    trimmed = [(start + 0.002, end - 0.002) for start, end in intervals]
    assert most_at_once(trimmed) <= LIMIT
    assert most_at_once(trimmed) >= 2, "the instances never ran requests side by side"
    # Slots are kept through a burst: far fewer claims than requests.
    assert claims < 90 / 2, claims
    # Every slot was given back.
    tables = TableStore.from_settings(StorageSettings(connection_string=storage))
    assert list(tables.query(TABLE, "PartitionKey eq @pk", {"pk": MAILBOX.lower()})) == []


def test_slots_of_an_instance_that_died_are_taken_over_after_the_lease(storage: str) -> None:
    parent, child = CONTEXT.Pipe()
    holder = CONTEXT.Process(target=_holder, args=(storage, 2.0, child))
    holder.start()
    try:
        assert parent.poll(60) and parent.recv() == "holding"
        tables = TableStore.from_settings(StorageSettings(connection_string=storage))
        slots = SharedSlots(tables, lease=2.0)
        os.kill(holder.pid or 0, signal.SIGKILL)
        killed = time.monotonic()
        with slots.hold(MAILBOX):
            waited = time.monotonic() - killed
        # The dead instance's lease (2 s) plus the clock allowance must pass first.
        assert waited >= 1.0, waited
        assert waited < 15.0, waited
        slots.close()
    finally:
        holder.kill()
        holder.join(10)
