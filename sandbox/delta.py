"""calendarView/delta: rounds with a fixed window, paged, then incremental from a deltaLink.

A round's state lives in the mailbox (`SyncState`); tokens are its key. The first page of a round
fixes what the round returns; changes made while a client pages come in the next round, as with
Graph. Between rounds the sandbox diffs the view against the last snapshot:

- new or changed items (changeKey differs) come as full events;
- items that left the view (deleted, cancelled occurrence, moved out of the window) come as
  `@removed`;
- events changed outside the window since the last round also come as `@removed`, as Graph's
  documentation warns ("events that are outside the date range and that have been added, deleted,
  or updated since the previous delta call").
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sandbox.calendar import Mailbox, SyncState, view_items
from sandbox.messages import GraphError

MAX_STATES_PER_MAILBOX = 64


def gone() -> GraphError:
    return GraphError(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found; the delta token is expired or invalid. Start a "
        "new round of synchronization without a token.",
    )


def _store(mailbox: Mailbox, state: SyncState) -> str:
    key = secrets.token_urlsafe(18)
    mailbox.sync_states[key] = state
    while len(mailbox.sync_states) > MAX_STATES_PER_MAILBOX:
        mailbox.sync_states.pop(next(iter(mailbox.sync_states)))
    return key


def start_round(mailbox: Mailbox, start: datetime, end: datetime) -> str:
    """A new round: every item in the window, to be paged out. Returns the skip state key."""
    items = view_items(mailbox, start, end)
    state = SyncState(
        start=start,
        end=end,
        snapshot={item.id: item.change_key for item in items},
        seq=mailbox.seq,
        pending=[(item.id, False) for item in items],
    )
    return _store(mailbox, state)


def resume(mailbox: Mailbox, delta_key: str) -> str:
    """The next round from a deltaLink's state: what changed since. Returns the skip state key."""
    previous = mailbox.sync_states.get(delta_key)
    if previous is None or previous.pending is not None:
        raise gone()
    items = view_items(mailbox, previous.start, previous.end)
    current = {item.id: item.change_key for item in items}
    changes: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for item_id in previous.snapshot:
        if item_id not in current:
            changes.append((item_id, True))
            seen.add(item_id)
    for item in items:
        if previous.snapshot.get(item.id) != item.change_key:
            changes.append((item.id, False))
            seen.add(item.id)
    masters_in_view = {item.series_master_id for item in items if item.series_master_id}
    for event_id, seq in mailbox.changed.items():
        if (
            seq > previous.seq
            and event_id not in seen
            and event_id not in current
            and event_id not in masters_in_view
        ):
            changes.append((event_id, True))
    state = SyncState(
        start=previous.start, end=previous.end, snapshot=current, seq=mailbox.seq, pending=changes
    )
    return _store(mailbox, state)


def page(
    mailbox: Mailbox, skip_key: str, offset: int, size: int
) -> tuple[list[tuple[str, bool]], str | None, str | None]:
    """A page of a round: (items, next skip token or None, delta token when the round ends)."""
    state = mailbox.sync_states.get(skip_key)
    if state is None or state.pending is None:
        raise gone()
    chunk = state.pending[offset : offset + size]
    if offset + size < len(state.pending):
        return chunk, f"{skip_key}.{offset + size}", None
    finished = SyncState(
        start=state.start, end=state.end, snapshot=state.snapshot, seq=state.seq, pending=None
    )
    return chunk, None, _store(mailbox, finished)


def invalidate(mailbox: Mailbox) -> int:
    count = len(mailbox.sync_states)
    mailbox.sync_states.clear()
    return count
