from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from devhost.clock import VirtualClock
from devhost.engine import CrashInjector, Engine
from devhost.functions import FunctionIndex
from devhost.store import InstanceStore, MemoryInstanceStore
from tests.devhost import sample_app

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def index() -> FunctionIndex:
    sample_app.reset()
    return FunctionIndex.from_app(sample_app.app)


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine(index: FunctionIndex) -> Iterator[EngineFactory]:
    engines: list[Engine] = []
    clocks: list[VirtualClock] = []

    def make(
        store: InstanceStore | None = None,
        *,
        start: datetime = START,
        crash_injector: CrashInjector | None = None,
    ) -> Engine:
        clock = VirtualClock(start)
        clocks.append(clock)
        engine = Engine(index, store or MemoryInstanceStore(), clock, crash_injector=crash_injector)
        engines.append(engine)
        engine.start()
        return engine

    yield make
    for engine in engines:
        engine.stop()
    for clock in clocks:
        clock.close()
    for gate in sample_app.gates.values():
        gate.set()


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    return make_engine()
