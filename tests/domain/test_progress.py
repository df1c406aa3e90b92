from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.outcomes import (
    TaskOutcome,
    attempts_exhausted,
    no_tier_left,
)
from domain.progress import eta_seconds, job_estimate_usd, project


def test_eta() -> None:
    assert eta_seconds(0, 0) == 0.0
    assert eta_seconds(100, 0) is None
    assert eta_seconds(100, 10) == pytest.approx(600)
    # The slowest shard bounds the estimate from below.
    assert eta_seconds(100, 10, longest_shard_remaining_minutes=30) == pytest.approx(1800)
    assert eta_seconds(100, 10, startup_minutes=15) == pytest.approx(1500)


def test_outcomes() -> None:
    assert [o for o in TaskOutcome if o.is_final] == [
        TaskOutcome.COMPLETED,
        TaskOutcome.FAILED,
        TaskOutcome.NOT_RUN,
    ]
    assert attempts_exhausted("6 attempts") == "attempts exhausted: 6 attempts"
    assert attempts_exhausted("") == "attempts exhausted"
    assert no_tier_left("x") == "no compute tier left: x"


SIZE = "Standard_D4s_v5"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EVALUATION = {"vm_size": SIZE, "spot": False, "workers": 2}


def test_job_estimate_pays_provisioning_and_each_task() -> None:
    # Unknown domains take the planner's default of 8 minutes per task.
    minutes = DEFAULT_PROVISIONING_MINUTES + 2 * 8.0
    expected = hourly_price(SIZE, False) * minutes / 60
    assert job_estimate_usd(["no-domain-1", "no-domain-2"], SIZE, False) == pytest.approx(expected)


def _task(task_id: str, shard: int, outcome: str) -> dict[str, Any]:
    return {"task_id": task_id, "domain": "unknown", "shard_index": shard, "outcome": outcome}


def test_projection_while_running() -> None:
    job = {
        "job_name": "j0",
        "state": "running",
        "vm_size": SIZE,
        "spot": False,
        "submitted_at": T0.isoformat(),
        "started_at": T0.isoformat(),
    }
    shards = [{"shard_index": 0, "job_name": "j0", "status": "submitted"}]
    tasks = [_task("a", 0, "completed"), _task("b", 0, "running"), _task("c", 0, "pending")]
    got = project(EVALUATION, shards, tasks, [job], T0 + timedelta(hours=1))
    price = hourly_price(SIZE, False)
    assert got.cost_so_far_usd == pytest.approx(price)
    assert got.remaining_cost_usd == pytest.approx(price * 16 / 60)  # two open tasks
    assert got.estimated_total_usd == pytest.approx(price * (1 + 16 / 60))
    assert got.eta_seconds == pytest.approx(16 * 60)


def test_projection_with_nothing_running_adds_provisioning_per_worker() -> None:
    shards = [
        {"shard_index": 0, "status": "attempt_ended"},
        {"shard_index": 1, "status": "attempt_ended"},
    ]
    tasks = [_task("a", 0, "pending"), _task("b", 1, "pending")]
    got = project(EVALUATION, shards, tasks, [], T0)
    price = hourly_price(SIZE, False)
    provisioning = price * DEFAULT_PROVISIONING_MINUTES / 60 * 2
    assert got.remaining_cost_usd == pytest.approx(price * 16 / 60 + provisioning)
    # Both shards wait for a node: the startup time comes first.
    assert got.eta_seconds == pytest.approx((8 + DEFAULT_PROVISIONING_MINUTES) * 60)


def test_projection_when_done() -> None:
    shards = [{"shard_index": 0, "status": "done"}]
    got = project(EVALUATION, shards, [_task("a", 0, "completed")], [], T0)
    assert (got.cost_so_far_usd, got.remaining_cost_usd, got.eta_seconds) == (0.0, 0.0, 0.0)
