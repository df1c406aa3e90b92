"""The agent's score, as WAA users report it: a table per domain and for all domains.

Kept apart from the run outcome on purpose (issue 9, part 7): `completed / failed / not run`
says whether the infrastructure finished a task; the score says how well the agent did on the
tasks that completed. WAA's `scripts/show_azure.py` reports per domain the share of tasks solved
and counts a task without `result.txt` as not solved (see /work/shared/DESIGN.md, "WAA's launch
contract"), so `success_rate_all` counts a task that did not complete as 0, and
`success_rate_run` is the same figure over the tasks that completed only. WAA's `run.py`
`get_result` prints "Current Success Rate" as the mean of the result.txt floats, so a task's
score in [0, 1] is its share of success, and the two rates are means of scores.

Trials (issue 9, part 8): with `trials` > 1 every task runs once per trial (run keys
"<task_id>#<k>", domain/tasksets.py). Each row then counts `tasks` (distinct tasks) and `runs`;
the rates are over runs, so `success_rate_all` is the mean of the per-trial success rates when
every trial ran the same tasks. The spread is reported as WAA users report repeated runs, mean
± standard deviation of the per-trial success rate (each trial's `success_rate_all`), with the
sample standard deviation (n - 1: the trials are a sample of the agent's runs), and the lowest
and highest per-trial rate. With one trial there is no spread: those fields are None.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from domain.outcomes import TaskOutcome
from domain.tasksets import split_run_key

ALL_DOMAINS = "all"
RESULT_FORMATS = ("json", "csv", "markdown")
COLUMNS = (
    "domain",
    "tasks",
    "tasks_run",
    "success_rate_run",
    "success_rate_all",
    "mean_score",
    "trials",
    "runs",
    "runs_completed",
    "success_rate_std",
    "success_rate_min",
    "success_rate_max",
)


@dataclass(frozen=True)
class DomainResult:
    domain: str
    # Distinct tasks, and those with at least one completed run.
    tasks: int
    tasks_run: int
    # Mean score over the runs that completed; None when none did (no figure, not 0).
    success_rate_run: float | None
    # Mean score over all runs, a run without a result counting as 0 (WAA's table).
    success_rate_all: float
    # Mean score over the completed runs (as run.py's "Average score"); None when none ran.
    mean_score: float | None
    # Trials seen among the runs, the runs, and the runs that completed.
    trials: int = 1
    runs: int = 0
    runs_completed: int = 0
    # Spread of the per-trial success rate (None with fewer than two trials): sample standard
    # deviation, lowest and highest.
    success_rate_std: float | None = None
    success_rate_min: float | None = None
    success_rate_max: float | None = None


def _score(run: dict[str, Any]) -> float | None:
    """The run's result: its score if it completed, else None (no result)."""
    if run.get("outcome") != TaskOutcome.COMPLETED.value:
        return None
    return float(run.get("score") or 0.0)


def _row(domain: str, runs: list[dict[str, Any]]) -> DomainResult:
    results = [(split_run_key(str(r.get("task_id", ""))), _score(r)) for r in runs]
    scores = [score for _, score in results if score is not None]
    completed = len(scores)
    total = sum(scores)
    mean = round(total / completed, 4) if completed else None
    per_trial: dict[int, list[float]] = defaultdict(list)
    for (_, trial), score in results:
        per_trial[trial or 0].append(score or 0.0)
    rates = [sum(v) / len(v) for _, v in sorted(per_trial.items())]
    spread = len(rates) > 1
    return DomainResult(
        domain=domain,
        tasks=len({task for (task, _), _ in results}),
        tasks_run=len({task for (task, _), score in results if score is not None}),
        success_rate_run=mean,
        success_rate_all=round(total / len(runs), 4) if runs else 0.0,
        mean_score=mean,
        trials=max(1, len(rates)),
        runs=len(runs),
        runs_completed=completed,
        success_rate_std=round(statistics.stdev(rates), 4) if spread else None,
        success_rate_min=round(min(rates), 4) if spread else None,
        success_rate_max=round(max(rates), 4) if spread else None,
    )


def results_table(tasks: list[dict[str, Any]]) -> list[DomainResult]:
    """One row per domain (sorted by name), then the `all` row over every task. `tasks` are the
    task rows of the state table: one per run."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_domain.setdefault(str(task.get("domain") or "unknown"), []).append(task)
    rows = [_row(d, ts) for d, ts in sorted(by_domain.items())]
    rows.append(_row(ALL_DOMAINS, list(tasks)))
    return rows


def table_json(rows: list[DomainResult]) -> dict[str, Any]:
    return {
        "domains": [asdict(r) for r in rows if r.domain != ALL_DOMAINS],
        "overall": asdict(rows[-1]),
    }


def table_csv(rows: list[DomainResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if v is None else v for v in asdict(r).values()])
    return out.getvalue()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _spread(r: DomainResult) -> str:
    if r.success_rate_std is None:
        return _pct(r.success_rate_all)
    return f"{_pct(r.success_rate_all)} ± {r.success_rate_std * 100:.1f}%"


def table_markdown(rows: list[DomainResult]) -> str:
    """A markdown table in the shape of WAA's results table: one line per domain, then all
    domains, with the success rate over all tasks as the headline column. With several trials
    the headline is mean ± std of the per-trial success rate, and the table adds the trials,
    the runs and the lowest and highest per-trial rate."""
    trials = any(r.trials > 1 for r in rows)
    if trials:
        lines = [
            "| Domain | Success rate (mean ± std) | Min-max | Trials | Tasks | Runs "
            "| Runs completed | Success rate (run) | Mean score |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines = [
            "| Domain | Success rate | Tasks | Tasks run | Success rate (run) | Mean score |",
            "|---|---|---|---|---|---|",
        ]
    for r in rows:
        mean = "-" if r.mean_score is None else f"{r.mean_score:.3f}"
        name = "**all**" if r.domain == ALL_DOMAINS else r.domain
        if trials:
            low_high = (
                "-"
                if r.success_rate_min is None
                else f"{_pct(r.success_rate_min)}-{_pct(r.success_rate_max)}"
            )
            lines.append(
                f"| {name} | {_spread(r)} | {low_high} | {r.trials} | {r.tasks} | {r.runs} "
                f"| {r.runs_completed} | {_pct(r.success_rate_run)} | {mean} |"
            )
        else:
            lines.append(
                f"| {name} | {_pct(r.success_rate_all)} | {r.tasks} | {r.tasks_run} "
                f"| {_pct(r.success_rate_run)} | {mean} |"
            )
    return "\n".join(lines) + "\n"
