"""What the client prints, from the JSON shapes the API returns."""

from __future__ import annotations

from rich.console import Console

from waa_cli import render


def test_the_results_table_shows_per_trial_columns_only_when_there_are_trials() -> None:
    def row(domain: str, trials: int) -> dict[str, object]:
        spread = trials > 1
        return {"domain": domain, "tasks": 3, "tasks_run": 3, "success_rate_run": 0.5,
                "success_rate_all": 0.5, "mean_score": 0.5, "trials": trials,
                "runs": 3 * trials, "runs_completed": 3 * trials,
                "success_rate_std": 0.1 if spread else None,
                "success_rate_min": 0.4 if spread else None,
                "success_rate_max": 0.6 if spread else None}  # fmt: skip

    def shown(trials: int) -> str:
        console = Console(width=200, record=True)
        table = {"domains": [row("chrome", trials)], "overall": row("all", trials)}
        console.print(render.results_table(table))
        return console.export_text()

    one, three = shown(1), shown(3)
    assert "trials" not in one and "± std" not in one and "50.0%" in one
    assert "trials" in three and "± std" in three and "10.0%" in three and "60.0%" in three


def test_the_end_of_watch_says_where_the_artifacts_are_when_they_were_uploaded() -> None:
    from waa_cli.app import show_end

    overall = {"domain": "all", "tasks": 1, "tasks_run": 1, "success_rate_run": 1.0,
               "success_rate_all": 1.0, "mean_score": 1.0}  # fmt: skip
    final = {"evaluation_id": "abc", "state": "completed", "policy": "resilient"}
    prefix = "https://acct.blob.core.windows.net/artifacts/abc/"
    for summary, expected in (
        ({"artifacts": {"container_url": prefix[:-4], "prefix": prefix}}, True),
        ({}, False),
    ):
        console = Console(width=200, record=True)
        show_end(console, {**final, "summary": summary}, {"domains": [], "overall": overall})
        text = console.export_text()
        assert (f"artifacts (resilient): {prefix}" in text) is expected, text


def _status(distribution: str | None, slots: list[dict[str, object]]) -> dict[str, object]:
    return {"evaluation_id": "abc", "policy": "resilient", "distribution": distribution,
            "created_at": "2026-01-01T00:00:00+00:00", "elapsed_seconds": 3600.0,
            "shards": slots}  # fmt: skip


def _slot(index: int, task: str | None, since: str | None) -> dict[str, object]:
    return {"shard": index, "tasks": 16, "tier": "azureml", "attempt": 1, "status": "running",
            "job_state": "running", "seconds_since_heartbeat": 4.0, "failovers": 0,
            "current_task": task, "current_task_since": since}  # fmt: skip


def _shown(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_slot_table_shows_each_slots_task_in_progress() -> None:
    view = _status(
        "queue",
        [
            # Claimed 12 minutes before the status document's own clock (created + elapsed).
            _slot(0, "366de66e-cbae-4d72-b042-26390db2b145-WOS", "2026-01-01T00:48:00+00:00"),
            _slot(1, None, None),
        ],
    )
    text = _shown(render.shard_table(view))
    assert "(resilient, queue)" in text
    assert "slot" in text and "task in progress" in text
    assert "366de66e-cbae-4d72-b042-26390db2b145-WOS (12.0 min)" in text
    rows = [line for line in text.splitlines() if "azureml" in line]
    assert len(rows) == 2 and rows[1].rstrip().rstrip("│").rstrip().endswith("-")
    assert render.units(view) == "slots"


def test_a_static_evaluation_keeps_its_shard_table() -> None:
    for distribution in ("static", None):  # None: a server from before the queue
        view = _status(distribution, [{**_slot(0, None, None)}])
        text = _shown(render.shard_table(view))
        assert "task in progress" not in text and "shard" in text
        assert render.units(view) == "shards"


def test_the_status_table_names_the_distribution() -> None:
    view = {**_status("queue", []), "state": "running", "workers": 4, "vm_size": "D8",
            "tiers": ["azureml"], "eta_seconds": 60.0,
            "counts": {"total": 1, "completed": 0, "failed": 0, "running": 1, "pending": 0,
                       "not_run": 0}}  # fmt: skip
    text = _shown(render.status_table(view))
    assert any(line.split("│")[1:3] and "distribution" in line and "queue" in line
               for line in text.splitlines())  # fmt: skip
