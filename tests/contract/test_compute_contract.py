"""The same scenarios against every compute backend (one harness module per backend).

Add a backend by dropping a module into tests/contract/harnesses/ (protocol documented in its
__init__.py); it is picked up here without editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest

import tests.contract.harnesses as harness_pkg
from adapters.compute.base import ComputeBackend
from domain.jobs import (
    FailureKind,
    JobNotFoundError,
    JobState,
    PermanentTierError,
    TransientBackendError,
)
from domain.naming import job_name
from tests.contract.harnesses import ContractHarness

HARNESSES = sorted(
    m.name for m in pkgutil.iter_modules(harness_pkg.__path__) if not m.name.startswith("_")
)


@pytest.fixture(params=HARNESSES)
def h(request: pytest.FixtureRequest) -> Iterator[ContractHarness]:
    module = importlib.import_module(f"{harness_pkg.__name__}.{request.param}")
    with module.open_harness() as harness:
        harness.backend.ensure_capacity(harness.capacity_spec())
        yield harness


def test_backend_implements_the_protocol(h: ContractHarness) -> None:
    assert isinstance(h.backend, ComputeBackend)


def test_submit_progresses_to_completed(h: ContractHarness) -> None:
    result = h.backend.submit(h.job_spec(job_name("ev1", 0, 1)))
    assert result.created is True
    assert result.job_name == job_name("ev1", 0, 1)
    assert h.backend.status(job_name("ev1", 0, 1)).state in (
        JobState.SUBMITTED,
        JobState.QUEUED,
        JobState.PREPARING,
    )
    h.start(job_name("ev1", 0, 1))
    assert h.backend.status(job_name("ev1", 0, 1)).state is JobState.RUNNING
    h.finish(job_name("ev1", 0, 1), JobState.COMPLETED)
    final = h.backend.status(job_name("ev1", 0, 1))
    assert final.state is JobState.COMPLETED
    assert final.failure_kind is None


def test_failed_job_is_reported_as_job_failure(h: ContractHarness) -> None:
    h.backend.submit(h.job_spec(job_name("ev1", 0, 2)))
    h.start(job_name("ev1", 0, 2))
    h.finish(job_name("ev1", 0, 2), JobState.FAILED)
    status = h.backend.status(job_name("ev1", 0, 2))
    assert status.state is JobState.FAILED
    assert status.failure_kind is FailureKind.JOB_FAILED


def test_submit_twice_creates_one_job(h: ContractHarness) -> None:
    first = h.backend.submit(h.job_spec(job_name("ev1", 1, 1)))
    second = h.backend.submit(h.job_spec(job_name("ev1", 1, 1)))
    assert (first.created, second.created) == (True, False)
    assert second.backend_job_id == first.backend_job_id
    assert h.jobs_named(job_name("ev1", 1, 1)) == 1


def test_status_of_unknown_job_raises_not_found(h: ContractHarness) -> None:
    with pytest.raises(JobNotFoundError):
        h.backend.status("no-such-job")


def test_cancel_running_job(h: ContractHarness) -> None:
    h.backend.submit(h.job_spec(job_name("ev1", 2, 1)))
    h.start(job_name("ev1", 2, 1))
    h.backend.cancel(job_name("ev1", 2, 1))
    assert h.backend.status(job_name("ev1", 2, 1)).state is JobState.CANCELLED


def test_cancel_unknown_or_finished_job_is_not_an_error(h: ContractHarness) -> None:
    h.backend.cancel("no-such-job")
    h.backend.submit(h.job_spec(job_name("ev1", 3, 1)))
    h.start(job_name("ev1", 3, 1))
    h.finish(job_name("ev1", 3, 1), JobState.COMPLETED)
    h.backend.cancel(job_name("ev1", 3, 1))
    assert h.backend.status(job_name("ev1", 3, 1)).state is JobState.COMPLETED


def test_transient_errors_are_retried_then_surface_as_transient(h: ContractHarness) -> None:
    if h.sdk_retries:
        h.fail_next("transient", count=h.sdk_retries)
        assert h.backend.submit(h.job_spec(job_name("ev1", 4, 1))).created is True
    h.fail_next("transient", count=h.sdk_retries + 1)
    with pytest.raises(TransientBackendError) as caught:
        h.backend.submit(h.job_spec(job_name("ev1", 4, 2)))
    assert caught.value.kind is FailureKind.TRANSIENT
    # The service recovered: the same submission now goes through, exactly once.
    assert h.backend.submit(h.job_spec(job_name("ev1", 4, 2))).created is True
    assert h.jobs_named(job_name("ev1", 4, 2)) == 1


def test_permanent_error_surfaces_as_permanent_for_tier(h: ContractHarness) -> None:
    h.fail_next("permanent")
    with pytest.raises(PermanentTierError) as caught:
        h.backend.submit(h.job_spec(job_name("ev1", 5, 1)))
    assert caught.value.kind is FailureKind.PERMANENT_FOR_TIER
    assert str(caught.value)


def test_ensure_capacity_twice_is_idempotent(h: ContractHarness) -> None:
    # The fixture already ensured capacity once.
    again = h.backend.ensure_capacity(h.capacity_spec())
    assert (again.created, again.updated) == (False, False)
    assert again.resource_name


def test_capacity_status_says_when_ensured_capacity_is_usable(h: ContractHarness) -> None:
    # The fixture ensured capacity, which every fake makes usable at once.
    report = h.backend.capacity_status(h.capacity_spec())
    assert report.ready is True
    assert report.tier is h.backend.tier and report.resource_name
    # A second look changes nothing: the check is read-only.
    assert h.backend.capacity_status(h.capacity_spec()).ready is True


def test_end_evaluation_is_idempotent_and_keeps_finished_outcomes(h: ContractHarness) -> None:
    h.backend.submit(h.job_spec(job_name("ev1", 6, 1)))
    h.start(job_name("ev1", 6, 1))
    h.finish(job_name("ev1", 6, 1), JobState.COMPLETED)
    h.backend.end_evaluation("ev1")
    # Again (the finalize activity redelivered, then the sweeper), and for an evaluation the
    # tier never saw: neither is an error.
    h.backend.end_evaluation("ev1")
    h.backend.end_evaluation("ev9")
    assert h.backend.status(job_name("ev1", 6, 1)).state is JobState.COMPLETED


def test_end_evaluation_ends_nothing_of_another_evaluation(h: ContractHarness) -> None:
    h.backend.submit(h.job_spec(job_name("ev1", 7, 1)))
    h.start(job_name("ev1", 7, 1))
    h.backend.end_evaluation("ev2")
    assert h.backend.status(job_name("ev1", 7, 1)).state is JobState.RUNNING
