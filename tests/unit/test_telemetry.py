"""Graph calls become client spans: one per HTTP request, named by method and path template."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sync_core import telemetry
from sync_core.graph.client import GraphClient, event_path
from sync_core.graph.errors import GraphError
from tests.conftest import settings_with

EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process; this module's is the one.
    trace.set_tracer_provider(_PROVIDER)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


class Answers:
    """A requests.Session that answers from a list (an exception is raised)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(
            status_code=answer,
            content=b'{"value": []}' if answer < 300 else b'{"error": {"code": "x"}}',
            headers={"Retry-After": "0"} if answer == 429 else {},
            json=lambda: {"value": []} if answer < 300 else {"error": {"code": "x"}},
        )


def client(session: Answers) -> GraphClient:
    tokens = SimpleNamespace(token=lambda force_refresh=False: "token")
    return GraphClient(settings_with(), tokens, session, sleep=lambda _: None)  # type: ignore[arg-type]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


MAILBOX = "room.berlin@contoso.example"
EVENT = "AAMkAGI2TG93AAA="


def test_one_client_span_per_request_with_retries_counted(
    spans: InMemorySpanExporter,
) -> None:
    graph = client(Answers(429, 503, 200))
    graph.request("GET", event_path(MAILBOX, EVENT), mailbox=MAILBOX)
    found = spans.get_finished_spans()
    assert [s.name for s in found] == ["GET /users/{mailbox}/calendar/events/{id}"] * 3
    assert [attributes(s)["http.request.resend_count"] for s in found] == [0, 1, 2]
    assert [attributes(s)["http.response.status_code"] for s in found] == [429, 503, 200]
    assert [s.status.status_code for s in found] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    for span in found:
        assert span.kind is SpanKind.CLIENT
        assert attributes(span)["http.request.method"] == "GET"
        assert attributes(span)["url.template"] == "/users/{mailbox}/calendar/events/{id}"
        text = repr(attributes(span)) + span.name
        assert "contoso" not in text and EVENT not in text  # no mailbox, no id


def test_a_failed_connection_is_a_failed_span(spans: InMemorySpanExporter) -> None:
    graph = client(Answers(requests.ConnectionError("refused")))
    with pytest.raises(GraphError):
        graph.request("POST", f"/users/{MAILBOX}/calendar/events", mailbox=MAILBOX)
    (span,) = spans.get_finished_spans()
    assert span.name == "POST /users/{mailbox}/calendar/events"
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "ConnectionError"
    assert "http.response.status_code" not in attributes(span)


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("https://graph.microsoft.com/v1.0/users/a%40b.example/calendarView/delta?$deltatoken=x",
         "/users/{mailbox}/calendarView/delta"),
        ("/subscriptions/7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "/subscriptions/{id}"),
        ("/applications/5f7f1c2e-1111-2222-3333-444455556666/addPassword",
         "/applications/{id}/addPassword"),
        ("/places/microsoft.graph.room", "/places/microsoft.graph.room"),
        ("/$batch", "/$batch"),
        ("/users/x@y.example/calendar/getSchedule", "/users/{mailbox}/calendar/getSchedule"),
    ],
)  # fmt: skip
def test_path_templates_hide_mailboxes_and_ids(url: str, template: str) -> None:
    assert telemetry.path_template(url) == template


def test_no_exporter_without_a_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    telemetry.configure_export()  # nothing to set up, nothing imported
