"""Benchmark (prints figures; not a test): task distribution and policy on the simulated Azure.

For a task set (the shipped WAA set, 154 tasks) on 10 workers, under the `none`, `seed` and
`chaos` fault profiles, over several seeds each, in the same run:
  queue       resilient policy, workers pull tasks from the evaluation's queue (issue 10)
  static      resilient policy, tasks split into fixed shards up front
  naive       naive policy, static shards
  queue+tail  queue with tail copies (`--tail-copies` or `--variants`), to see whether they pay
Per profile x variant: share of tasks completed, makespan and cost as ratios to the fault-free
ideal (min / median / max over seeds), jobs, failovers, idle worker-hours at the tail, the worst
detection latency (fault -> job cancelled -> replacement submitted) and the wall time per
evaluation; then the issue's targets next to what the queue measured. Nothing is asserted.

    python -m benchmarks.policy [--profiles none,seed,chaos] [--seeds 1-7] [--workers 10]
                                [--variants queue,static,naive] [--tail-copies]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.compute.simulated import LedgerEntry
from adapters.compute.simulated.timings import (
    BOOT_SECONDS,
    DOCKER_HUB_PULL_SECONDS,
    PROVISION_SECONDS,
    QUEUE_SECONDS,
    REGIONAL_PULL_SECONDS,
    image_registry,
    regional_registry,
)
from adapters.settings import AppSettings
from benchmarks.policy_stats import (
    Aggregate,
    Detection,
    JobTimes,
    Run,
    Spread,
    aggregate,
    detections,
    tail_idle_hours,
    tail_payoff,
    targets,
    worst,
)
from devhost.azurite import start_azurite
from devhost.simulation import Simulation
from domain.clock import parse_time
from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.planning import expand_trials, expected_minutes
from domain.requests import EvaluationRequest, resolve_tasks

VARIANTS: dict[str, dict[str, Any]] = {
    "queue": {"policy": "resilient", "distribution": "queue"},
    "static": {"policy": "resilient", "distribution": "static"},
    "naive": {"policy": "naive", "distribution": "static"},
    "queue+tail": {"policy": "resilient", "distribution": "queue", "tail_copies": True},
}
# `none` is fault-free: one seed shows it (task durations still spread with the seed).
DEFAULT_SEEDS = {"none": [1], "seed": list(range(1, 8)), "chaos": list(range(1, 5))}
WAIT_SECONDS = 3600.0  # wall time one evaluation may take before the benchmark gives up


def ideal(
    task_set: str, workers: int, provisioning_minutes: float = DEFAULT_PROVISIONING_MINUTES
) -> tuple[float, float]:
    """Fault-free ideal: (makespan hours, cost USD). Every worker provisions once, then the
    expected task time is spread perfectly evenly (no shorter than the longest task); the
    cost is the expected task time plus one provisioning per worker used, at the request's
    default VM size and spot choice. Provisioning is the planner's figure unless given."""
    request = EvaluationRequest(task_set=task_set, workers=workers)
    minutes = [expected_minutes(t) for t in expand_trials(resolve_tasks(request), request.trials)]
    used = min(workers, len(minutes))
    busy = max(sum(minutes) / used, max(minutes))
    makespan_h = (busy + provisioning_minutes) / 60
    price = hourly_price(request.vm_size, request.spot)
    cost = price * (sum(minutes) + used * provisioning_minutes) / 60
    return makespan_h, cost


def simulated_provisioning_minutes() -> float:
    """The simulator's mean time from submission to the first task with the default image
    (queue, node, pull, boot): shorter than the planner's DEFAULT_PROVISIONING_MINUTES."""
    image = AppSettings.model_fields["waa_image"].default
    pull = (
        REGIONAL_PULL_SECONDS
        if regional_registry(image_registry(image))
        else DOCKER_HUB_PULL_SECONDS
    )
    ranges = (QUEUE_SECONDS, PROVISION_SECONDS, pull, BOOT_SECONDS)
    return sum((low + high) / 2 for low, high in ranges) / 60


def job_times(entries: Sequence[LedgerEntry], created: datetime) -> list[JobTimes]:
    """The simulator's record of each job (`SimulatedCloud.jobs_of`), in seconds since
    `created`."""

    def at(t: datetime) -> float:
        return (t - created).total_seconds()

    return [
        JobTimes(
            slot=e.shard_index,
            submitted=at(e.submitted_at),
            fault=None if e.fault_at is None else at(e.fault_at),
            cancelled=None if e.cancelled_at is None else at(e.cancelled_at),
            task_spans=tuple((task, at(start), at(end)) for task, start, end in e.task_spans),
        )
        for e in entries
    ]


def run_one(
    connection_string: str,
    *,
    profile: str,
    variant: str,
    seed: int,
    task_set: str,
    workers: int,
    ideal_h: float,
    ideal_cost: float,
) -> Run:
    # The simulator's dice are drawn from the job names, which carry the evaluation id: one
    # idempotency key (hence one evaluation id) per profile and seed, each variant in a fresh
    # simulation, so every variant meets the same world and a second run repeats the first.
    started = time.perf_counter()  # wall time of the whole evaluation, the host's start included
    with Simulation(
        connection_string=connection_string,
        profile=profile,
        seed=seed,
        artifacts=False,  # the control plane's figures, without artifact uploads
    ) as sim:
        r = sim.start_evaluation(
            {
                **VARIANTS[variant],
                "task_set": task_set,
                "workers": workers,
                "idempotency_key": f"benchmark-{profile}-{seed}",
            }
        )
        r.raise_for_status()
        evaluation_id = r.json()["evaluation_id"]
        final = sim.wait(evaluation_id, timeout=WAIT_SECONDS, poll=0.5)
        s = final["summary"]
        created = parse_time(final["created_at"])
        assert created is not None
        end = s["makespan_hours"] * 3600
        entries = sim.cloud.jobs_of(evaluation_id)
        jobs = job_times(entries, created)
        if VARIANTS[variant]["distribution"] == "queue" and not any(e.queue for e in entries):
            print(f"  ({variant}: no job ran from the queue; this build ran static shards)")
        short = Counter(
            t["reason"] or t["outcome"]
            for t in final.get("tasks", [])
            if t["outcome"] != "completed"
        )
    wall = time.perf_counter() - started
    run = Run(
        profile=profile,
        variant=variant,
        seed=seed,
        completed=s["counts"]["completed"],
        total=s["counts"]["total"],
        makespan_ratio=s["makespan_hours"] / ideal_h,
        cost_ratio=s["cost_usd"] / ideal_cost,
        jobs=s["attempts"],
        failovers=s["failovers"],
        tail_idle_hours=tail_idle_hours(jobs, workers, end),
        detection=worst(detections(jobs)),
        wall_seconds=wall,
    )
    print(
        f"  {profile:6} {variant:10} seed {seed:<3} completed {run.completed}/{run.total}  "
        f"makespan {s['makespan_hours']:.2f} h ({run.makespan_ratio:.3f}x)  "
        f"cost ${s['cost_usd']:.2f} ({run.cost_ratio:.3f}x)  jobs {run.jobs}  "
        f"failovers {run.failovers}  tail idle {run.tail_idle_hours:.2f} h  "
        f"detection {_detection(run.detection)}  wall {wall:.0f} s",
        flush=True,
    )
    for reason, n in short.most_common(3):
        print(f"{'':10}{n} not completed: {reason}")
    return run


def _spread(s: Spread, fmt: str = ".3f") -> str:
    return "/".join(format(v, fmt) for v in (s.low, s.median, s.high))


def _detection(d: Detection | None) -> str:
    if d is None:
        return "-"
    cancel = "-" if d.to_cancel is None else f"{d.to_cancel / 60:.1f}"
    return f"{cancel} -> {d.to_replacement / 60:.1f} min"


def print_table(aggregates: Sequence[Aggregate], ideal_h: float, ideal_cost: float) -> None:
    print(f"\nfault-free ideal: makespan {ideal_h:.2f} h, cost ${ideal_cost:.2f}")
    print("per profile x variant, min/median/max over seeds; detection: the worst over seeds,")
    print("fault -> job cancelled -> replacement submitted (- : the job ended by itself)")
    header = (
        f"{'profile':7} {'variant':10} {'seeds':>5}  {'completed %':17} {'makespan x':17} "
        f"{'cost x':17} {'jobs':10} {'failovers':9} {'tail idle h':16} {'detection':18} "
        f"{'wall s':>6}"
    )
    print(header)
    for a in aggregates:
        share = Spread(a.share.low * 100, a.share.median * 100, a.share.high * 100)
        print(
            f"{a.profile:7} {a.variant:10} {a.seeds:>5}  {_spread(share, '.1f'):17} "
            f"{_spread(a.makespan):17} {_spread(a.cost):17} {_spread(a.jobs, 'g'):10} "
            f"{_spread(a.failovers, 'g'):9} {_spread(a.tail_idle, '.2f'):16} "
            f"{_detection(a.detection):18} {a.wall.median:>6.0f}"
        )


def print_targets(aggregates: Sequence[Aggregate], scale_h: float, scale_cost: float) -> None:
    """The targets; then the queue's seed medians against the ideal with the simulator's own
    provisioning (`scale_*`: planner ideal / that ideal), a stricter reading of them."""
    print(f"\n{'target':58} {'measured':18} met")
    for t in targets(aggregates):
        met = "-" if t.met is None else "yes" if t.met else "NO"
        print(f"{t.text:58} {t.measured:18} {met}")
    for a in aggregates:
        if a.variant.startswith("queue") and a.profile == "seed":
            print(
                f"  ({a.variant} under seed against the ideal with the simulator's provisioning: "
                f"median makespan {a.makespan.median * scale_h:.3f}x, "
                f"cost {a.cost.median * scale_cost:.3f}x)"
            )
    lines = tail_payoff(aggregates, "queue", "queue+tail")
    if lines:
        print("\ntail copies:")
        for line in lines:
            print(f"  {line}")


def parse_seeds(text: str) -> list[int]:
    """'1-7', '1,3,5' or '1-3,9' -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", default="none,seed,chaos")
    parser.add_argument(
        "--seeds",
        help="seeds for every profile, e.g. 1-3 or 1,4 (default: none 1, seed 1-7, chaos 1-4)",
    )
    parser.add_argument("--variants", default="queue,static,naive", help=f"of {sorted(VARIANTS)}")
    parser.add_argument("--tail-copies", action="store_true", help="add the queue+tail variant")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--task-set", default="waa-full")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    profiles = args.profiles.split(",")
    variants = args.variants.split(",")
    if args.tail_copies and "queue+tail" not in variants:
        variants.append("queue+tail")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")

    ideal_h, ideal_cost = ideal(args.task_set, args.workers)
    sim_minutes = simulated_provisioning_minutes()
    sim_h, sim_cost = ideal(args.task_set, args.workers, sim_minutes)
    print(
        f"fault-free ideal: makespan {ideal_h:.2f} h, cost ${ideal_cost:.2f} (the planner's "
        f"{DEFAULT_PROVISIONING_MINUTES:.0f} min provisioning); with the simulator's mean "
        f"provisioning ({sim_minutes:.1f} min): {sim_h:.2f} h, ${sim_cost:.2f}",
        flush=True,
    )
    runs = []
    started = time.perf_counter()
    azurite = start_azurite()
    try:
        for profile in profiles:
            seeds = parse_seeds(args.seeds) if args.seeds else DEFAULT_SEEDS.get(profile, [1])
            for seed in seeds:
                for variant in variants:
                    runs.append(
                        run_one(
                            azurite.connection_string,
                            profile=profile,
                            variant=variant,
                            seed=seed,
                            task_set=args.task_set,
                            workers=args.workers,
                            ideal_h=ideal_h,
                            ideal_cost=ideal_cost,
                        )
                    )
    finally:
        azurite.stop()
    aggregates = aggregate(runs)
    print_table(aggregates, ideal_h, ideal_cost)
    print_targets(aggregates, ideal_h / sim_h, ideal_cost / sim_cost)
    total = time.perf_counter() - started
    print(
        f"\n{len(runs)} evaluations in {total / 60:.1f} min wall time "
        f"({total / max(1, len(runs)):.0f} s each on average)"
    )


if __name__ == "__main__":
    main()
