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


# --- Live alerts -----------------------------------------------------------------------------
# The rules that fire while the evaluation runs (issue 11, part 3), each once per cause: the
# cause is the alert's identity in the evaluation's state (`alert_key`), so a re-delivered
# activity, a second sweep or a retried heartbeat records nothing new.

SLOW_IMAGE_PULL_SECONDS = 5 * 60
RETRY_RATE_THRESHOLD = 0.20
# Fewer jobs than this say nothing about a rate: one failed job of the first three is not
# "more than 20% of jobs needing a retry" anyone should be paged for.
RETRY_RATE_MIN_JOBS = 5
BUDGET_WARNING_SHARE = 0.80


class LiveAlertKind(StrEnum):
    START_DEADLINE = "start_deadline"
    JOB_STUCK = "job_stuck"
    RETRY_RATE = "retry_rate"
    SLOW_IMAGE_PULL = "slow_image_pull"
    BREAKER_OPEN = "breaker_open"
    BUDGET_WARNING = "budget_warning"
    BUDGET_EXHAUSTED = "budget_exhausted"
    EVALUATION_FINISHED = "evaluation_finished"
    EVALUATION_FAILED = "evaluation_failed"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class LiveAlert:
    kind: LiveAlertKind
    cause: str  # what it is about (a job, a tier, the evaluation): fires once per cause
    text: str
    action: str  # what the app did about it
    severity: Severity = Severity.WARNING


def alert_key(kind: LiveAlertKind, cause: str) -> str:
    return f"{kind.value}:{cause}"


def start_deadline_hit(job: Row, reason: str) -> LiveAlert:
    return LiveAlert(
        LiveAlertKind.START_DEADLINE,
        str(job["job_name"]),
        f"job {job['job_name']} on {job['tier']} (shard {job['shard_index']}, attempt "
        f"{job['attempt']}) never started: {reason}",
        "cancelled the job; the shard retries or fails over to the next tier",
    )


def job_stuck(job: Row, detail: str) -> LiveAlert:
    return LiveAlert(
        LiveAlertKind.JOB_STUCK,
        str(job["job_name"]),
        f"job {job['job_name']} on {job['tier']} is stuck: {detail}",
        "cancelled the job; its unfinished tasks go to the shard's next attempt",
        Severity.ERROR,
    )


_NEEDED_A_RETRY = frozenset(
    {
        AttemptOutcome.START_TIMEOUT,
        AttemptOutcome.STUCK,
        AttemptOutcome.JOB_FAILED,
        AttemptOutcome.SUBMIT_FAILED,
    }
)


def needs_retry(job: Row) -> bool:
    """A job whose attempt ended without doing its shard's work (its tasks went to a retry)."""
    outcome = job.get("attempt_outcome")
    if outcome:
        return outcome in _NEEDED_A_RETRY
    return job.get("state") == JobState.FAILED  # rows from before attempt_outcome was recorded


def retry_rate(jobs: Sequence[Row]) -> LiveAlert | None:
    """More than 20% of the evaluation's jobs so far needed a retry."""
    if len(jobs) < RETRY_RATE_MIN_JOBS:
        return None
    failed = sum(1 for j in jobs if needs_retry(j))
    share = failed / len(jobs)
    if share <= RETRY_RATE_THRESHOLD:
        return None
    return LiveAlert(
        LiveAlertKind.RETRY_RATE,
        "evaluation",
        f"{failed} of {len(jobs)} jobs ({share:.0%}) needed a retry",
        "retrying with backoff and failing over; check the tier's health and quota",
    )


def slow_image_pull(job: Row, seconds_preparing: float) -> LiveAlert | None:
    if seconds_preparing <= SLOW_IMAGE_PULL_SECONDS:
        return None
    return LiveAlert(
        LiveAlertKind.SLOW_IMAGE_PULL,
        str(job["job_name"]),
        f"job {job['job_name']} on {job['tier']} has been preparing (pulling the image) for "
        f"{seconds_preparing / 60:.1f} min",
        "waiting: the start deadline still applies",
    )


def breaker_opened(tier: str, failures: int, threshold: int) -> LiveAlert | None:
    """The tier's failures reached the breaker threshold (recorded once per tier)."""
    if failures < threshold:
        return None
    return LiveAlert(
        LiveAlertKind.BREAKER_OPEN,
        tier,
        f"tier {tier}: circuit breaker open after {failures} failures",
        f"no new attempt goes to {tier} in this evaluation; shards fail over",
        Severity.ERROR,
    )


def budget_alerts(evaluation: Row, *, refused: bool = False) -> list[LiveAlert]:
    """Budget at 80% (spent plus reserved) and budget exhausted (a job could not be afforded)."""
    budget = evaluation.get("budget_usd")
    if budget is None:
        return []
    budget = float(budget)
    committed = float(evaluation.get("spent_usd", 0.0)) + float(evaluation.get("reserved_usd", 0.0))
    out: list[LiveAlert] = []
    if committed >= BUDGET_WARNING_SHARE * budget or refused:
        out.append(
            LiveAlert(
                LiveAlertKind.BUDGET_WARNING,
                "budget",
                f"budget at {committed / budget:.0%}: ${committed:.2f} of ${budget:.2f} "
                "spent or reserved",
                "continuing; no job is submitted that would pass the budget",
            )
        )
    if refused:
        out.append(
            LiveAlert(
                LiveAlertKind.BUDGET_EXHAUSTED,
                "budget",
                f"budget exhausted: the next job would pass ${budget:.2f}",
                "stopped submitting; tasks that cannot be afforded end not_run",
                Severity.ERROR,
            )
        )
    return out


def evaluation_ended(evaluation_id: str, state: str, summary: Mapping[str, Any]) -> LiveAlert:
    counts = summary.get("counts", {})
    failed = state == "failed"
    return LiveAlert(
        LiveAlertKind.EVALUATION_FAILED if failed else LiveAlertKind.EVALUATION_FINISHED,
        "evaluation",
        f"evaluation {evaluation_id} {state}: {counts.get('completed', 0)}/"
        f"{counts.get('total', 0)} tasks completed, {counts.get('failed', 0)} failed, "
        f"{counts.get('not_run', 0)} not run, ${float(summary.get('cost_usd', 0.0)):.2f}",
        "summary written; see the results table",
        Severity.ERROR if failed else Severity.INFO,
    )
