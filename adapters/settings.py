"""App settings: read from the environment once, validated in one place. The environment is
the platform's, so it is read here, in the adapters, never in the domain core.

Every setting the app reads is a field here, named exactly as the app setting (environment
variable). `load_settings()` raises `SettingsError` naming each missing or malformed setting.
Secret values are `SecretStr`, so they never print in logs, reprs or errors.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from domain.requests import DEFAULT_MAX_WORKERS


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
    # AzureWebJobsStorage is a connection string, or (no key) an identity-based connection by the
    # Functions convention: AzureWebJobsStorage__tableServiceUri (or __accountName), with
    # __credential=managedidentity and __clientId for a user-assigned identity ("Connecting to
    # host storage with an identity", learn.microsoft.com/azure/azure-functions/
    # functions-reference#connecting-to-host-storage-with-an-identity). The host and the Durable
    # extension read the same settings (plus __blobServiceUri and __queueServiceUri), so one set
    # serves all three. Declared before AzureWebJobsStorage, whose check reads them.
    storage_account_name: str | None = Field(
        default=None, alias="AzureWebJobsStorage__accountName", pattern=r"^[a-z0-9]{3,24}$"
    )
    storage_table_service_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__tableServiceUri"
    )
    storage_credential: Literal["managedidentity"] | None = Field(
        default=None, alias="AzureWebJobsStorage__credential"
    )
    storage_client_id: str | None = Field(default=None, alias="AzureWebJobsStorage__clientId")
    # validate_default: the check that either form is there runs when the setting is absent.
    storage_connection: SecretStr | None = Field(
        default=None, alias="AzureWebJobsStorage", validate_default=True
    )
    task_hub_name: str = Field(
        default="waaeval", alias="TASK_HUB_NAME", pattern=r"^[A-Za-z][A-Za-z0-9]{2,44}$"
    )
    state_table_prefix: str = Field(
        default="waa", alias="STATE_TABLE_PREFIX", pattern=r"^[A-Za-z][A-Za-z0-9]{0,30}$"
    )

    # --- The evaluation API -------------------------------------------------------------------
    max_workers: int = Field(default=DEFAULT_MAX_WORKERS, alias="MAX_WORKERS", ge=1, le=200)
    heartbeat_secret: SecretStr = Field(alias="HEARTBEAT_SECRET", min_length=16)

    # --- Compute ------------------------------------------------------------------------------
    # `simulated` runs every tier on the in-process simulator; `azure` uses the real tiers.
    compute_backend: Literal["simulated", "azure"] = Field(
        default="simulated", alias="COMPUTE_BACKEND"
    )
    # Where jobs reach the heartbeat endpoint, e.g. https://<app>.azurewebsites.net. Declared
    # after COMPUTE_BACKEND, which its check reads; validate_default: the loopback default is
    # refused for the real tiers even when the setting is absent.
    public_base_url: str = Field(
        default="http://127.0.0.1:7071", alias="PUBLIC_BASE_URL", validate_default=True
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

    # --- Live alerts (issue 11) ------------------------------------------------------------
    # An incoming-webhook URL (Slack, or a Teams incoming-webhook connector). It is a secret:
    # whoever has it can post to the channel; in Azure make it a Key Vault reference.
    alert_webhook_url: SecretStr | None = Field(default=None, alias="ALERT_WEBHOOK_URL")

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        parts = urlsplit(v.get_secret_value().strip())
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ValueError("must be an https:// incoming-webhook URL")
        if parts.scheme == "http" and not _local_host(parts.hostname):
            # The URL is the webhook's only credential: never send it in clear text.
            raise ValueError("must be https:// (plain http only to this machine)")
        return SecretStr(v.get_secret_value().strip())

    @field_validator("storage_credential", mode="before")
    @classmethod
    def _credential_name(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("storage_table_service_uri")
    @classmethod
    def _table_uri(cls, v: str | None) -> str | None:
        # The Table client sends the identity's bearer token, which azure-core refuses to send
        # over plain http.
        if v is not None and urlsplit(v).scheme != "https":
            raise ValueError("must be an https URL, e.g. https://<account>.table.core.windows.net")
        return v

    @field_validator("storage_connection")
    @classmethod
    def _storage_given(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        identity_fields = ("storage_table_service_uri", "storage_account_name")
        if any(name not in info.data for name in identity_fields):
            return v  # one of them is malformed, and reported as such
        if v is None and not any(info.data[name] for name in identity_fields):
            raise PydanticCustomError(
                "missing",
                "Field required",
                {
                    "hint": "a storage connection string, or AzureWebJobsStorage__tableServiceUri"
                    " or AzureWebJobsStorage__accountName for an identity-based connection"
                },
            )
        return v

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, v: str, info: ValidationInfo) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user name or password")
        if info.data.get("compute_backend") == "azure":
            # Jobs on Azure ML, Batch or a VM post heartbeats to this URL from the cloud: a
            # loopback or link-local address there is the job's own machine, and the app's
            # endpoint is https (Functions serves http too, but the bearer token must not
            # travel in clear text).
            where = f"{parts.scheme}://{parts.hostname}"
            if parts.scheme != "https":
                raise ValueError(
                    f"must be the https URL jobs reach the app at (https://<app>.azurewebsites.net)"
                    f" when COMPUTE_BACKEND is azure, not {where}"
                )
            if _local_host(parts.hostname):
                raise ValueError(
                    f"must be a URL jobs in Azure can reach when COMPUTE_BACKEND is azure; {where}"
                    " is local to the job's own machine"
                )
        return v.rstrip("/")

    @property
    def storage_table_endpoint(self) -> str | None:
        """The Table service URL of an identity-based AzureWebJobsStorage (None: a connection
        string). __accountName means the public cloud's endpoint, as for the host (the docs:
        not for sovereign clouds or custom DNS; use __tableServiceUri there)."""
        if self.storage_table_service_uri:
            return self.storage_table_service_uri.rstrip("/")
        if self.storage_account_name:
            return f"https://{self.storage_account_name}.table.core.windows.net"
        return None


def _local_host(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified or address.is_link_local


def _alias(loc: str) -> str:
    # A default that is validated (validate_default) is reported under its field name.
    info = AppSettings.model_fields.get(loc)
    return info.alias if info is not None and info.alias else loc


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        name = ".".join(_alias(str(p)) for p in e["loc"]) or "?"
        if e["type"] == "missing":
            hint = (e.get("ctx") or {}).get("hint")
            what = f"is missing ({hint})" if hint else "is missing"
        else:
            what = f"is malformed: {e['msg']}"
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
