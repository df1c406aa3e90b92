"""Views of an evaluation built from its one Table Storage partition: the status document the
API returns and the summary written when the evaluation ends. Pure functions of rows + now;
the figures in them (cost, projection, ETA, alerts) are decided in `domain/`."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from itertools import pairwise
from typing import Any

from domain import artifacts
from domain.alerts import alerts
from domain.clock import parse_time
from domain.contracts import EvaluationState
from domain.jobs import JobState
from domain.outcomes import TaskOutcome, failed_in
from domain.progress import project
from domain.requests import settings_from_row
from domain.results import results_table, table_json
from domain.tasksets import split_run_key

# The status document's counts, in this order.
OUTCOMES = tuple(
    o.value
    for o in (
        TaskOutcome.COMPLETED,
        TaskOutcome.FAILED,
        TaskOutcome.RUNNING,
        TaskOutcome.PENDING,
        TaskOutcome.NOT_RUN,
    )
)


def evaluation_view(
    rows: dict[str, Any], now: datetime, *, include_tasks: bool = True
) -> dict[str, Any]:
    ev = rows["evaluation"]
    jobs = {j["job_name"]: j for j in rows["jobs"]}
    tasks = rows["tasks"]
    counts = Counter(t.get("outcome", TaskOutcome.PENDING.value) for t in tasks)
    created = parse_time(ev["created_at"])
    assert created is not None

    by_id = {t["task_id"]: t for t in tasks}
    shards = []
    for s in sorted(rows["shards"], key=lambda r: r["shard_index"]):
        job = jobs.get(s.get("job_name", ""))
        current = _current_task(s, job, by_id)
        last = parse_time(job.get("last_heartbeat_at")) if job else None
        job_state = job["state"] if job else None
        shards.append(
            {
                "shard": s["shard_index"],
                "tasks": s.get("task_count", 0),
                "tier": s.get("tier"),
                "attempt": s.get("attempt", 0),
                "job_name": s.get("job_name"),
                "status": s.get("status", "waiting"),
                "job_state": job_state,
                "seconds_since_heartbeat": round((now - last).total_seconds(), 1)
                if last and job and not JobState(job_state).is_terminal
                else None,
                "retries": max(0, int(s.get("attempt", 0)) - 1),
                "failovers": _failovers(rows["jobs"], s["shard_index"]),
                # The runner's copy of the golden image to local disk, while and once it ran.
                "image_copy": {
                    k: job[f"storage_{k}"]
                    for k in ("copied_bytes", "total_bytes", "seconds", "done")
                }
                if job and "storage_copied_bytes" in job
                else None,
                "reason": s.get("reason", ""),
                # Queue distribution: the task the slot's job claimed and runs now.
                "current_task": current,
                "current_task_since": s.get("current_task_since") if current else None,
            }
        )

    projection = project(ev, rows["shards"], tasks, rows["jobs"], now)
    cost_so_far, eta = projection.cost_so_far_usd, projection.eta_seconds
    completed = counts.get(TaskOutcome.COMPLETED.value, 0)
    view: dict[str, Any] = {
        "evaluation_id": ev["evaluation_id"],
        "state": ev.get("state", EvaluationState.RUNNING.value),
        "created_at": ev["created_at"],
        "policy": ev.get("policy"),
        "distribution": distribution(ev),
        "workers": ev["workers"],
        "vm_size": ev["vm_size"],
        "spot": ev["spot"],
        "tiers": ev["tiers"].split(","),
        "trials": int(ev.get("trials") or 1),
        # Retries (POST /api/evaluations/{id}/retry), linked both ways.
        "retry_of": ev.get("retry_of") or None,
        "retried_by": retried_by(ev),
        "counts": {"total": len(tasks), **{k: counts.get(k, 0) for k in OUTCOMES}},
        "cost": {
            "so_far_usd": round(cost_so_far, 4),
            "estimated_total_usd": round(projection.estimated_total_usd, 4),
            "per_completed_task_usd": round(cost_so_far / completed, 4) if completed else None,
            "budget_usd": ev.get("budget_usd"),
        },
        "elapsed_seconds": round((now - created).total_seconds(), 1),
        "eta_seconds": (round(eta, 1) if eta is not None else None)
        if ev.get("state", EvaluationState.RUNNING) == EvaluationState.RUNNING
        else 0.0,
        "shards": shards,
        # The agent's result, apart from the run outcome in `counts` (issue 9, part 7).
        "results": table_json(results_table(tasks)),
        # Live alerts as they fired, oldest first (adapters/alerting.py).
        "alerts": [
            {
                "at": a["at"],
                "kind": a["kind"],
                "severity": a.get("severity", "warning"),
                "text": a["text"],
                "action": a.get("action", ""),
                "delivered": bool(a.get("delivered_at")),
            }
            for a in rows.get("alerts", [])
        ],
    }
    if ev.get("summary"):
        view["summary"] = read_summary(ev["summary"])
    if include_tasks:
        view["tasks"] = [_task_view(t) for t in sorted(tasks, key=_task_order)]
    return view


def distribution(evaluation: dict[str, Any]) -> str:
    """How the evaluation's tasks reach its jobs: the row's `distribution` column, else its
    stored request settings; an evaluation from before the task queue ran static shards."""
    column = evaluation.get("distribution")
    if column:
        return str(column)
    return str(settings_from_row(evaluation).get("distribution") or "static")


def _current_task(
    slot: dict[str, Any], job: dict[str, Any] | None, tasks: dict[str, dict[str, Any]]
) -> str | None:
    """The slot row's `current_task` (written on each claim, queue distribution) while it is
    true: the slot's job has not ended and the task's row is running under that job (as its
    claim or its tail copy). A task whose result came in, or that went back to the queue when
    the job ended, is no longer in progress there, whether or not the slot row was cleared."""
    task_id = slot.get("current_task")
    if not task_id or job is None or JobState(job["state"]).is_terminal:
        return None
    row = tasks.get(str(task_id))
    if row is None or row.get("outcome") != TaskOutcome.RUNNING.value:
        return None
    holder = job["job_name"]
    if holder not in (row.get("job_name"), row.get("copy_job")):
        return None
    return str(task_id)


def _task_order(t: dict[str, Any]) -> tuple[int, str]:
    # Queue-distributed tasks may carry no shard; they sort first, by id.
    shard = t.get("shard_index")
    return (-1 if shard is None else int(shard), t["task_id"])


def retried_by(evaluation: dict[str, Any]) -> list[str]:
    """The evaluations started as retries of this one (row column `retried_by`, comma
    separated), oldest first."""
    return [e for e in str(evaluation.get("retried_by") or "").split(",") if e]


def _trial_of(run_key: str) -> dict[str, Any]:
    """A run of a task in one of several trials names its task and trial."""
    task_id, trial = split_run_key(run_key)
    return {} if trial is None else {"task": task_id, "trial": trial}


def _task_view(t: dict[str, Any]) -> dict[str, Any]:
    row = {
        "task_id": t["task_id"],
        "domain": t["domain"],
        "shard": t.get("shard_index"),
        "outcome": t.get("outcome", TaskOutcome.PENDING.value),
        "reason": t.get("reason", ""),
        "score": t.get("score"),
        "attempt": t.get("attempt"),
        "failed_runs": len(failed_in(t)),
        **_trial_of(t["task_id"]),
    }
    if t.get("artifacts"):
        # The folder's URL (no SAS) once the job reported its upload.
        row["artifacts"] = t["artifacts"]
        row["artifact_files"] = int(t.get("artifact_files", 0))
    return row


def _failovers(jobs: list[dict[str, Any]], shard: int) -> int:
    tiers = [
        j["tier"]
        for j in sorted((j for j in jobs if j["shard_index"] == shard), key=lambda j: j["attempt"])
    ]
    return sum(1 for a, b in pairwise(tiers) if a != b)


def summary(rows: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The end-of-evaluation record: outcomes, makespan, money, attempts, failovers, alerts."""
    view = evaluation_view(rows, now, include_tasks=False)
    jobs = rows["jobs"]
    counts = view["counts"]
    total = counts["total"] or 1
    out: dict[str, Any] = {
        "counts": counts,
        # The share of tasks that ran to completion: an infrastructure figure, not the agent's
        # score (it was called `success_rate`, which readers took for the agent's success rate).
        "completion_rate": round(counts["completed"] / total, 4),
        "results": table_json(results_table(rows["tasks"])),
        "makespan_hours": round(view["elapsed_seconds"] / 3600, 3),
        "cost_usd": view["cost"]["so_far_usd"],
        "cost_per_completed_task_usd": view["cost"]["per_completed_task_usd"],
        "attempts": len(jobs),
        "failovers": sum(s["failovers"] for s in view["shards"]),
        "alerts": [a.text for a in alerts(jobs, rows["breaker"], rows["tasks"])],
    }
    where = artifacts.location(view["evaluation_id"], rows["tasks"])
    if where is not None:
        out["artifacts"] = where
    return out


def read_summary(text: str) -> dict[str, Any]:
    """A stored summary, in today's field names: summaries written before the rename call the
    completion rate `success_rate`; they are read as `completion_rate` (and keep no results
    table, which they never had)."""
    stored: dict[str, Any] = json.loads(text)
    if "completion_rate" not in stored and "success_rate" in stored:
        stored["completion_rate"] = stored.pop("success_rate")
    return stored
