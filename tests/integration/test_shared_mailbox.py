"""Several resources on one mailbox, across instances: concurrent PUTs from separate Services
(own table clients) and over HTTP against Azurite and the simulated tenant; one subscription per
mailbox that a mapping reads, kept while any of them reads it; subscriptions no mapping owns
found by the doctor and removed by the renewal pass."""

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
from sync_core.config import load_settings
from sync_core.inbound import subscriptions
from sync_core.services import Services
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


def test_parallel_puts_from_many_instances_share_the_mailbox(
    host: LocalHost, tenant: Sandbox
) -> None:
    """8 PUTs of different resources to one mailbox at once: 4 from threads with their own
    Services, 4 over HTTP through the host (another process). All are mapped; after the renewal
    pass the mailbox has exactly one subscription, and the doctor finds nothing to fix."""
    instances = [services(host) for _ in range(4)]
    barrier = threading.Barrier(8)
    outcomes: dict[str, Any] = {}

    def in_process(i: int) -> None:
        resource = f"desk-{i}"
        barrier.wait()
        created = admin.save_mapping(instances[i], resource, {"mailbox": ROOM_A}).created
        outcomes[resource] = 201 if created else 200

    def over_http(i: int) -> None:
        resource = f"desk-{i}"
        barrier.wait()
        outcomes[resource] = http_put(host, resource, ROOM_A).status_code

    threads = [threading.Thread(target=in_process, args=(i,)) for i in range(4)] + [
        threading.Thread(target=over_http, args=(i,)) for i in range(4, 8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert outcomes == {f"desk-{i}": 201 for i in range(8)}
    svc = services(host)
    assert sorted(m.resource_id for m in svc.mappings.by_mailbox(ROOM_A)) == [
        f"desk-{i}" for i in range(8)
    ]
    svc.subscriptions.request_sweep()  # concurrent creates may have made a duplicate
    subscriptions.renew_all(svc)
    assert len(subscriptions_of(tenant, ROOM_A)) == 1
    active = list(svc.mappings.all(enabled_only=True))
    assert doctor.check_subscriptions(svc, svc.graph, active).status == "pass"


def test_the_subscription_stays_while_a_mapping_reads_the_mailbox(
    host: LocalHost, tenant: Sandbox
) -> None:
    svc = services(host)
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_A})
    admin.save_mapping(svc, "desk-1", {"mailbox": ROOM_A, "direction": "to_outlook"})
    admin.save_mapping(svc, "desk-2", {"mailbox": ROOM_A, "direction": "from_outlook"})
    assert len(subscriptions_of(tenant, ROOM_A)) == 1

    purge.remove_mapping(svc, "room-1")
    assert len(subscriptions_of(tenant, ROOM_A)) == 1  # desk-2 still reads it
    admin.save_mapping(svc, "desk-2", {"mailbox": ROOM_A, "enabled": False})
    assert subscriptions_of(tenant, ROOM_A) == []  # desk-1 only writes: it needs none
    active = list(svc.mappings.all(enabled_only=True))
    assert [m.resource_id for m in active] == ["desk-1"]
    assert doctor.check_subscriptions(svc, svc.graph, active).status == "pass"
    # The renewal pass does not make one for a mapping that only writes either.
    assert subscriptions.renew_all(svc).created == 0
    assert subscriptions_of(tenant, ROOM_A) == []

    # Turning it to read Outlook subscribes at once.
    admin.save_mapping(svc, "desk-1", {"mailbox": ROOM_A, "direction": "both"})
    assert len(subscriptions_of(tenant, ROOM_A)) == 1


def test_moving_one_of_two_resources_keeps_the_mailbox_for_the_other(
    host: LocalHost, tenant: Sandbox
) -> None:
    svc = services(host)
    admin.save_mapping(svc, "room-1", {"mailbox": ROOM_A})
    admin.save_mapping(svc, "room-2", {"mailbox": ROOM_A})
    admin.save_mapping(svc, "room-2", {"mailbox": ROOM_B})
    assert len(subscriptions_of(tenant, ROOM_A)) == 1
    assert len(subscriptions_of(tenant, ROOM_B)) == 1
    assert [m.resource_id for m in svc.mappings.by_mailbox(ROOM_A)] == ["room-1"]


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
