"""The fault catalogue: what can go wrong, and the hook where each fault takes over.

Every fault is a frozen dataclass under one of four bases, and the base says where the
simulator consults it:
- `RunFault`: the job's life (at most one per job, drawn from the profile or scripted). The job
  state machine (`lifecycle.JobLifecycle`) calls its hooks at each stage: `on_provisioned`,
  `on_container_created`, `on_booted`, `before_task`. A hook returns the deliveries of the
  step it took over, or None to let the job go on as usual.
- `SubmitFault`: the submit call (`on_prepare` shapes the job's submit errors and quota).
- `MessageFault`: a runner message on its way to the app (`loses`).
- `EventFault`: an Azure ML Event Grid event on its way to the app (`shape`).

Run faults drawn from a profile are registered with `@run_fault`; the registry's order is the
order of the draw (see `RUN_FAULTS`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from adapters.compute import runner_exit_codes
from adapters.compute.simulated.timings import (
    EXIT_SECONDS,
    INVALID_IMAGE_SECONDS,
    NO_KVM_CHECK_SECONDS,
)
from domain.jobs import FailureKind, JobSpec, JobState
from domain.messages import MessageKind, RunnerFailure, RunnerFailureCode

if TYPE_CHECKING:
    from adapters.compute.simulated.delivery import Delivery, EventShape
    from adapters.compute.simulated.jobs import Job, Prepared
    from adapters.compute.simulated.lifecycle import JobLifecycle
    from adapters.compute.simulated.profiles import TierFaults


class Fault:
    """Anything the simulator can be told to get wrong (`SimulatedCloud.script`)."""


# --------------------------------------------------------------------------------------------
# Run faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDraws:
    """The numbers every job draws for its run fault, whether or not one is scripted or drawn,
    so that scripting a fault never shifts the draws that follow. A fault that needs a number
    of its own appends a field here (drawn last: inserting one would change every seed's world)."""

    u: float  # picks the run fault: the profile's probabilities are consecutive intervals
    hang_after: int
    evict_at: int
    eviction_fraction: float  # how far into its task the eviction hits
    crash_at: int

    @staticmethod
    def draw(rng: random.Random, n_tasks: int) -> RunDraws:
        u = rng.random()
        hang_after = rng.randrange(n_tasks) if n_tasks else 0
        evict_at = rng.randrange(n_tasks) if n_tasks else 0
        eviction_fraction = rng.uniform(0.1, 0.9)
        crash_at = rng.randrange(n_tasks) if n_tasks else 0
        return RunDraws(u, hang_after, evict_at, eviction_fraction, crash_at)


class RunFault(Fault):
    """A fault in the job's life. A profile draws at most one per job."""

    # The `TierFaults` field that holds this fault's probability per job.
    profile_field: ClassVar[str]
    # A Batch node that already has the image cannot show this fault: it needs a new node.
    needs_fresh_node: ClassVar[bool] = False

    @classmethod
    def probability(cls, faults: TierFaults, spec: JobSpec) -> float:
        return float(getattr(faults, cls.profile_field))

    @classmethod
    def from_draws(cls, draws: RunDraws) -> RunFault:
        return cls()

    def on_provisioned(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        return None

    def on_container_created(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        return None

    def on_booted(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        return None

    def before_task(self, life: JobLifecycle, job: Job, index: int) -> list[Delivery] | None:
        return None


# Registered run faults, in the order a profile's probabilities are laid end to end on [0, 1).
# Append a new fault at the end: moving one changes which fault every existing seed draws.
RUN_FAULTS: list[type[RunFault]] = []

_R = TypeVar("_R", bound=type[RunFault])


def run_fault(cls: _R) -> _R:
    """Register a run fault for profile draws (its `profile_field` must exist on TierFaults)."""
    RUN_FAULTS.append(cls)
    return cls


@run_fault
@dataclass(frozen=True)
class NeverStarts(RunFault):
    """The container never comes up: no heartbeat ever; the tier keeps saying Running/Preparing."""

    profile_field: ClassVar[str] = "never_starts"

    def on_container_created(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        # The container setup is stuck: nothing else happens until the kill switch or a cancel.
        job.fault_at = job.fault_at or life.now()
        return life.set_state(job, job.behaviour.never_started_state)


@run_fault
@dataclass(frozen=True)
class NoNestedVirtualization(RunFault):
    """/dev/kvm is missing: the runner reports a permanent failure at once and exits non-zero."""

    profile_field: ClassVar[str] = "no_nested_virtualization"

    def on_container_created(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        job.fault_at = job.fault_at or life.now()  # the runner's first check fails 2 s later
        out = life.set_state(job, JobState.RUNNING)
        job.timers["step"] = life.at(NO_KVM_CHECK_SECONDS, job, lambda j: self._report(life, j))
        return out

    def _report(self, life: JobLifecycle, job: Job) -> list[Delivery]:
        job.started_at = job.started_at or life.now()
        failure = RunnerFailure(
            code=RunnerFailureCode.NO_NESTED_VIRTUALIZATION,
            message="/dev/kvm is missing: this VM offers no nested virtualization",
            permanent=True,
        )
        out = life.courier.message(job, MessageKind.FAILURE, failure=failure)
        job.timers["step"] = life.at(EXIT_SECONDS, job, lambda j: self._exit(life, j))
        return out

    def _exit(self, life: JobLifecycle, job: Job) -> list[Delivery]:
        return life.end(
            job,
            JobState.FAILED,
            f"container exited with code {runner_exit_codes.NO_KVM}: no_nested_virtualization",
            FailureKind.PERMANENT_FOR_TIER,
        )


@run_fault
@dataclass(frozen=True)
class ImagePullFailure(RunFault):
    """The image pull fails. `permanent` is an invalid image (manifest unknown); otherwise the
    pull times out, which is worth retrying."""

    permanent: bool = False
    profile_field: ClassVar[str] = "image_pull_failure"
    needs_fresh_node: ClassVar[bool] = True

    def on_provisioned(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        rng = random.Random(f"{life.seed}/pull/{job.tier}/{job.spec.job_name}")
        delay = rng.uniform(*INVALID_IMAGE_SECONDS) if self.permanent else job.plan.pull_s
        job.timers["step"] = life.at(delay, job, lambda j: self._failed(life, j))
        return []

    def _failed(self, life: JobLifecycle, job: Job) -> list[Delivery]:
        # A node whose pull failed is not reused.
        job.node = None
        job.fault_at = job.fault_at or life.now()
        if self.permanent:
            detail = (
                "ImagePullFailed: failed to pull image: manifest unknown: "
                "the image reference does not exist or is invalid"
            )
            return life.end(job, JobState.FAILED, detail, FailureKind.PERMANENT_FOR_TIER)
        detail = (
            "ImagePullFailed: failed to pull image: context deadline exceeded "
            "(Client.Timeout exceeded while awaiting layers)"
        )
        return life.end(job, JobState.FAILED, detail, FailureKind.TRANSIENT)


@run_fault
@dataclass(frozen=True)
class HangAfter(RunFault):
    """The runner hangs after `tasks` finished tasks: no message any more, the tier says Running."""

    tasks: int
    profile_field: ClassVar[str] = "hang"

    @classmethod
    def from_draws(cls, draws: RunDraws) -> RunFault:
        return cls(draws.hang_after)

    def before_task(self, life: JobLifecycle, job: Job, index: int) -> list[Delivery] | None:
        if index < self.tasks:
            return None
        life.hang(job)
        return []


@run_fault
@dataclass(frozen=True)
class SpotEviction(RunFault):
    """The (spot / low-priority) node is evicted while task number `tasks` (0-based) runs."""

    tasks: int = 0
    profile_field: ClassVar[str] = "spot_eviction"

    @classmethod
    def probability(cls, faults: TierFaults, spec: JobSpec) -> float:
        # Only spot / low-priority jobs can be evicted.
        return faults.spot_eviction if spec.spot else 0.0

    @classmethod
    def from_draws(cls, draws: RunDraws) -> RunFault:
        return cls(draws.evict_at)

    def before_task(self, life: JobLifecycle, job: Job, index: int) -> list[Delivery] | None:
        if index != self.tasks:
            return None
        delay = job.plan.task_seconds[index] * job.plan.draws.eviction_fraction
        job.timers["step"] = life.at(delay, job, life.evicted)
        return []


@run_fault
@dataclass(frozen=True)
class RunnerCrash(RunFault):
    """The runner fails and exits non-zero before task number `tasks` (0: the WAA server never
    became ready). Not permanent: the tier is fine, the attempt is lost."""

    tasks: int = 0
    code: RunnerFailureCode = RunnerFailureCode.WAA_NOT_READY
    profile_field: ClassVar[str] = "runner_crash"

    @classmethod
    def from_draws(cls, draws: RunDraws) -> RunFault:
        at = draws.crash_at
        code = RunnerFailureCode.WAA_NOT_READY if at == 0 else RunnerFailureCode.TASK_CRASHED
        return cls(at, code)

    def on_booted(self, life: JobLifecycle, job: Job) -> list[Delivery] | None:
        return life.crash(job, self.code) if self.tasks == 0 else None

    def before_task(self, life: JobLifecycle, job: Job, index: int) -> list[Delivery] | None:
        return life.crash(job, self.code) if index == self.tasks else None


# --------------------------------------------------------------------------------------------
# Submit faults
# --------------------------------------------------------------------------------------------


class SubmitFault(Fault, ABC):
    """A fault of the submit call, fixed by the first submission of a job name."""

    @abstractmethod
    def on_prepare(self, prepared: Prepared) -> None:
        """The hook every fault of this kind implements."""


@dataclass(frozen=True)
class TransientSubmitErrors(SubmitFault):
    """The first `count` submissions of the job raise a transient error (HTTP 429 or 503)."""

    count: int
    status_code: int = 429

    def on_prepare(self, prepared: Prepared) -> None:
        # The last one scripted wins, and a scripted count replaces the profile's draw.
        prepared.submit_errors_left = self.count
        prepared.submit_error_code = self.status_code
        prepared.errors_scripted = True


@dataclass(frozen=True)
class QuotaExceeded(SubmitFault):
    """Submitting the job fails for lack of quota (permanent for the tier)."""

    def on_prepare(self, prepared: Prepared) -> None:
        prepared.quota = True


# --------------------------------------------------------------------------------------------
# Delivery faults
# --------------------------------------------------------------------------------------------

EventStatuses = frozenset[str] | None  # Azure ML run statuses ("Queued", ...); None means all


class EventFault(Fault, ABC):
    """A fault of Azure ML's Event Grid deliveries whose run status is in `statuses`."""

    statuses: EventStatuses

    def applies_to(self, status: str) -> bool:
        return self.statuses is None or status in self.statuses

    @abstractmethod
    def shape(self, event: EventShape) -> None:
        """The hook every fault of this kind implements."""


@dataclass(frozen=True)
class LostEvents(EventFault):
    statuses: EventStatuses = None

    def shape(self, event: EventShape) -> None:
        event.lost = True


@dataclass(frozen=True)
class DuplicatedEvents(EventFault):
    statuses: EventStatuses = None

    def shape(self, event: EventShape) -> None:
        event.copies = 2


@dataclass(frozen=True)
class LateEvents(EventFault):
    delay_seconds: float
    statuses: EventStatuses = None

    def shape(self, event: EventShape) -> None:
        # A scripted delay replaces the profile's (the last one scripted wins).
        event.extra_delay_s = self.delay_seconds


class MessageFault(Fault, ABC):
    """A fault of the runner's messages to the heartbeat endpoint."""

    @abstractmethod
    def loses(self, kind: MessageKind) -> bool:
        """The hook every fault of this kind implements."""


@dataclass(frozen=True)
class LostMessages(MessageFault):
    """Runner messages of these kinds are lost on the way (never reach the app)."""

    kinds: frozenset[MessageKind] = frozenset({MessageKind.HEARTBEAT})

    def loses(self, kind: MessageKind) -> bool:
        return kind in self.kinds


DeliveryFault = EventFault | MessageFault
