"""The policy benchmark's figures (benchmarks/policy.py), as pure functions of recorded times.

Times are seconds since the evaluation was created, on the simulation's virtual clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# The targets for the queue distribution (issue 10, "Benchmark").
TARGET_MAKESPAN_RATIO = 1.05
TARGET_COST_RATIO = 1.05
TARGET_CHAOS_SHARE = 0.99


@dataclass(frozen=True)
class Spread:
    low: float
    median: float
    high: float


def spread(values: Sequence[float]) -> Spread:
    """Min / median / max of a non-empty sequence."""
    if not values:
        raise ValueError("spread of no values")
    return Spread(min(values), statistics.median(values), max(values))


@dataclass(frozen=True)
class JobTimes:
    """One job as the simulator recorded it."""

    slot: int  # the worker slot (queue) or shard (static) it ran for
    submitted: float
    fault: float | None = None  # when its run fault took effect
    cancelled: float | None = None  # when the control plane cancelled it
    # (task id, start, end) of each task it ran to a result (an interrupted one is not in it).
    task_spans: tuple[tuple[str, float, float], ...] = ()


def tail_idle_hours(jobs: Iterable[JobTimes], slots: int, end: float) -> float:
    """Worker-hours idle at the tail: for each of `slots` slots, the evaluation's `end` minus
    the last moment the slot was running a task (the evaluation's start when it never ran
    one), summed."""
    last = [0.0] * slots
    for job in jobs:
        if 0 <= job.slot < slots:
            last[job.slot] = max([last[job.slot], *(stop for _, _, stop in job.task_spans)])
    return sum(max(0.0, end - t) for t in last) / 3600


@dataclass(frozen=True)
class Detection:
    """Fault -> job cancelled -> replacement submitted, in seconds after the fault."""

    slot: int
    to_cancel: float | None  # None: nobody cancelled it (it ended by itself)
    to_replacement: float


def detections(jobs: Sequence[JobTimes]) -> list[Detection]:
    """One per job with a fault whose slot submitted a next job (the next by submission)."""
    out = []
    for job in jobs:
        if job.fault is None:
            continue
        later = [j.submitted for j in jobs if j.slot == job.slot and j.submitted > job.submitted]
        if not later:
            continue
        cancel = None if job.cancelled is None else job.cancelled - job.fault
        out.append(Detection(job.slot, cancel, min(later) - job.fault))
    return out


def worst(found: Iterable[Detection | None]) -> Detection | None:
    """The detection with the longest fault -> replacement, None when there was none."""
    return max((d for d in found if d is not None), key=lambda d: d.to_replacement, default=None)


@dataclass(frozen=True)
class Run:
    """One evaluation of the benchmark: one profile, variant and seed."""

    profile: str
    variant: str
    seed: int
    completed: int
    total: int
    makespan_ratio: float  # to the fault-free ideal
    cost_ratio: float
    jobs: int
    failovers: int
    tail_idle_hours: float
    detection: Detection | None  # the worst of the run
    wall_seconds: float

    @property
    def share(self) -> float:
        return self.completed / self.total if self.total else 0.0


@dataclass(frozen=True)
class Aggregate:
    """The runs of one profile x variant over their seeds."""

    profile: str
    variant: str
    seeds: int
    share: Spread
    makespan: Spread
    cost: Spread
    jobs: Spread
    failovers: Spread
    tail_idle: Spread
    detection: Detection | None
    wall: Spread


def aggregate(runs: Sequence[Run]) -> list[Aggregate]:
    """Per (profile, variant), in the order they first appear."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.profile, run.variant), []).append(run)
    return [
        Aggregate(
            profile=profile,
            variant=variant,
            seeds=len(rs),
            share=spread([r.share for r in rs]),
            makespan=spread([r.makespan_ratio for r in rs]),
            cost=spread([r.cost_ratio for r in rs]),
            jobs=spread([r.jobs for r in rs]),
            failovers=spread([r.failovers for r in rs]),
            tail_idle=spread([r.tail_idle_hours for r in rs]),
            detection=worst(r.detection for r in rs),
            wall=spread([r.wall_seconds for r in rs]),
        )
        for (profile, variant), rs in groups.items()
    ]


@dataclass(frozen=True)
class Target:
    text: str
    measured: str
    met: bool | None  # None: not measured in this run


def targets(aggregates: Sequence[Aggregate], variant: str = "queue") -> list[Target]:
    """The issue's targets next to what `variant` measured (nothing is asserted)."""
    by = {(a.profile, a.variant): a for a in aggregates}

    def check(profile: str, text: str, measure: Callable[[Aggregate], tuple[str, bool]]) -> Target:
        found = by.get((profile, variant))
        if found is None:
            return Target(f"{variant} under {profile}: {text}", "not run", None)
        measured, met = measure(found)
        return Target(f"{variant} under {profile}: {text}", measured, met)

    return [
        check(
            "seed",
            "all tasks completed, every seed",
            lambda a: (f"worst seed {a.share.low:.1%}", a.share.low >= 1.0),
        ),
        check(
            "seed",
            f"median makespan <= {TARGET_MAKESPAN_RATIO:.2f}x ideal",
            lambda a: (f"{a.makespan.median:.3f}x", a.makespan.median <= TARGET_MAKESPAN_RATIO),
        ),
        check(
            "seed",
            f"median cost <= {TARGET_COST_RATIO:.2f}x ideal",
            lambda a: (f"{a.cost.median:.3f}x", a.cost.median <= TARGET_COST_RATIO),
        ),
        check(
            "chaos",
            f">= {TARGET_CHAOS_SHARE:.0%} of tasks completed, every seed",
            lambda a: (f"worst seed {a.share.low:.1%}", a.share.low >= TARGET_CHAOS_SHARE),
        ),
    ]


def tail_payoff(aggregates: Sequence[Aggregate], base: str, tail: str) -> list[str]:
    """Per profile where both ran: does `tail` (queue with tail copies) beat `base`?"""
    by = {(a.profile, a.variant): a for a in aggregates}
    lines = []
    for a in aggregates:
        if a.variant != base or (a.profile, tail) not in by:
            continue
        t = by[(a.profile, tail)]
        lines.append(
            f"{a.profile}: median makespan {t.makespan.median:.3f}x with tail copies vs "
            f"{a.makespan.median:.3f}x without ({t.makespan.median - a.makespan.median:+.3f}), "
            f"median cost {t.cost.median:.3f}x vs {a.cost.median:.3f}x "
            f"({t.cost.median - a.cost.median:+.3f}), worst seed completed "
            f"{t.share.low:.1%} vs {a.share.low:.1%}"
        )
    return lines
