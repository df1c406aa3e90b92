"""Key Vault: the app writes each Azure ML and Batch attempt's heartbeat token as a secret, so
that the job definition carries the secret's name (WAA_HEARTBEAT_TOKEN_SECRET) instead of the
token, and the job reads it at start with its own managed identity (CONTRACT.md, "Runner
environment"). The model keys are never touched here: the jobs read them from the same vault.

The client is azure-keyvault-secrets' `SecretClient` with the app's credential (as the compute
tiers build it, adapters/runtime.py) and bounded timeouts and retries (domain/bounds.py). It
authenticates by Key Vault's challenge protocol (its ChallengeAuthPolicy,
azure/keyvault/secrets/_shared/challenge_auth_policy.py): the first request goes out without a
token, Key Vault answers 401 with `WWW-Authenticate: Bearer authorization=<authority>,
resource=<https://vault.azure.net>`, and the policy asks the credential for that resource's
token and sends the request again. The policy also checks that the challenge's resource is a
parent domain of the vault's (verify_challenge_resource, on by default and kept on here).

Errors become `BackendError`s without the secret (the token is never in a message): throttling,
5xx and network errors are transient (the activity raises, its retry policy retries); a refusal
(403: the app's identity lacks "Key Vault Secrets Officer"; 401 after the challenge; 400) is
permanent for the tier, whose attempt then fails with that reason (learn.microsoft.com/azure/
key-vault/general/rest-error-codes: 401 unauthenticated, 403 forbidden, 429 throttled).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from domain import bounds
from domain.jobs import BackendError, PermanentTierError, TransientBackendError

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

    from adapters.settings import AppSettings

log = logging.getLogger(__name__)

CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": bounds.KEYVAULT_CONNECTION_TIMEOUT,
    "read_timeout": bounds.KEYVAULT_READ_TIMEOUT,
    "retry_total": bounds.KEYVAULT_RETRY_TOTAL,
    "retry_backoff_factor": 1.0,
    "retry_backoff_max": bounds.KEYVAULT_RETRY_BACKOFF_MAX,
    "timeout": bounds.KEYVAULT_RETRY_TIMEOUT,
}
# The token is a hex string; a content type lets a person looking at the vault tell what it is.
TOKEN_CONTENT_TYPE = "text/plain"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
OFFICER_HINT = (
    "grant the function app's identity the 'Key Vault Secrets Officer' role on the vault "
    "(docs/azure-setup.md, 'Model credentials')"
)


class HeartbeatTokenVault:
    """Stores per-attempt heartbeat tokens in one Key Vault."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    @classmethod
    def connect(
        cls, vault_url: str, credential: TokenCredential, **options: Any
    ) -> HeartbeatTokenVault:
        """A client on `vault_url` with the app's bounds; `options` are azure-core's (tests
        pass `connection_verify` for a loopback fake's certificate)."""
        from azure.keyvault.secrets import SecretClient

        return cls(SecretClient(vault_url, credential, **{**CLIENT_OPTIONS, **options}))

    @property
    def vault_url(self) -> str:
        return str(self._client.vault_url)

    def store_token(
        self, name: str, token: str, *, expires_on: datetime, tags: dict[str, str]
    ) -> None:
        """Write `token` as secret `name` (a new version if it exists: a re-delivered submit
        writes the same value again, harmlessly), expiring at `expires_on`."""
        where = f"Key Vault {self.vault_url}, secret {name}"
        try:
            self._client.set_secret(
                name,
                token,
                content_type=TOKEN_CONTENT_TYPE,
                expires_on=expires_on,
                enabled=True,
                tags=tags,
            )
        except ClientAuthenticationError as err:
            # The credential could not get a token, or Key Vault refused the one it got after
            # the challenge: no retry fixes that.
            raise PermanentTierError(
                f"{where}: not authenticated (HTTP {err.status_code or '-'}); {OFFICER_HINT}",
                code="KeyVaultUnauthenticated",
            ) from None
        except HttpResponseError as err:
            raise _http_error(where, err) from None
        except ValueError as err:
            # The challenge policy refused the vault's challenge (its resource is not a parent
            # domain of the vault's: not a Key Vault, or a look-alike); its text names only
            # the domains.
            raise PermanentTierError(
                f"{where}: authentication challenge refused: {err}", code="KeyVaultChallenge"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as err:
            raise TransientBackendError(
                f"{where}: Key Vault unreachable ({type(err).__name__})", code="KeyVaultNetwork"
            ) from None
        log.info("heartbeat token stored in %s", where)


def _http_error(where: str, err: HttpResponseError) -> BackendError:
    status = err.status_code or 0
    code = _error_code(err)
    text = f"{where}: HTTP {status} {code}".rstrip()
    if status in _TRANSIENT_STATUS:
        return TransientBackendError(text, code=code or f"HTTP{status}")
    if status == 403:
        return PermanentTierError(f"{text}; {OFFICER_HINT}", code=code or "Forbidden")
    return PermanentTierError(text, code=code or f"HTTP{status}")


def _error_code(err: HttpResponseError) -> str:
    """Key Vault's error code ("Forbidden", "Throttled", with the inner one: "ForbiddenByRbac"),
    never its message, which could in principle quote the request."""
    error = getattr(err, "error", None)
    code = str(getattr(error, "code", "") or "")
    inner = getattr(error, "innererror", None) or {}
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return f"{code}/{inner_code}" if code and inner_code else code


@functools.cache
def _vault(vault_url: str, client_id: str | None) -> HeartbeatTokenVault:
    # The app's identity, chosen as for the compute tiers (adapters/runtime.py).
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    return HeartbeatTokenVault.connect(vault_url, credential)


def token_vault(settings: AppSettings) -> HeartbeatTokenVault:
    """The app's writer for MODEL_SECRETS_VAULT_URL, built once per vault and identity."""
    if not settings.model_secrets_vault_url:
        raise ValueError("MODEL_SECRETS_VAULT_URL is not set")
    return _vault(settings.model_secrets_vault_url, settings.azure_client_id)
