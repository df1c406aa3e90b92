"""Contract harness: the simulated cloud's Azure ML tier, on a manual clock, posting nowhere.

The outside world here is time and the simulated world itself: `start` lets virtual time pass
until the container is up, `finish` lets the job run to its end (or crashes its runner),
`fail_next` scripts submission faults. Posts are recorded, never sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from adapters.compute.simulated import (
    LedgerEntry,
    QuotaExceeded,
    RunnerCrash,
    SimulatedBackend,
    SimulatedCloud,
    TransientSubmitErrors,
)
from domain.jobs import CapacitySpec, JobSpec, JobState, Tier
from domain.messages import RunnerFailureCode
from tests.contract.harnesses import FaultKind
from tests.simulated.support import ManualScheduler, make_cloud, spec

_STEP = timedelta(seconds=10)
_LIMIT = timedelta(hours=6)


@dataclass
class SimulatedHarness:
    cloud: SimulatedCloud
    scheduler: ManualScheduler
    backend: SimulatedBackend
    sdk_retries: int = 0

    def job_spec(self, job_name: str) -> JobSpec:
        return spec(job_name, tier=Tier.AZURE_ML, tasks=2, evaluation_id="ev1")

    def capacity_spec(self) -> CapacitySpec:
        return CapacitySpec(
            evaluation_id="ev1", tier=Tier.AZURE_ML, vm_size="Standard_D4s_v5", max_nodes=4
        )

    def _run_until(self, job_name: str, done: Callable[[LedgerEntry], bool]) -> None:
        deadline = self.scheduler.now() + _LIMIT
        while not done(self.cloud.ledger[job_name]):
            if self.scheduler.now() >= deadline:
                raise AssertionError(f"{job_name} did not get there within {_LIMIT}")
            self.scheduler.advance(_STEP.total_seconds())

    def start(self, job_name: str) -> None:
        self._run_until(job_name, lambda e: e.started_at is not None)

    def finish(self, job_name: str, state: JobState) -> None:
        if state is JobState.FAILED:
            self.cloud.inject(job_name, RunnerCrash(code=RunnerFailureCode.TASK_CRASHED))
        elif state is not JobState.COMPLETED:
            raise ValueError(f"finish with {state} is not a contract outcome")
        self._run_until(job_name, lambda e: e.state.is_terminal)

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        # The simulated service has no SDK retry in between: the next `count` submissions
        # fail (a transient fault spans `count` calls of the next job submitted).
        if kind == "transient":
            self.cloud.script(lambda s: True, TransientSubmitErrors(count, 503), times=1)
        else:
            self.cloud.script(lambda s: True, QuotaExceeded(), times=1)

    def jobs_named(self, job_name: str) -> int:
        return sum(1 for e in self.cloud.ledger_entries() if e.job_name == job_name)


@contextlib.contextmanager
def open_harness() -> Iterator[SimulatedHarness]:
    cloud, scheduler, _ = make_cloud("none", seed=11)
    yield SimulatedHarness(cloud, scheduler, cloud.backend(Tier.AZURE_ML))
