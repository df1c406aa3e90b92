"""Harnesses for the shared compute contract suite (tests/contract/test_compute_contract.py).

Every module in this package (except names starting with `_`) is one backend under test. The
module defines

    def open_harness() -> contextlib.AbstractContextManager[ContractHarness]

which starts whatever the backend needs (a fake server, sshd, a simulator), yields a
`ContractHarness` and cleans up on exit. Each scenario opens a fresh harness, so state never
leaks between scenarios. A module whose backend cannot run on this machine (e.g. no sshd) calls
`pytest.skip(reason)` inside `open_harness`.

Before every scenario the suite calls `backend.ensure_capacity(harness.capacity_spec())`, as the
evaluation orchestration does before it submits anything. Job names in the scenarios come from
`domain.naming.job_name`, as in production.

The harness drives the backend's *outside world*, never the backend object itself: `start` and
`finish` change what the service reports about a job, `fail_next` makes the service answer the
next calls with errors. The scenarios only talk to `backend` through the `ComputeBackend`
protocol.
"""

from __future__ import annotations

from typing import Literal, Protocol

from adapters.compute.base import ComputeBackend
from domain.jobs import CapacitySpec, JobSpec, JobState

FaultKind = Literal["transient", "permanent"]


class ContractHarness(Protocol):
    backend: ComputeBackend
    # How many times the backend's SDK retries a transient failure before giving up (0 = none).
    # The suite checks that `sdk_retries` failures are absorbed and one more surfaces as
    # TransientBackendError.
    sdk_retries: int

    def job_spec(self, job_name: str) -> JobSpec:
        """A valid spec for this backend (image, VM size, timeout...) named `job_name`."""
        ...

    def capacity_spec(self) -> CapacitySpec:
        """A capacity request this backend can satisfy."""
        ...

    def start(self, job_name: str) -> None:
        """The service reports the job's container as running."""
        ...

    def finish(self, job_name: str, state: JobState) -> None:
        """The service reports the job as ended: COMPLETED or FAILED (non-zero exit)."""
        ...

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        """The next `count` calls the backend makes to the service fail: `transient` with
        throttling/5xx, `permanent` with a quota or authorization error."""
        ...

    def jobs_named(self, job_name: str) -> int:
        """How many jobs the service actually created under this name."""
        ...
