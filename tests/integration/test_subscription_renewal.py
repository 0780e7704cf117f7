"""The renewal pass against Azurite and the simulated tenant: when everything is due it is
renewed together and recorded with one renewal mark instead of a row per subscription; rows
the pass did not renew keep their own expiry; later passes renew only what is due."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox import Sandbox
from sync_core.config import load_settings
from sync_core.inbound import subscriptions
from sync_core.services import Services
from sync_core.store.mappings import Mapping
from sync_core.store.subscriptions import SubscriptionRecord
from sync_core.store.tables import encode_key

ROOMS = [
    "room.berlin@contoso.example",
    "berlin.havel@contoso.example",
    "berlin.tegel@contoso.example",
]


@pytest.fixture
def svc(tenant_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    return Services(load_settings(tenant_env, Path("/nonexistent")))


def subscribe(svc: Services, tenant: Sandbox, address: str, expires: datetime) -> str:
    """A mapping whose subscription Graph holds and this service recorded, until ``expires``."""
    now = datetime.now(UTC)
    resource = "res-" + address.split("@", maxsplit=1)[0]
    svc.mappings.create(Mapping(resource, address, "busy_only", True, now, now))
    sub_id = tenant.tenant.subscribe(
        address,
        notification_url=svc.settings.notification_url,
        lifecycle_url=svc.settings.lifecycle_url,
        expiration=expires,
        client_state="state",
    ).id
    svc.subscriptions.save(SubscriptionRecord(address, resource, sub_id, "state", expires))
    return sub_id


def stored_expiry(svc: Services, address: str) -> datetime:
    row = svc.tables.get("subscriptions", "mailbox", encode_key(address))
    assert row is not None
    return row["ExpiresAt"]  # type: ignore[no-any-return]


def expiries(svc: Services) -> dict[str, datetime]:
    return {r.mailbox: r.expires_at for r in svc.subscriptions.all()}


def graph_expiry(tenant: Sandbox, sub_id: str) -> datetime:
    return tenant.tenant.subscriptions[sub_id].expiration


def patches(tenant: Sandbox) -> int:
    return sum(1 for e in tenant.control.requests() if e.get("method") == "PATCH")


def test_all_due_are_renewed_together_under_one_mark(svc: Services, tenant: Sandbox) -> None:
    soon = datetime.now(UTC) + timedelta(hours=2)
    ids = {room: subscribe(svc, tenant, room, soon) for room in ROOMS}
    tenant.control.clear_requests()

    report = subscriptions.renew_all(svc)

    assert (report.renewed, report.failed, report.created) == (3, 0, 0)
    mark = svc.subscriptions.last_mark()
    assert mark is not None and mark.until > datetime.now(UTC) + timedelta(days=2)
    seen = expiries(svc)
    for room, sub_id in ids.items():
        assert stored_expiry(svc, room) == soon  # no row was written per subscription
        assert seen[room] == mark.until  # the mark gives the live expiry
        assert abs(graph_expiry(tenant, sub_id) - mark.until) < timedelta(seconds=1)
    found = svc.subscriptions.by_mailbox(ROOMS[0])
    assert found is not None and found.expires_at == mark.until


def test_a_failed_renewal_keeps_its_own_expiry_and_is_retried_alone(
    svc: Services, tenant: Sandbox
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=2)
    ids = {room: subscribe(svc, tenant, room, soon) for room in ROOMS}
    failing = ROOMS[1]
    tenant.control.add_fault(f"/subscriptions/{ids[failing]}$", "PATCH", status=403)

    first = subscriptions.renew_all(svc)

    assert (first.renewed, first.failed) == (2, 1)
    mark = svc.subscriptions.last_mark()
    assert mark is not None
    seen = expiries(svc)
    assert seen[failing] == soon  # not covered by the mark: its real expiry
    assert [seen[r] for r in ROOMS if r != failing] == [mark.until, mark.until]

    # The next pass renews only the one that is still due, and writes just its row.
    tenant.control.clear_requests()
    second = subscriptions.renew_all(svc)
    assert (second.renewed, second.unchanged, second.failed) == (1, 2, 0)
    assert patches(tenant) == 1  # one $batch with one inner PATCH
    assert svc.subscriptions.last_mark() == mark
    assert stored_expiry(svc, failing) > datetime.now(UTC) + timedelta(days=2)
    assert expiries(svc)[failing] == stored_expiry(svc, failing)


def test_nothing_due_means_no_graph_call(svc: Services, tenant: Sandbox) -> None:
    later = datetime.now(UTC) + timedelta(days=2, hours=20)  # more than half the lifetime left
    for room in ROOMS:
        subscribe(svc, tenant, room, later)
    subscriptions.renew_all(svc)  # the first pass of a day also lists Graph's subscriptions
    tenant.control.clear_requests()

    report = subscriptions.renew_all(svc)

    assert (report.renewed, report.unchanged) == (0, 3)
    assert tenant.control.requests() == []
    assert svc.subscriptions.last_mark() is None


def graph_lists(tenant: Sandbox) -> int:
    return sum(
        1
        for e in tenant.control.requests()
        if e.get("method") == "GET"
        and str(e.get("path") or "").split("?")[0].endswith("/subscriptions")
    )


def test_graph_is_listed_once_a_day_or_after_a_removal(svc: Services, tenant: Sandbox) -> None:
    later = datetime.now(UTC) + timedelta(days=2, hours=20)
    for room in ROOMS:
        subscribe(svc, tenant, room, later)
    tenant.control.clear_requests()
    assert subscriptions.renew_all(svc).deleted == 0
    assert graph_lists(tenant) == 1  # no sweep yet: this pass sweeps
    tenant.control.clear_requests()
    subscriptions.renew_all(svc)
    assert graph_lists(tenant) == 0  # swept today

    # A mapping goes: its subscription is removed at once, and the next pass sweeps.
    mapping = next(iter(svc.mappings.by_mailbox(ROOMS[0])))
    svc.mappings.delete(mapping.resource_id)
    assert subscriptions.remove(svc, ROOMS[0])
    tenant.control.clear_requests()
    subscriptions.renew_all(svc)
    assert graph_lists(tenant) == 1
    tenant.control.clear_requests()
    subscriptions.renew_all(svc)
    assert graph_lists(tenant) == 0

    # A day later the pass sweeps again unasked.
    partition, row = svc.subscriptions.SWEEP
    svc.tables.upsert(
        "subscriptions",
        {"PartitionKey": partition, "RowKey": row, "At": datetime.now(UTC) - timedelta(days=1)},
    )
    tenant.control.clear_requests()
    subscriptions.renew_all(svc)
    assert graph_lists(tenant) == 1


def test_rows_written_after_the_mark_keep_their_own_expiry(svc: Services, tenant: Sandbox) -> None:
    soon = datetime.now(UTC) + timedelta(hours=2)
    for room in ROOMS[:2]:
        subscribe(svc, tenant, room, soon)
    subscriptions.renew_all(svc)
    mark = svc.subscriptions.last_mark()
    assert mark is not None

    # A mapping created after the pass, and a record saved again with an explicit expiry.
    newer = datetime.now(UTC) + timedelta(days=2, hours=20)
    subscribe(svc, tenant, ROOMS[2], newer)
    first = svc.subscriptions.by_mailbox(ROOMS[0])
    assert first is not None
    svc.subscriptions.save(replace(first, expires_at=soon))

    seen = expiries(svc)
    assert seen[ROOMS[2]] == newer
    assert seen[ROOMS[0]] == soon
    assert seen[ROOMS[1]] == mark.until

    # The mark is not due yet: a pass renews just the row saved as expiring soon.
    tenant.control.clear_requests()
    report = subscriptions.renew_all(svc)
    assert (report.renewed, report.unchanged) == (1, 2)
    assert patches(tenant) == 1
