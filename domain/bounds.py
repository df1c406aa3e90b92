"""How long anything the app waits for may take, next to the limit it must stay inside.

`host.json` sets `functionTimeout` to 00:10:00. A function still running then is not failed
gracefully: the host restarts the worker process, and every invocation in flight on it dies
(activities are then re-delivered, HTTP callers get a 5xx). So every wait is bounded well
inside it, by the SDKs' own timeouts where they have them:

- azure-core (Table Storage, Azure ML's ARM calls, Azure Batch): the transport's
  `connection_timeout` / `read_timeout` per HTTP request, and the RetryPolicy's `timeout`, the
  budget of one operation with all its retries and their back-off sleeps
  (azure/core/pipeline/policies/_retry.py: `_configure_timeout` caps each try's connection
  timeout at what is left and raises once nothing is; a try started just before the budget
  ends may still read for up to `read_timeout`, hence OPERATION = RETRY_TIMEOUT + READ_TIMEOUT);
- a poller's `wait(timeout)` for the one long-running operation an activity may still wait on
  (Azure ML's cancel), never `.result()` without a timeout;
- paramiko's `timeout` (TCP connect and SSH negotiation), `banner_timeout`, `auth_timeout`,
  `channel_timeout` and the per-command channel timeout, plus a budget per backend call that
  no sequence of SSH steps over the VM pool may exceed (adapters/compute/ssh_vm.py);
- waits that take minutes (an Azure ML cluster being created, a Batch pool allocating nodes
  and prefetching the 5 GB image, VMs pulling it) are not waited for in an activity at all:
  `ensure_capacity` starts the work and returns, and the shard orchestration polls
  `capacity_status` with durable timers until CAPACITY_DEADLINE_SECONDS.

tests/test_bounds.py reads `functionTimeout` from host.json and fails if it differs from
FUNCTION_TIMEOUT_SECONDS or if any function's worst case (the bounds of the calls it makes one
after another) does not end HEADROOM_SECONDS before it.
"""

from __future__ import annotations

from domain import names
from domain.jobs import Tier

FUNCTION_TIMEOUT_SECONDS = 600  # host.json "functionTimeout": "00:10:00"
# What an invocation needs besides its own calls: the host's dispatch, binding conversion, a
# cold instance importing the app. Every function's worst case ends this long before the limit.
HEADROOM_SECONDS = 60

# --- Table Storage (the state store): one operation ---------------------------------------
TABLE_CONNECTION_TIMEOUT = 10
TABLE_READ_TIMEOUT = 20
TABLE_RETRY_TOTAL = 3
TABLE_RETRY_BACKOFF_MAX = 8
TABLE_RETRY_TIMEOUT = 40
TABLE_OPERATION_SECONDS = TABLE_RETRY_TIMEOUT + TABLE_READ_TIMEOUT
# What a function's Table reads and writes may take together at most: two operations at their
# very worst (a store that hangs fails the function at its first operation, long before the
# host's timeout). Some functions touch one row per task, so this is a budget the bounds above
# make hold for a store that answers, not a count of calls.
TABLE_ALLOWANCE_SECONDS = 2 * TABLE_OPERATION_SECONDS

# --- Blob Storage (the artifacts container): one operation ---------------------------------
# azure-storage-blob has its own retry policy (azure/storage/blob/_shared/policies.py): the
# default ExponentialRetry sleeps 15 s, then 18, 24... between tries, so the store is built with
# LinearRetry(backoff, retry_total, random_jitter_range) and the transport timeouts below. Each
# try waits at most the connect plus the read timeout; between tries, backoff + jitter.
BLOB_CONNECTION_TIMEOUT = 10
BLOB_READ_TIMEOUT = 20
BLOB_RETRY_TOTAL = 2
BLOB_RETRY_BACKOFF = 2
BLOB_RETRY_JITTER = 1
BLOB_OPERATION_SECONDS = (BLOB_RETRY_TOTAL + 1) * (
    BLOB_CONNECTION_TIMEOUT + BLOB_READ_TIMEOUT
) + BLOB_RETRY_TOTAL * (BLOB_RETRY_BACKOFF + BLOB_RETRY_JITTER)
# An artifact_urls heartbeat makes at most these Blob calls one after another: create the
# container (once per process), get a user-delegation key (when the cached one is too short).
# Minting the SAS itself is local (an HMAC), whatever the number of files.
ARTIFACT_URLS_BLOB_CALLS = 2
ARTIFACT_URLS_WORST_CASE_SECONDS = (
    TABLE_ALLOWANCE_SECONDS + ARTIFACT_URLS_BLOB_CALLS * BLOB_OPERATION_SECONDS
)
# A next_task ask (the task queue) makes Table calls only: the job's index, its heartbeat, the
# evaluation row (cancel), the slot row, one partition query of the task rows and one
# ETag-guarded read+write per candidate it tries. A claimer loses a candidate only to another
# job's claim of the same moment, and a job holds one task at a time, so it loses at most one
# race per other slot; it tries at most QUEUE_CLAIM_CANDIDATES (more than the default
# MAX_WORKERS, 20; with MAX_WORKERS raised past it, more than that many asks at one moment can
# get a 503) and then answers 503 (the runner asks again), so the number of calls is bounded
# whatever the contention, and they are Table work like any other function's: inside
# TABLE_ALLOWANCE_SECONDS for a store that answers.
QUEUE_CLAIM_CANDIDATES = 32
NEXT_TASK_WORST_CASE_SECONDS = TABLE_ALLOWANCE_SECONDS
HEARTBEAT_WORST_CASE_SECONDS = max(ARTIFACT_URLS_WORST_CASE_SECONDS, NEXT_TASK_WORST_CASE_SECONDS)

# --- Azure ML (ARM through azure-ai-ml): one operation, and the cancel's wait -----------------
AZUREML_CONNECTION_TIMEOUT = 10
AZUREML_READ_TIMEOUT = 20
AZUREML_RETRY_TOTAL = 4
AZUREML_RETRY_BACKOFF_MAX = 30
AZUREML_RETRY_TIMEOUT = 40
AZUREML_OPERATION_SECONDS = AZUREML_RETRY_TIMEOUT + AZUREML_READ_TIMEOUT
# How long a cancel waits for Azure ML to confirm it; unconfirmed, the cancel fails as
# transient and the orchestration's retry (or the sweeper) asks again.
AZUREML_CANCEL_WAIT_SECONDS = 30

# --- Azure Batch: one operation -----------------------------------------------------------
BATCH_CONNECTION_TIMEOUT = 10
BATCH_READ_TIMEOUT = 20
BATCH_RETRY_TOTAL = 4
BATCH_RETRY_BACKOFF_MAX = 30
BATCH_RETRY_TIMEOUT = 40
BATCH_OPERATION_SECONDS = BATCH_RETRY_TIMEOUT + BATCH_READ_TIMEOUT

# --- Key Vault (azure-keyvault-secrets): one operation ----------------------------------------
# submit_job writes an Azure ML or Batch attempt's heartbeat token as a secret before it
# submits the job. One try of the SDK's pipeline may be two HTTP requests: Key Vault's
# challenge (the first request of a client goes out without a token and gets a 401 naming the
# authority and resource; the ChallengeAuthPolicy then sends it again with one;
# azure/keyvault/secrets/_shared/challenge_auth_policy.py), both inside one retry attempt
# (the authentication policy runs after the RetryPolicy), hence two reads on top.
KEYVAULT_CONNECTION_TIMEOUT = 10
KEYVAULT_READ_TIMEOUT = 20
KEYVAULT_RETRY_TOTAL = 3
KEYVAULT_RETRY_BACKOFF_MAX = 8
KEYVAULT_RETRY_TIMEOUT = 30
KEYVAULT_OPERATION_SECONDS = KEYVAULT_RETRY_TIMEOUT + 2 * KEYVAULT_READ_TIMEOUT

# --- VMs over SSH ---------------------------------------------------------------------------
# Each of: the TCP connect with the SSH negotiation, the banner, authentication, opening a
# channel (paramiko applies them one after another, so a connect takes up to 3x this).
SSH_CONNECT_TIMEOUT = 10
# A short remote command (docker inspect / ps / version, mkdir, rm -f): the channel timeout,
# i.e. the longest silence before the command counts as hung.
SSH_COMMAND_TIMEOUT = 20
# `docker run -d` runs under GNU `timeout` on the VM: with the image prefetched it returns in
# seconds; one that still pulls is cut here (the layers pulled so far stay) and retried.
SSH_DOCKER_RUN_TIMEOUT = 120
# One backend call over the whole pool: no step starts that could end after this. A submit to
# a lone VM whose every step takes its full bound fits (tests/test_bounds.py).
SSH_CALL_SECONDS = 240

# --- Capacity: polled by the shard orchestration with durable timers, never in an activity -
CAPACITY_POLL_SECONDS = 60
# A cluster or pool not usable by then counts as a failure of the tier (the next one is
# tried). Batch allocates within the pool's 30-minute resize timeout, then prefetches the image.
CAPACITY_DEADLINE_SECONDS = 45 * 60

# --- The sweeper (a timer function, under the same functionTimeout) -------------------------
# No job check starts after this; those left are checked by the next sweep.
SWEEP_BUDGET_SECONDS = 120

# --- Live alert delivery (adapters/alerting.py) ---------------------------------------------
# One webhook POST: connect, then the answer (requests' (connect, read) timeout pair).
ALERT_CONNECT_TIMEOUT = 3
ALERT_READ_TIMEOUT = 5
ALERT_DELIVERY_SECONDS = ALERT_CONNECT_TIMEOUT + ALERT_READ_TIMEOUT
# Failed deliveries are retried by the sweeper after 1, 2, 4, ... minutes (capped at an hour),
# at most this many times in all.
ALERT_DELIVERY_ATTEMPTS = 8
ALERT_RETRY_BASE_SECONDS = 60
# A sweep starts no re-delivery after this; the rest wait for the next sweep.
ALERT_REDELIVERY_BUDGET_SECONDS = 10

# --- Worst case of one ComputeBackend call, by tier -----------------------------------------
# Azure ML and Batch: SDK operations one after another (read from the adapters' code paths),
# each at its worst; SSH: the per-call budget; the simulator does no I/O.
_AML_OPS = {
    # compute get; the workspace's location (the SDK reads it to create a cluster); the PUT
    "ensure_capacity": 3,
    "capacity_status": 1,  # compute get
    "submit": 4,  # job get (idempotency); environment PUT; job PUT; job get after a 409
    "status": 2,  # job get; run history of a failed job
    # job get; cancel POST (then the wait below); job get + run history after a refusal
    "cancel": 4,
}
_BATCH_OPS = {
    # pool get; then pool create, or resize POST, or pool get and node list (already sized)
    "ensure_capacity": 3,
    "capacity_status": 2,  # pool get; node list
    "submit": 3,  # task create; job create after JobNotFound; task create again
    "status": 3,  # task get; pool get and node list for a waiting task
    "cancel": 4,  # task terminate; status after a 409
}
BACKEND_METHODS = ("ensure_capacity", "capacity_status", "submit", "status", "cancel")
BACKEND_CALL_SECONDS: dict[Tier, dict[str, float]] = {
    Tier.AZURE_ML: {
        m: n * AZUREML_OPERATION_SECONDS + (AZUREML_CANCEL_WAIT_SECONDS if m == "cancel" else 0)
        for m, n in _AML_OPS.items()
    },
    Tier.BATCH: {m: n * BATCH_OPERATION_SECONDS for m, n in _BATCH_OPS.items()},
    Tier.VM: dict.fromkeys(BACKEND_METHODS, SSH_CALL_SECONDS),
}

# --- Which backend calls each activity makes, one after another ----------------------------
ACTIVITY_BACKEND_CALLS: dict[str, tuple[str, ...]] = {
    names.PREPARE_ATTEMPT: (),
    names.ENSURE_CAPACITY: ("ensure_capacity",),
    names.CAPACITY_STATUS: ("capacity_status",),
    names.SUBMIT_JOB: ("submit",),
    names.FINISH_ATTEMPT: ("cancel",),
    names.CLOSE_SHARD: (),
    names.FINALIZE_EVALUATION: (),
}


# --- Calls an activity makes besides its backend's and the Table's ----------------------------
# submit_job: the heartbeat token's Key Vault secret (Azure ML and Batch with a vault; counted
# on every tier, which only overstates the VM tier's worst case).
ACTIVITY_OTHER_SECONDS: dict[str, float] = {
    names.SUBMIT_JOB: KEYVAULT_OPERATION_SECONDS,
}


def activity_worst_case_seconds(activity: str, tier: Tier) -> float:
    """The longest `activity` can take on `tier`: its backend calls, its other calls (Key
    Vault) and its Table work."""
    calls = BACKEND_CALL_SECONDS[tier]
    backend = sum(calls[m] for m in ACTIVITY_BACKEND_CALLS[activity])
    return backend + ACTIVITY_OTHER_SECONDS.get(activity, 0) + TABLE_ALLOWANCE_SECONDS


def sweep_worst_case_seconds(tier: Tier) -> float:
    """The longest a sweep can take: its budget, then the one job check still running (a
    status read or a cancel, never both), then re-deliveries of alerts (their budget and the
    one still running), plus Table work."""
    calls = BACKEND_CALL_SECONDS[tier]
    return (
        SWEEP_BUDGET_SECONDS
        + max(calls["status"], calls["cancel"])
        + ALERT_REDELIVERY_BUDGET_SECONDS
        + ALERT_DELIVERY_SECONDS
        + TABLE_ALLOWANCE_SECONDS
    )


# --- The task queue (issue 10) ----------------------------------------------------------------
# A task whose jobs kept ending under it (not its own failed run: the job died, hung, was
# evicted) is released back to the queue this many times at most; then it is not run, with the
# reason, so a task that kills every machine it lands on cannot burn every slot's attempts.
QUEUE_MAX_RELEASES = 3
# Jobs one worker slot may run over the evaluation's life (completed ones included): a bound on
# its orchestration history whatever the queue does.
MAX_JOBS_PER_SLOT = 40
# A tail copy is offered for a task running longer than this many times its expected minutes
# (`tail_copies: true`).
TAIL_COPY_FACTOR = 1.5
