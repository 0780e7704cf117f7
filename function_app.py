"""Azure Functions entry point: every trigger, thin. The logic lives in ``sync_core``."""

from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any

import azure.functions as func

from sync_core.config import get_settings
from sync_core.store import queues
from sync_core.telemetry import configure_export
from sync_core.web import Request, serve


class _OnFirstUse:
    """A module imported when a function first runs, not when the host indexes the app: the
    Graph, MSAL and storage SDKs then cost nothing on a cold start until they are needed."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


api = _OnFirstUse("sync_core.api")
bookings = _OnFirstUse("sync_core.outbound.apply")
credentials = _OnFirstUse("sync_core.credentials.watch")
inbound = _OnFirstUse("sync_core.inbound.sync")
recover = _OnFirstUse("sync_core.outbound.recover")
subscriptions = _OnFirstUse("sync_core.inbound.subscriptions")
_services = _OnFirstUse("sync_core.services")


def services() -> Any:
    return _services.services()


configure_export()  # spans to Application Insights, unless the Functions worker sends them

# Validate every setting at start-up: a bad one stops the app with one line naming it.
get_settings()

# Access keys, with the Functions host's rules: a function key opens its own function only, a host
# key every function-level function, the master key everything. Every keyed route here is
# function-level: the booking platform gets a key of `booking_events` alone, which no admin route
# accepts; admins use a host key (`admin`). No route is admin-level, so the master key (which
# also opens the runtime's own admin API and key management) is never handed out.
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# host.json sets routePrefix "" and every route spells out "api/": the Functions host rejects
# route templates that begin with "admin" (its own reserved space), which "admin/..." under the
# default "api" prefix would.


def _http(handler: Any, req: func.HttpRequest) -> func.HttpResponse:
    request = Request(
        method=req.method,
        url=req.url,
        route=dict(req.route_params),
        query=dict(req.params),
        headers={k.lower(): v for k, v in req.headers.items()},
        body=req.get_body() or b"",
    )
    response = serve(handler, request)
    return func.HttpResponse(
        response.body, status_code=response.status, headers=dict(response.headers)
    )


@app.function_name("health")
@app.route(route="api/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.health, req)


@app.function_name("mappings_list")
@app.route(route="api/admin/mappings", methods=["GET"])
def mappings_list(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.list_mappings, req)


@app.function_name("mappings_get")
@app.route(route="api/admin/mappings/{resource_id}", methods=["GET"])
def mappings_get(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.get_mapping, req)


@app.function_name("mappings_put")
@app.route(route="api/admin/mappings/{resource_id}", methods=["PUT"])
def mappings_put(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.put_mapping, req)


@app.function_name("mappings_delete")
@app.route(route="api/admin/mappings/{resource_id}", methods=["DELETE"])
def mappings_delete(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.delete_mapping, req)


@app.function_name("booking_events")  # the name the platform's function key is scoped to
@app.route(route="api/bookings/events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def booking_events(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.booking_events, req)


# The platform asks for availability with a key of `availability` (or a host key).
@app.function_name("availability")
@app.route(route="api/availability", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def availability(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.availability, req)


@app.function_name("apply_booking")
@app.queue_trigger(
    arg_name="msg", queue_name=queues.APPLY_BOOKING, connection="AzureWebJobsStorage"
)
def apply_booking(msg: func.QueueMessage) -> None:
    bookings.apply(services(), json.loads(msg.get_body()), redelivered=(msg.dequeue_count or 1) > 1)


@app.function_name("deliver")
@app.queue_trigger(arg_name="msg", queue_name=queues.DELIVER, connection="AzureWebJobsStorage")
def deliver(msg: func.QueueMessage) -> None:
    services().platform.deliver(json.loads(msg.get_body()))


@app.function_name("graph_notifications")
@app.route(route="api/graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.graph_notifications, req)


@app.function_name("graph_lifecycle")
@app.route(route="api/graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.graph_lifecycle, req)


@app.function_name("sync_mailbox")
@app.queue_trigger(arg_name="msg", queue_name=queues.SYNC_MAILBOX, connection="AzureWebJobsStorage")
def sync_mailbox(msg: func.QueueMessage) -> None:
    inbound.sync_mailbox(services(), json.loads(msg.get_body()))


@app.function_name("renew_subscriptions")
@app.timer_trigger(arg_name="timer", schedule="%RENEW_SCHEDULE%")
def renew_subscriptions(timer: func.TimerRequest) -> None:
    subscriptions.renew_all(services())


@app.function_name("recover_stalled")
@app.timer_trigger(arg_name="timer", schedule="%RECOVER_SCHEDULE%")
def recover_stalled(timer: func.TimerRequest) -> None:
    recover.recover_stalled(services())


@app.function_name("safety_sweep")
@app.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%")
def safety_sweep(timer: func.TimerRequest) -> None:
    inbound.safety_sweep(services())


# -- admin surface: rooms, resync, status (JSON and the page), history, doctor -------------------


@app.function_name("admin_rooms")
@app.route(route="api/admin/rooms", methods=["GET"])
def admin_rooms(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.list_rooms, req)


@app.function_name("mappings_resync")
@app.route(route="api/admin/mappings/{resource_id}/resync", methods=["POST"])
def mappings_resync(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.resync_mapping, req)


# Bulk routes: POST only, and no route of the shape `mappings/{resource_id}` takes POST, so they
# never compete with the single-mapping routes, whatever order the host tries routes in (the
# Functions host goes by function name, not by ASP.NET Core's literal-first precedence:
# azure-functions-host #9876).


@app.function_name("mappings_bulk")
@app.route(route="api/admin/mappings/bulk", methods=["POST"])
def mappings_bulk(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.mappings_bulk, req)


@app.function_name("mappings_bulk_deactivate")
@app.route(route="api/admin/mappings/bulk-deactivate", methods=["POST"])
def mappings_bulk_deactivate(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.mappings_bulk_deactivate, req)


@app.function_name("mappings_bulk_delete")
@app.route(route="api/admin/mappings/bulk-delete", methods=["POST"])
def mappings_bulk_delete(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.mappings_bulk_delete, req)


@app.function_name("admin_status")
@app.route(route="api/admin/status", methods=["GET"])
def admin_status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.status, req)


@app.function_name("admin_ui")
@app.route(route="api/admin/ui", methods=["GET"])
def admin_ui(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.console, req)


# The console's pages and forms (sync_core/admin/console.py); the same key as the admin API.
@app.function_name("admin_console")
@app.route(route="api/admin/ui/{*path}", methods=["GET", "POST"])
def admin_console(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.console, req)


@app.function_name("admin_history")
@app.route(route="api/admin/history", methods=["GET"])
def admin_history(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.history, req)


@app.function_name("admin_doctor")
@app.route(route="api/admin/doctor", methods=["GET"])
def admin_doctor(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.doctor, req)


@app.function_name("credential_watch")
@app.timer_trigger(arg_name="timer", schedule="%CREDENTIAL_SCHEDULE%")
def credential_watch(timer: func.TimerRequest) -> None:
    credentials.watch(services())


@app.function_name("platform_test")
@app.route(route="api/admin/platform/test", methods=["POST"])
def platform_test(req: func.HttpRequest) -> func.HttpResponse:
    return _http(api.platform_test, req)
