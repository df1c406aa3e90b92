from __future__ import annotations

from collections.abc import Callable

from devhost.simulation import Simulation


def test_happy_path_every_task_completes(make_simulation: Callable[..., Simulation]) -> None:
    sim = make_simulation(profile="none")
    r = sim.start_evaluation({"task_set": "waa-smoke", "workers": 3})
    assert r.status_code == 202, r.text
    eid = r.json()["evaluation_id"]
    final = sim.wait(eid, timeout=120)
    outcomes = {t["task_id"]: t["outcome"] for t in final["tasks"]}
    assert set(outcomes.values()) == {"completed"}, final
    assert final["state"] == "completed"
