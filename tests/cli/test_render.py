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
