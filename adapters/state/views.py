"""Views of an evaluation built from its one Table Storage partition: the status document the
API returns and the summary written when the evaluation ends. Pure functions of rows + now."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from itertools import pairwise
from typing import Any

from adapters.state.table_store import parse_time
from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.jobs import JobState
from domain.planning import expected_minutes
from domain.progress import eta_seconds
from domain.tasksets import TaskRef

OUTCOMES = ("completed", "failed", "running", "pending", "not_run")


def _job_cost_so_far(job: dict[str, Any], now: datetime) -> float:
    if job.get("cost_usd") is not None:
        return float(job["cost_usd"])
    start = parse_time(job.get("submitted_at"))
    if start is None:
        return 0.0
    end = parse_time(job.get("ended_at")) or now
    return (
        hourly_price(job["vm_size"], bool(job["spot"]))
        * max(0.0, (end - start).total_seconds())
        / 3600
    )


def evaluation_view(
    rows: dict[str, Any], now: datetime, *, include_tasks: bool = True
) -> dict[str, Any]:
    ev = rows["evaluation"]
    jobs = {j["job_name"]: j for j in rows["jobs"]}
    tasks = rows["tasks"]
    counts = Counter(t.get("outcome", "pending") for t in tasks)
    created = parse_time(ev["created_at"])
    assert created is not None

    shards = []
    active_shards = 0
    for s in sorted(rows["shards"], key=lambda r: r["shard_index"]):
        job = jobs.get(s.get("job_name", ""))
        last = parse_time(job.get("last_heartbeat_at")) if job else None
        job_state = job["state"] if job else None
        if job and not JobState(job_state).is_terminal:
            active_shards += 1
        shards.append(
            {
                "shard": s["shard_index"],
                "tasks": s["task_count"],
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
                "reason": s.get("reason", ""),
            }
        )

    cost_so_far = sum(_job_cost_so_far(j, now) for j in rows["jobs"])
    open_tasks = [t for t in tasks if t.get("outcome", "pending") in ("pending", "running")]
    remaining_minutes = sum(
        expected_minutes(TaskRef(task_id=t["task_id"], domain=t["domain"])) for t in open_tasks
    )
    price = hourly_price(ev["vm_size"], bool(ev["spot"]))
    workers = max(1, min(int(ev["workers"]), len(rows["shards"]) or 1))
    remaining_cost = price * remaining_minutes / 60 + (
        price * DEFAULT_PROVISIONING_MINUTES / 60 * workers
        if open_tasks and active_shards == 0
        else 0.0
    )
    per_shard: Counter[int] = Counter()
    for t in open_tasks:
        per_shard[t["shard_index"]] += expected_minutes(
            TaskRef(task_id=t["task_id"], domain=t["domain"])
        )
    working = [s for s in rows["shards"] if s.get("status") != "done"]
    waiting = any(not (jobs.get(s.get("job_name", "")) or {}).get("started_at") for s in working)
    eta = eta_seconds(
        remaining_minutes,
        len(working),
        longest_shard_remaining_minutes=max(per_shard.values(), default=0.0),
        startup_minutes=DEFAULT_PROVISIONING_MINUTES if waiting else 0.0,
    )
    completed = counts.get("completed", 0)
    view: dict[str, Any] = {
        "evaluation_id": ev["evaluation_id"],
        "state": ev.get("state", "running"),
        "created_at": ev["created_at"],
        "policy": ev.get("policy"),
        "workers": ev["workers"],
        "vm_size": ev["vm_size"],
        "spot": ev["spot"],
        "tiers": ev["tiers"].split(","),
        "counts": {"total": len(tasks), **{k: counts.get(k, 0) for k in OUTCOMES}},
        "cost": {
            "so_far_usd": round(cost_so_far, 4),
            "estimated_total_usd": round(cost_so_far + remaining_cost, 4),
            "per_completed_task_usd": round(cost_so_far / completed, 4) if completed else None,
            "budget_usd": ev.get("budget_usd"),
        },
        "elapsed_seconds": round((now - created).total_seconds(), 1),
        "eta_seconds": (round(eta, 1) if eta is not None else None)
        if ev.get("state", "running") == "running"
        else 0.0,
        "shards": shards,
    }
    if ev.get("summary"):
        view["summary"] = json.loads(ev["summary"])
    if include_tasks:
        view["tasks"] = [
            {
                "task_id": t["task_id"],
                "domain": t["domain"],
                "shard": t["shard_index"],
                "outcome": t.get("outcome", "pending"),
                "reason": t.get("reason", ""),
                "score": t.get("score"),
                "attempt": t.get("attempt"),
                "failed_runs": len([j for j in str(t.get("failed_in", "")).split(",") if j]),
            }
            for t in sorted(tasks, key=lambda t: (t["shard_index"], t["task_id"]))
        ]
    return view


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
    alerts: list[str] = []
    details = Counter()
    for j in jobs:
        detail = (j.get("detail") or "").lower()
        if "did not start" in detail:
            details["never started (start deadline hit, job cancelled)"] += 1
        elif "no heartbeat" in detail:
            details["stuck mid-run (no heartbeat, cancelled by the sweeper)"] += 1
        elif j["state"] == JobState.FAILED.value:
            details["failed"] += 1
    for what, n in sorted(details.items()):
        alerts.append(f"{n} job(s) {what}")
    for tier, n in sorted(rows["breaker"].items()):
        alerts.append(f"tier {tier}: {n} failure(s) in this evaluation")
    for outcome in ("not_run", "failed"):
        reasons = Counter(t.get("reason", "") for t in rows["tasks"] if t.get("outcome") == outcome)
        for reason, n in reasons.most_common(3):
            alerts.append(f"{n} task(s) {outcome.replace('_', ' ')}: {reason}")
    rerun = sum(1 for t in rows["tasks"] if t.get("failed_in") and t.get("outcome") == "completed")
    if rerun:
        alerts.append(f"{rerun} task(s) completed on a re-run after a failed run")
    total = counts["total"] or 1
    return {
        "counts": counts,
        "success_rate": round(counts["completed"] / total, 4),
        "makespan_hours": round(view["elapsed_seconds"] / 3600, 3),
        "cost_usd": view["cost"]["so_far_usd"],
        "cost_per_completed_task_usd": view["cost"]["per_completed_task_usd"],
        "attempts": len(jobs),
        "failovers": sum(s["failovers"] for s in view["shards"]),
        "alerts": alerts,
    }
