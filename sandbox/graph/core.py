"""Microsoft Graph v1.0 request handling: routing, the bearer token, application permissions,
per-mailbox throttling and injected faults. `$batch` runs inner requests through `run`, so each
inner request is authorised, throttled and faulted like an outer one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt

from sandbox import timeutil
from sandbox.calendar import Mailbox
from sandbox.defaults import Settings
from sandbox.limits import Faults, Throttle, Throttled
from sandbox.messages import GraphError, Request, Response
from sandbox.render import ViewOptions
from sandbox.requestlog import RequestLog
from sandbox.state import Tenant
from sandbox.tokens import TokenIssuer

Handler = Callable[["Ctx"], Response]

# Roles that satisfy each permission kind, and the error Graph answers without one.
PERMISSIONS: dict[str, tuple[set[str], str, str]] = {
    "calendar.read": (
        {"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic.All"},
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    ),
    # getSchedule: Calendars.Read or Calendars.ReadWrite (GD api/calendar-getschedule.md, v1.0;
    # the beta page's Calendars.ReadBasic is not accepted).
    "schedule.read": (
        {"Calendars.Read", "Calendars.ReadWrite"},
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    ),
    "calendar.write": (
        {"Calendars.ReadWrite"},
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    ),
    "place.read": (
        {"Place.Read.All", "Place.ReadWrite.All"},
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    ),
    "user.read": (
        {
            "User.Read.All",
            "User.ReadBasic.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        },
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    ),
    "app.read": (
        {"Application.Read.All", "Application.ReadWrite.All", "Application.ReadWrite.OwnedBy"},
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    ),
    "app.write": (
        {"Application.ReadWrite.All", "Application.ReadWrite.OwnedBy"},
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    ),
}


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    permission: str | None


@dataclass
class Ctx:
    request: Request
    params: dict[str, str]
    claims: dict[str, Any]
    api: GraphApi
    _prefer: dict[str, str] | None = field(default=None, repr=False)

    @property
    def tenant(self) -> Tenant:
        return self.api.tenant

    @property
    def settings(self) -> Settings:
        return self.api.tenant.settings

    @property
    def origin(self) -> str:
        return self.request.origin

    @property
    def app_id(self) -> str:
        return str(self.claims.get("appid", ""))

    @property
    def roles(self) -> set[str]:
        return set(self.claims.get("roles") or [])

    @property
    def user(self) -> str:
        return self.params["user"]

    def prefer(self) -> dict[str, str]:
        if self._prefer is None:
            self._prefer = self.request.prefer()
        return self._prefer

    def mailbox(self) -> Mailbox:
        """The route's mailbox; Graph's error for an unknown, disabled or blocked one."""
        return self.tenant.mailbox_for_route(self.user)

    def user_context(self, tail: str) -> str:
        return f"{self.origin}/v1.0/$metadata#users('{quote(self.user, safe='@')}')/{tail}"

    def view_options(self, *, expand: set[str] | None = None) -> ViewOptions:
        prefer = self.prefer()
        zone = prefer.get("outlook.timezone") or "UTC"
        try:
            timeutil.zone(zone)
        except timeutil.TimeZoneError:
            zone = "UTC"
        select = self.request.query.get("$select")
        return ViewOptions(
            time_zone=zone,
            body_type="text"
            if prefer.get("outlook.body-content-type", "").lower() == "text"
            else "html",
            expand=expand,
            select={s.strip().lower() for s in select.split(",") if s.strip()} if select else None,
        )

    def page_size(self, default: int, maximum: int = 1000) -> int:
        text = self.request.query.get("$top") or self.prefer().get("odata.maxpagesize") or ""
        try:
            value = int(text) if text else default
        except ValueError as error:
            raise GraphError(
                400, "BadRequest", f"Invalid page size '{text}'; an integer was expected."
            ) from error
        if value < 1:
            raise GraphError(400, "BadRequest", "The page size must be at least 1.")
        return min(value, maximum)

    def skip(self) -> int:
        text = self.request.query.get("$skip") or "0"
        try:
            return max(0, int(text))
        except ValueError as error:
            raise GraphError(400, "BadRequest", f"Invalid $skip value '{text}'.") from error

    def preference_headers(self) -> dict[str, str]:
        prefer = self.prefer()
        applied = []
        if "outlook.timezone" in prefer:
            applied.append(f'outlook.timezone="{self.view_options().time_zone}"')
        if "odata.maxpagesize" in prefer:
            applied.append(f"odata.maxpagesize={prefer['odata.maxpagesize']}")
        if "idtype" in prefer:
            applied.append(f'IdType="{prefer["idtype"]}"')
        return {"Preference-Applied": ", ".join(applied)} if applied else {}


class GraphApi:
    PREFIX = "/v1.0"

    def __init__(
        self,
        tenant: Tenant,
        issuer: TokenIssuer,
        throttle: Throttle,
        faults: Faults,
        log: RequestLog,
    ) -> None:
        self.tenant = tenant
        self.issuer = issuer
        self.throttle = throttle
        self.faults = faults
        self.log = log
        self.routes: list[Route] = []
        self.services: dict[str, Any] = {}

    def route(
        self, method: str, pattern: str, permission: str | None = None
    ) -> Callable[[Handler], Handler]:
        compiled = re.compile("^" + pattern + "$", re.IGNORECASE)

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, compiled, handler, permission))
            return handler

        return register

    # -- entry points ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """An outer request (the server logs it)."""
        return self.run(request, None)

    def run(self, request: Request, claims: dict[str, Any] | None) -> Response:
        """Authorise, route, throttle, fault and handle one request; errors as Graph answers."""
        fault_id: str | None = None
        throttled = False
        app_id = str(claims.get("appid")) if claims else None
        try:
            if claims is None:
                claims = self.authenticate(request)
                app_id = str(claims.get("appid"))
            route, params = self.match(request)
            self.authorize(route, claims, params.get("user"))
            ctx = Ctx(request=request, params=params, claims=claims, api=self)
            key = params.get("user")
            names: set[str] = set()
            if key:
                # A mailbox is one mailbox whether the path names it by address or by id.
                found = self.tenant.lookup(key)
                names = {key.lower()} | ({found.id, found.address.lower()} if found else set())
                key = found.id if found else key.lower()
            slot = self.throttle.slot(str(claims.get("appid")), key) if key else nullcontext()
            with slot:
                fault = self.faults.match(request.method, request.path, names)
                if fault is not None:
                    fault_id = fault.id
                    Faults.apply(fault)  # sleeps, or raises GraphError / ConnectionFault
                response = route.handler(ctx)
        except Throttled as error:
            response = error.response(request)
            throttled = True
        except GraphError as error:
            response = error.response(request)
        response.throttled = throttled
        response.fault = fault_id
        response.app = app_id
        return self._finish(request, response)

    @staticmethod
    def _finish(request: Request, response: Response) -> Response:
        response.headers.setdefault("request-id", request.request_id)
        response.headers.setdefault("client-request-id", request.client_request_id)
        response.headers.setdefault("Cache-Control", "no-cache")
        if response.body and "Content-Type" in response.headers:
            response.headers.setdefault("OData-Version", "4.0")
        return response

    # -- pieces ------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> dict[str, Any]:
        header = request.headers.get("Authorization")
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline'
            '.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        port = request.origin.rsplit(":", 1)[-1]
        audiences = [
            request.origin,
            f"https://127.0.0.1:{port}",
            f"https://localhost:{port}",
        ]
        try:
            claims = self.issuer.verify(header[7:].strip(), audiences=audiences)
        except jwt.ExpiredSignatureError as error:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
                challenge,
            ) from error
        except jwt.InvalidAudienceError as error:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                challenge,
            ) from error
        except jwt.PyJWTError as error:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, or its signature is invalid.",
                challenge,
            ) from error
        if claims.get("tid") != self.tenant.tenant_id or "appid" not in claims:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid issuer or tenant.",
                challenge,
            )
        return claims

    def match(self, request: Request) -> tuple[Route, dict[str, str]]:
        path = request.path
        if not path.startswith(self.PREFIX + "/"):
            raise GraphError(400, "BadRequest", "Invalid version.")
        tail = path[len(self.PREFIX) :]
        allowed = False
        for route in self.routes:
            match = route.pattern.match(tail)
            if match is None:
                continue
            if route.method != request.method:
                allowed = True
                continue
            return route, {k: v for k, v in match.groupdict().items() if v is not None}
        if allowed:
            raise GraphError(
                405,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            )
        segment = tail.strip("/").split("/")[-1] if tail.strip("/") else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def authorize(self, route: Route, claims: dict[str, Any], user: str | None = None) -> None:
        """The token's roles (Entra ID, tenant-wide) or, for a mailbox route, an Exchange RBAC
        role whose scope holds the mailbox; 403 otherwise."""
        if route.permission is None:
            return
        allowed, code, message = PERMISSIONS[route.permission]
        roles = set(claims.get("roles") or [])
        if not self.tenant.may(str(claims.get("appid", "")), roles, allowed, user):
            raise GraphError(403, code, message)
