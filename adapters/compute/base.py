"""The one protocol every compute tier implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from domain.jobs import CapacityReport, CapacitySpec, JobSpec, JobStatus, SubmitResult, Tier


@runtime_checkable
class ComputeBackend(Protocol):
    """Submit / status / cancel / ensure capacity for one tier.

    Contract (checked by tests/contract/test_compute_contract.py for every implementation):
    - `submit` is idempotent on `spec.job_name`: a second submit of the same name returns the
      existing job with `created=False` and never starts a second one.
    - `ensure_capacity` creates or checks the tier's capacity and returns without waiting for it
      to become usable (`ready=False` until then); `capacity_status` is the cheap check that
      says when it is, and raises `PermanentTierError` when it never will be (allocation failed,
      the image cannot be pulled). Each call ends within its bound in `domain.bounds`.
    - `status` of an unknown job raises `domain.jobs.JobNotFoundError`.
    - `cancel` is idempotent: cancelling a finished or unknown job is not an error.
    - `end_evaluation` releases whatever the tier holds for one evaluation as a whole once it
      has ended or was cancelled (Batch: the evaluation's Batch job, which otherwise stays active
      and counts against the account's active-job quota). Idempotent: an evaluation that was
      ended already, or that never used the tier, is not an error. Tiers that hold nothing per
      evaluation do nothing.
    - Errors are `domain.jobs.BackendError` subclasses whose `kind` says whether to retry
      (TRANSIENT) or fail over (PERMANENT_FOR_TIER). Messages never contain secrets.
    """

    tier: Tier

    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport: ...

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport: ...

    def submit(self, spec: JobSpec) -> SubmitResult: ...

    def status(self, job_name: str) -> JobStatus: ...

    def cancel(self, job_name: str) -> None: ...

    def end_evaluation(self, evaluation_id: str) -> None: ...
