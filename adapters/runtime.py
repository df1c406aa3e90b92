"""The app's shared services, built once per process from the settings, in one place.

Activities and triggers call `services()`; the local host (devhost) and tests may install a
virtual clock and reset the cache. The app itself never imports the devhost.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.credentials import TokenCredential

from adapters.alerting import Alerter, Webhook
from adapters.artifacts import ArtifactStore
from adapters.compute.base import ComputeBackend
from adapters.settings import AppSettings, load_settings
from adapters.state.table_store import StateStore
from adapters.telemetry import traced
from domain.clock import Scheduler
from domain.jobs import Tier

_clock: Scheduler | None = None


def install_clock(clock: Scheduler | None) -> None:
    """Let a host with its own (virtual) clock be the app's notion of now."""
    global _clock
    _clock = clock


def now() -> datetime:
    return _clock.now() if _clock is not None else datetime.now(UTC)


@dataclass
class Services:
    settings: AppSettings
    store: StateStore
    # None: artifacts are off (ARTIFACTS_ENABLED=false, or no Blob service to sign for).
    artifacts: ArtifactStore | None = None
    _backends: dict[Tier, ComputeBackend] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _alerter: Alerter | None = None

    def alerter(self) -> Alerter:
        with self._lock:
            if self._alerter is None:
                url = self.settings.alert_webhook_url
                self._alerter = Alerter(
                    self.store, Webhook(url.get_secret_value()) if url is not None else None
                )
            return self._alerter

    def backend(self, tier: Tier) -> ComputeBackend:
        with self._lock:
            if tier not in self._backends:
                # Every tier's submit/status/cancel calls become spans (adapters.telemetry).
                self._backends[tier] = traced(_make_backend(self.settings, tier))
            return self._backends[tier]


def _make_backend(settings: AppSettings, tier: Tier) -> ComputeBackend:
    """The one place that picks a compute implementation per environment."""
    if settings.compute_backend == "simulated":
        from adapters.compute.simulated import current_cloud

        return current_cloud().backend(tier)
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    if tier is Tier.AZURE_ML:
        from adapters.compute.azureml import AzureMLBackend

        return AzureMLBackend.from_settings(settings, credential)
    if tier is Tier.BATCH:
        from adapters.compute.batch import BatchBackend

        return BatchBackend.from_settings(settings, credential)
    from adapters.compute.ssh_vm import SshVmBackend

    return SshVmBackend.from_settings(settings)


def storage_credential(settings: AppSettings) -> TokenCredential:
    """The credential of an identity-based AzureWebJobsStorage, as the Functions host picks it:
    `__credential=managedidentity` means the app's managed identity (`__clientId` names a
    user-assigned one, else the system-assigned one); unset, the developer's own identity
    outside Azure (functions-reference, "Local development with identity-based connections"),
    which DefaultAzureCredential finds (az login, environment), with AZURE_CLIENT_ID as for
    the compute tiers."""
    if settings.storage_credential == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)


def _make_store(settings: AppSettings) -> StateStore:
    """The one place that builds the state store: AzureWebJobsStorage's connection string when
    it has one (it wins, as for the host), else its identity-based form, with no key."""
    prefix = settings.state_table_prefix
    if settings.storage_connection is not None:
        return StateStore.from_connection_string(
            settings.storage_connection.get_secret_value(), prefix
        )
    endpoint = settings.storage_table_endpoint
    assert endpoint is not None  # the settings refuse to load without one form or the other
    return StateStore.from_endpoint(endpoint, storage_credential(settings), prefix)


@functools.cache
def services() -> Services:
    settings = load_settings()
    return Services(
        settings=settings,
        store=_make_store(settings),
        artifacts=ArtifactStore.from_settings(settings, lambda: storage_credential(settings)),
    )


def reset_services() -> None:
    """Forget cached settings and clients (tests and the devhost, after changing settings)."""
    services.cache_clear()
    load_settings.cache_clear()
