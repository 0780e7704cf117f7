"""Credentials against the simulated tenant and its Key Vault double (real HTTPS servers):
each mode signs in, the watch warns at its thresholds, rotation works end to end and fails safe,
wrong and expired secrets are named with hints, and no secret value reaches a log line."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.identity import ManagedIdentityCredential

from sandbox import Sandbox, make_client_certificate
from sandbox.defaults import MANAGED_IDENTITY_CLIENT_ID
from sync_core.config import load_settings
from sync_core.credentials import sources
from sync_core.credentials.errors import CredentialError
from sync_core.credentials.expiry import threshold_for
from sync_core.credentials.sources import (
    KeyVaultCertificateCredential,
    KeyVaultSecretCredential,
    ManagedIdentityAssertion,
)
from sync_core.credentials.status import credential_status, key_vault_status
from sync_core.credentials.watch import CREDENTIAL_RESOURCE, watch
from sync_core.graph import ErrorKind, GraphError
from sync_core.graph.auth import TokenProvider
from sync_core.services import Services
from sync_core.store.queues import DELIVER, decode_message
from tests.conftest import ROOM_A

NO_FILE = Path("/nonexistent/local.settings.json")
SECRET_NAME = "graph-client-secret"
CERT_NAME = "graph-client-certificate"
APP_ROLES_READ_ONLY = ["Calendars.ReadWrite", "Place.Read.All", "User.Read.All"]


@pytest.fixture
def edge(
    tenant_env: dict[str, str], tenant: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Settings for the simulated tenant, and the process environment Azure would give: the CA
    bundle and the App Service managed identity endpoint (IDENTITY_ENDPOINT/HEADER)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    monkeypatch.setenv("IDENTITY_ENDPOINT", tenant.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    yield tenant_env | {"MANAGED_IDENTITY_CLIENT_ID": MANAGED_IDENTITY_CLIENT_ID}
    tenant.control.update_settings(credential_propagation_seconds=0)


@pytest.fixture
def vault_env(edge: dict[str, str], tenant: Sandbox) -> dict[str, str]:
    """``secret`` mode with the secret in Key Vault (CLIENT_SECRET empty)."""
    return edge | {"CLIENT_SECRET": "", "KEY_VAULT_URL": tenant.key_vault_url}


def services(env: dict[str, str], **overrides: str) -> Services:
    return Services(load_settings(env | overrides, NO_FILE))


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def events(svc: Services) -> list[dict[str, Any]]:
    """The credential.expiring events queued for the platform, oldest first."""
    found = []
    for message in svc.queues.queue(DELIVER).peek_messages(max_messages=32):
        body = json.loads(decode_message(message.content))["body"]
        if body["type"] == "credential.expiring":
            found.append(body)
    return found


def history(svc: Services, action: str) -> list[dict[str, Any]]:
    entries, _ = svc.history.page(page_size=100)
    return [e.to_json() for e in entries if e.action == action]


def secret_end(tenant: Sandbox, key_id: str | None = None) -> datetime:
    app = tenant.control.app()
    for password in app["passwordCredentials"]:
        if key_id is None or password["keyId"] == key_id:
            return datetime.fromisoformat(password["endDateTime"])
    raise AssertionError(f"no secret {key_id}")


def expiring_secret(tenant: Sandbox, days: float = 20) -> dict[str, Any]:
    """A secret of the app registration that expires in ``days``, stored in Key Vault as an
    admin would store it (no keyId tag: the watch matches it by its hint)."""
    made = tenant.control.add_secret("expiring soon", expires_in_days=days)
    tenant.control.set_vault_secret(SECRET_NAME, made["secretText"])
    return made


def replicate(tenant: Sandbox, seconds: float) -> None:
    """Entra accepts a secret only ``seconds`` after it was added (its replication delay). This
    applies to every secret, so wait until the ones added so far are accepted: only secrets
    added from now on are refused at first, as for a secret that has long been in use."""
    tenant.control.update_settings(credential_propagation_seconds=seconds)
    time.sleep(seconds + 0.2)


def keys(tenant: Sandbox) -> set[str]:
    return {p["keyId"] for p in tenant.control.app()["passwordCredentials"]}


# -- each mode signs in -------------------------------------------------------------------------


def test_secret_mode_from_settings(edge: dict[str, str]) -> None:
    svc = services(edge)
    assert svc.graph.tokens.credential.__class__.__name__ == "SecretCredential"
    token = claims(svc.graph.tokens.token())
    assert token["appidacr"] == "1"  # signed in with a client secret
    assert svc.graph.check_mailbox(ROOM_A)["id"]


def test_secret_mode_from_key_vault(vault_env: dict[str, str], tenant: Sandbox) -> None:
    tenant.control.set_vault_secret(SECRET_NAME, tenant.client_secret)
    svc = services(vault_env)
    source = svc.graph.tokens.credential
    assert isinstance(source, KeyVaultSecretCredential)
    assert claims(svc.graph.tokens.token())["appidacr"] == "1"
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    vault_reads = [r for r in tenant.control.requests(kind="keyvault") if r["status"] == 200]
    assert vault_reads and vault_reads[0]["app"] == MANAGED_IDENTITY_CLIENT_ID


@pytest.mark.parametrize("form", ["pem", "pkcs12"])
def test_certificate_mode_from_key_vault(edge: dict[str, str], tenant: Sandbox, form: str) -> None:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    made = make_client_certificate("calendar-sync")
    tenant.control.add_certificate(made.certificate_pem)
    if form == "pem":  # Key Vault's application/x-pem-file: key, then certificate
        value, content_type = made.private_key_pem + made.certificate_pem, "application/x-pem-file"
    else:  # Key Vault's default, application/x-pkcs12: base64 PFX without a password
        key = serialization.load_pem_private_key(made.private_key_pem.encode(), None)
        cert = x509.load_pem_x509_certificate(made.certificate_pem.encode())
        pfx = pkcs12.serialize_key_and_certificates(
            b"calendar-sync",
            key,  # type: ignore[arg-type]
            cert,
            None,
            serialization.NoEncryption(),
        )
        value, content_type = base64.b64encode(pfx).decode(), "application/x-pkcs12"
    tenant.control.set_vault_secret(CERT_NAME, value, content_type=content_type)

    svc = services(edge, CREDENTIAL_MODE="certificate", KEY_VAULT_URL=tenant.key_vault_url)
    source = svc.graph.tokens.credential
    assert isinstance(source, KeyVaultCertificateCredential)
    assert claims(svc.graph.tokens.token())["appidacr"] == "2"  # a client assertion
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    assert source.current().sha1 == made.thumbprint.upper()

    status = credential_status(svc)
    assert status["credential"] == "certificate"
    assert status["state"] == "ok"
    assert status["expiry_source"] == "certificate"
    assert status["days_left"] >= 300


def test_managed_identity_mode_asks_for_an_assertion_per_token_request(
    edge: dict[str, str], tenant: Sandbox
) -> None:
    svc = services(edge, CREDENTIAL_MODE="managed_identity", CLIENT_SECRET="")
    assert isinstance(svc.graph.tokens.credential, ManagedIdentityAssertion)
    token = claims(svc.graph.tokens.token())
    assert token["appidacr"] == "2"
    assert svc.graph.check_mailbox(ROOM_A)["id"]

    # The assertion is a callable: asked again on every token request MSAL sends.
    asked: list[str] = []
    real = ManagedIdentityCredential(client_id=MANAGED_IDENTITY_CLIENT_ID)

    class Counting:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            asked.extend(scopes)
            return real.get_token(*scopes, **kwargs)

    assertion = ManagedIdentityAssertion(MANAGED_IDENTITY_CLIENT_ID, credential=Counting())
    provider = TokenProvider(svc.settings, assertion, svc.graph.session)
    provider.token()
    provider.token()  # from MSAL's cache: no token request, no assertion
    provider.token(force_refresh=True)
    assert asked == ["api://AzureADTokenExchange/.default"] * 2

    status = credential_status(svc)
    assert status["state"] == "ok"
    assert status["credential"] == "federated_credential"
    assert status["expires_at"] is None
    assert "Nothing expires" in status["hint"]


def test_mode_failures_are_named_with_hints(edge: dict[str, str], tenant: Sandbox) -> None:
    stranger = "00000000-0000-4000-8000-000000000001"
    svc = services(
        edge,
        CREDENTIAL_MODE="managed_identity",
        CLIENT_SECRET="",
        MANAGED_IDENTITY_CLIENT_ID=stranger,
    )
    with pytest.raises(CredentialError) as no_identity:
        svc.graph.check_mailbox(ROOM_A)
    assert no_identity.value.code == "ManagedIdentityUnavailable"
    assert "MANAGED_IDENTITY_CLIENT_ID" in no_identity.value.hint

    missing = services(edge, CLIENT_SECRET="", KEY_VAULT_URL=tenant.key_vault_url)
    with pytest.raises(CredentialError) as not_found:
        missing.graph.tokens.token()
    assert not_found.value.code == "KeyVaultSecretNotFound"
    assert SECRET_NAME in not_found.value.hint
    assert credential_status(missing)["error"]["code"] == "KeyVaultSecretNotFound"

    tenant.control.set_vault_secret(SECRET_NAME, tenant.client_secret)
    tenant.control.deny_vault("get")
    denied = services(edge, CLIENT_SECRET="", KEY_VAULT_URL=tenant.key_vault_url)
    with pytest.raises(CredentialError) as forbidden:
        denied.graph.tokens.token()
    assert forbidden.value.code == "KeyVaultForbidden"
    assert "Key Vault Secrets User" in forbidden.value.hint
    assert forbidden.value.kind is ErrorKind.LOGIN_FAILED  # not retried as a passing glitch


# -- wrong and expired secrets --------------------------------------------------------------------


def test_a_wrong_secret_is_a_named_error_in_status_and_history(
    edge: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    secret_id = "9a1c5e2f-0000-4000-8000-000000000000"  # the secret's id pasted, not its value
    svc = services(edge, CLIENT_SECRET=secret_id)
    status = credential_status(svc)
    assert status["state"] == "error"
    assert status["error"]["code"] == "AADSTS7000215"
    assert "Value, not its Secret ID" in status["error"]["hint"]
    assert status["hint"] == status["error"]["hint"]
    assert status["message"] == status["error"]["message"]
    assert "CLIENT_SECRET is not accepted" in status["message"]

    with caplog.at_level(logging.INFO, logger="sync_core"):
        watch(svc)
    assert any(
        r.levelno == logging.ERROR and "AADSTS7000215" in r.getMessage() for r in caplog.records
    )
    [entry] = history(svc, "credential.check")
    assert entry["outcome"] == "failed"
    assert entry["error"]["code"] == "AADSTS7000215"
    with pytest.raises(GraphError) as failed:
        svc.graph.check_mailbox(ROOM_A)
    assert failed.value.kind is ErrorKind.SECRET_INVALID


def test_an_expired_secret_is_a_named_error(edge: dict[str, str], tenant: Sandbox) -> None:
    made = tenant.control.add_secret("soon gone", expires_in_days=10)
    tenant.control.expire_secret(made["keyId"])
    svc = services(edge, CLIENT_SECRET=made["secretText"])
    status = credential_status(svc)
    assert status["state"] == "error"
    assert status["error"]["code"] == "AADSTS7000222"
    assert "managed_identity" in status["error"]["hint"]
    watch(svc)
    assert history(svc, "credential.check")[0]["error"]["code"] == "AADSTS7000222"


# -- the watch: thresholds and unknown expiry -----------------------------------------------------


def test_thresholds_warn_once_each_with_an_injected_clock(
    edge: dict[str, str], tenant: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    svc = services(edge)
    end = secret_end(tenant)  # the sandbox's default secret, found through Graph by its hint

    quiet = watch(svc, now=end - timedelta(days=31, hours=12))
    assert quiet["state"] == "ok"
    assert quiet["days_left"] == 31
    assert events(svc) == []

    for left in (29, 13, 6, 0):
        moment = end - timedelta(days=left, hours=12)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sync_core"):
            found = watch(svc, now=moment)
            watch(svc, now=moment + timedelta(hours=1))  # the same day again: no second event
        assert found["state"] == "warning"
        assert found["days_left"] == left
        assert found["expiry_source"] == "graph"
        assert found["message"].startswith("the client secret expires")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings and f"({left} days left)" in warnings[0]
    sent = events(svc)
    assert [e["data"]["days_left"] for e in sent] == [29, 13, 6, 0]
    for event in sent:
        assert event["data"]["credential"] == "client_secret"
        assert event["data"]["rotated"] is False
        assert event["data"]["expires_at"] == end.replace(microsecond=0).isoformat()[:19] + "Z"
        assert event["data"]["resource_id"] == CREDENTIAL_RESOURCE
    assert [e["data"]["sequence"] for e in sent] == sorted(e["data"]["sequence"] for e in sent)

    gone = watch(svc, now=end + timedelta(hours=2))
    assert gone["state"] == "error"
    assert gone["error"]["code"] == "SecretExpired"
    assert len(events(svc)) == 5
    assert {e["outcome"] for e in history(svc, "credential.check")} == {"ok", "failed"}


def test_threshold_arithmetic() -> None:
    assert [threshold_for(d) for d in (45, 31, 30, 29, 15, 14, 13, 8, 7, 6, 2, 1, 0, -1)] == [
        -1, -1, 30, 30, 30, 14, 14, 14, 7, 7, 7, 1, 1, 0,
    ]  # fmt: skip


def test_unknown_expiry_is_a_warning_with_a_hint(
    edge: dict[str, str], tenant: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    tenant.control.set_roles(APP_ROLES_READ_ONLY)  # the app registration cannot be read
    svc = services(edge)
    with caplog.at_level(logging.INFO, logger="sync_core"):
        found = watch(svc)
    assert found["state"] == "warning"
    assert found["expires_at"] is None
    assert found["error"]["code"] == "CredentialExpiryUnknown"
    assert "Application.ReadWrite.OwnedBy" in found["hint"]
    assert "Authorization_RequestDenied" in found["hint"]
    assert any(
        r.levelno == logging.WARNING and "unknown date" in r.getMessage() for r in caplog.records
    )
    assert events(svc) == []  # nothing to count down from
    assert history(svc, "credential.check")[0]["error"]["code"] == "CredentialExpiryUnknown"


def test_key_vault_expiry_when_graph_cannot_tell(
    vault_env: dict[str, str], tenant: Sandbox
) -> None:
    tenant.control.set_roles(APP_ROLES_READ_ONLY)
    expires = (datetime.now(UTC) + timedelta(days=12, hours=1)).replace(microsecond=0)
    tenant.control.set_vault_secret(
        SECRET_NAME, tenant.client_secret, expires_on=expires.isoformat()
    )
    status = credential_status(services(vault_env))
    assert status["state"] == "warning"
    assert status["expiry_source"] == "key_vault"
    assert status["days_left"] == 12
    assert status["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert "Key Vault secret graph-client-secret" in status["hint"]


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_end_to_end_while_graph_calls_continue(
    vault_env: dict[str, str], tenant: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = expiring_secret(tenant, days=20)
    env = vault_env | {"ROTATION_ENABLED": "true", "SECRET_LIFETIME_DAYS": "90"}
    svc = services(env)
    other = services(env)  # a second instance, signed in with the old secret
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    assert other.graph.check_mailbox(ROOM_A)["id"]
    # Entra replicates a new secret: it is refused for the first 1.5 s.
    replicate(tenant, 1.5)
    tenant.control.clear_requests()

    calls: list[tuple[float, bool]] = []
    stop = threading.Event()

    def keep_syncing() -> None:
        while not stop.is_set():
            try:
                svc.graph.check_mailbox(ROOM_A)
                calls.append((time.monotonic(), True))
            except GraphError:
                calls.append((time.monotonic(), False))
            time.sleep(0.05)

    worker = threading.Thread(target=keep_syncing)
    worker.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        status = watch(svc)
        finished = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()

    assert status["rotation"]["last"]["outcome"] == "rotated", status["rotation"]
    assert all(ok for _, ok in calls), "a Graph call failed during the rotation"
    assert any(t < started for t, _ in calls)
    assert any(started < t < finished for t, _ in calls)
    assert any(t > finished for t, _ in calls)

    rotated = status["rotation"]["last"]
    new_key = rotated["new_key_id"]
    assert rotated["old_key_id"] == old["keyId"]
    assert old["keyId"] not in keys(tenant)  # the old secret is removed, after the switch
    assert new_key in keys(tenant)
    assert secret_end(tenant, new_key) - datetime.now(UTC) > timedelta(days=89)

    versions = tenant.control.vault_secret(SECRET_NAME)
    assert len(versions) == 2
    assert versions[-1]["tags"] == {"keyId": new_key, "clientId": svc.settings.client_id}
    assert versions[-1]["expiresOn"] == rotated["new_expires_at"]
    assert versions[-1]["value"] != old["secretText"]

    logins = [r["status"] for r in tenant.control.requests(kind="login") if r["method"] == "POST"]
    assert 401 in logins and logins[-1] == 200  # refused while replicating, then accepted

    assert status["state"] == "ok"
    assert status["days_left"] == 89
    [event] = events(svc)
    assert event["data"]["rotated"] is True
    assert event["data"]["days_left"] == 19
    assert event["data"]["new_expires_at"] == rotated["new_expires_at"]
    assert history(svc, "credential.rotate")[0]["outcome"] == "ok"

    # The other instance still holds the removed secret: Entra refuses it, it reads the vault.
    monkeypatch.setattr(sources, "REFRESH_INTERVAL", 0.0)
    assert other.graph.check_mailbox(ROOM_A)["id"]
    assert other.graph.tokens.token(force_refresh=True)
    source = other.graph.tokens.credential
    assert isinstance(source, KeyVaultSecretCredential)
    assert source.current().version == versions[-1]["version"]


def test_rotation_denied_by_graph_keeps_the_old_secret(
    vault_env: dict[str, str], tenant: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    old = expiring_secret(tenant, days=5)
    tenant.control.set_roles([*APP_ROLES_READ_ONLY, "Application.Read.All"])  # read, not write
    svc = services(vault_env, ROTATION_ENABLED="true")
    before = keys(tenant)
    with caplog.at_level(logging.INFO, logger="sync_core"):
        status = watch(svc)
    last = status["rotation"]["last"]
    assert last["outcome"] == "failed"
    assert last["step"] == "addPassword"
    assert last["error"]["code"] == "Authorization_RequestDenied"
    assert "permission" in last["error"]["hint"]
    assert keys(tenant) == before
    assert len(tenant.control.vault_secret(SECRET_NAME)) == 1
    assert status["state"] == "warning"
    assert status["days_left"] == 4
    assert svc.graph.tokens.token(force_refresh=True)  # the old secret still signs in
    assert claims(svc.graph.tokens.token())["appid"] == svc.settings.client_id
    assert any(
        r.levelno == logging.ERROR and "failed at addPassword" in r.getMessage()
        for r in caplog.records
    )
    assert history(svc, "credential.rotate")[0]["error"]["code"] == "Authorization_RequestDenied"
    [event] = events(svc)
    assert event["data"]["rotated"] is False
    assert old["keyId"] in keys(tenant)


@pytest.mark.parametrize("how", ["rbac", "fault"])
def test_rotation_when_key_vault_cannot_store_the_new_secret(
    vault_env: dict[str, str], tenant: Sandbox, how: str
) -> None:
    old = expiring_secret(tenant, days=20)
    svc = services(vault_env, ROTATION_ENABLED="true")
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    if how == "rbac":
        tenant.control.deny_vault("set")
        code = "KeyVaultForbidden"
    else:
        tenant.control.add_fault(r"^/secrets/", "PUT", status=400, code="BadParameter")
        code = "KeyVaultBadParameter"
    before = keys(tenant)

    status = watch(svc)
    last = status["rotation"]["last"]
    assert last["outcome"] == "failed"
    assert last["step"] == "keyVault"
    assert last["error"]["code"] == code
    assert "was removed again" in last["detail"]
    assert keys(tenant) == before  # the new secret was removed from the app again
    [stored] = tenant.control.vault_secret(SECRET_NAME)
    assert stored["value"] == old["secretText"]
    assert svc.graph.tokens.token(force_refresh=True)
    assert svc.graph.check_mailbox(ROOM_A)["id"]


def test_a_new_secret_never_accepted_is_rolled_back(
    vault_env: dict[str, str], tenant: Sandbox
) -> None:
    old = expiring_secret(tenant, days=20)
    svc = services(vault_env, ROTATION_ENABLED="true")
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    replicate(tenant, 3)

    status = watch(svc, proof_timeout=1.0)
    last = status["rotation"]["last"]
    assert last["outcome"] == "failed"
    assert last["step"] == "proof"
    assert last["error"]["code"] == "AADSTS7000215"
    assert "Key Vault holds the old value again" in last["detail"]
    assert last["new_key_id"] not in keys(tenant)
    assert old["keyId"] in keys(tenant)
    versions = tenant.control.vault_secret(SECRET_NAME)
    assert [v["value"] == old["secretText"] for v in versions] == [True, False, True]
    assert svc.graph.tokens.token(force_refresh=True)  # this instance kept its old secret
    # A fresh instance (a restart) reads the vault's latest: the old secret, which works.
    fresh = services(vault_env, ROTATION_ENABLED="true")
    assert fresh.graph.tokens.token()
    assert fresh.graph.check_mailbox(ROOM_A)["id"]


def test_no_secret_value_reaches_a_log_line(
    vault_env: dict[str, str],
    tenant: Sandbox,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' too
    old = expiring_secret(tenant, days=20)
    svc = services(vault_env, ROTATION_ENABLED="true")
    assert svc.graph.check_mailbox(ROOM_A)["id"]
    replicate(tenant, 1)
    rotated = watch(svc)
    assert rotated["rotation"]["last"]["outcome"] == "rotated"
    # A second rotation that is rolled back, and a wrong secret, for their error paths too.
    tenant.control.update_settings(credential_propagation_seconds=0)
    expiring_secret(tenant, days=3)
    again = services(vault_env, ROTATION_ENABLED="true")
    replicate(tenant, 1.5)
    assert watch(again, proof_timeout=0.5)["rotation"]["last"]["step"] == "proof"
    wrong = services(vault_env, CLIENT_SECRET="x" * 40, KEY_VAULT_URL="")
    credential_status(wrong)
    watch(wrong)

    values = {v["value"] for v in tenant.control.vault_secret(SECRET_NAME)}
    values |= {old["secretText"], tenant.client_secret, "x" * 40}
    assert len(values) >= 5
    tokens = {svc.graph.tokens.token(), again.graph.tokens.token()}
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "credential rotation" in caplog.text  # the rotation did log
    stored = json.dumps(
        [
            history(s, a)
            for s in (svc, again, wrong)
            for a in ("credential.rotate", "credential.check")
        ]
    )
    for value in values | tokens:
        assert value not in logged
        assert value not in stored
        assert value not in json.dumps(rotated)


def test_key_vault_status_for_the_doctor(vault_env: dict[str, str], tenant: Sandbox) -> None:
    tenant.control.set_vault_secret(SECRET_NAME, tenant.client_secret)
    svc = services(vault_env)
    assert key_vault_status(svc) == {
        "state": "ok",
        "url": tenant.key_vault_url,
        "error": None,
    }
    tenant.control.deny_vault("list")
    denied = key_vault_status(svc)
    assert denied["state"] == "error"
    assert denied["error"]["code"] == "KeyVaultForbidden"
    assert (
        key_vault_status(services(vault_env, CLIENT_SECRET="x", KEY_VAULT_URL=""))["state"]
        == "not_configured"
    )
