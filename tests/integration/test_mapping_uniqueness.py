"""One mailbox, one resource, across instances: concurrent PUTs from separate Services (own
table clients) and over HTTP against Azurite and the simulated tenant; claims released on delete
and move, stale claims taken over; subscriptions no mapping owns found by the doctor and removed
by the renewal pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from sandbox import Sandbox
from sync_core.admin import doctor, purge
from sync_core.admin import mappings as admin
from sync_core.clock import now
from sync_core.config import load_settings
from sync_core.inbound import subscriptions
from sync_core.problems import Conflict
from sync_core.services import Services
from sync_core.store.mappings import TABLE, Mapping, MappingRepository
from sync_core.store.tables import encode_key
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost

ROOM_C = "berlin.tegel@contoso.example"


@pytest.fixture
def host(tenant_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHost]:
    """The local host: it answers Graph's validation requests (so subscriptions can be created)
    and serves the admin API as one more instance."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    server = LocalHost(tenant_env | {"FUNCTIONS_KEY": "test-function-key"}).wait_ready()
    yield server
    server.stop()


def services(host: LocalHost) -> Services:
    """A Services of its own, as another instance of the function app would have."""
    return Services(load_settings(host.env, Path("/nonexistent")))


def subscriptions_of(tenant: Sandbox, mailbox: str) -> list[dict[str, Any]]:
    return [s for s in tenant.control.subscriptions() if s["resource"].lower().endswith(
        f"users/{mailbox}/events"
    )]  # fmt: skip


def http_put(host: LocalHost, resource_id: str, mailbox: str) -> requests.Response:
    return requests.put(
        f"{host.base}/api/admin/mappings/{quote(resource_id, safe='')}",
        json={"mailbox": mailbox},
        headers=KEY_HEADER,
        timeout=60,
    )


def test_parallel_puts_from_many_instances_map_the_mailbox_once(
    host: LocalHost, tenant: Sandbox
) -> None:
    """8 PUTs of different resources to one mailbox at once: 4 from threads with their own
    Services, 4 over HTTP through the host (another process). One wins, 7 get 409."""
    instances = [services(host) for _ in range(4)]
    barrier = threading.Barrier(8)
    outcomes: dict[str, Any] = {}

    def in_process(i: int) -> None:
        resource = f"desk-{i}"
        barrier.wait()
        try:
            admin.save_mapping(instances[i], resource, {"mailbox": ROOM_A})
            outcomes[resource] = 201
        except Conflict as problem:
            outcomes[resource] = problem.to_json()

    def over_http(i: int) -> None:
        resource = f"desk-{i}"
        barrier.wait()
        answer = http_put(host, resource, ROOM_A)
        outcomes[resource] = 201 if answer.status_code == 201 else answer.json()
        if answer.status_code not in (201, 409):
            outcomes[resource] = answer.status_code

    threads = [threading.Thread(target=in_process, args=(i,)) for i in range(4)] + [
        threading.Thread(target=over_http, args=(i,)) for i in range(4, 8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    winners = [r for r, o in outcomes.items() if o == 201]
    assert len(winners) == 1, outcomes
    winner = winners[0]
    losers = {r: o for r, o in outcomes.items() if r != winner}
    assert len(losers) == 7
    for problem in losers.values():
        assert isinstance(problem, dict), losers
        assert problem["status"] == 409
        assert problem["type"].endswith("conflict")
        assert f"is already mapped to resource {winner!r}" in problem["detail"]

    svc = services(host)
    assert [m.resource_id for m in svc.mappings.all()] == [winner]
    claim = svc.mappings.claim_of(ROOM_A)
    assert claim is not None and claim.resource_id == winner
    assert len(subscriptions_of(tenant, ROOM_A)) == 1

    purge.remove_mapping(svc, winner)
    assert subscriptions_of(tenant, ROOM_A) == []
    assert svc.mappings.claim_of(ROOM_A) is None
    # The mailbox is free again for any resource.
    assert http_put(host, "desk-9", ROOM_A).status_code == 201


def test_a_move_releases_the_old_mailbox(host: LocalHost, tenant: Sandbox) -> None:
    svc = services(host)
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_A})
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_B})
    assert svc.mappings.claim_of(ROOM_A) is None
    moved = svc.mappings.claim_of(ROOM_B)
    assert moved is not None and moved.resource_id == "room-1"
    assert subscriptions_of(tenant, ROOM_A) == []
    assert len(subscriptions_of(tenant, ROOM_B)) == 1

    taken = admin.save_mapping(services(host), "room-2", {"mailbox": ROOM_A})
    assert taken.created
    with pytest.raises(Conflict, match="already mapped to resource 'room-1'"):
        admin.save_mapping(services(host), "room-3", {"mailbox": ROOM_B})


def claim_row(repo: MappingRepository, mailbox: str, holder: str, at: datetime) -> None:
    repo.tables.upsert(
        TABLE,
        {
            "PartitionKey": "mailbox",
            "RowKey": encode_key(mailbox),
            "Mailbox": mailbox,
            "ResourceId": holder,
            "ClaimedAt": at,
        },
    )


def test_a_claim_whose_mapping_was_never_written(tables: Any) -> None:
    """A writer that died between its claim and its mapping: the claim stands while it is young
    (the write may still come), then it is taken over."""
    repo = MappingRepository(tables)
    claim_row(repo, ROOM_A, "ghost", datetime.now(UTC))
    with pytest.raises(Conflict, match="already mapped to resource 'ghost'"):
        admin.put_mapping(repo, "room-1", {"mailbox": ROOM_A})
    assert repo.get("room-1") is None

    claim_row(repo, ROOM_A, "ghost", datetime.now(UTC) - timedelta(minutes=5))
    assert admin.put_mapping(repo, "room-1", {"mailbox": ROOM_A}).created
    claim = repo.claim_of(ROOM_A)
    assert claim is not None and claim.resource_id == "room-1"

    # An old claim whose resource does map the mailbox stands, however old.
    claim_row(repo, ROOM_A, "room-1", datetime.now(UTC) - timedelta(days=30))
    with pytest.raises(Conflict, match="'room-1'"):
        admin.put_mapping(repo, "room-2", {"mailbox": ROOM_A})


def test_mappings_from_before_claims(tables: Any) -> None:
    """Mappings written before claim rows existed: still guarded (by their mailbox), and they
    get their claim on their next write."""
    repo = MappingRepository(tables)
    moment = now()
    repo.create(Mapping("old-room", ROOM_A, "full", True, moment, moment))
    assert repo.claim_of(ROOM_A) is None
    with pytest.raises(Conflict, match="already mapped to resource 'old-room'"):
        admin.put_mapping(repo, "new-room", {"mailbox": ROOM_A})
    assert repo.claim_of(ROOM_A) is None  # the loser claimed nothing

    admin.put_mapping(repo, "old-room", {"mailbox": ROOM_A, "privacy": "busy_only"})
    claim = repo.claim_of(ROOM_A)
    assert claim is not None and claim.resource_id == "old-room"
    admin.delete_mapping(repo, "old-room")
    assert repo.claim_of(ROOM_A) is None


def test_a_write_that_loses_its_claim_is_undone(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance took the mailbox over between this one's mapping write and its
    confirmation: the mapping is put back and the PUT answers 409."""
    repo = MappingRepository(tables)
    create = repo.create

    def create_then_lose(mapping: Mapping) -> Mapping:
        written = create(mapping)
        claim_row(repo, ROOM_A, "rival", datetime.now(UTC))
        return written

    monkeypatch.setattr(repo, "create", create_then_lose)
    with pytest.raises(Conflict, match="already mapped to resource 'rival'"):
        admin.put_mapping(repo, "room-1", {"mailbox": ROOM_A})
    assert repo.get("room-1") is None
    claim = repo.claim_of(ROOM_A)
    assert claim is not None and claim.resource_id == "rival"


def test_subscriptions_no_mapping_owns_are_reported_then_removed(
    host: LocalHost, tenant: Sandbox
) -> None:
    svc = services(host)
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_A})
    recorded = svc.subscriptions.by_mailbox(ROOM_A)
    assert recorded is not None

    def by_hand(address: str) -> str:
        return tenant.tenant.subscribe(
            address,
            notification_url=svc.settings.notification_url,
            lifecycle_url=svc.settings.lifecycle_url,
            expiration=datetime.now(UTC) + timedelta(days=2),
            client_state="lost",
        ).id

    orphans = {by_hand(ROOM_B), by_hand(ROOM_B), by_hand(ROOM_C)}
    duplicate = by_hand(ROOM_A)  # beside the mapped mailbox's recorded one
    foreign = tenant.tenant.subscribe(  # another deployment's: not ours to delete
        ROOM_B,
        notification_url="https://elsewhere.example/api/graph/notifications",
        lifecycle_url=None,
        expiration=datetime.now(UTC) + timedelta(days=2),
        client_state="x",
    ).id
    active = [m for m in svc.mappings.all() if m.enabled]

    check = doctor.check_subscriptions(svc, svc.graph, active)
    assert check.status == "warn", check
    assert "4 subscription(s) no enabled mapping owns" in check.message
    assert f"{duplicate} ({ROOM_A}: duplicate)" in check.message
    assert f"({ROOM_C}: no enabled mapping)" in check.message
    assert "renew_subscriptions" in check.hint

    report = subscriptions.renew_all(svc)

    assert report.deleted == 4
    left = {s["id"] for s in tenant.control.subscriptions()}
    assert left == {recorded.subscription_id, foreign}
    assert not orphans & left
    assert doctor.check_subscriptions(svc, svc.graph, active).status == "pass"

    # Every mapping deleted, a leftover made by hand: the doctor no longer says pass.
    purge.remove_mapping(svc, "room-1")
    by_hand(ROOM_A)
    check = doctor.check_subscriptions(svc, svc.graph, [])
    assert check.status == "warn"
    assert f"({ROOM_A}: no enabled mapping)" in check.message
    # The removal asked for a sweep: the next pass deletes it without waiting a day.
    assert subscriptions.renew_all(svc).deleted == 1
    assert {s["id"] for s in tenant.control.subscriptions()} == {foreign}


def test_a_create_in_flight_is_not_swept(host: LocalHost, tenant: Sandbox) -> None:
    """A subscription whose create started moments ago and is not recorded yet stays."""
    svc = services(host)
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_A})
    svc.subscriptions.intend(ROOM_B)  # another instance is creating ROOM_B's right now
    pending = tenant.tenant.subscribe(
        ROOM_B,
        notification_url=svc.settings.notification_url,
        lifecycle_url=svc.settings.lifecycle_url,
        expiration=datetime.now(UTC) + timedelta(days=2),
        client_state="new",
    ).id
    subscriptions.renew_all(svc)
    assert pending in {s["id"] for s in tenant.control.subscriptions()}


def test_legacy_duplicate_mappings_fail_the_doctor(host: LocalHost, tenant: Sandbox) -> None:
    svc = services(host)
    moment = now()
    svc.mappings.create(Mapping("a", ROOM_A, "full", True, moment, moment))
    svc.mappings.create(Mapping("b", ROOM_A, "full", True, moment, moment))
    check = doctor.check_subscriptions(svc, svc.graph, list(svc.mappings.all()))
    assert check.status == "fail"
    assert f"{ROOM_A} is mapped to 2 resources (a, b)" in check.message
    assert check.code == "MailboxMappedTwice"
