"""The agent's score, as WAA users report it: a table per domain and for all domains.

Kept apart from the run outcome on purpose (issue 9, part 7): `completed / failed / not run`
says whether the infrastructure finished a task; the score says how well the agent did on the
tasks that completed. WAA's `scripts/show_azure.py` reports per domain the share of tasks solved
and counts a task without `result.txt` as not solved (see /work/shared/DESIGN.md, "WAA's launch
contract"), so `success_rate_all` counts a task that did not complete as 0, and
`success_rate_run` is the same figure over the tasks that completed only. WAA's `run.py`
`get_result` prints "Current Success Rate" as the mean of the result.txt floats, so a task's
score in [0, 1] is its share of success, and the two rates are means of scores.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Any

from domain.outcomes import TaskOutcome

ALL_DOMAINS = "all"
RESULT_FORMATS = ("json", "csv", "markdown")
COLUMNS = (
    "domain",
    "tasks",
    "tasks_run",
    "success_rate_run",
    "success_rate_all",
    "mean_score",
)


@dataclass(frozen=True)
class DomainResult:
    domain: str
    tasks: int
    tasks_run: int
    # Mean score over the tasks that completed; None when none did (no figure, not 0).
    success_rate_run: float | None
    # Mean score over all tasks, a task without a result counting as 0 (WAA's table).
    success_rate_all: float
    # Mean score over the completed tasks (as run.py's "Average score"); None when none ran.
    mean_score: float | None


def _row(domain: str, tasks: list[dict[str, Any]]) -> DomainResult:
    scores = [
        float(t.get("score") or 0.0)
        for t in tasks
        if t.get("outcome") == TaskOutcome.COMPLETED.value
    ]
    run = len(scores)
    total = sum(scores)
    mean = round(total / run, 4) if run else None
    return DomainResult(
        domain=domain,
        tasks=len(tasks),
        tasks_run=run,
        success_rate_run=mean,
        success_rate_all=round(total / len(tasks), 4) if tasks else 0.0,
        mean_score=mean,
    )


def results_table(tasks: list[dict[str, Any]]) -> list[DomainResult]:
    """One row per domain (sorted by name), then the `all` row over every task."""
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


def table_markdown(rows: list[DomainResult]) -> str:
    """A markdown table in the shape of WAA's results table: one line per domain, then all
    domains, with the success rate over all tasks as the headline column."""
    lines = [
        "| Domain | Success rate | Tasks | Tasks run | Success rate (run) | Mean score |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean = "-" if r.mean_score is None else f"{r.mean_score:.3f}"
        name = "**all**" if r.domain == ALL_DOMAINS else r.domain
        lines.append(
            f"| {name} | {_pct(r.success_rate_all)} | {r.tasks} | {r.tasks_run} "
            f"| {_pct(r.success_rate_run)} | {mean} |"
        )
    return "\n".join(lines) + "\n"
