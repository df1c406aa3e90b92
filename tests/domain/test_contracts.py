"""The contracts between orchestrations, activities and events read what histories hold: the
shapes recorded before the models existed, fields a later deploy adds, fields an older one
no longer knows (the recorded histories themselves are replayed in tests/replay)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from domain.contracts import (
    CancelRequested,
    CapacityInput,
    CapacityResult,
    CapacityStatus,
    CloseShardInput,
    EvaluationInput,
    FinalizeEvaluationInput,
    FinishAttemptInput,
    JobEnded,
    JobSnapshot,
    PrepareAttemptInput,
    ShardInput,
    ShardState,
    ShardSummary,
    SubmitJobInput,
    SubmitJobResult,
    SubmitStatus,
)
from domain.jobs import FailureKind, JobState, Tier
from domain.outcomes import CANCELLED_BY_USER
from domain.policy import AttemptOutcome, PolicyConfig
from domain.requests import parse_evaluation_request

RECORDED = json.loads((Path(__file__).parents[1] / "replay" / "histories.json").read_text())

# Activity name -> the contract of its input and of its result.
ACTIVITIES: dict[str, tuple[type[Any], type[Any] | None]] = {
    "prepare_attempt": (PrepareAttemptInput, ShardState),
    "ensure_capacity": (CapacityInput, CapacityResult),
    "capacity_status": (CapacityInput, CapacityResult),
    "submit_job": (SubmitJobInput, SubmitJobResult),
    "finish_attempt": (FinishAttemptInput, ShardState),
    "close_shard": (CloseShardInput, ShardSummary),
    "finalize_evaluation": (FinalizeEvaluationInput, None),
}


def _recorded_calls() -> list[tuple[str, Any, Any]]:
    """(activity, input, result) of every activity call in the recorded histories."""
    calls = []
    for state in RECORDED["final"].values():
        history = state["history"]
        results = {e["TaskScheduledId"]: e["Result"] for e in history if e["EventType"] == 5}
        for e in history:
            if e["EventType"] == 4 and e["EventId"] in results:
                calls.append((e["Name"], json.loads(e["Input"]), json.loads(results[e["EventId"]])))
    return calls


def test_every_recorded_activity_call_reads_into_its_contract_and_back_unchanged() -> None:
    calls = _recorded_calls()
    assert {name for name, _, _ in calls} >= set(ACTIVITIES) - {"capacity_status"}
    for name, inp, result in calls:
        input_model, result_model = ACTIVITIES[name]
        assert input_model.from_json(inp).to_json() == inp, name
        if result_model is not None:
            assert result_model.from_json(result).to_json() == result, name


def test_recorded_orchestration_inputs_and_events_read_into_their_contracts() -> None:
    for iid, state in RECORDED["final"].items():
        inp = json.loads(state["rec"]["input_json"])
        model = ShardInput if ":s" in iid else EvaluationInput
        assert model.from_json(inp).to_json() == inp
        for e in state["history"]:
            if e["EventType"] == 15 and e["Name"].startswith("job_ended"):
                payload = json.loads(e["Input"])
                assert JobEnded.from_json(payload).to_json() == payload
            if e["EventType"] == 15 and e["Name"] == "cancel":
                sent = CancelRequested(reason=CANCELLED_BY_USER).to_json()
                assert json.loads(e["Input"]) == sent


def test_fields_a_later_deploy_adds_are_ignored_by_this_one() -> None:
    newer = {
        "evaluation_id": "e1",
        "shard_index": 0,
        "task_ids": ["t1"],
        "tiers": ["azureml"],
        "policy": {**PolicyConfig().model_dump(mode="json"), "a_new_knob": 3},
        "job": {"vm_size": "Standard_D4s_v5", "gpu": True},
        "priority": "high",
    }
    shard = ShardInput.from_json(newer)
    assert shard.policy == PolicyConfig()
    assert "priority" not in shard.to_json() and "gpu" not in shard.to_json()["job"]


def test_a_snapshot_is_forwarded_with_the_keys_it_was_recorded_with() -> None:
    """A snapshot recorded before a field existed keeps its keys; the receiver's default
    applies to the missing one."""
    old = {"vm_size": "Standard_D4s_v5", "image": "winarena:latest"}
    snapshot = JobSnapshot.from_json(old)
    assert snapshot.to_json() == old
    assert snapshot.task_retries == PolicyConfig().task_retries
    assert snapshot.stuck_detection is True
    request = CapacityInput.from_json(
        {**snapshot.to_json(), "evaluation_id": "e1", "shard_index": 2, "tier": Tier.BATCH}
    )
    assert request.to_json() == {**old, "evaluation_id": "e1", "shard_index": 2, "tier": "batch"}
    assert request.workers == 10 and request.spot is False


def test_the_job_snapshot_of_a_request_carries_every_key_and_the_policy_travels_whole() -> None:
    req = parse_evaluation_request(
        json.dumps({"task_set": "waa-smoke", "heartbeat_timeout_minutes": 5}).encode(), 20
    )
    policy = PolicyConfig.for_request(req)
    job = JobSnapshot.for_request(req, policy, image="img", workers=3)
    assert set(job.to_json()) == set(JobSnapshot.model_fields)
    assert job.heartbeat_timeout_seconds == 300
    evaluation = EvaluationInput(
        evaluation_id="e1", shards=[], tiers=list(req.tiers), policy=policy, job=job
    ).to_json()
    # for_request sets a few fields; the rest are defaults and must travel all the same.
    assert evaluation["policy"] == policy.model_dump(mode="json")


def test_optional_flags_are_absent_unless_raised() -> None:
    finish = FinishAttemptInput(
        evaluation_id="e1",
        shard_index=0,
        task_ids=["t1"],
        attempt=1,
        tier=Tier.AZURE_ML,
        job_name="waa-e1-s0-a1",
        submitted=True,
        outcome=AttemptOutcome.START_TIMEOUT,
        reason="container did not start within 10 min (no heartbeat)",
        failure_kind=FailureKind.TRANSIENT,
    )
    assert "cancel_best_effort" not in finish.to_json()
    best_effort = finish.model_copy(update={"cancel_best_effort": True}).to_json()
    assert best_effort == {**finish.to_json(), "cancel_best_effort": True}
    assert FinishAttemptInput.from_json(best_effort).cancel_best_effort is True


def test_rows_without_a_reason_or_with_an_empty_failure_kind_read_as_none() -> None:
    ended = JobEnded.from_json({"state": "failed", "reason": None, "failure_kind": ""})
    assert ended == JobEnded(state=JobState.FAILED)
    assert SubmitJobResult.from_json({"status": "submitted"}).reason == ""


def test_values_outside_the_enums_are_refused() -> None:
    with pytest.raises(ValidationError):
        SubmitJobResult.from_json({"status": "queued"})
    with pytest.raises(ValidationError):
        CapacityResult.from_json({"status": "ready", "failure_kind": "sometimes"})
    assert CapacityResult.from_json({"status": "pending"}).status is CapacityStatus.PENDING
    assert SubmitJobResult.from_json({"status": "budget"}).status is SubmitStatus.BUDGET


def test_the_breaker_reads_tier_keys() -> None:
    state = ShardState.from_json({"remaining": [], "breaker": {"batch": 2}})
    assert state.breaker == {Tier.BATCH: 2}
    assert state.to_json() == {"remaining": [], "breaker": {"batch": 2}}
