"""Fixtures for the sandbox tests: one real HTTPS sandbox per session, reset before each test,
a Graph client holding a real token, and a tiny HTTP receiver for notifications."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandbox import Sandbox, Settings

BASE_SETTINGS: dict[str, Any] = {
    "notification_delay_seconds": 0.05,
    "delivery_retry_delays": [0.2, 0.4],
    "validation_timeout_seconds": 3.0,
    "delivery_timeout_seconds": 3.0,
    "token_lifetime_seconds": 3600,
    "concurrency_limit": 4,
    "request_budget": 10_000,
    "budget_window_seconds": 600.0,
    "require_https_notifications": False,
    "calendar_page_size": 10,
    "places_page_size": 100,
    "credential_propagation_seconds": 0.0,
}

ROOM = "room.berlin@contoso.example"
ROOM2 = "munich.isar@contoso.example"
PERSON = "ada@contoso.example"


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(state_dir=tmp_path_factory.mktemp("sandbox"), settings=BASE_SETTINGS).start()
    yield sb
    sb.stop()


@pytest.fixture
def sb(running: Sandbox) -> Sandbox:
    """The sandbox, reset to its seed (rooms in Berlin and Munich, three people)."""
    running.control.reset(seed=True)
    running.control.update_settings(**{**Settings().to_dict(), **BASE_SETTINGS})
    return running


class Graph:
    """A thin HTTPS client for the sandbox's Graph, like the product's would be."""

    def __init__(self, sb: Sandbox, token: str | None) -> None:
        self.sb = sb
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(sb.ca_file)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.sb.url}/v1.0{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=30, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.patch(self.url(path), json=body, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.url(path), timeout=30, **kwargs)


def token_response(sb: Sandbox, **form: str) -> requests.Response:
    """A raw client-credentials token request (what MSAL sends)."""
    data = {
        "grant_type": "client_credentials",
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "scope": f"{sb.url}/.default",
    }
    data.update(form)
    tenant = data.pop("tenant", sb.tenant_id)
    return requests.post(
        f"{sb.url}/{tenant}/oauth2/v2.0/token", data=data, verify=str(sb.ca_file), timeout=30
    )


def get_token(sb: Sandbox, **form: str) -> str:
    answer = token_response(sb, **form)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@pytest.fixture
def graph(sb: Sandbox) -> Graph:
    return Graph(sb, get_token(sb))


def event_body(
    subject: str, start: str, end: str, zone: str = "UTC", **extra: Any
) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        **extra,
    }


class Receiver:
    """A local notification endpoint: answers validation requests and records deliveries."""

    def __init__(self) -> None:
        self.validation_mode = "echo"  # echo | wrong | status500 | json | slow
        self.delivery_statuses: list[int] = []  # answered in order, then 202
        self.validations: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    with receiver.lock:
                        receiver.validations.append(
                            {"path": parts.path, "raw_query": parts.query, "token": token}
                        )
                    mode = receiver.validation_mode
                    if mode == "status500":
                        self._answer(500, b"nope", "text/plain")
                    elif mode == "wrong":
                        self._answer(200, b"not the token", "text/plain")
                    elif mode == "slow":
                        time.sleep(1.0)
                        self._answer(200, token.encode(), "text/plain")
                    elif mode == "json":
                        self._answer(200, json.dumps(token).encode(), "application/json")
                    else:
                        self._answer(200, token.encode(), "text/plain; charset=utf-8")
                    return
                with receiver.lock:
                    receiver.posts.append(
                        {
                            "path": parts.path,
                            "query": query,
                            "body": json.loads(body or b"{}"),
                            "time": time.monotonic(),
                        }
                    )
                    status = (
                        receiver.delivery_statuses.pop(0) if receiver.delivery_statuses else 202
                    )
                self._answer(status, b"", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def notifications(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                item
                for post in self.posts
                if path is None or post["path"] == path
                for item in post["body"].get("value", [])
            ]

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; posts so far: {self.posts}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


EXAMPLES = Path(__file__).parent / "graph_examples"


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
