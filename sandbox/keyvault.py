"""A Key Vault double (secrets only) on the sandbox's HTTPS origin, for the credential modes that
read Key Vault and for secret rotation.

It answers the data-plane routes `azure-keyvault-secrets`' `SecretClient` uses, at the root of the
sandbox origin (so `KEY_VAULT_URL` is the sandbox URL; a path prefix would break the SDK's parsing
of secret ids, which must be `{vault}/secrets/{name}/{version}`):

| route | SDK call |
|---|---|
| `GET /secrets` | `list_properties_of_secrets` (latest version of each, no values) |
| `PUT /secrets/{name}` | `set_secret` (a new version) |
| `GET /secrets/{name}[/]`, `GET /secrets/{name}/{version}` | `get_secret` |
| `GET /secrets/{name}/versions` | `list_properties_of_secret_versions` |
| `PATCH /secrets/{name}/{version}` | `update_secret_properties` |

Every request needs `api-version` and a bearer token for `https://vault.azure.net` issued by the
sandbox (the managed identity endpoint issues them). Without one the vault answers Key Vault's
challenge (401, `WWW-Authenticate: Bearer authorization="{sandbox}/{tenant}",
resource="https://vault.azure.net"`), which the SDK's challenge policy follows. Errors have Key
Vault's body `{"error": {"code", "message", "innererror"?}}`: 404 `SecretNotFound`, 403
`Forbidden` (`ForbiddenByRbac` for an operation the control API denied, `SecretDisabled` for a
disabled version), 400 `BadParameter`. Injected faults (the control API's) apply to vault
requests after authentication; a `status` fault answers in Key Vault's body.

Not simulated: delete, recover, purge, backup and restore; certificates and keys as objects (a
certificate's private key is read as the secret of the same name, as in Key Vault).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from sandbox import timeutil
from sandbox.limits import Faults
from sandbox.login import unknown_identity
from sandbox.messages import Request, Response, link
from sandbox.state import Tenant
from sandbox.tokens import TokenIssuer

VAULT_RESOURCE = "https://vault.azure.net"
OPERATIONS = ("get", "list", "set", "update")
MAX_PAGE = 25  # Key Vault's maxresults limit

_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_LIST = re.compile(r"^/secrets/?$")
_VERSIONS = re.compile(r"^/secrets/(?P<name>[^/]+)/versions/?$")
_ONE = re.compile(r"^/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?$")

_RBAC_ACTIONS = {
    "get": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "list": "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    "set": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
    "update": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
}


class VaultError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner
        self.headers = headers or {}

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return Response.json(self.status, {"error": error}, self.headers)


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str = field(repr=False)
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": self.enabled}
        if self.not_before is not None:
            attributes["nbf"] = self.not_before
        if self.expires is not None:
            attributes["exp"] = self.expires
        attributes.update(
            {
                "created": self.created,
                "updated": self.updated,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            }
        )
        return attributes

    def item(self, origin: str, versioned: bool) -> dict[str, Any]:
        """A SecretItem (lists): no value."""
        ident = f"{origin}/secrets/{self.name}" + (f"/{self.version}" if versioned else "")
        body: dict[str, Any] = {"id": ident, "attributes": self.attributes()}
        if self.content_type is not None:
            body["contentType"] = self.content_type
        if self.tags is not None:
            body["tags"] = dict(self.tags)
        return body

    def bundle(self, origin: str, with_value: bool = True) -> dict[str, Any]:
        """A SecretBundle: the item with its version, and the value unless only attributes."""
        body = self.item(origin, versioned=True)
        if with_value:
            body = {"value": self.value, **body}
        return body

    def describe(self, with_value: bool = False) -> dict[str, Any]:
        """For the control API."""
        found: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "enabled": self.enabled,
            "contentType": self.content_type,
            "tags": dict(self.tags) if self.tags is not None else None,
            "notBefore": _stamp(self.not_before),
            "expiresOn": _stamp(self.expires),
            "created": _stamp(self.created),
            "updated": _stamp(self.updated),
        }
        if with_value:
            found["value"] = self.value
        return found


def _stamp(value: int | None) -> str | None:
    if value is None:
        return None
    return timeutil.iso_z(datetime.fromtimestamp(value, UTC))


class KeyVault:
    """The vault's state and its data-plane routes. Thread-safe."""

    def __init__(self, tenant: Tenant, issuer: TokenIssuer, faults: Faults) -> None:
        self.tenant = tenant
        self.issuer = issuer
        self.faults = faults
        self._lock = threading.RLock()
        self._secrets: dict[str, list[SecretVersion]] = {}  # lower name -> versions, oldest first
        self._denied: set[str] = set()

    # -- control -------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._denied.clear()

    def deny(self, operations: list[str]) -> list[str]:
        unknown = [o for o in operations if o not in OPERATIONS]
        if unknown:
            raise ValueError(f"operations must be among {', '.join(OPERATIONS)}")
        with self._lock:
            self._denied = set(operations)
            return sorted(self._denied)

    def put(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        if not _NAME.match(name):
            raise VaultError(
                400,
                "BadParameter",
                "The request URI contains an invalid name: "
                f"{name}. Secret names may contain only 0-9, a-z, A-Z and -.",
            )
        stamp = int(timeutil.now().timestamp())
        with self._lock:
            versions = self._secrets.setdefault(name.lower(), [])
            secret = SecretVersion(
                name=versions[0].name if versions else name,
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=dict(tags) if tags is not None else None,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                created=stamp,
                updated=stamp,
            )
            versions.append(secret)
            return secret

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every secret's versions (values only when one secret is named)."""
        with self._lock:
            if name is not None:
                versions = self._secrets.get(name.lower())
                if not versions:
                    raise KeyError(name)
                return [v.describe(with_value=True) for v in versions]
            return [
                {"name": versions[0].name, "versions": [v.describe() for v in versions]}
                for versions in self._secrets.values()
            ]

    # -- managed identity tokens for the vault ------------------------------------------------

    @staticmethod
    def wants_token(request: Request) -> bool:
        """A managed identity token request for the vault (the login module serves the rest)."""
        return request.query.get("resource", "").rstrip("/") == VAULT_RESOURCE

    def managed_identity_token(self, request: Request) -> Response:
        client_id = request.query.get("client_id") or request.query.get("clientid") or ""
        identity = self.tenant.managed_identity(client_id)
        if identity is None:
            return unknown_identity(request, client_id)
        with self.tenant.lock:
            tid = self.tenant.tenant_id
            lifetime = 86_400
            token = self.issuer.sign(
                {
                    "aud": VAULT_RESOURCE,
                    "iss": f"https://sts.windows.net/{tid}/",
                    "appid": identity.client_id,
                    "oid": identity.object_id,
                    "sub": identity.object_id,
                    "tid": tid,
                    "idtyp": "app",
                    "ver": "1.0",
                },
                lifetime,
            )
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(timeutil.now().timestamp()) + lifetime),
                "expires_in": str(lifetime),
                "resource": VAULT_RESOURCE,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )

    # -- data plane ----------------------------------------------------------------------------

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/secrets" or path.startswith("/secrets/")

    def handle(self, request: Request) -> Response:
        fault_id: str | None = None
        try:
            claims = self._authenticate(request)
            if not request.query.get("api-version"):
                raise VaultError(400, "BadParameter", "The api-version query parameter is missing.")
            fault = self.faults.match(request.method, request.path)
            if fault is not None:
                fault_id = fault.id
                if fault.action == "status":
                    default = "Forbidden" if fault.status == 403 else "InternalServerError"
                    raise VaultError(
                        fault.status,
                        fault.code or default,
                        fault.message or "Injected fault.",
                        headers={"Retry-After": fault.retry_after} if fault.retry_after else None,
                    )
                Faults.apply(fault)  # delay, or drop the connection
            response = self._route(request, claims)
            response.app = str(claims.get("appid") or "") or None
        except VaultError as error:
            response = error.response()
        response.fault = fault_id
        response.headers.setdefault("x-ms-request-id", request.request_id)
        response.headers.setdefault("x-ms-keyvault-service-version", "1.9.2441.1")
        response.headers.setdefault("Cache-Control", "no-cache")
        return response

    def _challenge(self, request: Request) -> dict[str, str]:
        authorization = f"{request.origin}/{self.tenant.tenant_id}"
        return {
            "WWW-Authenticate": f'Bearer authorization="{authorization}", '
            f'resource="{VAULT_RESOURCE}"'
        }

    def _authenticate(self, request: Request) -> dict[str, Any]:
        header = request.headers.get("Authorization")
        challenge = self._challenge(request)
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise VaultError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers=challenge,
            )
        token = header[7:].strip()
        try:
            claims = self.issuer.verify(token, audiences=[VAULT_RESOURCE, VAULT_RESOURCE + "/"])
        except jwt.InvalidAudienceError as error:
            found = jwt.decode(token, options={"verify_signature": False}).get("aud")
            raise VaultError(
                401,
                "Unauthorized",
                f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {found}.",
                headers=challenge,
            ) from error
        except jwt.ExpiredSignatureError as error:
            raise VaultError(
                401,
                "Unauthorized",
                "Token validation failed: the token is expired.",
                headers=challenge,
            ) from error
        except jwt.PyJWTError as error:
            raise VaultError(
                401,
                "Unauthorized",
                "Token validation failed: the signature is invalid.",
                headers=challenge,
            ) from error
        if claims.get("tid") != self.tenant.tenant_id:
            raise VaultError(
                401,
                "Unauthorized",
                "AKV10032: Invalid issuer. Expected one of "
                f"https://sts.windows.net/{self.tenant.tenant_id}/, found "
                f"{claims.get('iss')}.",
                headers=challenge,
            )
        return claims

    def _allow(self, operation: str, request: Request, claims: dict[str, Any]) -> None:
        with self._lock:
            denied = operation in self._denied
        if denied:
            raise VaultError(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed "
                "recently, please observe propagation time.\r\n"
                f"Caller: appid={claims.get('appid')};oid={claims.get('oid')};"
                f"iss={claims.get('iss')}\r\n"
                f"Action: '{_RBAC_ACTIONS[operation]}'\r\n"
                f"Resource: '{request.origin}'\r\n"
                "Assignment: (not found)\r\n"
                "DenyAssignmentId: null\r\n"
                "DecisionReason: null \r\n"
                "Vault: sandbox-vault;location=westeurope\r\n",
                inner="ForbiddenByRbac",
            )

    def _route(self, request: Request, claims: dict[str, Any]) -> Response:
        path, method = request.path, request.method
        if _LIST.match(path) and method == "GET":
            self._allow("list", request, claims)
            return self._list(request)
        match = _VERSIONS.match(path)
        if match and method == "GET":
            self._allow("list", request, claims)
            return self._list(request, match.group("name"))
        match = _ONE.match(path)
        if match is None:
            raise VaultError(404, "NotFound", f"No route for {method} {path}.")
        name, version = match.group("name"), match.group("version") or ""
        if method == "PUT" and match.group("version") is None:
            self._allow("set", request, claims)
            return self._set(request, name)
        if method == "GET":
            self._allow("get", request, claims)
            secret = self._find(name, version)
            if not secret.enabled:
                raise VaultError(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    inner="SecretDisabled",
                )
            return Response.json(200, secret.bundle(request.origin))
        if method == "PATCH":
            self._allow("update", request, claims)
            return self._update(request, name, version)
        raise VaultError(405, "MethodNotAllowed", f"The method {method} is not allowed here.")

    def _find(self, name: str, version: str) -> SecretVersion:
        with self._lock:
            versions = self._secrets.get(name.lower()) or []
            if not version and versions:
                return versions[-1]
            for secret in versions:
                if secret.version == version:
                    return secret
        shown = f"{name}/{version}" if version else name
        raise VaultError(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {shown} was not found in this key vault. If you recently "
            "deleted this secret you may be able to recover it using the correct recovery "
            "command. For help resolving this issue, please see "
            "https://go.microsoft.com/fwlink/?linkid=2125182",
        )

    def _json(self, request: Request) -> dict[str, Any]:
        try:
            value = json.loads(request.body or b"{}")
        except ValueError as error:
            raise VaultError(400, "BadParameter", "The request body is not valid JSON.") from error
        if not isinstance(value, dict):
            raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
        return value

    @staticmethod
    def _attributes(body: dict[str, Any]) -> tuple[bool | None, int | None, int | None]:
        attributes = body.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise VaultError(400, "BadParameter", "attributes must be an object.")
        enabled = attributes.get("enabled")
        nbf, exp = attributes.get("nbf"), attributes.get("exp")
        for label, value in (("nbf", nbf), ("exp", exp)):
            if value is not None and not isinstance(value, int):
                raise VaultError(400, "BadParameter", f"attributes.{label} must be a NumericDate.")
        return (bool(enabled) if enabled is not None else None), nbf, exp

    @staticmethod
    def _tags(body: dict[str, Any]) -> dict[str, str] | None:
        tags = body.get("tags")
        if tags is None:
            return None
        if not isinstance(tags, dict) or len(tags) > 15:
            raise VaultError(400, "BadParameter", "tags must be an object of at most 15 strings.")
        return {str(k): str(v) for k, v in tags.items()}

    def _set(self, request: Request, name: str) -> Response:
        body = self._json(request)
        value = body.get("value")
        if not isinstance(value, str):
            raise VaultError(400, "BadParameter", "Property value is required.")
        if len(value.encode("utf-8")) > 25 * 1024:
            raise VaultError(400, "BadParameter", "The secret value exceeds 25 KB.")
        enabled, nbf, exp = self._attributes(body)
        content_type = body.get("contentType")
        secret = self.put(
            name,
            value,
            content_type=str(content_type) if content_type is not None else None,
            tags=self._tags(body),
            enabled=True if enabled is None else enabled,
            not_before=nbf,
            expires=exp,
        )
        return Response.json(200, secret.bundle(request.origin))

    def _update(self, request: Request, name: str, version: str) -> Response:
        body = self._json(request)
        enabled, nbf, exp = self._attributes(body)
        tags = self._tags(body)
        with self._lock:
            secret = self._find(name, version)
            if enabled is not None:
                secret.enabled = enabled
            if nbf is not None:
                secret.not_before = nbf
            if exp is not None:
                secret.expires = exp
            if tags is not None:
                secret.tags = tags
            if body.get("contentType") is not None:
                secret.content_type = str(body["contentType"])
            secret.updated = int(timeutil.now().timestamp())
            answer = secret.bundle(request.origin, with_value=False)
        return Response.json(200, answer)

    def _list(self, request: Request, name: str | None = None) -> Response:
        try:
            size = int(request.query.get("maxresults") or MAX_PAGE)
            skip = int(request.query.get("$skiptoken") or 0)
        except ValueError as error:
            raise VaultError(400, "BadParameter", "maxresults must be a number.") from error
        if not 1 <= size <= MAX_PAGE:
            raise VaultError(400, "BadParameter", f"maxresults must be between 1 and {MAX_PAGE}.")
        with self._lock:
            if name is None:
                items = [v[-1].item(request.origin, False) for v in self._secrets.values() if v]
            else:
                versions = self._secrets.get(name.lower()) or []
                if not versions:
                    self._find(name, "")  # 404 SecretNotFound
                items = [v.item(request.origin, True) for v in versions]
        body: dict[str, Any] = {"value": items[skip : skip + size], "nextLink": None}
        if skip + size < len(items):
            body["nextLink"] = link(
                request.origin,
                request.path,
                {
                    "api-version": request.query["api-version"],
                    "$skiptoken": str(skip + size),
                    "maxresults": str(size),
                },
            )
        return Response.json(200, body)
