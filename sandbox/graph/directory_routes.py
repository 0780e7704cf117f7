"""Users, places (rooms and room lists) and applications (credentials)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from sandbox import timeutil
from sandbox.calendar import Mailbox
from sandbox.graph.core import Ctx, GraphApi
from sandbox.messages import GraphError, Response
from sandbox.state import Application, RoomList

T = TypeVar("T")

APP_BY_ID = r"/applications/(?P<object>[^/()]+)"
APP_BY_APPID = r"/applications\(appId='?(?P<appid>[^'/)]+)'?\)"


def not_found(key: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are "
        "not present.",
    )


def user_json(mailbox: Mailbox) -> dict[str, Any]:
    first, _, last = mailbox.display_name.partition(" ")
    return {
        "businessPhones": [],
        "displayName": mailbox.display_name,
        "givenName": first if mailbox.kind == "user" else None,
        "jobTitle": None,
        "mail": mailbox.address,
        "mobilePhone": None,
        "officeLocation": mailbox.building,
        "preferredLanguage": None,
        "surname": (last or None) if mailbox.kind == "user" else None,
        "userPrincipalName": mailbox.address,
        "id": mailbox.id,
    }


def room_json(mailbox: Mailbox) -> dict[str, Any]:
    """A room as the v1.0 room resource defines it (GD api-reference/v1.0/resources/room.md)."""
    return {
        "id": mailbox.id,
        "emailAddress": mailbox.address,
        "displayName": mailbox.display_name,
        "address": {
            "street": "",
            "city": mailbox.building or "",
            "state": "",
            "postalCode": "",
            "countryOrRegion": "",
        },
        "geoCoordinates": None,
        "phone": None,
        "nickname": mailbox.display_name,
        "label": None,
        "capacity": mailbox.capacity,
        "building": mailbox.building,
        "floorLabel": None,
        "floorNumber": mailbox.floor,
        "isWheelChairAccessible": False,
        "bookingType": "standard",
        "tags": [],
        "audioDeviceName": None,
        "videoDeviceName": None,
        "displayDeviceName": None,
        "parentId": None,
    }


def _paged(
    ctx: Ctx, items: list[T], render: Callable[[T], dict[str, Any]], context: str, default: int
) -> Response:
    """One page of `items` by `$top` and `$skip`. Places never return `@odata.nextLink`
    (docs issues #341, #6427, #18604): clients page with `$skip` until a short page."""
    size = ctx.page_size(default, maximum=999)
    offset = ctx.skip()
    body: dict[str, Any] = {"@odata.context": context}
    body["value"] = [render(item) for item in items[offset : offset + size]]
    return Response.json(200, body)


def _parse_time(value: Any, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return timeutil.parse_instant(str(value))
    except ValueError as error:
        raise GraphError(400, "Request_BadRequest", f"Invalid value for '{name}'.") from error


def register(api: GraphApi) -> None:
    tenant = api.tenant

    @api.route("GET", r"/users/(?P<key>[^/]+)", "user.read")
    def get_user(ctx: Ctx) -> Response:
        with tenant.lock:
            mailbox = tenant.lookup(ctx.params["key"])
            if mailbox is None:
                raise not_found(ctx.params["key"])
            body = user_json(mailbox)
        select = ctx.request.query.get("$select")
        if select:
            keep = {s.strip().lower() for s in select.split(",")} | {"id"}
            body = {k: v for k, v in body.items() if k.lower() in keep}
        return Response.json(
            200, {"@odata.context": f"{ctx.origin}/v1.0/$metadata#users/$entity", **body}
        )

    # Graph accepts the cast with and without its namespace; the SDK sends graph.room.
    @api.route("GET", r"/places/(?:microsoft\.)?graph\.room", "place.read")
    def list_rooms(ctx: Ctx) -> Response:
        with tenant.lock:
            rooms = sorted(
                (m for m in tenant.mailboxes.values() if m.kind == "room"),
                key=lambda m: m.address.lower(),
            )
            context = f"{ctx.origin}/v1.0/$metadata#places/microsoft.graph.room"
            return _paged(ctx, rooms, room_json, context, ctx.settings.places_page_size)

    @api.route("GET", r"/places/(?:microsoft\.)?graph\.roomlist", "place.read")
    def list_room_lists(ctx: Ctx) -> Response:
        with tenant.lock:
            lists = sorted(tenant.room_lists.values(), key=lambda r: r.address.lower())
            context = f"{ctx.origin}/v1.0/$metadata#places/microsoft.graph.roomList"
            return _paged(ctx, lists, RoomList.to_graph, context, ctx.settings.places_page_size)

    @api.route(
        "GET", r"/places/(?P<list>[^/]+)/(?:microsoft\.)?graph\.roomlist/rooms", "place.read"
    )
    def list_rooms_in_list(ctx: Ctx) -> Response:
        key = ctx.params["list"]
        with tenant.lock:
            room_list = tenant.room_lists.get(key.lower())
            if room_list is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found.")
            rooms = [tenant.mailboxes[a] for a in room_list.rooms if a in tenant.mailboxes]
            context = (
                f"{ctx.origin}/v1.0/$metadata#places('{quote(room_list.address, safe='')}')"
                "/microsoft.graph.roomList/rooms"
            )
            return _paged(ctx, rooms, room_json, context, ctx.settings.places_page_size)

    # -- applications ------------------------------------------------------------------------

    def application(ctx: Ctx) -> Application:
        if "appid" in ctx.params:
            app = tenant.apps.get(ctx.params["appid"])
            key = ctx.params["appid"]
        else:
            app = tenant.apps_by_object.get(ctx.params["object"])
            key = ctx.params["object"]
        if app is None:
            raise not_found(key)
        roles = ctx.roles
        if not roles & {"Application.ReadWrite.All", "Application.Read.All"} and not (
            app.owned_by_self and app.client_id == ctx.app_id
        ):
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return app

    def get_application(ctx: Ctx) -> Response:
        with tenant.lock:
            body = application(ctx).to_graph()
        return Response.json(
            200, {"@odata.context": f"{ctx.origin}/v1.0/$metadata#applications/$entity", **body}
        )

    def add_password(ctx: Ctx) -> Response:
        data = ctx.request.json_object() if ctx.request.body.strip() else {}
        spec = data.get("passwordCredential") or {}
        if not isinstance(spec, dict):
            raise GraphError(400, "Request_BadRequest", "passwordCredential must be an object.")
        start = _parse_time(spec.get("startDateTime"), "startDateTime")
        end = _parse_time(spec.get("endDateTime"), "endDateTime")
        with tenant.lock:
            app = application(ctx)
            if start and end and end <= start:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    "The end date of the credential must be after its start date.",
                )
            credential = app.add_password(spec.get("displayName"), start=start, end=end)
            body = credential.to_graph(include_secret=True)
        return Response.json(
            200,
            {
                "@odata.context": f"{ctx.origin}/v1.0/$metadata#microsoft.graph.passwordCredential",
                **body,
            },
        )

    def remove_password(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        key_id = str(data.get("keyId") or "")
        with tenant.lock:
            app = application(ctx)
            before = len(app.passwords)
            app.passwords = [p for p in app.passwords if p.key_id != key_id]
            if len(app.passwords) == before:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    f"No password credential with keyId '{key_id}' exists on the application.",
                )
        return Response.empty(204)

    def federated_credentials(ctx: Ctx) -> Response:
        with tenant.lock:
            app = application(ctx)
            items = [f.to_graph() for f in app.federated]
        return Response.json(
            200,
            {
                "@odata.context": f"{ctx.origin}/v1.0/$metadata#applications('{app.object_id}')"
                "/federatedIdentityCredentials",
                "value": items,
            },
        )

    for prefix in (APP_BY_ID, APP_BY_APPID):
        api.route("GET", prefix, "app.read")(get_application)
        api.route("POST", prefix + r"/addPassword", "app.write")(add_password)
        api.route("POST", prefix + r"/removePassword", "app.write")(remove_password)
        api.route("GET", prefix + r"/federatedIdentityCredentials", "app.read")(
            federated_credentials
        )
