"""Property tests of the inbound decisions: whatever Outlook does, in whatever order the change
feed reports it (pages repeated, items repeated, removals of things never seen, a full re-read
after a lost token), the platform ends with exactly the blockers Outlook's calendar implies.

In the spirit of vdirsyncer's sync tests: a model of Outlook, a model of the platform, and the
pure planner in between; only what the planner decides moves the platform.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync_core.domain.inbound import (
    Blocker,
    Own,
    Plan,
    blocker_id,
    missing_projections,
    plan_full_round,
    plan_page,
    to_blocker,
)
from sync_core.domain.outlook import observable_digest

MAILBOX = "room.berlin@contoso.example"
RESOURCE = "room-42"
WINDOW = (datetime(2026, 11, 22, tzinfo=UTC), datetime(2027, 5, 21, tzinfo=UTC))
EVENT_IDS = [f"e{i}" for i in range(6)] + ["own-1"]
SHOW_AS = ["busy", "tentative", "oof", "workingElsewhere", "free", "unknown"]
SENSITIVITY = ["normal", "private", "personal", "confidential"]


def make_event(
    event_id: str, day: int, hour: int, show_as: str, sensitivity: str
) -> dict[str, Any]:
    start = WINDOW[0] + timedelta(days=day, hours=hour)
    return {
        "id": event_id,
        "subject": f"Meeting {event_id}",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {
            "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": "UTC",
        },
        "showAs": show_as,
        "sensitivity": sensitivity,
        "isCancelled": False,
        "type": "singleInstance",
    }


# One projection the service wrote, tomorrow 09:00-10:00, as Outlook shows it.
OWN_EVENT = make_event("own-1", 1, 9, "busy", "normal")
OWN = {
    "own-1": Own(
        "bk_1",
        observable_digest(OWN_EVENT),
        WINDOW[0] + timedelta(days=1, hours=9),
        WINDOW[0] + timedelta(days=1, hours=10),
    )
}

operation = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(EVENT_IDS),
        st.integers(min_value=-3, max_value=200),  # some outside the window
        st.integers(min_value=0, max_value=20),
        st.sampled_from(SHOW_AS),
        st.sampled_from(SENSITIVITY),
    ),
    st.tuples(st.just("delete"), st.sampled_from(EVENT_IDS)),
)


class Platform:
    """What the platform holds after applying every decision it was sent."""

    def __init__(self) -> None:
        self.blockers: dict[str, Blocker] = {}
        self.sent: dict[str, str] = {}  # blocker id → digest last sent (the service's own record)

    def apply(self, plan: Plan) -> None:
        for blocker in plan.upserts:
            self.blockers[blocker.id] = blocker
            self.sent[blocker.id] = blocker.content_hash
        for bid in plan.deletes:
            self.blockers.pop(bid, None)
            self.sent.pop(bid, None)


def expected(outlook: dict[str, dict[str, Any]], privacy: str) -> dict[str, Blocker]:
    found = {}
    for event in outlook.values():
        if event["id"] in OWN:
            continue
        blocker = to_blocker(MAILBOX, event, privacy, RESOURCE)
        if blocker is not None and blocker.end > WINDOW[0] and blocker.start < WINDOW[1]:
            found[blocker.id] = blocker
    return found


@settings(max_examples=300, deadline=None)
@given(
    operations=st.lists(operation, min_size=1, max_size=40),
    page_sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=40, max_size=40),
    repeats=st.lists(st.booleans(), min_size=40, max_size=40),
    privacy=st.sampled_from(["full", "busy_only"]),
    lost_token_at=st.one_of(st.none(), st.integers(min_value=0, max_value=39)),
)
def test_any_interleaving_converges_to_what_outlook_shows(
    operations: list[tuple[Any, ...]],
    page_sizes: list[int],
    repeats: list[bool],
    privacy: str,
    lost_token_at: int | None,
) -> None:
    outlook: dict[str, dict[str, Any]] = {"own-1": dict(OWN_EVENT)}
    platform = Platform()
    pending: list[tuple[str, dict[str, Any] | None]] = []  # the change feed since the last read
    drifted: set[str] = set()

    def read(changes: list[tuple[str, dict[str, Any] | None]], size: int, again: bool) -> None:
        pages = [changes[i : i + size] for i in range(0, len(changes), size)]
        if again and pages:
            pages.insert(0, pages[0])  # the same items can come more than once
        for page in pages:
            plan = plan_page(
                mailbox=MAILBOX,
                resource_id=RESOURCE,
                privacy=privacy,
                items=[e if e is not None else {"id": i, "@removed": {}} for i, e in page],
                stored=platform.sent,
                projections=OWN,
                window=WINDOW,
            )
            platform.apply(plan)
            drifted.update(plan.drifted)

    for step, op in enumerate(operations):
        if op[0] == "put":
            _, event_id, day, hour, show_as, sensitivity = op
            outlook[event_id] = make_event(event_id, day, hour, show_as, sensitivity)
            pending.append((event_id, outlook[event_id]))
        else:
            _, event_id = op
            outlook.pop(event_id, None)
            pending.append((event_id, None))  # removals of unknown ids happen too
        if lost_token_at == step:
            # 410: a full read of the window, diffed against what was sent before.
            everything = [(e["id"], e) for e in outlook.values()]
            read(everything, page_sizes[step], repeats[step])
            seen = {
                blocker_id(MAILBOX, e["id"])
                for e in outlook.values()
                if e["id"] not in OWN and to_blocker(MAILBOX, e, privacy, RESOURCE) is not None
            }
            platform.apply(Plan(deletes=plan_full_round(seen=seen, stored=platform.sent)))
            drifted.update(missing_projections(OWN, set(outlook), WINDOW))
            pending.clear()
        elif repeats[step] or step % 3 == 0:  # notifications arrive in bursts
            read(pending, page_sizes[step], repeats[step])
            pending.clear()
    read(pending, 2, False)

    want = expected(outlook, privacy)
    assert set(platform.blockers) == set(want)
    for bid, blocker in want.items():
        assert platform.blockers[bid] == blocker
    assert platform.sent == {bid: b.content_hash for bid, b in want.items()}
    assert not (set(platform.blockers) & {blocker_id(MAILBOX, e) for e in OWN})  # no echoes
    touched_own = any(op[1] in OWN for op in operations)
    if not touched_own:
        assert drifted == set()  # the service's own event, untouched, is never "repaired"
    if outlook.get("own-1") != OWN_EVENT:
        assert drifted == {"bk_1"}  # edited or deleted by a person: restored


@settings(max_examples=200, deadline=None)
@given(
    show_as=st.sampled_from(SHOW_AS),
    sensitivity=st.sampled_from(SENSITIVITY),
    privacy=st.sampled_from(["full", "busy_only"]),
)
def test_titles_never_leak(show_as: str, sensitivity: str, privacy: str) -> None:
    blocker = to_blocker(MAILBOX, make_event("e1", 1, 9, show_as, sensitivity), privacy, RESOURCE)
    if blocker is None:
        assert show_as in ("free", "unknown")
        return
    shows_title = blocker.title is not None
    assert shows_title == (privacy == "full" and sensitivity == "normal")
