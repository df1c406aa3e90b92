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
