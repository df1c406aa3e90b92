"""Wire contracts between a running job and the control plane.

The shard runner (stdlib only, inside the WAA container) and the simulated backend POST these
to `POST /api/heartbeats` with the header `Authorization: Bearer <token>`, where the token is
`heartbeat_token(secret, job_name)`. The JSON shape is the contract; the shard runner builds it
by hand, so keep field names stable.

    {"job_name": "...", "kind": "heartbeat" | "task_result" | "failure" | "finished",
     "sent_at": "2026-11-28T14:00:00+00:00",
     "task_result": {"task_id": "...", "status": "completed" | "failed", "score": 1.0,
                     "reason": "...", "duration_seconds": 412.0},        # kind == task_result
     "failure": {"code": "no_nested_virtualization", "message": "...",
                 "permanent": true},                                       # kind == failure
     "exit_code": 0,                                                       # kind == finished
     "artifacts": {"task_id": "...", "files": [{"path": "traj.jsonl", "size": 1234}],
                   "failed": ["x.png"]}}            # kind == artifact_urls | artifacts_uploaded

`next_task` (queue distribution) asks for the job's next task: 200 with a `NextTask`, either a
task id to run (the same one again while the job holds it without a result, so a retried ask
is safe) or `exit: true` with the reason (nothing left to claim, the evaluation cancelled, the
job's deadline too close). A job of a static shard gets 409.

`artifact_urls` asks for one write-only upload URL per file of a task's result folder, after
the task's result was sent (the score never waits for uploads); `artifacts_uploaded` reports
what went up ("failed": the paths that did not). Paths are relative POSIX paths inside the
task's folder (`domain.artifacts.path_problem`).

Any message from a job counts as a heartbeat; the first one of an attempt is the authoritative
"container started" signal.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from domain.artifacts import MAX_ARTIFACT_FILE_BYTES, MAX_ARTIFACT_FILES, path_problem

# A WAA task id, optionally with a run's trial suffix "#<k>" (k = 0..9; domain/tasksets.py).
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(#[0-9])?$"
JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{2,127}$"


class MessageKind(StrEnum):
    HEARTBEAT = "heartbeat"
    TASK_RESULT = "task_result"
    FAILURE = "failure"
    FINISHED = "finished"
    ARTIFACT_URLS = "artifact_urls"
    ARTIFACTS_UPLOADED = "artifacts_uploaded"
    # Queue distribution: the job asks for its next task (answered 200 with `NextTask`).
    NEXT_TASK = "next_task"


class TaskRunStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class TaskResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    status: TaskRunStatus
    score: float = Field(default=0.0, ge=0.0, le=1.0)
    reason: str = Field(default="", max_length=2000)
    duration_seconds: float = Field(default=0.0, ge=0.0)


class RunnerFailureCode(StrEnum):
    NO_NESTED_VIRTUALIZATION = "no_nested_virtualization"  # /dev/kvm missing: permanent for tier
    WAA_NOT_READY = "waa_not_ready"  # the WAA server never answered its readiness probe
    SETUP_FAILED = "setup_failed"  # the container entry setup exited non-zero
    TASK_CRASHED = "task_crashed"
    INTERNAL = "internal"
    # The golden image (WAA's prepared storage) is not where the tier mounts it: the reason
    # names the path. A deployment problem of that tier, not of the attempt.
    STORAGE_MISSING = "storage_missing"
    # The job could not read its model keys or heartbeat token from Key Vault (no identity,
    # no role, no such secret): the reason names the secret, never a value.
    CREDENTIALS_UNAVAILABLE = "credentials_unavailable"


class RunnerFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: RunnerFailureCode
    message: str = Field(default="", max_length=4000)
    permanent: bool = False


def _checked_path(path: str) -> str:
    problem = path_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


# A relative POSIX path inside a task's folder; an error is reported at the path's own place.
ArtifactPath = Annotated[str, AfterValidator(_checked_path)]


class ArtifactFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: ArtifactPath
    size: int = Field(default=0, ge=0, le=MAX_ARTIFACT_FILE_BYTES)


class Artifacts(BaseModel):
    """One task's result folder: the files to upload (artifact_urls) or that went up
    (artifacts_uploaded, with the paths that failed)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    files: list[ArtifactFile] = Field(max_length=MAX_ARTIFACT_FILES)
    failed: list[ArtifactPath] = Field(default_factory=list, max_length=MAX_ARTIFACT_FILES)

    @field_validator("files")
    @classmethod
    def _distinct(cls, v: list[ArtifactFile]) -> list[ArtifactFile]:
        seen: set[str] = set()
        for f in v:
            if f.path in seen:
                raise ValueError(f"path {f.path!r} is listed twice")
            seen.add(f.path)
        return v


class StorageCopy(BaseModel):
    """The runner's copy of the golden image to local disk, carried by heartbeats while it
    copies and after (shard_runner: `StorageProgress.snapshot`)."""

    model_config = ConfigDict(extra="forbid")

    copied_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    seconds: float = Field(ge=0)
    done: bool = False


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_name: str = Field(pattern=JOB_NAME_PATTERN)
    kind: MessageKind = MessageKind.HEARTBEAT
    sent_at: datetime | None = None
    task_result: TaskResult | None = None
    failure: RunnerFailure | None = None
    exit_code: int | None = None
    artifacts: Artifacts | None = None
    storage: StorageCopy | None = None  # any kind; the runner sends it with heartbeats


class NextTask(BaseModel):
    """The answer to `next_task`: the task to run next, or exit."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = Field(default=None, pattern=TASK_ID_PATTERN)
    domain: str = ""  # the task's WAA domain (the runner's catalog may not list a trial key)
    # A second copy of a task another job still runs past its expected time (tail copies).
    duplicate: bool = False
    exit: bool = False
    reason: str = ""


def heartbeat_token(secret: str, job_name: str) -> str:
    """Per-attempt token: an HMAC of the job name (which names evaluation, shard and attempt)."""
    return hmac.new(secret.encode(), job_name.encode(), hashlib.sha256).hexdigest()


def token_matches(secret: str, job_name: str, token: str) -> bool:
    return hmac.compare_digest(heartbeat_token(secret, job_name), token)


# Azure ML's Event Grid event types (data: runId, runStatus, runTags, experimentName, ...).
AML_RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
AML_RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
