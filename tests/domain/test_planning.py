from __future__ import annotations

import random
from statistics import mean

import pytest

from domain.planning import (
    DOMAIN_MINUTES,
    LIGHT_DOMAINS,
    UNKNOWN_DOMAIN_MINUTES,
    ShardPlan,
    expand_trials,
    expected_minutes,
    light_vm_size,
    plan_shards,
    runs_to_retry,
)
from domain.tasksets import TaskRef, domain_of, load_task_set, run_key, split_run_key, task_refs

SIZE = "Standard_D4s_v5"


def full_set() -> list[TaskRef]:
    return task_refs(load_task_set("waa-full"))


def minutes(plan: list[ShardPlan]) -> list[float]:
    return [s.expected_minutes for s in plan]


def test_profiles() -> None:
    assert expected_minutes(TaskRef(task_id="x", domain="notepad")) < expected_minutes(
        TaskRef(task_id="x", domain="chrome")
    )
    assert expected_minutes(TaskRef(task_id="x", domain="chrome")) < expected_minutes(
        TaskRef(task_id="x", domain="vs_code")
    )
    assert expected_minutes(TaskRef(task_id="x", domain="unknown")) == UNKNOWN_DOMAIN_MINUTES
    assert set(DOMAIN_MINUTES) == set(load_task_set("waa-full"))
    assert 7.5 <= mean(expected_minutes(t) for t in full_set()) <= 8.5


def test_full_set_on_ten_workers_is_balanced() -> None:
    tasks = full_set()
    plan = plan_shards(tasks, 10, vm_size=SIZE)
    assert len(plan) == 10
    loads = minutes(plan)
    average = sum(expected_minutes(t) for t in tasks) / 10
    assert max(loads) <= average * 1.05
    assert min(loads) >= average * 0.95
    assert [s.index for s in plan] == list(range(10))
    assert all(s.vm_size == SIZE for s in plan)


def test_every_task_exactly_once_and_loads_add_up() -> None:
    tasks = full_set()
    plan = plan_shards(tasks, 7, vm_size=SIZE)
    ids = [t for s in plan for t in s.task_ids]
    assert sorted(ids) == sorted(t.task_id for t in tasks)
    by_id = {t.task_id: t for t in tasks}
    for shard in plan:
        assert shard.expected_minutes == pytest.approx(
            sum(expected_minutes(by_id[t]) for t in shard.task_ids)
        )


def test_deterministic_whatever_the_input_order() -> None:
    tasks = full_set()
    plan = plan_shards(tasks, 10, vm_size=SIZE)
    shuffled = list(tasks)
    random.Random(3).shuffle(shuffled)
    assert plan_shards(shuffled, 10, vm_size=SIZE) == plan
    assert plan_shards(list(reversed(tasks)), 10, vm_size=SIZE) == plan


def test_longest_first_within_each_shard() -> None:
    tasks = full_set()
    by_id = {t.task_id: t for t in tasks}
    for shard in plan_shards(tasks, 10, vm_size=SIZE):
        durations = [expected_minutes(by_id[t]) for t in shard.task_ids]
        assert durations == sorted(durations, reverse=True)


def test_lpt_on_a_known_case() -> None:
    tasks = [
        TaskRef(task_id="w1", domain="libreoffice_writer"),  # 9.0
        TaskRef(task_id="c1", domain="vs_code"),  # 9.5
        TaskRef(task_id="n1", domain="notepad"),  # 5.0
        TaskRef(task_id="n2", domain="notepad"),  # 5.0
        TaskRef(task_id="e1", domain="file_explorer"),  # 7.0
    ]
    plan = plan_shards(tasks, 2, vm_size=SIZE)
    # c1 -> s0, w1 -> s1, e1 -> s1 (9 < 9.5), n1 -> s0 (9.5 < 16), n2 -> s0 (14.5 < 16).
    assert [s.task_ids for s in plan] == [["c1", "n1", "n2"], ["w1", "e1"]]
    assert minutes(plan) == [19.5, 16.0]


def test_never_more_shards_than_tasks_and_never_empty() -> None:
    tasks = full_set()[:3]
    plan = plan_shards(tasks, 10, vm_size=SIZE)
    assert len(plan) == 3
    assert all(len(s.task_ids) == 1 for s in plan)
    assert plan_shards([], 10, vm_size=SIZE) == []
    one = plan_shards(full_set(), 1, vm_size=SIZE)
    assert len(one) == 1 and len(one[0].task_ids) == 154


def test_invalid_arguments() -> None:
    tasks = full_set()[:2]
    with pytest.raises(ValueError):
        plan_shards(tasks, 0, vm_size=SIZE)
    with pytest.raises(KeyError):
        plan_shards(tasks, 2, vm_size="Standard_Unpriced")
    with pytest.raises(ValueError):
        plan_shards([tasks[0], tasks[0]], 2, vm_size=SIZE)


def test_right_sizing_gives_light_domains_cheaper_shards() -> None:
    small = light_vm_size(SIZE)
    assert small == "Standard_E2s_v3"  # cheapest nested-virt size with 16 GiB
    tasks = full_set()
    plan = plan_shards(tasks, 10, vm_size=SIZE, right_size=True)
    assert len(plan) == 10
    light = [s for s in plan if s.vm_size == small]
    assert len(light) == 1
    by_id = {t.task_id: t for t in tasks}
    assert {by_id[t].domain for t in light[0].task_ids} <= LIGHT_DOMAINS
    assert len(light[0].task_ids) == sum(1 for t in tasks if t.domain in LIGHT_DOMAINS)
    heavy = [s for s in plan if s.vm_size == SIZE]
    assert all(by_id[t].domain not in LIGHT_DOMAINS for s in heavy for t in s.task_ids)
    assert sorted(t for s in plan for t in s.task_ids) == sorted(by_id)
    assert plan_shards(tasks, 10, vm_size=SIZE, right_size=True) == plan


def test_right_sizing_leaves_mixed_or_already_small_plans_alone() -> None:
    tasks = full_set()
    # The light share of 4 workers rounds to zero.
    assert all(s.vm_size == SIZE for s in plan_shards(tasks, 4, vm_size=SIZE, right_size=True))
    # Nothing is cheaper than the smallest size.
    light_only = [t for t in tasks if t.domain in LIGHT_DOMAINS]
    plan = plan_shards(light_only, 3, vm_size="Standard_D2_v3", right_size=True)
    assert {s.vm_size for s in plan} == {"Standard_D2_v3"}
    # Only light tasks: all shards are small.
    plan = plan_shards(light_only, 3, vm_size=SIZE, right_size=True)
    assert len(plan) == 3
    assert {s.vm_size for s in plan} == {"Standard_E2s_v3"}
    # One worker: it has to take everything on the requested size.
    assert [s.vm_size for s in plan_shards(tasks, 1, vm_size=SIZE, right_size=True)] == [SIZE]


# --- trials: the runs (task, trial) an evaluation plans ------------------------------------------


def test_one_trial_is_the_tasks_themselves() -> None:
    tasks = full_set()
    assert expand_trials(tasks, 1) == tasks


def test_trials_make_one_run_per_task_and_trial() -> None:
    tasks = task_refs(load_task_set("waa-smoke"))
    runs = expand_trials(tasks, 3)
    assert len(runs) == 3 * len(tasks)
    assert [r.task_id for r in runs[: len(tasks)]] == [f"{t.task_id}#0" for t in tasks]
    for run in runs:
        task_id, trial = split_run_key(run.task_id)
        assert trial in (0, 1, 2)
        # Each run keeps its task's domain, and so its task's expected duration.
        assert run.domain == domain_of(run.task_id) == domain_of(task_id)
    assert sum(expected_minutes(r) for r in runs) == 3 * sum(expected_minutes(t) for t in tasks)


def test_shards_get_runs_and_the_plan_stays_balanced() -> None:
    tasks = task_refs(load_task_set("waa-smoke"))
    runs = expand_trials(tasks, 3)
    plan = plan_shards(runs, 6, vm_size=SIZE)
    planned = sorted(t for s in plan for t in s.task_ids)
    assert planned == sorted(r.task_id for r in runs)
    loads = minutes(plan)
    assert sum(loads) == pytest.approx(sum(expected_minutes(r) for r in runs))
    # LPT: no shard exceeds the average by more than the longest run.
    assert max(loads) - mean(loads) <= max(DOMAIN_MINUTES.values())
    # The trials of a task spread over shards rather than queueing on one.
    for task in tasks:
        holders = {s.index for s in plan for t in s.task_ids if split_run_key(t)[0] == task.task_id}
        assert len(holders) > 1


def test_run_keys() -> None:
    assert run_key("notepad-1", 0, 1) == "notepad-1"
    assert run_key("notepad-1", 3, 4) == "notepad-1#3"
    assert split_run_key("notepad-1#3") == ("notepad-1", 3)
    assert split_run_key("notepad-1") == ("notepad-1", None)
    for bad in ((0, 11), (4, 4), (-1, 2)):
        with pytest.raises(ValueError):
            run_key("t", *bad)


def test_a_retry_runs_exactly_the_runs_that_did_not_complete() -> None:
    rows = [
        {"task_id": "b#1", "domain": "vlc", "outcome": "failed"},
        {"task_id": "a#0", "domain": "chrome", "outcome": "completed", "score": 0.0},
        {"task_id": "a#1", "domain": "chrome", "outcome": "not_run"},
        {"task_id": "b#0", "domain": "vlc", "outcome": "completed", "score": 1.0},
        {"task_id": "c#0", "domain": "clock", "outcome": "pending"},
    ]
    # A completed run scored 0 is a result, not a failure; trial ids are kept.
    assert runs_to_retry(rows) == [
        TaskRef(task_id="a#1", domain="chrome"),
        TaskRef(task_id="b#1", domain="vlc"),
        TaskRef(task_id="c#0", domain="clock"),
    ]
    assert runs_to_retry([r for r in rows if r["outcome"] == "completed"]) == []
