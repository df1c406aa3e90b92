"""The submit_job activity builds each attempt's job with its credentials as names only: the
vault, the model key's secret name, the Azure OpenAI endpoint in the clear; and on Azure ML and
Batch with a vault, the heartbeat token written to Key Vault (the real SDK against the loopback
fake) with the job carrying the secret's name instead of the token. In-memory state store, a
recording backend, the activity's real code."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from azure.data.tables import TableClient

from activities import attempts
from adapters import runtime, secrets
from adapters.settings import AppSettings
from adapters.state.table_store import StateStore
from domain.contracts import SubmitJobInput, SubmitStatus
from domain.credentials import HEARTBEAT_SECRET_MARGIN_SECONDS, heartbeat_secret_name
from domain.jobs import JobSpec, JobState, SubmitResult, Tier
from domain.messages import heartbeat_token
from domain.naming import job_name
from tests.credentials.conftest import RecordingCredential, loopback_vault
from tests.fakes.keyvault_server import FakeKeyVault
from tests.fakes.memory_tables import MemoryTableClient

submit_job = attempts.submit_job.build().get_user_function()

EID = "a1b2c3d4e5f6"
SECRET = "s" * 32
VAULT = "https://kv-waa-test.vault.azure.net"
JOB_IDENTITY = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
TIMEOUT = 4 * 3600
BASE = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "HEARTBEAT_SECRET": SECRET,
    "MODEL_SECRETS_VAULT_URL": VAULT,
    "OPENAI_API_KEY_SECRET": "openai-api-key",
    "JOB_IDENTITY_CLIENT_ID": JOB_IDENTITY,
}
AZURE = {
    "COMPUTE_BACKEND": "azure",
    "PUBLIC_BASE_URL": "https://func-waa.azurewebsites.net",
}


class RecordingBackend:
    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.specs: list[JobSpec] = []

    def submit(self, spec: JobSpec) -> SubmitResult:
        self.specs.append(spec)
        return SubmitResult(
            job_name=spec.job_name, backend_job_id=f"id-{spec.job_name}", created=True
        )

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"submit_job called backend.{name}")


class World:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, vault: FakeKeyVault) -> None:
        self.monkeypatch = monkeypatch
        self.vault = vault
        self.credential = RecordingCredential()
        self.store = StateStore(cast(TableClient, MemoryTableClient()))
        self.backends = {tier: RecordingBackend(tier) for tier in Tier}
        self.vault_calls = 0
        monkeypatch.setattr(runtime, "now", lambda: NOW)

        def token_vault(settings: AppSettings) -> secrets.HeartbeatTokenVault:
            assert settings.model_secrets_vault_url == VAULT
            self.vault_calls += 1
            return loopback_vault(vault, self.credential)

        monkeypatch.setattr(secrets, "token_vault", token_vault)
        self.configure()

    def configure(self, **overrides: str | None) -> None:
        values = {**BASE, **AZURE, **overrides}
        settings = AppSettings.model_validate({k: v for k, v in values.items() if v is not None})
        services = runtime.Services(settings=settings, store=self.store)
        services._backends.update(self.backends)  # type: ignore[arg-type]
        self.monkeypatch.setattr(runtime, "services", lambda: services)

    def submit(self, tier: Tier, *, attempt: int = 1, provider: str = "openai") -> dict[str, Any]:
        name = job_name(EID, 0, attempt)
        if self.store.get_evaluation(EID) is None:
            self.store.create_evaluation(
                {"evaluation_id": EID, "created_at": NOW.isoformat(), "state": "running"},
                [{"shard_index": 0, "task_count": 1, "status": "waiting", "attempt": 0}],
                [{"task_id": "t1", "domain": "chrome", "shard_index": 0, "outcome": "pending"}],
            )
        payload = SubmitJobInput(
            vm_size="Standard_D4s_v5",
            image="winarena:latest",
            model_provider=provider,
            job_timeout_seconds=TIMEOUT,
            evaluation_id=EID,
            shard_index=0,
            attempt=attempt,
            tier=tier,
            job_name=name,
            task_ids=["t1"],
            instance_id=f"{EID}:s0",
        ).to_json()
        return submit_job(json.loads(json.dumps(payload)))

    def spec(self, tier: Tier) -> JobSpec:
        return self.backends[tier].specs[-1]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, vault: FakeKeyVault) -> Iterator[World]:
    yield World(monkeypatch, vault)


@pytest.mark.parametrize("tier", [Tier.AZURE_ML, Tier.BATCH])
def test_a_cloud_tier_job_gets_the_token_secret_name_not_the_token(
    world: World, tier: Tier
) -> None:
    assert world.submit(tier)["status"] == SubmitStatus.SUBMITTED
    spec = world.spec(tier)
    name = job_name(EID, 0, 1)
    token = heartbeat_token(SECRET, name)
    assert spec.heartbeat_token == ""
    assert spec.heartbeat_token_secret == heartbeat_secret_name(name)
    assert spec.secrets_vault_url == VAULT
    assert spec.secret_env == {"OPENAI_API_KEY": "openai-api-key"}
    assert spec.environment["WAA_IDENTITY_CLIENT_ID"] == JOB_IDENTITY
    assert "AZURE_ENDPOINT" not in spec.environment
    assert token not in spec.model_dump_json()
    # The token is in the vault under that name, expiring after the job's own timeout.
    stored = world.vault.latest(spec.heartbeat_token_secret)
    assert stored["value"] == token
    deadline = NOW + timedelta(seconds=TIMEOUT + HEARTBEAT_SECRET_MARGIN_SECONDS)
    assert stored["attributes"]["exp"] == int(deadline.timestamp())
    assert stored["contentType"] == "text/plain"


def test_the_vm_tier_keeps_its_token_and_never_calls_key_vault(world: World) -> None:
    world.submit(Tier.VM)
    spec = world.spec(Tier.VM)
    assert spec.heartbeat_token == heartbeat_token(SECRET, job_name(EID, 0, 1))
    assert spec.heartbeat_token_secret == ""
    assert spec.secret_env == {"OPENAI_API_KEY": "openai-api-key"}
    assert world.vault_calls == 0 and world.vault.requests == []


def test_the_simulated_backend_never_calls_key_vault(world: World) -> None:
    world.configure(COMPUTE_BACKEND="simulated", PUBLIC_BASE_URL="http://127.0.0.1:7071")
    world.submit(Tier.AZURE_ML)
    spec = world.spec(Tier.AZURE_ML)
    assert spec.heartbeat_token == heartbeat_token(SECRET, job_name(EID, 0, 1))
    assert spec.heartbeat_token_secret == ""
    assert spec.secrets_vault_url == VAULT  # names only: the simulator never fetches them
    assert world.vault_calls == 0 and world.vault.requests == []


def test_azure_openai_gets_its_key_name_and_the_endpoint_in_the_clear(world: World) -> None:
    world.configure(
        OPENAI_API_KEY_SECRET=None,
        AZURE_API_KEY_SECRET="azure-openai-api-key",
        AZURE_ENDPOINT="https://waa-openai.openai.azure.com/",
    )
    world.submit(Tier.BATCH, provider="azure")
    spec = world.spec(Tier.BATCH)
    assert spec.secret_env == {"AZURE_API_KEY": "azure-openai-api-key"}
    assert spec.environment["AZURE_ENDPOINT"] == "https://waa-openai.openai.azure.com/"
    assert "OPENAI_API_KEY" not in spec.environment


def test_an_instance_from_before_providers_gets_no_model_secrets(world: World) -> None:
    world.submit(Tier.AZURE_ML, provider="")
    spec = world.spec(Tier.AZURE_ML)
    assert spec.secret_env == {}
    assert spec.heartbeat_token_secret  # the vault still holds the token


def test_a_refusing_vault_fails_the_attempt_for_the_tier_without_the_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.vault.fail_next("forbidden", when=lambda r: "authorization" in r.headers)
    result = world.submit(Tier.AZURE_ML)
    token = heartbeat_token(SECRET, job_name(EID, 0, 1))
    assert result["status"] == SubmitStatus.FAILED
    assert result["failure_kind"] == "permanent_for_tier"
    assert "Key Vault Secrets Officer" in result["reason"] and token not in result["reason"]
    assert world.backends[Tier.AZURE_ML].specs == []  # nothing submitted
    job = world.store.get_job(EID, job_name(EID, 0, 1))
    assert job is not None and job["state"] == JobState.FAILED.value
    assert token not in json.dumps(job, default=str)
    assert token not in caplog.text


def test_an_unavailable_vault_raises_for_the_retry_policy(
    world: World, sdk_sleeps: list[float]
) -> None:
    world.vault.fail_next("server_error", count=100, when=lambda r: "authorization" in r.headers)
    with pytest.raises(secrets.TransientBackendError):
        world.submit(Tier.BATCH)
    assert world.backends[Tier.BATCH].specs == []
    job = world.store.get_job(EID, job_name(EID, 0, 1))
    assert job is not None and job["state"] != JobState.FAILED.value  # retried, not failed
    # The retry writes the token and submits.
    world.vault._faults.clear()
    assert world.submit(Tier.BATCH)["status"] == SubmitStatus.SUBMITTED


def test_no_secret_in_the_logs_of_a_submit(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.submit(Tier.AZURE_ML)
    assert world.spec(Tier.AZURE_ML).heartbeat_token_secret
    assert heartbeat_token(SECRET, job_name(EID, 0, 1)) not in caplog.text
    assert SECRET not in caplog.text
