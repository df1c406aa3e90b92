"""Timer-triggered stuck-job sweeper.

Reads only the `active` partition (never scans the table) and, per job:
- a job whose orchestration is gone or finished is an orphan: cancel it;
- a started job with no heartbeat past its threshold is stuck: cancel it and tell its shard;
- otherwise ask the backend, and record a terminal state that no event reported.
Every write is forward-only with ETags and every cancel is idempotent, so two overlapping
sweeps do no harm. A sweep starts no job check after bounds.SWEEP_BUDGET_SECONDS (the timer
function runs under the same functionTimeout as everything else); the jobs left are checked
by the next sweep, and the order is shuffled so that a sweep cut short never leaves the same
jobs unchecked twice running.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from adapters import runtime, telemetry
from adapters.logs import ids
from domain import alerts, bounds, job_state, names
from domain.jobs import BackendError, JobNotFoundError, JobState, Tier
from triggers.offload import off_loop
from triggers.signals import is_live, signal_ended

bp = df.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name(names.SWEEPER_FUNCTION)
@bp.timer_trigger(
    schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=False
)
@bp.durable_client_input(client_name="client")
async def stuck_job_sweeper(
    timer: func.TimerRequest, client: df.DurableOrchestrationClient
) -> None:
    report = await sweep(client)
    if any(report.values()):
        log.info("sweep: %s", report)


async def sweep(client: df.DurableOrchestrationClient) -> dict[str, int]:
    svc = await off_loop(runtime.services)
    store = svc.store
    report = {"orphans": 0, "stuck": 0, "reconciled": 0, "cleaned": 0, "deferred": 0}
    started = time.monotonic()
    jobs = await off_loop(store.active_jobs)
    random.shuffle(jobs)
    for checked, active in enumerate(jobs):
        if checked and time.monotonic() - started > bounds.SWEEP_BUDGET_SECONDS:
            report["deferred"] = len(jobs) - checked
            log.warning(
                "sweep budget used up: %d job(s) left for the next sweep", len(jobs) - checked
            )
            break
        name, eid = active["RowKey"], active["evaluation_id"]
        fields = ids(
            evaluation_id=eid, shard=active["shard_index"], attempt=active["attempt"], job_name=name
        )
        job = await off_loop(store.get_job, eid, name)
        if job is not None and job.get("cancel_pending"):
            try:
                backend = await off_loop(svc.backend, Tier(job["tier"]))
                await off_loop(backend.cancel, name)
            except BackendError as err:
                log.warning("cancel still failing: %s", err, **fields)
                continue
            await off_loop(
                store.advance_job,
                eid,
                name,
                JobState.CANCELLED,
                at=runtime.now(),
                detail="cancelled by the sweeper",
            )
            await off_loop(store.clear_cancel_pending, eid, name)
            report["orphans"] += 1
            continue
        if job is None or JobState(job["state"]).is_terminal:
            if job is not None:
                await signal_ended(client, store, job)
            await off_loop(store.remove_active, name)
            report["cleaned"] += 1
            continue
        try:
            outcome = await _sweep_job(client, svc, job, runtime.now())
        except BackendError as err:  # the next sweep tries again
            log.warning("sweep of job failed: %s", err, **fields)
            continue
        if outcome:
            report[outcome] += 1
            log.info("sweeper: %s", outcome, **fields)
    # Alerts whose webhook delivery failed or was lost with its process, when due.
    report["alerts_delivered"] = await off_loop(
        svc.alerter().redeliver, runtime.now(), bounds.ALERT_REDELIVERY_BUDGET_SECONDS
    )
    return report


async def _sweep_job(
    client: df.DurableOrchestrationClient, svc: runtime.Services, job: dict[str, Any], now: datetime
) -> str | None:
    store = svc.store
    eid, name = job["evaluation_id"], job["job_name"]
    backend = await off_loop(svc.backend, Tier(job["tier"]))

    if not await is_live(client, job["instance_id"]):
        await off_loop(backend.cancel, name)
        await off_loop(
            store.advance_job,
            eid,
            name,
            JobState.CANCELLED,
            at=now,
            detail="orphan: its orchestration is no longer waiting for it",
        )
        return "orphans"

    detail = job_state.stuck_detail(job, now)
    if detail is not None:
        await off_loop(backend.cancel, name)
        row, changed = await off_loop(
            store.update_job, eid, name, lambda r: job_state.marked_stuck(r, now, detail)
        )
        if row is not None:
            await signal_ended(client, store, row)
        if changed:
            telemetry.job_stuck(str(job["tier"]))
            await off_loop(svc.alerter().fire, eid, alerts.job_stuck(job, detail), now)
        return "stuck" if changed else None

    try:
        seen = await off_loop(backend.status, name)
    except JobNotFoundError:
        return None  # submitted moments ago, or the backend forgot it: the deadlines cover it
    if seen.state.is_terminal:
        row, changed = await off_loop(
            store.advance_job,
            eid,
            name,
            seen.state,
            at=now,
            detail=seen.detail or f"backend reported {seen.raw_status}",
            failure_kind=seen.failure_kind,
        )
        if row is not None:
            await signal_ended(client, store, row)
        return "reconciled" if changed else None
    if seen.state is JobState.PREPARING:
        row, _ = await off_loop(
            store.update_job, eid, name, lambda r: job_state.preparing_seen(r, now)
        )
        seconds = job_state.seconds_preparing(row or job, now)
        slow = alerts.slow_image_pull(job, seconds) if seconds is not None else None
        if slow is not None:
            await off_loop(svc.alerter().fire, eid, slow, now)
    return None
