"""The main job: a simulated WAA evaluation end to end on this machine.

Starts Azurite and the devhost, then runs the shipped WAA task set on 10 workers under the
`seed` fault profile through the HTTP API, showing live progress, and prints a summary; then
the same evaluation under the `naive` policy (the setup that failed), side by side.

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

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from adapters.logs import configure_json_logging
from devhost.azurite import start_azurite
from devhost.simulation import Simulation

console = Console()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:5.2f} h"


def _shard_table(view: dict[str, Any]) -> Table:
    table = Table(title=f"evaluation {view['evaluation_id']} ({view['policy']})", expand=False)
    for col in ("shard", "tasks", "tier", "attempt", "status", "job", "heartbeat", "failovers"):
        table.add_column(col)
    for s in view["shards"]:
        beat = s["seconds_since_heartbeat"]
        table.add_row(
            str(s["shard"]),
            str(s["tasks"]),
            s["tier"] or "-",
            str(s["attempt"]),
            s["status"],
            s["job_state"] or "-",
            f"{beat:.0f} s ago" if beat is not None else "-",
            str(s["failovers"]),
        )
    return table


def run_one(sim: Simulation, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    response = sim.start_evaluation(body)
    if response.status_code != 202:
        console.print(f"[red]start failed: {response.status_code} {response.text}")
        raise SystemExit(1)
    evaluation_id = response.json()["evaluation_id"]
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    )
    bar = progress.add_task(f"{body['policy']:>9}", total=1, info="")
    with Live(console=console, refresh_per_second=8, transient=False) as live:

        def show(view: dict[str, Any]) -> None:
            c = view["counts"]
            done = c["completed"] + c["failed"] + c["not_run"]
            cost = view["cost"]["so_far_usd"]
            info = (
                f"virtual {_hours(view['elapsed_seconds'])}  cost ${cost:.2f}  "
                f"completed {c['completed']} failed {c['failed']} "
                f"not run {c['not_run']} running {c['running']}"
            )
            progress.update(bar, total=c["total"], completed=done, info=info)
            live.update(Group(_shard_table(view), progress))

        final = sim.wait(evaluation_id, timeout=timeout, poll=0.25, on_progress=show)
        show(final)
    return final


def summary_table(results: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="summary")
    table.add_column("")
    for policy in results:
        table.add_column(policy, justify="right")
    rows: list[tuple[str, Any]] = [
        ("tasks completed", lambda s: f"{s['counts']['completed']} / {s['counts']['total']}"),
        ("tasks failed", lambda s: str(s["counts"]["failed"])),
        ("tasks not run", lambda s: str(s["counts"]["not_run"])),
        # Infrastructure: the share of tasks that ran; the agent's score is in results_table.
        ("completion rate", lambda s: f"{s['completion_rate']:.1%}"),
        (
            "agent success rate (all tasks)",
            lambda s: f"{s['results']['overall']['success_rate_all']:.1%}",
        ),
        ("makespan (virtual)", lambda s: f"{s['makespan_hours']:.2f} h"),
        ("cost", lambda s: f"${s['cost_usd']:.2f}"),
        ("cost per completed task", lambda s: f"${s['cost_per_completed_task_usd'] or 0:.3f}"),
        ("jobs (attempts)", lambda s: str(s["attempts"])),
        ("failovers", lambda s: str(s["failovers"])),
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(r["summary"]) for r in results.values()))
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def results_table(policy: str, summary: dict[str, Any]) -> Table:
    """The agent's score per domain, as WAA's results table shows it (domain/results.py)."""
    table = Table(title=f"agent results ({policy})")
    for name in ("domain", "tasks", "tasks run", "success (all)", "success (run)", "mean score"):
        table.add_column(name, justify="left" if name == "domain" else "right")
    results = summary["results"]
    for row in [*results["domains"], results["overall"]]:
        mean = row["mean_score"]
        table.add_row(
            row["domain"],
            str(row["tasks"]),
            str(row["tasks_run"]),
            _pct(row["success_rate_all"]),
            _pct(row["success_rate_run"]),
            "-" if mean is None else f"{mean:.3f}",
        )
    return table


def artifacts_line(policy: str, summary: dict[str, Any]) -> str:
    """Where the evaluation's artifacts are: the simulated jobs upload each completed task's
    folder (result.txt, traj.jsonl, a screenshot) to Azurite Blob, as the runner does."""
    where = summary.get("artifacts")
    if not where:
        return f"artifacts ({policy}): none uploaded"
    return f"artifacts ({policy}): {where['prefix']}"


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
    console.print("[bold]Starting Azurite and the local Functions host...")
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
                f"(state in Azurite, compute simulated: profile {args.profile!r})"
            )
            for policy in policies:
                sim.new_cloud(args.profile, args.seed)  # same dice for every policy
                body = {"task_set": args.task_set, "workers": args.workers, "policy": policy}
                results[policy] = run_one(sim, body, timeout=args.timeout)
                for alert in results[policy]["summary"]["alerts"]:
                    console.print(f"  [yellow]alert[/] {alert}")
    finally:
        azurite.stop()
    console.print(summary_table(results))
    for policy, final in results.items():
        console.print(results_table(policy, final["summary"]))
        console.print(artifacts_line(policy, final["summary"]), soft_wrap=True, highlight=False)
    console.print(f"structured logs of the run: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
