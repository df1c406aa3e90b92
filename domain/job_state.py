"""Normalization of each tier's job states into `JobState`, and the forward-only rule.

Backends report in their own words (Azure ML run statuses, Azure Batch task states and failure
codes, `docker inspect` state). Events may arrive duplicated, late or out of order, so a state
is only ever applied through `advance`: it moves forward, never back, and a terminal state is
final. The changes of a job's row (a new state, a heartbeat, the sweeper's stuck verdict, the
attempt's end) are pure functions of the row here; the state store applies them inside its
ETag read-modify-write, so a lost race re-decides on the fresh row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.clock import iso, parse_time
from domain.jobs import FailureKind, JobState
from domain.outcomes import MAX_REASON_CHARS
from domain.policy import AttemptOutcome

# Azure ML run statuses (compared case-insensitively) and why each maps where it does.
AZUREML_STATES: dict[str, JobState] = {
    # Accepted, not yet scheduled.
    "notstarted": JobState.SUBMITTED,
    # Waiting for compute capacity (cluster scale-up, quota).
    "queued": JobState.QUEUED,
    # Environment / image preparation, node setup: the container has not started.
    "preparing": JobState.PREPARING,
    "provisioning": JobState.PREPARING,
    "starting": JobState.PREPARING,
    # Azure ML says running. This is what hung jobs report for hours, so the start deadline is
    # only satisfied by the job's first heartbeat, never by this status alone.
    "running": JobState.RUNNING,
    # The job's process ended and outputs are being uploaded; not terminal yet.
    "finalizing": JobState.RUNNING,
    # Azure ML stopped receiving the run's own heartbeats: still alive as far as the service
    # knows; our stuck detection decides.
    "notresponding": JobState.RUNNING,
    # Suspended by the service; it may resume, so it counts as waiting.
    "paused": JobState.QUEUED,
    # The attempt is over as far as the control plane is concerned. The service finishes the
    # cancellation itself; the sweeper's reconciliation still sees the final "Canceled".
    "cancelrequested": JobState.CANCELLED,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
    "cancelled": JobState.CANCELLED,
    # The service does not know: lowest rank, so it never overrides anything known.
    "unknown": JobState.SUBMITTED,
}


def from_azureml(status: str) -> JobState:
    """An Azure ML run status; unrecognized statuses map to SUBMITTED, which `advance` never
    lets override a known state."""
    return AZUREML_STATES.get(status.strip().lower(), JobState.SUBMITTED)


BATCH_TASK_STATES: dict[str, JobState] = {
    "active": JobState.QUEUED,  # waiting for a node
    "preparing": JobState.PREPARING,  # job preparation task, image pull
    "running": JobState.RUNNING,
}

# Task failure codes (TaskFailureInformationCodes) that no retry on the same pool can fix: the
# image, registry or container settings are wrong, or the pool cannot run containers.
BATCH_PERMANENT_CODES: frozenset[str] = frozenset(
    code.lower()
    for code in (
        "ContainerInvalidImage",
        "ContainerInvalidRegistry",
        "ContainerInvalidSettings",
        "ContainerPoolNotSupported",
        "CommandProgramNotFound",
    )
)
# Failures of the service or the node around the task: worth retrying.
BATCH_TRANSIENT_CODES: frozenset[str] = frozenset(
    code.lower()
    for code in (
        "ContainerMiscError",
        "BlobDownloadTimedOut",
        "BlobDownloadMiscError",
        "CommandLaunchFailed",
    )
)
# Node states that mean the pool's nodes cannot run the WAA container (a failed start task is
# where nested virtualization and image prefetch are checked); permanent for the tier.
BATCH_NODE_PERMANENT_STATES: frozenset[str] = frozenset({"unusable", "starttaskfailed"})
# Node states that end a running task without it being at fault.
BATCH_NODE_TRANSIENT_STATES: frozenset[str] = frozenset({"preempted", "offline"})


def _batch_failure_kind(category: str | None, code: str | None) -> FailureKind:
    normalized = (code or "").strip().lower()
    if normalized in BATCH_PERMANENT_CODES:
        return FailureKind.PERMANENT_FOR_TIER
    if normalized in BATCH_TRANSIENT_CODES:
        return FailureKind.TRANSIENT
    if (category or "").strip().lower() == "servererror":
        return FailureKind.TRANSIENT
    # A non-zero exit ("FailureExitCode") or anything else user-side: the job itself failed.
    return FailureKind.JOB_FAILED


def from_batch_task(
    state: str,
    exit_code: int | None,
    failure_category: str | None = None,
    failure_code: str | None = None,
) -> tuple[JobState, FailureKind | None]:
    """An Azure Batch task: its state, the exit code of its process and its failure info
    (category "usererror" / "servererror", code such as "ContainerInvalidImage"). Unrecognized
    states map to (SUBMITTED, None)."""
    normalized = state.strip().lower()
    if normalized in BATCH_TASK_STATES:
        return BATCH_TASK_STATES[normalized], None
    if normalized != "completed":
        return JobState.SUBMITTED, None
    if failure_category or failure_code:
        return JobState.FAILED, _batch_failure_kind(failure_category, failure_code)
    if exit_code == 0:
        return JobState.COMPLETED, None
    # Completed without an exit code means the process never ran to an end we can judge.
    return JobState.FAILED, FailureKind.JOB_FAILED


def batch_node_failure(node_state: str) -> FailureKind | None:
    """What a Batch compute node's state means for the jobs placed on it (None: healthy or
    still coming up)."""
    normalized = node_state.strip().lower()
    if normalized in BATCH_NODE_PERMANENT_STATES:
        return FailureKind.PERMANENT_FOR_TIER
    if normalized in BATCH_NODE_TRANSIENT_STATES:
        return FailureKind.TRANSIENT
    return None


DOCKER_RUNNING_STATUSES = frozenset({"running", "paused", "restarting"})


def from_docker(state: Mapping[str, Any]) -> JobState:
    """The `State` object of `docker inspect`: Status created / running / paused / restarting /
    removing / exited / dead, with ExitCode and OOMKilled."""
    status = str(state.get("Status", "")).strip().lower()
    if status == "created":
        return JobState.PREPARING
    if status in DOCKER_RUNNING_STATUSES:
        return JobState.RUNNING
    if status == "exited":
        exit_code = state.get("ExitCode")
        if exit_code == 0 and not state.get("OOMKilled", False):
            return JobState.COMPLETED
        return JobState.FAILED
    if status == "dead":
        return JobState.FAILED
    # "removing" or an unknown status: nothing we can rely on.
    return JobState.SUBMITTED


def advance(current: JobState, new: JobState) -> bool:
    """Whether `new` may replace `current`: only forward, and never away from a terminal state
    (the first terminal state recorded wins; later, contradicting events are ignored)."""
    return not current.is_terminal and new.rank > current.rank


Row = dict[str, Any]


def advanced(
    row: Row,
    state: JobState,
    *,
    at: datetime,
    detail: str = "",
    failure_kind: FailureKind | None = None,
) -> Row | None:
    """The job row moved to `state`, or None when `advance` refuses the move."""
    if not advance(JobState(row["state"]), state):
        return None
    new = {**row, "state": state.value, "updated_at": iso(at)}
    if detail:
        new["detail"] = detail[:MAX_REASON_CHARS]
    if failure_kind is not None:
        new["failure_kind"] = failure_kind.value
    if state is JobState.RUNNING and not row.get("running_at"):
        new["running_at"] = iso(at)
    if state is JobState.PREPARING and not row.get("preparing_at"):
        new["preparing_at"] = iso(at)
    if state.is_terminal:
        new["ended_at"] = iso(at)
    return new


def after_heartbeat(row: Row, at: datetime) -> Row | None:
    """A sign of life: the first one marks the container as started (the start deadline's
    only evidence) and the job as running. None once the job has ended."""
    current = JobState(row["state"])
    if current.is_terminal:
        return None
    new = {**row, "last_heartbeat_at": iso(at), "heartbeats": int(row.get("heartbeats", 0)) + 1}
    if not row.get("started_at"):
        new["started_at"] = iso(at)
    if advance(current, JobState.RUNNING):
        new["state"] = JobState.RUNNING.value
        new.setdefault("running_at", iso(at))
    return new


def preparing_seen(row: Row, at: datetime) -> Row | None:
    """The job row noting when the job was first seen preparing (image pull, container
    setup), or None when that is already known."""
    if row.get("preparing_at") or row.get("started_at"):
        return None
    return {**row, "preparing_at": iso(at)}


def seconds_preparing(row: Row, now: datetime) -> float | None:
    """How long a job that has not started has been preparing, if it is known."""
    since = parse_time(row.get("preparing_at"))
    if since is None or row.get("started_at"):
        return None
    return (now - since).total_seconds()


def stuck_detail(row: Row, now: datetime) -> str | None:
    """Why a running job counts as stuck (heartbeats stopped for longer than its limit), or
    None. Only a job that has started can go quiet: before its first heartbeat the start
    deadline is what watches it; and only when its policy asked for stuck detection."""
    last = parse_time(row.get("last_heartbeat_at"))
    limit = float(row.get("heartbeat_timeout_seconds", 600))
    if not (row.get("stuck_detection") and row.get("started_at") and last):
        return None
    silent = (now - last).total_seconds()
    if silent <= limit:
        return None
    return f"stuck: no heartbeat for {silent / 60:.0f} min (limit {limit / 60:g} min); cancelled"


def marked_stuck(row: Row, now: datetime, detail: str) -> Row | None:
    """The sweeper's verdict on a job `stuck_detail` found quiet: failed, transient (the next
    attempt may well run), flagged so the shard and the alerts tell it from other failures."""
    if JobState(row["state"]).is_terminal:
        return None
    return {
        **row,
        "state": JobState.FAILED.value,
        "stuck": True,
        "ended_at": iso(now),
        "detail": detail,
        "failure_kind": FailureKind.TRANSIENT.value,
    }


def attempt_closed(row: Row, outcome: AttemptOutcome) -> Row | None:
    """The orchestration decided how the attempt ended: nothing is left to signal to it, and
    the row keeps the outcome as the enum (what alerts classify the job by)."""
    fields = {"ended_signalled": True, "attempt_outcome": outcome.value}
    if all(row.get(k) == v for k, v in fields.items()):
        return None
    return {**row, **fields}
