"""Benchmark (prints figures; not a test): our policy vs the naive one on the simulated Azure.

For the shipped WAA task set on 10 workers, under the `none`, `seed` and `chaos` profiles:
makespan, cost, share of tasks completed, attempts and failovers per policy, next to the
fault-free ideal (total expected task time / workers + provisioning) measured in the same run.

    python -m benchmarks.policy [--profiles none,seed,chaos] [--workers 10] [--seed 7]
"""

from __future__ import annotations

import argparse
import logging
import time

from devhost.azurite import start_azurite
from devhost.simulation import Simulation
from domain.cost import DEFAULT_PROVISIONING_MINUTES, hourly_price
from domain.planning import expected_minutes
from domain.requests import EvaluationRequest, resolve_tasks

VM_SIZE = "Standard_D4s_v5"


def ideal(task_set: str, workers: int) -> tuple[float, float]:
    """Fault-free ideal: (makespan hours, cost USD)."""
    tasks = resolve_tasks(EvaluationRequest(task_set=task_set, workers=workers))
    total_minutes = sum(expected_minutes(t) for t in tasks)
    makespan_h = (total_minutes / workers + DEFAULT_PROVISIONING_MINUTES) / 60
    cost = (
        hourly_price(VM_SIZE, False) * (total_minutes + workers * DEFAULT_PROVISIONING_MINUTES) / 60
    )
    return makespan_h, cost


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", default="none,seed,chaos")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--task-set", default="waa-full")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    ideal_h, ideal_cost = ideal(args.task_set, args.workers)
    print(f"fault-free ideal: makespan {ideal_h:.2f} h, cost ${ideal_cost:.2f}")
    header = (
        f"{'profile':8} {'policy':10} {'completed':>10} {'makespan':>9} {'x ideal':>8} "
        f"{'cost':>8} {'x ideal':>8} {'billed':>8} {'attempts':>8} {'failovers':>9} {'wall':>6}"
    )
    print(header)
    azurite = start_azurite()
    try:
        for profile in args.profiles.split(","):
            for policy in ("resilient", "naive"):
                # The simulator's dice are drawn from the job names, which carry the evaluation
                # id: one idempotency key (hence one evaluation id) per profile and seed, each
                # policy in a fresh simulation, so both policies meet the same world and a
                # second run of the benchmark repeats the first.
                with Simulation(
                    connection_string=azurite.connection_string,
                    profile=profile,
                    seed=args.seed,
                    artifacts=False,  # the control plane's figures, without artifact uploads
                ) as sim:
                    cloud = sim.cloud
                    started = time.perf_counter()
                    r = sim.start_evaluation(
                        {
                            "task_set": args.task_set,
                            "workers": args.workers,
                            "policy": policy,
                            "idempotency_key": f"benchmark-{profile}-{args.seed}",
                        }
                    )
                    r.raise_for_status()
                    final = sim.wait(r.json()["evaluation_id"], timeout=1800, poll=0.5)
                    wall = time.perf_counter() - started
                    s = final["summary"]
                    billed = sum(e.cost_usd for e in cloud.ledger_entries())
                    share = s["counts"]["completed"] / s["counts"]["total"]
                    print(
                        f"{profile:8} {policy:10} {share:>9.1%} {s['makespan_hours']:>8.2f}h "
                        f"{s['makespan_hours'] / ideal_h:>7.2f}x ${s['cost_usd']:>7.2f} "
                        f"{s['cost_usd'] / ideal_cost:>7.2f}x "
                        f"${billed:>7.2f} {s['attempts']:>8} {s['failovers']:>9} {wall:>5.0f}s",
                        flush=True,
                    )
                    for alert in s["alerts"]:
                        print(f"{'':20}{alert}")
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
