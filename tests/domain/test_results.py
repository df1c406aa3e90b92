"""The results table (domain/results.py): the agent's score per domain, apart from the run
outcome, as WAA's show_azure.py counts it (a task without a result counts as not solved)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from domain.results import (
    ALL_DOMAINS,
    DomainResult,
    results_table,
    table_csv,
    table_json,
    table_markdown,
)


def _task(domain: str, outcome: str, score: float | None = None) -> dict[str, Any]:
    return {
        "task_id": f"{domain}-{outcome}-{score}",
        "domain": domain,
        "outcome": outcome,
        "score": score,
    }


TASKS = [
    _task("notepad", "completed", 1.0),
    _task("notepad", "completed", 0.0),
    _task("notepad", "failed", 0.0),
    _task("notepad", "not_run"),
    _task("chrome", "completed", 1.0),
    _task("chrome", "completed", 0.5),
    _task("vlc", "not_run"),
]


def test_one_row_per_domain_then_all() -> None:
    rows = {r.domain: r for r in results_table(TASKS)}
    assert list(rows) == ["chrome", "notepad", "vlc", ALL_DOMAINS]
    assert rows["notepad"] == DomainResult("notepad", 4, 2, 0.5, 0.25, 0.5)
    assert rows["chrome"] == DomainResult("chrome", 2, 2, 0.75, 0.75, 0.75)
    # Nothing ran: no rate over tasks run (not a 0 that reads as "the agent failed them all").
    assert rows["vlc"] == DomainResult("vlc", 1, 0, None, 0.0, None)
    assert rows[ALL_DOMAINS] == DomainResult(ALL_DOMAINS, 7, 4, 0.625, round(2.5 / 7, 4), 0.625)


def test_the_failed_run_score_does_not_count_as_a_result() -> None:
    # A failed task's row may carry a score of 0 (the runner's default); it is not a result.
    rows = results_table([_task("clock", "failed", 1.0), _task("clock", "completed", 1.0)])
    assert (rows[0].tasks, rows[0].tasks_run, rows[0].success_rate_all) == (2, 1, 0.5)


@pytest.mark.parametrize("tasks", [TASKS, [TASKS[0]], []])
def test_the_all_row_matches_the_domain_rows(tasks: list[dict[str, Any]]) -> None:
    rows = results_table(tasks)
    domains, overall = rows[:-1], rows[-1]
    assert overall.tasks == sum(r.tasks for r in domains) == len(tasks)
    assert overall.tasks_run == sum(r.tasks_run for r in domains)
    solved = sum((r.success_rate_all or 0) * r.tasks for r in domains)
    assert overall.success_rate_all == pytest.approx(
        solved / len(tasks) if tasks else 0.0, abs=1e-4
    )


def test_json_csv_and_markdown_agree() -> None:
    rows = results_table(TASKS)
    data = table_json(rows)
    assert [d["domain"] for d in data["domains"]] == ["chrome", "notepad", "vlc"]
    assert data["overall"]["tasks"] == 7
    parsed = list(csv.DictReader(io.StringIO(table_csv(rows))))
    assert [p["domain"] for p in parsed] == ["chrome", "notepad", "vlc", "all"]
    assert parsed[1]["success_rate_all"] == "0.25" and parsed[2]["success_rate_run"] == ""
    lines = table_markdown(rows).splitlines()
    assert lines[0].startswith("| Domain | Success rate |")
    assert lines[3] == "| notepad | 25.0% | 4 | 2 | 50.0% | 0.500 |"
    assert lines[4] == "| vlc | 0.0% | 1 | 0 | - | - |"
    assert lines[-1].startswith("| **all** | 35.7% | 7 | 4 |")
