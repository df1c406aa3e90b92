"""Crash consistency: an engine restarted from ANY state the store ever held finishes the same.

Every save is a point where the process could die. The run below records the store's content and
the virtual time after each save; a fresh engine started from each recorded state must finish
every instance with the outputs of the uninterrupted run.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from devhost.engine import Engine
from devhost.store import MemoryInstanceStore
from tests.devhost.conftest import EngineFactory

IDS = ["mx-0", "mx-1"]


class RecordingStore(MemoryInstanceStore):
    def __init__(self) -> None:
        super().__init__()
        self.clock_now: Any = None
        self.points: list[tuple[datetime, dict[str, str]]] = []
        self._points_lock = threading.Lock()

    def _after_save(self) -> None:
        with self._points_lock:
            self.points.append((self.clock_now(), self.snapshot()))


def _outputs(engine: Engine) -> dict[str, Any]:
    return {iid: json.loads(engine.wait_for(iid, timeout=20).output_json or "null") for iid in IDS}


def test_restart_from_every_saved_state_finishes_the_same(make_engine: EngineFactory) -> None:
    store = RecordingStore()
    engine = make_engine(store)
    store.clock_now = engine.clock.now
    with engine.in_flight():
        for n, iid in enumerate(IDS):
            engine.start_orchestration("mixed", json.dumps(n), iid)
            engine.raise_event(iid, "resume", json.dumps(f"go {n}"))
    # Crash points from here on: both instances exist and have their event.
    first = 2 * len(IDS)
    expected = _outputs(engine)
    engine.stop()
    points = store.points[first:]
    assert len(points) > 20, len(points)
    for at, snapshot in points:
        restarted = make_engine(MemoryInstanceStore(snapshot), start=at)
        assert _outputs(restarted) == expected, f"restart from the state saved at {at} diverged"
        restarted.stop()
