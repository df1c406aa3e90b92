"""Which credentials a job's agent needs, and where the job finds them: pure rules, no I/O.

WAA's agent reads `OPENAI_API_KEY` (OpenAI), or `AZURE_API_KEY` with `AZURE_ENDPOINT` (Azure
OpenAI) from its environment (microsoft/WindowsAgentArena, `scripts/run.sh` and
`scripts/run_azure.py`). The keys are secrets: they never travel in a job definition (a
workspace reader sees it), a log, an error or a status. The app knows only *names*: the Key
Vault the job reads from and, per environment variable, the name of the secret holding it. The
job fetches the values itself at start with its managed identity (CONTRACT.md, "Runner
environment"). The endpoint is not a secret and travels as a plain environment variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from domain.jobs import Tier

# Key Vault object names: "a 1-127 character string, containing only 0-9, a-z, A-Z, and -"
# (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates, "Object
# identifiers"); the Set Secret REST operation's path parameter has the same pattern,
# ^[0-9a-zA-Z-]+$ (learn.microsoft.com/rest/api/keyvault/secrets/set-secret).
SECRET_NAME_PATTERN = r"^[0-9A-Za-z-]{1,127}$"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)

# Where the job's agent reads each key (WAA's own variable names).
OPENAI_KEY_ENV = "OPENAI_API_KEY"
AZURE_KEY_ENV = "AZURE_API_KEY"
AZURE_ENDPOINT_ENV = "AZURE_ENDPOINT"

# The tiers whose job definitions a workspace or account reader can see, and whose jobs can
# read Key Vault with a managed identity: there the heartbeat token is a Key Vault secret too
# ("where the tier allows it"). The VM tier gets it in a 0600 file over SFTP instead.
VAULT_TOKEN_TIERS = frozenset({Tier.AZURE_ML, Tier.BATCH})
# The token's secret expires this long after the job's own cloud-side timeout could end it.
HEARTBEAT_SECRET_MARGIN_SECONDS = 3600


class ModelProvider(StrEnum):
    OPENAI = "openai"
    AZURE = "azure"


PROVIDER_LABEL = {ModelProvider.OPENAI: "OpenAI", ModelProvider.AZURE: "Azure OpenAI"}
# The app settings that configure each provider (adapters/settings.py), named in errors.
PROVIDER_SETTINGS = {
    ModelProvider.OPENAI: ("MODEL_SECRETS_VAULT_URL", "OPENAI_API_KEY_SECRET"),
    ModelProvider.AZURE: ("MODEL_SECRETS_VAULT_URL", "AZURE_API_KEY_SECRET", "AZURE_ENDPOINT"),
}


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.fullmatch(name))


@dataclass(frozen=True)
class ModelCredentials:
    """What the settings say about model credentials: names and the endpoint, never a value."""

    vault_url: str | None = None
    openai_key_secret: str | None = None
    azure_key_secret: str | None = None
    azure_endpoint: str | None = None

    def configured(self, provider: ModelProvider) -> bool:
        if not self.vault_url:
            return False
        if provider is ModelProvider.OPENAI:
            return bool(self.openai_key_secret)
        return bool(self.azure_key_secret and self.azure_endpoint)

    @property
    def providers(self) -> tuple[ModelProvider, ...]:
        return tuple(p for p in ModelProvider if self.configured(p))

    def missing(self, provider: ModelProvider) -> list[str]:
        """The app settings still unset for `provider`."""
        given = {
            "MODEL_SECRETS_VAULT_URL": self.vault_url,
            "OPENAI_API_KEY_SECRET": self.openai_key_secret,
            "AZURE_API_KEY_SECRET": self.azure_key_secret,
            "AZURE_ENDPOINT": self.azure_endpoint,
        }
        return [name for name in PROVIDER_SETTINGS[provider] if not given[name]]

    def secret_env(self, provider: ModelProvider | None) -> dict[str, str]:
        """Environment variable -> Key Vault secret name, for the job of `provider`."""
        if provider is None or not self.configured(provider):
            return {}
        if provider is ModelProvider.OPENAI:
            assert self.openai_key_secret is not None
            return {OPENAI_KEY_ENV: self.openai_key_secret}
        assert self.azure_key_secret is not None
        return {AZURE_KEY_ENV: self.azure_key_secret}

    def plain_env(self, provider: ModelProvider | None) -> dict[str, str]:
        """The provider's settings that are not secret and travel as plain variables."""
        if provider is ModelProvider.AZURE and self.configured(provider):
            assert self.azure_endpoint is not None
            return {AZURE_ENDPOINT_ENV: self.azure_endpoint}
        return {}


def heartbeat_secret_name(job_name: str) -> str:
    """The Key Vault secret holding one attempt's heartbeat token."""
    name = f"{job_name}-heartbeat"
    if not is_secret_name(name):
        raise ValueError(f"{name!r} is not a valid Key Vault secret name")
    return name


def token_in_vault(vault_url: str | None, tier: Tier, cloud: bool) -> bool:
    """Whether an attempt's heartbeat token goes into Key Vault: a vault is configured, the
    tier's jobs can read it, and the tier is a real one (the simulator keeps tokens in its
    own world and never calls Key Vault)."""
    return bool(vault_url) and cloud and tier in VAULT_TOKEN_TIERS
