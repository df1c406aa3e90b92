"""The main job: a simulated WAA evaluation end to end on this machine, seen through the
command-line client.

Starts Azurite and the devhost, then runs the shipped WAA task set on 10 workers under the
`seed` fault profile through the HTTP API with `waa-eval`'s own code (waa_cli: the request it
sends for `start`, the live shard table and progress bar, summary and results table of
`watch`), so the demo shows what a user of the CLI sees; then the same evaluation under the
`naive` policy (the setup that failed), and both summaries side by side.

    python -m devhost.demo [--profile none|seed|chaos] [--policy both|resilient|naive]
                           [--workers 10] [--task-set waa-full] [--seed 7]
                           [--time-mode skip|real] [--store table|memory]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from adapters.logs import configure_json_logging
from devhost.azurite import start_azurite
from devhost.simulation import Simulation
from waa_cli import render
from waa_cli.app import follow, read_tasks, request_body, show_end
from waa_cli.client import ApiError, Client
from waa_cli.config import Target

# Markup off as in waa-eval (waa_cli/app.py): names and messages are printed as they are.
console = Console(markup=False)
# The demo's clock: virtual time that skips ahead when nothing is runnable (--time-mode skip).
VIRTUAL = "virtual"


def run_one(
    client: Client, args: argparse.Namespace, policy: str, *, elapsed_label: str
) -> dict[str, Any]:
    """`waa-eval start <task set> --workers N --policy P --watch`, in process."""
    console.print(
        f"\n$ waa-eval --url {client.target.base_url} start {args.task_set} "
        f"--workers {args.workers} --policy {policy} --watch",
        soft_wrap=True,
    )
    body = {**read_tasks(args.task_set), **request_body(workers=args.workers, policy=policy)}
    try:
        started = client.start(body)
    except ApiError as err:
        console.print(f"start failed: {err.message}")
        raise SystemExit(1) from None
    evaluation_id = started["evaluation_id"]
    console.print(
        f"started evaluation {evaluation_id}: {started['tasks']} tasks on "
        f"{started['shards']} shards"
    )
    final = follow(
        client,
        evaluation_id,
        console,
        interval=0.25,
        timeout=args.timeout,
        label=f"{policy:>9}",
        elapsed_label=elapsed_label,
    )
    makespan = f"makespan ({VIRTUAL})" if elapsed_label == VIRTUAL else "makespan"
    show_end(console, final, client.results_json(evaluation_id), makespan_label=makespan)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", choices=["none", "seed", "chaos"], default="seed")
    parser.add_argument("--policy", choices=["both", "resilient", "naive"], default="both")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--task-set", default="waa-full")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-mode", choices=["skip", "real"], default="skip")
    parser.add_argument(
        "--store",
        choices=["table", "memory"],
        default="table",
        help="where the devhost keeps orchestration state (table = Azurite)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="wall-clock seconds per evaluation"
    )
    args = parser.parse_args(argv)
    log_path = Path(".devhost") / "demo-log.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    configure_json_logging(logging.FileHandler(log_path, mode="w"))

    policies = ["resilient", "naive"] if args.policy == "both" else [args.policy]
    elapsed_label = VIRTUAL if args.time_mode == "skip" else "elapsed"
    console.print("Starting Azurite and the local Functions host...")
    azurite = start_azurite()
    results: dict[str, dict[str, Any]] = {}
    try:
        with Simulation(
            connection_string=azurite.connection_string,
            profile=args.profile,
            seed=args.seed,
            time_mode=args.time_mode,
            store=args.store,
        ) as sim:
            console.print(
                f"app served at {sim.base_url} "
                f"(state in Azurite, compute simulated: profile {args.profile!r}); "
                "the devhost does not check function keys, so no --key",
                soft_wrap=True,
            )
            target = Target(base_url=sim.base_url, key=None, url_source="the demo's devhost")
            with Client(target, timeout=60) as client:
                for policy in policies:
                    sim.new_cloud(args.profile, args.seed)  # same dice for every policy
                    results[policy] = run_one(client, args, policy, elapsed_label=elapsed_label)
    finally:
        azurite.stop()
    if len(results) > 1:
        makespan = f"makespan ({VIRTUAL})" if elapsed_label == VIRTUAL else "makespan"
        console.print(
            render.summary_table(
                {policy: final["summary"] for policy, final in results.items()},
                title="summary: the policies side by side",
                makespan_label=makespan,
            )
        )
    console.print(f"structured logs of the run: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
