"""A simulated Azure: every compute tier, in (virtual) time, with named fault profiles.

The simulator never calls the app's Python code. Like the real cloud it only talks to the app
through its public entry points over HTTP:
- the shard runner's messages (`domain.messages`) to `spec.heartbeat_url`, authenticated with
  `spec.heartbeat_token`;
- for Azure ML jobs, Event Grid `RunStatusChanged` / `RunCompleted` events to the app's Event
  Grid webhook.

Time comes from a `Scheduler` (the devhost's virtual clock, a test's manual clock, or the wall
clock), so a 3-hour evaluation runs in seconds. Every random draw for a job comes from a
`random.Random` seeded with the cloud's seed and the job's name, so the same seed and the same
calls give the same world, and adding a job does not reshuffle the others.

One `SimulatedCloud` is the world; `cloud.backend(tier)` gives the `ComputeBackend` of a tier.
`cloud.ledger` is the ground truth (what really ran and what it really cost) for benchmarks.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from domain.clock import CallHandle, Scheduler
from domain.cost import PRICED_VM_SIZES, job_cost
from domain.jobs import (
    CapacityReport,
    CapacitySpec,
    FailureKind,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStatus,
    PermanentTierError,
    SubmitResult,
    Tier,
    TransientBackendError,
)
from domain.messages import (
    AML_RUN_COMPLETED,
    AML_RUN_STATUS_CHANGED,
    JobMessage,
    MessageKind,
    RunnerFailure,
    RunnerFailureCode,
    TaskResult,
    TaskRunStatus,
)
from domain.planning import expected_minutes
from domain.tasksets import TaskRef, domain_of

log = logging.getLogger(__name__)

PostFn = Callable[[str, dict[str, str], bytes], int]
JobPredicate = Callable[[JobSpec], bool]

# The app's Event Grid function for Azure ML job events, as `func start` exposes it.
AML_EVENTS_FUNCTION_NAME = "aml_job_events"
AML_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim"
    "/providers/Microsoft.MachineLearningServices/workspaces/sim"
)
_ID_NAMESPACE = uuid.UUID("6f1c55a2-4d0e-4c59-9a55-1c0d1f9b2a10")


def eventgrid_url_for(base_url: str) -> str:
    return (
        f"{base_url.rstrip('/')}/runtime/webhooks/eventgrid?functionName={AML_EVENTS_FUNCTION_NAME}"
    )


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeverStarts:
    """The container never comes up: no heartbeat ever; the tier keeps saying Running/Preparing."""


@dataclass(frozen=True)
class NoNestedVirtualization:
    """/dev/kvm is missing: the runner reports a permanent failure at once and exits non-zero."""


@dataclass(frozen=True)
class ImagePullFailure:
    """The image pull fails. `permanent` is an invalid image (manifest unknown); otherwise the
    pull times out, which is worth retrying."""

    permanent: bool = False


@dataclass(frozen=True)
class HangAfter:
    """The runner hangs after `tasks` finished tasks: no message any more, the tier says Running."""

    tasks: int


@dataclass(frozen=True)
class SpotEviction:
    """The (spot / low-priority) node is evicted while task number `tasks` (0-based) runs."""

    tasks: int = 0


@dataclass(frozen=True)
class RunnerCrash:
    """The runner fails and exits non-zero before task number `tasks` (0: the WAA server never
    became ready). Not permanent: the tier is fine, the attempt is lost."""

    tasks: int = 0
    code: RunnerFailureCode = RunnerFailureCode.WAA_NOT_READY


@dataclass(frozen=True)
class TransientSubmitErrors:
    """The first `count` submissions of the job raise a transient error (HTTP 429 or 503)."""

    count: int
    status_code: int = 429


@dataclass(frozen=True)
class QuotaExceeded:
    """Submitting the job fails for lack of quota (permanent for the tier)."""


EventStatuses = frozenset[str] | None  # Azure ML run statuses ("Queued", ...); None means all


@dataclass(frozen=True)
class LostEvents:
    statuses: EventStatuses = None


@dataclass(frozen=True)
class DuplicatedEvents:
    statuses: EventStatuses = None


@dataclass(frozen=True)
class LateEvents:
    delay_seconds: float
    statuses: EventStatuses = None


@dataclass(frozen=True)
class LostMessages:
    """Runner messages of these kinds are lost on the way (never reach the app)."""

    kinds: frozenset[MessageKind] = frozenset({MessageKind.HEARTBEAT})


RunFault = (
    NeverStarts | NoNestedVirtualization | ImagePullFailure | HangAfter | SpotEviction | RunnerCrash
)
Fault = (
    RunFault
    | TransientSubmitErrors
    | QuotaExceeded
    | LostEvents
    | DuplicatedEvents
    | LateEvents
    | LostMessages
)
_RUN_FAULTS = (
    NeverStarts,
    NoNestedVirtualization,
    ImagePullFailure,
    HangAfter,
    SpotEviction,
    RunnerCrash,
)


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierFaults:
    """Probabilities for one tier. The run faults (never starts, no nested virtualization, image
    pull failure, hang, spot eviction) are exclusive: at most one per job."""

    never_starts: float = 0.0
    no_nested_virtualization: float = 0.0
    image_pull_failure: float = 0.0
    hang: float = 0.0
    # Only spot / low-priority jobs can be evicted.
    spot_eviction: float = 0.0
    runner_crash: float = 0.0
    transient_submit: float = 0.0
    max_transient_submit_errors: int = 2
    # Per (evaluation, tier): the subscription has no quota left for the VM family.
    quota_exhausted: float = 0.0
    # A task the agent ran but that failed (agent crash, task setup error).
    task_failure: float = 0.0
    # Per runner message: lost on the network after the runner's retries gave up.
    message_loss: float = 0.0
    # Per Azure ML Event Grid event.
    event_loss: float = 0.0
    event_duplicate: float = 0.0
    event_late: float = 0.0
    event_late_seconds: tuple[float, float] = (60.0, 600.0)

    def __post_init__(self) -> None:
        run = (
            self.never_starts
            + self.no_nested_virtualization
            + self.image_pull_failure
            + self.hang
            + self.spot_eviction
            + self.runner_crash
        )
        if run > 1.0:
            raise ValueError(f"run-fault probabilities add up to {run:.2f} > 1")
        for name in (
            "never_starts",
            "no_nested_virtualization",
            "image_pull_failure",
            "hang",
            "spot_eviction",
            "runner_crash",
            "transient_submit",
            "quota_exhausted",
            "task_failure",
            "message_loss",
            "event_loss",
            "event_duplicate",
            "event_late",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")


@dataclass(frozen=True)
class FaultProfile:
    name: str
    azureml: TierFaults = field(default_factory=TierFaults)
    batch: TierFaults = field(default_factory=TierFaults)
    vm: TierFaults = field(default_factory=TierFaults)

    def for_tier(self, tier: Tier) -> TierFaults:
        return {Tier.AZURE_ML: self.azureml, Tier.BATCH: self.batch, Tier.VM: self.vm}[tier]


PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile("none"),
    # The motivating incident: on Azure ML about half the jobs never get their container up,
    # some hang mid-run, a few submissions are throttled; Batch and plain VMs are healthier.
    # Slow pulls are the default behaviour for Docker Hub images (5-10 min), not a fault.
    "seed": FaultProfile(
        "seed",
        azureml=TierFaults(
            never_starts=0.5,
            hang=0.1,
            image_pull_failure=0.02,
            spot_eviction=0.05,
            transient_submit=0.05,
            task_failure=0.02,
        ),
        batch=TierFaults(
            never_starts=0.05,
            hang=0.03,
            spot_eviction=0.05,
            transient_submit=0.02,
            task_failure=0.02,
        ),
        vm=TierFaults(
            never_starts=0.05,
            hang=0.03,
            transient_submit=0.02,
            task_failure=0.02,
        ),
    ),
    "chaos": FaultProfile(
        "chaos",
        azureml=TierFaults(
            never_starts=0.5,
            no_nested_virtualization=0.05,
            image_pull_failure=0.05,
            hang=0.15,
            spot_eviction=0.2,
            transient_submit=0.2,
            max_transient_submit_errors=3,
            task_failure=0.05,
            message_loss=0.05,
            event_loss=0.1,
            event_duplicate=0.1,
            event_late=0.1,
            runner_crash=0.03,
        ),
        batch=TierFaults(
            never_starts=0.1,
            runner_crash=0.03,
            image_pull_failure=0.05,
            hang=0.1,
            spot_eviction=0.2,
            transient_submit=0.1,
            max_transient_submit_errors=3,
            quota_exhausted=0.1,
            task_failure=0.05,
            message_loss=0.05,
        ),
        vm=TierFaults(
            never_starts=0.08,
            runner_crash=0.03,
            hang=0.08,
            spot_eviction=0.1,
            transient_submit=0.1,
            task_failure=0.05,
            message_loss=0.05,
        ),
    ),
}


def get_profile(profile: FaultProfile | str) -> FaultProfile:
    if isinstance(profile, FaultProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown fault profile {profile!r}; known: {sorted(PROFILES)}") from None


# --------------------------------------------------------------------------------------------
# Timings (seconds)
# --------------------------------------------------------------------------------------------

QUEUE_SECONDS = (2.0, 30.0)
PROVISION_SECONDS = (180.0, 300.0)
DOCKER_HUB_PULL_SECONDS = (300.0, 600.0)
REGIONAL_PULL_SECONDS = (30.0, 110.0)
BOOT_SECONDS = (60.0, 120.0)
# How long an invalid image takes to be rejected (manifest lookup).
INVALID_IMAGE_SECONDS = (10.0, 40.0)
# From the runner's last message (finished / failure) to the tier reporting the job ended.
EXIT_SECONDS = 5.0
# Event Grid's usual delivery latency.
EVENT_LATENCY_SECONDS = (1.0, 3.0)
# The shard runner's and Event Grid's retry delays for a post that failed (5xx, refused).
MESSAGE_RETRY_DELAYS = (2.0, 5.0, 15.0)
EVENT_RETRY_DELAYS = (10.0, 30.0, 60.0)
DEFAULT_IDLE_SECONDS = 600.0

# Actual task durations spread +-20% around the planner's per-domain expectation, so the
# planner's estimates are right on average but not exact.
TASK_SPREAD = 0.2

_TASK_FAILURE_REASONS = (
    "agent crashed: model endpoint returned HTTP 500 three times",
    "task setup failed: the application did not open within 120 s",
    "evaluator error: result file missing",
)

_IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def image_registry(image: str) -> str | None:
    """The registry host of an image reference (None for Docker Hub), or raise ValueError."""
    m = _IMAGE_REF.match(image)
    if not m:
        raise ValueError("invalid image reference")
    registry = m.group("registry")
    # Docker's rule: the first path part is a registry host only if it looks like one.
    if registry and ("." in registry or ":" in registry or registry == "localhost"):
        return None if registry in ("docker.io", "index.docker.io") else registry
    return None


def _regional_registry(registry: str | None) -> bool:
    return registry is not None and registry.endswith(".azurecr.io")


def _task_mean_seconds(task_id: str) -> float:
    return 60.0 * expected_minutes(TaskRef(task_id=task_id, domain=domain_of(task_id)))


# --------------------------------------------------------------------------------------------
# The ledger (ground truth)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    job_name: str
    evaluation_id: str
    shard_index: int
    attempt: int
    tier: Tier
    vm_size: str
    spot: bool
    fault: str  # the run fault drawn or scripted for the job, "" for none
    submitted_at: datetime
    node_allocated_at: datetime | None
    started_at: datetime | None  # the runner's first message ("container started")
    ended_at: datetime | None
    state: JobState
    billed_seconds: float  # node allocation until the job ended (or now, if it still runs)
    cost_usd: float
    tasks_total: int
    tasks_run: int  # tasks the runner finished (completed or failed)
    tasks_completed: int
    messages_sent: int
    messages_lost: int
    events_sent: int
    events_lost: int


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    queue_s: float
    provision_s: float
    pull_s: float
    boot_s: float
    run_fault: RunFault | None
    task_seconds: list[float]
    task_outcomes: list[tuple[TaskRunStatus, float, str]]
    eviction_fraction: float
    net_faults: list[Fault]


@dataclass
class _Node:
    pool: tuple[str, bool, str]
    busy: bool = False
    idle_since: datetime | None = None
    idle_seconds: float = DEFAULT_IDLE_SECONDS


@dataclass
class _Delivery:
    kind: Literal["message", "event"]
    url: str
    headers: dict[str, str]
    body: bytes
    delay_s: float = 0.0


@dataclass
class _Job:
    tier: Tier
    spec: JobSpec
    plan: _Plan
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
    node: _Node | None = None
    node_allocated_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    tasks_run: int = 0
    tasks_completed: int = 0
    next_task: int = 0
    messages_sent: int = 0
    messages_lost: int = 0
    events_sent: int = 0
    events_lost: int = 0
    event_seq: int = 0

    @property
    def ended(self) -> bool:
        return self.state.is_terminal


@dataclass
class _Prepared:
    """What the first submit call of a job name fixed: its scripted faults and submit errors."""

    faults: list[Fault]
    submit_errors_left: int
    submit_error_code: int
    quota: bool


@dataclass
class _Script:
    target: str | JobPredicate
    fault: Fault
    remaining: int | None


def _check_vm_size(vm_size: str) -> None:
    # The simulated cloud offers exactly the priced sizes, so every job has a true cost.
    if vm_size not in PRICED_VM_SIZES:
        raise PermanentTierError(
            f"the VM size {vm_size!r} is not available in this region", code="InvalidVmSize"
        )


def http_post(url: str, headers: dict[str, str], body: bytes) -> int:
    """POST over HTTP; the answer's status code. Connection errors raise (the caller retries)."""
    # requests comes with azure-core, a runtime dependency; imported late so that importing
    # this module stays cheap for the orchestrations that never post.
    import requests

    return requests.post(url, headers=headers, data=body, timeout=10).status_code


_RAW = {
    Tier.AZURE_ML: {
        JobState.QUEUED: "Queued",
        JobState.PREPARING: "Preparing",
        JobState.RUNNING: "Running",
        JobState.COMPLETED: "Completed",
        JobState.FAILED: "Failed",
        JobState.CANCELLED: "Canceled",
    },
    # Azure Batch task states (a terminated task is "completed" with a failure result).
    Tier.BATCH: {
        JobState.QUEUED: "active",
        JobState.PREPARING: "preparing",
        JobState.RUNNING: "running",
        JobState.COMPLETED: "completed",
        JobState.FAILED: "completed",
        JobState.CANCELLED: "completed",
    },
    # `docker inspect` state of the container on the VM.
    Tier.VM: {
        JobState.QUEUED: "created",
        JobState.PREPARING: "created",
        JobState.RUNNING: "running",
        JobState.COMPLETED: "exited",
        JobState.FAILED: "exited",
        JobState.CANCELLED: "exited",
    },
}


class SimulatedCloud:
    def __init__(
        self,
        scheduler: Scheduler,
        *,
        profile: FaultProfile | str,
        seed: int,
        eventgrid_url: str | None,
        post: PostFn | None = None,
        heartbeat_interval_seconds: float = 30.0,
    ) -> None:
        self.scheduler = scheduler
        self.profile = get_profile(profile)
        self.seed = seed
        self.eventgrid_url = eventgrid_url
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self._post = post or http_post
        self._lock = threading.RLock()
        self._jobs: dict[tuple[Tier, str], _Job] = {}
        self._prepared: dict[tuple[Tier, str], _Prepared] = {}
        self._scripts: list[_Script] = []
        self._exhausted: set[Tier] = set()
        self._capacity: dict[tuple[Tier, str], CapacitySpec] = {}
        # How long new capacity takes to become usable, per tier (default: at once), and when
        # each resource made so far becomes usable.
        self._capacity_delay: dict[Tier, timedelta] = {}
        self._capacity_ready_at: dict[tuple[Tier, str], datetime] = {}
        self._idle_nodes: list[_Node] = []
        self._backends = {tier: SimulatedBackend(self, tier) for tier in Tier}

    # ---- public API ------------------------------------------------------------------------

    def backend(self, tier: Tier) -> SimulatedBackend:
        return self._backends[Tier(tier)]

    def now(self) -> datetime:
        return self.scheduler.now()

    def script(self, target: str | JobPredicate, fault: Fault, *, times: int | None = None) -> None:
        """Force `fault` on the job named `target`, or on jobs whose spec matches the predicate
        (at most `times` of them; all of them when None). Applies to jobs not submitted yet."""
        if not isinstance(fault, Fault):
            raise TypeError(f"not a fault: {fault!r}")
        with self._lock:
            self._scripts.append(_Script(target, fault, times))

    def inject(self, job_name: str, fault: RunnerCrash | SpotEviction | HangAfter) -> None:
        """Make `fault` happen to a submitted job now, whatever it was doing: the runner
        crashes (RunnerCrash), the node is evicted (SpotEviction), or the runner hangs
        (HangAfter; its task count is ignored). A job that already ended is left alone."""
        if not isinstance(fault, RunnerCrash | SpotEviction | HangAfter):
            raise TypeError(f"cannot inject {fault!r} into a running job")
        with self._lock:
            jobs = [j for (_, name), j in self._jobs.items() if name == job_name]
            if not jobs:
                raise JobNotFoundError(job_name)
            job = jobs[-1]
            if job.ended:
                return
            self._cancel_timer(job, "step")
            if isinstance(fault, RunnerCrash):
                deliveries = self._crash(job, fault.code)
            elif isinstance(fault, SpotEviction):
                deliveries = self._on_evicted(job)
            else:
                job.hung = True
                self._cancel_timer(job, "heartbeat")
                deliveries = []
        self._send(job, deliveries)

    def delay_capacity(self, tier: Tier, seconds: float) -> None:
        """From now on capacity created on `tier` becomes usable `seconds` after
        `ensure_capacity` created it (a cluster being created, a pool allocating nodes)."""
        with self._lock:
            self._capacity_delay[Tier(tier)] = timedelta(seconds=seconds)

    def exhaust_quota(self, tier: Tier) -> None:
        """From now on `ensure_capacity` and `submit` on `tier` fail for lack of quota."""
        with self._lock:
            self._exhausted.add(Tier(tier))

    @property
    def ledger(self) -> dict[str, LedgerEntry]:
        """Ground truth per job name (jobs with the same name on two tiers: the later wins)."""
        with self._lock:
            now = self.now()
            jobs = sorted(self._jobs.values(), key=lambda j: j.submitted_at)
            return {j.spec.job_name: self._entry(j, now) for j in jobs}

    def ledger_entries(self) -> list[LedgerEntry]:
        with self._lock:
            now = self.now()
            return [self._entry(j, now) for j in self._jobs.values()]

    # ---- backend operations ----------------------------------------------------------------

    def _quota_exhausted(self, tier: Tier, evaluation_id: str) -> bool:
        if tier in self._exhausted:
            return True
        p = self.profile.for_tier(tier).quota_exhausted
        return p > 0 and random.Random(f"{self.seed}/quota/{tier}/{evaluation_id}").random() < p

    def _ensure_capacity(self, tier: Tier, spec: CapacitySpec) -> CapacityReport:
        with self._lock:
            _check_vm_size(spec.vm_size)
            name = f"waa-{tier.value}-{spec.vm_size.lower().replace('_', '-')}"
            if self._quota_exhausted(tier, spec.evaluation_id):
                raise PermanentTierError(
                    f"quota exceeded: not enough {spec.vm_size} cores for {spec.max_nodes} nodes",
                    code="QuotaExceeded",
                )
            key = (tier, name)
            before = self._capacity.get(key)
            self._capacity[key] = spec
            if before is None:
                delay = self._capacity_delay.get(tier, timedelta())
                self._capacity_ready_at[key] = self.now() + delay
                ready = self._capacity_ready(key)
                return CapacityReport(tier=tier, resource_name=name, created=True, ready=ready)
            changed = (before.max_nodes, before.spot, before.idle_seconds_before_scale_down) != (
                spec.max_nodes,
                spec.spot,
                spec.idle_seconds_before_scale_down,
            )
            return CapacityReport(
                tier=tier, resource_name=name, updated=changed, ready=self._capacity_ready(key)
            )

    def _capacity_status(self, tier: Tier, spec: CapacitySpec) -> CapacityReport:
        with self._lock:
            name = f"waa-{tier.value}-{spec.vm_size.lower().replace('_', '-')}"
            key = (tier, name)
            if key not in self._capacity:
                raise PermanentTierError(
                    f"no capacity {name} on {tier.value}: run ensure_capacity first",
                    code="CapacityNotFound",
                )
            ready = self._capacity_ready(key)
            detail = "ready" if ready else f"usable at {self._capacity_ready_at[key].isoformat()}"
            return CapacityReport(tier=tier, resource_name=name, ready=ready, detail=detail)

    def _capacity_ready(self, key: tuple[Tier, str]) -> bool:
        return self.now() >= self._capacity_ready_at.get(key, self.now())

    def _prepare(self, tier: Tier, spec: JobSpec) -> _Prepared:
        key = (tier, spec.job_name)
        prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        faults: list[Fault] = []
        for s in self._scripts:
            if s.remaining == 0:
                continue
            matches = s.target == spec.job_name if isinstance(s.target, str) else s.target(spec)
            if matches:
                faults.append(s.fault)
                if s.remaining is not None:
                    s.remaining -= 1
        rng = random.Random(f"{self.seed}/submit/{tier}/{spec.job_name}")
        tf = self.profile.for_tier(tier)
        errors, code = 0, 429
        scripted = [f for f in faults if isinstance(f, TransientSubmitErrors)]
        if scripted:
            errors, code = scripted[-1].count, scripted[-1].status_code
        elif tf.transient_submit > 0 and rng.random() < tf.transient_submit:
            errors = rng.randint(1, max(1, tf.max_transient_submit_errors))
            code = rng.choice((429, 503))
        quota = any(isinstance(f, QuotaExceeded) for f in faults)
        prepared = _Prepared(faults, errors, code, quota)
        self._prepared[key] = prepared
        return prepared

    def _submit(self, tier: Tier, spec: JobSpec) -> SubmitResult:
        deliveries: list[_Delivery] = []
        with self._lock:
            key = (tier, spec.job_name)
            existing = self._jobs.get(key)
            if existing is not None:
                return SubmitResult(
                    job_name=spec.job_name, backend_job_id=self._job_id(existing), created=False
                )
            _check_vm_size(spec.vm_size)
            prepared = self._prepare(tier, spec)
            if prepared.quota or self._quota_exhausted(tier, spec.evaluation_id):
                raise PermanentTierError(
                    f"quota exceeded: not enough {spec.vm_size} cores in the subscription",
                    code="QuotaExceeded",
                )
            if prepared.submit_errors_left > 0:
                prepared.submit_errors_left -= 1
                code = prepared.submit_error_code
                text = "Too Many Requests" if code == 429 else "Service Unavailable"
                raise TransientBackendError(f"HTTP {code} {text} (simulated)", code=str(code))
            now = self.now()
            job = _Job(
                tier=tier,
                spec=spec,
                plan=self._draw_plan(tier, spec, prepared.faults),
                net_rng=random.Random(f"{self.seed}/net/{tier}/{spec.job_name}"),
                submitted_at=now,
            )
            self._jobs[key] = job
            job.raw = _RAW[tier][JobState.QUEUED]
            deliveries += self._event(job, "Queued")
            job.timers["timeout"] = self._at(spec.timeout_seconds, job, self._on_timeout)
            job.timers["step"] = self._at(job.plan.queue_s, job, self._on_allocate)
            result = SubmitResult(
                job_name=spec.job_name, backend_job_id=self._job_id(job), created=True
            )
        self._send(job, deliveries)
        return result

    def _status(self, tier: Tier, job_name: str) -> JobStatus:
        with self._lock:
            job = self._jobs.get((tier, job_name))
            if job is None:
                raise JobNotFoundError(job_name)
            return JobStatus(
                job_name=job_name,
                state=job.state,
                raw_status=job.raw,
                detail=job.detail,
                failure_kind=job.failure_kind,
            )

    def _cancel(self, tier: Tier, job_name: str) -> None:
        deliveries: list[_Delivery] = []
        with self._lock:
            job = self._jobs.get((tier, job_name))
            if job is None or job.ended:
                return
            deliveries += self._end(job, JobState.CANCELLED, detail="cancelled by request")
        self._send(job, deliveries)

    # ---- the job's life ----------------------------------------------------------------------

    def _draw_plan(self, tier: Tier, spec: JobSpec, faults: list[Fault]) -> _Plan:
        rng = random.Random(f"{self.seed}/job/{tier}/{spec.job_name}")
        tf = self.profile.for_tier(tier)
        queue_s = rng.uniform(*QUEUE_SECONDS)
        provision_s = rng.uniform(*PROVISION_SECONDS)
        try:
            regional = _regional_registry(image_registry(spec.image))
            invalid = False
        except ValueError:
            regional, invalid = False, True
        pull_s = rng.uniform(*(REGIONAL_PULL_SECONDS if regional else DOCKER_HUB_PULL_SECONDS))
        boot_s = rng.uniform(*BOOT_SECONDS)
        task_seconds = []
        outcomes = []
        for task_id in spec.task_ids:
            mean = _task_mean_seconds(task_id)
            task_seconds.append(rng.uniform(1 - TASK_SPREAD, 1 + TASK_SPREAD) * mean)
            if rng.random() < tf.task_failure:
                outcomes.append((TaskRunStatus.FAILED, 0.0, rng.choice(_TASK_FAILURE_REASONS)))
            else:
                outcomes.append((TaskRunStatus.COMPLETED, 1.0 if rng.random() < 0.35 else 0.0, ""))
        n = len(spec.task_ids)
        # Drawn whatever happens, so a scripted fault does not shift the other draws.
        u = rng.random()
        hang_after = rng.randrange(n) if n else 0
        evict_at = rng.randrange(n) if n else 0
        eviction_fraction = rng.uniform(0.1, 0.9)
        crash_at = rng.randrange(n) if n else 0
        crash_code = (
            RunnerFailureCode.WAA_NOT_READY if crash_at == 0 else RunnerFailureCode.TASK_CRASHED
        )

        run_fault: RunFault | None = None
        if invalid:
            run_fault = ImagePullFailure(permanent=True)
        scripted_run = [f for f in faults if isinstance(f, _RUN_FAULTS)]
        if scripted_run:
            run_fault = scripted_run[-1]  # type: ignore[assignment]
        elif run_fault is None:
            eviction = tf.spot_eviction if spec.spot else 0.0
            for p, fault in (
                (tf.never_starts, NeverStarts()),
                (tf.no_nested_virtualization, NoNestedVirtualization()),
                (tf.image_pull_failure, ImagePullFailure()),
                (tf.hang, HangAfter(hang_after)),
                (eviction, SpotEviction(evict_at)),
                (tf.runner_crash, RunnerCrash(crash_at, crash_code)),
            ):
                if u < p:
                    run_fault = fault
                    break
                u -= p
        if tier is Tier.VM and isinstance(run_fault, ImagePullFailure) and not invalid:
            # The VM tier's image is already on the VM: nothing to pull.
            run_fault = None
        net_faults = [f for f in faults if not isinstance(f, (*_RUN_FAULTS, TransientSubmitErrors))]
        return _Plan(
            queue_s=queue_s,
            provision_s=provision_s,
            pull_s=pull_s,
            boot_s=boot_s,
            run_fault=run_fault,
            task_seconds=task_seconds,
            task_outcomes=outcomes,
            eviction_fraction=eviction_fraction,
            net_faults=net_faults,
        )

    def _on_allocate(self, job: _Job) -> list[_Delivery]:
        now = self.now()
        plan = job.plan
        if job.tier is Tier.VM:
            # The VM exists and has the image: the container is created at once.
            job.node_allocated_at = now
            return self._container_created(job)
        if job.tier is Tier.BATCH and not isinstance(plan.run_fault, ImagePullFailure):
            node = self._take_idle_node(job.spec, now)
            if node is not None:
                job.node = node
                job.node_allocated_at = now
                return self._container_created(job)
        if job.tier is Tier.BATCH:
            job.node = _Node(
                pool=self._pool_key(job.spec),
                busy=True,
                idle_seconds=self._idle_seconds(job.spec),
            )
        job.node_allocated_at = now
        out = self._set_state(job, JobState.PREPARING)
        job.timers["step"] = self._at(plan.provision_s, job, self._on_provisioned)
        return out

    def _on_provisioned(self, job: _Job) -> list[_Delivery]:
        fault = job.plan.run_fault
        if isinstance(fault, ImagePullFailure):
            rng = random.Random(f"{self.seed}/pull/{job.tier}/{job.spec.job_name}")
            delay = rng.uniform(*INVALID_IMAGE_SECONDS) if fault.permanent else job.plan.pull_s
            job.timers["step"] = self._at(delay, job, self._on_pull_failed)
        else:
            job.timers["step"] = self._at(job.plan.pull_s, job, self._on_pulled)
        return []

    def _on_pull_failed(self, job: _Job) -> list[_Delivery]:
        fault = job.plan.run_fault
        assert isinstance(fault, ImagePullFailure)
        # A node whose pull failed is not reused.
        job.node = None
        if fault.permanent:
            detail = (
                "ImagePullFailed: failed to pull image: manifest unknown: "
                "the image reference does not exist or is invalid"
            )
            return self._end(job, JobState.FAILED, detail, FailureKind.PERMANENT_FOR_TIER)
        detail = (
            "ImagePullFailed: failed to pull image: context deadline exceeded "
            "(Client.Timeout exceeded while awaiting layers)"
        )
        return self._end(job, JobState.FAILED, detail, FailureKind.TRANSIENT)

    def _on_pulled(self, job: _Job) -> list[_Delivery]:
        return self._container_created(job)

    def _container_created(self, job: _Job) -> list[_Delivery]:
        fault = job.plan.run_fault
        if isinstance(fault, NeverStarts):
            # The tier reports the job as started (Azure ML says Running), but the container
            # setup is stuck: Batch keeps the task in "preparing", a VM's container stays
            # "created". Nothing else happens until the kill switch or a cancel.
            if job.tier is Tier.AZURE_ML:
                return self._set_state(job, JobState.RUNNING)
            return self._set_state(job, JobState.PREPARING)
        out = self._set_state(job, JobState.RUNNING)
        if isinstance(fault, NoNestedVirtualization):
            job.timers["step"] = self._at(2.0, job, self._on_no_kvm)
        else:
            job.timers["step"] = self._at(job.plan.boot_s, job, self._on_booted)
        return out

    def _on_no_kvm(self, job: _Job) -> list[_Delivery]:
        job.started_at = job.started_at or self.now()
        failure = RunnerFailure(
            code=RunnerFailureCode.NO_NESTED_VIRTUALIZATION,
            message="/dev/kvm is missing: this VM offers no nested virtualization",
            permanent=True,
        )
        out = self._message(job, MessageKind.FAILURE, failure=failure)
        job.timers["step"] = self._at(EXIT_SECONDS, job, self._on_no_kvm_exit)
        return out

    def _on_no_kvm_exit(self, job: _Job) -> list[_Delivery]:
        return self._end(
            job,
            JobState.FAILED,
            "container exited with code 3: no_nested_virtualization",
            FailureKind.PERMANENT_FOR_TIER,
        )

    def _on_booted(self, job: _Job) -> list[_Delivery]:
        job.started_at = self.now()
        fault = job.plan.run_fault
        if isinstance(fault, RunnerCrash) and fault.tasks == 0:
            return self._crash(job, fault.code)
        out = self._message(job, MessageKind.HEARTBEAT)
        job.timers["heartbeat"] = self._at(self.heartbeat_interval_seconds, job, self._on_heartbeat)
        out += self._start_task(job)
        return out

    def _on_heartbeat(self, job: _Job) -> list[_Delivery]:
        job.timers["heartbeat"] = self._at(self.heartbeat_interval_seconds, job, self._on_heartbeat)
        return self._message(job, MessageKind.HEARTBEAT)

    def _start_task(self, job: _Job) -> list[_Delivery]:
        plan = job.plan
        i = job.next_task
        if i >= len(plan.task_seconds):
            job.timers["step"] = self._at(1.0, job, self._on_all_done)
            return []
        fault = plan.run_fault
        if isinstance(fault, HangAfter) and i >= fault.tasks:
            job.hung = True
            self._cancel_timer(job, "heartbeat")
            return []
        if isinstance(fault, RunnerCrash) and i == fault.tasks:
            return self._crash(job, fault.code)
        if isinstance(fault, SpotEviction) and i == fault.tasks:
            delay = plan.task_seconds[i] * plan.eviction_fraction
            job.timers["step"] = self._at(delay, job, self._on_evicted)
            return []
        job.timers["step"] = self._at(plan.task_seconds[i], job, self._on_task_done)
        return []

    def _on_task_done(self, job: _Job) -> list[_Delivery]:
        i = job.next_task
        status, score, reason = job.plan.task_outcomes[i]
        result = TaskResult(
            task_id=job.spec.task_ids[i],
            status=status,
            score=score,
            reason=reason,
            duration_seconds=round(job.plan.task_seconds[i], 3),
        )
        job.tasks_run += 1
        if status is TaskRunStatus.COMPLETED:
            job.tasks_completed += 1
        job.next_task += 1
        out = self._message(job, MessageKind.TASK_RESULT, task_result=result)
        return out + self._start_task(job)

    def _on_all_done(self, job: _Job) -> list[_Delivery]:
        out = self._message(job, MessageKind.FINISHED, exit_code=0)
        self._cancel_timer(job, "heartbeat")
        job.timers["step"] = self._at(EXIT_SECONDS, job, self._on_exit)
        return out

    def _on_exit(self, job: _Job) -> list[_Delivery]:
        return self._end(job, JobState.COMPLETED, "")

    def _crash(self, job: _Job, code: RunnerFailureCode) -> list[_Delivery]:
        out: list[_Delivery] = []
        if job.started_at is not None:  # a runner that never started cannot report anything
            failure = RunnerFailure(code=code, message=f"shard runner failed: {code.value}")
            out = self._message(job, MessageKind.FAILURE, failure=failure)
        # The runner exits: no heartbeat, no message any more.
        job.hung = True
        self._cancel_timer(job, "heartbeat")
        job.timers["step"] = self._at(EXIT_SECONDS, job, self._on_crash_exit)
        return out

    def _on_crash_exit(self, job: _Job) -> list[_Delivery]:
        return self._end(
            job, JobState.FAILED, "container exited with code 1", FailureKind.JOB_FAILED
        )

    def _on_evicted(self, job: _Job) -> list[_Delivery]:
        job.node = None
        return self._end(
            job,
            JobState.FAILED,
            "preempted: the low-priority node was evicted",
            FailureKind.TRANSIENT,
        )

    def _on_timeout(self, job: _Job) -> list[_Delivery]:
        return self._end(
            job,
            JobState.FAILED,
            f"job exceeded its timeout of {job.spec.timeout_seconds} s and was stopped",
            FailureKind.JOB_FAILED,
        )

    # ---- helpers (called with the lock held) ------------------------------------------------

    def _set_state(self, job: _Job, state: JobState) -> list[_Delivery]:
        if state.rank < job.state.rank or state == job.state:
            return []
        job.state = state
        job.raw = _RAW[job.tier][state]
        return self._event(job, job.raw)

    def _end(
        self,
        job: _Job,
        state: JobState,
        detail: str,
        failure_kind: FailureKind | None = None,
    ) -> list[_Delivery]:
        if job.ended:
            return []
        now = self.now()
        if state is not JobState.COMPLETED:
            job.silenced = True
        for handle in job.timers.values():
            handle.cancel()
        job.timers.clear()
        job.state = state
        job.detail = detail
        job.failure_kind = failure_kind
        job.ended_at = now
        job.raw = _RAW[job.tier][state]
        if job.tier is Tier.BATCH:
            job.raw = "completed:success" if state is JobState.COMPLETED else "completed:failure"
        elif job.tier is Tier.VM:
            code = {JobState.COMPLETED: 0, JobState.FAILED: 1, JobState.CANCELLED: 137}[state]
            job.raw = f"exited({code})"
        if job.node is not None and job.tier is Tier.BATCH and state is JobState.COMPLETED:
            job.node.busy = False
            job.node.idle_since = now
            self._idle_nodes.append(job.node)
        job.node = None
        out = self._event(job, _RAW[Tier.AZURE_ML][state])
        if state is JobState.COMPLETED:
            out += self._event(job, "Completed", event_type=AML_RUN_COMPLETED)
        return out

    def _cancel_timer(self, job: _Job, name: str) -> None:
        handle = job.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _at(self, delay_s: float, job: _Job, step: Callable[[_Job], list[_Delivery]]) -> CallHandle:
        when = self.now() + timedelta(seconds=delay_s)

        def fire() -> None:
            with self._lock:
                if job.ended:
                    return
                deliveries = step(job)
            self._send(job, deliveries)

        return self.scheduler.call_at(when, fire)

    def _pool_key(self, spec: JobSpec) -> tuple[str, bool, str]:
        return (spec.vm_size, spec.spot, spec.image)

    def _idle_seconds(self, spec: JobSpec) -> float:
        for (tier, _), cap in self._capacity.items():
            if tier is Tier.BATCH and cap.vm_size == spec.vm_size:
                return float(cap.idle_seconds_before_scale_down)
        return DEFAULT_IDLE_SECONDS

    def _take_idle_node(self, spec: JobSpec, now: datetime) -> _Node | None:
        key = self._pool_key(spec)
        # Nodes idle for longer than the pool's scale-down time are gone.
        self._idle_nodes = [
            n
            for n in self._idle_nodes
            if n.idle_since is not None and (now - n.idle_since).total_seconds() < n.idle_seconds
        ]
        for node in self._idle_nodes:
            if node.pool == key:
                self._idle_nodes.remove(node)
                node.busy = True
                node.idle_since = None
                return node
        return None

    def _job_id(self, job: _Job) -> str:
        if job.tier is Tier.AZURE_ML:
            return job.spec.job_name
        if job.tier is Tier.BATCH:
            return f"waa-{job.spec.evaluation_id}/{job.spec.job_name}"
        return f"vm-{job.spec.shard_index}/{job.spec.job_name}"

    def _message(
        self,
        job: _Job,
        kind: MessageKind,
        *,
        task_result: TaskResult | None = None,
        failure: RunnerFailure | None = None,
        exit_code: int | None = None,
    ) -> list[_Delivery]:
        if job.silenced or job.hung:
            return []
        msg = JobMessage(
            job_name=job.spec.job_name,
            kind=kind,
            sent_at=self.now(),
            task_result=task_result,
            failure=failure,
            exit_code=exit_code,
        )
        job.messages_sent += 1
        lost = job.net_rng.random() < self.profile.for_tier(job.tier).message_loss
        lost = lost or any(
            isinstance(f, LostMessages) and kind in f.kinds for f in job.plan.net_faults
        )
        if lost:
            job.messages_lost += 1
            return []
        headers = {
            "Authorization": f"Bearer {job.spec.heartbeat_token}",
            "Content-Type": "application/json",
        }
        body = msg.model_dump_json(exclude_none=True).encode()
        return [_Delivery("message", job.spec.heartbeat_url, headers, body)]

    def _event(
        self, job: _Job, status: str, *, event_type: str = AML_RUN_STATUS_CHANGED
    ) -> list[_Delivery]:
        if job.tier is not Tier.AZURE_ML or self.eventgrid_url is None:
            return []
        spec = job.spec
        job.event_seq += 1
        tf = self.profile.for_tier(job.tier)
        rng = job.net_rng

        def scripted(kind: type) -> list[Any]:
            return [
                f
                for f in job.plan.net_faults
                if isinstance(f, kind) and (f.statuses is None or status in f.statuses)
            ]

        # Always draw the same numbers, so a scripted fault does not shift later draws.
        lose, dup, late = rng.random(), rng.random(), rng.random()
        latency = rng.uniform(*EVENT_LATENCY_SECONDS)
        late_s = rng.uniform(*tf.event_late_seconds)
        job.events_sent += 1
        if lose < tf.event_loss or scripted(LostEvents):
            job.events_lost += 1
            return []
        delay = latency
        late_faults = scripted(LateEvents)
        if late_faults:
            delay += late_faults[-1].delay_seconds
        elif late < tf.event_late:
            delay += late_s
        experiment = spec.experiment_name or spec.evaluation_id
        tags = {
            **spec.tags,
            "waa_evaluation": spec.evaluation_id,
            "waa_shard": str(spec.shard_index),
            "waa_attempt": str(spec.attempt),
        }
        event = {
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"{spec.job_name}/{job.event_seq}")),
            "topic": AML_TOPIC,
            "subject": f"experiments/{uuid.uuid5(_ID_NAMESPACE, experiment)}/runs/{spec.job_name}",
            "eventType": event_type,
            "eventTime": self.now().isoformat(),
            "dataVersion": "2",
            "metadataVersion": "1",
            "data": {
                "experimentId": str(uuid.uuid5(_ID_NAMESPACE, experiment)),
                "experimentName": experiment,
                "runId": spec.job_name,
                "runType": "azureml.CommandJob",
                "runTags": tags,
                "runProperties": {},
                "runStatus": status,
            },
        }
        headers = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
        body = json.dumps([event]).encode()
        copies = 2 if (dup < tf.event_duplicate or scripted(DuplicatedEvents)) else 1
        return [_Delivery("event", self.eventgrid_url, headers, body, delay) for _ in range(copies)]

    def _entry(self, job: _Job, now: datetime) -> LedgerEntry:
        spec = job.spec
        billed = 0.0
        if job.node_allocated_at is not None:
            billed = ((job.ended_at or now) - job.node_allocated_at).total_seconds()
        fault = job.plan.run_fault
        return LedgerEntry(
            job_name=spec.job_name,
            evaluation_id=spec.evaluation_id,
            shard_index=spec.shard_index,
            attempt=spec.attempt,
            tier=job.tier,
            vm_size=spec.vm_size,
            spot=spec.spot,
            fault=type(fault).__name__ if fault is not None else "",
            submitted_at=job.submitted_at,
            node_allocated_at=job.node_allocated_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            state=job.state,
            billed_seconds=billed,
            cost_usd=job_cost(spec.vm_size, spec.spot, billed),
            tasks_total=len(spec.task_ids),
            tasks_run=job.tasks_run,
            tasks_completed=job.tasks_completed,
            messages_sent=job.messages_sent,
            messages_lost=job.messages_lost,
            events_sent=job.events_sent,
            events_lost=job.events_lost,
        )

    # ---- delivery (called WITHOUT the lock: posts reach the app, which may call back in) ----

    def _send(self, job: _Job, deliveries: Iterable[_Delivery]) -> None:
        for d in deliveries:
            if d.delay_s > 0:
                when = self.now() + timedelta(seconds=d.delay_s)
                self.scheduler.call_at(when, lambda d=d: self._attempt(job, d, 0))
            else:
                self._attempt(job, d, 0)

    def _attempt(self, job: _Job, d: _Delivery, tries: int) -> None:
        if d.kind == "message" and job.silenced:
            return
        headers = d.headers
        if d.kind == "event":
            headers = {**headers, "aeg-delivery-count": str(tries)}
        try:
            code = self._post(d.url, headers, d.body)
        except Exception as err:  # connection refused, timeout: the app is not there (yet)
            log.debug("simulated %s post failed: %s", d.kind, type(err).__name__)
            code = 0
        if 200 <= code < 300:
            return
        retryable = code == 0 or code >= 500 or code in (408, 429)
        delays = MESSAGE_RETRY_DELAYS if d.kind == "message" else EVENT_RETRY_DELAYS
        if not retryable or tries >= len(delays):
            log.info("simulated %s for job %s dropped (status %s)", d.kind, job.spec.job_name, code)
            return
        when = self.now() + timedelta(seconds=delays[tries])
        self.scheduler.call_at(when, lambda: self._attempt(job, d, tries + 1))


class SimulatedBackend:
    """The `ComputeBackend` of one tier of a `SimulatedCloud`."""

    def __init__(self, cloud: SimulatedCloud, tier: Tier) -> None:
        self.tier = tier
        self._cloud = cloud

    def ensure_capacity(self, spec: CapacitySpec) -> CapacityReport:
        return self._cloud._ensure_capacity(self.tier, spec)

    def capacity_status(self, spec: CapacitySpec) -> CapacityReport:
        return self._cloud._capacity_status(self.tier, spec)

    def submit(self, spec: JobSpec) -> SubmitResult:
        return self._cloud._submit(self.tier, spec)

    def status(self, job_name: str) -> JobStatus:
        return self._cloud._status(self.tier, job_name)

    def cancel(self, job_name: str) -> None:
        self._cloud._cancel(self.tier, job_name)

    def __repr__(self) -> str:
        return f"SimulatedBackend(tier={self.tier.value!r})"


# --------------------------------------------------------------------------------------------
# Process-wide installation
# --------------------------------------------------------------------------------------------

_installed: SimulatedCloud | None = None
_install_lock = threading.Lock()


def install_cloud(cloud: SimulatedCloud | None) -> None:
    """Make `cloud` the process's simulated Azure (the devhost and tests hand in their clock);
    None uninstalls it."""
    global _installed
    with _install_lock:
        _installed = cloud


def current_cloud() -> SimulatedCloud:
    """The installed cloud, or a wall-clock one built from the app settings (for `func start`)."""
    global _installed
    with _install_lock:
        if _installed is None:
            from adapters.compute.realtime import ThreadingScheduler
            from domain.settings import load_settings

            settings = load_settings()
            _installed = SimulatedCloud(
                ThreadingScheduler(),
                profile=settings.sim_profile,
                seed=settings.sim_seed,
                eventgrid_url=eventgrid_url_for(settings.public_base_url),
            )
        return _installed
