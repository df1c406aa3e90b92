"""Function, activity and event names: one constant each, used by registration and callers."""

# Orchestrators
EVALUATION_ORCHESTRATOR = "evaluation"
SHARD_ORCHESTRATOR = "shard"
# One per worker slot of a queue-distributed evaluation (orchestrations/worker.py).
WORKER_ORCHESTRATOR = "worker"

# Activities
PREPARE_ATTEMPT = "prepare_attempt"
ENSURE_CAPACITY = "ensure_capacity"
CAPACITY_STATUS = "capacity_status"
SUBMIT_JOB = "submit_job"
FINISH_ATTEMPT = "finish_attempt"
CLOSE_SHARD = "close_shard"
FINALIZE_EVALUATION = "finalize_evaluation"

# Triggers
AML_EVENTS_FUNCTION = "aml_job_events"
SWEEPER_FUNCTION = "stuck_job_sweeper"

# External events raised on a shard instance. Per-attempt names: an event meant for attempt 1
# (late, duplicated) can never satisfy attempt 2's wait, because the SDK matches events by name.
CANCEL_EVENT = "cancel"


def started_event(attempt: int) -> str:
    return f"container_started_a{attempt}"


def ended_event(attempt: int) -> str:
    return f"job_ended_a{attempt}"
