from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.simulation import Simulation

# Hypothesis (under schemathesis) caches the constants it finds in the code under test in
# `.hypothesis/` of the working directory, which would land in the checkout and in the published
# package (tests/deploy/test_package.py). HYPOTHESIS_STORAGE_DIRECTORY moves it out; hypothesis
# reads it at the first cache access (hypothesis/configuration.py `storage_directory`), so
# setting it here, at collection, is in time.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "waa-eval-hypothesis")
)

# The fuzzed app's MAX_WORKERS (the start request's `workers` maximum): few shards per
# evaluation the fuzzer starts, so each costs little.
FUZZ_MAX_WORKERS = 2


@pytest.fixture(scope="module")
def fuzz_simulation(azurite_connection_string: str) -> Iterator[Simulation]:
    """The app on the devhost (127.0.0.1) with the simulated Azure, in real time: evaluations
    the fuzzer starts only submit their first jobs while the test runs (a simulated job takes
    minutes to start), so fuzzing stays cheap however many it starts."""
    before = os.environ.get("MAX_WORKERS")
    os.environ["MAX_WORKERS"] = str(FUZZ_MAX_WORKERS)
    sim = Simulation(
        connection_string=azurite_connection_string, profile="none", time_mode="real"
    ).start()
    try:
        yield sim
    finally:
        sim.stop()
        if before is None:
            os.environ.pop("MAX_WORKERS", None)
        else:
            os.environ["MAX_WORKERS"] = before
