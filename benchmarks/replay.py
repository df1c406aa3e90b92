"""Replay benchmark of the devhost engine (a script, not a test): `python -m benchmarks.replay`.

Runs an orchestration shaped like a real evaluation in time-skipping mode: an `evaluation` fans out
10 `shard` sub-orchestrations; each shard makes 3 attempts of: call `submit` -> race a
"container started" event against a 10-minute durable timer -> 16 sequential task activities.
The simulated container starts 3 virtual minutes after `submit`, except on odd shards' first
attempt, where it never starts and the timer wins. Prints wall time, orchestrator episodes,
history events and the SDK replay time per episode bucketed by the history length sent, to show
that an episode's cost grows (at most) linearly with its history.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df

from devhost.clock import VirtualClock
from devhost.engine import Engine
from devhost.functions import FunctionIndex
from devhost.store import MemoryInstanceStore

app = df.DFApp()
# The engine the `submit` activity schedules the simulated container-start event on.
_engine: Engine | None = None
START_DELAY = timedelta(minutes=3)
START_DEADLINE = timedelta(minutes=10)


@app.orchestration_trigger(context_name="context")
def evaluation(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    shards = [
        context.call_sub_orchestrator("shard", {**spec, "shard": i}, f"{context.instance_id}:s{i}")
        for i in range(spec["shards"])
    ]
    results = yield context.task_all(shards)
    return {"tasks": sum(len(r["results"]) for r in results), "shards": len(results)}


@app.orchestration_trigger(context_name="context")
def shard(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    results: list[Any] = []
    started = 0
    for attempt in range(spec["attempts"]):
        yield context.call_activity(
            "submit", {"instance": context.instance_id, "shard": spec["shard"], "attempt": attempt}
        )
        deadline = context.create_timer(context.current_utc_datetime + START_DEADLINE)
        event = context.wait_for_external_event(f"started-{attempt}")
        winner = yield context.task_any([event, deadline])
        if winner == event:
            deadline.cancel()
            started += 1
        for task in range(spec["tasks"]):
            results.append(
                (yield context.call_activity("run_task", [spec["shard"], attempt, task]))
            )
        context.set_custom_status({"attempt": attempt, "started": started})
    return {"results": results, "started": started}


@app.activity_trigger(input_name="job")
def submit(job: dict[str, Any]) -> str:
    engine = _engine
    assert engine is not None
    if not (job["shard"] % 2 == 1 and job["attempt"] == 0):
        instance, name = job["instance"], f"started-{job['attempt']}"

        def container_started() -> None:
            engine.raise_event(instance, name, json.dumps("heartbeat"))

        engine.clock.call_at(engine.clock.now() + START_DELAY, container_started)
    return f"job-{job['shard']}-{job['attempt']}"


@app.activity_trigger(input_name="task")
def run_task(task: list[int]) -> dict[str, Any]:
    return {"task": task, "ok": True}


def main() -> None:
    global _engine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--bucket", type=int, default=50, help="history-length bucket width")
    args = parser.parse_args()

    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = VirtualClock(start)
    engine = Engine(FunctionIndex.from_app(app), MemoryInstanceStore(), clock)
    _engine = engine
    engine.start()
    t0 = time.perf_counter()
    spec = {"shards": args.shards, "attempts": args.attempts, "tasks": args.tasks}
    iid = engine.start_orchestration("evaluation", json.dumps(spec), "bench")
    status = engine.wait_for(iid, timeout=600)
    wall = time.perf_counter() - t0
    engine.stop()
    clock.close()

    stats = engine.stats
    print(f"result: {status.runtime_status} {status.output_json}")
    print(f"wall time: {wall:.2f} s   virtual time: {clock.now() - start}")
    print(f"orchestrator episodes: {stats.episodes}")
    print(f"history events recorded: {stats.history_events}")
    print(f"history events replayed (sum over episodes): {stats.replayed_events}")
    print(f"activities run: {stats.activities_run}")
    print(f"replay time in the SDK: {stats.replay_seconds:.2f} s")
    buckets: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for length, seconds in stats.episode_samples:
        buckets[length // args.bucket].append((length, seconds))
    print()
    print(f"{'history length':>16} {'episodes':>9} {'ms/episode':>11} {'us/event':>9}")
    for key in sorted(buckets):
        samples = buckets[key]
        ms = statistics.mean(s for _, s in samples) * 1000
        per_event = statistics.mean(s / n for n, s in samples) * 1e6
        label = f"{key * args.bucket}-{(key + 1) * args.bucket - 1}"
        print(f"{label:>16} {len(samples):>9} {ms:>11.2f} {per_event:>9.1f}")


if __name__ == "__main__":
    main()
