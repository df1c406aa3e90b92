"""App settings: read from the environment once, validated in one place.

Every setting the app reads is a field here, named exactly as the app setting (environment
variable). `load_settings()` raises `SettingsError` naming each missing or malformed setting.
Secret values are `SecretStr`, so they never print in logs, reprs or errors.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError


class SettingsError(ValueError):
    """One or more app settings are missing or malformed."""


class VmHost(BaseModel):
    """One VM of the SSH tier (an item of the VM_POOL setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="azureuser", min_length=1)
    # The expected public host key, as in known_hosts: "ssh-ed25519 AAAA...". Never learned
    # on first use: a VM whose key differs is refused.
    host_key: str = Field(pattern=r"^[a-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$")

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class AppSettings(BaseSettings):
    # An app setting present but empty (as local.settings.json and the portal allow) is unset:
    # an optional one takes its default, a required one is reported missing.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, env_ignore_empty=True
    )

    # --- Storage and Durable Functions -------------------------------------------------------
    storage_connection: SecretStr = Field(alias="AzureWebJobsStorage")
    task_hub_name: str = Field(
        default="waaeval", alias="TASK_HUB_NAME", pattern=r"^[A-Za-z][A-Za-z0-9]{2,44}$"
    )
    state_table_prefix: str = Field(
        default="waa", alias="STATE_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{0,30}$"
    )

    # --- The evaluation API -------------------------------------------------------------------
    max_workers: int = Field(default=20, alias="MAX_WORKERS", ge=1, le=200)
    # Where jobs reach the heartbeat endpoint, e.g. https://<app>.azurewebsites.net
    public_base_url: str = Field(default="http://127.0.0.1:7071", alias="PUBLIC_BASE_URL")
    heartbeat_secret: SecretStr = Field(alias="HEARTBEAT_SECRET", min_length=16)

    # --- Compute ------------------------------------------------------------------------------
    # `simulated` runs every tier on the in-process simulator; `azure` uses the real tiers.
    compute_backend: Literal["simulated", "azure"] = Field(
        default="simulated", alias="COMPUTE_BACKEND"
    )
    # A registry in the same region as the compute pulls the ~5 GB image in under 2 minutes;
    # from Docker Hub it takes 5-10 and eats most of the container-start deadline.
    waa_image: str = Field(
        default="waaregistry.azurecr.io/windowsarena/winarena:latest", alias="WAA_IMAGE"
    )

    # --- Azure ML and Azure Batch tiers (COMPUTE_BACKEND=azure; see docs/azure-setup.md) -----
    azure_subscription_id: str | None = Field(default=None, alias="AZURE_SUBSCRIPTION_ID")
    azure_resource_group: str | None = Field(default=None, alias="AZURE_RESOURCE_GROUP")
    azureml_workspace: str | None = Field(default=None, alias="AZUREML_WORKSPACE")
    azureml_compute_name: str = Field(default="waa-cluster", alias="AZUREML_COMPUTE_NAME")
    # Client id of a user-assigned managed identity; unset = DefaultAzureCredential's own choice.
    azure_client_id: str | None = Field(default=None, alias="AZURE_CLIENT_ID")
    batch_account_url: str | None = Field(default=None, alias="BATCH_ACCOUNT_URL")
    batch_pool_id: str = Field(default="waa-pool", alias="BATCH_POOL_ID")
    # Shared-key auth for Batch when both are set; otherwise the credential (Entra ID) is used.
    batch_account_name: str | None = Field(default=None, alias="BATCH_ACCOUNT_NAME")
    batch_account_key: SecretStr | None = Field(default=None, alias="BATCH_ACCOUNT_KEY")

    # --- Simulator (COMPUTE_BACKEND=simulated) ------------------------------------------------
    sim_profile: Literal["none", "seed", "chaos"] = Field(default="seed", alias="SIM_PROFILE")
    sim_seed: int = Field(default=7, alias="SIM_SEED")

    # --- Stuck-job sweeper --------------------------------------------------------------------
    sweep_schedule: str = Field(default="0 */2 * * * *", alias="SWEEP_SCHEDULE")

    # --- VMs over SSH (tier "vm"; optional, simulated mode needs none) ------------------------
    # JSON list of {"host", "port", "user", "host_key"}.
    vm_pool: list[VmHost] = Field(default_factory=list, alias="VM_POOL")
    # The private key text (OpenSSH or PEM). In Azure, make the app setting a Key Vault
    # reference, @Microsoft.KeyVault(SecretUri=...): the platform resolves it before the app
    # reads its environment.
    vm_ssh_private_key: SecretStr | None = Field(default=None, alias="VM_SSH_PRIVATE_KEY")

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"]) or "?"
        what = "is missing" if e["type"] == "missing" else f"is malformed: {e['msg']}"
        parts.append(f"app setting {name} {what}")
    return "; ".join(parts)


@functools.cache
def load_settings() -> AppSettings:
    """The app's settings, read once per process."""
    try:
        return AppSettings()  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None
    except SourceError as err:
        # pydantic-settings names the field; users know the app setting (e.g. VM_POOL is not JSON).
        field = str(err).split('"')[1] if '"' in str(err) else ""
        info = AppSettings.model_fields.get(field)
        name = info.alias if info is not None and info.alias else field
        raise SettingsError(f"app setting {name} is malformed: not valid JSON") from None
