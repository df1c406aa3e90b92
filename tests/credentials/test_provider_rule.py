"""The pure rule: which provider's credentials an evaluation's jobs get (domain/requests.py,
domain/credentials.py), refused with the field to fix and the missing settings."""

from __future__ import annotations

import json

import pytest

from domain.credentials import (
    ModelCredentials,
    ModelProvider,
    heartbeat_secret_name,
    is_secret_name,
    token_in_vault,
)
from domain.jobs import Tier
from domain.naming import job_name
from domain.requests import RequestError, parse_evaluation_request, resolve_model_provider

VAULT = "https://kv-waa.vault.azure.net"
OPENAI = ModelCredentials(vault_url=VAULT, openai_key_secret="openai-api-key")
AZURE = ModelCredentials(
    vault_url=VAULT, azure_key_secret="azure-key", azure_endpoint="https://x.openai.azure.com"
)
BOTH = ModelCredentials(
    vault_url=VAULT,
    openai_key_secret="openai-api-key",
    azure_key_secret="azure-key",
    azure_endpoint="https://x.openai.azure.com",
)


def req(**fields: object):  # type: ignore[no-untyped-def]
    body = {"task_set": "waa-smoke", **fields}
    return parse_evaluation_request(json.dumps(body).encode(), max_workers=20)


def refusal(credentials: ModelCredentials, **fields: object) -> RequestError:
    with pytest.raises(RequestError) as err:
        resolve_model_provider(req(**fields), credentials)
    assert str(err.value).startswith(err.value.field + ":")
    return err.value


def test_the_one_configured_provider_is_used_when_none_is_named() -> None:
    assert resolve_model_provider(req(), OPENAI) is ModelProvider.OPENAI
    assert resolve_model_provider(req(), AZURE) is ModelProvider.AZURE


def test_a_named_provider_is_used_when_configured() -> None:
    assert resolve_model_provider(req(model_provider="azure"), BOTH) is ModelProvider.AZURE
    assert resolve_model_provider(req(model_provider="openai"), BOTH) is ModelProvider.OPENAI


def test_no_credentials_names_model_and_every_setting() -> None:
    err = refusal(ModelCredentials(), model="gpt-4o")
    assert err.field == "model"
    assert "'gpt-4o'" in err.message
    for name in ("MODEL_SECRETS_VAULT_URL", "OPENAI_API_KEY_SECRET", "AZURE_API_KEY_SECRET"):
        assert name in err.message


def test_names_without_a_vault_are_no_credentials() -> None:
    err = refusal(ModelCredentials(openai_key_secret="openai-api-key"))
    assert err.field == "model"


def test_a_named_provider_without_credentials_names_model_provider_and_what_is_missing() -> None:
    err = refusal(OPENAI, model_provider="azure")
    assert err.field == "model_provider"
    assert "AZURE_API_KEY_SECRET and AZURE_ENDPOINT not set" in err.message
    assert "MODEL_SECRETS_VAULT_URL" not in err.message  # that one is set
    err = refusal(ModelCredentials(), model_provider="openai")
    assert "MODEL_SECRETS_VAULT_URL and OPENAI_API_KEY_SECRET not set" in err.message


def test_both_configured_and_none_named_is_never_a_silent_choice() -> None:
    err = refusal(BOTH)
    assert err.field == "model_provider"
    assert "'openai' or 'azure'" in err.message


def test_an_unknown_provider_is_a_validation_error() -> None:
    with pytest.raises(RequestError) as err:
        req(model_provider="anthropic")
    assert err.value.field == "model_provider"


def test_the_job_gets_names_never_values() -> None:
    assert OPENAI.secret_env(ModelProvider.OPENAI) == {"OPENAI_API_KEY": "openai-api-key"}
    assert OPENAI.plain_env(ModelProvider.OPENAI) == {}
    assert AZURE.secret_env(ModelProvider.AZURE) == {"AZURE_API_KEY": "azure-key"}
    assert AZURE.plain_env(ModelProvider.AZURE) == {"AZURE_ENDPOINT": "https://x.openai.azure.com"}
    assert OPENAI.secret_env(ModelProvider.AZURE) == {}  # not configured: nothing
    assert OPENAI.secret_env(None) == {}


def test_secret_names_follow_key_vault_rules() -> None:
    assert is_secret_name("openai-api-key") and is_secret_name("A" * 127)
    for bad in ("", "a" * 128, "openai_api_key", "key.v2", "key/1", "clé"):
        assert not is_secret_name(bad), bad
    # Every job name this app makes gives a valid token secret name.
    longest = job_name("f" * 12, 999_999, 999_999)
    assert is_secret_name(heartbeat_secret_name(longest))


def test_the_token_goes_to_the_vault_only_on_real_cloud_tiers_with_a_vault() -> None:
    assert token_in_vault(VAULT, Tier.AZURE_ML, cloud=True)
    assert token_in_vault(VAULT, Tier.BATCH, cloud=True)
    assert not token_in_vault(VAULT, Tier.VM, cloud=True)  # a 0600 file over SFTP instead
    assert not token_in_vault(VAULT, Tier.AZURE_ML, cloud=False)  # the simulator
    assert not token_in_vault(None, Tier.AZURE_ML, cloud=True)
