"""One behaviour object per compute tier: how the simulated tier names its statuses and ids,
and the quirks that set it apart from the others.

The job state machine (`lifecycle.py`) asks these objects, never `tier is Tier.X`, so adding a
tier to the simulator is one `TierBehaviour` here (see the package docstring's checklist).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.jobs import JobSpec, JobState, Tier


@dataclass(frozen=True)
class TierBehaviour:
    """A tier's statuses and quirks; the defaults are what most tiers do."""

    tier: Tier
    # The status string the tier's API reports for each state (what `status().raw_status` says).
    statuses: Mapping[JobState, str]
    # ... and once the job has ended, where the tier says more than the state's name.
    ended_statuses: Mapping[JobState, str] = field(default_factory=dict)
    # The backend's id of a job (`SubmitResult.backend_job_id`), from the spec's fields.
    job_id_format: str = "{job_name}"
    # Where a job whose container never starts stays: Azure ML says Running although the
    # container setup is stuck, Batch keeps the task "preparing", a VM's container "created".
    never_started_state: JobState = JobState.PREPARING
    # True: the machine already exists and has the image (plain VMs), so the container is
    # created at once: no provisioning, no pull, and no pull failure but an invalid reference.
    image_on_machine: bool = False
    # True: a node stays in the pool after a job completed, for the pool's idle time, and the
    # next job of the same size, spot and image starts on it without provisioning or a pull.
    reuses_nodes: bool = False
    # True: the tier reports state changes to Event Grid (Azure ML's RunStatusChanged).
    sends_events: bool = False

    def job_id(self, spec: JobSpec) -> str:
        return self.job_id_format.format(
            job_name=spec.job_name, evaluation_id=spec.evaluation_id, shard_index=spec.shard_index
        )

    def status(self, state: JobState) -> str:
        if state.is_terminal:
            return self.ended_statuses.get(state, self.statuses[state])
        return self.statuses[state]


def _statuses(
    queued: str, preparing: str, running: str, completed: str, failed: str, cancelled: str
) -> dict[JobState, str]:
    # A simulated job is never in SUBMITTED: it is queued as soon as the submit call returns.
    return {
        JobState.QUEUED: queued,
        JobState.PREPARING: preparing,
        JobState.RUNNING: running,
        **_ended(completed, failed, cancelled),
    }


def _ended(completed: str, failed: str, cancelled: str) -> dict[JobState, str]:
    return {JobState.COMPLETED: completed, JobState.FAILED: failed, JobState.CANCELLED: cancelled}


AZURE_ML = TierBehaviour(
    tier=Tier.AZURE_ML,
    statuses=_statuses("Queued", "Preparing", "Running", "Completed", "Failed", "Canceled"),
    never_started_state=JobState.RUNNING,
    sends_events=True,
)

# Azure Batch task states.
BATCH = TierBehaviour(
    tier=Tier.BATCH,
    statuses=_statuses("active", "preparing", "running", "completed", "completed", "completed"),
    # A terminated task is "completed" too, with a failure result.
    ended_statuses=_ended("completed:success", "completed:failure", "completed:failure"),
    job_id_format="waa-{evaluation_id}/{job_name}",
    reuses_nodes=True,
)

# `docker inspect` state of the container on the VM.
VM = TierBehaviour(
    tier=Tier.VM,
    # The simulated pool has one VM per shard: the id names the machine the job runs on.
    job_id_format="vm-{shard_index}/{job_name}",
    image_on_machine=True,
    statuses=_statuses("created", "created", "running", "exited", "exited", "exited"),
    # With the exit code: 137 is `docker stop`'s SIGKILL after its grace period.
    ended_statuses=_ended("exited(0)", "exited(1)", "exited(137)"),
)

TIERS: Mapping[Tier, TierBehaviour] = {b.tier: b for b in (AZURE_ML, BATCH, VM)}
