"""Subscriptions (change notifications on users/{id}/events) and their notifications."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sandbox import calendar, timeutil
from sandbox.calendar import Mailbox
from sandbox.graph.core import PERMISSIONS, Ctx, GraphApi
from sandbox.messages import GraphError, Response, link
from sandbox.notifications import Notifier
from sandbox.state import Subscription, Tenant

RESOURCE = re.compile(r"^/?users/([^/]+)/(?:calendar/)?events/?$", re.IGNORECASE)
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
MAX_PER_MAILBOX = 1000


class Subscriptions:
    """Creates subscriptions and turns calendar changes into change notifications."""

    def __init__(self, tenant: Tenant, notifier: Notifier) -> None:
        self.tenant = tenant
        self.notifier = notifier
        tenant.listeners.append(self.on_change)

    def on_change(self, mailbox: Mailbox, changes: list[tuple[str, str]]) -> None:
        subscriptions = self.tenant.mailbox_subscriptions(mailbox.id)
        if not subscriptions:
            return
        stamp = timeutil.now()
        for change_type, event_id in changes:
            try:
                change_key = calendar.find(mailbox, event_id, deleted_items=True).change_key
            except GraphError:
                change_key = calendar.new_change_key()
            resource = f"Users/{mailbox.id}/Events/{event_id}"
            for sub in subscriptions:
                if sub.expired(stamp) or sub.paused or change_type not in sub.change_types:
                    continue
                self.notifier.enqueue(
                    sub.notification_url,
                    "change",
                    {
                        "subscriptionId": sub.id,
                        "subscriptionExpirationDateTime": timeutil.graph_offset_stamp(
                            sub.expiration
                        ),
                        "changeType": change_type,
                        "resource": resource,
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Event",
                            "@odata.id": resource,
                            "@odata.etag": f'W/"{change_key}"',
                            "id": event_id,
                        },
                        "clientState": sub.client_state,
                        "tenantId": self.tenant.tenant_id,
                    },
                )

    def lifecycle(self, subscription_id: str, event: str, pause: bool = False) -> Subscription:
        """Send a lifecycle notification (and act it out: removal removes, pause pauses)."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
        with self.tenant.lock:
            sub = self.tenant.subscriptions.get(subscription_id)
            if sub is None:
                raise KeyError(subscription_id)
            if not sub.lifecycle_url:
                raise ValueError("the subscription has no lifecycleNotificationUrl")
            self.notifier.enqueue(
                sub.lifecycle_url,
                "lifecycle",
                {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": timeutil.graph_offset_stamp(sub.expiration),
                    "tenantId": self.tenant.tenant_id,
                    "clientState": sub.client_state,
                    "lifecycleEvent": event,
                },
            )
            if event == "subscriptionRemoved":
                self.tenant.remove_subscription(sub.id)
            elif event == "reauthorizationRequired" and pause:
                sub.paused = True
            return sub

    # -- validation ------------------------------------------------------------------------

    def authorize(self, ctx: Ctx, mailbox: str) -> None:
        """The caller may read ``mailbox``'s calendar: Calendars.Read(Write) from Entra ID, or an
        Exchange RBAC role whose scope holds it. Checked on create, renew and reauthorize."""
        allowed, code, message = PERMISSIONS["calendar.read"]
        if not self.tenant.may(ctx.app_id, ctx.roles, allowed, mailbox):
            raise GraphError(403, code, message)

    def parse_expiration(self, value: Any) -> datetime:
        try:
            expiration = timeutil.parse_instant(str(value or ""))
        except ValueError as error:
            raise GraphError(
                400, "InvalidRequest", "expirationDateTime is missing or not a date-time."
            ) from error
        stamp = timeutil.now()
        limit = self.tenant.settings.max_subscription_minutes
        if expiration <= stamp:
            raise GraphError(
                400, "InvalidRequest", "Subscription expiration must be in the future."
            )
        if expiration > stamp + timedelta(minutes=limit):
            raise GraphError(
                400,
                "ExtensionError",
                f"Subscription expiration can only be {limit} minutes in the future.",
            )
        return expiration


def _check_body(data: dict[str, Any]) -> None:
    known = {
        "changeType",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "resource",
        "expirationDateTime",
        "clientState",
        "includeResourceData",
        "latestSupportedTlsVersion",
        "encryptionCertificate",
        "encryptionCertificateId",
        "notificationQueryOptions",
        "notificationUrlAppId",
        "@odata.type",
    }
    for name in data:
        if name not in known:
            raise GraphError(
                400,
                "BadRequest",
                f"The property '{name}' does not exist on type 'microsoft.graph.subscription'.",
            )


def register(api: GraphApi, service: Subscriptions) -> None:
    tenant = api.tenant

    @api.route("POST", r"/subscriptions")
    def create(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        _check_body(data)
        for required in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not data.get(required):
                raise GraphError(400, "InvalidRequest", f"'{required}' is a required property.")
        change_types = [c.strip() for c in str(data["changeType"]).split(",") if c.strip()]
        if not change_types or any(c not in CHANGE_TYPES for c in change_types):
            raise GraphError(
                400,
                "InvalidRequest",
                f"Invalid changeType '{data['changeType']}'; use created, updated or deleted.",
            )
        client_state = data.get("clientState")
        if client_state is not None and len(str(client_state)) > 128:
            raise GraphError(
                400, "InvalidRequest", "clientState must be at most 128 characters long."
            )
        if data.get("includeResourceData"):
            raise GraphError(
                400,
                "InvalidRequest",
                "includeResourceData needs an encryptionCertificate; the sandbox supports "
                "notifications without resource data only.",
            )
        resource = str(data["resource"])
        if resource.lower().lstrip("/").startswith("me/"):
            raise GraphError(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            )
        match = RESOURCE.match(resource)
        if match is None:
            raise GraphError(
                400,
                "InvalidRequest",
                f"The resource '{resource}' is not supported by the sandbox (users/{{id}}/events).",
            )
        service.authorize(ctx, match.group(1))
        expiration = service.parse_expiration(data["expirationDateTime"])
        with tenant.lock:
            mailbox = tenant.mailbox_for_route(match.group(1))
            if len(tenant.mailbox_subscriptions(mailbox.id)) >= MAX_PER_MAILBOX:
                raise GraphError(
                    403,
                    "ExtensionError",
                    "The mailbox has reached its limit of 1000 active subscriptions.",
                )
        # The handshake runs outside the lock: the endpoint may call back into Graph.
        service.notifier.validate(str(data["notificationUrl"]))
        lifecycle = data.get("lifecycleNotificationUrl")
        if lifecycle:
            service.notifier.validate(str(lifecycle))
        sub = Subscription(
            id=str(uuid.uuid4()),
            app_id=ctx.app_id,
            resource=resource,
            mailbox_id=mailbox.id,
            change_types=change_types,
            notification_url=str(data["notificationUrl"]),
            lifecycle_url=str(lifecycle) if lifecycle else None,
            expiration=expiration,
            client_state=str(client_state) if client_state is not None else None,
            created=timeutil.now(),
        )
        tenant.add_subscription(sub)
        return Response.json(201, sub.to_graph(ctx.origin))

    @api.route("GET", r"/subscriptions")
    def list_subscriptions(ctx: Ctx) -> Response:
        size = ctx.page_size(ctx.settings.subscriptions_page_size)
        token = ctx.request.query.get("$skiptoken")
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else ""
        stamp = timeutil.now()
        with tenant.lock:
            mine = sorted(
                (
                    s
                    for s in tenant.subscriptions.values()
                    if s.app_id == ctx.app_id and not s.expired(stamp) and s.id > after
                ),
                key=lambda s: s.id,
            )
            chunk = mine[:size]
            items = []
            for sub in chunk:
                item = sub.to_graph(ctx.origin)
                item.pop("@odata.context")
                items.append(item)
        body: dict[str, Any] = {"@odata.context": f"{ctx.origin}/v1.0/$metadata#subscriptions"}
        if len(mine) > size:
            marker = base64.urlsafe_b64encode(chunk[-1].id.encode()).decode()
            body["@odata.nextLink"] = link(
                ctx.origin, ctx.request.path, {"$top": str(size), "$skiptoken": marker}
            )
        body["value"] = items
        return Response.json(200, body)

    @api.route("GET", r"/subscriptions/(?P<id>[^/]+)")
    def get_subscription(ctx: Ctx) -> Response:
        sub = tenant.live_subscription(ctx.params["id"], ctx.app_id)
        return Response.json(200, sub.to_graph(ctx.origin))

    @api.route("PATCH", r"/subscriptions/(?P<id>[^/]+)")
    def patch_subscription(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        if "lifecycleNotificationUrl" in data:
            raise GraphError(
                400,
                "InvalidRequest",
                "lifecycleNotificationUrl can only be set when the subscription is created.",
            )
        for name in data:
            if name not in ("expirationDateTime", "notificationUrl", "@odata.type"):
                raise GraphError(400, "InvalidRequest", f"The property '{name}' cannot be updated.")
        sub = tenant.live_subscription(ctx.params["id"], ctx.app_id)
        service.authorize(ctx, sub.mailbox_id)
        expiration = (
            service.parse_expiration(data["expirationDateTime"])
            if "expirationDateTime" in data
            else None
        )
        if data.get("notificationUrl"):
            service.notifier.validate(str(data["notificationUrl"]))
        with tenant.lock:
            if expiration is not None:
                sub.expiration = expiration
            if data.get("notificationUrl"):
                sub.notification_url = str(data["notificationUrl"])
            sub.paused = False
            return Response.json(200, sub.to_graph(ctx.origin))

    @api.route("DELETE", r"/subscriptions/(?P<id>[^/]+)")
    def delete_subscription(ctx: Ctx) -> Response:
        sub = tenant.live_subscription(ctx.params["id"], ctx.app_id)
        tenant.remove_subscription(sub.id)
        return Response.empty(204)

    @api.route("POST", r"/subscriptions/(?P<id>[^/]+)/reauthorize")
    def reauthorize(ctx: Ctx) -> Response:
        sub = tenant.live_subscription(ctx.params["id"], ctx.app_id)
        service.authorize(ctx, sub.mailbox_id)
        with tenant.lock:
            sub.paused = False
        return Response.empty(204)
