"""HTTP handlers: parse the request, call the operation, shape the answer. No Functions types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sync_core import availability as availability_
from sync_core.admin import bulk, rooms
from sync_core.admin import console as admin_console
from sync_core.admin import doctor as doctor_
from sync_core.admin import mappings as admin
from sync_core.admin import page as status_page
from sync_core.admin import platform_test as platform_test_
from sync_core.admin import status as status_
from sync_core.admin.purge import remove_mapping
from sync_core.admin.resync import resync
from sync_core.inbound import notifications
from sync_core.outbound import intake
from sync_core.problems import ValidationFailed
from sync_core.services import Services, services
from sync_core.store.mappings import Mapping
from sync_core.validation import check_identifier, parse_count
from sync_core.web import Request, Response, json_response

HISTORY_ON_PAGE = 15


def health(request: Request) -> Response:
    return json_response(200, {"status": "ok"})


def _mapping_response(
    status: int, mapping: Mapping, extra: dict[str, str] | None = None
) -> Response:
    headers = {"ETag": mapping.etag or "", **(extra or {})}
    return json_response(status, mapping.to_json(), headers)


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    """A numeric query parameter: ASCII digits only, 1 to ``maximum``."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    return parse_count(name, text, minimum=1, maximum=maximum)


def list_mappings(request: Request) -> Response:
    mappings, continuation = admin.list_mappings(
        services().mappings,
        page_size=_int_param(request, "limit", 100, admin.MAX_PAGE_SIZE),
        continuation=request.query.get("continuation") or None,
        mailbox=request.query.get("mailbox") or None,
    )
    return json_response(
        200, {"value": [m.to_json() for m in mappings], "continuation": continuation}
    )


def get_mapping(request: Request) -> Response:
    return _mapping_response(
        200, admin.get_mapping(services().mappings, request.route["resource_id"])
    )


def put_mapping(request: Request) -> Response:
    resource_id = request.route["resource_id"]
    body = request.json()
    result = admin.save_mapping(services(), resource_id, body, if_match=request.header("if-match"))
    extra = (
        {"Location": f"/api/admin/mappings/{quote(resource_id, safe='')}"} if result.created else {}
    )
    return json_response(
        201 if result.created else 200,
        {
            **result.mapping.to_json(),
            "warnings": result.warnings,
            "bookings_queued": result.bookings_queued,
        },
        {"ETag": result.mapping.etag or "", **extra},
    )


def _flag(request: Request, name: str) -> bool:
    text = request.query.get(name, "").lower()
    if text in ("", "false", "0"):
        return False
    if text in ("true", "1"):
        return True
    raise ValidationFailed.single(name, "must be true or false")


def delete_mapping(request: Request) -> Response:
    """204 without purge; with ``?purge=true`` 200 and what was deleted."""
    purge = _flag(request, "purge")
    counts = remove_mapping(
        services(),
        request.route["resource_id"],
        if_match=request.header("if-match"),
        purge=purge,
    )
    if counts is None:
        return Response(204)
    return json_response(200, counts.to_json())


def resync_mapping(request: Request) -> Response:
    report = resync(services(), request.route["resource_id"])
    return json_response(202, report.to_json())


def list_rooms(request: Request) -> Response:
    """Rooms and room lists; ``?resource_ids=a,b`` adds a suggested mailbox for each id."""
    wanted = [r.strip() for r in (request.query.get("resource_ids") or "").split(",") if r.strip()]
    for resource_id in wanted:
        check_identifier("resource_ids", resource_id)
    return json_response(200, rooms.list_rooms(services(), wanted).to_json())


def wants_html(request: Request) -> bool:
    """``Accept`` names text/html before (or without) application/json."""
    accept = (request.header("accept") or "").lower()
    html = accept.find("text/html")
    if html < 0:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or html < json_at


def status_page_response() -> Response:
    svc = services()
    document = status_.build_status(svc)
    recent, _ = svc.history.page(page_size=HISTORY_ON_PAGE)
    return Response(
        200, status_page.render(document, recent).encode("utf-8"), status_page.PAGE_HEADERS
    )


def status(request: Request) -> Response:
    if wants_html(request):
        return status_page_response()
    return json_response(200, status_.build_status(services()), {"Cache-Control": "no-store"})


def console(request: Request) -> Response:
    """The admin console (``/api/admin/ui`` and its pages and forms)."""
    return admin_console.handle(services(), request)


def history(request: Request) -> Response:
    entries, continuation = status_.history_page(
        services(),
        resource_id=request.query.get("resource_id") or None,
        limit=_int_param(request, "limit", 50, status_.MAX_HISTORY_PAGE),
        continuation=request.query.get("continuation") or None,
    )
    return json_response(
        200, {"value": [e.to_json() for e in entries], "continuation": continuation}
    )


def doctor(request: Request) -> Response:
    return json_response(200, doctor_.run_doctor(services()), {"Cache-Control": "no-store"})


def booking_events(request: Request, svc: Services | None = None) -> Response:
    """A signed booking event (SPEC §3.2): the signature is checked before the body is read."""
    svc = svc if svc is not None else services()
    webhook_id = intake.authenticate(svc, request.headers, request.body)
    receipt = intake.accept(svc, webhook_id, request.json())
    reason = {"reason": receipt.reason} if receipt.reason else {}
    return json_response(
        202 if receipt.status == "accepted" else 200, {"status": receipt.status, **reason}
    )


def graph_notifications(request: Request, svc: Services | None = None) -> Response:
    """Graph change notifications: 202 and how many mailboxes get a read."""
    return _from_graph(request, svc, notifications.receive_notifications, "accepted")


def graph_lifecycle(request: Request, svc: Services | None = None) -> Response:
    """Graph lifecycle notifications: 202 and how many messages were queued."""
    return _from_graph(request, svc, notifications.receive_lifecycle, "queued")


def _from_graph(
    request: Request,
    svc: Services | None,
    receive: Callable[[Services, Any], int],
    counted: str,
) -> Response:
    token = request.query.get("validationToken")
    if token is not None:
        # Graph's handshake, on either route and before anything else: the token back verbatim
        # as text (the query value is already URL-decoded). It is caller text, so a browser must
        # never sniff it into HTML.
        return Response(
            200,
            token.encode("utf-8"),
            {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
        )
    count = receive(svc if svc is not None else services(), request.json())
    return json_response(202, {counted: count})


# -- bulk mapping (SPEC §9) ------------------------------------------------------------------------


def mappings_bulk(request: Request) -> Response:
    """Many mappings at once: 200 with a result per item (an item's error stops no other)."""
    report = bulk.bulk_map(services(), request.json())
    return json_response(200, report.to_json(), {"Cache-Control": "no-store"})


def mappings_bulk_deactivate(request: Request) -> Response:
    report = bulk.bulk_deactivate(services(), request.json())
    return json_response(200, report.to_json(), {"Cache-Control": "no-store"})


def mappings_bulk_delete(request: Request) -> Response:
    """``?purge=true`` also deletes what the service wrote, as for one ``DELETE``."""
    purge = _flag(request, "purge")
    report = bulk.bulk_delete(services(), request.json(), purge=purge)
    return json_response(200, report.to_json(), {"Cache-Control": "no-store"})


def availability(request: Request) -> Response:
    """Busy times of resources and mailboxes (SPEC §9): from the mirror where it is current,
    else Graph's getSchedule; a resource or mailbox that cannot be answered carries its error."""
    wanted = availability_.parse_request(request.json())
    answer = availability_.availability(services(), wanted)
    return json_response(200, answer.to_json(), {"Cache-Control": "no-store"})


def platform_test(request: Request) -> Response:
    """A signed ``platform.test`` event posted to the platform now: 200 with how it went."""
    result = platform_test_.send_platform_test(services())
    return json_response(200, result, {"Cache-Control": "no-store"})
