"""HTTP handlers: parse the request, call the operation, shape the answer. No Functions types."""

from __future__ import annotations

from urllib.parse import quote

from sync_core import admin, bookings, inbound
from sync_core.problems import ValidationFailed
from sync_core.services import services
from sync_core.store.mappings import Mapping
from sync_core.web import Request, Response, json_response


def health(request: Request) -> Response:
    return json_response(200, {"status": "ok"})


def _mapping_response(
    status: int, mapping: Mapping, extra: dict[str, str] | None = None
) -> Response:
    headers = {"ETag": mapping.etag or "", **(extra or {})}
    return json_response(status, mapping.to_json(), headers)


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise ValidationFailed.single(name, "must be a whole number")
    return int(text)


def list_mappings(request: Request) -> Response:
    mappings, continuation = admin.list_mappings(
        services().mappings,
        page_size=_int_param(request, "limit", 100),
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
    svc = services()
    result = admin.put_mapping(svc.mappings, resource_id, body, if_match=request.header("if-match"))
    result = admin.activate(svc, result)
    extra = (
        {"Location": f"/api/admin/mappings/{quote(resource_id, safe='')}"} if result.created else {}
    )
    return json_response(
        201 if result.created else 200,
        {**result.mapping.to_json(), "warnings": result.warnings},
        {"ETag": result.mapping.etag or "", **extra},
    )


def delete_mapping(request: Request) -> Response:
    if request.query.get("purge", "false").lower() not in ("false", "0", ""):
        raise ValidationFailed.single(
            "purge", "is not supported by this version; delete without purge"
        )
    svc = services()
    removed = admin.delete_mapping(
        svc.mappings, request.route["resource_id"], if_match=request.header("if-match")
    )
    admin.deactivate(svc, removed)
    return Response(204)


def booking_events(request: Request) -> Response:
    return bookings.receive(services(), request)


def graph_notifications(request: Request) -> Response:
    return inbound.receive_notifications(services(), request)


def graph_lifecycle(request: Request) -> Response:
    return inbound.receive_lifecycle(services(), request)
