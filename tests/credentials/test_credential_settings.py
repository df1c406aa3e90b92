"""The "Model credentials (Key Vault)" app settings: validated, named in errors, never values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.settings import SettingsError, load_settings
from tests.support.settings_env import fresh_settings

NAMES = (
    "MODEL_SECRETS_VAULT_URL",
    "OPENAI_API_KEY_SECRET",
    "AZURE_API_KEY_SECRET",
    "AZURE_ENDPOINT",
    "JOB_IDENTITY_CLIENT_ID",
    "COMPUTE_BACKEND",
    "PUBLIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from fresh_settings(monkeypatch, NAMES)


def load(monkeypatch: pytest.MonkeyPatch, **values: str):  # type: ignore[no-untyped-def]
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return load_settings()


def test_unset_means_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = load(monkeypatch).model_credentials()
    assert creds.providers == ()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://kv-waa.vault.azure.net", "https://kv-waa.vault.azure.net"),
        # Bicep's vault.properties.vaultUri ends with a slash; names are case-insensitive.
        ("https://KV-Waa.vault.azure.net/", "https://kv-waa.vault.azure.net"),
        ("https://kvwaa1.vault.azure.cn", "https://kvwaa1.vault.azure.cn"),
        ("https://kvwaa1.vault.usgovcloudapi.net/", "https://kvwaa1.vault.usgovcloudapi.net"),
    ],
)
def test_a_vault_url_is_normalized(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    assert load(monkeypatch, MODEL_SECRETS_VAULT_URL=given).model_secrets_vault_url == expected


@pytest.mark.parametrize(
    "bad",
    [
        "http://kv-waa.vault.azure.net",  # the token travels: https only
        "https://kv-waa.example.com",  # not Key Vault
        "https://kv-waa.vault.azure.net/secrets/x",  # a secret's URI, not the vault's
        "https://kv-waa.vault.azure.net:8443",
        "https://user:pw@kv-waa.vault.azure.net",
        "https://kv.vault.azure.net",  # 2 characters: too short
        "https://1kv.vault.azure.net",  # starts with a digit
        "https://kv--waa.vault.azure.net",  # consecutive hyphens
        "https://" + "k" * 25 + ".vault.azure.net",  # 25 characters
        "https://kv-waa.managedhsm.azure.net",  # Managed HSM holds no secrets
        "kv-waa",
    ],
)
def test_a_malformed_vault_url_is_named(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    with pytest.raises(SettingsError, match="app setting MODEL_SECRETS_VAULT_URL is malformed"):
        load(monkeypatch, MODEL_SECRETS_VAULT_URL=bad)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY_SECRET", "AZURE_API_KEY_SECRET"])
@pytest.mark.parametrize("bad", ["openai_api_key", "key.v1", "a" * 128, "key with space"])
def test_a_secret_name_follows_key_vault_rules(
    monkeypatch: pytest.MonkeyPatch, name: str, bad: str
) -> None:
    with pytest.raises(SettingsError, match=f"app setting {name} is malformed"):
        load(
            monkeypatch,
            MODEL_SECRETS_VAULT_URL="https://kv-waa.vault.azure.net",
            AZURE_ENDPOINT="https://x.openai.azure.com",
            **{name: bad},
        )


def test_a_secret_name_needs_the_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as err:
        load(monkeypatch, OPENAI_API_KEY_SECRET="openai-api-key")
    assert "OPENAI_API_KEY_SECRET is malformed" in str(err.value)
    assert "MODEL_SECRETS_VAULT_URL is not set" in str(err.value)


def test_the_azure_key_and_endpoint_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    vault = "https://kv-waa.vault.azure.net"
    with pytest.raises(SettingsError, match="app setting AZURE_ENDPOINT is missing"):
        load(monkeypatch, MODEL_SECRETS_VAULT_URL=vault, AZURE_API_KEY_SECRET="azure-key")
    monkeypatch.delenv("AZURE_API_KEY_SECRET")
    load_settings.cache_clear()
    with pytest.raises(SettingsError, match=r"AZURE_ENDPOINT is malformed.*AZURE_API_KEY_SECRET"):
        load(
            monkeypatch, MODEL_SECRETS_VAULT_URL=vault, AZURE_ENDPOINT="https://x.openai.azure.com"
        )


@pytest.mark.parametrize(
    "bad", ["http://x.openai.azure.com", "https://x.openai.azure.com/?api-key=abc", "x"]
)
def test_a_malformed_endpoint_is_named(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    with pytest.raises(SettingsError, match="app setting AZURE_ENDPOINT is malformed") as err:
        load(
            monkeypatch,
            MODEL_SECRETS_VAULT_URL="https://kv-waa.vault.azure.net",
            AZURE_API_KEY_SECRET="azure-key",
            AZURE_ENDPOINT=bad,
        )
    assert "abc" not in str(err.value)  # a key pasted in the URL is not echoed back


def test_the_job_identity_is_a_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="app setting JOB_IDENTITY_CLIENT_ID is malformed"):
        load(monkeypatch, JOB_IDENTITY_CLIENT_ID="id-waa-job")


def test_both_providers_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch,
        MODEL_SECRETS_VAULT_URL="https://kv-waa.vault.azure.net",
        OPENAI_API_KEY_SECRET="openai-api-key",
        AZURE_API_KEY_SECRET="azure-openai-api-key",
        AZURE_ENDPOINT="https://x.openai.azure.com/",
        JOB_IDENTITY_CLIENT_ID="11111111-2222-3333-4444-555555555555",
    )
    creds = settings.model_credentials()
    assert [p.value for p in creds.providers] == ["openai", "azure"]
    assert settings.job_identity_client_id == "11111111-2222-3333-4444-555555555555"
