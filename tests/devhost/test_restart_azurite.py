"""The Table Storage instance store on Azurite, and an engine restarted mid-run on it."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest

from devhost.engine import CrashInjector, Engine
from devhost.errors import StoreLimitError
from devhost.store import InstanceState, MemoryInstanceStore, TableInstanceStore
from tests.devhost import sample_app
from tests.devhost.conftest import START, EngineFactory

pytestmark = pytest.mark.azurite


def _hub() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _state(instance_id: str, events: int, big: str = "") -> InstanceState:
    state = InstanceState(
        instance_id=instance_id,
        name="orch",
        runtime_status="Running",
        input_json=json.dumps(big),
        created_time=START,
        last_updated_time=START,
    )
    state.history = [
        {"EventType": 5, "EventId": -1, "TaskScheduledId": i, "Result": json.dumps(i)}
        for i in range(events)
    ]
    state.inbox = [{"event": {"EventType": 15, "Name": "go", "Input": "1"}, "retry": False}]
    state.timers = {"3": {"fire_at": "2026-03-01T10:00:00Z"}}
    return state


def _same(a: InstanceState, b: InstanceState) -> None:
    assert a.to_record() == b.to_record()
    assert a.history == b.history


def test_table_store_round_trips_long_histories_and_large_values(
    azurite_connection_string: str,
) -> None:
    hub = _hub()
    store = TableInstanceStore(azurite_connection_string, hub)
    # 250 history rows need several transactions (at most 100 operations each); the input and
    # one event exceed a single 64 KiB property and are chunked.
    state = _state("inst/with#odd?chars", 250, big="x" * 150_000)
    state.history[7]["Result"] = json.dumps("é" * 100_000, ensure_ascii=False)
    store.save(state)
    (loaded,) = TableInstanceStore(azurite_connection_string, hub).load_all()
    _same(loaded, state)

    state.history.append({"EventType": 11, "EventId": -1, "TimerId": 3})
    state.timers.clear()
    store.save(state)
    (loaded,) = TableInstanceStore(azurite_connection_string, hub).load_all()
    _same(loaded, state)

    # A new execution (continue-as-new) replaces the history; old rows are removed.
    state.generation += 1
    state.history = state.history[:2]
    store.save(state)
    reopened = TableInstanceStore(azurite_connection_string, hub)
    (loaded,) = reopened.load_all()
    _same(loaded, state)
    rows = list(reopened._table.list_entities(select=["RowKey"]))
    assert sum(r["RowKey"].startswith("h:") for r in rows) == 2

    assert reopened.delete(state.instance_id) is True
    assert TableInstanceStore(azurite_connection_string, hub).load_all() == []


def test_table_store_splits_transactions_by_size(azurite_connection_string: str) -> None:
    hub = _hub()
    store = TableInstanceStore(azurite_connection_string, hub)
    state = _state("big-events", 30)
    # Twenty events of ~200 KB: far fewer than 100 rows, but more than one 4 MiB transaction.
    for i in range(20):
        state.history[i]["Result"] = json.dumps(str(i % 10) * 200_000)
    submit = store._table.submit_transaction
    sent: list[list[Any]] = []

    def spy(operations: list[Any], **kwargs: Any) -> Any:
        sent.append(list(operations))
        return submit(operations, **kwargs)

    store._table.submit_transaction = spy  # type: ignore[method-assign]
    store.save(state)
    # Azurite accepts bigger transactions than the service, so the split is checked here.
    assert len(sent) > 1
    for operations in sent:
        assert len(operations) <= 100
        assert sum(len(json.dumps(op[1])) for op in operations) < 4 * 1024 * 1024
    (loaded,) = TableInstanceStore(azurite_connection_string, hub).load_all()
    _same(loaded, state)


def test_table_store_refuses_values_beyond_entity_limits(azurite_connection_string: str) -> None:
    store = TableInstanceStore(azurite_connection_string, _hub())
    state = _state("too-big", 1)
    state.history[0]["Result"] = json.dumps("y" * 400_000)
    with pytest.raises(StoreLimitError, match="history event 0"):
        store.save(state)
    huge_state = _state("huge-state", 1)
    huge_state.inbox = [
        {"event": {"EventType": 15, "Name": "e", "Input": "z" * 200_000}, "retry": False}
        for _ in range(20)
    ]
    with pytest.raises(StoreLimitError, match="transaction"):
        store.save(huge_state)


def _run_reference(make_engine: EngineFactory, ids: list[str]) -> dict[str, Any]:
    engine = make_engine(MemoryInstanceStore())
    with engine.in_flight():
        for n, iid in enumerate(ids):
            engine.start_orchestration("restartable", json.dumps(n), iid)
            engine.raise_event(iid, "resume", json.dumps(f"go {n}"))
    return {iid: json.loads(engine.wait_for(iid).output_json or "null") for iid in ids}


def test_engine_stopped_mid_run_resumes_from_table_store(
    make_engine: EngineFactory, azurite_connection_string: str
) -> None:
    ids = [f"rs-{n}" for n in range(3)]
    expected = _run_reference(make_engine, ids)
    assert all(out["kids"] for out in expected.values())
    sample_app.reset()

    hub = _hub()
    first = make_engine(TableInstanceStore(azurite_connection_string, hub))
    stopped = threading.Event()

    def stop_mid_run() -> None:
        first.stop()
        stopped.set()

    # At +35 min every instance has its sub-orchestrations waiting on timers (they fire 36-40).
    first.clock.call_at(START + timedelta(minutes=35), stop_mid_run)
    with first.in_flight():
        for n, iid in enumerate(ids):
            first.start_orchestration("restartable", json.dumps(n), iid)
            first.raise_event(iid, "resume", json.dumps(f"go {n}"))
    assert stopped.wait(30)
    assert {first.get_status(i).runtime_status for i in ids} == {"Running"}  # type: ignore[union-attr]
    assert first.get_status("rs-0:c0").runtime_status == "Running"  # type: ignore[union-attr]

    second = make_engine(
        TableInstanceStore(azurite_connection_string, hub), start=first.clock.now()
    )
    resumed = {iid: json.loads(second.wait_for(iid).output_json or "null") for iid in ids}
    assert resumed == expected
    assert second.stats.episodes > 0
    # The flaky activity's retry happened before the stop and was not repeated after it.
    assert all(sample_app.calls[f"flaky:restart-{n}"] == 2 for n in range(3))


def test_crash_after_activity_reruns_it_on_table_store(
    make_engine: EngineFactory, azurite_connection_string: str
) -> None:
    hub = _hub()
    crashing = make_engine(
        TableInstanceStore(azurite_connection_string, hub),
        crash_injector=CrashInjector(after_activity={"submit_job": 1}),
    )
    iid = crashing.start_orchestration("submits", None, "crash-t")
    crashing.wait_crashed()
    survivor: Engine = make_engine(TableInstanceStore(azurite_connection_string, hub))
    status = survivor.wait_for(iid)
    assert json.loads(status.output_json or "null") == {"got": "job-crash-t"}
    assert sample_app.calls["submit_job:crash-t"] == 2
