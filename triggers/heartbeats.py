"""POST /api/heartbeats: messages from the shard runner inside a job.

Authenticated with a per-attempt token (HMAC of the job name under HEARTBEAT_SECRET) in
`Authorization: Bearer ...`: missing -> 401, forged or for another job -> 403, a job that has
already ended (a stale attempt) -> 403. The first message of an attempt is the authoritative
"container started" signal; a task result is stored at once, so a later attempt skips it.

Artifacts (issue 9, part 6): `artifact_urls` answers 200 with one write-only SAS URL per file
of a task of this job (`adapters/artifacts.py`), `artifacts_uploaded` records the folder on the
task row (202). Artifacts not configured -> 409 (the runner then skips the upload); a task that
is not this job's -> 403; an unknown task -> 404. The answer carries SAS URLs; logs name the
folder only.

The task queue (issue 10): `next_task` answers 200 with the job's next task (`domain.queue`:
claimed now with an ETag write, or the one it already holds, so a retried ask is safe), or with
`exit: true` and the reason (queue empty, the evaluation cancelled, its deadline too close). The
job's slot row shows the task in progress (`current_task`, `current_task_since`). A job of a
static shard (no `queue` on its row) -> 409; a claim lost to other claimers too often -> 503
(the runner asks again).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError
from pydantic import ValidationError

from adapters import runtime, telemetry
from adapters.logs import ids
from adapters.runtime import Services
from adapters.state.table_store import ConcurrencyError
from domain import artifacts as rules
from domain import queue
from domain.clock import iso, parse_time
from domain.jobs import FailureKind, JobState
from domain.messages import Artifacts, JobMessage, MessageKind, NextTask, token_matches
from domain.policy import classify_runner_report
from triggers.http_api import error, json_response
from triggers.offload import off_loop
from triggers.signals import signal_ended, signal_started

bp = df.Blueprint()
log = logging.getLogger(__name__)

ARTIFACT_KINDS = (MessageKind.ARTIFACT_URLS, MessageKind.ARTIFACTS_UPLOADED)


def _parse(body: bytes) -> JobMessage | func.HttpResponse:
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            return error(400, "body: must be a JSON object", "body")
        return error(400, f"{field}: {first['msg']}", field)


@bp.route(route="heartbeats", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def heartbeat(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    auth = req.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return error(401, "Authorization: a bearer token is required", "Authorization")
    parsed = _parse(req.get_body())
    if isinstance(parsed, func.HttpResponse):
        return parsed
    message = parsed
    if message.kind in ARTIFACT_KINDS and message.artifacts is None:
        return error(400, f"artifacts: required for kind {message.kind.value}", "artifacts")
    svc = await off_loop(runtime.services)
    if not token_matches(
        svc.settings.heartbeat_secret.get_secret_value(), message.job_name, auth[7:].strip()
    ):
        return error(403, "Authorization: the token is not valid for this job", "Authorization")

    store = svc.store
    index = await off_loop(store.lookup_job, message.job_name)
    if index is None:
        return error(404, f"job_name: no job {message.job_name!r}", "job_name")
    eid = index["evaluation_id"]
    fields = ids(
        evaluation_id=eid,
        shard=index["shard_index"],
        attempt=index["attempt"],
        job_name=message.job_name,
    )
    now = runtime.now()

    job = await off_loop(
        store.record_heartbeat,
        eid,
        message.job_name,
        now,
        storage=message.storage.model_dump() if message.storage is not None else None,
    )
    if job is None or JobState(job["state"]).is_terminal:
        return error(
            403, f"job {message.job_name} has ended; its token is no longer accepted", "job_name"
        )
    if int(job.get("heartbeats", 0)) == 1:  # this very heartbeat marked the container started
        telemetry.job_started(str(job["tier"]))
    await signal_started(client, store, job)

    if message.kind in ARTIFACT_KINDS:
        return await _artifacts(svc, message, index, job, fields)
    if message.kind is MessageKind.NEXT_TASK:
        return await _next_task(svc, message, index, job, fields)

    if message.kind is MessageKind.TASK_RESULT and message.task_result is not None:
        r = message.task_result
        recorded = await off_loop(
            store.record_task_result,
            eid,
            r.task_id,
            outcome=r.status.value,
            reason=r.reason,
            score=r.score,
            attempt=int(index["attempt"]),
            job_name=message.job_name,
            duration_seconds=r.duration_seconds,
            at=now,
            retry_limit=int(job.get("task_retries", 0)),
        )
        log.info("task %s %s (recorded=%s)", r.task_id, r.status.value, recorded, **fields)
    elif message.kind is MessageKind.FAILURE and message.failure is not None:
        kind = classify_runner_report(message.failure)
        detail = f"{message.failure.code.value}: {message.failure.message}"
        job, _ = await off_loop(
            store.advance_job,
            eid,
            message.job_name,
            JobState.FAILED,
            at=now,
            detail=detail,
            failure_kind=kind,
        )
        log.warning("runner reported failure: %s", detail, **fields)
    elif message.kind is MessageKind.FINISHED:
        ok = message.exit_code == 0
        job, _ = await off_loop(
            store.advance_job,
            eid,
            message.job_name,
            JobState.COMPLETED if ok else JobState.FAILED,
            at=now,
            detail="shard runner finished"
            if ok
            else f"shard runner exited with {message.exit_code}",
            failure_kind=None if ok else FailureKind.JOB_FAILED,
        )
    if job is not None:
        await signal_ended(client, store, job)
    return json_response({"accepted": True, "kind": message.kind.value}, 202)


async def _next_task(
    svc: Services,
    message: JobMessage,
    index: dict[str, Any],
    job: dict[str, Any],
    fields: dict[str, Any],
) -> func.HttpResponse:
    """next_task: the job's next task from the evaluation's queue, or exit (the message is
    already authenticated and the job has not ended)."""
    if not job.get("queue"):
        return error(
            409,
            f"job_name: job {message.job_name} runs a static shard's tasks; it has no queue to "
            "ask (WAA_TASK_IDS lists its tasks)",
            "job_name",
        )
    store = svc.store
    eid = str(index["evaluation_id"])
    slot = int(index["shard_index"])
    now = runtime.now()
    evaluation = await off_loop(store.get_evaluation, eid)
    cancelled = bool(evaluation and evaluation.get("cancel_requested"))
    claim = queue.Claim(row=None, reason=queue.CANCELLED)
    if not cancelled:
        try:
            claim = await off_loop(
                store.claim,
                eid,
                message.job_name,
                attempt=int(index["attempt"]),
                now=now,
                tail_copy_factor=float(job.get("tail_copy_factor") or 0.0),
                deadline=queue.job_deadline(job),
            )
        except ConcurrencyError as err:
            log.warning("next task not claimed: %s", err, **fields)
            return error(503, "the task queue is busy; ask again")
    answer = NextTask.model_validate(queue.answer(claim, cancel_requested=cancelled))
    if claim.row is not None and not answer.exit:
        since = claim.row.get("copy_claimed_at") if answer.duplicate else None
        await off_loop(
            store.update_shard,
            eid,
            slot,
            current_task=answer.task_id,
            current_task_since=str(since or claim.row.get("claimed_at") or iso(now)),
        )
        log.info(
            "next task %s (%s%s)",
            answer.task_id,
            "claimed" if claim.new else "held already",
            ", a tail copy" if answer.duplicate else "",
            **fields,
        )
    else:
        await off_loop(store.update_shard, eid, slot, current_task="", current_task_since="")
        log.info("no next task: %s; the job exits", answer.reason, **fields)
    return json_response(
        {"accepted": True, "kind": message.kind.value, **answer.model_dump(mode="json")}, 200
    )


async def _artifacts(
    svc: Services,
    message: JobMessage,
    index: dict[str, Any],
    job: dict[str, Any],
    fields: dict[str, Any],
) -> func.HttpResponse:
    """artifact_urls / artifacts_uploaded for one task of this job (the message is already
    authenticated and the job has not ended)."""
    assert message.artifacts is not None  # checked with the message's shape
    store = svc.artifacts
    if store is None:
        return error(409, "artifacts are not configured on this deployment; skip the upload")
    request: Artifacts = message.artifacts
    eid = str(index["evaluation_id"])
    row = await off_loop(svc.store.get_task, eid, request.task_id)
    if row is None:
        return error(
            404, f"artifacts.task_id: no task {request.task_id!r} here", "artifacts.task_id"
        )
    if not rules.task_of_job(row, message.job_name):
        return error(
            403,
            f"artifacts.task_id: task {request.task_id!r} is not run by job {message.job_name}",
            "artifacts.task_id",
        )
    prefix = rules.blob_prefix(eid, str(row["domain"]), request.task_id, int(index["attempt"]))
    if message.kind is MessageKind.ARTIFACTS_UPLOADED:
        recorded = await off_loop(
            svc.store.record_artifacts,
            eid,
            request.task_id,
            job_name=message.job_name,
            prefix_url=store.prefix_url(prefix),
            container_url=store.container_url,
            files=len(request.files),
            failed=len(request.failed),
        )
        log.info(
            "task %s artifacts uploaded: %d files, %d failed, under %s (recorded=%s)",
            request.task_id,
            len(request.files),
            len(request.failed),
            store.prefix_url(prefix),
            recorded,
            **fields,
        )
        return json_response({"accepted": True, "kind": message.kind.value}, 202)

    submitted = parse_time(job.get("submitted_at"))
    now = runtime.now()
    timeout = job.get("job_timeout_seconds")
    deadline = rules.job_deadline(submitted or now, None if timeout is None else float(timeout))
    if deadline <= now:
        return error(403, f"job {message.job_name} is past its deadline", "job_name")
    try:
        grant = await off_loop(
            store.upload_urls, prefix, [f.path for f in request.files], deadline - now
        )
    except AzureError as err:
        # The container or the user-delegation key could not be had (a role missing, the
        # service throttling): the runner retries later or gives up; the score is already in.
        log.warning("no upload URLs for task %s: %s", request.task_id, type(err).__name__, **fields)
        return error(503, "artifact storage is not available; try again later")
    # The folder only: each URL's query is a SAS, a secret.
    log.info(
        "task %s: %d upload URLs under %s until %s",
        request.task_id,
        len(grant.urls),
        grant.prefix_url,
        grant.expires_at.isoformat(),
        **fields,
    )
    return json_response(
        {
            "accepted": True,
            "kind": message.kind.value,
            "prefix": grant.prefix_url,
            "urls": grant.urls,
            "expires_at": grant.expires_at.isoformat(),
        },
        200,
    )
