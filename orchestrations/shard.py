"""The shard orchestration: run one shard's tasks to a recorded outcome, whatever fails.

Per attempt (the README's sequence diagram, one named step each): decide (domain policy: which
tier, after how long, or give up), back off with a durable timer, make the tier's capacity
usable the first time the shard uses it (an activity starts a cluster or pool and returns; the
orchestration polls its status between durable timers, so no activity waits minutes for it),
submit through an activity with a retry policy for transient errors, await the container's
start (the started event raced against a durable-timer deadline), await the job's end (the
ended event raced against the run deadline), finish the attempt (cancel the job: a timer firing
stops nothing by itself; record why it ended). Then the next attempt resubmits only the tasks
without a result, failing over Azure ML -> Batch -> VM as the policy decides; at the end, close
the shard.

Replay rules: no I/O, no environment, no wall clock, no randomness here. Time is
`context.current_utc_datetime`; configuration arrives in the input. Activities and events speak
the models of `domain.contracts`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from domain import bounds, names
from domain.contracts import (
    CapacityInput,
    CapacityResult,
    CapacityStatus,
    CloseShardInput,
    FinishAttemptInput,
    JobSnapshot,
    PrepareAttemptInput,
    ShardInput,
    ShardState,
    ShardSummary,
    SubmitJobInput,
    SubmitJobResult,
    SubmitStatus,
    WorkerInput,
)
from domain.jobs import FailureKind, Tier
from domain.naming import job_name
from domain.outcomes import ATTEMPTS_EXHAUSTED, CANCELLED_BY_USER, first_line
from domain.policy import (
    AttemptOutcome,
    AttemptRecord,
    BreakerState,
    Decision,
    PolicyConfig,
    next_step,
)
from domain.slots import expected_share
from orchestrations.waits import JobWaits, sleep_unless_cancelled

bp = df.Blueprint()


def jobs_cap_reason(jobs: int) -> str:
    return f"worker slot ran its maximum of {jobs} jobs (MAX_JOBS_PER_SLOT)"


# Transient submission errors (429/503, network) are retried by the Durable retry policy;
# the attempt-level exponential backoff is built with durable timers below, since Python's
# RetryOptions only has a first interval and a maximum attempt count.
SUBMIT_RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=15_000, max_number_of_attempts=4
)

# Cancelling a failed attempt's job is retried before the next attempt may be submitted, so a
# shard never has two jobs running at once.
CANCEL_RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=30_000, max_number_of_attempts=5
)


@bp.orchestration_trigger(context_name="context", orchestration=names.SHARD_ORCHESTRATOR)
def shard(context: df.DurableOrchestrationContext) -> Generator[TaskBase, Any, dict[str, Any]]:
    """Attempts until the policy gives up, the budget or the user stops the shard; then close
    it. Returns the close summary (`ShardSummary`)."""
    run = _ShardRun(context, RunTarget.shard(ShardInput.from_json(context.get_input())))
    close_reason = yield from run.attempt_loop()
    summary = yield from run.close(close_reason)
    return summary.to_json()


@dataclass(frozen=True)
class RunTarget:
    """What an attempt loop runs: a static shard's tasks, or a worker slot of the queue.

    `index` is the shard index or the slot (job names, the `shard-NNN` row, log fields). With
    `queue`, `task_ids` is empty and the activities look at the evaluation's queue instead."""

    evaluation_id: str
    index: int
    task_ids: list[str]
    tiers: list[Tier]
    job: JobSnapshot
    policy: PolicyConfig
    queue: bool = False
    slots: int = 0
    tail_copy_factor: float = 0.0

    @classmethod
    def shard(cls, inp: ShardInput) -> RunTarget:
        return cls(inp.evaluation_id, inp.shard_index, inp.task_ids, inp.tiers, inp.job, inp.policy)

    @classmethod
    def worker(cls, inp: WorkerInput) -> RunTarget:
        return cls(
            inp.evaluation_id,
            inp.slot,
            [],
            inp.tiers,
            inp.job,
            inp.policy,
            queue=True,
            slots=inp.slots,
            tail_copy_factor=inp.tail_copy_factor,
        )

    def flags(self) -> dict[str, Any]:
        """The activity inputs' `queue` flag, only when set: a static shard's inputs stay
        exactly as recorded in older histories (contracts serialize set fields only)."""
        return {"queue": True} if self.queue else {}


class _ShardRun:
    """One shard's (or worker slot's) attempts so far and the steps of the next one. Rebuilt
    identically on every replay: everything here derives from the input and the history."""

    def __init__(self, context: df.DurableOrchestrationContext, inp: RunTarget) -> None:
        self.context = context
        self.inp = inp
        self.config: PolicyConfig = inp.policy
        self.attempts: list[AttemptRecord] = []
        # Where the attempts `next_step` weighs begin: a worker slot's job that completed is no
        # failure, so the slot's next job starts a fresh window (static shards: always 0).
        self.window_start = 0
        # Tiers whose capacity this shard has seen usable.
        self.ready_tiers: set[Tier] = set()

    def attempt_loop(self) -> Generator[TaskBase, Any, str]:
        """Attempts until the policy gives up, the budget or the user stops them; returns the
        close reason. A worker slot (queue) also stops at `bounds.MAX_JOBS_PER_SLOT` jobs, and
        a job of its that COMPLETED starts a fresh failure window (orchestrations/worker.py)."""
        state = yield from self.prepare()
        while True:
            if self.inp.queue and len(self.attempts) >= bounds.MAX_JOBS_PER_SLOT:
                return jobs_cap_reason(len(self.attempts))
            decision = self.decide(state)
            backed_off = yield from self.back_off(decision, state)
            if backed_off is None:
                return CANCELLED_BY_USER
            decision, state = backed_off
            if decision.action == "give_up":
                return decision.reason or ATTEMPTS_EXHAUSTED
            assert decision.tier is not None
            tier = decision.tier

            capacity = yield from self.ensure_capacity(tier)
            if capacity is None:
                return CANCELLED_BY_USER
            submitted = yield from self.submit(tier, state.remaining, capacity)
            if submitted.status is SubmitStatus.BUDGET:
                return submitted.reason or ATTEMPTS_EXHAUSTED
            ended = yield from self.await_job(tier, submitted)
            state = yield from self.finish(
                ended, submitted=submitted.status is SubmitStatus.SUBMITTED
            )
            if ended.outcome is AttemptOutcome.CANCELLED:
                return CANCELLED_BY_USER
            if self.inp.queue and ended.outcome is AttemptOutcome.COMPLETED:
                self.window_start = len(self.attempts)

    @property
    def next_attempt(self) -> int:
        return len(self.attempts) + 1

    def show(self, phase: str, tier: Tier | None, attempt: int | None = None) -> None:
        self.context.set_custom_status(
            {
                "shard": self.inp.index,
                "attempt": self.next_attempt if attempt is None else attempt,
                "tier": tier.value if tier is not None else None,
                "phase": phase,
            }
        )

    # --- decide -----------------------------------------------------------------------------
    def prepare(self) -> Generator[TaskBase, Any, ShardState]:
        request = PrepareAttemptInput(
            evaluation_id=self.inp.evaluation_id,
            shard_index=self.inp.index,
            task_ids=self.inp.task_ids,
            **self.inp.flags(),
        )
        answer = yield self.context.call_activity(names.PREPARE_ATTEMPT, request.to_json())
        return ShardState.from_json(answer)

    def decide(self, state: ShardState) -> Decision:
        if state.cancel_requested:
            return Decision(
                action="give_up", tier=None, delay_seconds=0.0, reason=CANCELLED_BY_USER
            )
        return next_step(
            self.config,
            attempts=self.attempts[self.window_start :],
            tiers=self.inp.tiers,
            breaker=_breaker(state),
            remaining_tasks=len(state.remaining),
            evaluation_id=self.inp.evaluation_id,
            shard_index=self.inp.index,
        )

    # --- back off ---------------------------------------------------------------------------
    def back_off(
        self, decision: Decision, state: ShardState
    ) -> Generator[TaskBase, Any, tuple[Decision, ShardState] | None]:
        """Sleep the delay the decision asks for (None: the user cancelled meanwhile).

        Other shards kept failing while this one backed off: the breaker may have opened for
        the tier chosen before the sleep. Decide again on fresh state rather than send the
        attempt to a tier the evaluation now avoids; a new tier that wants its own backoff is
        slept for first."""
        while decision.action == "submit" and decision.delay_seconds > 0:
            assert decision.tier is not None
            self.show("backing_off", decision.tier)
            if (yield from sleep_unless_cancelled(self.context, decision.delay_seconds)):
                return None
            state = yield from self.prepare()
            # A half-open probe goes whatever the breaker says (that is its point).
            still_wanted = (
                state.remaining
                and not state.cancel_requested
                and (
                    decision.probe
                    or not _breaker(state).is_open(decision.tier, self.config.breaker_threshold)
                )
            )
            if still_wanted:
                break
            decision = self.decide(state)
        return decision, state

    # --- capacity ---------------------------------------------------------------------------
    def ensure_capacity(self, tier: Tier) -> Generator[TaskBase, Any, CapacityResult | None]:
        """Make the tier's capacity usable, the first time this shard uses the tier: one
        activity starts or checks it and returns at once; while it is pending, a cheap status
        activity every CAPACITY_POLL_SECONDS (a durable timer in between, raced against the
        user's cancel), until CAPACITY_DEADLINE_SECONDS. None: the user cancelled."""
        if tier in self.ready_tiers:
            return CapacityResult(status=CapacityStatus.READY)
        self.show("waiting_for_capacity", tier)
        capacity = yield from self._await_capacity(tier)
        if capacity is not None and capacity.status is CapacityStatus.READY:
            self.ready_tiers.add(tier)
        return capacity

    def _await_capacity(self, tier: Tier) -> Generator[TaskBase, Any, CapacityResult | None]:
        context = self.context
        # The snapshot is forwarded with the keys it was recorded with (see contracts).
        request = CapacityInput.from_json(
            {
                **self.inp.job.to_json(),
                "evaluation_id": self.inp.evaluation_id,
                "shard_index": self.inp.index,
                "tier": tier,
            }
        ).to_json()
        try:
            answer = CapacityResult.from_json(
                (
                    yield context.call_activity_with_retry(
                        names.ENSURE_CAPACITY, SUBMIT_RETRY, request
                    )
                )
            )
        except Exception as err:  # the retry policy gave up on a transient error
            return CapacityResult(
                status=CapacityStatus.FAILED,
                reason=f"capacity check failed: {first_line(err)}",
                failure_kind=FailureKind.TRANSIENT,
            )
        deadline = context.current_utc_datetime + timedelta(
            seconds=bounds.CAPACITY_DEADLINE_SECONDS
        )
        while answer.status is CapacityStatus.PENDING:
            left = (deadline - context.current_utc_datetime).total_seconds()
            if left <= 0:
                minutes = bounds.CAPACITY_DEADLINE_SECONDS / 60
                return CapacityResult(
                    status=CapacityStatus.FAILED,
                    reason=f"{tier.value} capacity not usable within {minutes:g} min"
                    + (f" ({answer.reason})" if answer.reason else ""),
                    failure_kind=FailureKind.PERMANENT_FOR_TIER,
                )
            if (
                yield from sleep_unless_cancelled(
                    self.context, min(bounds.CAPACITY_POLL_SECONDS, left)
                )
            ):
                return None
            try:
                answer = CapacityResult.from_json(
                    (yield context.call_activity(names.CAPACITY_STATUS, request))
                )
            except Exception as err:  # an unexpected failure: look again at the next poll
                answer = CapacityResult(status=CapacityStatus.PENDING, reason=first_line(err))
        return answer

    # --- submit -----------------------------------------------------------------------------
    def submit(
        self, tier: Tier, task_ids: list[str], capacity: CapacityResult
    ) -> Generator[TaskBase, Any, SubmitJobResult]:
        """Submit the attempt's job, unless the tier's capacity is not usable: then the attempt
        ends before any job, with the capacity's reason."""
        self.show("submitting", tier)
        if capacity.status is not CapacityStatus.READY:
            return SubmitJobResult(
                status=SubmitStatus.FAILED,
                reason=capacity.reason,
                failure_kind=capacity.failure_kind,
            )
        attempt = self.next_attempt
        request = SubmitJobInput.from_json(
            {
                **self.inp.job.to_json(),
                "evaluation_id": self.inp.evaluation_id,
                "shard_index": self.inp.index,
                "attempt": attempt,
                "tier": tier,
                "job_name": job_name(self.inp.evaluation_id, self.inp.index, attempt),
                "task_ids": task_ids,
                "instance_id": self.context.instance_id,
                "failover": bool(self.attempts) and self.attempts[-1].tier is not tier,
                **self._queue_share(task_ids),
            }
        )
        try:
            answer = yield self.context.call_activity_with_retry(
                names.SUBMIT_JOB, SUBMIT_RETRY, request.to_json()
            )
        except Exception as err:  # the retry policy gave up on a transient error
            return SubmitJobResult(
                status=SubmitStatus.FAILED,
                reason=f"submission failed: {first_line(err)}",
                failure_kind=FailureKind.TRANSIENT,
            )
        return SubmitJobResult.from_json(answer)

    # --- await start, await end -------------------------------------------------------------
    def await_job(
        self, tier: Tier, submitted: SubmitJobResult
    ) -> Generator[TaskBase, Any, AttemptRecord]:
        """How the attempt ended: its job started within the start deadline, then ended within
        the run deadline (which counts from the submission); or it never had a job."""
        if submitted.status is not SubmitStatus.SUBMITTED:
            return self._not_submitted(tier, submitted)
        self.show("waiting_for_container", tier)
        waits = JobWaits.open(self.context, self.config, self.next_attempt)
        winner = yield from waits.await_start()
        if winner is waits.started:
            winner = yield from waits.await_end()
        outcome, reason, kind = waits.verdict(winner)
        return AttemptRecord(
            attempt=self.next_attempt, tier=tier, outcome=outcome, reason=reason, failure_kind=kind
        )

    def _not_submitted(self, tier: Tier, answer: SubmitJobResult) -> AttemptRecord:
        """The attempt ended without a job: refused, or the tier's capacity not usable."""
        return AttemptRecord(
            attempt=self.next_attempt,
            tier=tier,
            outcome=AttemptOutcome.SUBMIT_FAILED,
            reason=answer.reason,
            failure_kind=answer.failure_kind,
        )

    # --- finish, close ----------------------------------------------------------------------
    def finish(
        self, ended: AttemptRecord, *, submitted: bool
    ) -> Generator[TaskBase, Any, ShardState]:
        self.attempts.append(ended)
        request = FinishAttemptInput(
            evaluation_id=self.inp.evaluation_id,
            shard_index=self.inp.index,
            task_ids=self.inp.task_ids,
            attempt=ended.attempt,
            tier=ended.tier,
            job_name=job_name(self.inp.evaluation_id, self.inp.index, ended.attempt),
            submitted=submitted,
            outcome=ended.outcome,
            reason=ended.reason,
            failure_kind=ended.failure_kind,
            **self.inp.flags(),
        )
        try:
            answer = yield self.context.call_activity_with_retry(
                names.FINISH_ATTEMPT, CANCEL_RETRY, request.to_json()
            )
        except Exception:
            # The backend kept refusing the cancel: record it as pending for the sweeper to
            # retry, so the job is stopped even though this shard moves on.
            best_effort = request.model_copy(update={"cancel_best_effort": True})
            answer = yield self.context.call_activity(names.FINISH_ATTEMPT, best_effort.to_json())
        return ShardState.from_json(answer)

    def _queue_share(self, pending: list[str]) -> dict[str, Any]:
        """A queue job's submit fields: no task ids, its expected share of the pending tasks."""
        if not self.inp.queue:
            return {}
        return {
            "task_ids": [],
            "queue": True,
            "expected_tasks": expected_share(len(pending), self.inp.slots),
            "tail_copy_factor": self.inp.tail_copy_factor,
        }

    def close(self, reason: str) -> Generator[TaskBase, Any, ShardSummary]:
        self.show("closing", None, attempt=len(self.attempts))
        request = CloseShardInput(
            evaluation_id=self.inp.evaluation_id,
            shard_index=self.inp.index,
            task_ids=self.inp.task_ids,
            reason=reason,
            attempts=len(self.attempts),
            **self.inp.flags(),
        )
        answer = yield self.context.call_activity(names.CLOSE_SHARD, request.to_json())
        return ShardSummary.from_json(answer)


def _breaker(state: ShardState) -> BreakerState:
    return BreakerState(failures=dict(state.breaker))
