"""Settings: every missing or malformed value gives one line naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_core.config import DEVSTORE_CONNECTION_STRING, ConfigError, load_settings
from tests.conftest import example_settings
from tests.conftest import settings_with as load

NO_FILE = Path("/nonexistent/local.settings.json")


def test_example_settings_are_valid() -> None:
    settings = load_settings(example_settings(), NO_FILE)
    assert settings.storage.connection_string == DEVSTORE_CONNECTION_STRING
    assert settings.graph_scope == "https://127.0.0.1:9443/.default"
    assert settings.notification_url == "http://127.0.0.1:7071/api/graph/notifications"
    assert settings.authority_is_microsoft is False
    assert settings.sync_window_days == 180


def test_defaults_apply_when_optional_settings_are_absent() -> None:
    settings = load(
        GRAPH_ENDPOINT=None,
        AUTHORITY_HOST=None,
        SYNC_WINDOW_DAYS=None,
        CREDENTIAL_MODE=None,
        EVENT_CATEGORY=None,
        RENEW_SCHEDULE=None,
    )
    assert settings.graph_endpoint == "https://graph.microsoft.com"
    assert settings.authority_is_microsoft is True
    assert settings.credential_mode == "secret"
    assert settings.sync_window_days == 180
    assert settings.renew_schedule == "0 0 */6 * * *"


@pytest.mark.parametrize(
    ("overrides", "setting", "words"),
    [
        ({"AzureWebJobsStorage": None}, "AzureWebJobsStorage", "is missing"),
        ({"AzureWebJobsStorage": "nonsense"}, "AzureWebJobsStorage", "key=value"),
        ({"AzureWebJobsStorage": "AccountName=x"}, "AzureWebJobsStorage", "AccountKey"),
        ({"TENANT_ID": None}, "TENANT_ID", "is missing"),
        ({"TENANT_ID": "not a tenant"}, "TENANT_ID", "GUID"),
        ({"CLIENT_ID": ""}, "CLIENT_ID", "is missing"),
        ({"CLIENT_ID": "1234"}, "CLIENT_ID", "GUID"),
        ({"CREDENTIAL_MODE": "password"}, "CREDENTIAL_MODE", "secret, certificate"),
        ({"CLIENT_SECRET": None}, "CLIENT_SECRET", "is missing"),
        (
            {"CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s)"},
            "CLIENT_SECRET",
            "unresolved Key Vault reference",
        ),
        ({"CREDENTIAL_MODE": "certificate"}, "KEY_VAULT_URL", "is missing"),
        ({"CREDENTIAL_MODE": "managed_identity"}, "MANAGED_IDENTITY_CLIENT_ID", "is missing"),
        ({"KEY_VAULT_URL": "http://vault.example.com"}, "KEY_VAULT_URL", "https"),
        ({"GRAPH_ENDPOINT": "ftp://graph"}, "GRAPH_ENDPOINT", "http(s) URL"),
        ({"AUTHORITY_HOST": "http://127.0.0.1:9443"}, "AUTHORITY_HOST", "https"),
        ({"PUBLIC_BASE_URL": None}, "PUBLIC_BASE_URL", "is missing"),
        ({"PUBLIC_BASE_URL": "http://sync.contoso.com"}, "PUBLIC_BASE_URL", "https"),
        ({"PUBLIC_BASE_URL": "https://x.example.com/?a=1"}, "PUBLIC_BASE_URL", "query"),
        ({"BOOKING_WEBHOOK_SECRET": None}, "BOOKING_WEBHOOK_SECRET", "is missing"),
        ({"BOOKING_WEBHOOK_SECRET": "secret"}, "BOOKING_WEBHOOK_SECRET", "whsec_"),
        ({"BOOKING_WEBHOOK_SECRET": "whsec_***"}, "BOOKING_WEBHOOK_SECRET", "base64"),
        ({"BOOKING_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "BOOKING_WEBHOOK_SECRET", "24 to 64"),
        ({"PLATFORM_WEBHOOK_URL": "not-a-url"}, "PLATFORM_WEBHOOK_URL", "URL"),
        ({"PLATFORM_WEBHOOK_SECRET": None}, "PLATFORM_WEBHOOK_SECRET", "is missing"),
        ({"SYNC_WINDOW_DAYS": "abc"}, "SYNC_WINDOW_DAYS", "whole number"),
        ({"SYNC_WINDOW_DAYS": "0"}, "SYNC_WINDOW_DAYS", "between 1 and"),
        ({"EVENT_CATEGORY": "a" * 300}, "EVENT_CATEGORY", "255"),
        ({"SUBSCRIPTION_LIFETIME_MINUTES": "5"}, "SUBSCRIPTION_LIFETIME_MINUTES", "between"),
        ({"RENEW_SCHEDULE": "0 */6 * * *"}, "RENEW_SCHEDULE", "six-field"),
        ({"SWEEP_SCHEDULE": "0 99 * * * *"}, "SWEEP_SCHEDULE", "minute field"),
    ],
)
def test_each_bad_setting_is_named_in_one_line(
    overrides: dict[str, str | None], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    message = str(caught.value)
    assert caught.value.setting == setting
    assert message.startswith(f"setting {setting}: ")
    assert words in message
    assert "\n" not in message


def test_secret_values_are_never_quoted_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load(BOOKING_WEBHOOK_SECRET="supersecretvalue")
    assert "supersecretvalue" not in str(caught.value)
    assert "16 characters" in str(caught.value)


def test_secrets_are_hidden_from_repr() -> None:
    settings = load_settings(example_settings(), NO_FILE)
    text = repr(settings)
    assert example_settings()["CLIENT_SECRET"] not in text
    assert example_settings()["BOOKING_WEBHOOK_SECRET"] not in text
    assert "AccountKey" not in text


def test_identity_based_storage() -> None:
    settings = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__accountName="contosocalsync",
        AzureWebJobsStorage__clientId="5f7f1c2e-1111-2222-3333-444455556666",
    )
    storage = settings.storage
    assert storage.connection_string is None
    assert storage.table_endpoint == "https://contosocalsync.table.core.windows.net"
    assert storage.queue_endpoint == "https://contosocalsync.queue.core.windows.net"
    assert storage.client_id == "5f7f1c2e-1111-2222-3333-444455556666"


def test_environment_wins_over_local_settings(tmp_path: Path) -> None:
    file_values = example_settings() | {"SYNC_WINDOW_DAYS": "30", "EVENT_CATEGORY": "From file"}
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": file_values}))
    settings = load_settings({"SYNC_WINDOW_DAYS": "90"}, path)
    assert settings.sync_window_days == 90  # environment
    assert settings.event_category == "From file"  # file fills the rest


def test_unreadable_local_settings_is_named(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert str(path) in str(caught.value)
    assert "JSON" in str(caught.value)
