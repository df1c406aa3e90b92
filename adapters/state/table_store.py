"""Evaluation state in Azure Table Storage (Azurite locally).

Layout of the one table `{prefix}state`:

- partition `eval-{evaluation_id}`: everything a status read needs, so it is ONE partition query:
  `evaluation` (the request summary, money, state), `shard-NNN` (tier, attempt, job, counters),
  `task-{task_id}` (exactly one outcome per task, or per run with trials: `task_row_key`),
  `job-{job_name}` (one row per attempt's job:
  state, heartbeats, cost), `breaker` (failures per tier in this evaluation).
- partition `jobs`: job name -> evaluation, shard, attempt, orchestration instance (immutable
  index, point-read by Event Grid and heartbeat handlers).
- partition `active`: one row per job that has not reached a terminal state; the sweeper reads
  only this partition, never scans the table.
- partition `idem`: idempotency key hash -> evaluation id.
- partition `evals`: newest-first listing of evaluations.

Every read-modify-write carries the entity's ETag (`_mutate`), so concurrent writers (duplicate
Event Grid deliveries, overlapping sweeps, heartbeats) never lose each other's updates. This
module only persists: what a row becomes (a job's next state, a task's result and its retry, a
budget reservation, a breaker count) is decided by a pure function in `domain/`, which `_mutate`
calls on the freshly read row, again after every lost race. Azurite
does not enforce every service limit, so sizes are checked here: a transaction touches one
partition and at most 100 entities; a string property stays under 32K characters (64 KiB).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from adapters.state.views import retried_by
from domain import artifacts, bounds, job_state, queue
from domain.alerts import LiveAlert, alert_key
from domain.clock import iso, parse_time
from domain.jobs import FailureKind, JobState, Tier
from domain.outcomes import (
    FINAL_TASK_OUTCOMES,
    MAX_REASON_CHARS,
    ResultVerdict,
    holds,
    judge_result,
    task_released,
    task_retried,
    task_running,
)
from domain.policy import breaker_after_failure, projected_cost_exceeds

log = logging.getLogger(__name__)

MAX_BATCH = 100
MAX_STRING_CHARS = 32_000
_MUTATE_ATTEMPTS = 20

TASK_PREFIX = "task-"
SHARD_PREFIX = "shard-"
JOB_PREFIX = "job-"
ALERT_PREFIX = "alert-"
# One row per alert not yet delivered to every channel: what the sweeper re-delivers, without
# scanning evaluations (as the `active` partition is for jobs).
ALERT_OUTBOX = "alerts-out"


# Every Table operation ends within bounds.TABLE_OPERATION_SECONDS, retries included
# (azure-core's transport timeouts and RetryPolicy `timeout`; the defaults would let one
# operation wait 300 s per read and retry 10 times, past the host's functionTimeout).
CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": bounds.TABLE_CONNECTION_TIMEOUT,
    "read_timeout": bounds.TABLE_READ_TIMEOUT,
    "retry_total": bounds.TABLE_RETRY_TOTAL,
    "retry_backoff_max": bounds.TABLE_RETRY_BACKOFF_MAX,
    "timeout": bounds.TABLE_RETRY_TIMEOUT,
}


class ConcurrencyError(RuntimeError):
    """An ETag-guarded update kept losing to concurrent writers."""


def utcnow_iso(at: datetime | None = None) -> str:
    return iso(at or datetime.now(UTC))


def task_row_key(task_id: str) -> str:
    """The row key of a task's (or run's) row. A run key "<task_id>#<k>" (domain/tasksets.py)
    cannot be a key as it is: "The number sign (#) character" is among the "Characters
    Disallowed in Key Fields" of the Table service (learn.microsoft.com/rest/api/
    storageservices/understanding-the-table-service-data-model), so it is stored as "~", which
    no task id contains (WAA_TASK_ID_PATTERN). The row's `task_id` keeps the run key."""
    return TASK_PREFIX + task_id.replace("#", "~")


def outbox_key(evaluation_id: str, key: str) -> str:
    """The row key of an alert's outbox row (partition ALERT_OUTBOX)."""
    return f"{evaluation_id}|{key}"


def eval_partition(evaluation_id: str) -> str:
    return f"eval-{evaluation_id}"


def shard_key(index: int) -> str:
    return f"{SHARD_PREFIX}{index:03d}"


def _checked(entity: dict[str, Any]) -> dict[str, Any]:
    for key, value in entity.items():
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise ValueError(
                f"table property {key!r} is {len(value)} characters (max {MAX_STRING_CHARS})"
            )
    if len(entity) > 250:
        raise ValueError(f"entity has {len(entity)} properties (max 252 incl. system properties)")
    return entity


def _setting(fields: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """A `_mutate` change that sets `fields` (no write when they already hold those values)."""

    def change(row: dict[str, Any]) -> dict[str, Any] | None:
        if all(row.get(k) == v for k, v in fields.items()):
            return None
        return {**row, **fields}

    return change


def _taking(
    candidate: queue.Candidate, job_name: str, attempt: int, now: datetime, factor: float
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """A `_mutate` change that claims `candidate` for the job (None once it is not claimable)."""

    def change(row: dict[str, Any]) -> dict[str, Any] | None:
        return queue.take(
            candidate, row, job_name=job_name, attempt=attempt, now=now, tail_copy_factor=factor
        )

    return change


def _plain(entity: Any) -> dict[str, Any]:
    """A Table entity as a plain dict (drops the SDK's metadata wrapper)."""
    return dict(entity)


class StateStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    @classmethod
    def from_connection_string(cls, connection_string: str, prefix: str) -> StateStore:
        service = TableServiceClient.from_connection_string(connection_string, **CLIENT_OPTIONS)
        table = service.create_table_if_not_exists(f"{prefix}state")
        return cls(table)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: TokenCredential, prefix: str) -> StateStore:
        """An identity-based connection: the Table service URL and an Entra ID credential, no
        key (the storage account may have shared-key access disabled)."""
        service = TableServiceClient(endpoint, credential=credential, **CLIENT_OPTIONS)
        table = service.create_table_if_not_exists(f"{prefix}state")
        return cls(table)

    # ----------------------------------------------------------------------------- primitives
    def _get(self, pk: str, rk: str) -> dict[str, Any] | None:
        try:
            return _plain(self._table.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def _query(self, pk: str, prefix: str | None = None) -> list[dict[str, Any]]:
        if prefix is None:
            flt = "PartitionKey eq @pk"
            params = {"pk": pk}
        else:
            # Row keys with a common prefix form one contiguous range.
            flt = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
            params = {"pk": pk, "lo": prefix, "hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)}
        return [_plain(e) for e in self._table.query_entities(flt, parameters=params)]

    def _mutate(
        self,
        pk: str,
        rk: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        create: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Read-modify-write with the ETag. `change` returns the new entity, or None for "no
        change". Returns (entity as stored, changed)."""
        for _ in range(_MUTATE_ATTEMPTS):
            try:
                current = self._table.get_entity(pk, rk)
            except ResourceNotFoundError:
                if create is None:
                    return None, False
                fresh = change({**create, "PartitionKey": pk, "RowKey": rk})
                if fresh is None:
                    return None, False
                try:
                    self._table.create_entity(_checked(fresh))
                except ResourceExistsError:
                    continue
                return fresh, True
            updated = change(_plain(current))
            if updated is None:
                return _plain(current), False
            try:
                self._table.update_entity(
                    _checked(updated),
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            except HttpResponseError as err:
                if err.status_code in (409, 412):
                    continue
                raise
            return updated, True
        raise ConcurrencyError(f"gave up updating {pk}/{rk} after {_MUTATE_ATTEMPTS} conflicts")

    def _upsert_batch(self, entities: list[dict[str, Any]]) -> None:
        """Upsert entities of ONE partition, in transactions of at most 100 operations."""
        partitions = {e["PartitionKey"] for e in entities}
        if len(partitions) > 1:
            raise ValueError(f"a transaction spans one partition, got {sorted(partitions)}")
        for start in range(0, len(entities), MAX_BATCH):
            chunk = entities[start : start + MAX_BATCH]
            self._table.submit_transaction(
                [("upsert", _checked(e), {"mode": UpdateMode.REPLACE}) for e in chunk]
            )

    # ----------------------------------------------------------------------------- evaluations
    def claim_idempotency_key(self, key: str, evaluation_id: str, at: datetime) -> str:
        """Return the evaluation that owns `key`: `evaluation_id` if this call claimed it."""
        rk = hashlib.sha256(key.encode()).hexdigest()
        try:
            self._table.create_entity(
                {
                    "PartitionKey": "idem",
                    "RowKey": rk,
                    "evaluation_id": evaluation_id,
                    "created_at": utcnow_iso(at),
                }
            )
            return evaluation_id
        except ResourceExistsError:
            existing = self._get("idem", rk)
            assert existing is not None
            return str(existing["evaluation_id"])

    def create_evaluation(
        self,
        evaluation: dict[str, Any],
        shards: list[dict[str, Any]],
        tasks: list[dict[str, Any]],
    ) -> None:
        """Write the evaluation's rows (idempotent: a retried request writes the same rows)."""
        eid = evaluation["evaluation_id"]
        pk = eval_partition(eid)
        rows = [{**evaluation, "PartitionKey": pk, "RowKey": "evaluation"}]
        rows += [{**s, "PartitionKey": pk, "RowKey": shard_key(s["shard_index"])} for s in shards]
        rows += [{**t, "PartitionKey": pk, "RowKey": task_row_key(t["task_id"])} for t in tasks]
        self._upsert_batch(rows)
        created = parse_time(evaluation["created_at"])
        assert created is not None
        inverted = 10**13 - int(created.timestamp() * 1000)
        self._table.upsert_entity(
            {"PartitionKey": "evals", "RowKey": f"{inverted:013d}-{eid}", "evaluation_id": eid},
            mode=UpdateMode.REPLACE,
        )

    def get_evaluation_rows(self, evaluation_id: str) -> dict[str, Any] | None:
        """The whole evaluation partition, grouped: evaluation, shards, tasks, jobs, breaker."""
        rows = self._query(eval_partition(evaluation_id))
        out: dict[str, Any] = {
            "evaluation": None,
            "shards": [],
            "tasks": [],
            "jobs": [],
            "breaker": {},
            "alerts": [],
        }
        for row in rows:
            rk = row["RowKey"]
            if rk == "evaluation":
                out["evaluation"] = row
            elif rk.startswith(SHARD_PREFIX):
                out["shards"].append(row)
            elif rk.startswith(TASK_PREFIX):
                out["tasks"].append(row)
            elif rk.startswith(JOB_PREFIX):
                out["jobs"].append(row)
            elif rk.startswith(ALERT_PREFIX):
                out["alerts"].append(row)
            elif rk == "breaker":
                out["breaker"] = json.loads(row.get("failures", "{}"))
        out["alerts"].sort(key=lambda a: (a.get("at", ""), a.get("recorded_at", ""), a["RowKey"]))
        return out if out["evaluation"] is not None else None

    def get_evaluation(self, evaluation_id: str) -> dict[str, Any] | None:
        return self._get(eval_partition(evaluation_id), "evaluation")

    def list_evaluations(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for row in self._table.query_entities("PartitionKey eq 'evals'", results_per_page=limit):
            ev = self.get_evaluation(str(row["evaluation_id"]))
            if ev is not None:
                out.append(ev)
            if len(out) >= limit:
                break
        return out

    def update_evaluation(self, evaluation_id: str, **fields: Any) -> dict[str, Any] | None:
        return self.update_evaluation_with(evaluation_id, _setting(fields))

    def update_evaluation_with(
        self, evaluation_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        row, _ = self._mutate(eval_partition(evaluation_id), "evaluation", change)
        return row

    def link_retry(self, evaluation_id: str, retry_id: str) -> list[str]:
        """Add `retry_id` to the evaluation's `retried_by` (comma-separated, oldest first;
        idempotent). Returns the list as stored."""

        def change(row: dict[str, Any]) -> dict[str, Any] | None:
            retries = retried_by(row)
            if retry_id in retries:
                return None
            return {**row, "retried_by": ",".join([*retries, retry_id])}

        row = self.update_evaluation_with(evaluation_id, change)
        return retried_by(row) if row is not None else []

    def update_shard(self, evaluation_id: str, shard_index: int, **fields: Any) -> None:
        self._mutate(eval_partition(evaluation_id), shard_key(shard_index), _setting(fields))

    def reserve_budget(self, evaluation_id: str, amount_usd: float) -> bool:
        """Atomically reserve `amount_usd` of the evaluation's budget; False if it would pass it."""
        granted = False

        def change(row: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal granted
            budget = row.get("budget_usd")
            reserved = float(row.get("reserved_usd", 0.0))
            committed = float(row.get("spent_usd", 0.0)) + reserved
            granted = not projected_cost_exceeds(
                None if budget is None else float(budget), committed, amount_usd
            )
            return {**row, "reserved_usd": reserved + amount_usd} if granted else None

        self._mutate(eval_partition(evaluation_id), "evaluation", change)
        return granted

    # ----------------------------------------------------------------------------- jobs
    def register_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Record a job before it is submitted (index, active row, job row). Idempotent on the
        job name: returns (job row, created)."""
        name = job["job_name"]
        index = {
            "PartitionKey": "jobs",
            "RowKey": name,
            **{
                k: job[k]
                for k in ("evaluation_id", "shard_index", "attempt", "instance_id", "tier")
            },
        }
        self._table.upsert_entity(index, mode=UpdateMode.REPLACE)
        pk, rk = eval_partition(job["evaluation_id"]), JOB_PREFIX + name
        try:
            row = {**job, "state": JobState.SUBMITTED.value, "PartitionKey": pk, "RowKey": rk}
            self._table.create_entity(_checked(row))
            created = True
        except ResourceExistsError:
            existing = self._get(pk, rk)
            assert existing is not None
            row, created = existing, False
        if row["state"] not in _TERMINAL:
            self._table.upsert_entity({**index, "PartitionKey": "active"}, mode=UpdateMode.REPLACE)
        return row, created

    def evaluation_jobs(self, evaluation_id: str) -> list[dict[str, Any]]:
        return self._query(eval_partition(evaluation_id), JOB_PREFIX)

    def lookup_job(self, job_name: str) -> dict[str, Any] | None:
        return self._get("jobs", job_name)

    def get_job(self, evaluation_id: str, job_name: str) -> dict[str, Any] | None:
        return self._get(eval_partition(evaluation_id), JOB_PREFIX + job_name)

    def update_job(
        self,
        evaluation_id: str,
        job_name: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> tuple[dict[str, Any] | None, bool]:
        row, changed = self._mutate(eval_partition(evaluation_id), JOB_PREFIX + job_name, change)
        # A job whose cancel failed stays active, terminal or not, until the sweeper's cancel
        # goes through (`clear_cancel_pending`): a later write to its row (the attempt's
        # outcome, its cost) must not take it off the sweeper's list.
        if (
            changed
            and row is not None
            and row["state"] in _TERMINAL
            and not row.get("cancel_pending")
        ):
            self.remove_active(job_name)
        return row, changed

    def advance_job(
        self,
        evaluation_id: str,
        job_name: str,
        state: JobState,
        *,
        at: datetime,
        detail: str = "",
        failure_kind: FailureKind | None = None,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Move a job's state forward only (never backwards; terminal is final)."""
        return self.update_job(
            evaluation_id,
            job_name,
            lambda row: job_state.advanced(
                row, state, at=at, detail=detail, failure_kind=failure_kind
            ),
        )

    def record_heartbeat(
        self,
        evaluation_id: str,
        job_name: str,
        at: datetime,
        *,
        storage: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Note a sign of life (with the golden image copy's progress, when the runner sent
        it); the first one marks the container as started. Returns the job row (unchanged when
        the job has already ended)."""

        def change(r: dict[str, Any]) -> dict[str, Any] | None:
            new = job_state.after_heartbeat(r, at)
            if new is not None and storage is not None:
                new = {**new, **{f"storage_{k}": v for k, v in storage.items()}}
            return new

        row, _ = self.update_job(evaluation_id, job_name, change)
        return row

    def mark_cancel_pending(self, evaluation_id: str, job_name: str) -> None:
        """A job whose cancel failed: keep it in the active partition (even though its row is
        terminal) so that the sweeper retries the cancel."""
        self.update_job(
            evaluation_id,
            job_name,
            lambda r: None if r.get("cancel_pending") else {**r, "cancel_pending": True},
        )
        index = self.lookup_job(job_name)
        if index is not None:
            self._table.upsert_entity({**index, "PartitionKey": "active"}, mode=UpdateMode.REPLACE)

    def clear_cancel_pending(self, evaluation_id: str, job_name: str) -> None:
        self.update_job(
            evaluation_id,
            job_name,
            lambda r: {**r, "cancel_pending": False} if r.get("cancel_pending") else None,
        )
        self.remove_active(job_name)

    def active_jobs(self) -> list[dict[str, Any]]:
        return self._query("active")

    def remove_active(self, job_name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity("active", job_name)

    # ----------------------------------------------------------------------------- tasks
    def record_task_result(
        self,
        evaluation_id: str,
        task_id: str,
        *,
        outcome: str,
        reason: str,
        score: float | None,
        attempt: int,
        job_name: str,
        duration_seconds: float | None,
        at: datetime,
        retry_limit: int = 0,
    ) -> bool:
        """Record one reported result as `domain.outcomes.judge_result` rules (the first final
        result wins; a failure is final only past `retry_limit`). Returns True when this call
        recorded the task's final outcome."""
        final = False

        def change(row: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal final
            verdict = judge_result(row, outcome=outcome, job_name=job_name, retry_limit=retry_limit)
            final = verdict is ResultVerdict.FINAL
            if verdict is ResultVerdict.IGNORED:
                return None
            if verdict is ResultVerdict.RETRY:
                return task_retried(row, job_name, reason)
            new = {
                **row,
                "outcome": outcome,
                "reason": reason[:MAX_REASON_CHARS],
                "attempt": attempt,
                "job_name": job_name,
                "finished_at": utcnow_iso(at),
            }
            if score is not None:
                new["score"] = float(score)
            if duration_seconds is not None:
                new["duration_seconds"] = float(duration_seconds)
            return new

        _, changed = self._mutate(eval_partition(evaluation_id), task_row_key(task_id), change)
        return changed and final

    def get_task(self, evaluation_id: str, task_id: str) -> dict[str, Any] | None:
        return self._get(eval_partition(evaluation_id), task_row_key(task_id))

    def record_artifacts(
        self,
        evaluation_id: str,
        task_id: str,
        *,
        job_name: str,
        prefix_url: str,
        container_url: str,
        files: int,
        failed: int,
    ) -> bool:
        """Note where the task's artifacts went (`domain.artifacts.artifacts_recorded`: only
        for the job the task is with). Returns True when the row changed."""
        _, changed = self._mutate(
            eval_partition(evaluation_id),
            task_row_key(task_id),
            lambda row: artifacts.artifacts_recorded(
                row,
                job_name=job_name,
                prefix_url=prefix_url,
                container_url=container_url,
                files=files,
                failed=failed,
            ),
        )
        return changed

    def tasks_without_outcome(self, evaluation_id: str, task_ids: Iterable[str]) -> list[str]:
        wanted = list(task_ids)
        rows = {r["task_id"]: r for r in self._query(eval_partition(evaluation_id), TASK_PREFIX)}
        return [t for t in wanted if rows.get(t, {}).get("outcome") not in FINAL_TASK_OUTCOMES]

    def close_tasks(
        self,
        evaluation_id: str,
        task_ids: Iterable[str],
        *,
        outcome: str,
        reason: str,
        at: datetime,
    ) -> int:
        """Give every listed task still without an outcome this one (a task that has one keeps
        it: the first final result wins). Returns how many."""
        closed = 0
        for task_id in task_ids:
            if self.record_task_result(
                evaluation_id,
                task_id,
                outcome=outcome,
                reason=reason,
                score=None,
                attempt=0,
                job_name="",
                duration_seconds=None,
                at=at,
            ):
                closed += 1
        return closed

    def mark_tasks_running(
        self, evaluation_id: str, task_ids: Iterable[str], *, attempt: int, job_name: str
    ) -> None:
        for task_id in task_ids:
            self._mutate(
                eval_partition(evaluation_id),
                task_row_key(task_id),
                lambda row: task_running(row, attempt=attempt, job_name=job_name),
            )

    def release_tasks(
        self, evaluation_id: str, job_name: str, reason: str = "", *, at: datetime | None = None
    ) -> None:
        """Tasks a job was running (or running a tail copy of) but never reported, once it has
        ended, as `domain.outcomes.task_released` rules: back to pending (a claimed task with
        its release counted, not run at the poison limit), or the copy cleared. `reason`: why
        the job ended (it goes into a poisoned task's reason); `at`: when (a poisoned task's
        `finished_at`; the wall clock when not given, pass the app's clock under the devhost)."""
        at = at or datetime.now(UTC)
        for row in self._query(eval_partition(evaluation_id), TASK_PREFIX):
            if task_released(row, job_name, reason, at=at) is not None:
                self._mutate(
                    eval_partition(evaluation_id),
                    row["RowKey"],
                    lambda r: task_released(r, job_name, reason, at=at),
                )

    # ----------------------------------------------------------------------------- the queue
    def claim(
        self,
        evaluation_id: str,
        job_name: str,
        *,
        attempt: int,
        now: datetime,
        tail_copy_factor: float,
        deadline: datetime | None = None,
    ) -> queue.Claim:
        """The job's next task from the evaluation's queue (`domain.queue`): one partition query
        of the task rows, then an ETag-guarded write of the best candidate; a candidate lost to
        another claimer (its row no longer claimable when read again) moves on to the next.
        The task the job already holds is answered again, with no write. Raises
        ConcurrencyError when `bounds.QUEUE_CLAIM_CANDIDATES` candidates were all lost (the
        job asks again later), so one ask's Table calls stay bounded."""
        pk = eval_partition(evaluation_id)
        tried = 0
        while True:
            decided = queue.plan(
                self._query(pk, TASK_PREFIX),
                job_name,
                now=now,
                tail_copy_factor=tail_copy_factor,
                deadline=deadline,
            )
            if isinstance(decided, queue.Claim):
                return decided
            for candidate in decided:
                if tried >= bounds.QUEUE_CLAIM_CANDIDATES:
                    raise ConcurrencyError(f"lost {tried} claims in a row in {pk}; ask again")
                tried += 1
                stored, changed = self._mutate(
                    pk,
                    candidate.row["RowKey"],
                    _taking(candidate, job_name, attempt, now, tail_copy_factor),
                )
                if stored is None:
                    continue
                if changed:
                    return queue.Claim(row=stored, duplicate=candidate.duplicate, new=True)
                if holds(stored, job_name):  # a concurrent ask of this same job claimed it
                    return queue.Claim(row=stored, duplicate=queue.is_copy(stored, job_name))
            # Every candidate was taken meanwhile: read the queue again (it has shrunk).

    # ----------------------------------------------------------------------------- breaker
    def record_tier_failure(self, evaluation_id: str, tier: str, job_name: str) -> dict[str, int]:
        """Count one failure of `tier` in this evaluation, once per job (idempotent; the
        rule is `domain.policy.breaker_after_failure`)."""
        counted: dict[str, int] = {}

        def change(row: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal counted
            failures = json.loads(row.get("failures", "{}"))
            after = breaker_after_failure(
                failures, json.loads(row.get("jobs", "[]")), Tier(tier), job_name
            )
            if after is None:
                counted = failures
                return None
            counted, jobs = after
            return {**row, "failures": json.dumps(counted), "jobs": json.dumps(jobs)}

        self._mutate(
            eval_partition(evaluation_id),
            "breaker",
            change,
            create={"failures": "{}", "jobs": "[]"},
        )
        return counted

    # ----------------------------------------------------------------------------- alerts
    def record_alert(
        self, evaluation_id: str, alert: LiveAlert, at: datetime, *, deliver: bool = True
    ) -> dict[str, Any] | None:
        """Record a live alert once per (kind, cause). Returns the new row, or None when this
        cause has already fired. A new alert to `deliver` gets an outbox row until it is
        delivered, written first: a crash between the two writes then leaves an alert still to
        deliver (and a re-run of whatever noticed it records the alert), never a recorded alert
        that nobody will ever deliver. With nowhere to deliver it, it is recorded as delivered."""
        key = alert_key(alert.kind, alert.cause)
        pk, rk = eval_partition(evaluation_id), ALERT_PREFIX + key
        if self._get(pk, rk) is not None:
            return None
        row = {
            "PartitionKey": pk,
            "RowKey": rk,
            "evaluation_id": evaluation_id,
            "key": key,
            "kind": alert.kind.value,
            "cause": alert.cause[:MAX_REASON_CHARS],
            "severity": alert.severity.value,
            "text": alert.text[:MAX_REASON_CHARS],
            "action": alert.action[:MAX_REASON_CHARS],
            "at": utcnow_iso(at),
            # Alerts of one (virtual) instant keep the order they were noticed in: a cause (the
            # third failure) before its effect (the breaker opening).
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        if deliver:
            self._table.upsert_entity(
                _checked(
                    {
                        **row,
                        "PartitionKey": ALERT_OUTBOX,
                        "RowKey": outbox_key(evaluation_id, key),
                        "delivery_attempts": 0,
                        "next_delivery_at": utcnow_iso(at),
                    }
                )
            )
        else:
            row["delivered_at"] = row["at"]
        try:
            self._table.create_entity(_checked(row))
        except ResourceExistsError:
            return None  # recorded meanwhile by another instance noticing the same cause
        return _plain(row)

    def undelivered_alerts(self) -> list[dict[str, Any]]:
        return self._query(ALERT_OUTBOX)

    def undelivered_alert(self, evaluation_id: str, key: str) -> dict[str, Any] | None:
        return self._get(ALERT_OUTBOX, outbox_key(evaluation_id, key))

    def alert_delivered(self, evaluation_id: str, key: str, at: datetime) -> None:
        self._mutate(
            eval_partition(evaluation_id),
            ALERT_PREFIX + key,
            lambda r: None if r.get("delivered_at") else {**r, "delivered_at": utcnow_iso(at)},
        )
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(ALERT_OUTBOX, outbox_key(evaluation_id, key))

    def alert_delivery_failed(
        self, evaluation_id: str, key: str, *, attempts: int, next_at: datetime | None, error: str
    ) -> None:
        """Count a failed delivery; `next_at` None gives up (the alert stays recorded)."""
        rk = outbox_key(evaluation_id, key)
        if next_at is None:
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(ALERT_OUTBOX, rk)
            self._mutate(
                eval_partition(evaluation_id),
                ALERT_PREFIX + key,
                _setting({"delivery_error": error[:MAX_REASON_CHARS]}),
            )
            return
        self._mutate(
            ALERT_OUTBOX,
            rk,
            _setting(
                {
                    "delivery_attempts": attempts,
                    "next_delivery_at": utcnow_iso(next_at),
                    "delivery_error": error[:MAX_REASON_CHARS],
                }
            ),
        )


_TERMINAL = frozenset(s.value for s in JobState if s.is_terminal)
