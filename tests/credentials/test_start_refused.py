"""End to end on the devhost: an evaluation whose model has no credentials configured gets 400
naming the field and creates nothing (no evaluation row, no idempotency claim, no orchestration,
no job, no cost); the simulated demo's own settings carry credentials, so it starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters import runtime
from devhost.simulation import DEFAULT_MODEL_CREDENTIALS, Simulation
from devhost.store import MemoryInstanceStore

pytestmark = pytest.mark.azurite

CREDENTIAL_SETTINGS = (
    "MODEL_SECRETS_VAULT_URL",
    "OPENAI_API_KEY_SECRET",
    "AZURE_API_KEY_SECRET",
    "AZURE_ENDPOINT",
)
BODY = {"task_set": "waa-smoke", "workers": 2}


@pytest.fixture
def sim(azurite_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulation]:
    for name in CREDENTIAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    simulation = Simulation(connection_string=azurite_connection_string, profile="none").start()
    yield simulation
    simulation.stop()


def configure(monkeypatch: pytest.MonkeyPatch, **values: str | None) -> None:
    """Change the app's settings, as a new deployment of them would."""
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    runtime.reset_services()


def assert_nothing_created(sim: Simulation) -> None:
    listed = sim.http.get(f"{sim.base_url}/api/evaluations", timeout=30)
    assert listed.status_code == 200 and listed.json()["evaluations"] == []
    store = sim.host.engine.store
    assert isinstance(store, MemoryInstanceStore)
    assert store.snapshot() == {}, "an orchestration was started"
    assert runtime.services().store.active_jobs() == []


def test_the_simulation_configures_credentials_by_default(sim: Simulation) -> None:
    settings = runtime.services().settings
    assert settings.model_secrets_vault_url == DEFAULT_MODEL_CREDENTIALS["MODEL_SECRETS_VAULT_URL"]
    r = sim.start_evaluation(BODY)
    assert r.status_code == 202, r.text
    status = sim.wait(r.json()["evaluation_id"], timeout=120)
    assert {t["outcome"] for t in status["tasks"]} == {"completed"}


def test_no_credentials_at_all_is_refused_naming_model(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MODEL_SECRETS_VAULT_URL=None, OPENAI_API_KEY_SECRET=None)
    r = sim.start_evaluation({**BODY, "model": "gpt-4o", "idempotency_key": "nightly-1"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == "model"
    assert "MODEL_SECRETS_VAULT_URL" in body["error"] and "OPENAI_API_KEY_SECRET" in body["error"]
    assert_nothing_created(sim)
    # The idempotency key was not claimed: once credentials exist, the same key starts afresh.
    configure(monkeypatch, **DEFAULT_MODEL_CREDENTIALS)
    r = sim.start_evaluation({**BODY, "idempotency_key": "nightly-1"})
    assert r.status_code == 202, r.text
    assert r.json()["created"] is True


def test_a_provider_without_credentials_is_refused_naming_model_provider(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = sim.start_evaluation({**BODY, "model_provider": "azure"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == "model_provider"
    assert "AZURE_API_KEY_SECRET" in body["error"] and "AZURE_ENDPOINT" in body["error"]
    assert_nothing_created(sim)


def test_two_providers_and_none_named_is_refused_naming_model_provider(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(
        monkeypatch,
        AZURE_API_KEY_SECRET="azure-openai-api-key",
        AZURE_ENDPOINT="https://waa-openai.openai.azure.com/",
    )
    r = sim.start_evaluation(BODY)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "model_provider"
    assert_nothing_created(sim)
    # Naming one starts it.
    r = sim.start_evaluation({**BODY, "model_provider": "azure"})
    assert r.status_code == 202, r.text


def test_an_unknown_provider_is_refused_by_validation(sim: Simulation) -> None:
    r = sim.start_evaluation({**BODY, "model_provider": "anthropic"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "model_provider"
    assert_nothing_created(sim)
