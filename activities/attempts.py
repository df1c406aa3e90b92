"""Activities of a shard's attempts: thin calls into the state store and the compute backends.

Every activity here may run more than once for the same input (at-least-once delivery, the
retry policy, a host crash between the side effect and the recording of the result), so each
is idempotent: the job name is derived from evaluation, shard and attempt; rows are written
with ETags; a second submit of the same job name returns the existing job.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from adapters import runtime, secrets, telemetry
from adapters.logs import ids
from adapters.settings import AppSettings
from adapters.state.table_store import FINAL_TASK_OUTCOMES, StateStore, utcnow_iso
from domain import alerts, job_state, names
from domain.contracts import (
    CapacityInput,
    CapacityResult,
    CapacityStatus,
    CloseShardInput,
    FinishAttemptInput,
    PrepareAttemptInput,
    ShardState,
    ShardSummary,
    SubmitJobInput,
    SubmitJobResult,
    SubmitStatus,
)
from domain.cost import after_settlement, settled
from domain.credentials import (
    HEARTBEAT_SECRET_MARGIN_SECONDS,
    ModelCredentials,
    ModelProvider,
    heartbeat_secret_name,
    token_in_vault,
)
from domain.jobs import (
    BackendError,
    CapacityReport,
    CapacitySpec,
    FailureKind,
    JobSpec,
    JobState,
)
from domain.messages import heartbeat_token
from domain.outcomes import TaskOutcome
from domain.policy import BREAKER_THRESHOLD, AttemptOutcome, counts_against_tier
from domain.progress import job_estimate_usd
from domain.slots import pending_minutes, pending_task_ids, queue_job_estimate_usd

bp = df.Blueprint()
log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/heartbeats"


def _shard_state(
    store: StateStore, evaluation_id: str, task_ids: list[str], *, queue: bool = False
) -> ShardState:
    """What the shard decides on, from one read of the evaluation's partition. A worker slot
    (`queue`): `remaining` is the evaluation's pending tasks, in queue order."""
    rows = store.get_evaluation_rows(evaluation_id)
    if rows is None:
        raise LookupError(f"evaluation {evaluation_id} has no state rows")
    final = {t["task_id"] for t in rows["tasks"] if t.get("outcome") in FINAL_TASK_OUTCOMES}
    return ShardState(
        remaining=(
            pending_task_ids(rows["tasks"]) if queue else [t for t in task_ids if t not in final]
        ),
        breaker=rows["breaker"],
        cancel_requested=bool(rows["evaluation"].get("cancel_requested", False)),
    )


@bp.activity_trigger(input_name="payload", activity=names.PREPARE_ATTEMPT)
def prepare_attempt(payload: dict) -> dict[str, Any]:
    """What the next attempt needs: tasks still without a result, tier failures so far in this
    evaluation (the circuit breaker), and whether the user cancelled."""
    request = PrepareAttemptInput.from_json(payload)
    store = runtime.services().store
    return _shard_state(
        store, request.evaluation_id, request.task_ids, queue=request.queue
    ).to_json()


def _job_spec(
    request: SubmitJobInput,
    secret: str,
    base_url: str,
    credentials: ModelCredentials | None = None,
    job_identity_client_id: str | None = None,
) -> JobSpec:
    """The attempt's job. Model credentials travel as names only: the vault, and per variable
    the secret holding it (the job reads the values itself with its identity); the Azure
    OpenAI endpoint, not a secret, as a plain variable."""
    name = request.job_name
    task_ids = request.task_ids
    heartbeat_url = base_url + HEARTBEAT_PATH
    credentials = credentials or ModelCredentials()
    provider = ModelProvider(request.model_provider) if request.model_provider else None
    secret_env = credentials.secret_env(provider)
    plain = credentials.plain_env(provider)
    # The vault also holds the heartbeat token on Azure ML and Batch (`_token_to_vault`).
    if credentials.vault_url and job_identity_client_id:
        plain["WAA_IDENTITY_CLIENT_ID"] = job_identity_client_id
    # Queue distribution: the job asks for each task (`next_task`) and stops asking near its
    # own timeout (the runner's WAA_CLAIM_MARGIN_SECONDS before WAA_JOB_TIMEOUT_SECONDS).
    queue_env = (
        {
            "WAA_TASK_SOURCE": "queue",
            "WAA_JOB_TIMEOUT_SECONDS": str(int(request.job_timeout_seconds)),
        }
        if request.queue
        else {}
    )
    return JobSpec(
        job_name=name,
        evaluation_id=request.evaluation_id,
        shard_index=request.shard_index,
        attempt=request.attempt,
        tier=request.tier,
        task_ids=task_ids,
        vm_size=request.vm_size,
        spot=request.spot,
        image=request.image,
        timeout_seconds=int(request.job_timeout_seconds),
        heartbeat_url=heartbeat_url,
        heartbeat_token=heartbeat_token(secret, name),
        environment={
            "WAA_JOB_NAME": name,
            "WAA_TASK_IDS": ",".join(task_ids),
            "WAA_HEARTBEAT_URL": heartbeat_url,
            "WAA_MAX_STEPS": str(request.max_steps),
            "WAA_AGENT": request.agent,
            "WAA_MODEL": request.model,
            "WAA_SOM_ORIGIN": request.som_origin,
            "WAA_A11Y_BACKEND": request.a11y_backend,
            **queue_env,
            **plain,
        },
        tags={
            "waa_evaluation": request.evaluation_id,
            "waa_shard": str(request.shard_index),
            "waa_attempt": str(request.attempt),
        },
        experiment_name=f"waa-{request.evaluation_id}",
        secrets_vault_url=credentials.vault_url or "",
        secret_env=secret_env,
        queue=request.queue,
        expected_tasks=request.expected_tasks if request.queue else 0,
    )


def _budget_alerts(
    svc: runtime.Services, evaluation_id: str, *, refused: bool, now: datetime
) -> None:
    evaluation = svc.store.get_evaluation(evaluation_id)
    if evaluation is None:
        return
    for alert in alerts.budget_alerts(evaluation, refused=refused):
        svc.alerter().fire(evaluation_id, alert, now)


def _token_to_vault(spec: JobSpec, settings: AppSettings, now: datetime) -> JobSpec:
    """On Azure ML and Batch with a vault, the attempt's heartbeat token becomes a Key Vault
    secret that expires after the job's own timeout could have ended it, and the job gets its
    name instead of the token. The secret is left to expire rather than deleted when the
    attempt ends: the token authenticates only this attempt's job, whose messages count for
    nothing once the attempt is closed. Raises `BackendError` (transient: retried)."""
    cloud = settings.compute_backend == "azure"
    if not token_in_vault(settings.model_secrets_vault_url, spec.tier, cloud):
        return spec
    name = heartbeat_secret_name(spec.job_name)
    expires = now + timedelta(seconds=spec.timeout_seconds + HEARTBEAT_SECRET_MARGIN_SECONDS)
    secrets.token_vault(settings).store_token(
        name,
        spec.heartbeat_token,
        expires_on=expires,
        tags={"waa_evaluation": spec.evaluation_id, "waa_job": spec.job_name},
    )
    return spec.model_copy(update={"heartbeat_token": "", "heartbeat_token_secret": name})


def _log_fields(request: SubmitJobInput | FinishAttemptInput) -> dict[str, Any]:
    return ids(
        evaluation_id=request.evaluation_id,
        shard=request.shard_index,
        attempt=request.attempt,
        job_name=request.job_name,
        tier=request.tier.value,
    )


@bp.activity_trigger(input_name="payload", activity=names.SUBMIT_JOB)
def submit_job(payload: dict) -> dict[str, Any]:
    """Submit one attempt's job. Returns {"status": "submitted" | "failed" | "budget", ...};
    raises only for transient errors, which the orchestration's retry policy retries."""
    request = SubmitJobInput.from_json(payload)
    svc = runtime.services()
    store = svc.store
    now = runtime.now()
    eid, name, tier = request.evaluation_id, request.job_name, request.tier
    fields = _log_fields(request)

    existing = store.get_job(eid, name)
    if existing is None:
        estimate = _estimate_usd(store, request)
        reserved = store.reserve_budget(eid, estimate)
        _budget_alerts(svc, eid, refused=not reserved, now=now)
        if not reserved:
            log.warning("budget would be exceeded; not submitting", **fields)
            return SubmitJobResult(
                status=SubmitStatus.BUDGET,
                reason="budget exhausted: the next job's projected cost would pass budget_usd",
                failure_kind=None,
            ).to_json()
        existing, registered = store.register_job(
            {
                "job_name": name,
                "evaluation_id": eid,
                "shard_index": request.shard_index,
                "attempt": request.attempt,
                "instance_id": request.instance_id,
                "tier": tier.value,
                "vm_size": request.vm_size,
                "spot": request.spot,
                "task_count": len(request.task_ids),
                "reserved_usd": estimate,
                "submitted_at": utcnow_iso(now),
                "heartbeat_timeout_seconds": float(request.heartbeat_timeout_seconds),
                # Its deadline (submitted_at + this + the run deadline's grace) bounds the
                # artifact upload SAS the heartbeat endpoint mints for it.
                "job_timeout_seconds": float(request.job_timeout_seconds),
                "stuck_detection": bool(request.stuck_detection),
                "task_retries": int(request.task_retries),
                **_queue_columns(request),
            }
        )
        if registered and request.failover:
            telemetry.failover(tier.value)
    if JobState(existing["state"]).is_terminal:
        # A re-delivery after the attempt already failed permanently: report it again.
        return SubmitJobResult(
            status=SubmitStatus.FAILED,
            reason=existing.get("detail", "job ended"),
            failure_kind=existing.get("failure_kind") or FailureKind.JOB_FAILED,
        ).to_json()

    backend = svc.backend(tier)
    settings = svc.settings
    spec = _job_spec(
        request,
        settings.heartbeat_secret.get_secret_value(),
        settings.public_base_url,
        settings.model_credentials(),
        settings.job_identity_client_id,
    )
    try:
        spec = _token_to_vault(spec, settings, now)
        result = backend.submit(spec)
    except BackendError as err:
        if err.is_transient:
            log.warning("transient submission error: %s", err, **fields)
            raise
        log.error("submission failed permanently for this tier: %s", err, **fields)
        store.advance_job(
            eid, name, JobState.FAILED, at=now, detail=str(err), failure_kind=err.kind
        )
        return SubmitJobResult(
            status=SubmitStatus.FAILED, reason=f"{tier.value}: {err}", failure_kind=err.kind
        ).to_json()

    store.update_job(
        eid,
        name,
        lambda r: (
            {**r, "backend_job_id": result.backend_job_id} if not r.get("backend_job_id") else None
        ),
    )
    if not request.queue:  # a queue job's tasks turn running as it claims them
        store.mark_tasks_running(eid, request.task_ids, attempt=request.attempt, job_name=name)
    store.update_shard(
        eid,
        request.shard_index,
        tier=tier.value,
        attempt=request.attempt,
        job_name=name,
        status="submitted",
        updated_at=utcnow_iso(now),
    )
    log.info("job submitted (created=%s)", result.created, **fields)
    if result.created:
        telemetry.job_submitted(tier.value)
    return SubmitJobResult(status=SubmitStatus.SUBMITTED, reason="", failure_kind=None).to_json()


def _queue_columns(request: SubmitJobInput) -> dict[str, Any]:
    """A queue job's row: the flag the `next_task` endpoint checks, the tail-copy factor its
    answers use, and its expected share of the queue (which is also its task count)."""
    if not request.queue:
        return {}
    return {
        "queue": True,
        "tail_copy_factor": float(request.tail_copy_factor),
        "expected_tasks": int(request.expected_tasks),
        "task_count": int(request.expected_tasks),
    }


def _estimate_usd(store: StateStore, request: SubmitJobInput) -> float:
    """The budget reservation: a static job's own tasks; a queue job's expected share of the
    pending tasks, at their average expected duration."""
    if not request.queue:
        return job_estimate_usd(request.task_ids, request.vm_size, request.spot)
    rows = store.get_evaluation_rows(request.evaluation_id)
    tasks = rows["tasks"] if rows is not None else []
    return queue_job_estimate_usd(
        pending_minutes(tasks), request.expected_tasks, request.vm_size, request.spot
    )


def _capacity_spec(request: CapacityInput) -> CapacitySpec:
    return CapacitySpec(
        evaluation_id=request.evaluation_id,
        tier=request.tier,
        vm_size=request.vm_size,
        max_nodes=request.workers,
        spot=request.spot,
        image=request.image,
    )


def _capacity_log_fields(request: CapacityInput) -> dict[str, Any]:
    return ids(
        evaluation_id=request.evaluation_id, shard=request.shard_index, tier=request.tier.value
    )


def _ready_tiers(evaluation: dict[str, Any]) -> set[str]:
    return {t for t in str(evaluation.get("capacity_ready") or "").split(",") if t}


def _capacity_answer(
    store: StateStore, request: CapacityInput, report: CapacityReport
) -> dict[str, Any]:
    """What the shard orchestration needs of a capacity report; a ready tier is recorded on
    the evaluation, so that later attempts and other shards skip the check."""
    eid, tier = request.evaluation_id, request.tier.value
    if not report.ready:
        return _capacity(CapacityStatus.PENDING, report.detail)

    def add_tier(row: dict[str, Any]) -> dict[str, Any] | None:
        ready = _ready_tiers(row)
        return (
            None if tier in ready else {**row, "capacity_ready": ",".join(sorted({*ready, tier}))}
        )

    store.update_evaluation_with(eid, add_tier)
    return _capacity(CapacityStatus.READY, report.detail)


def _capacity(
    status: CapacityStatus, reason: str, failure_kind: FailureKind | None = None
) -> dict[str, Any]:
    return CapacityResult(status=status, reason=reason, failure_kind=failure_kind).to_json()


def _capacity_failed(err: BackendError) -> dict[str, Any]:
    return _capacity(CapacityStatus.FAILED, str(err), err.kind)


@bp.activity_trigger(input_name="payload", activity=names.ENSURE_CAPACITY)
def ensure_capacity(payload: dict) -> dict[str, Any]:
    """Create or check the tier's capacity the first time this evaluation uses the tier, and
    return without waiting for it: {"status": "ready" | "pending" | "failed", ...}. Pending
    capacity (a cluster being created, a pool allocating nodes, VMs pulling the image) is
    polled by the orchestration with `capacity_status` between durable timers. Raises only
    transient errors, which the orchestration's retry policy retries."""
    request = CapacityInput.from_json(payload)
    svc = runtime.services()
    store = svc.store
    fields = _capacity_log_fields(request)
    if request.tier.value in _ready_tiers(store.get_evaluation(request.evaluation_id) or {}):
        return _capacity(CapacityStatus.READY, "")
    try:
        report = svc.backend(request.tier).ensure_capacity(_capacity_spec(request))
    except BackendError as err:
        if err.is_transient:
            log.warning("transient capacity error: %s", err, **fields)
            raise
        log.error("capacity failed permanently for this tier: %s", err, **fields)
        return _capacity_failed(err)
    log.info("capacity %s: %s", "ready" if report.ready else "pending", report.detail, **fields)
    return _capacity_answer(store, request, report)


@bp.activity_trigger(input_name="payload", activity=names.CAPACITY_STATUS)
def capacity_status(payload: dict) -> dict[str, Any]:
    """One cheap look at capacity that `ensure_capacity` left pending. A transient error is
    just another "pending": the orchestration polls again until its deadline."""
    request = CapacityInput.from_json(payload)
    svc = runtime.services()
    fields = _capacity_log_fields(request)
    try:
        report = svc.backend(request.tier).capacity_status(_capacity_spec(request))
    except BackendError as err:
        if err.is_transient:
            log.warning("capacity status unavailable: %s", err, **fields)
            return _capacity(CapacityStatus.PENDING, str(err))
        log.error("capacity failed permanently for this tier: %s", err, **fields)
        return _capacity_failed(err)
    if report.ready:
        log.info("capacity ready: %s", report.detail, **fields)
    return _capacity_answer(svc.store, request, report)


@bp.activity_trigger(input_name="payload", activity=names.FINISH_ATTEMPT)
def finish_attempt(payload: dict) -> dict[str, Any]:
    """Close one attempt: cancel its job unless it completed (a durable timer firing stops
    nothing in the cloud), record the job's end and cost, count a tier failure for the breaker,
    and return what the next attempt needs."""
    request = FinishAttemptInput.from_json(payload)
    svc = runtime.services()
    store = svc.store
    now = runtime.now()
    eid, name, tier = request.evaluation_id, request.job_name, request.tier
    outcome = request.outcome
    fields = _log_fields(request)

    # A worker slot decides on the queue as it is after this job's claims went back to it, so
    # its state is read once, after the release below; a shard's before (its own tasks).
    before = None if request.queue else _shard_state(store, eid, request.task_ids)
    job = store.get_job(eid, name)
    if job is not None:
        final = (
            JobState.COMPLETED
            if outcome is AttemptOutcome.COMPLETED
            else (JobState.CANCELLED if outcome is AttemptOutcome.CANCELLED else JobState.FAILED)
        )
        kind = request.failure_kind
        # Record the orchestration's verdict before cancelling: the cancel makes the backend
        # report the job as cancelled at once, and a sweep reconciling that state (or its
        # Event Grid event) must not overwrite why the attempt really ended.
        _, ended_now = store.advance_job(
            eid, name, final, at=now, detail=request.reason, failure_kind=kind
        )
        if ended_now and outcome is AttemptOutcome.START_TIMEOUT:
            telemetry.start_deadline_hit(tier.value)
            svc.alerter().fire(eid, alerts.start_deadline_hit(job, request.reason), now)
        # A runner that reported "finished" leaves a container that is still exiting. If tasks
        # remain, the next attempt may be submitted at once (a failover has no backoff): stop
        # this job first, so the shard never has two jobs in the cloud. Cancelling a job that
        # has already ended is a no-op on every backend.
        # A queue job that completed may have given tasks back only now (release below) and
        # the slot may submit its next job at once: always stop it.
        leftover = outcome is AttemptOutcome.COMPLETED and (
            before is None or bool(before.remaining)
        )
        if (outcome is not AttemptOutcome.COMPLETED or leftover) and request.submitted:
            try:
                svc.backend(tier).cancel(name)
            except BackendError as err:
                if not request.cancel_best_effort:
                    # Fail the activity: the retry policy tries the cancel again, and the next
                    # attempt is not submitted while this job may still run.
                    log.warning("cancel failed, retrying: %s", err, **fields)
                    raise
                log.error("cancel failed again; the sweeper keeps retrying it: %s", err, **fields)
                store.mark_cancel_pending(eid, name)
        # The orchestration decided this attempt's end itself: nothing left to signal.
        store.update_job(eid, name, lambda r: job_state.attempt_closed(r, outcome))
        _settle_cost(store, eid, name, now)
        store.release_tasks(eid, name, request.reason, at=now)
    state = _shard_state(store, eid, [], queue=True) if before is None else before
    if counts_against_tier(outcome):
        breaker = store.record_tier_failure(eid, tier.value, name)
        state = ShardState.from_json({**state.to_json(), "breaker": breaker})
        opened = alerts.breaker_opened(tier.value, breaker.get(tier.value, 0), BREAKER_THRESHOLD)
        if opened is not None:
            svc.alerter().fire(eid, opened, now)
    if (rate := alerts.retry_rate(store.evaluation_jobs(eid))) is not None:
        svc.alerter().fire(eid, rate, now)

    store.update_shard(
        eid,
        request.shard_index,
        status="attempt_ended",
        last_outcome=outcome.value,
        reason=request.reason[:1000],
        updated_at=utcnow_iso(now),
    )
    log.info("attempt ended: %s (%s)", outcome.value, request.reason, **fields)
    return state.to_json()


def _settle_cost(store: StateStore, evaluation_id: str, job_name: str, now: datetime) -> None:
    """Turn the job's budget reservation into its cost, once."""
    job, changed = store.update_job(evaluation_id, job_name, lambda r: settled(r, now))
    if changed and job is not None:
        telemetry.job_cost(job)
        cost, reserved = float(job["cost_usd"]), float(job.get("reserved_usd", 0.0))
        store.update_evaluation_with(evaluation_id, lambda r: after_settlement(r, cost, reserved))


@bp.activity_trigger(input_name="payload", activity=names.CLOSE_SHARD)
def close_shard(payload: dict) -> dict[str, Any]:
    """Give every task of the shard that still has no outcome one, with the reason."""
    request = CloseShardInput.from_json(payload)
    store = runtime.services().store
    now = runtime.now()
    eid = request.evaluation_id
    # A worker slot closes no task: other slots may still run them, and the evaluation closes
    # what is left once every slot has ended (finalize's not_run_reason).
    remaining = [] if request.queue else store.tasks_without_outcome(eid, request.task_ids)
    reason = request.reason
    store.close_tasks(eid, remaining, outcome=TaskOutcome.NOT_RUN.value, reason=reason, at=now)
    store.update_shard(
        eid,
        request.shard_index,
        status="done",
        attempts=request.attempts,
        reason=reason[:1000] if remaining or request.queue else "",
        updated_at=utcnow_iso(now),
    )
    log.info(
        "shard closed: %d task(s) not run",
        len(remaining),
        **ids(evaluation_id=eid, shard=request.shard_index),
    )
    return ShardSummary(
        shard_index=request.shard_index,
        not_run=len(remaining),
        attempts=request.attempts,
        reason=reason,
    ).to_json()
