"""The control API under `/_sandbox/...`: act as people in Outlook, shape the tenant, inject
faults, and read what happened. No token needed. See docs/sandbox.md for the route table.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sandbox import calendar, defaults, delta, timeutil
from sandbox.calendar import Mailbox
from sandbox.graph.subscription_routes import Subscriptions
from sandbox.keyvault import KeyVault, VaultError
from sandbox.limits import Faults, Throttle
from sandbox.messages import GraphError, Request, Response
from sandbox.notifications import Notifier
from sandbox.render import ViewOptions, render_event
from sandbox.requestlog import RequestLog
from sandbox.state import (
    EXCHANGE_ROLES,
    Application,
    ExchangeAssignment,
    FederatedCredential,
    ManagedIdentity,
    Tenant,
    check_meeting_providers,
    exchange_role,
)

ControlHandler = Callable[[Request, dict[str, str]], Response]


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ok(value: Any, status: int = 200) -> Response:
    return Response.json(status, value)


def _body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        value = request.json()
    except GraphError as error:
        raise ControlError(400, error.message) from error
    if not isinstance(value, dict):
        raise ControlError(400, "a JSON object was expected")
    return value


class Control:
    PREFIX = "/_sandbox"

    def __init__(
        self,
        tenant: Tenant,
        throttle: Throttle,
        faults: Faults,
        log: RequestLog,
        notifier: Notifier,
        subscriptions: Subscriptions,
        info: Callable[[], dict[str, Any]],
        vault: KeyVault | None = None,
    ) -> None:
        self.tenant = tenant
        self.throttle = throttle
        self.faults = faults
        self.log = log
        self.notifier = notifier
        self.subscriptions = subscriptions
        self.info = info
        self.vault = vault
        self.routes: list[tuple[str, re.Pattern[str], ControlHandler]] = []
        self._register()

    def add(self, method: str, pattern: str, handler: ControlHandler) -> None:
        self.routes.append((method, re.compile("^" + pattern + "$"), handler))

    def handle(self, request: Request) -> Response:
        tail = request.path[len(self.PREFIX) :] or "/"
        for method, pattern, handler in self.routes:
            match = pattern.match(tail)
            if match and method == request.method:
                try:
                    return handler(request, match.groupdict())
                except ControlError as error:
                    return _ok({"error": error.message}, error.status)
                except GraphError as error:
                    return error.response(request)
                except (ValueError, TypeError) as error:
                    return _ok({"error": str(error)}, 400)
                except KeyError as error:
                    return _ok({"error": f"not found: {error.args[0]}"}, 404)
        return _ok({"error": f"no control route {request.method} {request.path}"}, 404)

    # -- helpers -----------------------------------------------------------------------------

    def _mailbox(self, address: str) -> Mailbox:
        mailbox = self.tenant.lookup(address)
        if mailbox is None:
            raise ControlError(404, f"no mailbox {address}")
        return mailbox

    def _app(self, client_id: str) -> Application:
        if client_id in ("", "_"):
            client_id = self.tenant.default_client_id
        app = self.tenant.apps.get(client_id)
        if app is None:
            raise ControlError(404, f"no app {client_id}")
        return app

    def _app_view(self, app: Application) -> dict[str, Any]:
        return {
            **app.to_graph(),
            "roles": sorted(app.roles),
            "ownedBySelf": app.owned_by_self,
            "federatedIdentityCredentials": [f.to_graph() for f in app.federated],
            "exchangeRoleAssignments": [a.to_json() for a in app.exchange.values()],
        }

    def _members(self, value: Any, name: str) -> set[str]:
        """Mailbox addresses for a management scope: existing mailboxes, lower-cased."""
        if not isinstance(value, list):
            raise ControlError(400, f"{name} must be a list of mailbox addresses")
        return {self._mailbox(str(m)).address.lower() for m in value}

    # -- routes ------------------------------------------------------------------------------

    def _register(self) -> None:
        tenant = self.tenant
        add = self.add

        add("GET", r"/health", lambda r, p: _ok({"status": "ok"}))
        add("GET", r"/info", lambda r, p: _ok(self.info()))

        def reset(request: Request, params: dict[str, str]) -> Response:
            seed = bool(_body(request).get("seed", True))
            tenant.reset()
            if seed:
                tenant.seed()
            self.faults.clear()
            self.throttle.reset()
            self.log.clear()
            self.notifier.clear()
            if self.vault is not None:
                self.vault.reset()
            return _ok({"status": "reset", "seeded": seed})

        add("POST", r"/reset", reset)

        add("GET", r"/settings", lambda r, p: _ok(tenant.settings.to_dict()))

        def patch_settings(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                unknown = tenant.settings.update(_body(request))
            if unknown:
                raise ControlError(400, f"unknown settings: {', '.join(unknown)}")
            return _ok(tenant.settings.to_dict())

        add("PATCH", r"/settings", patch_settings)

        # mailboxes and room lists
        def list_mailboxes(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                return _ok({"value": [m.describe() for m in tenant.mailboxes.values()]})

        def create_mailbox(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            if not data.get("address"):
                raise ControlError(400, "address is required")
            with tenant.lock:
                if tenant.lookup(str(data["address"])) is not None:
                    raise ControlError(409, f"mailbox {data['address']} exists")
                mailbox = tenant.add_mailbox(
                    str(data["address"]),
                    data.get("displayName"),
                    kind=str(data.get("kind") or "user"),
                    state=str(data.get("state") or "ok"),
                    room_lists=list(data.get("roomLists") or []),
                    capacity=data.get("capacity"),
                    building=data.get("building"),
                    floor=data.get("floor"),
                    mailbox_id=data.get("id"),
                    meeting_providers=data.get("allowedOnlineMeetingProviders"),
                )
                return _ok(mailbox.describe(), 201)

        add("GET", r"/mailboxes", list_mailboxes)
        add("POST", r"/mailboxes", create_mailbox)

        def get_mailbox(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                return _ok(self._mailbox(params["address"]).describe())

        def patch_mailbox(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                if "state" in data:
                    if data["state"] not in calendar.MAILBOX_STATES:
                        raise ControlError(
                            400, f"state must be one of {', '.join(calendar.MAILBOX_STATES)}"
                        )
                    mailbox.state = str(data["state"])
                if "displayName" in data:
                    mailbox.display_name = str(data["displayName"])
                for key, attr in (("capacity", "capacity"), ("building", "building")):
                    if key in data:
                        setattr(mailbox, attr, data[key])
                if "floor" in data:
                    mailbox.floor = data["floor"]
                if "allowedOnlineMeetingProviders" in data:
                    mailbox.meeting_providers = check_meeting_providers(
                        data["allowedOnlineMeetingProviders"]
                    )
                for list_address in data.get("roomLists") or []:
                    tenant.add_to_room_list(mailbox, str(list_address))
                return _ok(mailbox.describe())

        def delete_mailbox(request: Request, params: dict[str, str]) -> Response:
            tenant.remove_mailbox(self._mailbox(params["address"]).address)
            return Response.empty(204)

        add("GET", r"/mailboxes/(?P<address>[^/]+)", get_mailbox)
        add("PATCH", r"/mailboxes/(?P<address>[^/]+)", patch_mailbox)
        add("DELETE", r"/mailboxes/(?P<address>[^/]+)", delete_mailbox)

        def list_room_lists(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                return _ok(
                    {
                        "value": [
                            {**r.to_graph(), "rooms": list(r.rooms)}
                            for r in tenant.room_lists.values()
                        ]
                    }
                )

        def create_room_list(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            if not data.get("address"):
                raise ControlError(400, "address is required")
            room_list = tenant.add_room_list(str(data["address"]), data.get("displayName"))
            return _ok({**room_list.to_graph(), "rooms": list(room_list.rooms)}, 201)

        add("GET", r"/roomlists", list_room_lists)
        add("POST", r"/roomlists", create_room_list)

        # events, as a person in Outlook
        def list_events(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                return _ok({"value": [e.raw() for e in mailbox.events.values()]})

        def create_event(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                ev, changes = calendar.create_event(
                    mailbox, data, "person", tenant.tenant_id, control=True
                )
                tenant.changed(mailbox, changes)
                return _ok(render_event(ev, mailbox, ViewOptions(expand=set())), 201)

        def get_event(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                ev = calendar.find(mailbox, params["event"], deleted_items=True)
                return _ok(
                    {**render_event(ev, mailbox, ViewOptions(expand=set())), "raw": ev.raw()}
                )

        def patch_event(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                ev, changes = calendar.update_event(
                    mailbox, params["event"], data, "person", tenant.tenant_id, control=True
                )
                tenant.changed(mailbox, changes)
                return _ok(render_event(ev, mailbox, ViewOptions(expand=set())))

        def delete_event(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                changes = calendar.delete_event(mailbox, params["event"])
                tenant.changed(mailbox, changes)
            return Response.empty(204)

        def deleted_items(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                return _ok({"value": [e.raw() for e in mailbox.deleted.values()]})

        def view(request: Request, params: dict[str, str]) -> Response:
            start = timeutil.parse_instant(request.query["start"])
            end = timeutil.parse_instant(request.query["end"])
            with tenant.lock:
                mailbox = self._mailbox(params["address"])
                items = calendar.view_items(mailbox, start, end)
                options = ViewOptions(expand=set())
                return _ok({"value": [render_event(e, mailbox, options) for e in items]})

        def invalidate(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                count = delta.invalidate(self._mailbox(params["address"]))
            return _ok({"invalidated": count})

        events = r"/mailboxes/(?P<address>[^/]+)/events"
        add("GET", events, list_events)
        add("POST", events, create_event)
        add("GET", events + r"/(?P<event>[^/]+)", get_event)
        add("PATCH", events + r"/(?P<event>[^/]+)", patch_event)
        add("DELETE", events + r"/(?P<event>[^/]+)", delete_event)
        add("GET", r"/mailboxes/(?P<address>[^/]+)/view", view)
        add("GET", r"/mailboxes/(?P<address>[^/]+)/deleted", deleted_items)
        add("POST", r"/mailboxes/(?P<address>[^/]+)/invalidate-delta", invalidate)

        # faults
        add("GET", r"/faults", lambda r, p: _ok({"value": self.faults.list()}))
        add("POST", r"/faults", lambda r, p: _ok(self.faults.add(_body(r)).describe(), 201))
        add("DELETE", r"/faults", lambda r, p: _ok({"cleared": self.faults.clear()}))

        def remove_fault(request: Request, params: dict[str, str]) -> Response:
            if not self.faults.remove(params["id"]):
                raise ControlError(404, f"no fault {params['id']}")
            return Response.empty(204)

        add("DELETE", r"/faults/(?P<id>[^/]+)", remove_fault)

        # subscriptions
        def list_subscriptions(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                items = []
                for sub in tenant.subscriptions.values():
                    mailbox = tenant.mailboxes_by_id.get(sub.mailbox_id)
                    items.append(
                        {
                            **sub.to_graph(request.origin),
                            "mailbox": mailbox.address if mailbox else None,
                            "expired": sub.expired(),
                            "paused": sub.paused,
                        }
                    )
                return _ok({"value": items})

        def lifecycle(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            try:
                sub = self.subscriptions.lifecycle(
                    params["id"], str(data.get("event") or ""), bool(data.get("pause"))
                )
            except KeyError as error:
                raise ControlError(404, f"no subscription {params['id']}") from error
            return _ok({"sent": data.get("event"), "subscriptionId": sub.id}, 202)

        def expire(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                sub = tenant.subscriptions.get(params["id"])
                if sub is None:
                    raise ControlError(404, f"no subscription {params['id']}")
                sub.expiration = timeutil.now() - timedelta(seconds=1)
            return _ok({"expired": params["id"]})

        add("GET", r"/subscriptions", list_subscriptions)
        add("POST", r"/subscriptions/(?P<id>[^/]+)/lifecycle", lifecycle)
        add("POST", r"/subscriptions/(?P<id>[^/]+)/expire", expire)

        # what happened
        def requests_log(request: Request, params: dict[str, str]) -> Response:
            since = int(request.query.get("since") or 0)
            return _ok(
                {
                    "value": self.log.entries(
                        since, request.query.get("mailbox"), request.query.get("kind")
                    )
                }
            )

        def clear_requests(request: Request, params: dict[str, str]) -> Response:
            self.log.clear()
            return Response.empty(204)

        def deliveries(request: Request, params: dict[str, str]) -> Response:
            since = int(request.query.get("since") or 0)
            return _ok({"value": self.notifier.records(since), "idle": self.notifier.idle()})

        def clear_deliveries(request: Request, params: dict[str, str]) -> Response:
            self.notifier.clear()
            return Response.empty(204)

        add("GET", r"/requests", requests_log)
        add("DELETE", r"/requests", clear_requests)
        add("GET", r"/deliveries", deliveries)
        add("DELETE", r"/deliveries", clear_deliveries)

        # the app registration
        def get_app(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                return _ok(self._app_view(self._app(params["client"])))

        def patch_app(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            with tenant.lock:
                app = self._app(params["client"])
                if "ownedBySelf" in data:
                    app.owned_by_self = bool(data["ownedBySelf"])
                if "roles" in data:
                    app.roles = {str(r) for r in data["roles"]}
                return _ok(self._app_view(app))

        def set_roles(request: Request, params: dict[str, str]) -> Response:
            roles = _body(request).get("roles")
            if not isinstance(roles, list):
                raise ControlError(400, "roles must be a list")
            with tenant.lock:
                app = self._app(params["client"])
                app.roles = {str(r) for r in roles}
                return _ok(self._app_view(app))

        def add_secret(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            stamp = timeutil.now()
            start = (
                timeutil.parse_instant(data["startDateTime"]) if data.get("startDateTime") else None
            )
            end = None
            if data.get("endDateTime"):
                end = timeutil.parse_instant(str(data["endDateTime"]))
            elif data.get("expiresInSeconds") is not None:
                end = stamp + timedelta(seconds=float(data["expiresInSeconds"]))
            elif data.get("expiresInDays") is not None:
                end = stamp + timedelta(days=float(data["expiresInDays"]))
            with tenant.lock:
                app = self._app(params["client"])
                credential = app.add_password(
                    data.get("displayName"),
                    start=start,
                    end=end,
                    secret_text=data.get("secretText"),
                )
                return _ok(credential.to_graph(include_secret=True), 201)

        def expire_secret(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                app = self._app(params["client"])
                for credential in app.passwords:
                    if credential.key_id == params["key"]:
                        credential.end = timeutil.now() - timedelta(seconds=1)
                        return _ok(credential.to_graph())
            raise ControlError(404, f"no secret {params['key']}")

        def remove_secret(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                app = self._app(params["client"])
                before = len(app.passwords)
                app.passwords = [p for p in app.passwords if p.key_id != params["key"]]
                if len(app.passwords) == before:
                    raise ControlError(404, f"no secret {params['key']}")
            return Response.empty(204)

        def add_certificate(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            pem = data.get("certificate")
            if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
                raise ControlError(400, "certificate must be a PEM certificate")
            with tenant.lock:
                credential = self._app(params["client"]).add_certificate(
                    pem, data.get("displayName")
                )
                return _ok(credential.to_graph(), 201)

        def add_federated(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            for required in ("issuer", "subject"):
                if not data.get(required):
                    raise ControlError(400, f"{required} is required")
            credential = FederatedCredential(
                id=str(uuid.uuid4()),
                name=str(data.get("name") or "federated"),
                issuer=str(data["issuer"]),
                subject=str(data["subject"]),
                audiences=list(data.get("audiences") or [defaults.TOKEN_EXCHANGE_AUDIENCE]),
            )
            with tenant.lock:
                self._app(params["client"]).federated.append(credential)
            return _ok(credential.to_graph(), 201)

        # Exchange Online RBAC for Applications: a role over the mailboxes of a scope
        def list_exchange_roles(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                app = self._app(params["client"])
                return _ok({"value": [a.to_json() for a in app.exchange.values()]})

        def put_exchange_role(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            role = exchange_role(params["role"])
            with tenant.lock:
                app = self._app(params["client"])
                members = self._members(data.get("mailboxes"), "mailboxes")
                app.exchange[role] = ExchangeAssignment(role, members)
                # The recommended set-up: no tenant-wide grant of the same permission in Entra
                # ID (the two add up, so one would make the scope meaningless).
                if not data.get("keepEntraGrant", False):
                    app.roles.discard(EXCHANGE_ROLES[role])
                return _ok(app.exchange[role].to_json())

        def patch_exchange_role(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            role = exchange_role(params["role"])
            with tenant.lock:
                assignment = self._app(params["client"]).exchange.get(role)
                if assignment is None:
                    raise ControlError(404, f"no assignment of {role}")
                assignment.mailboxes |= self._members(data.get("add", []), "add")
                removed = data.get("remove", [])
                if not isinstance(removed, list):
                    raise ControlError(400, "remove must be a list of mailbox addresses")
                assignment.mailboxes -= {str(m).lower() for m in removed}
                return _ok(assignment.to_json())

        def delete_exchange_role(request: Request, params: dict[str, str]) -> Response:
            role = exchange_role(params["role"])
            with tenant.lock:
                if self._app(params["client"]).exchange.pop(role, None) is None:
                    raise ControlError(404, f"no assignment of {role}")
            return Response.empty(204)

        app_path = r"/apps/(?P<client>[^/]+)"
        roles_path = app_path + r"/exchange-roles"
        add("GET", roles_path, list_exchange_roles)
        add("PUT", roles_path + r"/(?P<role>[^/]+)", put_exchange_role)
        add("PATCH", roles_path + r"/(?P<role>[^/]+)", patch_exchange_role)
        add("DELETE", roles_path + r"/(?P<role>[^/]+)", delete_exchange_role)
        add("GET", app_path, get_app)
        add("PATCH", app_path, patch_app)
        add("PUT", app_path + r"/roles", set_roles)
        add("POST", app_path + r"/secrets", add_secret)
        add("POST", app_path + r"/secrets/(?P<key>[^/]+)/expire", expire_secret)
        add("DELETE", app_path + r"/secrets/(?P<key>[^/]+)", remove_secret)
        add("POST", app_path + r"/certificates", add_certificate)
        add("POST", app_path + r"/federated-credentials", add_federated)

        def list_identities(request: Request, params: dict[str, str]) -> Response:
            with tenant.lock:
                return _ok(
                    {
                        "value": [
                            {"clientId": i.client_id, "objectId": i.object_id, "name": i.name}
                            for i in tenant.identities.values()
                        ]
                    }
                )

        def add_identity(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            identity = ManagedIdentity(
                client_id=str(data.get("clientId") or uuid.uuid4()),
                object_id=str(data.get("objectId") or uuid.uuid4()),
                name=str(data.get("name") or "identity"),
            )
            with tenant.lock:
                tenant.identities[identity.client_id] = identity
            return _ok(
                {
                    "clientId": identity.client_id,
                    "objectId": identity.object_id,
                    "name": identity.name,
                },
                201,
            )

        add("GET", r"/managed-identities", list_identities)
        add("POST", r"/managed-identities", add_identity)

        if self.vault is not None:
            self._register_vault(self.vault)

    def _register_vault(self, vault: KeyVault) -> None:
        """The Key Vault double: seed secrets, read them back, deny operations."""

        def list_vault(request: Request, params: dict[str, str]) -> Response:
            return _ok({"value": vault.describe()})

        def one_secret(request: Request, params: dict[str, str]) -> Response:
            return _ok({"name": params["name"], "versions": vault.describe(params["name"])})

        def put_secret(request: Request, params: dict[str, str]) -> Response:
            data = _body(request)
            value = data.get("value")
            if not isinstance(value, str):
                raise ControlError(400, "value (a string) is required")
            stamp = timeutil.now()
            expires = None
            if data.get("expiresOn"):
                expires = timeutil.parse_instant(str(data["expiresOn"]))
            elif data.get("expiresInDays") is not None:
                expires = stamp + timedelta(days=float(data["expiresInDays"]))
            tags = data.get("tags")
            try:
                secret = vault.put(
                    params["name"],
                    value,
                    content_type=data.get("contentType"),
                    tags={str(k): str(v) for k, v in tags.items()} if tags else None,
                    enabled=bool(data.get("enabled", True)),
                    expires=int(expires.timestamp()) if expires else None,
                )
            except VaultError as error:
                raise ControlError(error.status, error.message) from error
            return _ok(secret.describe(), 201)

        def deny(request: Request, params: dict[str, str]) -> Response:
            operations = _body(request).get("deny")
            if not isinstance(operations, list):
                raise ControlError(400, "deny must be a list of operations")
            return _ok({"denied": vault.deny([str(o) for o in operations])})

        self.add("GET", r"/keyvault/secrets", list_vault)
        self.add("GET", r"/keyvault/secrets/(?P<name>[^/]+)", one_secret)
        self.add("PUT", r"/keyvault/secrets/(?P<name>[^/]+)", put_secret)
        self.add("PATCH", r"/keyvault", deny)
