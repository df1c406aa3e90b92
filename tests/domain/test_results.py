"""The results table (domain/results.py): the agent's score per domain, apart from the run
outcome, as WAA's show_azure.py counts it (a task without a result counts as not solved)."""

from __future__ import annotations

import csv
import io
import statistics
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
    # One trial: every task is one run, and there is no spread.
    assert rows["notepad"] == DomainResult("notepad", 4, 2, 0.5, 0.25, 0.5, 1, 4, 2)
    assert rows["chrome"] == DomainResult("chrome", 2, 2, 0.75, 0.75, 0.75, 1, 2, 2)
    # Nothing ran: no rate over tasks run (not a 0 that reads as "the agent failed them all").
    assert rows["vlc"] == DomainResult("vlc", 1, 0, None, 0.0, None, 1, 1, 0)
    assert rows[ALL_DOMAINS] == DomainResult(
        ALL_DOMAINS, 7, 4, 0.625, round(2.5 / 7, 4), 0.625, 1, 7, 4
    )


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


# --- trials: runs "<task>#<k>", mean and spread of the per-trial success rate -------------------


def _run(task: str, trial: int, domain: str, outcome: str, score: float | None) -> dict[str, Any]:
    return {"task_id": f"{task}#{trial}", "domain": domain, "outcome": outcome, "score": score}


# Three trials of two notepad tasks and one chrome task.
RUNS = [
    # trial 0: notepad 2/2, chrome 0/1
    _run("n1", 0, "notepad", "completed", 1.0),
    _run("n2", 0, "notepad", "completed", 1.0),
    _run("c1", 0, "chrome", "completed", 0.0),
    # trial 1: notepad 1/2, chrome 1/1
    _run("n1", 1, "notepad", "completed", 1.0),
    _run("n2", 1, "notepad", "completed", 0.0),
    _run("c1", 1, "chrome", "completed", 1.0),
    # trial 2: notepad 0/2 (one did not run: counts as 0), chrome 1/1
    _run("n1", 2, "notepad", "not_run", None),
    _run("n2", 2, "notepad", "completed", 0.0),
    _run("c1", 2, "chrome", "completed", 1.0),
]


def test_trials_give_the_mean_and_the_spread_of_the_per_trial_rate() -> None:
    rows = {r.domain: r for r in results_table(RUNS)}
    notepad = rows["notepad"]
    # Per-trial success rates 1.0, 0.5, 0.0: mean 0.5, sample std 0.5, range 0..1.
    assert (notepad.tasks, notepad.trials, notepad.runs, notepad.runs_completed) == (2, 3, 6, 5)
    assert notepad.tasks_run == 2  # both tasks have a completed run
    assert notepad.success_rate_all == 0.5
    assert notepad.success_rate_run == round(3 / 5, 4)
    assert notepad.success_rate_std == 0.5
    assert (notepad.success_rate_min, notepad.success_rate_max) == (0.0, 1.0)
    chrome = rows["chrome"]
    # Per-trial 0, 1, 1: mean 2/3, sample std sqrt(1/3).
    assert chrome.success_rate_all == round(2 / 3, 4)
    assert chrome.success_rate_std == round(statistics.stdev([0.0, 1.0, 1.0]), 4)
    overall = rows[ALL_DOMAINS]
    # Per-trial over all three tasks: 2/3, 2/3, 1/3.
    assert (overall.tasks, overall.runs, overall.trials) == (3, 9, 3)
    assert overall.success_rate_all == round(5 / 9, 4)
    assert overall.success_rate_std == round(statistics.stdev([2 / 3, 2 / 3, 1 / 3]), 4)
    assert (overall.success_rate_min, overall.success_rate_max) == (
        round(1 / 3, 4),
        round(2 / 3, 4),
    )


def test_the_spread_in_every_format() -> None:
    rows = results_table(RUNS)
    data = table_json(rows)
    assert data["overall"]["success_rate_std"] == rows[-1].success_rate_std
    assert {d["domain"]: d["trials"] for d in data["domains"]} == {"chrome": 3, "notepad": 3}
    parsed = {p["domain"]: p for p in csv.DictReader(io.StringIO(table_csv(rows)))}
    assert parsed["notepad"]["success_rate_std"] == "0.5"
    assert parsed["notepad"]["runs"] == "6" and parsed["all"]["trials"] == "3"
    lines = table_markdown(rows).splitlines()
    assert lines[0].startswith("| Domain | Success rate (mean ± std) | Min-max | Trials |")
    assert lines[3] == "| notepad | 50.0% ± 50.0% | 0.0%-100.0% | 3 | 2 | 6 | 5 | 60.0% | 0.600 |"
    assert lines[-1].startswith("| **all** | 55.6% ± 19.2% | 33.3%-66.7% | 3 | 3 | 9 | 8 |")


def test_one_trial_has_no_spread() -> None:
    row = results_table(TASKS)[-1]
    assert row.trials == 1
    assert (row.success_rate_std, row.success_rate_min, row.success_rate_max) == (None,) * 3
    assert "±" not in table_markdown(results_table(TASKS))
    # A run key's trial suffix alone (one trial present, e.g. a retry of trial 1) has none either.
    single = results_table([_run("n1", 1, "notepad", "completed", 1.0)])[-1]
    assert (single.trials, single.success_rate_std, single.tasks) == (1, None, 1)
