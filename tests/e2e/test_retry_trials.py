"""Retry and trials end to end on the devhost (issue 9, part 8): a retry evaluation runs exactly
the runs its source left unfinished, with the source's settings and the body's overrides, linked
both ways; trials multiply the runs (run keys "<task>#<k>") and the results table shows the mean
and the spread across trials."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import requests

from adapters import runtime
from adapters.compute.simulated import NoNestedVirtualization
from adapters.compute.simulated.profiles import FaultProfile, TierFaults
from devhost.simulation import Simulation
from domain.jobs import JobSpec
from domain.tasksets import load_task_set, split_run_key, task_refs
from tests.e2e.scenario_support import VirtualWatch, assert_invariants, start, store_rows

MakeSimulation = Callable[..., Simulation]
WAIT = 180.0
# Azure ML only, where a quarter of the runs fail (the agent crashed): with no task retries, the
# source evaluation ends with failed runs as well as the not-run ones of the shard scripted below.
FLAKY = FaultProfile("flaky-tasks", azureml=TierFaults(task_failure=0.25))
SMOKE_IDS = [t.task_id for t in task_refs(load_task_set("waa-smoke"))]


def _retry(sim: Simulation, evaluation_id: str, body: Any = None) -> requests.Response:
    return sim.http.post(
        f"{sim.base_url}/api/evaluations/{evaluation_id}/retry", json=body, timeout=60
    )


def _specs(sim: Simulation, evaluation_id: str) -> list[JobSpec]:
    return [job.spec for job in sim.cloud._jobs.values() if job.spec.evaluation_id == evaluation_id]


def test_a_retry_runs_exactly_the_unfinished_runs_and_links_both_ways(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    sim.new_cloud(FLAKY, sim.seed)
    # Shard 0's only tier has no nested virtualization: its runs end not run.
    sim.cloud.script(
        lambda spec: spec.shard_index == 0 and spec.attempt == 1,
        NoNestedVirtualization(),
        times=1,
    )
    body = {
        "task_set": "waa-smoke",
        # Static shards: shard 0's own runs end not run (its only job fails for good), so the
        # retry has a known set of unfinished runs; the retry keeps the source's distribution.
        "distribution": "static",
        "workers": 3,
        "tiers": ["azureml"],
        "task_retries": 0,
        "trials": 2,
        "som_origin": "a11y",
        "max_steps": 20,
    }
    eid = start(sim, body)

    def some_done() -> bool:
        return any(t["outcome"] == "completed" for t in store_rows(eid)["tasks"])

    # While the source runs, a retry would run its open runs twice: refused.
    early = VirtualWatch(sim.host.clock, some_done, lambda: _retry(sim, eid)).wait(WAIT)
    assert early.status_code == 409 and "still running" in early.json()["error"], early.text

    runs = [f"{t}#{k}" for k in range(2) for t in SMOKE_IDS]
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final, task_ids=runs)
    outcomes = {t["task_id"]: t["outcome"] for t in final["tasks"]}
    shard_0 = {t["task_id"] for t in final["tasks"] if t["shard"] == 0}
    assert shard_0 and all(outcomes[r] == "not_run" for r in shard_0), final["tasks"]
    unfinished = {r for r, o in outcomes.items() if o != "completed"}
    finished = set(runs) - unfinished
    assert finished, "the source completed nothing: the scenario tests nothing"
    assert "failed" in outcomes.values(), outcomes  # the agent crashed on some runs

    # Bad requests name the field and start nothing.
    for bad, field in (
        ({"nonsense": 1}, "nonsense"),
        ({"max_steps": 0}, "max_steps"),
        ({"tasks": ["x"]}, "tasks"),
        ({"trials": 3}, "trials"),
        ({"force": "yes"}, "force"),
    ):
        r = _retry(sim, eid, bad)
        assert r.status_code == 400 and r.json()["field"] == field, (bad, r.text)
    missing = _retry(sim, "nosuchevaluation")
    assert missing.status_code == 404 and missing.json()["field"] == "evaluation_id"
    assert sim.status(eid, tasks=False)["retried_by"] == []

    r = _retry(sim, eid, {"max_steps": 30})
    assert r.status_code == 202, r.text
    created = r.json()
    rid = created["evaluation_id"]
    assert created["created"] and created["retry_of"] == eid
    assert (created["runs"], created["trials"]) == (len(unfinished), 2)
    assert created["tasks"] == len({split_run_key(u)[0] for u in unfinished})
    # A double click: the same retry, not a second one.
    again = _retry(sim, eid, {"max_steps": 30})
    assert again.status_code == 200 and again.json()["evaluation_id"] == rid, again.text
    assert not again.json()["created"]

    retried = sim.wait(rid, timeout=WAIT)
    # Exactly the unfinished runs, each under its own run key (so in its own trial).
    assert_invariants(sim, rid, retried, task_ids=unfinished)
    assert {t["task_id"] for t in retried["tasks"]}.isdisjoint(finished)
    assert all(t["trial"] == split_run_key(t["task_id"])[1] for t in retried["tasks"])
    # Linked both ways.
    assert retried["retry_of"] == eid and retried["retried_by"] == []
    source = sim.status(eid, tasks=False)
    assert source["retried_by"] == [rid] and source["retry_of"] is None
    # The source's settings, with the body's override.
    specs = _specs(sim, rid)
    assert specs
    for spec in specs:
        assert spec.environment["WAA_SOM_ORIGIN"] == "a11y"
        assert spec.environment["WAA_MAX_STEPS"] == "30"
        assert spec.tier.value == "azureml"
        assert set(spec.task_ids) <= unfinished
    assert int(store_rows(rid)["evaluation"]["workers"]) <= 3

    # Once a retry exists, another returns it; `force` starts the next one.
    existing = _retry(sim, eid)
    assert existing.status_code == 200 and existing.json()["evaluation_id"] == rid
    forced = _retry(sim, eid, {"force": True})
    assert forced.status_code == 202, forced.text
    rid2 = forced.json()["evaluation_id"]
    assert rid2 != rid
    final2 = sim.wait(rid2, timeout=WAIT)
    assert_invariants(sim, rid2, final2, task_ids=unfinished)
    assert sim.status(eid, tasks=False)["retried_by"] == [rid, rid2]
    store = runtime.services().store
    assert store.get_evaluation(rid2)["retry_of"] == eid  # type: ignore[index]


def test_trials_multiply_the_runs_and_the_table_shows_the_spread(
    make_simulation: MakeSimulation,
) -> None:
    sim = make_simulation(profile="none")
    r = sim.start_evaluation({"task_set": "waa-smoke", "workers": 4, "trials": 3})
    assert r.status_code == 202, r.text
    started = r.json()
    assert (started["tasks"], started["trials"], started["runs"]) == (12, 3, 36)
    eid = started["evaluation_id"]
    final = sim.wait(eid, timeout=WAIT)
    runs = {f"{t}#{k}" for k in range(3) for t in SMOKE_IDS}
    assert_invariants(sim, eid, final, task_ids=runs)
    assert final["counts"]["total"] == final["counts"]["completed"] == 36
    assert final["trials"] == 3
    # Every job asked the queue for its runs, by run key, which it reports results under.
    specs = _specs(sim, eid)
    assert all(s.queue and s.environment["WAA_TASK_SOURCE"] == "queue" for s in specs)
    assert {t["task_id"] for t in store_rows(eid)["tasks"] if t.get("job_name")} == runs

    # Trials differ (each run draws its own score) ...
    scores: dict[str, set[float]] = defaultdict(set)
    for task in final["tasks"]:
        scores[task["task"]].add(task["score"])
    assert any(len(s) > 1 for s in scores.values()), scores

    # ... and the table reports, per domain, tasks, runs and mean ± std of the per-trial rate.
    url = f"{sim.base_url}/api/evaluations/{eid}/results"
    table = sim.http.get(url, timeout=60).json()
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in final["tasks"]:
        by_domain[task["domain"]].append(task)
    for row in [*table["domains"], table["overall"]]:
        tasks = by_domain[row["domain"]] if row["domain"] != "all" else final["tasks"]
        per_trial = [
            statistics.fmean(t["score"] for t in tasks if t["trial"] == k) for k in range(3)
        ]
        assert (row["trials"], row["runs"], row["runs_completed"]) == (3, len(tasks), len(tasks))
        assert row["tasks"] == len(tasks) // 3
        assert row["success_rate_all"] == round(statistics.fmean(per_trial), 4)
        assert row["success_rate_std"] == round(statistics.stdev(per_trial), 4)
        assert row["success_rate_min"] == round(min(per_trial), 4)
        assert row["success_rate_max"] == round(max(per_trial), 4)
    assert final["summary"]["results"] == {k: table[k] for k in ("domains", "overall")}
    markdown = sim.http.get(url, params={"format": "markdown"}, timeout=60).text
    assert "mean ± std" in markdown.splitlines()[0]
    assert markdown.splitlines()[-1].startswith("| **all** | ")
    csv_text = sim.http.get(url, params={"format": "csv"}, timeout=60).text
    assert "success_rate_std" in csv_text.splitlines()[0]

    # Everything completed: nothing to retry.
    nothing = _retry(sim, eid)
    assert nothing.status_code == 409 and "nothing to retry" in nothing.json()["error"]
