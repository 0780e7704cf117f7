"""Traces of outgoing calls, through the OpenTelemetry API.

Every HTTP request to Microsoft Graph is one client span (an Application Insights *dependency*)
named ``GET /users/{mailbox}/calendar/events/{id}``: method and path template (no mailbox, id or
query), status, and ``http.request.resend_count`` (0 on the first try, 1 on the first retry).

Without an SDK the API records nothing and costs next to nothing. Where
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set and the Azure Monitor distro
(``azure-monitor-opentelemetry``) is installed, the first span sets up the exporter (with the
identity ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` names); nothing is imported before, so a
cold start does not pay for it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

TRACER_NAME = "sync_core.graph"
# Path segments that a variable part follows: /users/{mailbox}, /events/{id}, ...
_MAILBOX_AFTER = frozenset({"users"})
_ID_AFTER = frozenset(
    {
        "events",
        "subscriptions",
        "applications",
        "servicePrincipals",
        "calendars",
        "roomLists",
        "rooms",
        "places",
        "instances",
        "attachments",
        "groups",
    }
)
_LOOKS_LIKE_ID = re.compile(r"[@%=]|^[0-9a-fA-F-]{16,}$|^[A-Za-z0-9_-]{24,}$")

_lock = threading.Lock()
_tracers: dict[str, Tracer] = {}  # set up once, on first use


def path_template(url: str) -> str:
    """The path of a Graph URL without its version, query, mailboxes and ids."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if parts and parts[0] in ("v1.0", "beta"):
        parts = parts[1:]
    shown: list[str] = []
    for index, part in enumerate(parts):
        before = parts[index - 1] if index else ""
        if before in _MAILBOX_AFTER:
            shown.append("{mailbox}")
        elif part.startswith("microsoft.graph."):  # a type cast, not an id
            shown.append(part)
        elif before in _ID_AFTER or _LOOKS_LIKE_ID.search(part):
            shown.append("{id}")
        else:
            shown.append(part)
    return "/" + "/".join(shown)


def _configure() -> None:
    """Send spans to Application Insights when it is configured and the distro is there."""
    connection = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection:
        return
    try:
        distro = importlib.import_module("azure.monitor.opentelemetry")
    except ImportError:
        log.info("telemetry: azure-monitor-opentelemetry is not installed; no traces are sent")
        return
    options: dict[str, Any] = {"connection_string": connection}
    auth = os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
    fields = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if fields.get("Authorization", "").upper() == "AAD":
        from sync_core.identity import azure_credential

        options["credential"] = azure_credential(fields.get("ClientId") or None)
    try:
        distro.configure_azure_monitor(**options)
    except Exception:  # telemetry must never stop the app
        log.exception("telemetry: Azure Monitor could not be set up; no traces are sent")


def tracer() -> Tracer:
    found = _tracers.get(TRACER_NAME)
    if found is None:
        with _lock:
            found = _tracers.get(TRACER_NAME)
            if found is None:
                _configure()
                from opentelemetry import trace

                found = _tracers[TRACER_NAME] = trace.get_tracer(TRACER_NAME)
    return found


class GraphSpan:
    """What the caller adds once Graph has answered."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))


@contextmanager
def graph_request(method: str, url: str, resend_count: int) -> Iterator[GraphSpan]:
    """One span around one HTTP request to Graph; an exception marks it failed and goes on."""
    from opentelemetry.trace import SpanKind

    template = path_template(url)
    attributes: dict[str, Any] = {
        "http.request.method": method.upper(),
        "url.template": template,
        "server.address": urlsplit(url).hostname or "",
        "http.request.resend_count": resend_count,
    }
    with tracer().start_as_current_span(
        f"{method.upper()} {template}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        try:
            yield GraphSpan(span)
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            raise
