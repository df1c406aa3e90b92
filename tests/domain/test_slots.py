"""Worker slots' pure rules: queue order of pending tasks, a job's share, the budget estimate,
the not-run reason from the slots' close reasons, and slots_for_target."""

from __future__ import annotations

import math

import pytest

from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.planning import expected_minutes, slots_for_target
from domain.slots import (
    expected_share,
    not_run_reason,
    pending_minutes,
    pending_task_ids,
    queue_job_estimate_usd,
)
from domain.tasksets import TaskRef


def test_pending_tasks_longest_first_ties_by_id() -> None:
    rows = [
        {"task_id": "z", "domain": "notepad", "outcome": "pending"},
        {"task_id": "b", "domain": "vs_code", "outcome": "pending"},
        {"task_id": "a", "domain": "libreoffice_calc", "outcome": "pending"},
        {"task_id": "c", "domain": "vs_code", "outcome": "running"},
        {"task_id": "d", "domain": "vs_code", "outcome": "completed"},
        {"task_id": "e", "domain": "chrome"},  # no outcome yet: pending
    ]
    assert pending_task_ids(rows) == ["a", "b", "e", "z"]
    assert sorted(pending_minutes(rows)) == [5.0, 7.5, 9.5, 9.5]


@pytest.mark.parametrize(
    ("pending", "slots", "share"), [(10, 3, 4), (9, 3, 3), (0, 3, 1), (2, 5, 1)]
)
def test_expected_share(pending: int, slots: int, share: int) -> None:
    assert expected_share(pending, slots) == share


def test_queue_job_estimate() -> None:
    price = hourly_price("Standard_D4s_v5", False)
    got = queue_job_estimate_usd([5.0, 10.0], 3, "Standard_D4s_v5", False)
    assert got == pytest.approx(price * (DEFAULT_PROVISIONING_MINUTES + 3 * 7.5) / 60)


def test_not_run_reason_keeps_the_real_give_up_reasons() -> None:
    assert not_run_reason(["no tasks remain", "no tasks remain"]) == ""
    assert not_run_reason(["no tasks remain", "budget exhausted: x"]) == "budget exhausted: x"
    got = not_run_reason(
        ["attempts exhausted: a", "no tasks remain", "no tier left: b", "no tier left: b"]
    )
    assert got == "every worker slot ended: attempts exhausted: a; no tier left: b"


def _tasks(n: int, domain: str = "chrome") -> list[TaskRef]:
    return [TaskRef(task_id=f"t{i}", domain=domain) for i in range(n)]


def test_slots_for_target_is_the_total_over_a_slots_usable_minutes() -> None:
    tasks = _tasks(154)
    total = sum(expected_minutes(t) for t in tasks)
    usable = 2.0 * 60 - DEFAULT_PROVISIONING_MINUTES
    assert slots_for_target(tasks, 2.0, 100) == math.ceil(total / usable)


def test_slots_for_target_is_capped_by_max_workers_and_tasks_and_at_least_one() -> None:
    assert slots_for_target(_tasks(154), 0.5, 10) == 10
    assert slots_for_target(_tasks(3), 0.375, 10) == 3  # 7.5 usable minutes each
    assert slots_for_target(_tasks(1), 48, 10) == 1


def test_a_target_shorter_than_provisioning_plus_the_longest_task_is_refused() -> None:
    with pytest.raises(ValueError, match="target_hours"):
        slots_for_target(_tasks(2, "vs_code"), (DEFAULT_PROVISIONING_MINUTES + 9.0) / 60, 10)
