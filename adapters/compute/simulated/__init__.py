"""A simulated Azure: every compute tier, in (virtual) time, with named fault profiles.

The simulator never calls the app's Python code. Like the real cloud it only talks to the app
through its public entry points over HTTP:
- the shard runner's messages (`domain.messages`) to `spec.heartbeat_url`, authenticated with
  `spec.heartbeat_token`;
- for Azure ML jobs, Event Grid `RunStatusChanged` / `RunCompleted` events to the app's Event
  Grid webhook.

Time comes from a `Scheduler` (the devhost's virtual clock, a test's manual clock, or the wall
clock), so a 3-hour evaluation runs in seconds. Every random draw for a job comes from a
`random.Random` seeded with the cloud's seed and the job's name, so the same seed and the same
calls give the same world, and adding a job does not reshuffle the others.

One `SimulatedCloud` is the world; `cloud.backend(tier)` gives the `ComputeBackend` of a tier.
`cloud.ledger` is the ground truth (what really ran and what it really cost) for benchmarks;
`cloud.jobs_of(evaluation_id)` gives one evaluation's `LedgerEntry`s (by submission), each
with `fault_at` (when its run fault took effect), `cancelled_at` (when the app cancelled it)
and `task_spans` ((task id, start, end) of each task it ran to a result).

Queue jobs (`spec.queue`, issue 10) have no task list: after booting and after each task's
result the job asks the app for its next task (`next_task` to the heartbeat endpoint, a
request whose answer, a `domain.messages.NextTask`, it reads; lost like any message and
retried after `MESSAGE_RETRY_DELAYS`), runs the task it is told (its duration and outcome drawn
from a generator of its own, `jobs.draw_task`) or finishes with exit code 0 when told exit.
Its run-fault draws range over `spec.expected_tasks`; a fault's task index is the number of
tasks it has started. Static jobs draw exactly what they drew before queue jobs existed.

The modules, by concern (at run time each imports only modules listed above it):
- `timings`: how long things take; where an image is pulled from.
- `faults`: the fault catalogue, the run-fault registry (`RUN_FAULTS`) and each fault's hook.
- `profiles`: per tier, how likely each fault is; the named `PROFILES`.
- `tiers`: one `TierBehaviour` per tier: its statuses, job ids and quirks.
- `jobs`: a job's record and its plan, drawn at submission.
- `ledger`: the ground truth per job.
- `artifacts`: a completed task's artifact upload (upload URLs, PUTs, the report), over HTTP.
- `delivery`: runner messages (and queue jobs' `next_task` asks) and Event Grid payloads,
  posted over HTTP with retries.
- `lifecycle`: the job state machine; calls the run faults' hooks.
- `cloud`: `SimulatedCloud` (capacity, quota, scripted faults, submit / status / cancel) and
  `SimulatedBackend`.
- `install`: the process-wide cloud (`install_cloud`, `current_cloud`).

Adding a fault
--------------
1. One frozen dataclass in `faults.py` under the base that says where it acts: `RunFault` (the
   job's life; at most one per job), `SubmitFault`, `MessageFault` or `EventFault`.
2. One hook on it: a `RunFault` overrides the stage where it takes over (`on_provisioned`,
   `on_container_created`, `on_booted`, `before_task`) and returns that step's deliveries; the
   others implement `on_prepare`, `loses` or `shape`. The job state machine needs no change.
3. If a profile should draw it (a run fault): decorate it with `@run_fault` (it then goes last
   in the draw, so every existing seed keeps its world), set `profile_field` and add that
   probability field to `profiles.TierFaults` (default 0.0; it joins the sum checked there). A
   fault that needs its own random number appends a field to `faults.RunDraws`.
4. Re-export it from this `__init__` (callers import faults from here), test it in
   `tests/simulated/test_faults.py`, and give it a rate in the `PROFILES` it belongs in.

Adding a compute tier
---------------------
1. `domain/jobs.py`: a member of `Tier`; `domain/requests.py`: `DEFAULT_TIERS` if it joins the
   default failover order.
2. `domain/job_state.py`: how its raw statuses map to `JobState` and which failures are
   permanent; `domain/bounds.py`: `BACKEND_CALL_SECONDS` for it (`tests/test_bounds.py` fails
   without it).
3. The backend: `adapters/compute/<tier>.py`, implementing `adapters/compute/base.py`'s
   `ComputeBackend` with every call bounded by a timeout; `adapters/runtime.py`'s
   `_make_backend` picks it; `adapters/compute/runner_exit_codes.py` if it only sees the
   container's exit code.
4. `adapters/settings.py` (its settings, validated), `local.settings.sample.json`, README's
   settings table.
5. The contract suite: a harness module in `tests/contract/harnesses/` (the real SDK against a
   local fake of the service) — the same scenarios every backend passes.
6. The simulator: a `TierBehaviour` in `tiers.py` (statuses, job id, quirks; `TIERS`), a field
   for it on `profiles.FaultProfile` and its `for_tier`, and its rates in `PROFILES`.
7. Prices: `domain/data/vm_prices.json` if it offers VM sizes not priced there.
8. Infrastructure: `infra/app/<tier>.bicep`, `infra/main.bicep` (parameters, app settings;
   `tests/deploy/test_infra.py` fails if a setting the app reads is missing there),
   `infra/app/rbac.bicep` (the app identity's roles on it).
9. Docs: README (intro, architecture, settings), `docs/azure-setup.md` (roles, settings).
"""

from __future__ import annotations

from adapters.compute.simulated.artifacts import ArtifactUploader
from adapters.compute.simulated.cloud import SimulatedBackend, SimulatedCloud
from adapters.compute.simulated.delivery import (
    AML_EVENTS_FUNCTION_NAME,
    AML_TOPIC,
    PostFn,
    eventgrid_url_for,
    http_post,
)
from adapters.compute.simulated.faults import (
    RUN_FAULTS,
    DuplicatedEvents,
    EventFault,
    EventStatuses,
    Fault,
    HangAfter,
    ImagePullFailure,
    LateEvents,
    LostEvents,
    LostMessages,
    MessageFault,
    NeverStarts,
    NoNestedVirtualization,
    QuotaExceeded,
    RunFault,
    RunnerCrash,
    SpotEviction,
    SubmitFault,
    TransientSubmitErrors,
    run_fault,
)
from adapters.compute.simulated.install import current_cloud, install_cloud
from adapters.compute.simulated.jobs import JobPredicate
from adapters.compute.simulated.ledger import LedgerEntry
from adapters.compute.simulated.profiles import PROFILES, FaultProfile, TierFaults, get_profile
from adapters.compute.simulated.tiers import TIERS, TierBehaviour
from adapters.compute.simulated.timings import (
    BOOT_SECONDS,
    DEFAULT_IDLE_SECONDS,
    DOCKER_HUB_PULL_SECONDS,
    EVENT_LATENCY_SECONDS,
    EVENT_RETRY_DELAYS,
    EXIT_SECONDS,
    INVALID_IMAGE_SECONDS,
    MESSAGE_RETRY_DELAYS,
    PROVISION_SECONDS,
    QUEUE_SECONDS,
    REGIONAL_PULL_SECONDS,
    TASK_SPREAD,
    image_registry,
)

__all__ = [
    "AML_EVENTS_FUNCTION_NAME",
    "AML_TOPIC",
    "BOOT_SECONDS",
    "DEFAULT_IDLE_SECONDS",
    "DOCKER_HUB_PULL_SECONDS",
    "EVENT_LATENCY_SECONDS",
    "EVENT_RETRY_DELAYS",
    "EXIT_SECONDS",
    "INVALID_IMAGE_SECONDS",
    "MESSAGE_RETRY_DELAYS",
    "PROFILES",
    "PROVISION_SECONDS",
    "QUEUE_SECONDS",
    "REGIONAL_PULL_SECONDS",
    "RUN_FAULTS",
    "TASK_SPREAD",
    "TIERS",
    "ArtifactUploader",
    "DuplicatedEvents",
    "EventFault",
    "EventStatuses",
    "Fault",
    "FaultProfile",
    "HangAfter",
    "ImagePullFailure",
    "JobPredicate",
    "LateEvents",
    "LedgerEntry",
    "LostEvents",
    "LostMessages",
    "MessageFault",
    "NeverStarts",
    "NoNestedVirtualization",
    "PostFn",
    "QuotaExceeded",
    "RunFault",
    "RunnerCrash",
    "SimulatedBackend",
    "SimulatedCloud",
    "SpotEviction",
    "SubmitFault",
    "TierBehaviour",
    "TierFaults",
    "TransientSubmitErrors",
    "current_cloud",
    "eventgrid_url_for",
    "get_profile",
    "http_post",
    "image_registry",
    "install_cloud",
    "run_fault",
]
