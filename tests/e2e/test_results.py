"""The results endpoint end to end on the devhost: the per-domain table matches the task rows
of the status, the summary keeps the run outcome apart from the agent's score."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from devhost.simulation import Simulation


def test_the_results_table_matches_the_task_rows(
    make_simulation: Callable[..., Simulation],
) -> None:
    sim = make_simulation(profile="seed")
    body = {"task_set": "waa-smoke", "workers": 3, "som_origin": "a11y", "a11y_backend": "win32"}
    r = sim.start_evaluation(body)
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    final = sim.wait(eid, timeout=180)
    # The request's WAA agent settings reached every job (the runner passes them to run.py).
    specs = [job.spec for job in sim.cloud._jobs.values()]
    assert specs
    for spec in specs:
        assert spec.environment["WAA_SOM_ORIGIN"] == "a11y"
        assert spec.environment["WAA_A11Y_BACKEND"] == "win32"
    url = f"{sim.base_url}/api/evaluations/{eid}/results"

    table = sim.http.get(url, timeout=60)
    assert table.status_code == 200, table.text
    body = table.json()
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in final["tasks"]:
        by_domain[task["domain"]].append(task)
    assert [d["domain"] for d in body["domains"]] == sorted(by_domain)
    for row in body["domains"]:
        tasks = by_domain[row["domain"]]
        done = [t for t in tasks if t["outcome"] == "completed"]
        solved = sum(t["score"] for t in done)
        assert row["tasks"] == len(tasks)
        assert row["tasks_run"] == len(done)
        assert row["success_rate_all"] == round(solved / len(tasks), 4)
        assert row["success_rate_run"] == (round(solved / len(done), 4) if done else None)
    overall = body["overall"]
    assert overall["tasks"] == final["counts"]["total"]
    assert overall["tasks_run"] == final["counts"]["completed"]
    # The summary: the run outcome (completion rate) and the agent's result, side by side.
    summary = final["summary"]
    assert "success_rate" not in summary
    assert summary["completion_rate"] == round(overall["tasks_run"] / overall["tasks"], 4)
    assert summary["results"]["overall"] == overall
    assert final["results"] == {k: body[k] for k in ("domains", "overall")}

    rows = list(csv.DictReader(io.StringIO(sim.http.get(url, params={"format": "csv"}).text)))
    assert [row["domain"] for row in rows] == [*sorted(by_domain), "all"]
    markdown = sim.http.get(url, params={"format": "markdown"})
    assert markdown.headers["Content-Type"].startswith("text/markdown")
    assert markdown.text.splitlines()[-1].startswith("| **all** | ")

    bad = sim.http.get(url, params={"format": "xml"})
    assert bad.status_code == 400 and bad.json()["field"] == "format"
    missing = sim.http.get(f"{sim.base_url}/api/evaluations/no-such-evaluation/results")
    assert missing.status_code == 404 and missing.json()["field"] == "evaluation_id"
