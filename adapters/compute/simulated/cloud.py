"""The simulated world: `SimulatedCloud` and the `ComputeBackend` of each of its tiers.

One `SimulatedCloud` is the world; `cloud.backend(tier)` gives the `ComputeBackend` of a tier.
It keeps the capacity (clusters, pools), the quota, the scripted faults and every job, and
hands each job's life to the state machine (`lifecycle.JobLifecycle`).
"""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

from adapters.compute.simulated.artifacts import ArtifactUploader, RequestFn, http_request
from adapters.compute.simulated.delivery import Courier, Delivery, PostFn, http_post
from adapters.compute.simulated.faults import (
    Fault,
    HangAfter,
    RunnerCrash,
    SpotEviction,
    SubmitFault,
)
from adapters.compute.simulated.jobs import (
    Job,
    JobPredicate,
    Prepared,
    Script,
    check_vm_size,
    draw_plan,
)
from adapters.compute.simulated.ledger import LedgerEntry, ledger_entry
from adapters.compute.simulated.lifecycle import JobLifecycle, NodePool
from adapters.compute.simulated.profiles import FaultProfile, get_profile
from adapters.compute.simulated.tiers import TIERS
from adapters.compute.simulated.timings import DEFAULT_IDLE_SECONDS
from domain.clock import Scheduler
from domain.jobs import (
    CapacityReport,
    CapacitySpec,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStatus,
    PermanentTierError,
    SubmitResult,
    Tier,
    TransientBackendError,
)


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
        upload_artifacts: bool = False,
        request: RequestFn | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.profile = get_profile(profile)
        self.seed = seed
        self.eventgrid_url = eventgrid_url
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self._lock = threading.RLock()
        # upload_artifacts: after each completed task the job uploads its result folder
        # through the heartbeat endpoint's upload URLs, as the shard runner does.
        # request: request/response over HTTP (queue jobs' next_task asks, artifact uploads).
        request = request or http_request
        self.artifacts = ArtifactUploader(scheduler, request) if upload_artifacts else None
        self._courier = Courier(
            scheduler, self.profile, eventgrid_url, post or http_post, self.artifacts, request
        )
        self._life = JobLifecycle(
            scheduler,
            self._lock,
            self._courier,
            NodePool(self._idle_seconds),
            seed=seed,
            heartbeat_interval_seconds=heartbeat_interval_seconds,
        )
        self._jobs: dict[tuple[Tier, str], Job] = {}
        self._prepared: dict[tuple[Tier, str], Prepared] = {}
        self._scripts: list[Script] = []
        self._exhausted: set[Tier] = set()
        self._capacity: dict[tuple[Tier, str], CapacitySpec] = {}
        # How long new capacity takes to become usable, per tier (default: at once), and when
        # each resource made so far becomes usable.
        self._capacity_delay: dict[Tier, timedelta] = {}
        self._capacity_ready_at: dict[tuple[Tier, str], datetime] = {}
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
            self._scripts.append(Script(target, fault, times))

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
            self._life.cancel_timer(job, "step")
            deliveries: list[Delivery] = []
            if isinstance(fault, RunnerCrash):
                deliveries = self._life.crash(job, fault.code)
            elif isinstance(fault, SpotEviction):
                deliveries = self._life.evicted(job)
            else:
                self._life.hang(job)
        self._courier.send(job, deliveries)

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
            return {j.spec.job_name: ledger_entry(j, now) for j in jobs}

    def ledger_entries(self) -> list[LedgerEntry]:
        with self._lock:
            now = self.now()
            return [ledger_entry(j, now) for j in self._jobs.values()]

    def jobs_of(self, evaluation_id: str) -> list[LedgerEntry]:
        """The ground truth of every job of one evaluation (every tier), by submission time then
        name: with when its run fault took effect (`fault_at`), when the app cancelled it
        (`cancelled_at`) and the (task id, start, end) of each task it ran (`task_spans`)."""
        with self._lock:
            now = self.now()
            jobs = [j for j in self._jobs.values() if j.spec.evaluation_id == evaluation_id]
            jobs.sort(key=lambda j: (j.submitted_at, j.spec.job_name))
            return [ledger_entry(j, now) for j in jobs]

    # ---- capacity ----------------------------------------------------------------------------

    def _quota_exhausted(self, tier: Tier, evaluation_id: str) -> bool:
        if tier in self._exhausted:
            return True
        p = self.profile.for_tier(tier).quota_exhausted
        return p > 0 and random.Random(f"{self.seed}/quota/{tier}/{evaluation_id}").random() < p

    def _ensure_capacity(self, tier: Tier, spec: CapacitySpec) -> CapacityReport:
        with self._lock:
            check_vm_size(spec.vm_size)
            name = _capacity_name(tier, spec)
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
            name = _capacity_name(tier, spec)
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

    def _idle_seconds(self, spec: JobSpec) -> float:
        """How long a node of this job's size stays in its pool after its job completed."""
        for (tier, _), cap in self._capacity.items():
            if TIERS[tier].reuses_nodes and cap.vm_size == spec.vm_size:
                return float(cap.idle_seconds_before_scale_down)
        return DEFAULT_IDLE_SECONDS

    # ---- jobs --------------------------------------------------------------------------------

    def _prepare(self, tier: Tier, spec: JobSpec) -> Prepared:
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
        prepared = Prepared(faults)
        for f in faults:
            if isinstance(f, SubmitFault):
                f.on_prepare(prepared)
        rng = random.Random(f"{self.seed}/submit/{tier}/{spec.job_name}")
        tf = self.profile.for_tier(tier)
        drawn = not prepared.errors_scripted and tf.transient_submit > 0
        if drawn and rng.random() < tf.transient_submit:
            prepared.submit_errors_left = rng.randint(1, max(1, tf.max_transient_submit_errors))
            prepared.submit_error_code = rng.choice((429, 503))
        self._prepared[key] = prepared
        return prepared

    def _submit(self, tier: Tier, spec: JobSpec) -> SubmitResult:
        behaviour = TIERS[tier]
        with self._lock:
            key = (tier, spec.job_name)
            existing = self._jobs.get(key)
            if existing is not None:
                return SubmitResult(
                    job_name=spec.job_name,
                    backend_job_id=behaviour.job_id(existing.spec),
                    created=False,
                )
            check_vm_size(spec.vm_size)
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
            job = Job(
                tier=tier,
                spec=spec,
                plan=draw_plan(self.seed, tier, spec, prepared.faults, self.profile.for_tier(tier)),
                net_rng=random.Random(f"{self.seed}/net/{tier}/{spec.job_name}"),
                submitted_at=self.now(),
            )
            self._jobs[key] = job
            deliveries = self._life.submitted(job)
            result = SubmitResult(
                job_name=spec.job_name, backend_job_id=behaviour.job_id(spec), created=True
            )
        self._courier.send(job, deliveries)
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
        with self._lock:
            job = self._jobs.get((tier, job_name))
            if job is None or job.ended:
                return
            job.cancelled_at = self.now()
            deliveries = self._life.end(job, JobState.CANCELLED, detail="cancelled by request")
        self._courier.send(job, deliveries)


def _capacity_name(tier: Tier, spec: CapacitySpec) -> str:
    return f"waa-{tier.value}-{spec.vm_size.lower().replace('_', '-')}"


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

    def end_evaluation(self, evaluation_id: str) -> None:
        """Nothing to end: the simulated tiers hold nothing per evaluation (each job ends on its
        own, and its capacity scales down by itself)."""

    def __repr__(self) -> str:
        return f"SimulatedBackend(tier={self.tier.value!r})"
