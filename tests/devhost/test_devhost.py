"""devhost end to end: a real subprocess serving tests/devhost/sample_app.py against Azurite."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.queue import QueueMessage

from devhost.azurite import free_port
from sync_core.store.queues import QueueStore, encode_message
from tests.conftest import example_settings

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "devhost-test-key-5b1f"
AUTH = {"x-functions-key": KEY}
# Short timings so that retries and polling are quick in tests.
HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxPollingInterval": "00:00:01",
            "visibilityTimeout": "00:00:00",
            "maxDequeueCount": 3,
        },
    },
}
NEVER = "0 0 0 1 1 *"  # once a year: only the admin endpoint runs the timer in most tests
SAMPLE_SETTINGS = ("SAMPLE_SCHEDULE", "SAMPLE_RECORD_DIR", "FUNCTIONS_KEY")


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Host:
    process: subprocess.Popen[bytes]
    port: int
    root: Path
    records: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return (self.root / "stdout.txt").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.root / "stderr.txt").read_text(errors="replace")

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, timeout=10, **kwargs)

    def admin(
        self, name: str, text: str = "", headers: dict[str, str] | None = None
    ) -> requests.Response:
        """``POST /admin/functions/{name}`` with the key (unless other headers are given)."""
        return self.call(
            "POST",
            f"/admin/functions/{name}",
            json={"input": text},
            headers=AUTH if headers is None else headers,
        )

    def record(self, name: str) -> list[str]:
        path = self.records / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_exit(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


StartHost = Callable[..., Host]


@pytest.fixture
def start_host(settings_env: dict[str, str], tmp_path: Path) -> Iterator[StartHost]:
    """Start devhost with the sample app; ``None`` as an override removes a setting."""
    started: list[Host] = []

    def start(
        wait: bool = True,
        host_json: dict[str, Any] | None = None,
        local_settings: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        **overrides: str | None,
    ) -> Host:
        root = tmp_path / f"host{len(started)}"
        records = root / "records"
        records.mkdir(parents=True)
        (root / "host.json").write_text(json.dumps(host_json or HOST_JSON))
        if local_settings is not None:
            (root / "local.settings.json").write_text(json.dumps(local_settings))
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in example_settings() and k not in SAMPLE_SETTINGS
        }
        env.update(settings_env)
        env.update(FUNCTIONS_KEY=KEY, SAMPLE_SCHEDULE=NEVER, SAMPLE_RECORD_DIR=str(records))
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        port = free_port()
        with (root / "stdout.txt").open("wb") as out, (root / "stderr.txt").open("wb") as err:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app"),
                    *("--root", str(root), "--port", str(port)),
                    *args,
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        host = Host(process, port, root, records)
        started.append(host)
        if wait:
            wait_until(lambda: process.poll() is not None or port_open(port), 30, "the port")
            assert process.poll() is None, f"devhost exited at start-up:\n{host.stderr}"
            wait_until(lambda: "Host started" in host.stdout, 10, "'Host started'")
        return host

    yield start
    for host in started:
        host.terminate()


def messages(queues: QueueStore, name: str) -> list[QueueMessage]:
    return list(queues.queue(name).peek_messages(max_messages=32))


def wait_for_messages(queues: QueueStore, name: str, count: int, timeout: float = 15) -> list[str]:
    found = wait_until(
        lambda: (m := messages(queues, name)) and len(m) >= count and m,
        timeout,
        f"{count} message(s) in {name}",
    )
    return [str(m.content) for m in found]


def decoded(content: str) -> str:
    return base64.b64decode(content, validate=True).decode("utf-8")


# HTTP -------------------------------------------------------------------------------------------


def test_startup_lists_every_function(start_host: StartHost) -> None:
    host = start_host()
    out = host.stdout
    assert f"items: [GET] {host.base}/api/items/{{kind}}/{{id:int}}" in out
    assert f"greet: [GET] {host.base}/api/greet/{{name?}}" in out
    assert f"tick: timerTrigger ({NEVER})" in out
    assert "nightly: timerTrigger (0 0 3 * * *)" in out
    assert "consume: queueTrigger (sample-in)" in out
    assert "always_fails: queueTrigger (sample-fail)" in out
    assert f"Host started: {host.base}" in out


def test_routes_params_methods_and_precedence(start_host: StartHost) -> None:
    host = start_host()

    r = host.call("GET", "/api/items/room/42?x=1&x=2&y=", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = r.json()
    assert (body["kind"], body["id"], body["method"]) == ("room", "42", "GET")
    assert body["query"] == {"x": "1", "y": ""}
    assert body["url"].endswith("/api/items/room/42?x=1&x=2&y=")

    # A literal segment beats a parameter; the int constraint rejects "abc".
    r = host.call("GET", "/api/items/desk/special", headers=AUTH)
    assert (r.status_code, r.text) == (200, "special desk")
    assert host.call("GET", "/api/items/room/abc", headers=AUTH).status_code == 404

    # Two functions share a template with different methods; a third method is 405.
    assert host.call("DELETE", "/api/items/room/42", headers=AUTH).status_code == 204
    r = host.call("POST", "/api/items/room/42", headers=AUTH)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "DELETE"}

    for path in ("/api/nothing-here", "/items/room/42", "/api", "/api/items/room"):
        assert host.call("GET", path, headers=AUTH).status_code == 404, path

    # Optional parameter, async function, custom status and header.
    r = host.call("GET", "/api/greet")
    assert (r.status_code, r.text, r.headers["X-Sample"]) == (201, "hello world", "yes")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    r = host.call("GET", "/api/greet/ada%20l")
    assert (r.status_code, r.text) == (201, "hello ada l")


def test_function_key_is_enforced(start_host: StartHost) -> None:
    host = start_host()
    url = "/api/items/room/7"

    r = host.call("GET", url)
    assert (r.status_code, r.content) == (401, b"")
    assert host.call("GET", url, headers={"x-functions-key": "wrong"}).status_code == 401
    assert host.call("GET", url, params={"code": "wrong"}).status_code == 401
    assert host.call("GET", url, headers=AUTH).status_code == 200
    assert host.call("GET", url, params={"code": KEY}).status_code == 200
    # Anonymous routes never need it.
    assert host.call("GET", "/api/greet/x").status_code == 201
    # The admin endpoint is protected too.
    assert host.admin("nightly", headers={"x-functions-key": "wrong"}).status_code == 401
    assert host.record("nightly") == []
    assert KEY not in host.stderr  # keys are never logged


def test_without_functions_key_nothing_is_enforced(start_host: StartHost) -> None:
    host = start_host(FUNCTIONS_KEY="")
    assert host.call("GET", "/api/items/room/7").status_code == 200
    assert host.admin("nightly", headers={}).status_code == 202
    assert host.record("nightly") == ["past_due=False"]


def outward_address() -> str | None:
    """This machine's address on its first non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_without_functions_key_only_loopback_is_served(start_host: StartHost) -> None:
    host = start_host(FUNCTIONS_KEY="", args=("--host", "0.0.0.0"))
    assert "no FUNCTIONS_KEY: serving loopback only" in host.stdout
    assert host.call("GET", "/api/greet/x").status_code == 201
    # A proxy or tunnel forwards from loopback; its headers give it away.
    for header in ("X-Forwarded-For", "Forwarded", "X-Forwarded-Host", "Via"):
        refused = host.call("GET", "/api/greet/x", headers={header: "203.0.113.9"})
        assert refused.status_code == 403, header
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert "FUNCTIONS_KEY" in refused.json()["detail"]
    tunneled = host.admin("nightly", headers={"X-Forwarded-For": "203.0.113.9"})
    assert tunneled.status_code == 403
    assert host.record("nightly") == []
    address = outward_address()
    if address is None:
        pytest.skip("no non-loopback interface to connect from")
    for path in ("/api/greet/x", "/api/items/room/7"):
        answer = requests.get(f"http://{address}:{host.port}{path}", timeout=10)
        assert answer.status_code == 403, path
    answer = requests.post(
        f"http://{address}:{host.port}/admin/functions/nightly", json={"input": ""}, timeout=10
    )
    assert answer.status_code == 403
    assert host.record("nightly") == []


def test_with_a_key_other_hosts_get_anonymous_routes_only(start_host: StartHost) -> None:
    host = start_host(args=("--host", "0.0.0.0"))
    assert "no FUNCTIONS_KEY" not in host.stdout
    address = outward_address() or "127.0.0.1"
    base = f"http://{address}:{host.port}"
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert requests.get(f"{base}/api/greet/x", headers=forwarded, timeout=10).status_code == 201
    assert requests.get(f"{base}/api/items/room/7", timeout=10).status_code == 401
    keyed = requests.get(f"{base}/api/items/room/7", headers={**AUTH, **forwarded}, timeout=10)
    assert keyed.status_code == 200


def raw_exchange(port: int, head: bytes, body: bytes = b"", *, read_first: bool = False) -> bytes:
    """Send a request by hand; the answer's bytes (``read_first``: before sending ``body``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        if not read_first:
            conn.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        conn.settimeout(1.0)
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def test_a_body_over_the_limit_is_refused_before_it_is_read(start_host: StartHost) -> None:
    host = start_host()
    limit = 256 * 1024
    # A declared length over the limit: 413 at once, though no byte of the body was sent.
    head = (
        f"POST /api/enqueue HTTP/1.1\r\nHost: x\r\nx-functions-key: {KEY}\r\n"
        f"Content-Length: {90 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = raw_exchange(host.port, head, read_first=True)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"application/problem+json" in answer
    # Expect: 100-continue over the limit: 413 instead of 100.
    expecting = head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    assert raw_exchange(host.port, expecting, read_first=True).startswith(b"HTTP/1.1 413 ")
    # Over the limit by one byte, sent whole: the client reads the 413.
    r = host.call("POST", "/api/enqueue", data=b"x" * (limit + 1), headers=AUTH)
    assert r.status_code == 413
    assert r.json()["status"] == 413
    at_limit = host.call("GET", "/api/items/room/7", data=b"y" * limit, headers=AUTH)
    assert at_limit.status_code == 200


def test_chunked_bodies_are_read_up_to_the_limit(start_host: StartHost, queues: QueueStore) -> None:
    host = start_host()
    limit = 256 * 1024
    head = (
        f"POST /api/enqueue HTTP/1.1\r\nHost: x\r\nx-functions-key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    fine = b"5;ext=1\r\nhello\r\n6\r\n chunk\r\n0\r\nTrailer: x\r\n\r\n"
    assert raw_exchange(host.port, head, fine).startswith(b"HTTP/1.1 202 ")
    assert decoded(wait_for_messages(queues, "sample-out", 1)[0]) == "hello chunk"
    # Chunks past the limit: 413 as soon as the chunk that crosses it is announced.
    big = f"{limit:x}\r\n".encode() + b"z" * limit + b"\r\n1\r\nz\r\n0\r\n\r\n"
    assert raw_exchange(host.port, head, big).startswith(b"HTTP/1.1 413 ")
    huge = f"{90 * 1024 * 1024:x}\r\n".encode()
    assert raw_exchange(host.port, head, huge).startswith(b"HTTP/1.1 413 ")
    for broken in (b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"):
        assert raw_exchange(host.port, head, broken).startswith(b"HTTP/1.1 400 "), broken


def test_http_failure_is_500_and_writes_no_output(
    start_host: StartHost, queues: QueueStore
) -> None:
    host = start_host()
    r = host.call("POST", "/api/enqueue", data=b"fail-secret-body-9d2c", params={"code": KEY})
    assert r.status_code == 500
    assert "error" in r.json()
    assert messages(queues, "sample-out") == []  # written before the reply, so this is final
    log = wait_until(lambda: "function=enqueue" in host.stderr and host.stderr, 10, "the log line")
    assert "function=enqueue trigger=http" in log
    assert "outcome=failed: RuntimeError: asked to fail" in log
    assert "Traceback" in log  # the function's traceback is logged, as Azure does
    assert "secret-body-9d2c" not in log  # never the request body
    assert KEY not in log


def test_http_queue_output_binding_writes_base64(start_host: StartHost, queues: QueueStore) -> None:
    host = start_host()
    r = host.call("POST", "/api/enqueue", data="payload-1", headers=AUTH)
    assert (r.status_code, r.text) == (202, "queued")
    contents = [str(m.content) for m in messages(queues, "sample-out")]
    assert contents == [encode_message("payload-1")]
    assert decoded(contents[0]) == "payload-1"


# Timers -----------------------------------------------------------------------------------------


def test_admin_endpoint_runs_timers_once(start_host: StartHost, queues: QueueStore) -> None:
    host = start_host()
    r = host.admin("nightly")
    assert (r.status_code, r.content) == (202, b"")
    assert host.record("nightly") == ["past_due=False"]

    # A timer with an output binding writes its message.
    assert host.admin("tick").status_code == 202
    assert [json.loads(decoded(c)) for c in wait_for_messages(queues, "sample-ticks", 1)] == [
        {"past_due": False}
    ]

    assert host.admin("no_such").status_code == 404
    assert host.admin("items").status_code == 400  # HTTP functions are called on their route
    assert "function=nightly trigger=timer via=admin" in host.stderr


def test_timer_fires_on_its_schedule(start_host: StartHost, queues: QueueStore) -> None:
    start_host(SAMPLE_SCHEDULE="* * * * * *")
    ticks = wait_for_messages(queues, "sample-ticks", 2, timeout=15)
    assert all(json.loads(decoded(t)) == {"past_due": False} for t in ticks)


# Queues -----------------------------------------------------------------------------------------


def test_queue_message_is_consumed_and_deleted(start_host: StartHost, queues: QueueStore) -> None:
    host = start_host()
    queues.queue("sample-in").send_message(encode_message("hello"))
    (consumed,) = wait_for_messages(queues, "sample-consumed", 1)
    record = json.loads(decoded(consumed))
    assert (record["body"], record["dequeue_count"]) == ("hello", 1)
    wait_until(lambda: queues.depth("sample-in") == 0, 10, "sample-in to be empty")

    # Not base64: straight to the poison queue, unchanged, without running the function.
    queues.queue("sample-in").send_message("not base64!!")
    assert wait_for_messages(queues, "sample-in-poison", 1) == ["not base64!!"]
    assert len(messages(queues, "sample-consumed")) == 1

    # The admin endpoint runs a queue function with the input as the message body.
    assert host.admin("consume", "via-admin").status_code == 202
    records = [json.loads(decoded(c)) for c in wait_for_messages(queues, "sample-consumed", 2)]
    assert (records[1]["body"], records[1]["dequeue_count"]) == ("via-admin", 1)


def test_worker_processes_share_the_queue_work(start_host: StartHost, queues: QueueStore) -> None:
    host = start_host(FUNCTIONS_WORKER_PROCESS_COUNT="2")
    assert "(2 worker processes)" in host.stdout
    wait_until(lambda: "Queue worker" in host.stdout, 15, "the queue worker to start")
    sent = [f"slow-{i}" for i in range(40)]
    for body in sent:
        queues.queue("sample-in").send_message(encode_message(body))
    consumed = [json.loads(decoded(c)) for c in wait_for_messages(queues, "sample-consumed", 32)]
    wait_until(lambda: queues.depth("sample-in") == 0, 15, "sample-in to be empty")
    pids = {r["pid"] for r in consumed}
    assert host.process.pid in pids and len(pids) == 2  # the host and one queue worker

    host.terminate()
    (worker,) = pids - {host.process.pid}
    wait_until(lambda: not Path(f"/proc/{worker}").exists(), 10, "the queue worker to stop")
    assert "Host stopped." in host.stdout


def test_failing_message_goes_to_poison_after_max_dequeue_count(
    start_host: StartHost, queues: QueueStore
) -> None:
    host = start_host()
    queues.queue("sample-fail").send_message(encode_message("doomed"))
    assert wait_for_messages(queues, "sample-fail-poison", 1) == [encode_message("doomed")]
    assert host.record("attempts") == ["doomed 1", "doomed 2", "doomed 3"]  # maxDequeueCount 3
    assert queues.depth("sample-fail") == 0
    assert "moved to sample-fail-poison" in host.stderr

    r = host.admin("always_fails", "once")
    assert r.status_code == 500
    assert r.json() == {"error": "RuntimeError: this function always fails"}
    assert host.record("attempts")[-1] == "once 1"


# Lifecycle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_in_flight_work(start_host: StartHost, signum: int) -> None:
    host = start_host()
    result: dict[str, requests.Response] = {}

    def call_slow() -> None:
        result["response"] = host.call("GET", "/api/slow")

    caller = threading.Thread(target=call_slow)
    caller.start()
    wait_until(lambda: host.record("slow-started"), 10, "the slow function to start")
    host.process.send_signal(signum)
    assert host.wait_exit(20) == 0
    caller.join(timeout=20)
    assert (result["response"].status_code, result["response"].text) == (200, "done")
    assert "Host stopped." in host.stdout
    assert "Traceback" not in host.stderr
    assert not port_open(host.port)


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"TENANT_ID": None}, "TENANT_ID"),
        ({"SYNC_WINDOW_DAYS": "abc"}, "SYNC_WINDOW_DAYS"),
        ({"SAMPLE_SCHEDULE": None}, "SAMPLE_SCHEDULE"),
        ({"SAMPLE_SCHEDULE": "every minute"}, "SAMPLE_SCHEDULE"),
        ({"FUNCTIONS_WORKER_PROCESS_COUNT": "11"}, "FUNCTIONS_WORKER_PROCESS_COUNT"),
    ],
    ids=["missing", "malformed", "missing-schedule", "bad-schedule", "bad-worker-count"],
)
def test_config_error_is_one_line_and_exit_2(
    start_host: StartHost, overrides: dict[str, str | None], setting: str
) -> None:
    host = start_host(wait=False, **overrides)
    assert host.wait_exit() == 2
    lines = [line for line in host.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, host.stderr
    assert lines[0].startswith("error: ")
    assert setting in lines[0]
    assert "Traceback" not in host.stderr
    assert "Host started" not in host.stdout


def test_bad_host_json_is_one_line_and_exit_2(start_host: StartHost) -> None:
    bad = json.loads(json.dumps(HOST_JSON))
    bad["extensions"]["queues"]["maxPollingInterval"] = "soon"
    host = start_host(wait=False, host_json=bad)
    assert host.wait_exit() == 2
    lines = [line for line in host.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "maxPollingInterval" in lines[0], host.stderr


def test_local_settings_json_fills_what_the_environment_does_not_set(
    start_host: StartHost, settings_env: dict[str, str]
) -> None:
    values = {"TENANT_ID": settings_env["TENANT_ID"], "FUNCTIONS_KEY": "from-local-settings"}
    host = start_host(local_settings={"IsEncrypted": False, "Values": values}, TENANT_ID=None)
    # TENANT_ID came from the file (or start-up would have failed); the environment's key wins.
    assert host.call("GET", "/api/items/room/1", headers=AUTH).status_code == 200
    r = host.call("GET", "/api/items/room/1", params={"code": "from-local-settings"})
    assert r.status_code == 401
