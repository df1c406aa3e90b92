"""The worker orchestration (queue distribution) against a scripted queue and cloud, on the
fake Durable context: it ends when the queue is empty, a failing job is followed by the next
while the queue has work, a completed job resets the failure window, the jobs-per-slot cap."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from domain import bounds, names
from domain.contracts import (
    CapacityResult,
    CapacityStatus,
    CloseShardInput,
    ContainerStarted,
    FinishAttemptInput,
    JobEnded,
    JobSnapshot,
    PrepareAttemptInput,
    ShardState,
    ShardSummary,
    SubmitJobInput,
    SubmitJobResult,
    SubmitStatus,
    WorkerInput,
)
from domain.jobs import JobState, Tier
from domain.naming import job_name
from domain.outcomes import ATTEMPTS_EXHAUSTED, CANCELLED_BY_USER
from domain.policy import PolicyConfig
from orchestrations.shard import jobs_cap_reason
from orchestrations.worker import worker as worker_function
from tests.orchestrations.fake_durable import FakeDurableContext

worker = worker_function.build().get_user_function().orchestrator_function
EVALUATION = "a1b2c3d4e5f6"
SLOT = 2
MIN = timedelta(minutes=1)
JOB = JobSnapshot(image="winarena:latest", vm_size="Standard_D4s_v5")

DRAINS_ONE = "drains_one"  # runs one task of the queue, then exits (completed)
DRAINS_ALL = "drains_all"
FAILS = "fails"  # starts, runs nothing, exits 1


@dataclass
class Queue:
    ctx: FakeDurableContext
    script: list[str]
    pending: list[str] = field(default_factory=lambda: ["t1", "t2", "t3"])
    cancel_after_finishes: int | None = None
    prepares: int = 0
    finishes: list[FinishAttemptInput] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        cancel = self.cancel_after_finishes is not None and (
            len(self.finishes) >= self.cancel_after_finishes
        )
        return ShardState(remaining=list(self.pending), cancel_requested=cancel).to_json()

    def prepare_attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = PrepareAttemptInput.from_json(payload)
        assert request.queue and request.task_ids == [] and request.shard_index == SLOT
        self.prepares += 1
        return self.state()

    def submit_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = SubmitJobInput.from_json(payload)
        assert request.queue and request.task_ids == []
        assert request.job_name == job_name(EVALUATION, SLOT, request.attempt)
        assert request.instance_id == f"{EVALUATION}:w{SLOT}"
        attempt = request.attempt
        behaviour = self.script[attempt - 1] if attempt <= len(self.script) else DRAINS_ONE
        started = ContainerStarted(job_name=request.job_name).to_json()
        self.ctx.raise_event(names.started_event(attempt), started, after=4 * MIN)
        if behaviour == FAILS:
            ended = JobEnded(state=JobState.FAILED, reason="exit 1")
        else:
            self.pending = [] if behaviour == DRAINS_ALL else self.pending[1:]
            ended = JobEnded(state=JobState.COMPLETED)
        self.ctx.raise_event(names.ended_event(attempt), ended.to_json(), after=20 * MIN)
        return SubmitJobResult(
            status=SubmitStatus.SUBMITTED, reason="", failure_kind=None
        ).to_json()

    def capacity(self, payload: dict[str, Any]) -> dict[str, Any]:
        return CapacityResult(status=CapacityStatus.READY).to_json()

    def finish_attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = FinishAttemptInput.from_json(payload)
        assert request.queue and request.task_ids == []
        self.finishes.append(request)
        return self.state()

    def close_shard(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = CloseShardInput.from_json(payload)
        assert request.queue and request.task_ids == []
        return ShardSummary(
            shard_index=request.shard_index,
            not_run=0,
            attempts=request.attempts,
            reason=request.reason,
        ).to_json()


def run_worker(
    script: list[str],
    *,
    policy: PolicyConfig | None = None,
    pending: list[str] | None = None,
    cancel_after_finishes: int | None = None,
) -> tuple[ShardSummary, Queue]:
    ctx = FakeDurableContext(
        WorkerInput(
            evaluation_id=EVALUATION,
            slot=SLOT,
            slots=3,
            tiers=[Tier.AZURE_ML, Tier.BATCH],
            policy=policy or PolicyConfig(),
            job=JOB,
            tail_copy_factor=1.5,
        ).to_json(),
        instance_id=f"{EVALUATION}:w{SLOT}",
    )
    queue = Queue(ctx, script, cancel_after_finishes=cancel_after_finishes)
    if pending is not None:
        queue.pending = pending
    ctx.activities = {
        names.PREPARE_ATTEMPT: queue.prepare_attempt,
        names.ENSURE_CAPACITY: queue.capacity,
        names.CAPACITY_STATUS: queue.capacity,
        names.SUBMIT_JOB: queue.submit_job,
        names.FINISH_ATTEMPT: queue.finish_attempt,
        names.CLOSE_SHARD: queue.close_shard,
    }
    return ShardSummary.from_json(ctx.run(worker)), queue


def submitted(queue: Queue) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for s in queue.ctx.calls_of(names.SUBMIT_JOB):
        seen.setdefault(s["attempt"], s)
    return list(seen.values())


def test_the_slot_ends_when_the_queue_is_empty_after_a_job() -> None:
    summary, queue = run_worker([DRAINS_ALL])
    assert summary.shard_index == SLOT
    assert summary.attempts == 1
    assert summary.reason == "no tasks remain"
    job = submitted(queue)[0]
    # Its share of the queue: ceil(3 pending / 3 slots); the tail-copy factor on the row.
    assert job["expected_tasks"] == 1 and job["tail_copy_factor"] == 1.5


def test_a_slot_with_an_empty_queue_submits_nothing() -> None:
    summary, queue = run_worker([], pending=[])
    assert summary.attempts == 0 and summary.reason == "no tasks remain"
    assert submitted(queue) == []


def test_jobs_follow_each_other_while_the_queue_has_work() -> None:
    summary, queue = run_worker([DRAINS_ONE, DRAINS_ONE, DRAINS_ONE])
    assert summary.attempts == 3 and summary.reason == "no tasks remain"
    assert [s["attempt"] for s in submitted(queue)] == [1, 2, 3]


def test_a_failing_job_is_followed_by_the_next_while_the_queue_has_work() -> None:
    summary, queue = run_worker([FAILS, DRAINS_ALL])
    assert summary.attempts == 2 and summary.reason == "no tasks remain"
    assert [f.outcome.value for f in queue.finishes] == ["job_failed", "completed"]


def test_a_completed_job_resets_the_failure_window() -> None:
    # max_attempts 2: two failures in a row end the slot, but a completed job between
    # failures is no failure, so F, C, F, C, F, C drains the queue.
    policy = PolicyConfig(max_attempts=2)
    summary, queue = run_worker(
        [FAILS, DRAINS_ONE, FAILS, DRAINS_ONE, FAILS, DRAINS_ONE], policy=policy
    )
    assert summary.attempts == 6 and summary.reason == "no tasks remain"
    # Job names keep counting over the slot's life.
    assert [s["job_name"] for s in submitted(queue)][-1] == job_name(EVALUATION, SLOT, 6)


def test_failures_in_a_row_give_up_with_the_policy_reason() -> None:
    policy = PolicyConfig(max_attempts=2)
    summary, _ = run_worker([DRAINS_ONE, FAILS, FAILS], policy=policy)
    assert summary.attempts == 3
    assert summary.reason.startswith(ATTEMPTS_EXHAUSTED)


def test_the_slot_runs_at_most_max_jobs_per_slot_jobs() -> None:
    tasks = [f"t{i}" for i in range(bounds.MAX_JOBS_PER_SLOT + 5)]
    summary, queue = run_worker([], pending=tasks)
    assert summary.attempts == bounds.MAX_JOBS_PER_SLOT
    assert summary.reason == jobs_cap_reason(bounds.MAX_JOBS_PER_SLOT)
    assert len(submitted(queue)) == bounds.MAX_JOBS_PER_SLOT


def test_a_cancel_ends_the_slot() -> None:
    summary, queue = run_worker([DRAINS_ONE, DRAINS_ONE], cancel_after_finishes=1)
    # finish_attempt of job 1 answers with the cancel: no second job.
    assert summary.reason == CANCELLED_BY_USER
    assert len(submitted(queue)) == 1
