"""Raising job events on the owning shard orchestration, exactly when the table says so.

The table row is updated first (ETag, forward-only), then the event is raised, then the row
is marked as signalled. A crash in between leaves the row unsignalled, so the next heartbeat,
Event Grid retry or sweep raises it again; a duplicate raise is harmless because the shard
waits on per-attempt event names and ignores completions it no longer waits for.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df

from adapters.logs import ids
from adapters.state.table_store import StateStore
from domain import names
from domain.contracts import ContainerStarted, JobEnded
from domain.jobs import JobState
from triggers.offload import off_loop

log = logging.getLogger(__name__)

# Runtime statuses of an instance that still waits for its events ("Pending": scheduled, not
# yet started); any other status, or no instance at all, means nobody will read a raised event.
LIVE_STATUSES = frozenset({"Running", "Pending", "ContinuedAsNew"})


async def is_live(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    status = await client.get_status(instance_id)
    return (
        status is not None
        and status.runtime_status is not None
        and status.runtime_status.value in LIVE_STATUSES
    )


async def _raise(
    client: df.DurableOrchestrationClient, instance_id: str, event: str, data: dict[str, Any]
) -> bool:
    try:
        await client.raise_event(instance_id, event, data)
        return True
    except Exception as err:
        message = str(err).lower()
        # The instance finished or is gone: nobody waits any more, so the signal is moot.
        # Anything else (the host unreachable) is left unsignalled for the next try.
        moot = "is gone" in message or "no instance" in message
        log.warning("could not raise %s: %s", event, err, **ids(instance_id=instance_id))
        return moot


async def signal_started(
    client: df.DurableOrchestrationClient, store: StateStore, job: dict[str, Any]
) -> None:
    if not job.get("started_at") or job.get("started_signalled"):
        return
    raised = await _raise(
        client,
        job["instance_id"],
        names.started_event(int(job["attempt"])),
        ContainerStarted(job_name=job["job_name"]).to_json(),
    )
    if raised:
        await off_loop(
            store.update_job,
            job["evaluation_id"],
            job["job_name"],
            lambda r: {**r, "started_signalled": True} if not r.get("started_signalled") else None,
        )


async def signal_ended(
    client: df.DurableOrchestrationClient, store: StateStore, job: dict[str, Any]
) -> None:
    if not JobState(job["state"]).is_terminal or job.get("ended_signalled"):
        return
    event = JobEnded(
        state=job["state"],
        reason=job.get("detail", ""),
        failure_kind=job.get("failure_kind"),
        stuck=bool(job.get("stuck", False)),
    )
    raised = await _raise(
        client, job["instance_id"], names.ended_event(int(job["attempt"])), event.to_json()
    )
    if raised:
        await off_loop(
            store.update_job,
            job["evaluation_id"],
            job["job_name"],
            lambda r: {**r, "ended_signalled": True} if not r.get("ended_signalled") else None,
        )
        log.info(
            "job ended (%s): %s",
            job["state"],
            event.reason,
            **ids(
                evaluation_id=job["evaluation_id"],
                shard=job["shard_index"],
                attempt=job["attempt"],
                job_name=job["job_name"],
            ),
        )
