"""Upload URLs for a task's artifacts: one write-only blob SAS per file, minted by the app.

The job never holds a storage credential. For each file it gets a URL for exactly one blob,
`<container>/<evaluation>/<domain>/<task>/attempt-<n>/<path>` (domain/artifacts.py), whose
SAS allows create and write only (no read, list or delete; `sp=cw`) and ends at the job's
deadline. The SAS is a service SAS on the blob resource (`sr=b`), so it cannot write any other
blob, not even one beside it (learn.microsoft.com/rest/api/storageservices/create-service-sas,
"Specify the signed resource").

How it is signed follows AzureWebJobsStorage:
- identity-based (`__blobServiceUri` / `__accountName`, `__credential`): a user-delegation SAS,
  signed with a key from Get User Delegation Key, which the app's identity may ask for with
  Storage Blob Data Contributor or Owner (`generateUserDelegationKey`). A key is valid for at
  most 7 days from the request, and a SAS signed with it at most until the key expires
  (learn.microsoft.com/rest/api/storageservices/get-user-delegation-key, "Request body";
  create-user-delegation-sas). Works with shared-key access disabled on the account.
  Keys are cached and a new one is fetched whenever the cached one would end before the SAS.
- a connection string with an AccountKey (Azurite, development): an account-key SAS.

The signature is a secret: nothing here logs a URL with its query; callers log the prefix.
Every Blob call is bounded (domain/bounds.py: transport timeouts, LinearRetry).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    LinearRetry,
    UserDelegationKey,
    generate_blob_sas,
)

from adapters.settings import AppSettings
from domain import bounds

log = logging.getLogger(__name__)

# Create and write: enough for Put Blob (and Put Block / Put Block List) of a new blob or to
# replace it on a retried upload; no read, add, delete, list or tag.
UPLOAD_PERMISSION = BlobSasPermissions(create=True, write=True)
# A user-delegation key may live 7 days from when it is asked for; ask for a little less, and
# start it a few minutes early so that a clock a little behind the service's still accepts it.
DELEGATION_KEY_LIFETIME = timedelta(days=6)
DELEGATION_KEY_MAX_LIFETIME = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)


def client_options() -> dict[str, Any]:
    """The Blob client's bounds (domain/bounds.py; tests/test_bounds.py checks them)."""
    return {
        "connection_timeout": bounds.BLOB_CONNECTION_TIMEOUT,
        "read_timeout": bounds.BLOB_READ_TIMEOUT,
        "retry_policy": LinearRetry(
            backoff=bounds.BLOB_RETRY_BACKOFF,
            retry_total=bounds.BLOB_RETRY_TOTAL,
            random_jitter_range=bounds.BLOB_RETRY_JITTER,
        ),
    }


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UploadGrant:
    """What an artifact_urls answer carries: the folder (no SAS) and one SAS URL per path."""

    prefix_url: str
    urls: dict[str, str]
    expires_at: datetime


class Signer(Protocol):
    def sign(self, container: str, blob_name: str, expiry: datetime) -> tuple[str, datetime]:
        """A SAS token (no leading '?') for `blob_name`, and when it really expires (never
        after `expiry`)."""
        ...


class AccountKeySigner:
    """Account-key SAS, for a connection string (Azurite, development)."""

    def __init__(self, account_name: str, account_key: str, *, protocol: str) -> None:
        self._account_name = account_name
        self._account_key = account_key
        self._protocol = protocol

    def sign(self, container: str, blob_name: str, expiry: datetime) -> tuple[str, datetime]:
        token = generate_blob_sas(
            self._account_name,
            container,
            blob_name,
            account_key=self._account_key,
            permission=UPLOAD_PERMISSION,
            expiry=expiry,
            protocol=self._protocol,
        )
        return token, expiry


class UserDelegationSigner:
    """User-delegation SAS, signed with a key the app's identity gets from the Blob service;
    the key is cached until it would end before a SAS that needs it."""

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        protocol: str = "https",
        now: Callable[[], datetime] = wall_clock,
    ) -> None:
        self._service = service
        self._protocol = protocol
        self._now = now
        self._lock = threading.Lock()
        self._key: UserDelegationKey | None = None
        self._key_expiry: datetime | None = None
        self.keys_fetched = 0

    def _key_until(self, expiry: datetime) -> tuple[UserDelegationKey, datetime]:
        with self._lock:
            if self._key is None or self._key_expiry is None or self._key_expiry < expiry:
                now = self._now()
                self._key = self._service.get_user_delegation_key(
                    key_start_time=now - CLOCK_SKEW,
                    key_expiry_time=now + DELEGATION_KEY_LIFETIME,
                    timeout=bounds.BLOB_READ_TIMEOUT,
                )
                self.keys_fetched += 1
                signed = _parse_utc(self._key.signed_expiry)
                self._key_expiry = signed or now + DELEGATION_KEY_LIFETIME
            return self._key, self._key_expiry

    def sign(self, container: str, blob_name: str, expiry: datetime) -> tuple[str, datetime]:
        # A SAS signed with a key is valid only while the key is (at most 7 days away).
        expiry = min(expiry, self._now() + DELEGATION_KEY_MAX_LIFETIME - CLOCK_SKEW)
        key, key_expiry = self._key_until(expiry)
        expiry = min(expiry, key_expiry)
        token = generate_blob_sas(
            self._service.account_name or "",
            container,
            blob_name,
            user_delegation_key=key,
            permission=UPLOAD_PERMISSION,
            expiry=expiry,
            protocol=self._protocol,
        )
        return token, expiry


def _parse_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _protocol(url: str) -> str:
    # The SAS's `spr`: https only, except for a local emulator served over plain http.
    return "https,http" if urlsplit(url).scheme == "http" else "https"


class ArtifactStore:
    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        signer: Signer,
        *,
        now: Callable[[], datetime] = wall_clock,
    ) -> None:
        self._service = service
        self._container = service.get_container_client(container)
        self.container = container
        self._signer = signer
        self._now = now
        self._lock = threading.Lock()
        self._container_ready = False

    @classmethod
    def from_settings(
        cls, settings: AppSettings, credential: Callable[[], TokenCredential]
    ) -> ArtifactStore | None:
        """The store AzureWebJobsStorage gives (a connection string wins, as for the host), or
        None when artifacts are off or the storage has no Blob service this app can sign for."""
        if not settings.artifacts_enabled:
            return None
        container = settings.artifacts_container
        if settings.storage_connection is not None:
            try:
                service = BlobServiceClient.from_connection_string(
                    settings.storage_connection.get_secret_value(), **client_options()
                )
            except ValueError:
                log.warning("artifacts are off: AzureWebJobsStorage names no Blob service")
                return None
            key = getattr(service.credential, "account_key", None)
            if not key or not service.account_name:
                log.warning("artifacts are off: AzureWebJobsStorage has no account key to sign")
                return None
            signer: Signer = AccountKeySigner(
                service.account_name, key, protocol=_protocol(service.url)
            )
            return cls(service, container, signer)
        endpoint = settings.storage_blob_endpoint
        if endpoint is None:
            log.warning(
                "artifacts are off: set AzureWebJobsStorage__blobServiceUri or __accountName"
            )
            return None
        service = BlobServiceClient(endpoint, credential=credential(), **client_options())
        return cls(service, container, UserDelegationSigner(service, protocol=_protocol(endpoint)))

    @property
    def container_url(self) -> str:
        return str(self._container.url).rstrip("/")

    def prefix_url(self, prefix: str) -> str:
        """The folder's URL, without any SAS (what the status shows)."""
        return f"{self.container_url}/{quote(prefix, safe='/~')}"

    def _ensure_container(self) -> None:
        with self._lock:
            if self._container_ready:
                return
            # Created on first use; one that exists already is fine (another instance made it).
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container(timeout=bounds.BLOB_READ_TIMEOUT)
            self._container_ready = True

    def upload_urls(self, prefix: str, paths: list[str], valid_for: timedelta) -> UploadGrant:
        """One create+write SAS URL per path under `prefix`, valid for `valid_for` from now on
        the storage's clock (the wall clock; a host running in virtual time keeps its own)."""
        self._ensure_container()
        wanted = self._now() + valid_for
        urls: dict[str, str] = {}
        expires = wanted
        for path in paths:
            name = prefix + path
            token, expires = self._signer.sign(self.container, name, wanted)
            urls[path] = f"{self._container.get_blob_client(name).url}?{token}"
        return UploadGrant(prefix_url=self.prefix_url(prefix), urls=urls, expires_at=expires)
