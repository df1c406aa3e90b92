"""The races a shard runs on durable timers: a sleep the user's cancel cuts short, and one
attempt's job waits (its started and ended events, the cancel, the start and run deadlines).

Replay rules as in `orchestrations.shard`: tasks are created in the same order on every replay
(the SDK numbers timers as they are created), and a timer that lost its race is cancelled (a
timer left running would keep the instance alive until it fires).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from domain import names
from domain.contracts import JobEnded
from domain.jobs import FailureKind, JobState
from domain.outcomes import CANCELLED_BY_USER
from domain.policy import AttemptOutcome, PolicyConfig

# The run deadline is the job's own cloud-side timeout plus this grace, so the orchestration
# notices a job that outlives its kill switch (an event lost, a backend that ignored it).
RUN_DEADLINE_GRACE = timedelta(minutes=15)

Verdict = tuple[AttemptOutcome, str, FailureKind | None]


def sleep_unless_cancelled(
    context: df.DurableOrchestrationContext, seconds: float
) -> Generator[TaskBase, Any, bool]:
    """Sleep on a durable timer; True if the user cancelled first."""
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    cancel = context.wait_for_external_event(names.CANCEL_EVENT)
    winner = yield context.task_any([timer, cancel])
    if winner is cancel:
        timer.cancel()
        return True
    return False


@dataclass
class JobWaits:
    """One attempt's waits: its events (per-attempt names, so an older attempt's late event
    never satisfies them), the user's cancel, and the two deadlines."""

    context: df.DurableOrchestrationContext
    config: PolicyConfig
    run_deadline: TaskBase
    started: TaskBase
    ended: TaskBase
    cancel: TaskBase
    start_deadline: TaskBase | None

    @classmethod
    def open(
        cls, context: df.DurableOrchestrationContext, config: PolicyConfig, attempt: int
    ) -> JobWaits:
        # Created in this order on every replay: the SDK numbers timers as they are created.
        now = context.current_utc_datetime
        run_deadline = context.create_timer(
            now + timedelta(seconds=config.job_timeout_seconds) + RUN_DEADLINE_GRACE
        )
        started = context.wait_for_external_event(names.started_event(attempt))
        ended = context.wait_for_external_event(names.ended_event(attempt))
        cancel = context.wait_for_external_event(names.CANCEL_EVENT)
        start_deadline = None
        if config.start_deadline_enabled:
            start_deadline = context.create_timer(
                now + timedelta(seconds=config.container_start_timeout_seconds)
            )
        return cls(context, config, run_deadline, started, ended, cancel, start_deadline)

    def await_start(self) -> Generator[TaskBase, Any, TaskBase]:
        """The started event, or whatever ended the wait before it."""
        waits = [self.started, self.ended, self.cancel, self.run_deadline]
        if self.start_deadline is not None:
            waits.append(self.start_deadline)
        winner = yield self.context.task_any(waits)
        if (
            self.start_deadline is not None
            and winner is not self.start_deadline
            and not self.start_deadline.is_completed
        ):
            self.start_deadline.cancel()
        return winner

    def await_end(self) -> Generator[TaskBase, Any, TaskBase]:
        return (yield self.context.task_any([self.ended, self.cancel, self.run_deadline]))

    def verdict(self, winner: TaskBase) -> Verdict:
        config = self.config
        verdict: Verdict
        if winner is self.ended:
            verdict = ended_outcome(JobEnded.from_json(self.ended.result))
        elif winner is self.cancel:
            verdict = (AttemptOutcome.CANCELLED, CANCELLED_BY_USER, None)
        elif winner is self.start_deadline:
            minutes = config.container_start_timeout_seconds / 60
            verdict = (
                AttemptOutcome.START_TIMEOUT,
                f"container did not start within {minutes:g} min (no heartbeat)",
                FailureKind.TRANSIENT,
            )
        else:
            hours = config.job_timeout_seconds / 3600
            verdict = (
                AttemptOutcome.STUCK,
                f"job still running past its {hours:g} h deadline",
                FailureKind.TRANSIENT,
            )
        if not self.run_deadline.is_completed:
            self.run_deadline.cancel()
        return verdict


def ended_outcome(event: JobEnded) -> Verdict:
    if event.state is JobState.COMPLETED:
        return AttemptOutcome.COMPLETED, event.reason or "job completed", None
    if event.stuck:
        return AttemptOutcome.STUCK, event.reason, event.failure_kind or FailureKind.TRANSIENT
    return (
        AttemptOutcome.JOB_FAILED,
        event.reason or f"job {event.state.value}",
        event.failure_kind or FailureKind.JOB_FAILED,
    )
