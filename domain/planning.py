"""Shard planning: split an evaluation's tasks over workers so that shards finish together.

Durations are per-domain profiles (minutes per task, from the spread WAA runs show: quick
Windows utilities, medium browser/media tasks, long office/IDE tasks). Over WAA's 154 tasks the
profile averages about 8 minutes, the figure the cost and ETA estimates are built on.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.cost import DEFAULT_PROVISIONING_MINUTES, PRICE_TABLE, hourly_price, vm_size_info
from domain.outcomes import TaskOutcome
from domain.tasksets import TaskRef, run_key

DOMAIN_MINUTES: dict[str, float] = {
    # Short: small built-in Windows apps, a few UI steps.
    "notepad": 5.0,
    "settings": 5.0,
    "clock": 5.0,
    "windows_calc": 5.0,
    # Medium: browsers, the file manager, media and paint.
    "chrome": 7.5,
    "msedge": 7.5,
    "file_explorer": 7.0,
    "vlc": 7.5,
    "microsoft_paint": 7.5,
    # Long: documents and code, many steps and slow application start.
    "libreoffice_calc": 9.5,
    "libreoffice_writer": 9.0,
    "vs_code": 9.5,
}
UNKNOWN_DOMAIN_MINUTES = 8.0

# Domains light enough to run on a smaller node when right-sizing (see `plan_shards`).
LIGHT_DOMAINS: frozenset[str] = frozenset({"notepad", "settings", "clock", "windows_calc"})
# The WAA container boots a Windows guest with 8 GiB of memory; the host needs room beside it.
RIGHT_SIZE_MIN_MEMORY_GIB = 16.0


class ShardPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    task_ids: list[str]
    expected_minutes: float
    vm_size: str


def expected_minutes(task: TaskRef) -> float:
    return DOMAIN_MINUTES.get(task.domain, UNKNOWN_DOMAIN_MINUTES)


def expand_trials(tasks: Sequence[TaskRef], trials: int) -> list[TaskRef]:
    """The runs of an evaluation: each task once per trial, keyed "<task_id>#<k>" when there is
    more than one trial (`domain.tasksets.run_key`), each with its task's domain and so its
    expected duration. Trial-major order: every task of trial 0, then of trial 1, ..."""
    return [
        TaskRef(task_id=run_key(t.task_id, k, trials), domain=t.domain)
        for k in range(trials)
        for t in tasks
    ]


def runs_to_retry(task_rows: Sequence[dict[str, Any]]) -> list[TaskRef]:
    """The runs a retry evaluation runs again: every run of the source that did not complete
    (failed, not run; and, should an ended evaluation hold one, still open), with its run key
    (so trial ids are kept) and domain, in run-key order. A completed run scored 0 is a result,
    not a failure: it is not retried."""
    return [
        TaskRef(task_id=str(row["task_id"]), domain=str(row.get("domain") or "unknown"))
        for row in sorted(task_rows, key=lambda r: str(r["task_id"]))
        if row.get("outcome") != TaskOutcome.COMPLETED.value
    ]


def light_vm_size(vm_size: str) -> str:
    """The size right-sizing uses for light shards: the cheapest priced size that supports
    nested virtualization and has at least RIGHT_SIZE_MIN_MEMORY_GIB, when it is cheaper than
    `vm_size`; otherwise `vm_size` itself."""
    candidates = sorted(
        (info.usd_per_hour, name)
        for name, info in PRICE_TABLE.sizes.items()
        if info.nested_virtualization and info.memory_gib >= RIGHT_SIZE_MIN_MEMORY_GIB
    )
    if candidates and candidates[0][0] < hourly_price(vm_size, spot=False):
        return candidates[0][1]
    return vm_size


def _lpt(tasks: Sequence[TaskRef], bins: int) -> list[list[TaskRef]]:
    """Longest-processing-time-first: each task, longest first, goes to the least-loaded shard.
    Ties (equal durations, equal loads) break by task id and shard index, so the result only
    depends on the set of tasks, not on the order they came in."""
    ordered = sorted(tasks, key=lambda t: (-expected_minutes(t), t.task_id))
    heap = [(0.0, index) for index in range(bins)]
    shards: list[list[TaskRef]] = [[] for _ in range(bins)]
    for task in ordered:
        load, index = heapq.heappop(heap)
        shards[index].append(task)
        heapq.heappush(heap, (load + expected_minutes(task), index))
    return shards


def _light_shard_count(light: Sequence[TaskRef], heavy: Sequence[TaskRef], workers: int) -> int:
    if not light:
        return 0
    if not heavy:
        return min(workers, len(light))
    light_minutes = sum(expected_minutes(t) for t in light)
    total = light_minutes + sum(expected_minutes(t) for t in heavy)
    # Give light tasks their fair share of the workers; at least one worker stays for the rest.
    share = round(workers * light_minutes / total)
    return max(0, min(share, workers - 1, len(light)))


def plan_shards(
    tasks: Sequence[TaskRef],
    workers: int,
    *,
    vm_size: str,
    right_size: bool = False,
) -> list[ShardPlan]:
    """Split `tasks` into at most `workers` shards (never more shards than tasks, never an
    empty one), balanced by expected duration. Deterministic for a given set of tasks.

    Right-sizing rule: the light domains (LIGHT_DOMAINS) get their own shards, as many as their
    share of the total expected minutes earns (rounded; none if the share rounds to zero, and
    always at least one worker left for the other tasks); those shards run on `light_vm_size`.
    Every other shard keeps `vm_size`. Task durations are assumed not to change with the size.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    vm_size_info(vm_size)  # an unpriced size is a caller error, raised here rather than later
    if len({t.task_id for t in tasks}) != len(tasks):
        raise ValueError("task ids must be unique")
    if not tasks:
        return []

    groups: list[tuple[list[list[TaskRef]], str]]
    light = [t for t in tasks if t.domain in LIGHT_DOMAINS]
    heavy = [t for t in tasks if t.domain not in LIGHT_DOMAINS]
    light_shards = _light_shard_count(light, heavy, workers) if right_size else 0
    small = light_vm_size(vm_size)
    if light_shards and small != vm_size:
        heavy_shards = min(workers - light_shards, len(heavy))
        groups = [(_lpt(heavy, heavy_shards), vm_size), (_lpt(light, light_shards), small)]
    else:
        groups = [(_lpt(tasks, min(workers, len(tasks))), vm_size)]

    plans: list[ShardPlan] = []
    for shards, size in groups:
        for shard in shards:
            plans.append(
                ShardPlan(
                    index=len(plans),
                    task_ids=[t.task_id for t in shard],
                    expected_minutes=sum(expected_minutes(t) for t in shard),
                    vm_size=size,
                )
            )
    return plans


def slots_for_target(tasks: Sequence[TaskRef], target_hours: float, max_workers: int) -> int:
    """Worker slots for finishing `tasks` in about `target_hours` (the request's alternative to
    `workers`, queue distribution): the total expected minutes over the minutes a slot has once
    its job is provisioned, rounded up; capped by `max_workers` and by the task count; at least
    1. Raises ValueError when the target is shorter than provisioning plus the longest task
    (no slot count could meet it)."""
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    if not tasks:
        return 1
    usable = target_hours * 60.0 - DEFAULT_PROVISIONING_MINUTES
    longest = max(expected_minutes(t) for t in tasks)
    if usable < longest:
        raise ValueError(
            f"target_hours {target_hours:g} is shorter than provisioning "
            f"({DEFAULT_PROVISIONING_MINUTES:g} min) plus the longest task ({longest:g} min)"
        )
    total = sum(expected_minutes(t) for t in tasks)
    return max(1, min(math.ceil(total / usable), max_workers, len(tasks)))
