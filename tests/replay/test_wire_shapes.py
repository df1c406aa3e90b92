"""Today's code writes the shapes the recorded histories hold: every activity's input and
result, every orchestration input and output, every event payload (the keys, and for the
snapshotted `job` and `policy` their keys too). `test_replay.py` proves old histories still read;
this proves new histories look like them, so a deploy can also be rolled back.

The run is the recorder's first evaluation (smoke set, `seed` profile); its dice are not the
recording's, so a shape is compared, not a value. The additions since the recording:
`close_shard` (and so the shard's output) also says its reason; the job snapshot (and so
`submit_job`'s input, which extends it) carries WAA's `som_origin` and `a11y_backend` (issue 9,
part 5), which an older deploy ignores (contracts ignore extra fields); the evaluation's
summary has its results table and says `completion_rate` for `success_rate` (part 7), and
once artifacts were uploaded, where they are (part 6); the policy may carry the half-open
breaker's `breaker_cooldown_seconds` (issue 10).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.simulation import Simulation
from devhost.store import MemoryInstanceStore
from tests.replay.record_histories import REQUEST

pytestmark = pytest.mark.azurite

RECORDED = json.loads(Path(__file__).with_name("histories.json").read_text())
ADDED_SINCE = {
    ("result", "close_shard"): frozenset({"reason"}),
    ("result", "shard"): frozenset({"reason"}),
    # The summary's results table (issue 9, part 7) and where the artifacts are (part 6).
    ("result", "evaluation"): frozenset({"results", "artifacts"}),
    ("result", "finalize_evaluation"): frozenset({"results", "artifacts"}),
}
# The summary's `success_rate` is now `completion_rate` (the same figure, renamed so nobody
# takes it for the agent's score); adapters/state/views.read_summary reads old ones.
RENAMED_SINCE = {
    ("result", "evaluation"): {"completion_rate": "success_rate"},
    ("result", "finalize_evaluation"): {"completion_rate": "success_rate"},
}
NOTHING: frozenset[str] = frozenset()
ADDED_TO_JOB = frozenset({"som_origin", "a11y_backend", "model_provider"})
# The half-open breaker's cooldown (issue 10), sent only when set (domain/contracts.py).
ADDED_TO_POLICY = frozenset({"breaker_cooldown_seconds"})
NESTED = ("job", "policy")

Shape = tuple[tuple[str, Any], ...]


def _shape(value: Any) -> Shape | str:
    if not isinstance(value, dict):
        return "value"
    return tuple(sorted((k, _shape(v) if k in NESTED else "value") for k, v in value.items()))


def _shapes(instances: dict[str, dict[str, Any]]) -> dict[tuple[str, str], set[Any]]:
    out: dict[tuple[str, str], set[Any]] = {}

    def add(kind: str, name: str, text: str | None, drop: frozenset[str] = NOTHING) -> None:
        if text is None:
            return
        value = json.loads(text)
        if isinstance(value, dict):
            renamed = RENAMED_SINCE.get((kind, name), {})
            value = {renamed.get(k, k): v for k, v in value.items() if k not in drop | ADDED_TO_JOB}
            if isinstance(value.get("job"), dict):
                value["job"] = {k: v for k, v in value["job"].items() if k not in ADDED_TO_JOB}
            if isinstance(value.get("policy"), dict):
                value["policy"] = {
                    k: v for k, v in value["policy"].items() if k not in ADDED_TO_POLICY
                }
        out.setdefault((kind, name), set()).add(_shape(value))

    for state in instances.values():
        rec, history = state["rec"], state["history"]
        add("input", rec["name"], rec["input_json"])
        add(
            "result",
            rec["name"],
            rec["output_json"],
            ADDED_SINCE.get(("result", rec["name"]), NOTHING),
        )
        results = {
            e["TaskScheduledId"]: e.get("Result") for e in history if e["EventType"] in (5, 8)
        }
        for e in history:
            if e["EventType"] in (4, 7):  # an activity scheduled, a sub-orchestration created
                add("input", e["Name"], e["Input"])
                drop = ADDED_SINCE.get(("result", e["Name"]), NOTHING)
                add("result", e["Name"], results.get(e["EventId"]), drop)
            elif e["EventType"] == 15:
                add("event", e["Name"].rstrip("0123456789"), e["Input"])
    return out


@pytest.fixture
def simulation(azurite_connection_string: str) -> Iterator[Simulation]:
    sim = Simulation(connection_string=azurite_connection_string, profile="seed", seed=7).start()
    yield sim
    sim.stop()


def test_a_run_of_today_writes_the_recorded_shapes(simulation: Simulation) -> None:
    store = simulation.host.engine.store
    assert isinstance(store, MemoryInstanceStore)
    # Static shards: the recorded histories are static shards' (queue runs have new shapes of
    # their own, which an older deploy never ran), so today's static run is what must match.
    r = simulation.start_evaluation({**REQUEST, "distribution": "static"})
    assert r.status_code == 202, r.text
    simulation.wait(r.json()["evaluation_id"], timeout=120)
    today = _shapes({k: json.loads(v) for k, v in store.snapshot().items()})
    recorded = _shapes(RECORDED["final"])
    assert today, "nothing recorded"
    for key, shapes in today.items():
        # A kind of message the recording has: each shape today is one it holds (the run may
        # not take every path, and a value may be null in one run and set in another).
        assert key in recorded, f"{key} is new since the recording"
        for shape in shapes:
            assert shape in recorded[key], f"{key}: {shape} is not among {recorded[key]}"
