"""The simulated Entra ID (v2.0 endpoints): discovery, keys, client-credentials tokens, and a
managed-identity token endpoint for secretless (federated) sign-in.

Errors carry the AADSTS codes and texts Entra answers with, so the product's error translation
(SPEC §5) can be tested: 7000215 wrong secret, 7000222 expired secret, 90002 unknown tenant,
700016 unknown client, 1002012 / 70011 bad scope, 700027 / 700024 bad client assertion,
70021 no matching federated credential.
"""

from __future__ import annotations

import base64
import hmac
import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import defaults, timeutil
from sandbox.messages import EntraError, GraphError, Request, Response
from sandbox.state import Application, Tenant
from sandbox.tokens import TokenIssuer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH_RESOURCES = ("https://graph.microsoft.com", defaults.GRAPH_APP_ID)
RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}

DISCOVERY = re.compile(r"^/([^/]+)(/v2\.0)?/\.well-known/openid-configuration$")
TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
KEYS = re.compile(r"^/([^/]+)/discovery/(?:v2\.0/)?keys$")


class Login:
    def __init__(self, tenant: Tenant, issuer: TokenIssuer) -> None:
        self.tenant = tenant
        self.issuer = issuer

    def handles(self, path: str) -> bool:
        return bool(DISCOVERY.match(path) or TOKEN.match(path) or KEYS.match(path))

    def handle(self, request: Request) -> Response:
        if match := DISCOVERY.match(request.path):
            return self.discovery(request, match.group(1), bool(match.group(2)))
        if match := KEYS.match(request.path):
            return Response.json(200, self.issuer.jwks())
        if (match := TOKEN.match(request.path)) and request.method == "POST":
            return self.token(request, match.group(1))
        raise GraphError(405, "MethodNotAllowed", "The HTTP method is not allowed here.")

    # -- discovery ---------------------------------------------------------------------------

    def _unknown_tenant(self, name: str, error: str = "invalid_request") -> EntraError:
        return EntraError(
            400,
            error,
            90002,
            f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID and "
            "are signing into the correct cloud. Check with your subscription administrator, "
            "this may happen if there are no active subscriptions for the tenant.",
        )

    def discovery(self, request: Request, tenant_name: str, v2: bool) -> Response:
        if not self.tenant.knows_tenant(tenant_name):
            return self._unknown_tenant(tenant_name, "invalid_tenant").response(request)
        tid = self.tenant.tenant_id
        base = f"{request.origin}/{tid}"
        oauth = f"{base}/oauth2/v2.0" if v2 else f"{base}/oauth2"
        config: dict[str, Any] = {
            "token_endpoint": f"{oauth}/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys" if v2 else f"{base}/discovery/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0" if v2 else f"https://sts.windows.net/{tid}/",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{request.origin}/oidc/userinfo",
            "authorization_endpoint": f"{oauth}/authorize",
            "device_authorization_endpoint": f"{oauth}/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{oauth}/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid", "roles"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": request.origin.removeprefix("https://"),
            "rbac_url": "https://pas.windows.net",
        }
        return Response.json(200, config)

    # -- token -------------------------------------------------------------------------------

    def token(self, request: Request, tenant_name: str) -> Response:
        form = request.form()
        if not self.tenant.knows_tenant(tenant_name):
            raise self._unknown_tenant(tenant_name)
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = request.headers.get("Authorization")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:]).decode()
                client_id, _, secret = decoded.partition(":")
            except ValueError:
                pass
        if not client_id:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        with self.tenant.lock:
            app = self.tenant.apps.get(client_id)
            if app is None:
                raise EntraError(
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found in the directory "
                    f"'{defaults.TENANT_NAME}'. This can happen if the application has not been "
                    "installed by the administrator of the tenant or consented to by any user in "
                    "the tenant. You may have sent your authentication request to the wrong "
                    "tenant.",
                )
            audience = self._audience(request, form.get("scope"))
            if secret is not None:
                self._check_secret(app, secret)
                method = "1"
            elif form.get("client_assertion"):
                if form.get("client_assertion_type") != ASSERTION_TYPE:
                    raise EntraError(
                        400,
                        "invalid_request",
                        50027,
                        "Invalid JWT token. The client_assertion_type is not supported.",
                    )
                self._check_assertion(request, app, form["client_assertion"])
                method = "2"
            else:
                raise EntraError(
                    401,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' "
                    "or 'client_secret'.",
                )
            lifetime = self.tenant.settings.token_lifetime_seconds
            claims = {
                "aud": audience,
                "iss": f"https://sts.windows.net/{self.tenant.tenant_id}/",
                "idp": f"https://sts.windows.net/{self.tenant.tenant_id}/",
                "tid": self.tenant.tenant_id,
                "appid": app.client_id,
                "app_displayname": app.display_name,
                "appidacr": method,
                "idtyp": "app",
                "oid": app.service_principal_id,
                "sub": app.service_principal_id,
                "roles": sorted(app.roles),
                "ver": "1.0",
            }
        token = self.issuer.sign(claims, lifetime)
        return Response.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _audience(self, request: Request, scope: str | None) -> str:
        if not scope:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        wanted = [s for s in scope.split() if s.lower() not in RESERVED_SCOPES]
        if len(wanted) != 1 or not wanted[0].endswith("/.default"):
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = wanted[0].removesuffix("/.default").rstrip("/")
        own = {request.origin.lower(), *self._own_origins(request)}
        if resource.lower() in own:
            return resource
        if resource.lower() in GRAPH_RESOURCES:
            return request.origin
        raise EntraError(
            400,
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope {scope} "
            "is not valid. The resource principal named "
            f"{resource} was not found in the tenant.",
        )

    @staticmethod
    def _own_origins(request: Request) -> set[str]:
        port = request.origin.rsplit(":", 1)[-1]
        return {f"https://127.0.0.1:{port}", f"https://localhost:{port}"}

    def _check_secret(self, app: Application, secret: str) -> None:
        stamp = timeutil.now()
        delay = self.tenant.settings.credential_propagation_seconds
        for credential in app.passwords:
            if hmac.compare_digest(credential.secret_text.encode(), secret.encode()):
                if credential.end <= stamp:
                    raise EntraError(
                        401,
                        "invalid_client",
                        7000222,
                        f"The provided client secret keys for app '{app.client_id}' are "
                        "expired. Visit the Azure portal to create new keys for your app: "
                        "https://aka.ms/NewClientSecret, or consider using certificate "
                        "credentials for added security: https://aka.ms/certCreds.",
                    )
                propagated = (stamp - credential.created).total_seconds() >= delay
                if credential.start <= stamp and propagated:
                    return
        raise EntraError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            "client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
        )

    def _check_assertion(self, request: Request, app: Application, assertion: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as error:
            raise EntraError(
                400, "invalid_request", 50027, f"Invalid JWT token. {error}"
            ) from error
        if header.get("kid") == self.issuer.kid:
            self._check_federated(app, assertion)
        else:
            self._check_certificate(request, app, assertion, header)

    def _check_certificate(
        self, request: Request, app: Application, assertion: str, header: dict[str, Any]
    ) -> None:
        x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
        presented = x5t or x5t256 or ""
        credential = None
        for key in app.keys:
            if (x5t and _b64url(key.sha1) == x5t.rstrip("=")) or (
                x5t256 and _b64url(key.sha256) == x5t256.rstrip("=")
            ):
                credential = key
                break
        if credential is None:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application. [Reason - The key was not found., Thumbprint of key "
                f"used by client: '{_thumb_hex(presented)}', Please visit the Azure Portal, Graph "
                "Explorer or directly use MS Graph to see configured keys for app Id "
                f"'{app.client_id}'.]",
            )
        stamp = timeutil.now()
        if credential.end <= stamp:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The key used is "
                f"expired., Thumbprint of key used by client: '{credential.sha1.hex().upper()}']",
            )
        public_key = credential.certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise EntraError(401, "invalid_client", 700027, "Unsupported certificate key type.")
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256", "PS256"],
                options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError as error:
            raise EntraError(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ) from error
        except jwt.PyJWTError as error:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                f"Client assertion contains an invalid signature. [Reason - {error}]",
            ) from error
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise EntraError(
                401,
                "invalid_client",
                700023,
                "Client assertion audience claim does not match Realm issuer or the issuer and "
                "subject are not the client id.",
            )
        audience = str(claims.get("aud"))
        if not audience.startswith(request.origin) or not audience.endswith("/oauth2/v2.0/token"):
            raise EntraError(
                401,
                "invalid_client",
                700021,
                f"Client assertion application identifier doesn't match 'client_id' parameter, "
                f"or the audience '{audience}' is not this token endpoint.",
            )

    def _check_federated(self, app: Application, assertion: str) -> None:
        try:
            claims = self.issuer.verify(assertion)
        except jwt.ExpiredSignatureError as error:
            raise EntraError(
                400,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ) from error
        except jwt.PyJWTError as error:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                f"Client assertion failed signature validation. [Reason - {error}]",
            ) from error
        issuer, subject = str(claims.get("iss")), str(claims.get("sub"))
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        for credential in app.federated:
            if (
                credential.issuer == issuer
                and credential.subject == subject
                and any(a in credential.audiences for a in audiences)
            ):
                return
        raise EntraError(
            400,
            "invalid_client",
            70021,
            "No matching federated identity record found for presented assertion. Assertion "
            f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
            f"'{','.join(str(a) for a in audiences)}'.",
        )

    # -- managed identity ------------------------------------------------------------------

    def managed_identity_token(self, request: Request) -> Response:
        """App Service's managed identity endpoint (api-version 2019-08-01) for the sandbox."""
        resource = request.query.get("resource", "")
        client_id = request.query.get("client_id") or request.query.get("clientid") or ""
        identity = self.tenant.managed_identity(client_id)
        if identity is None:
            return unknown_identity(request, client_id)
        with self.tenant.lock:
            if resource.rstrip("/") not in (
                defaults.TOKEN_EXCHANGE_AUDIENCE,
                "fb60f99c-7a34-4190-8149-302f77469936",
            ):
                return Response.json(
                    400,
                    {
                        "statusCode": 400,
                        "message": "The sandbox issues managed identity tokens only for "
                        f"'{defaults.TOKEN_EXCHANGE_AUDIENCE}' (federated sign-in).",
                        "correlationId": request.request_id,
                    },
                )
            lifetime = 86_400
            token = self.issuer.sign(
                {
                    "aud": resource.rstrip("/"),
                    "iss": self.tenant.federation_issuer,
                    "sub": identity.object_id,
                    "oid": identity.object_id,
                    "azp": identity.client_id,
                    "tid": self.tenant.tenant_id,
                    "idtyp": "app",
                    "ver": "2.0",
                },
                lifetime,
            )
        expires_on = int(timeutil.now().timestamp()) + lifetime
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "expires_in": str(lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _thumb_hex(value: str) -> str:
    try:
        padded = value + "=" * (-len(value) % 4)
        return base64.urlsafe_b64decode(padded).hex().upper()
    except ValueError:
        return value


def unknown_identity(request: Request, client_id: str) -> Response:
    """App Service's answer when no managed identity matches the request."""
    return Response.json(
        400,
        {
            "statusCode": 400,
            "message": f"No managed identity found for the specified client_id '{client_id}'.",
            "correlationId": request.request_id,
        },
    )
