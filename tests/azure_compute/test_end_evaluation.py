"""The evaluation's Batch job is terminated when the evaluation ends, when it is cancelled, and
by the sweeper for evaluations that ended without it: the real finalize activity and sweep
against the real azure-batch client and FakeBatch, with the state store on the in-memory table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from azure.data.tables import TableClient

from activities import evaluations
from adapters import runtime
from adapters.compute.batch import BatchBackend
from adapters.settings import AppSettings
from adapters.state.table_store import StateStore, utcnow_iso
from domain.contracts import FinalizeEvaluationInput
from domain.jobs import JobState, Tier
from domain.naming import job_name, shard_instance_id
from tests.contract.harnesses.batch import capacity_spec, job_spec, make_client
from tests.fakes.batch_server import FakeBatch
from tests.fakes.memory_tables import MemoryTableClient
from triggers import sweeper

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def world(batch: FakeBatch, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 32}
    )
    store = StateStore(cast(TableClient, MemoryTableClient()))
    svc = runtime.Services(settings=settings, store=store)
    backend = BatchBackend(make_client(batch), pool_id="waa-pool")
    backend.ensure_capacity(capacity_spec())
    # The Batch tier as runtime builds it in Azure, on the fake account.
    svc._backends[Tier.BATCH] = backend
    monkeypatch.setattr(runtime, "services", lambda: svc)
    yield SimpleNamespace(store=store, backend=backend, batch=batch)


def _evaluation(world: SimpleNamespace, eid: str, *, tier: Tier = Tier.BATCH, **extra: Any) -> str:
    """An evaluation with one shard whose attempt runs on `tier`; returns the job's name."""
    world.store.create_evaluation(
        {
            "evaluation_id": eid,
            "created_at": AT.isoformat(),
            "state": "running",
            "policy": "resilient",
            "workers": 1,
            "vm_size": "Standard_D4s_v5",
            "spot": False,
            "tiers": "azureml,batch,vm",
            "task_count": 1,
            "shard_count": 1,
            "spent_usd": 0.0,
            "reserved_usd": 0.0,
            **extra,
        },
        [{"shard_index": 0, "status": "running", "attempt": 1, "task_count": 1}],
        [{"task_id": "t1", "domain": "chrome", "shard_index": 0, "outcome": "pending"}],
    )
    name = job_name(eid, 0, 1)
    world.store.register_job(
        {
            "job_name": name,
            "evaluation_id": eid,
            "shard_index": 0,
            "attempt": 1,
            "instance_id": shard_instance_id(eid, 0),
            "tier": tier.value,
            "vm_size": "Standard_D4s_v5",
            "spot": False,
            "task_count": 1,
            "reserved_usd": 0.0,
            "submitted_at": utcnow_iso(AT),
        }
    )
    if tier is Tier.BATCH:
        world.backend.submit(job_spec(name, evaluation_id=eid))
    return name


def _finalize(eid: str) -> dict[str, Any]:
    return evaluations.finalize_evaluation(FinalizeEvaluationInput(evaluation_id=eid).to_json())


def test_the_batch_job_is_terminated_when_the_evaluation_ends(world: SimpleNamespace) -> None:
    name = _evaluation(world, "ev1")
    world.batch.start_task(name)
    _finalize("ev1")
    assert world.batch.job_terminates == ["waa-ev1"]
    assert world.batch.jobs["waa-ev1"]["state"] == "completed"
    # The task still running in it ended with it.
    assert world.backend.status(name).state is JobState.CANCELLED
    # A finalize delivered again changes nothing and raises nothing.
    _finalize("ev1")
    assert world.batch.jobs["waa-ev1"]["state"] == "completed"


def test_the_batch_job_is_terminated_when_the_evaluation_is_cancelled(
    world: SimpleNamespace,
) -> None:
    _evaluation(world, "ev2", cancel_requested=True)
    summary = _finalize("ev2")
    assert world.store.get_evaluation("ev2")["state"] == "cancelled"
    assert summary["counts"]["total"] == 1
    assert world.batch.job_terminates == ["waa-ev2"]


def test_finalize_ends_every_tier_the_evaluation_used_and_only_those(
    world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[tuple[str, str]] = []
    svc = runtime.services()
    for tier in (Tier.AZURE_ML, Tier.VM):
        svc._backends[tier] = SimpleNamespace(
            end_evaluation=lambda eid, tier=tier: ended.append((tier.value, eid))
        )
    _evaluation(world, "ev3", tier=Tier.AZURE_ML)
    _finalize("ev3")
    assert ended == [("azureml", "ev3")]
    assert world.batch.job_terminates == []


def test_a_failed_termination_is_logged_not_raised(
    world: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    world.store.remove_active(_evaluation(world, "ev4"))
    world.batch.fail_next("server_error", count=3, when=lambda r: r.path.endswith("/terminate"))
    with caplog.at_level(logging.WARNING):
        summary = _finalize("ev4")
    assert summary["counts"]["total"] == 1
    assert world.store.get_evaluation("ev4")["state"] == "completed"
    assert world.batch.jobs["waa-ev4"]["state"] == "active"
    assert "the sweeper retries" in caplog.text
    # ... and the sweeper does end it.
    report = asyncio.run(sweeper.sweep(_NoOrchestrations()))
    assert report["evaluations_ended"] == 1
    assert world.batch.jobs["waa-ev4"]["state"] == "completed"


class _NoOrchestrations:
    """The Durable client as the sweeper uses it; no job is in the active partition here."""

    async def get_status(self, instance_id: str) -> Any:
        raise AssertionError(f"no job to check, yet {instance_id} was looked up")

    async def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        raise AssertionError(f"nothing to signal, yet {name} was raised on {instance_id}")


def test_the_sweeper_ends_the_batch_jobs_of_ended_evaluations_only(
    world: SimpleNamespace,
) -> None:
    for eid in ("done1", "gone1", "live1"):
        name = _evaluation(world, eid)
        # Nothing left for the sweeper's job checks: only the evaluation-level clean-up runs.
        world.store.remove_active(name)
    world.store.update_evaluation("done1", state="completed")
    # An evaluation whose rows are gone (deleted) holds its Batch job for nobody.
    world.store._table.delete_entity("eval-gone1", "evaluation")

    report = asyncio.run(sweeper.sweep(_NoOrchestrations()))

    assert report["evaluations_ended"] == 2
    assert sorted(world.batch.job_terminates) == ["waa-done1", "waa-gone1"]
    assert world.batch.jobs["waa-live1"]["state"] == "active"
    # A second sweep finds nothing more to end.
    again = asyncio.run(sweeper.sweep(_NoOrchestrations()))
    assert again["evaluations_ended"] == 0
    assert world.backend.evaluations_holding_jobs() == ["live1"]
