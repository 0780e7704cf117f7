"""The simulated Entra ID: MSAL over TLS, AADSTS errors, certificate and federated credentials,
and Graph's checks of the token (401) and of application permissions (403)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import msal
import pytest
import requests

from sandbox import Sandbox, make_client_certificate
from sandbox.defaults import DEFAULT_ROLES, MANAGED_IDENTITY_CLIENT_ID
from tests.sandbox.conftest import PERSON, ROOM, Graph, get_token, token_response


def msal_app(
    sb: Sandbox, credential: Any, tenant: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sb.client_id,
        client_credential=credential,
        authority=f"{sb.url}/{tenant or sb.tenant_id}",
        instance_discovery=False,
    )


@pytest.fixture
def ca_env(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_file))
    return sb


def test_msal_acquires_a_token_over_tls_with_the_sandbox_ca(ca_env: Sandbox) -> None:
    sb = ca_env
    result = msal_app(sb, sb.client_secret).acquire_token_for_client(scopes=[f"{sb.url}/.default"])
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["aud"] == sb.url
    assert claims["iss"] == f"https://sts.windows.net/{sb.tenant_id}/"
    assert claims["tid"] == sb.tenant_id
    assert claims["appid"] == sb.client_id
    assert claims["appidacr"] == "1"
    assert set(claims["roles"]) == set(DEFAULT_ROLES)
    assert claims["exp"] - claims["iat"] == 3600
    header = jwt.get_unverified_header(result["access_token"])
    assert header["alg"] == "RS256"
    answer = Graph(sb, result["access_token"]).get(f"/users/{PERSON}")
    assert answer.status_code == 200
    assert answer.json()["mail"] == PERSON


def test_the_sandbox_ca_is_required_for_tls(sb: Sandbox) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sb.url}/_sandbox/health", timeout=10, verify=True)


def test_wrong_secret_answers_aadsts7000215(ca_env: Sandbox) -> None:
    sb = ca_env
    result = msal_app(sb, "the-secret-id-not-its-value").acquire_token_for_client(
        scopes=[f"{sb.url}/.default"]
    )
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert f"app '{sb.client_id}'" in result["error_description"]
    raw = token_response(sb, client_secret="wrong")
    assert raw.status_code == 401
    assert set(raw.json()) >= {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
    }
    assert "Trace ID:" in raw.json()["error_description"]


def test_expired_secret_answers_aadsts7000222(sb: Sandbox) -> None:
    secret = sb.control.add_secret("short-lived", expires_in_days=30)
    assert token_response(sb, client_secret=secret["secretText"]).status_code == 200
    sb.control.expire_secret(secret["keyId"])
    answer = token_response(sb, client_secret=secret["secretText"])
    assert answer.status_code == 401
    body = answer.json()
    assert body["error_codes"] == [7000222]
    assert body["error_description"].startswith(
        f"AADSTS7000222: The provided client secret keys for app '{sb.client_id}' are expired."
    )


def test_unknown_tenant_client_and_bad_scopes(sb: Sandbox) -> None:
    tenant = token_response(sb, tenant="00000000-0000-0000-0000-000000000000")
    assert (tenant.status_code, tenant.json()["error_codes"]) == (400, [90002])
    discovery = requests.get(
        f"{sb.url}/nosuchtenant.example/v2.0/.well-known/openid-configuration",
        verify=str(sb.ca_file),
        timeout=10,
    )
    assert discovery.status_code == 400
    assert discovery.json()["error"] == "invalid_tenant"
    client = token_response(sb, client_id="11111111-2222-3333-4444-555555555555")
    assert (client.status_code, client.json()["error_codes"]) == (400, [700016])
    assert client.json()["error"] == "unauthorized_client"
    no_default = token_response(sb, scope=f"{sb.url}/Calendars.ReadWrite")
    assert (no_default.status_code, no_default.json()["error_codes"]) == (400, [1002012])
    assert no_default.json()["error"] == "invalid_scope"
    unknown = token_response(sb, scope="https://vault.azure.net/.default")
    assert (unknown.status_code, unknown.json()["error_codes"]) == (400, [70011])
    # The domain works as the tenant too, as in Entra.
    assert token_response(sb, tenant="contoso.example").status_code == 200


def test_client_assertion_with_a_registered_certificate(ca_env: Sandbox) -> None:
    sb = ca_env
    cert = make_client_certificate("calendar-sync-test")
    unregistered = msal_app(sb, cert.msal_credential()).acquire_token_for_client(
        scopes=[f"{sb.url}/.default"]
    )
    assert unregistered["error_codes"] == [700027]
    sb.control.add_certificate(cert.certificate_pem, "test certificate")
    app = sb.control.app()
    assert [k["customKeyIdentifier"] for k in app["keyCredentials"]] == [cert.thumbprint]
    result = msal_app(sb, cert.msal_credential()).acquire_token_for_client(
        scopes=[f"{sb.url}/.default"]
    )
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["appidacr"] == "2"
    assert Graph(sb, result["access_token"]).get(f"/users/{ROOM}/events").status_code == 200


def test_federated_assertion_from_the_managed_identity(ca_env: Sandbox) -> None:
    sb = ca_env
    issued = sb.control.managed_identity_token(MANAGED_IDENTITY_CLIENT_ID)
    assert issued["token_type"] == "Bearer"
    assert int(issued["expires_on"]) > time.time()
    claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "api://AzureADTokenExchange"
    assert claims["iss"] == f"https://login.microsoftonline.com/{sb.tenant_id}/v2.0"

    def assertion() -> str:
        return str(sb.control.managed_identity_token(MANAGED_IDENTITY_CLIENT_ID)["access_token"])

    result = msal_app(sb, {"client_assertion": assertion}).acquire_token_for_client(
        scopes=[f"{sb.url}/.default"]
    )
    assert "access_token" in result, result
    # An identity the app registration does not trust is refused.
    sb.control._call("POST", "/managed-identities", {"clientId": "stranger", "name": "stranger"})
    stranger = sb.control.managed_identity_token("stranger")["access_token"]
    refused = token_response(
        sb,
        client_secret=None,  # type: ignore[arg-type]
        client_assertion=stranger,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    )
    assert refused.json()["error_codes"] == [70021]


def test_graph_requires_a_valid_unexpired_token(sb: Sandbox) -> None:
    anonymous = Graph(sb, None).get(f"/users/{ROOM}/events")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert anonymous.json()["error"]["message"] == "Access token is empty."
    assert "WWW-Authenticate" in anonymous.headers
    forged = Graph(sb, "eyJhbGciOiJub25lIn0.e30.").get(f"/users/{ROOM}/events")
    assert (forged.status_code, forged.json()["error"]["code"]) == (
        401,
        "InvalidAuthenticationToken",
    )
    sb.control.update_settings(token_lifetime_seconds=1)
    short = get_token(sb)
    assert Graph(sb, short).get(f"/users/{ROOM}/events").status_code == 200
    time.sleep(1.2)
    expired = Graph(sb, short).get(f"/users/{ROOM}/events")
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "Lifetime validation failed, the token is expired."


def test_application_permissions_are_enforced(sb: Sandbox) -> None:
    sb.control.set_roles(["Calendars.ReadWrite"])
    graph = Graph(sb, get_token(sb))
    assert graph.get(f"/users/{ROOM}/events").status_code == 200
    user = graph.get(f"/users/{PERSON}")
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "Authorization_RequestDenied"
    assert user.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    places = graph.get("/places/microsoft.graph.room")
    assert (places.status_code, places.json()["error"]["code"]) == (403, "ErrorAccessDenied")
    apps = graph.get(f"/applications(appId='{sb.client_id}')")
    assert (apps.status_code, apps.json()["error"]["code"]) == (403, "Authorization_RequestDenied")

    sb.control.set_roles(["User.Read.All"])
    reader = Graph(sb, get_token(sb))
    denied = reader.get(
        f"/users/{ROOM}/calendarView?startDateTime=2030-01-01&endDateTime=2030-01-02"
    )
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        **denied.json()["error"],
        "code": "ErrorAccessDenied",
        "message": "Access is denied. Check credentials and try again.",
    }
    # Roles are fixed in a token when it is issued, as in Entra.
    assert graph.get(f"/users/{ROOM}/events").status_code == 200


def test_managed_identity_endpoint_works_with_azure_identity(
    ca_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    sb = ca_env
    monkeypatch.setenv("IDENTITY_ENDPOINT", sb.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    credential = ManagedIdentityCredential(client_id=MANAGED_IDENTITY_CLIENT_ID)

    def assertion() -> str:
        return credential.get_token("api://AzureADTokenExchange/.default").token

    result = msal_app(sb, {"client_assertion": assertion}).acquire_token_for_client(
        scopes=[f"{sb.url}/.default"]
    )
    assert "access_token" in result, result
    assert [e["kind"] for e in sb.control.requests(kind="msi")] == ["msi"]
