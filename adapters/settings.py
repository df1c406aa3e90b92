"""App settings: read from the environment once, validated in one place. The environment is
the platform's, so it is read here, in the adapters, never in the domain core.

Every setting the app reads is a field here, named exactly as the app setting (environment
variable). `load_settings()` raises `SettingsError` naming each missing or malformed setting.
Secret values are `SecretStr`, so they never print in logs, reprs or errors.
"""

from __future__ import annotations

import functools
import ipaddress
import re
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

from domain.credentials import SECRET_NAME_PATTERN, ModelCredentials
from domain.requests import DEFAULT_MAX_WORKERS

# The data-plane DNS suffixes of Key Vault in the public and sovereign clouds
# (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates, "DNS suffixes
# for object identifiers"), and a vault's name: 3-24 characters, 0-9, a-z, A-Z and
# non-consecutive "-" (same page, "Object identifiers"), starting with a letter and ending with
# a letter or digit (the resource name rules).
KEY_VAULT_DNS_SUFFIXES = frozenset(
    {"vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net", "vault.microsoftazure.de"}
)
_VAULT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$")


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

    # --- Artifacts (Blob Storage) -------------------------------------------------------------
    # After each task the job uploads its result folder (result.txt, traj.jsonl, screenshots,
    # logs) to this container of AzureWebJobsStorage's account, through one write-only SAS per
    # file that the app mints (adapters/artifacts.py): a user-delegation SAS signed with a key
    # the app's identity asks for (identity-based storage: no account key needed, and none
    # exists when shared-key access is off), else an account-key SAS from the connection
    # string (Azurite). The container is created on first use. ARTIFACTS_ENABLED=false: no
    # uploads (the heartbeat endpoint answers 409 and the runner skips them).
    artifacts_enabled: bool = Field(default=True, alias="ARTIFACTS_ENABLED")
    # Container names: 3-63 lowercase letters, digits and single hyphens, starting and ending
    # with a letter or digit (learn.microsoft.com/rest/api/storageservices/
    # naming-and-referencing-containers--blobs--and-metadata#container-names).
    artifacts_container: str = Field(
        default="waa-artifacts",
        alias="ARTIFACTS_CONTAINER",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9](-?[a-z0-9])+$",
    )
    # The Blob service of an identity-based AzureWebJobsStorage (the host reads it too); else
    # https://<__accountName>.blob.core.windows.net.
    storage_blob_service_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__blobServiceUri"
    )

    @field_validator("storage_blob_service_uri")
    @classmethod
    def _blob_uri(cls, v: str | None) -> str | None:
        # A bearer token (the identity's) is sent over https only; jobs PUT to it from Azure.
        if v is not None and urlsplit(v).scheme != "https":
            raise ValueError("must be an https URL, e.g. https://<account>.blob.core.windows.net")
        return v

    @property
    def storage_blob_endpoint(self) -> str | None:
        """The Blob service URL of an identity-based AzureWebJobsStorage (None: a connection
        string, or no way to know it)."""
        if self.storage_blob_service_uri:
            return self.storage_blob_service_uri.rstrip("/")
        if self.storage_account_name:
            return f"https://{self.storage_account_name}.blob.core.windows.net"
        return None

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

    # --- Model credentials (Key Vault) -------------------------------------------------------
    # Which credentials the agent needs, as Key Vault *names*: the values never pass through the
    # app. The jobs read them at start with their managed identity (JOB_IDENTITY_CLIENT_ID) from
    # MODEL_SECRETS_VAULT_URL; OPENAI_API_KEY_SECRET names the secret that holds the OpenAI key,
    # AZURE_API_KEY_SECRET the Azure OpenAI key (with AZURE_ENDPOINT, which is not a secret). With
    # a vault, the Azure ML and Batch tiers also get their heartbeat token as a secret written
    # there by the app (docs/azure-setup.md, "Model credentials"). A start request whose model
    # has no credentials configured is refused (domain.requests.resolve_model_provider).
    model_secrets_vault_url: str | None = Field(default=None, alias="MODEL_SECRETS_VAULT_URL")
    openai_api_key_secret: str | None = Field(
        default=None, alias="OPENAI_API_KEY_SECRET", pattern=SECRET_NAME_PATTERN
    )
    azure_api_key_secret: str | None = Field(
        default=None, alias="AZURE_API_KEY_SECRET", pattern=SECRET_NAME_PATTERN
    )
    # validate_default: the pairing with AZURE_API_KEY_SECRET is checked when it is absent.
    azure_endpoint: str | None = Field(default=None, alias="AZURE_ENDPOINT", validate_default=True)
    # Client id (a GUID) of the user-assigned identity the Azure ML cluster and the Batch pool
    # run jobs with; unset: the job's only (or system-assigned) identity.
    job_identity_client_id: str | None = Field(
        default=None,
        alias="JOB_IDENTITY_CLIENT_ID",
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )

    @field_validator("model_secrets_vault_url")
    @classmethod
    def _vault_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        host = (parts.hostname or "").lower()
        vault, _, suffix = host.partition(".")
        if (
            parts.scheme != "https"
            or suffix not in KEY_VAULT_DNS_SUFFIXES
            or not _VAULT_NAME.fullmatch(vault)
            or "--" in vault
            or parts.port is not None
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                "must be a Key Vault URL, https://<vault-name>.vault.azure.net (the vault's name: "
                "3-24 letters, digits and single hyphens, starting with a letter)"
            )
        return f"https://{host}"

    @field_validator("openai_api_key_secret", "azure_api_key_secret")
    @classmethod
    def _needs_vault(cls, v: str | None, info: ValidationInfo) -> str | None:
        # A malformed vault URL is absent from info.data, and reported as such.
        vault_unset = info.data.get("model_secrets_vault_url", "") is None
        if v is not None and vault_unset:
            raise ValueError("names a Key Vault secret, but MODEL_SECRETS_VAULT_URL is not set")
        return v

    @field_validator("azure_endpoint")
    @classmethod
    def _azure_endpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        key_set = info.data.get("azure_api_key_secret") is not None
        if v is None:
            if key_set:
                raise PydanticCustomError(
                    "missing",
                    "Field required",
                    {"hint": "the Azure OpenAI endpoint that goes with AZURE_API_KEY_SECRET"},
                )
            return None
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be the https URL of the Azure OpenAI resource")
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError("must not carry a user name, password or query (keys go in Key Vault)")
        if "azure_api_key_secret" in info.data and not key_set:
            raise ValueError("is set, but AZURE_API_KEY_SECRET (the key's secret name) is not")
        return v

    def model_credentials(self) -> ModelCredentials:
        """The names the jobs' model credentials are found under (domain.credentials)."""
        return ModelCredentials(
            vault_url=self.model_secrets_vault_url,
            openai_key_secret=self.openai_api_key_secret,
            azure_key_secret=self.azure_api_key_secret,
            azure_endpoint=self.azure_endpoint,
        )

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
