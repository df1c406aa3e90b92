"""The shard orchestration: run one shard's tasks to a recorded outcome, whatever fails.

Per attempt: pick a tier (domain policy); the first time the shard uses a tier, make sure its
capacity is usable (an activity starts a cluster or pool and returns; the orchestration polls
its status between durable timers, so no activity waits minutes for it); submit through an
activity with a retry policy for
transient errors, race the container-started event against a durable-timer deadline, then race
job-ended against the run deadline. On failure: cancel the job (a timer firing stops nothing by
itself), back off with a durable timer, and resubmit only the tasks without a result, failing
over Azure ML -> Batch -> VM as the policy decides.

Replay rules: no I/O, no environment, no wall clock, no randomness here. Time is
`context.current_utc_datetime`; configuration arrives in the input.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from domain import bounds, names
from domain.jobs import FailureKind, Tier
from domain.naming import job_name
from domain.outcomes import CANCELLED_BY_USER, first_line
from domain.policy import (
    AttemptOutcome,
    AttemptRecord,
    BreakerState,
    Decision,
    PolicyConfig,
    next_step,
)

bp = df.Blueprint()

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

# The run deadline is the job's own cloud-side timeout plus this grace, so the orchestration
# notices a job that outlives its kill switch (an event lost, a backend that ignored it).
RUN_DEADLINE_GRACE = timedelta(minutes=15)

Orchestration = Generator[TaskBase, Any, Any]


def _status(shard: int, attempt: int, tier: str | None, phase: str) -> dict[str, Any]:
    return {"shard": shard, "attempt": attempt, "tier": tier, "phase": phase}


@bp.orchestration_trigger(context_name="context", orchestration=names.SHARD_ORCHESTRATOR)
def shard(context: df.DurableOrchestrationContext) -> Orchestration:
    inp: dict[str, Any] = context.get_input()
    evaluation_id: str = inp["evaluation_id"]
    index: int = inp["shard_index"]
    task_ids: list[str] = inp["task_ids"]
    tiers = [Tier(t) for t in inp["tiers"]]
    config = PolicyConfig.model_validate(inp["policy"])
    attempts: list[AttemptRecord] = []
    close_reason = ""
    # Tiers whose capacity this shard has seen usable (rebuilt identically on every replay).
    ready_tiers: set[Tier] = set()

    prepare = {"evaluation_id": evaluation_id, "shard_index": index, "task_ids": task_ids}

    def decide(state: dict[str, Any]) -> Decision:
        if state["cancel_requested"]:
            return Decision(
                action="give_up", tier=None, delay_seconds=0.0, reason=CANCELLED_BY_USER
            )
        return next_step(
            config,
            attempts=attempts,
            tiers=tiers,
            breaker=_breaker(state),
            remaining_tasks=len(state["remaining"]),
            evaluation_id=evaluation_id,
            shard_index=index,
        )

    state = yield context.call_activity(names.PREPARE_ATTEMPT, prepare)
    while True:
        decision = decide(state)
        if decision.action == "submit" and decision.delay_seconds > 0:
            assert decision.tier is not None
            attempt = len(attempts) + 1
            context.set_custom_status(_status(index, attempt, decision.tier.value, "backing_off"))
            if (yield from _sleep_unless_cancelled(context, decision.delay_seconds)):
                close_reason = CANCELLED_BY_USER
                break
            # Other shards kept failing while this one backed off: the breaker may have opened
            # for the tier chosen before the sleep. Decide again on fresh state rather than
            # send the attempt to a tier the evaluation now avoids.
            state = yield context.call_activity(names.PREPARE_ATTEMPT, prepare)
            if _breaker(state).is_open(decision.tier, config.breaker_threshold) or not (
                state["remaining"] and not state["cancel_requested"]
            ):
                decision = decide(state)
                if decision.action == "submit" and decision.delay_seconds > 0:
                    continue  # the new tier wants its own backoff: sleep again first
        if decision.action == "give_up":
            close_reason = decision.reason
            break
        attempt = len(attempts) + 1
        tier = decision.tier
        assert tier is not None

        name = job_name(evaluation_id, index, attempt)
        capacity: dict[str, Any] = {"status": "ready"}
        if tier not in ready_tiers:
            context.set_custom_status(_status(index, attempt, tier.value, "waiting_for_capacity"))
            capacity = yield from _await_capacity(
                context,
                {
                    **inp["job"],
                    "evaluation_id": evaluation_id,
                    "shard_index": index,
                    "tier": tier.value,
                },
            )
            if capacity["status"] == "cancelled":
                close_reason = CANCELLED_BY_USER
                break
            if capacity["status"] == "ready":
                ready_tiers.add(tier)
        context.set_custom_status(_status(index, attempt, tier.value, "submitting"))
        submit_input = {
            **inp["job"],
            "evaluation_id": evaluation_id,
            "shard_index": index,
            "attempt": attempt,
            "tier": tier.value,
            "job_name": name,
            "task_ids": state["remaining"],
            "instance_id": context.instance_id,
            "failover": bool(attempts) and attempts[-1].tier is not tier,
        }
        if capacity["status"] != "ready":  # failed: this attempt ends before any job
            submitted = capacity
        else:
            try:
                submitted = yield context.call_activity_with_retry(
                    names.SUBMIT_JOB, SUBMIT_RETRY, submit_input
                )
            except Exception as err:  # the retry policy gave up on a transient error
                submitted = {
                    "status": "failed",
                    "reason": f"submission failed: {first_line(err)}",
                    "failure_kind": FailureKind.TRANSIENT.value,
                }

        if submitted["status"] == "budget":
            close_reason = submitted["reason"]
            break
        if submitted["status"] == "submitted":
            context.set_custom_status(_status(index, attempt, tier.value, "waiting_for_container"))
            outcome, reason, kind = yield from _await_job(context, config, attempt)
        else:
            outcome, reason, kind = (
                AttemptOutcome.SUBMIT_FAILED,
                submitted["reason"],
                submitted["failure_kind"],
            )

        attempts.append(
            AttemptRecord(
                attempt=attempt,
                tier=tier,
                outcome=outcome,
                reason=reason,
                failure_kind=FailureKind(kind) if kind else None,
            )
        )
        finish = {
            "evaluation_id": evaluation_id,
            "shard_index": index,
            "task_ids": task_ids,
            "attempt": attempt,
            "tier": tier.value,
            "job_name": name,
            "submitted": submitted["status"] == "submitted",
            "outcome": outcome.value,
            "reason": reason,
            "failure_kind": kind,
        }
        try:
            state = yield context.call_activity_with_retry(
                names.FINISH_ATTEMPT, CANCEL_RETRY, finish
            )
        except Exception:
            # The backend kept refusing the cancel: record it as pending for the sweeper to
            # retry, so the job is stopped even though this shard moves on.
            state = yield context.call_activity(
                names.FINISH_ATTEMPT, {**finish, "cancel_best_effort": True}
            )
        if outcome is AttemptOutcome.CANCELLED:
            close_reason = CANCELLED_BY_USER
            break

    context.set_custom_status(_status(index, len(attempts), None, "closing"))
    summary = yield context.call_activity(
        names.CLOSE_SHARD,
        {
            "evaluation_id": evaluation_id,
            "shard_index": index,
            "task_ids": task_ids,
            "reason": close_reason or "attempts exhausted",
            "attempts": len(attempts),
        },
    )
    return summary


def _breaker(state: dict[str, Any]) -> BreakerState:
    return BreakerState(failures={Tier(k): v for k, v in state["breaker"].items()})


def _sleep_unless_cancelled(
    context: df.DurableOrchestrationContext, seconds: float
) -> Generator[TaskBase, Any, bool]:
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    cancel = context.wait_for_external_event(names.CANCEL_EVENT)
    winner = yield context.task_any([timer, cancel])
    if winner is cancel:
        timer.cancel()
        return True
    return False


def _await_capacity(
    context: df.DurableOrchestrationContext, capacity_input: dict[str, Any]
) -> Generator[TaskBase, Any, dict[str, Any]]:
    """Make the tier's capacity usable: one activity starts or checks it and returns at once;
    while it is pending, a cheap status activity every CAPACITY_POLL_SECONDS (a durable timer
    in between, raced against the user's cancel), until CAPACITY_DEADLINE_SECONDS. Returns
    {"status": "ready" | "failed" | "cancelled", "reason", "failure_kind"}."""
    try:
        answer = yield context.call_activity_with_retry(
            names.ENSURE_CAPACITY, SUBMIT_RETRY, capacity_input
        )
    except Exception as err:  # the retry policy gave up on a transient error
        return {
            "status": "failed",
            "reason": f"capacity check failed: {first_line(err)}",
            "failure_kind": FailureKind.TRANSIENT.value,
        }
    deadline = context.current_utc_datetime + timedelta(seconds=bounds.CAPACITY_DEADLINE_SECONDS)
    while answer["status"] == "pending":
        left = (deadline - context.current_utc_datetime).total_seconds()
        if left <= 0:
            minutes = bounds.CAPACITY_DEADLINE_SECONDS / 60
            return {
                "status": "failed",
                "reason": f"{capacity_input['tier']} capacity not usable within {minutes:g} min"
                + (f" ({answer['reason']})" if answer.get("reason") else ""),
                "failure_kind": FailureKind.PERMANENT_FOR_TIER.value,
            }
        if (yield from _sleep_unless_cancelled(context, min(bounds.CAPACITY_POLL_SECONDS, left))):
            return {"status": "cancelled", "reason": CANCELLED_BY_USER, "failure_kind": None}
        try:
            answer = yield context.call_activity(names.CAPACITY_STATUS, capacity_input)
        except Exception as err:  # an unexpected failure: look again at the next poll
            answer = {"status": "pending", "reason": first_line(err), "failure_kind": None}
    return answer


def _await_job(
    context: df.DurableOrchestrationContext, config: PolicyConfig, attempt: int
) -> Generator[TaskBase, Any, tuple[AttemptOutcome, str, str | None]]:
    """Wait for one attempt's job: started within the start deadline, then ended within the
    run deadline. Returns (outcome, reason, failure kind)."""
    now = context.current_utc_datetime
    run_deadline = context.create_timer(
        now + timedelta(seconds=config.job_timeout_seconds) + RUN_DEADLINE_GRACE
    )
    started = context.wait_for_external_event(names.started_event(attempt))
    ended = context.wait_for_external_event(names.ended_event(attempt))
    cancel = context.wait_for_external_event(names.CANCEL_EVENT)
    waits = [started, ended, cancel, run_deadline]
    start_deadline = None
    if config.start_deadline_enabled:
        start_deadline = context.create_timer(
            now + timedelta(seconds=config.container_start_timeout_seconds)
        )
        waits.append(start_deadline)

    winner = yield context.task_any(waits)
    if (
        start_deadline is not None
        and winner is not start_deadline
        and not start_deadline.is_completed
    ):
        start_deadline.cancel()
    if winner is started:
        winner = yield context.task_any([ended, cancel, run_deadline])

    result: tuple[AttemptOutcome, str, str | None]
    if winner is ended:
        result = _ended_outcome(ended.result)
    elif winner is cancel:
        result = (AttemptOutcome.CANCELLED, CANCELLED_BY_USER, None)
    elif winner is start_deadline:
        minutes = config.container_start_timeout_seconds / 60
        result = (
            AttemptOutcome.START_TIMEOUT,
            f"container did not start within {minutes:g} min (no heartbeat)",
            FailureKind.TRANSIENT.value,
        )
    else:
        hours = config.job_timeout_seconds / 3600
        result = (
            AttemptOutcome.STUCK,
            f"job still running past its {hours:g} h deadline",
            FailureKind.TRANSIENT.value,
        )
    if not run_deadline.is_completed:
        run_deadline.cancel()
    return result


def _ended_outcome(payload: dict[str, Any]) -> tuple[AttemptOutcome, str, str | None]:
    state = payload.get("state")
    reason = payload.get("reason", "")
    kind = payload.get("failure_kind")
    if state == "completed":
        return AttemptOutcome.COMPLETED, reason or "job completed", None
    if payload.get("stuck"):
        return AttemptOutcome.STUCK, reason, kind or FailureKind.TRANSIENT.value
    return AttemptOutcome.JOB_FAILED, reason or f"job {state}", kind or FailureKind.JOB_FAILED.value
