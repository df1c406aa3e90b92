"""Where a task's artifacts go in Blob Storage, and which file paths a job may ask to upload.

After each task the runner uploads the task's result folder (result.txt, traj.jsonl,
screenshots, logs) to the artifacts container, under

    <evaluation>/<domain>/<task>/attempt-<n>/<path>
    (<evaluation>/<domain>/<task>/trial-<k>/attempt-<n>/<path> when tasks run in trials)

with one write-only SAS per file that the app mints (`adapters/artifacts.py`). Every attempt
has its own folder, so a retried task never overwrites what an earlier attempt left.
Pure rules only: no Azure SDK, no clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.tasksets import split_run_key

# How many files one task may upload, and how long one path may be (the wire contract; a
# blob name may have up to 1,024 characters, learn.microsoft.com/rest/api/storageservices/
# naming-and-referencing-containers--blobs--and-metadata#blob-names, and the folder in front
# of the path takes up to ~300 of them).
MAX_ARTIFACT_FILES = 1000
MAX_ARTIFACT_PATH_CHARS = 512
# The runner uploads each file with one Put Blob, whose limit is 5,000 MiB (service version
# 2019-12-12 and later; learn.microsoft.com/rest/api/storageservices/put-blob, "Remarks").
MAX_ARTIFACT_FILE_BYTES = 5000 * 1024 * 1024

# The job's deadline as the shard orchestration keeps it: its run-deadline timer fires this long
# after the job's own timeout (orchestrations/waits.py RUN_DEADLINE_GRACE; a test holds the two
# equal), and the attempt is cancelled then. An upload SAS is no use to anyone after that.
JOB_DEADLINE_GRACE = timedelta(minutes=15)
# For a job row written before job rows recorded their timeout: the policy's default.
DEFAULT_JOB_TIMEOUT_SECONDS = 4 * 3600.0


def path_problem(path: str) -> str | None:
    """Why `path` is not a relative POSIX path inside a task's folder, or None when it is.
    Never absolute, never escaping the folder ('..'), no Windows separators, no empty or '.'
    segments (a blob name would not round-trip to the same file), no control characters."""
    if not path:
        return "must not be empty"
    if len(path) > MAX_ARTIFACT_PATH_CHARS:
        return f"must be at most {MAX_ARTIFACT_PATH_CHARS} characters"
    if "\\" in path:
        return "must use '/' as separator, not '\\'"
    if path.startswith("/"):
        return "must be relative (no leading '/')"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "must not contain control characters"
    for segment in path.split("/"):
        if segment == "..":
            return "must not contain '..'"
        if segment in ("", "."):
            return "must not contain empty or '.' segments"
    return None


def blob_prefix(evaluation_id: str, domain: str, task_id: str, attempt: int) -> str:
    """The folder of one task's attempt in the artifacts container (ends with '/'). A run of
    one of several trials (`<task>#<k>`) gets a `trial-<k>` folder under its task: a '#' in a
    blob name would be read as a URL's fragment."""
    task, trial = split_run_key(task_id)
    run = f"{task}/trial-{trial}" if trial is not None else task
    return f"{evaluation_id}/{domain}/{run}/attempt-{attempt}/"


def evaluation_prefix(evaluation_id: str) -> str:
    return f"{evaluation_id}/"


def job_deadline(submitted_at: datetime, job_timeout_seconds: float | None) -> datetime:
    """When the control plane stops the job at the latest: its submission, its timeout and the
    grace of the run deadline."""
    timeout = DEFAULT_JOB_TIMEOUT_SECONDS if job_timeout_seconds is None else job_timeout_seconds
    return submitted_at + timedelta(seconds=float(timeout)) + JOB_DEADLINE_GRACE


def task_of_job(row: dict[str, Any] | None, job_name: str) -> bool:
    """Whether the task row is this job's to upload for: the job it was handed to (or that
    reported its result) is this one. A later attempt's job takes it over."""
    return row is not None and row.get("job_name") == job_name


def artifacts_recorded(
    row: dict[str, Any],
    *,
    job_name: str,
    prefix_url: str,
    container_url: str,
    files: int,
    failed: int,
) -> dict[str, Any] | None:
    """The task row once its job reported an upload (None: not this job's task any more, or
    nothing new). `artifacts` is the folder's URL, never a SAS."""
    if not task_of_job(row, job_name):
        return None
    fields = {
        "artifacts": prefix_url,
        "artifacts_container": container_url,
        "artifact_files": files,
        "artifact_failed": failed,
    }
    if all(row.get(k) == v for k, v in fields.items()):
        return None
    return {**row, **fields}


def location(evaluation_id: str, tasks: list[dict[str, Any]]) -> dict[str, str] | None:
    """Where an evaluation's artifacts are (the summary's `artifacts`), from its task rows:
    None until some task's upload was reported."""
    containers = sorted({str(t["artifacts_container"]) for t in tasks if t.get("artifacts")})
    if not containers:
        return None
    container_url = containers[0]
    return {
        "container_url": container_url,
        "prefix": f"{container_url}/{evaluation_prefix(evaluation_id)}",
    }
