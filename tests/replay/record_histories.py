"""Record Durable histories of a simulated evaluation as a replay fixture.

    .venv/bin/python -m tests.replay.record_histories tests/replay/histories.json

Runs one evaluation on the devhost (the memory instance store, state in a throwaway Azurite, the
simulated Azure under the `seed` profile) and writes two snapshots of the instance store: one
taken mid-run (the evaluation and some shards still waiting on activities, timers and events)
and one after the evaluation ended. `test_replay.py` replays them with the code of the day: a
history recorded by an older deploy must still replay, with the same actions and the same
inputs, to the same result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devhost.azurite import start_azurite
from devhost.simulation import Simulation
from devhost.store import MemoryInstanceStore

# Shards of the smoke set on the `seed` profile: a missed start and its retry, a shard that ends
# with tasks left. The second evaluation is cancelled by its user once a job has started.
REQUEST = {"task_set": "waa-smoke", "workers": 3, "task_retries": 1}
CANCELLED_REQUEST = {"task_set": "waa-smoke", "workers": 2}


def _raised(snapshot: dict[str, str], prefix: str) -> int:
    return sum(
        1
        for encoded in snapshot.values()
        for e in json.loads(encoded)["history"]
        if e["EventType"] == 15 and e["Name"].startswith(prefix)
    )


def _finished_attempts(snapshot: dict[str, str]) -> int:
    done = 0
    for encoded in snapshot.values():
        history = json.loads(encoded)["history"]
        scheduled = {e["EventId"]: e["Name"] for e in history if e["EventType"] == 4}
        done += sum(
            1
            for e in history
            if e["EventType"] == 5 and scheduled.get(e["TaskScheduledId"]) == "finish_attempt"
        )
    return done


def record() -> dict[str, Any]:
    azurite = start_azurite()
    try:
        sim = Simulation(
            connection_string=azurite.connection_string, profile="seed", seed=7, store="memory"
        ).start()
        try:
            store = sim.host.engine.store
            assert isinstance(store, MemoryInstanceStore)
            r = sim.start_evaluation(REQUEST)
            r.raise_for_status()
            evaluation_id = r.json()["evaluation_id"]
            mid: dict[str, str] | None = None
            deadline = time.monotonic() + 300
            while mid is None and time.monotonic() < deadline:
                snap = store.snapshot()
                if _finished_attempts(snap) >= 2:
                    mid = snap
                time.sleep(0.005)
            assert mid is not None, "no attempt ended within 5 minutes"
            final_view = sim.wait(evaluation_id, timeout=300)
            r = sim.start_evaluation(CANCELLED_REQUEST)
            r.raise_for_status()
            cancelled_id = r.json()["evaluation_id"]
            started = _raised(store.snapshot(), "container_started")
            while _raised(store.snapshot(), "container_started") == started:
                assert time.monotonic() < deadline, "no container started"
                time.sleep(0.005)
            sim.cancel(cancelled_id).raise_for_status()
            cancelled_view = sim.wait(cancelled_id, timeout=300)
            final = store.snapshot()
        finally:
            sim.stop()
    finally:
        azurite.stop()
    # RECORDED_AT names the commit when the recorder runs on an exported tree (`git archive`).
    commit = (
        os.environ.get("RECORDED_AT")
        or subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    return {
        "recorded_at_commit": commit,
        "request": REQUEST,
        "evaluation_id": evaluation_id,
        "counts": final_view["counts"],
        "cancelled_evaluation_id": cancelled_id,
        "cancelled_counts": cancelled_view["counts"],
        "mid_run": {k: json.loads(v) for k, v in sorted(mid.items())},
        "final": {k: json.loads(v) for k, v in sorted(final.items())},
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/replay/histories.json")
    out.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
