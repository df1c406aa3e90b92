"""The job the Azure harnesses (and their tier tests) submit by default."""

from __future__ import annotations

from domain.jobs import JobSpec


def job_spec(job_name: str, **fields: object) -> JobSpec:
    """A two-task shard of evaluation ev1 named `job_name`; `fields` add to or replace the
    defaults (a harness passes its tier and heartbeat token this way)."""
    spec: dict[str, object] = {
        "job_name": job_name,
        "evaluation_id": "ev1",
        "shard_index": 0,
        "attempt": 1,
        "task_ids": ["t1", "t2"],
        "vm_size": "Standard_D4s_v5",
        "image": "waaregistry.azurecr.io/winarena:1",
        "timeout_seconds": 7200,
        "heartbeat_url": "https://app.example/api/heartbeats",
        "environment": {
            "WAA_TASK_IDS": "t1,t2",
            "WAA_JOB_NAME": job_name,
            "WAA_HEARTBEAT_URL": "https://app.example/api/heartbeats",
        },
        "experiment_name": "waa-ev1",
    }
    spec.update(fields)
    return JobSpec.model_validate(spec)
