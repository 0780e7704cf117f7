"""The local host scaled out (``DEVHOST_INSTANCES``): whole host processes on one port and one
Azurite, as Azure runs an app on several instances. The kernel spreads connections over them
(SO_REUSEPORT), each answer names its instance, timers stay singletons through a lease in Azurite,
and an instance that dies leaves the others serving and running the timers."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from devhost.http_server import INSTANCE_HEADER
from devhost.singleton import TimerLease
from devhost.stack import pid_alive
from sync_core.config import StorageSettings
from sync_core.store.tables import TableStore
from tests.conftest import FUNCTION_KEY, LocalHost, wait

INSTANCES = 3
LEASE_SECONDS = 3  # DEVHOST_TIMER_LEASE_SECONDS: a dead holder's timers move within seconds
# The product's safety sweep, every second: cheap without mappings (one table query).
SWEEP = re.compile(
    r"instance=(\d+) function=safety_sweep trigger=timer via=schedule occurrence=(\S+)"
)


@pytest.fixture
def scaled_host(tenant_env: dict[str, str]) -> Iterator[LocalHost]:
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "SWEEP_SCHEDULE": "* * * * * *",
        "DEVHOST_TIMER_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    host = LocalHost(env, instances=INSTANCES).wait_ready(60)
    yield host
    host.stop()


def served_by(host: LocalHost, count: int) -> list[str]:
    """GET /api/health ``count`` times, each on a new connection: the instances that answered."""
    answers: list[str] = []
    for _ in range(count):
        with requests.Session() as session:  # a new connection each time
            response = session.get(
                f"{host.base}/api/health", headers={"Connection": "close"}, timeout=10
            )
        assert response.status_code == 200, response.text
        answers.append(response.headers[INSTANCE_HEADER])
    return answers


def sweeps(host: LocalHost) -> list[tuple[datetime, int]]:
    """(occurrence, instance) of every scheduled run of the safety sweep so far, in log order."""
    return [
        (datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC), int(instance))
        for instance, when in SWEEP.findall(host.output())
    ]


def assert_each_occurrence_ran_once(host: LocalHost) -> None:
    twice = [when for when, n in Counter(w for w, _ in sweeps(host)).items() if n > 1]
    assert not twice, f"occurrences run more than once: {twice}"


def run_after(host: LocalHost, moment: datetime, by: set[int]) -> tuple[datetime, int] | None:
    """The first sweep scheduled after ``moment`` that one of the instances ``by`` ran."""
    return next(((w, k) for w, k in sweeps(host) if w > moment and k in by), None)


def test_connections_are_spread_over_the_instances(scaled_host: LocalHost) -> None:
    pids = scaled_host.instance_pids()
    assert sorted(pids) == [0, 1, 2] and len(set(pids.values())) == INSTANCES
    answered = served_by(scaled_host, 60)
    assert set(answered) <= {"0", "1", "2"}
    assert len(set(answered)) >= 2, Counter(answered)
    assert scaled_host.output().count("Host started:") == 1
    assert f"Host started: {scaled_host.base} ({INSTANCES} instances)" in scaled_host.output()

    # Ctrl-C to the first instance stops them all, cleanly.
    output = scaled_host.stop()
    assert scaled_host.process.returncode == 0
    assert "Host stopped." in output and "Traceback" not in output
    wait(
        lambda: not any(pid_alive(pid) for pid in pids.values()), timeout=10, what="every instance"
    )


def test_a_port_that_is_served_is_not_shared_with_another_host(
    scaled_host: LocalHost, tenant_env: dict[str, str]
) -> None:
    """SO_REUSEPORT would let any host join the port; the first instance checks it is free."""
    other = LocalHost(tenant_env, port=scaled_host.port, instances=2)
    assert other.process.wait(timeout=60) == 1
    assert f"cannot serve on 127.0.0.1:{scaled_host.port}" in other.output()
    assert set(served_by(scaled_host, 10)) <= {"0", "1", "2"}


@pytest.mark.parametrize("value", ["0", "11", "two"])
def test_a_bad_instance_count_is_one_line_and_exit_2(
    tenant_env: dict[str, str], value: str
) -> None:
    host = LocalHost(tenant_env | {"DEVHOST_INSTANCES": value})
    assert host.process.wait(timeout=60) == 2
    lines = [line for line in host.output().splitlines() if line.strip()]
    assert lines == ["error: setting DEVHOST_INSTANCES: must be a whole number from 1 to 10"]


def test_each_timer_occurrence_runs_on_one_instance(scaled_host: LocalHost) -> None:
    # Every instance reaches every occurrence and tries the lease; one runs it. (An occurrence
    # that falls while the previous run still runs is skipped, as in Azure: on a loaded machine
    # the first run, which warms up, can take longer than the second's interval.)
    wait(lambda: len(sweeps(scaled_host)) >= 6, timeout=30, what="six runs of the safety sweep")
    assert_each_occurrence_ran_once(scaled_host)
    assert {k for _, k in sweeps(scaled_host)} <= {0, 1, 2}


def test_a_killed_instance_leaves_the_others_serving_and_its_timers_move(
    scaled_host: LocalHost,
) -> None:
    host = scaled_host
    wait(lambda: len(sweeps(host)) >= 2, timeout=30, what="the safety sweep to run")

    host.kill_instance(2)
    killed = datetime.now(UTC)
    assert set(served_by(host, 30)) <= {"0", "1"}  # every request answered, by the survivors
    wait(lambda: run_after(host, killed, {0, 1}), timeout=LEASE_SECONDS * 3 + 10, what="a sweep")

    # Make a non-first instance the timer's holder, then kill it: the timer moves to instance 0.
    holder = sweeps(host)[-1][1]
    if holder == 0:
        # A hung holder: its lease lapses and instance 1 takes the timer over.
        stopped = datetime.now(UTC)
        os.kill(host.process.pid, signal.SIGSTOP)
        try:
            wait(
                lambda: run_after(host, stopped, {1}),
                timeout=LEASE_SECONDS * 3 + 10,
                what="instance 1 to take the timer over from a hung instance 0",
            )
        finally:
            os.kill(host.process.pid, signal.SIGCONT)
    host.kill_instance(1)
    killed = datetime.now(UTC)
    when, _ = wait(
        lambda: run_after(host, killed, {0}),
        timeout=LEASE_SECONDS * 3 + 10,
        what="instance 0 to take the timer over from the killed instance 1",
    )
    # Its lease lapses within one period; the next occurrence after that is instance 0's.
    assert when - killed <= timedelta(seconds=LEASE_SECONDS + 5)

    assert_each_occurrence_ran_once(host)
    assert set(served_by(host, 10)) == {"0"}
    assert "instance 1 (pid" in host.output() and "the others go on" in host.output()


def test_the_lease_runs_each_occurrence_once_and_moves_when_it_lapses(storage: str) -> None:
    """Two instances' view of one timer's lease, without processes."""
    tables = TableStore.from_settings(StorageSettings(connection_string=storage))
    a, b = (TimerLease(tables, "host-7071", "sweep", owner, seconds=2) for owner in "ab")
    first = datetime(2030, 1, 1, tzinfo=UTC)
    second, third, fourth = (first + timedelta(seconds=n) for n in (1, 2, 3))

    assert a.claim(first) and not b.claim(first)  # one of them runs it
    assert not a.claim(first)  # and only once
    assert not b.claim(second) and a.claim(second)  # a holds the lease
    a.renew()
    assert a.held and not b.held

    # a stops renewing (it died): once its lease lapses, b runs the next occurrence.
    wait(lambda: b.claim(third), timeout=10, what="b to take the lapsed lease")
    assert b.held and not a.claim(fourth) and not a.held  # a learns it lost the lease
    b.release()  # a clean stop: a takes over at once
    assert a.claim(fourth) and not b.claim(fourth)
