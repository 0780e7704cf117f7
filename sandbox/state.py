"""The tenant's in-memory state: directory (apps, users, rooms), calendars and subscriptions.

One re-entrant lock guards everything; handlers take it for the whole of their read or change.
Lookups are dicts keyed by id or lower-cased address, so 10,000 mailboxes stay cheap.
"""

from __future__ import annotations

import secrets
import string
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from sandbox import defaults, timeutil
from sandbox.calendar import MAILBOX_STATES, PROVIDERS, Mailbox
from sandbox.defaults import Settings
from sandbox.messages import GraphError
from sandbox.tls import thumbprints

ChangeListener = Callable[[Mailbox, list[tuple[str, str]]], None]


def new_secret_text() -> str:
    """A secret shaped like Entra's: 40 characters, `~` at position 4."""
    alphabet = string.ascii_letters + string.digits + "_-.~"
    head = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(3))
    return head + "8Q~" + "".join(secrets.choice(alphabet) for _ in range(34))


@dataclass
class PasswordCredential:
    key_id: str
    display_name: str | None
    secret_text: str
    start: datetime
    end: datetime
    created: datetime

    def to_graph(self, include_secret: bool = False) -> dict[str, Any]:
        return {
            "customKeyIdentifier": None,
            "displayName": self.display_name,
            "endDateTime": timeutil.graph_stamp(self.end),
            "hint": self.secret_text[:3],
            "keyId": self.key_id,
            "secretText": self.secret_text if include_secret else None,
            "startDateTime": timeutil.graph_stamp(self.start),
        }


@dataclass
class KeyCredential:
    key_id: str
    display_name: str
    certificate: x509.Certificate
    sha1: bytes
    sha256: bytes
    start: datetime
    end: datetime

    def to_graph(self) -> dict[str, Any]:
        return {
            "customKeyIdentifier": self.sha1.hex().upper(),
            "displayName": self.display_name,
            "endDateTime": timeutil.graph_stamp(self.end),
            "key": None,
            "keyId": self.key_id,
            "startDateTime": timeutil.graph_stamp(self.start),
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
        }


@dataclass
class FederatedCredential:
    id: str
    name: str
    issuer: str
    subject: str
    audiences: list[str]
    description: str = ""

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": list(self.audiences),
            "description": self.description,
        }


# Exchange Online application roles (RBAC for Applications) for calendars, and the Graph
# permission each grants over the mailboxes of its scope.
EXCHANGE_ROLES = {
    "Application Calendars.Read": "Calendars.Read",
    "Application Calendars.ReadWrite": "Calendars.ReadWrite",
}


@dataclass
class ExchangeAssignment:
    """An Exchange application role assigned to the app's service principal, limited to a
    management scope: the direct members of a group, as lower-cased mailbox addresses."""

    role: str
    mailboxes: set[str] = field(default_factory=set)

    @property
    def permission(self) -> str:
        return EXCHANGE_ROLES[self.role]

    def covers(self, mailbox: Mailbox) -> bool:
        return mailbox.address.lower() in self.mailboxes

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "permission": self.permission,
            "scope": sorted(self.mailboxes),
        }


def exchange_role(name: str) -> str:
    """The Exchange role a name means: ``Application Calendars.ReadWrite`` or its permission,
    ``Calendars.ReadWrite``."""
    role = name if name in EXCHANGE_ROLES else f"Application {name}"
    if role not in EXCHANGE_ROLES:
        known = ", ".join(EXCHANGE_ROLES)
        raise ValueError(f"unknown Exchange application role {name!r}: one of {known}")
    return role


@dataclass
class Application:
    object_id: str
    client_id: str
    display_name: str
    service_principal_id: str
    created: datetime
    roles: set[str] = field(default_factory=set)
    passwords: list[PasswordCredential] = field(default_factory=list)
    keys: list[KeyCredential] = field(default_factory=list)
    federated: list[FederatedCredential] = field(default_factory=list)
    owned_by_self: bool = True
    # Exchange Online RBAC for Applications, by role name; independent of ``roles`` (Entra).
    exchange: dict[str, ExchangeAssignment] = field(default_factory=dict)

    def exchange_permissions(self, mailbox: Mailbox) -> set[str]:
        """The Graph permissions Exchange RBAC grants this app over ``mailbox``."""
        return {a.permission for a in self.exchange.values() if a.covers(mailbox)}

    def add_password(
        self,
        display_name: str | None,
        start: datetime | None = None,
        end: datetime | None = None,
        secret_text: str | None = None,
    ) -> PasswordCredential:
        stamp = timeutil.now()
        begin = start or stamp
        credential = PasswordCredential(
            key_id=str(uuid.uuid4()),
            display_name=display_name,
            secret_text=secret_text or new_secret_text(),
            start=begin,
            end=end or begin + timedelta(days=730),
            created=stamp,
        )
        self.passwords.append(credential)
        return credential

    def add_certificate(self, pem: str, display_name: str | None = None) -> KeyCredential:
        cert = x509.load_pem_x509_certificate(pem.encode())
        sha1, sha256 = thumbprints(cert)
        credential = KeyCredential(
            key_id=str(uuid.uuid4()),
            display_name=display_name or cert.subject.rfc4514_string(),
            certificate=cert,
            sha1=sha1,
            sha256=sha256,
            start=cert.not_valid_before_utc,
            end=cert.not_valid_after_utc,
        )
        self.keys.append(credential)
        return credential

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.object_id,
            "appId": self.client_id,
            "displayName": self.display_name,
            "createdDateTime": timeutil.iso_z(self.created),
            "signInAudience": "AzureADMyOrg",
            "publisherDomain": defaults.TENANT_DOMAIN,
            "passwordCredentials": [p.to_graph() for p in self.passwords],
            "keyCredentials": [k.to_graph() for k in self.keys],
            "requiredResourceAccess": [
                {
                    "resourceAppId": defaults.GRAPH_APP_ID,
                    "resourceAccess": [{"id": role, "type": "Role"} for role in sorted(self.roles)],
                }
            ],
        }


@dataclass
class RoomList:
    id: str
    address: str
    display_name: str
    rooms: list[str] = field(default_factory=list)  # lower-cased room addresses, in order

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "address": None,
            "geoCoordinates": None,
            "phone": None,
            "emailAddress": self.address,
        }


@dataclass
class ManagedIdentity:
    client_id: str
    object_id: str
    name: str


@dataclass
class Subscription:
    id: str
    app_id: str
    resource: str
    mailbox_id: str
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    expiration: datetime
    client_state: str | None
    created: datetime
    paused: bool = False

    def expired(self, at: datetime | None = None) -> bool:
        return self.expiration <= (at or timeutil.now())

    def to_graph(self, origin: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{origin}/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "notificationContentType": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": timeutil.graph_stamp(self.expiration),
            "creatorId": defaults.SERVICE_PRINCIPAL_ID,
            "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def check_meeting_providers(value: Any) -> list[str]:
    """A calendar's allowedOnlineMeetingProviders, validated."""
    if not isinstance(value, list) or not value or not all(v in PROVIDERS for v in value):
        raise ValueError(f"allowedOnlineMeetingProviders must be a list of {', '.join(PROVIDERS)}")
    return [str(v) for v in value]


def mailbox_error(address: str, mailbox: Mailbox | None) -> GraphError | None:
    """The error Graph answers for a mailbox route, or None when the mailbox is usable."""
    if mailbox is None:
        return GraphError(404, "ErrorInvalidUser", f"The requested user '{address}' is invalid.")
    if mailbox.state == "not_enabled":
        return GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    if mailbox.state == "access_denied":
        return GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")
    return None


class Tenant:
    """Everything the simulated tenant knows. Thread-safe through `lock`."""

    def __init__(
        self,
        tenant_id: str = defaults.TENANT_ID,
        client_id: str = defaults.CLIENT_ID,
        client_secret: str = defaults.CLIENT_SECRET,
        settings: Settings | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.tenant_id = tenant_id
        self.default_client_id = client_id
        self.default_client_secret = client_secret
        self.settings = settings or Settings()
        self.domains = {defaults.TENANT_DOMAIN, "contoso.onmicrosoft.com"}
        self.listeners: list[ChangeListener] = []
        self.apps: dict[str, Application] = {}
        self.apps_by_object: dict[str, Application] = {}
        self.identities: dict[str, ManagedIdentity] = {}
        self.mailboxes: dict[str, Mailbox] = {}  # lower address -> mailbox
        self.mailboxes_by_id: dict[str, Mailbox] = {}
        self.room_lists: dict[str, RoomList] = {}  # lower address -> room list
        self.subscriptions: dict[str, Subscription] = {}
        self.subscriptions_by_mailbox: dict[str, set[str]] = {}
        self.reset()

    # -- setup -----------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.apps.clear()
            self.apps_by_object.clear()
            self.identities.clear()
            self.mailboxes.clear()
            self.mailboxes_by_id.clear()
            self.room_lists.clear()
            self.subscriptions.clear()
            self.subscriptions_by_mailbox.clear()
            app = Application(
                object_id=defaults.APP_OBJECT_ID,
                client_id=self.default_client_id,
                display_name=defaults.APP_DISPLAY_NAME,
                service_principal_id=defaults.SERVICE_PRINCIPAL_ID,
                created=timeutil.now(),
                roles=set(defaults.DEFAULT_ROLES),
            )
            app.add_password(
                "sandbox default secret",
                start=timeutil.now() - timedelta(days=1),
                secret_text=self.default_client_secret,
            )
            identity = ManagedIdentity(
                client_id=defaults.MANAGED_IDENTITY_CLIENT_ID,
                object_id=defaults.MANAGED_IDENTITY_OBJECT_ID,
                name="calendar-sync-identity",
            )
            self.identities[identity.client_id] = identity
            app.federated.append(
                FederatedCredential(
                    id=str(uuid.uuid4()),
                    name="calendar-sync-identity",
                    issuer=self.federation_issuer,
                    subject=identity.object_id,
                    audiences=[defaults.TOKEN_EXCHANGE_AUDIENCE],
                    description="the function app's user-assigned managed identity",
                )
            )
            self.add_app(app)

    @property
    def federation_issuer(self) -> str:
        return f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"

    def add_app(self, app: Application) -> Application:
        with self.lock:
            self.apps[app.client_id] = app
            self.apps_by_object[app.object_id] = app
            return app

    def knows_tenant(self, name: str) -> bool:
        return name.lower() == self.tenant_id or name.lower() in self.domains

    # -- mailboxes ---------------------------------------------------------------------------

    def add_mailbox(
        self,
        address: str,
        display_name: str | None = None,
        kind: str = "user",
        state: str = "ok",
        room_lists: list[str] | None = None,
        capacity: int | None = None,
        building: str | None = None,
        floor: int | None = None,
        mailbox_id: str | None = None,
        meeting_providers: list[str] | None = None,
    ) -> Mailbox:
        if kind not in ("user", "room"):
            raise ValueError("kind must be user or room")
        if state not in MAILBOX_STATES:
            raise ValueError(f"state must be one of {', '.join(MAILBOX_STATES)}")
        if "@" not in address:
            raise ValueError("address must be an email address")
        with self.lock:
            key = address.lower()
            if key in self.mailboxes:
                raise ValueError(f"mailbox {address} exists")
            mailbox = Mailbox(
                id=mailbox_id or str(uuid.uuid4()),
                address=address,
                display_name=display_name or address.split("@", maxsplit=1)[0],
                kind=kind,
                state=state,
                capacity=capacity,
                building=building,
                floor=floor,
            )
            if meeting_providers is not None:
                mailbox.meeting_providers = check_meeting_providers(meeting_providers)
            self.mailboxes[key] = mailbox
            self.mailboxes_by_id[mailbox.id] = mailbox
            for list_address in room_lists or []:
                self.add_to_room_list(mailbox, list_address)
            return mailbox

    def add_room_list(self, address: str, display_name: str | None = None) -> RoomList:
        with self.lock:
            key = address.lower()
            found = self.room_lists.get(key)
            if found is None:
                found = RoomList(
                    str(uuid.uuid4()), address, display_name or address.split("@", maxsplit=1)[0]
                )
                self.room_lists[key] = found
            elif display_name:
                found.display_name = display_name
            return found

    def add_to_room_list(self, mailbox: Mailbox, list_address: str) -> None:
        room_list = self.add_room_list(list_address)
        if mailbox.address.lower() not in room_list.rooms:
            room_list.rooms.append(mailbox.address.lower())
        if room_list.address not in mailbox.room_lists:
            mailbox.room_lists.append(room_list.address)

    def remove_mailbox(self, address: str) -> None:
        with self.lock:
            mailbox = self.mailboxes.pop(address.lower(), None)
            if mailbox is None:
                raise KeyError(address)
            self.mailboxes_by_id.pop(mailbox.id, None)
            for room_list in self.room_lists.values():
                if mailbox.address.lower() in room_list.rooms:
                    room_list.rooms.remove(mailbox.address.lower())

    def managed_identity(self, client_id: str) -> ManagedIdentity | None:
        """The identity a managed identity token request names; without a client id, the only
        one there is (as App Service picks the system-assigned identity)."""
        with self.lock:
            if client_id:
                return self.identities.get(client_id)
            identities = list(self.identities.values())
            return identities[0] if len(identities) == 1 else None

    def lookup(self, key: str) -> Mailbox | None:
        """A mailbox by id or address (case-insensitive)."""
        return self.mailboxes_by_id.get(key) or self.mailboxes.get(key.lower())

    def may(self, app_id: str, roles: set[str], allowed: set[str], key: str | None) -> bool:
        """Whether an app holds one of the ``allowed`` permissions for a request on mailbox
        ``key``: from Entra ID (``roles``, tenant-wide) or from Exchange RBAC for Applications
        (only for mailboxes in the role's scope). Grants of the two add up. A mailbox Exchange
        cannot evaluate (unknown, not in Exchange Online) passes when the app holds a scoped
        role, so that the route answers its own 404."""
        if allowed & roles:
            return True
        with self.lock:
            app = self.apps.get(app_id)
            if app is None or key is None:
                return False
            scoped = {a.permission for a in app.exchange.values()}
            if not allowed & scoped:
                return False
            mailbox = self.lookup(key)
            if mailbox is None or mailbox.state == "not_enabled":
                return True
            return bool(allowed & app.exchange_permissions(mailbox))

    def mailbox_for_route(self, key: str) -> Mailbox:
        mailbox = self.lookup(key)
        error = mailbox_error(key, mailbox)
        if error is not None:
            raise error
        assert mailbox is not None
        return mailbox

    # -- changes -----------------------------------------------------------------------------

    def changed(self, mailbox: Mailbox, changes: list[tuple[str, str]]) -> None:
        if not changes:
            return
        for listener in list(self.listeners):
            listener(mailbox, changes)

    # -- subscriptions ---------------------------------------------------------------------

    def add_subscription(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions[subscription.id] = subscription
            self.subscriptions_by_mailbox.setdefault(subscription.mailbox_id, set()).add(
                subscription.id
            )

    def subscribe(
        self,
        address: str,
        *,
        notification_url: str,
        lifecycle_url: str | None,
        expiration: datetime,
        client_state: str,
        subscription_id: str | None = None,
    ) -> Subscription:
        """The app's subscription to ``address``'s events, put in place directly, as if
        created through Graph (for tests and benches that need many, or odd expiries)."""
        mailbox = self.lookup(address)
        if mailbox is None:
            raise KeyError(f"no mailbox {address}")
        subscription = Subscription(
            id=subscription_id or str(uuid.uuid4()),
            app_id=self.default_client_id,
            resource=f"users/{address}/events",
            mailbox_id=mailbox.id,
            change_types=["created", "updated", "deleted"],
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            expiration=expiration,
            client_state=client_state,
            created=timeutil.now(),
        )
        self.add_subscription(subscription)
        return subscription

    def remove_subscription(self, subscription_id: str) -> Subscription | None:
        with self.lock:
            found = self.subscriptions.pop(subscription_id, None)
            if found is not None:
                ids = self.subscriptions_by_mailbox.get(found.mailbox_id)
                if ids is not None:
                    ids.discard(subscription_id)
            return found

    def live_subscription(self, subscription_id: str, app_id: str | None = None) -> Subscription:
        """A subscription that has not expired (an expired one is gone, as in Graph)."""
        with self.lock:
            found = self.subscriptions.get(subscription_id)
            if found is not None and found.expired():
                self.remove_subscription(subscription_id)
                found = None
            if found is None or (app_id is not None and found.app_id != app_id):
                raise GraphError(
                    404,
                    "ResourceNotFound",
                    f"The object was not found. Subscription '{subscription_id}' does not exist.",
                )
            return found

    def mailbox_subscriptions(self, mailbox_id: str) -> list[Subscription]:
        with self.lock:
            ids = self.subscriptions_by_mailbox.get(mailbox_id) or set()
            return [self.subscriptions[i] for i in ids if i in self.subscriptions]

    # -- seed --------------------------------------------------------------------------------

    def seed(self) -> None:
        """Two room lists with rooms, and a few people."""
        with self.lock:
            self.add_room_list("rooms.berlin@contoso.example", "Berlin")
            self.add_room_list("rooms.munich@contoso.example", "Munich")
            # Berlin Tegel's calendar offers no Teams meetings (allowedOnlineMeetingProviders).
            rooms = [
                ("room.berlin@contoso.example", "Berlin Spree", "rooms.berlin", 8, 2),
                ("berlin.havel@contoso.example", "Berlin Havel", "rooms.berlin", 4, 2),
                ("berlin.tegel@contoso.example", "Berlin Tegel", "rooms.berlin", 12, 3),
                ("munich.isar@contoso.example", "Munich Isar", "rooms.munich", 6, 1),
                ("munich.alps@contoso.example", "Munich Alps", "rooms.munich", 20, 4),
            ]
            for address, name, room_list, capacity, floor in rooms:
                self.add_mailbox(
                    address,
                    name,
                    kind="room",
                    room_lists=[f"{room_list}@contoso.example"],
                    capacity=capacity,
                    building=name.split()[0],
                    floor=floor,
                    meeting_providers=["unknown"] if address.startswith("berlin.tegel@") else None,
                )
            for address, name in (
                ("ada@contoso.example", "Ada Lovelace"),
                ("alan@contoso.example", "Alan Turing"),
                ("grace@contoso.example", "Grace Hopper"),
            ):
                self.add_mailbox(address, name)
