"""Histories recorded by an earlier deploy replay with today's code: same actions, same inputs,
same result. This is what keeps in-flight instances alive across a deploy, since the Durable
extension replays each instance's whole history through the new code at its next event.

How the fixture was recorded: `tests/replay/histories.json` was written by
`python -m tests.replay.record_histories` on `git archive a89c9f7` (its `recorded_at_commit`),
the tree before the typed contracts (`domain/contracts.py`) existed, when orchestrations and
activities still exchanged hand-built dicts. It ran one evaluation of the smoke set (12 tasks, 3
shards) on the devhost, memory instance store, state in Azurite, the simulated Azure under the
`seed` profile (missed container starts and their retries, a shard ending with tasks left), and
saved the instance store twice: mid-run, while every instance was still waiting on activities,
timers or events, and at the end, after a second evaluation (2 shards) that its user cancelled
once a job had started (the cancel event, cancelled attempts, tasks closed as not run).

Each recorded instance is replayed here through the real SDK and the real worker's invocation
path (`devhost.functions.FunctionIndex`, as the devhost runs every episode):
- mid-run snapshot: an in-flight instance after a deploy. The new code must yield exactly the
  recorded actions (type, name, and for activities and sub-orchestrations the same JSON input,
  for timers the same fire time) and still be waiting;
- final snapshot: the same instances replayed on through the events they received after the
  mid-run point. The new code must yield the recorded actions with the recorded inputs and end
  with the recorded output (each shard's summary, the evaluation's summary).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from devhost.engine import CREATE_TIMER, SUB_ORCHESTRATION_CREATED, TASK_SCHEDULED, TIMER_CREATED
from devhost.engine import _action_name as action_name
from devhost.engine import _flatten as flatten
from devhost.functions import FunctionIndex

FIXTURE = Path(__file__).with_name("histories.json")
RECORDED: dict[str, Any] = json.loads(FIXTURE.read_text())


@cache
def _functions() -> FunctionIndex:
    import function_app

    return FunctionIndex.from_app(function_app.app)


def _replay(state: dict[str, Any]) -> dict[str, Any]:
    rec, history = state["rec"], state["history"]
    context = {
        "history": [{**e, "IsPlayed": True} for e in history],
        "instanceId": rec["instance_id"],
        "isReplaying": True,
        "parentInstanceId": rec["parent_instance_id"],
        "input": rec["input_json"],
        "upperSchemaVersion": 1,
    }
    return dict(json.loads(_functions().invoke_orchestrator(rec["name"], json.dumps(context))))


def _check_actions(state: dict[str, Any], result: dict[str, Any]) -> None:
    rec, history = state["rec"], state["history"]
    assert not result.get("error"), result.get("error")
    flat = flatten(result.get("actions") or [])
    replayed = [[a.get("actionType"), action_name(a)] for a in flat]
    assert replayed == [[t, n] for t, n, _ in rec["actions"]]
    scheduled = {
        e["EventId"]: e
        for e in history
        if e["EventType"] in (TASK_SCHEDULED, SUB_ORCHESTRATION_CREATED, TIMER_CREATED)
    }
    checked = 0
    for action, (atype, _, tid) in zip(flat, rec["actions"], strict=True):
        if tid is None or tid not in scheduled:
            continue  # an external event wait, or a retry the host re-scheduled itself
        event = scheduled[tid]
        if atype == CREATE_TIMER:
            assert action["fireAt"].rstrip("Z")[:19] == event["FireAt"].rstrip("Z")[:19]
        else:
            assert json.loads(action["input"]) == json.loads(event["Input"]), (
                f"{rec['instance_id']}: input of {event['Name']} (task {tid}) changed shape"
            )
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("instance_id", sorted(RECORDED["mid_run"]))
def test_an_instance_in_flight_replays_to_the_same_waits(instance_id: str) -> None:
    state = RECORDED["mid_run"][instance_id]
    assert state["rec"]["runtime_status"] == "Running"
    result = _replay(state)
    _check_actions(state, result)
    assert not result.get("isDone")


@pytest.mark.parametrize("instance_id", sorted(RECORDED["final"]))
def test_an_instance_replays_to_the_same_result(instance_id: str) -> None:
    state = RECORDED["final"][instance_id]
    mid = RECORDED["mid_run"].get(instance_id, {"history": []})["history"]
    # The in-flight history is where this one began: the rest is what arrived after the deploy.
    assert state["history"][: len(mid)] == mid
    result = _replay(state)
    _check_actions(state, result)
    assert result.get("isDone") is True
    assert result.get("output") == json.loads(state["rec"]["output_json"])


def test_the_recordings_cover_the_paths_worth_replaying() -> None:
    assert RECORDED["counts"]["completed"] == RECORDED["counts"]["total"] == 12
    assert RECORDED["cancelled_counts"]["not_run"] == RECORDED["cancelled_counts"]["total"] == 12
    raised = {
        e["Name"].rstrip("0123456789")
        for state in RECORDED["final"].values()
        for e in state["history"]
        if e["EventType"] == 15
    }
    assert raised == {"container_started_a", "job_ended_a", "cancel"}
    finished = [
        json.loads(e["Input"])
        for state in RECORDED["final"].values()
        for e in state["history"]
        if e["EventType"] == TASK_SCHEDULED and e["Name"] == "finish_attempt"
    ]
    assert {f["outcome"] for f in finished} >= {"completed", "start_timeout", "cancelled"}
