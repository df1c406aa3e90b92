"""End-of-evaluation alerts: what went wrong, counted, from the evaluation's rows.

A job is classified by what its row records as typed fields (the attempt's outcome, the
sweeper's stuck flag, the job state), never by reading its free-text detail: a reworded
reason can not move a job from one alert to another.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.jobs import JobState
from domain.outcomes import TaskOutcome
from domain.policy import AttemptOutcome

Row = Mapping[str, Any]

# The most frequent reasons listed per task outcome; the rest are in the status document.
TOP_REASONS = 3


class AlertKind(StrEnum):
    JOBS_FAILED = "jobs_failed"
    JOBS_NEVER_STARTED = "jobs_never_started"
    JOBS_STUCK = "jobs_stuck"
    TIER_FAILURES = "tier_failures"
    TASKS_NOT_RUN = "tasks_not_run"
    TASKS_FAILED = "tasks_failed"
    TASKS_RERUN = "tasks_rerun"


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    count: int
    text: str


# Job alerts, in the order the summary lists them.
_JOB_ALERTS: dict[AlertKind, str] = {
    AlertKind.JOBS_FAILED: "failed",
    AlertKind.JOBS_NEVER_STARTED: "never started (start deadline hit, job cancelled)",
    AlertKind.JOBS_STUCK: "stuck mid-run (no heartbeat, cancelled by the sweeper)",
}


def job_alert_kind(job: Row) -> AlertKind | None:
    """What a job's row says went wrong with it, if anything."""
    if job.get("attempt_outcome") == AttemptOutcome.START_TIMEOUT:
        return AlertKind.JOBS_NEVER_STARTED
    if job.get("stuck"):
        return AlertKind.JOBS_STUCK
    if job["state"] == JobState.FAILED:
        return AlertKind.JOBS_FAILED
    return None


def alerts(jobs: Sequence[Row], breaker: Mapping[str, int], tasks: Sequence[Row]) -> list[Alert]:
    """Jobs that failed, never started or got stuck; each tier's failures in the evaluation;
    the commonest reasons tasks were not run or failed; tasks that needed a re-run."""
    out: list[Alert] = []
    by_kind = Counter(kind for j in jobs if (kind := job_alert_kind(j)) is not None)
    for kind, what in _JOB_ALERTS.items():
        if by_kind[kind]:
            out.append(Alert(kind, by_kind[kind], f"{by_kind[kind]} job(s) {what}"))
    for tier, n in sorted(breaker.items()):
        out.append(
            Alert(AlertKind.TIER_FAILURES, n, f"tier {tier}: {n} failure(s) in this evaluation")
        )
    for outcome, kind in (
        (TaskOutcome.NOT_RUN, AlertKind.TASKS_NOT_RUN),
        (TaskOutcome.FAILED, AlertKind.TASKS_FAILED),
    ):
        reasons = Counter(t.get("reason", "") for t in tasks if t.get("outcome") == outcome)
        for reason, n in reasons.most_common(TOP_REASONS):
            out.append(Alert(kind, n, f"{n} task(s) {outcome.replace('_', ' ')}: {reason}"))
    rerun = sum(
        1 for t in tasks if t.get("failed_in") and t.get("outcome") == TaskOutcome.COMPLETED
    )
    if rerun:
        out.append(
            Alert(
                AlertKind.TASKS_RERUN,
                rerun,
                f"{rerun} task(s) completed on a re-run after a failed run",
            )
        )
    return out
