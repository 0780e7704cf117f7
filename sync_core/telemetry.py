"""Traces of outgoing calls, through the OpenTelemetry API.

Every HTTP request to Microsoft Graph is one client span (an Application Insights *dependency*)
named ``GET /users/{mailbox}/calendar/events/{id}``: method and path template (no mailbox, id or
query), status, and ``http.request.resend_count`` (0 on the first try, 1 on the first retry).

Without an SDK the API records nothing and costs next to nothing. In Azure the Functions Python
worker sets up the Azure Monitor distro (``azure-monitor-opentelemetry``) itself
(``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``, host.json ``"telemetryMode":
"OpenTelemetry"``), and the spans go to Application Insights. Anywhere else with
``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, ``configure_export`` (function_app.py at start-up,
or the first span) sets it up the same way, with the identity
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` names. Without a connection string nothing is
imported, so a local run or a test does not pay for it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
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

# The distro's own instrumentations, off (and in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS of
# infra/app/function.bicep, for the worker's set-up): requests and urllib3 would trace every Graph
# call a second time under its full URL (mailbox, event id), azure_sdk every storage call with its
# table keys (mailbox addresses), urllib any other call with its URL. The spans below are the
# Graph calls.
DISABLED_INSTRUMENTATIONS = ("azure_sdk", "requests", "urllib", "urllib3")

_lock = threading.Lock()
_tracers: dict[str, Tracer] = {}  # set up once, on first use
_export_lock = threading.Lock()
_export_decided = threading.Event()  # configure_export has decided, once per process


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


def _worker_exports(env: Mapping[str, str]) -> bool:
    """The Functions Python worker set the distro up before it loaded the app (its "true")."""
    flag = env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "")
    return flag.strip().lower() in {"1", "true", "t", "yes", "y"}


def configure_export(env: Mapping[str, str] | None = None) -> bool:
    """Send spans (and log lines) to Application Insights where it is configured; True if this did.

    Once per process, and only with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set: without it
    nothing is imported. Not where the Functions worker has set the distro up already (a second
    set-up would add a second exporter and duplicate every log line). Never raises.
    """
    env = os.environ if env is None else env
    connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection or _export_decided.is_set():
        return False
    with _export_lock:
        if _export_decided.is_set():
            return False
        _export_decided.set()
        if _worker_exports(env):
            return False
        try:
            distro = importlib.import_module("azure.monitor.opentelemetry")
        except ImportError:
            log.info("telemetry: azure-monitor-opentelemetry is not installed; no traces are sent")
            return False
        options: dict[str, Any] = {
            "connection_string": connection,
            "instrumentation_options": {
                name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS
            },
        }
        auth = env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
        fields = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
        try:
            if fields.get("Authorization", "").upper() == "AAD":
                from sync_core.identity import azure_credential

                options["credential"] = azure_credential(fields.get("ClientId") or None)
            distro.configure_azure_monitor(**options)
        except Exception:  # telemetry must never stop the app
            log.exception("telemetry: Azure Monitor could not be set up; no traces are sent")
            return False
        return True


def tracer() -> Tracer:
    found = _tracers.get(TRACER_NAME)
    if found is None:
        configure_export()  # entry points other than function_app
        with _lock:
            found = _tracers.get(TRACER_NAME)
            if found is None:
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
    parts = urlsplit(url)
    scheme, host = parts.scheme or "https", parts.hostname or ""
    attributes: dict[str, Any] = {
        "http.request.method": method.upper(),
        "url.template": template,
        # Scrubbed to the template: Application Insights names the dependency after the path of
        # url.full ("GET /" without it) and shows url.full as its data. Never the real URL.
        "url.full": f"{scheme}://{host}{template}" if host else template,
        "url.scheme": scheme,
        "server.address": host,
        "http.request.resend_count": resend_count,
    }
    if host:
        attributes["server.port"] = parts.port or (443 if scheme == "https" else 80)
    with tracer().start_as_current_span(
        f"{method.upper()} {template}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        try:
            yield GraphSpan(span)
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            raise
