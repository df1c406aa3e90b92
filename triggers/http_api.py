"""The evaluation API: start, status, list, cancel.

POST /api/evaluations                 start (202 + status URL; 400 naming the field)
GET  /api/evaluations                 recent evaluations (?limit=1..100)
GET  /api/evaluations/{id}            progress, cost, ETA, every shard and task (404 if unknown)
GET  /api/evaluations/{id}/results    the agent's score per domain (?format=json|csv|markdown)
POST /api/evaluations/{id}/cancel     cancel every job; remaining tasks not run (cancelled)
POST /api/evaluations/{id}/retry      a new evaluation of the runs that did not complete

Retry rules (issue 9, part 8). The new evaluation runs exactly the source's runs that did not
complete (failed or not run; a completed run, whatever its score, is a result), each under its
own run key, so with trials a retried run keeps its trial id. It takes the source's settings;
the body may override any start field but `tasks`, `task_set`, `trials` and `idempotency_key`
(400 naming the field, as are unknown fields and bad values). 404: no such evaluation. 409: the
source is still running (its open runs would be run twice: cancel it or let it end first), or
every run completed (nothing to retry). Idempotent: the n-th retry of an evaluation has an id
derived from (source, n) through the start endpoint's idempotency rows, so a double click starts
one evaluation; and once a retry exists, another POST returns it (200, `created: false`) unless
the body says `"force": true`, which starts the next one. To retry what a retry left undone,
retry the retry. The status links both ways: `retry_of` on the new evaluation, `retried_by`
(oldest first) on the source.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from adapters import runtime
from adapters.logs import ids
from adapters.state import views
from adapters.state.table_store import StateStore
from domain import bounds, names
from domain.contracts import (
    CancelRequested,
    Distribution,
    EvaluationInput,
    EvaluationState,
    JobSnapshot,
    PlannedShard,
)
from domain.naming import new_evaluation_id, shard_instance_id, worker_instance_id
from domain.outcomes import CANCELLED_BY_USER, TaskOutcome
from domain.planning import (
    ShardPlan,
    expand_trials,
    expected_minutes,
    plan_shards,
    runs_to_retry,
    slots_for_target,
)
from domain.policy import PolicyConfig
from domain.requests import (
    SETTINGS_COLUMN,
    EvaluationRequest,
    RequestError,
    parse_evaluation_request,
    parse_retry_request,
    request_settings,
    resolve_model_provider,
    resolve_tasks,
    settings_from_row,
)
from domain.results import (
    RESULT_FORMATS,
    results_table,
    table_csv,
    table_json,
    table_markdown,
)
from domain.slots import expected_share
from domain.tasksets import TaskRef, split_run_key
from triggers.offload import off_loop
from triggers.signals import is_live

bp = df.Blueprint()
log = logging.getLogger(__name__)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def error(status: int, message: str, field: str | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return json_response(body, status)


def _base_url(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def _links(req: func.HttpRequest, evaluation_id: str) -> dict[str, str]:
    base = f"{_base_url(req)}/api/evaluations/{evaluation_id}"
    return {"status_url": base, "cancel_url": f"{base}/cancel"}


def _orchestration_input(
    evaluation_id: str, req: EvaluationRequest, plan: list[Any], workers: int
) -> dict[str, Any]:
    policy = PolicyConfig.for_request(req)
    # Snapshotted here so that replays never read settings.
    job = JobSnapshot.for_request(
        req, policy, image=runtime.services().settings.waa_image, workers=workers
    )
    if req.distribution == Distribution.QUEUE.value:
        return EvaluationInput(
            evaluation_id=evaluation_id,
            shards=[],
            tiers=list(req.tiers),
            policy=policy,
            job=job,
            distribution=Distribution.QUEUE,
            slots=workers,
            tail_copy_factor=bounds.TAIL_COPY_FACTOR if req.tail_copies else 0.0,
        ).to_json()
    return EvaluationInput(
        evaluation_id=evaluation_id,
        shards=[PlannedShard(index=s.index, task_ids=s.task_ids, vm_size=s.vm_size) for s in plan],
        tiers=list(req.tiers),
        policy=policy,
        job=job,
    ).to_json()


def _slots(runs: list[TaskRef], request: EvaluationRequest, max_workers: int) -> int:
    """Worker slots of a queue evaluation: the request's `workers`, or as many as finishing
    in `target_hours` needs (the request was validated: the target is reachable)."""
    if request.target_hours is not None:
        return slots_for_target(runs, request.target_hours, max_workers)
    return max(1, min(request.workers, len(runs)))


def _queue_slots(slots: int, runs: list[TaskRef], vm_size: str) -> list[ShardPlan]:
    """The slots as the status's `shard-NNN` rows show them (one row per slot; the tasks are
    the queue's, each slot's expected share of the minutes)."""
    minutes = sum(expected_minutes(r) for r in runs) / max(1, slots)
    return [
        ShardPlan(index=slot, task_ids=[], expected_minutes=minutes, vm_size=vm_size)
        for slot in range(slots)
    ]


@bp.route(route="evaluations", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    svc = await off_loop(runtime.services)
    try:
        request = parse_evaluation_request(req.get_body(), svc.settings.max_workers)
        # A model without credentials could only fail every task after paying for the compute:
        # refused here, before an idempotency key, a state row or an orchestration exists.
        provider = resolve_model_provider(request, svc.settings.model_credentials())
    except RequestError as err:
        return error(400, str(err), err.field)
    request = request.model_copy(update={"model_provider": provider})

    now = runtime.now()
    if request.idempotency_key:
        evaluation_id = await _claim(svc.store, request.idempotency_key, now)
    else:
        evaluation_id = new_evaluation_id(uuid.uuid4().bytes)
    runs = expand_trials(resolve_tasks(request), request.trials)
    return await _create(req, client, svc.store, evaluation_id, request, runs)


async def _claim(store: StateStore, key: str, now: Any) -> str:
    """The evaluation id owning idempotency `key` (derived from it; claimed on first use)."""
    evaluation_id = new_evaluation_id(b"idempotency:" + key.encode())
    return str(await off_loop(store.claim_idempotency_key, key, evaluation_id, now))


async def _create(
    req: func.HttpRequest,
    client: df.DurableOrchestrationClient,
    store: StateStore,
    evaluation_id: str,
    request: EvaluationRequest,
    runs: list[TaskRef],
    *,
    row: dict[str, Any] | None = None,
) -> func.HttpResponse:
    """Plan `runs` (one per task, or per task and trial), write the evaluation's rows and start
    its orchestration; or, when `evaluation_id` already has one (an idempotent repeat), say so.
    `row`: extra columns for the evaluation row (a retry's `retry_of`)."""
    fields = ids(evaluation_id=evaluation_id)
    existing = await client.get_status(evaluation_id)
    if existing is not None and existing.runtime_status is not None:
        log.info("idempotency key matched an existing evaluation", **fields)
        return json_response(
            {"evaluation_id": evaluation_id, "created": False, **_links(req, evaluation_id)}, 200
        )

    now = runtime.now()
    queue = request.distribution == Distribution.QUEUE.value
    if queue:
        workers = _slots(runs, request, runtime.services().settings.max_workers)
        plan = _queue_slots(workers, runs, request.vm_size)
    else:
        workers = min(request.workers, len(runs))
        plan = plan_shards(runs, workers, vm_size=request.vm_size, right_size=request.right_size)
    shard_of = {t: s.index for s in plan for t in s.task_ids}
    task_count = len({split_run_key(r.task_id)[0] for r in runs})
    evaluation_row: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "created_at": now.isoformat(),
        "state": EvaluationState.RUNNING.value,
        "policy": request.policy,
        # How the tasks reach the jobs (issue 10): the status shows it (views.distribution).
        "distribution": request.distribution,
        "workers": workers,
        "vm_size": request.vm_size,
        "spot": request.spot,
        "tiers": ",".join(t.value for t in request.tiers),
        # One row per run: progress and the status count runs.
        "task_count": len(runs),
        "shard_count": len(plan),
        "spent_usd": 0.0,
        "reserved_usd": 0.0,
        "agent": request.agent,
        "model": request.model,
        "max_steps": request.max_steps,
        "trials": request.trials,
        SETTINGS_COLUMN: request_settings(request),
        **(row or {}),
    }
    if request.budget_usd is not None:
        evaluation_row["budget_usd"] = request.budget_usd
    await off_loop(
        store.create_evaluation,
        evaluation_row,
        [
            {
                "shard_index": s.index,
                # A slot's tasks are not known up front: its expected share of the queue.
                "task_count": expected_share(len(runs), workers) if queue else len(s.task_ids),
                "expected_minutes": s.expected_minutes,
                "vm_size": s.vm_size,
                "status": "waiting",
                "attempt": 0,
            }
            for s in plan
        ],
        [
            {
                "task_id": t.task_id,
                "domain": t.domain,
                # Queue: no shard owns the task; the claiming job's slot runs it.
                **({} if queue else {"shard_index": shard_of[t.task_id]}),
                "outcome": TaskOutcome.PENDING.value,
            }
            for t in runs
        ],
    )
    await client.start_new(
        names.EVALUATION_ORCHESTRATOR,
        evaluation_id,
        _orchestration_input(evaluation_id, request, plan, workers),
    )
    log.info(
        "evaluation started: %d runs of %d tasks on %d %s (%s policy)",
        len(runs),
        task_count,
        len(plan),
        "worker slots" if queue else "shards",
        request.policy,
        **fields,
    )
    links = _links(req, evaluation_id)
    return json_response(
        {
            "evaluation_id": evaluation_id,
            "created": True,
            "tasks": task_count,
            "trials": request.trials,
            "runs": len(runs),
            "distribution": request.distribution,
            # With the queue, the worker slots (the status document's `shards` rows).
            "shards": len(plan),
            **(row or {}),
            **links,
        },
        202,
        headers={"Location": links["status_url"]},
    )


@bp.route(
    route="evaluations/{evaluation_id}/retry", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
@bp.durable_client_input(client_name="client")
async def retry_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """A new evaluation of the runs of `evaluation_id` that did not complete (rules: module
    docstring)."""
    source_id = req.route_params["evaluation_id"]
    svc = await off_loop(runtime.services)
    store = svc.store
    rows = await off_loop(store.get_evaluation_rows, source_id)
    if rows is None:
        return error(404, f"evaluation_id: no evaluation {source_id!r}", "evaluation_id")
    source = rows["evaluation"]
    state = source.get("state", EvaluationState.RUNNING.value)
    if state == EvaluationState.RUNNING.value:
        return error(
            409,
            f"evaluation {source_id} is still running: cancel it or wait for it to end, "
            "then retry what did not complete",
        )
    runs = runs_to_retry(rows["tasks"])
    if not runs:
        return error(409, f"evaluation {source_id}: nothing to retry, every run completed")
    try:
        request, force = parse_retry_request(
            req.get_body(),
            source=settings_from_row(source),
            task_ids=list(dict.fromkeys(split_run_key(r.task_id)[0] for r in runs)),
            max_workers=svc.settings.max_workers,
        )
        # The same rule as a start: refused before anything is created when the model has no
        # credentials configured (today's settings, not the source's).
        provider = resolve_model_provider(request, svc.settings.model_credentials())
    except RequestError as err:
        return error(400, str(err), err.field)
    request = request.model_copy(update={"model_provider": provider})

    earlier = views.retried_by(source)
    if earlier and not force:
        latest = earlier[-1]
        return json_response(
            {
                "evaluation_id": latest,
                "created": False,
                "retry_of": source_id,
                "retried_by": earlier,
                **_links(req, latest),
            },
            200,
        )
    # The n-th retry's key: a double click (or a client retrying the call) gets the same id.
    key = f"retry:{source_id}:{len(earlier)}"
    evaluation_id = await _claim(store, key, runtime.now())
    response = await _create(
        req, client, store, evaluation_id, request, runs, row={"retry_of": source_id}
    )
    linked = await off_loop(store.link_retry, source_id, evaluation_id)
    log.info(
        "evaluation %s retries %d runs of %s",
        evaluation_id,
        len(runs),
        source_id,
        **ids(evaluation_id=source_id),
    )
    if response.status_code == 200:  # that retry already existed
        return json_response(
            {
                "evaluation_id": evaluation_id,
                "created": False,
                "retry_of": source_id,
                "retried_by": linked,
                **_links(req, evaluation_id),
            },
            200,
        )
    return response


@bp.route(route="evaluations", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_evaluations(req: func.HttpRequest) -> func.HttpResponse:
    raw = req.params.get("limit", "20")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
        return error(400, "limit: must be a whole number from 1 to 100", "limit")
    store = runtime.services().store
    rows = store.list_evaluations(int(raw))
    return json_response(
        {
            "evaluations": [
                {
                    "evaluation_id": r["evaluation_id"],
                    "state": r.get("state"),
                    "created_at": r["created_at"],
                    "tasks": r["task_count"],
                    "policy": r.get("policy"),
                    "distribution": views.distribution(r),
                    **_links(req, r["evaluation_id"]),
                }
                for r in rows
            ]
        }
    )


@bp.route(route="evaluations/{evaluation_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    rows = await off_loop(store.get_evaluation_rows, evaluation_id)
    if rows is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    include_tasks = req.params.get("tasks", "true").lower() != "false"
    view = views.evaluation_view(rows, runtime.now(), include_tasks=include_tasks)
    status = await client.get_status(evaluation_id)
    view["runtime_status"] = (
        status.runtime_status.value if status and status.runtime_status else None
    )
    return json_response(view)


@bp.route(
    route="evaluations/{evaluation_id}/results", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
async def get_results(req: func.HttpRequest) -> func.HttpResponse:
    """The results table (domain/results.py): per domain and overall, from the task rows, so it
    is current while the evaluation runs and final once it ends."""
    fmt = req.params.get("format", "json").lower()
    if fmt not in RESULT_FORMATS:
        return error(400, f"format: must be one of {', '.join(RESULT_FORMATS)}", "format")
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    rows = await off_loop(store.get_evaluation_rows, evaluation_id)
    if rows is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    table = results_table(rows["tasks"])
    if fmt == "csv":
        return func.HttpResponse(table_csv(table), mimetype="text/csv")
    if fmt == "markdown":
        return func.HttpResponse(table_markdown(table), mimetype="text/markdown")
    state = rows["evaluation"].get("state", EvaluationState.RUNNING.value)
    return json_response({"evaluation_id": evaluation_id, "state": state, **table_json(table)})


@bp.route(
    route="evaluations/{evaluation_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
@bp.durable_client_input(client_name="client")
async def cancel_evaluation(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    evaluation_id = req.route_params["evaluation_id"]
    store = (await off_loop(runtime.services)).store
    evaluation = await off_loop(store.get_evaluation, evaluation_id)
    if evaluation is None:
        return error(404, f"evaluation_id: no evaluation {evaluation_id!r}", "evaluation_id")
    if evaluation.get("state", EvaluationState.RUNNING) != EvaluationState.RUNNING:
        return error(409, f"evaluation {evaluation_id} already ended ({evaluation.get('state')})")
    await off_loop(store.update_evaluation, evaluation_id, cancel_requested=True)
    # Every shard waits on the cancel event in each of its waits; one that is between waits
    # sees the flag in its next activity.
    # A queue evaluation's worker slots have their own instance ids.
    instance_of = (
        worker_instance_id
        if evaluation.get("distribution") == Distribution.QUEUE.value
        else shard_instance_id
    )
    for index in range(int(evaluation["shard_count"])):
        instance = instance_of(evaluation_id, index)
        if await is_live(client, instance):
            try:
                await client.raise_event(
                    instance,
                    names.CANCEL_EVENT,
                    CancelRequested(reason=CANCELLED_BY_USER).to_json(),
                )
            except Exception as err:  # finished meanwhile: nothing to cancel
                log.info(
                    "shard already finished: %s",
                    err,
                    **ids(evaluation_id=evaluation_id, shard=index),
                )
    log.info("evaluation cancel requested", **ids(evaluation_id=evaluation_id))
    return json_response(
        {"evaluation_id": evaluation_id, "cancel_requested": True, **_links(req, evaluation_id)},
        202,
    )
