"""The Key Vault double: azure-keyvault-secrets' SecretClient against it over TLS, through Key
Vault's challenge protocol with a managed identity token from the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from sandbox import Sandbox
from sandbox.defaults import MANAGED_IDENTITY_CLIENT_ID
from tests.sandbox.conftest import get_token

NAME = "graph-client-secret"


@pytest.fixture
def vault(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> SecretClient:
    """A SecretClient as the product builds it: the managed identity, the sandbox's CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_file))
    monkeypatch.setenv("IDENTITY_ENDPOINT", sb.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    return SecretClient(
        sb.key_vault_url,
        ManagedIdentityCredential(client_id=MANAGED_IDENTITY_CLIENT_ID),
        # The vault is on 127.0.0.1, which cannot be a subdomain of vault.azure.net.
        verify_challenge_resource=False,
    )


def raw(sb: Sandbox, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return requests.request(
        method,
        f"{sb.url}{path}",
        headers=headers,
        verify=str(sb.ca_file),
        timeout=30,
        **kwargs,
    )


def vault_token(sb: Sandbox) -> str:
    answer = raw(
        sb,
        "GET",
        "/_sandbox/msi/token",
        params={
            "resource": "https://vault.azure.net",
            "client_id": MANAGED_IDENTITY_CLIENT_ID,
            "api-version": "2019-08-01",
        },
        headers={"X-IDENTITY-HEADER": "sandbox"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_set_get_and_versions_with_attributes(vault: SecretClient, sb: Sandbox) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=90)
    first = vault.set_secret(
        NAME, "first-value", expires_on=expires, content_type="client secret", tags={"keyId": "k1"}
    )
    second = vault.set_secret(NAME, "second-value")
    assert first.properties.version != second.properties.version
    assert len(first.properties.version or "") == 32
    assert first.id == f"{sb.key_vault_url}/secrets/{NAME}/{first.properties.version}"

    latest = vault.get_secret(NAME)
    assert latest.value == "second-value"
    assert latest.properties.version == second.properties.version
    older = vault.get_secret(NAME, first.properties.version)
    assert older.value == "first-value"
    assert older.properties.expires_on == expires
    assert older.properties.content_type == "client secret"
    assert older.properties.tags == {"keyId": "k1"}
    assert older.properties.enabled is True
    assert older.properties.created_on is not None

    versions = {p.version: p for p in vault.list_properties_of_secret_versions(NAME)}
    assert set(versions) == {first.properties.version, second.properties.version}
    assert versions[first.properties.version].expires_on == expires
    assert versions[second.properties.version].expires_on is None
    assert [p.name for p in vault.list_properties_of_secrets()] == [NAME]


def test_the_challenge_protocol_is_followed_once(vault: SecretClient, sb: Sandbox) -> None:
    # The SDK caches a vault's challenge per process: forget it, so this client must ask.
    from azure.keyvault.secrets._shared import HttpChallengeCache

    HttpChallengeCache.clear()
    vault.set_secret("challenge-check", "x")
    log = [(r["kind"], r["status"]) for r in sb.control.requests() if r["kind"] != "login"]
    # Bodiless request → 401 challenge → managed identity token for the vault → the real PUT.
    assert log[:3] == [("keyvault", 401), ("msi", 200), ("keyvault", 200)]
    challenge = raw(sb, "GET", f"/secrets/{NAME}?api-version=7.6")
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{sb.url}/{sb.tenant_id}", resource="https://vault.azure.net"'
    )
    assert challenge.json()["error"]["code"] == "Unauthorized"


def test_a_graph_token_is_refused_as_the_wrong_audience(sb: Sandbox) -> None:
    answer = raw(sb, "GET", f"/secrets/{NAME}?api-version=7.6", token=get_token(sb))
    assert answer.status_code == 401
    assert "AKV10022: Invalid audience" in answer.json()["error"]["message"]
    assert "WWW-Authenticate" in answer.headers


def test_missing_disabled_and_denied(vault: SecretClient, sb: Sandbox) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        vault.get_secret("nothing-here")
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"

    made = vault.set_secret(NAME, "value")
    vault.update_secret_properties(NAME, made.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as disabled:
        vault.get_secret(NAME)
    assert disabled.value.status_code == 403
    assert "disabled secret" in str(disabled.value)

    assert sb.control.deny_vault("set") == ["set"]
    with pytest.raises(HttpResponseError) as denied:
        vault.set_secret(NAME, "another")
    assert denied.value.status_code == 403
    assert "ForbiddenByRbac" in str(denied.value)
    assert "setSecret/action" in str(denied.value)
    assert len(sb.control.vault_secret(NAME)) == 1  # nothing was written
    sb.control.deny_vault()
    vault.set_secret(NAME, "another")
    assert len(sb.control.vault_secret(NAME)) == 2


def test_injected_faults_answer_in_key_vault_s_shape(vault: SecretClient, sb: Sandbox) -> None:
    vault.set_secret(NAME, "value")  # authenticates first
    sb.control.add_fault(r"^/secrets/", "PUT", status=400, code="BadParameter", message="nope")
    with pytest.raises(HttpResponseError) as failed:
        vault.set_secret(NAME, "second")
    assert failed.value.status_code == 400
    assert failed.value.error is not None and failed.value.error.code == "BadParameter"
    assert [r["fault"] is not None for r in sb.control.requests(kind="keyvault")][-1]
    assert vault.set_secret(NAME, "third").value == "third"  # the fault fired once


def test_paging_and_the_control_api(vault: SecretClient, sb: Sandbox) -> None:
    for i in range(30):
        sb.control.set_vault_secret(f"secret-{i:02d}", f"v{i}", expires_in_days=i + 1)
    names = [p.name for p in vault.list_properties_of_secrets()]
    assert len(names) == 30
    pages = [r for r in sb.control.requests(kind="keyvault") if r["path"].startswith("/secrets?")]
    assert any("%24skiptoken=25" in r["path"] or "$skiptoken=25" in r["path"] for r in pages)

    stored = sb.control.vault_secret("secret-03")
    assert stored[0]["value"] == "v3"
    assert stored[0]["expiresOn"] is not None
    listed = {s["name"]: s for s in sb.control.vault_secrets()}
    assert "value" not in listed["secret-03"]["versions"][0]

    sb.control.reset()
    assert sb.control.vault_secrets() == []


def test_bad_requests_are_refused(sb: Sandbox) -> None:
    token = vault_token(sb)
    no_version = raw(sb, "GET", f"/secrets/{NAME}", token=token)
    assert no_version.status_code == 400
    bad_name = raw(sb, "PUT", "/secrets/bad_name?api-version=7.6", token=token, json={"value": "x"})
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["code"] == "BadParameter"
    no_value = raw(sb, "PUT", f"/secrets/{NAME}?api-version=7.6", token=token, json={})
    assert no_value.status_code == 400
    assert raw(sb, "DELETE", f"/secrets/{NAME}?api-version=7.6", token=token).status_code == 405


def test_an_unknown_identity_gets_no_vault_token(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_file))
    monkeypatch.setenv("IDENTITY_ENDPOINT", sb.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    client = SecretClient(
        sb.key_vault_url,
        ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000001"),
        verify_challenge_resource=False,
    )
    with pytest.raises(ClientAuthenticationError):
        client.get_secret(NAME)
