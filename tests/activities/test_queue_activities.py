"""The attempt activities' queue variants (worker slots), against a fresh table on Azurite:
prepare/finish answer the evaluation's pending tasks in queue order, submit_job registers a
queue job (flag, tail-copy factor, expected share) without marking tasks running and reserves
the expected share's cost, the job's environment says "ask for tasks", a slot's close closes
no task, and finalize records the slots' reason with every task left."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from azure.data.tables import TableClient, TableServiceClient

from activities import attempts, evaluations
from adapters import runtime
from adapters.settings import AppSettings
from adapters.state.table_store import StateStore
from domain.contracts import (
    CloseShardInput,
    FinalizeEvaluationInput,
    FinishAttemptInput,
    PrepareAttemptInput,
    ShardState,
    SubmitJobInput,
    SubmitStatus,
)
from domain.jobs import JobSpec, SubmitResult, Tier
from domain.naming import job_name
from domain.policy import AttemptOutcome
from domain.slots import queue_job_estimate_usd

pytestmark = pytest.mark.azurite

prepare_attempt = attempts.prepare_attempt.build().get_user_function()
submit_job = attempts.submit_job.build().get_user_function()
finish_attempt = attempts.finish_attempt.build().get_user_function()
close_shard = attempts.close_shard.build().get_user_function()
finalize_evaluation = evaluations.finalize_evaluation.build().get_user_function()

EID = "a1b2c3d4e5f6"
NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
TIMEOUT = 4 * 3600
VM = "Standard_D4s_v5"
# Expected minutes (domain.planning): vs_code 9.5, chrome 7.5, notepad 5.
TASKS = [("a-notepad", "notepad"), ("b-chrome", "chrome"), ("c-code", "vs_code")]


class RecordingBackend:
    def __init__(self) -> None:
        self.specs: list[JobSpec] = []
        self.cancelled: list[str] = []

    def submit(self, spec: JobSpec) -> SubmitResult:
        self.specs.append(spec)
        return SubmitResult(job_name=spec.job_name, backend_job_id="id-1", created=True)

    def cancel(self, name: str) -> None:
        self.cancelled.append(name)

    def end_evaluation(self, evaluation_id: str) -> None:
        return None


@pytest.fixture
def store(azurite_connection_string: str) -> Iterator[StateStore]:
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    name = f"t{uuid.uuid4().hex[:20]}"
    client = service.create_table(name)
    try:
        yield StateStore(cast(TableClient, client))
    finally:
        service.delete_table(name)
        client.close()
        service.close()


@pytest.fixture
def backend(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> RecordingBackend:
    recording = RecordingBackend()
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HEARTBEAT_SECRET": "s" * 32}
    )
    services = runtime.Services(settings=settings, store=store)
    services._backends.update({tier: recording for tier in Tier})  # type: ignore[arg-type]
    monkeypatch.setattr(runtime, "services", lambda: services)
    monkeypatch.setattr(runtime, "now", lambda: NOW)
    store.create_evaluation(
        {
            "evaluation_id": EID,
            "created_at": NOW.isoformat(),
            "state": "running",
            "distribution": "queue",
            "shard_count": 2,
            "vm_size": VM,
            "spot": False,
            "task_count": 3,
            "workers": 2,
            "tiers": "azure_ml",
            "spent_usd": 0.0,
            "reserved_usd": 0.0,
        },
        [{"shard_index": i, "task_count": 2, "status": "waiting", "attempt": 0} for i in (0, 1)],
        [{"task_id": t, "domain": d, "outcome": "pending"} for t, d in TASKS],
    )
    return recording


def _call(fn: Any, model: Any) -> dict[str, Any]:
    return cast(dict[str, Any], fn(json.loads(json.dumps(model.to_json()))))


def _submit(slot: int = 1, attempt: int = 1) -> dict[str, Any]:
    return _call(
        submit_job,
        SubmitJobInput(
            vm_size=VM,
            image="winarena:latest",
            job_timeout_seconds=TIMEOUT,
            evaluation_id=EID,
            shard_index=slot,
            attempt=attempt,
            tier=Tier.AZURE_ML,
            job_name=job_name(EID, slot, attempt),
            task_ids=[],
            instance_id=f"{EID}:w{slot}",
            queue=True,
            expected_tasks=2,
            tail_copy_factor=1.5,
        ),
    )


def _finish(slot: int = 1, attempt: int = 1, **extra: Any) -> ShardState:
    request = FinishAttemptInput(
        evaluation_id=EID,
        shard_index=slot,
        task_ids=[],
        attempt=attempt,
        tier=Tier.AZURE_ML,
        job_name=job_name(EID, slot, attempt),
        submitted=True,
        outcome=extra.pop("outcome", AttemptOutcome.COMPLETED),
        reason=extra.pop("reason", ""),
        queue=True,
    )
    return ShardState.from_json(_call(finish_attempt, request))


def test_prepare_answers_the_pending_tasks_longest_first(
    store: StateStore, backend: RecordingBackend
) -> None:
    request = PrepareAttemptInput(evaluation_id=EID, shard_index=0, task_ids=[], queue=True)
    state = ShardState.from_json(_call(prepare_attempt, request))
    assert state.remaining == ["c-code", "b-chrome", "a-notepad"]
    store.close_tasks(EID, ["c-code"], outcome="completed", reason="", at=NOW)
    state = ShardState.from_json(_call(prepare_attempt, request))
    assert state.remaining == ["b-chrome", "a-notepad"]


def test_submit_registers_a_queue_job_and_marks_no_task_running(
    store: StateStore, backend: RecordingBackend
) -> None:
    assert _submit()["status"] == SubmitStatus.SUBMITTED.value
    job = store.get_job(EID, job_name(EID, 1, 1))
    assert job is not None
    assert job["queue"] is True
    assert job["tail_copy_factor"] == 1.5
    assert job["expected_tasks"] == 2 and job["task_count"] == 2
    # The expected share at the pending tasks' average expected minutes (9.5+7.5+5)/3.
    expected = queue_job_estimate_usd([5.0, 7.5, 9.5], 2, VM, False)
    assert job["reserved_usd"] == pytest.approx(expected)
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    assert {t["outcome"] for t in rows["tasks"]} == {"pending"}
    slot_row = next(s for s in rows["shards"] if s["shard_index"] == 1)
    assert slot_row["job_name"] == job_name(EID, 1, 1)
    spec = backend.specs[-1]
    assert spec.queue and spec.task_ids == [] and spec.expected_tasks == 2
    assert spec.environment["WAA_TASK_SOURCE"] == "queue"
    assert spec.environment["WAA_TASK_IDS"] == ""
    assert spec.environment["WAA_JOB_TIMEOUT_SECONDS"] == str(TIMEOUT)


def test_finish_answers_the_queue_after_the_jobs_claims_went_back(
    store: StateStore, backend: RecordingBackend
) -> None:
    _submit()
    name = job_name(EID, 1, 1)
    store.mark_tasks_running(EID, ["c-code"], attempt=1, job_name=name)  # as a claim would
    state = _finish(outcome=AttemptOutcome.JOB_FAILED, reason="exit 1")
    assert state.remaining == ["c-code", "b-chrome", "a-notepad"]
    assert name in backend.cancelled


def test_a_task_three_jobs_died_under_is_not_run_with_the_last_jobs_reason(
    store: StateStore, backend: RecordingBackend
) -> None:
    for attempt in (1, 2, 3):
        _submit(attempt=attempt)
        name = job_name(EID, 1, attempt)
        claim = store.claim(EID, name, attempt=attempt, now=NOW, tail_copy_factor=0.0)
        assert claim.row is not None and claim.row["task_id"] == "c-code"
        state = _finish(attempt=attempt, outcome=AttemptOutcome.STUCK, reason=f"hung {attempt}")
    assert state.remaining == ["b-chrome", "a-notepad"]
    row = store.get_task(EID, "c-code")
    assert row is not None and row["outcome"] == "not_run"
    assert row["reason"] == "not run: 3 jobs ended while running it (last: hung 3)"


def test_a_completed_queue_job_is_stopped_and_the_slot_sees_an_empty_queue(
    store: StateStore, backend: RecordingBackend
) -> None:
    _submit()
    store.close_tasks(EID, [t for t, _ in TASKS], outcome="completed", reason="", at=NOW)
    state = _finish()
    assert state.remaining == []
    # A finished runner's container may still be exiting: cancelled (a no-op if it ended).
    assert backend.cancelled == [job_name(EID, 1, 1)]


def test_a_slots_close_closes_no_task_and_finalize_records_the_slots_reason(
    store: StateStore, backend: RecordingBackend
) -> None:
    store.close_tasks(EID, ["c-code"], outcome="completed", reason="", at=NOW)
    reason = "attempts exhausted: 6 attempt(s)"
    summary = _call(
        close_shard,
        CloseShardInput(
            evaluation_id=EID, shard_index=1, task_ids=[], reason=reason, attempts=6, queue=True
        ),
    )
    assert summary["not_run"] == 0
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    assert sorted(t["outcome"] for t in rows["tasks"]) == ["completed", "pending", "pending"]
    slot_row = next(s for s in rows["shards"] if s["shard_index"] == 1)
    assert slot_row["status"] == "done" and slot_row["reason"] == reason

    _call(finalize_evaluation, FinalizeEvaluationInput(evaluation_id=EID, not_run_reason=reason))
    rows = store.get_evaluation_rows(EID)
    assert rows is not None
    left = [t for t in rows["tasks"] if t["task_id"] != "c-code"]
    assert {t["outcome"] for t in left} == {"not_run"}
    assert {t.get("reason") for t in left} == {reason}
