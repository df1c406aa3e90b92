"""A simulated job's record and its plan: everything about its life drawn at submission.

Every random draw for a job comes from a `random.Random` seeded with the cloud's seed, the tier
and the job's name, so the same seed and the same calls give the same world, and adding a job
does not reshuffle the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from adapters.compute.simulated.faults import (
    RUN_FAULTS,
    DeliveryFault,
    Fault,
    ImagePullFailure,
    RunDraws,
    RunFault,
)
from adapters.compute.simulated.profiles import TierFaults
from adapters.compute.simulated.scores import draw_score
from adapters.compute.simulated.tiers import TIERS, TierBehaviour
from adapters.compute.simulated.timings import (
    BOOT_SECONDS,
    DEFAULT_IDLE_SECONDS,
    DOCKER_HUB_PULL_SECONDS,
    PROVISION_SECONDS,
    QUEUE_SECONDS,
    REGIONAL_PULL_SECONDS,
    TASK_FAILURE_REASONS,
    TASK_SPREAD,
    image_registry,
    regional_registry,
    task_mean_seconds,
)
from domain.clock import CallHandle
from domain.cost import PRICED_VM_SIZES
from domain.jobs import FailureKind, JobSpec, JobState, PermanentTierError, Tier
from domain.messages import TaskRunStatus
from domain.planning import expected_minutes
from domain.tasksets import TaskRef

JobPredicate = Callable[[JobSpec], bool]

# A task's drawn outcome: its status, its score, the failure reason ("" when it completed).
Outcome = tuple[TaskRunStatus, float, str]
# (task id, start, end) of a task a job ran to a result.
TaskSpan = tuple[str, datetime, datetime]


@dataclass
class Plan:
    queue_s: float
    provision_s: float
    pull_s: float
    boot_s: float
    run_fault: RunFault | None
    task_seconds: list[float]
    # Static jobs: drawn at submission, one per task of spec.task_ids. Queue jobs: one more
    # is appended per task the app hands out (`draw_task`), when it is handed out.
    task_outcomes: list[Outcome]
    draws: RunDraws
    net_faults: list[DeliveryFault]


@dataclass
class Node:
    pool: tuple[str, bool, str]
    busy: bool = False
    idle_since: datetime | None = None
    idle_seconds: float = DEFAULT_IDLE_SECONDS


@dataclass
class Job:
    tier: Tier
    spec: JobSpec
    plan: Plan
    net_rng: random.Random
    submitted_at: datetime
    state: JobState = JobState.QUEUED
    raw: str = ""
    detail: str = ""
    failure_kind: FailureKind | None = None
    # Set when something outside the runner stops it (cancel, timeout, eviction): from then
    # on the runner sends nothing, not even retries of earlier messages.
    silenced: bool = False
    # The runner hangs: it sends no new message (earlier ones may still be in flight).
    hung: bool = False
    timers: dict[str, CallHandle] = field(default_factory=dict)
    node: Node | None = None
    node_allocated_at: datetime | None = None
    started_at: datetime | None = None
    runner_started_at: datetime | None = None  # its container started (the runner's clock)
    ended_at: datetime | None = None
    tasks_run: int = 0
    tasks_completed: int = 0
    next_task: int = 0  # tasks started so far (the fault hooks' task index)
    # Queue jobs (spec.queue): the task ids the app handed out, in order.
    claimed: list[str] = field(default_factory=list)
    # For benchmarks (the ledger): when its run fault took effect, when the app cancelled it,
    # and each task it ran to a result.
    fault_at: datetime | None = None
    cancelled_at: datetime | None = None
    task_started_at: datetime | None = None
    task_spans: list[TaskSpan] = field(default_factory=list)
    messages_sent: int = 0
    messages_lost: int = 0
    events_sent: int = 0
    events_lost: int = 0
    event_seq: int = 0

    @property
    def ended(self) -> bool:
        return self.state.is_terminal

    @property
    def behaviour(self) -> TierBehaviour:
        return TIERS[self.tier]

    def task_id(self, index: int) -> str:
        """The id of the job's task number `index` (0-based, in the order it ran them)."""
        return (self.claimed if self.spec.queue else self.spec.task_ids)[index]


@dataclass
class Prepared:
    """What the first submit call of a job name fixed: its scripted faults and submit errors."""

    faults: list[Fault]
    submit_errors_left: int = 0
    submit_error_code: int = 429
    quota: bool = False
    errors_scripted: bool = False


@dataclass
class Script:
    target: str | JobPredicate
    fault: Fault
    remaining: int | None


def check_vm_size(vm_size: str) -> None:
    # The simulated cloud offers exactly the priced sizes, so every job has a true cost.
    if vm_size not in PRICED_VM_SIZES:
        raise PermanentTierError(
            f"the VM size {vm_size!r} is not available in this region", code="InvalidVmSize"
        )


def draw_plan(seed: int, tier: Tier, spec: JobSpec, faults: list[Fault], tf: TierFaults) -> Plan:
    """The job's timings, task outcomes and run fault (a scripted one wins over the profile)."""
    rng = random.Random(f"{seed}/job/{tier}/{spec.job_name}")
    queue_s = rng.uniform(*QUEUE_SECONDS)
    provision_s = rng.uniform(*PROVISION_SECONDS)
    try:
        regional = regional_registry(image_registry(spec.image))
        invalid = False
    except ValueError:
        regional, invalid = False, True
    pull_s = rng.uniform(*(REGIONAL_PULL_SECONDS if regional else DOCKER_HUB_PULL_SECONDS))
    boot_s = rng.uniform(*BOOT_SECONDS)
    task_seconds: list[float] = []
    outcomes: list[Outcome] = []
    for task_id in spec.task_ids:  # a queue job has none: it draws each task when handed it
        seconds, outcome = _draw_task(rng, task_id, task_mean_seconds(task_id), tf)
        task_seconds.append(seconds)
        outcomes.append(outcome)
    # A queue job's fault draws (which task it hangs, crashes or is evicted at) range over the
    # tasks it is expected to run, its share of the queue.
    draws = RunDraws.draw(rng, spec.expected_tasks if spec.queue else len(spec.task_ids))

    run_fault: RunFault | None = None
    if invalid:
        run_fault = ImagePullFailure(permanent=True)
    scripted_run = [f for f in faults if isinstance(f, RunFault)]
    if scripted_run:
        run_fault = scripted_run[-1]
    elif run_fault is None:
        run_fault = _profile_run_fault(draws, tf, spec)
    if TIERS[tier].image_on_machine and isinstance(run_fault, ImagePullFailure) and not invalid:
        # The image is already on the machine: nothing to pull.
        run_fault = None
    return Plan(
        queue_s=queue_s,
        provision_s=provision_s,
        pull_s=pull_s,
        boot_s=boot_s,
        run_fault=run_fault,
        task_seconds=task_seconds,
        task_outcomes=outcomes,
        draws=draws,
        net_faults=[f for f in faults if isinstance(f, DeliveryFault)],
    )


def _draw_task(
    rng: random.Random, task_id: str, mean_seconds: float, tf: TierFaults
) -> tuple[float, Outcome]:
    """One task's duration (around the planner's expectation) and outcome; the order of the
    draws is the one every seed's world was drawn with."""
    seconds = rng.uniform(1 - TASK_SPREAD, 1 + TASK_SPREAD) * mean_seconds
    if rng.random() < tf.task_failure:
        return seconds, (TaskRunStatus.FAILED, 0.0, rng.choice(TASK_FAILURE_REASONS))
    return seconds, (TaskRunStatus.COMPLETED, draw_score(rng, task_id), "")


def draw_task(
    seed: int, tier: Tier, job_name: str, task_id: str, domain: str, tf: TierFaults
) -> tuple[float, Outcome]:
    """A queue job's task, drawn when the app hands it out: from a generator of its own (the
    seed, tier, job and task), so the same task in the same job draws the same run whatever
    the app handed out before. `domain` is the answer's (else the catalog's)."""
    rng = random.Random(f"{seed}/task/{tier}/{job_name}/{task_id}")
    mean = (
        60.0 * expected_minutes(TaskRef(task_id=task_id, domain=domain))
        if domain
        else task_mean_seconds(task_id)
    )
    return _draw_task(rng, task_id, mean, tf)


def _profile_run_fault(draws: RunDraws, tf: TierFaults, spec: JobSpec) -> RunFault | None:
    u = draws.u
    for fault in RUN_FAULTS:
        p = fault.probability(tf, spec)
        if u < p:
            return fault.from_draws(draws)
        u -= p
    return None
