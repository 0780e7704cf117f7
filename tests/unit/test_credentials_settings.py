"""The credential settings: defaults, and one line naming the setting for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_core.config import ConfigError
from tests.conftest import settings_with as load

NO_FILE = Path("/nonexistent/local.settings.json")
VAULT = "https://contoso-sync.vault.azure.net"
IDENTITY = "5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def test_defaults() -> None:
    settings = load(
        KEY_VAULT_SECRET_NAME=None,
        KEY_VAULT_CERTIFICATE_NAME=None,
        ROTATION_ENABLED=None,
        SECRET_LIFETIME_DAYS=None,
    )
    assert settings.key_vault_secret_name == "graph-client-secret"
    assert settings.key_vault_certificate_name == "graph-client-certificate"
    assert settings.rotation_enabled is False
    assert settings.secret_lifetime_days == 180


def test_rotation_with_the_secret_in_key_vault() -> None:
    settings = load(
        CLIENT_SECRET="",
        KEY_VAULT_URL=VAULT,
        ROTATION_ENABLED="true",
        SECRET_LIFETIME_DAYS="90",
        KEY_VAULT_SECRET_NAME="sync-secret-2",
        MANAGED_IDENTITY_CLIENT_ID=IDENTITY,
    )
    assert settings.rotation_enabled is True
    assert settings.secret_lifetime_days == 90
    assert settings.key_vault_secret_name == "sync-secret-2"
    assert settings.managed_identity_client_id == IDENTITY
    assert settings.credential_mode == "secret"


@pytest.mark.parametrize(
    ("overrides", "setting", "words"),
    [
        ({"ROTATION_ENABLED": "yes please"}, "ROTATION_ENABLED", "true or false"),
        ({"ROTATION_ENABLED": "true"}, "ROTATION_ENABLED", "leave CLIENT_SECRET empty"),
        (
            {"ROTATION_ENABLED": "true", "CLIENT_SECRET": "", "KEY_VAULT_URL": ""},
            "CLIENT_SECRET",
            "is missing",
        ),
        (
            {"ROTATION_ENABLED": "true", "CREDENTIAL_MODE": "certificate", "KEY_VAULT_URL": VAULT},
            "ROTATION_ENABLED",
            "client secrets only",
        ),
        ({"SECRET_LIFETIME_DAYS": "30"}, "SECRET_LIFETIME_DAYS", "between 31 and 730"),
        ({"SECRET_LIFETIME_DAYS": "731"}, "SECRET_LIFETIME_DAYS", "between 31 and 730"),
        ({"KEY_VAULT_SECRET_NAME": "graph_secret"}, "KEY_VAULT_SECRET_NAME", "hyphens"),
        ({"KEY_VAULT_CERTIFICATE_NAME": "a" * 128}, "KEY_VAULT_CERTIFICATE_NAME", "1-127"),
        ({"MANAGED_IDENTITY_CLIENT_ID": "my-identity"}, "MANAGED_IDENTITY_CLIENT_ID", "GUID"),
    ],
)
def test_bad_credential_settings_are_named(
    overrides: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load(**overrides)
    assert error.value.setting == setting
    assert words in str(error.value)
    assert "\n" not in str(error.value)
