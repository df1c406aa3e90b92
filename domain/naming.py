"""Names derived from an evaluation's id, so that re-running a step finds what it made before.

A job name encodes evaluation, shard and attempt: a re-delivered submit activity computes the
same name and the backend's create-if-absent makes submission idempotent, while a new attempt
gets a new name, so events from an older attempt can always be told apart. Job names are valid
as an Azure ML job name, an Azure Batch task id and a Docker container name at once: lowercase
letters, digits and hyphens, starting with a letter, at most 63 characters.
"""

from __future__ import annotations

import hashlib
import re

from domain.messages import JOB_NAME_PATTERN

JOB_NAME_PREFIX = "waa"
MAX_JOB_NAME_LENGTH = 63
EVALUATION_ID_LENGTH = 12
# Evaluation ids are made by `new_evaluation_id`; callers may also use their own short ids.
EVALUATION_ID_PATTERN = r"^[a-z0-9]{1,32}$"

_EVALUATION_ID = re.compile(EVALUATION_ID_PATTERN)
_JOB_NAME = re.compile(JOB_NAME_PATTERN)
_NUMBER = r"(0|[1-9][0-9]{0,5})"
_PARSE = re.compile(rf"^{JOB_NAME_PREFIX}-([a-z0-9]{{1,32}})-s{_NUMBER}-a{_NUMBER}$")


def new_evaluation_id(seed_bytes: bytes) -> str:
    """A short lowercase id from a hash of `seed_bytes` (e.g. the idempotency key, or a request
    id and the receive time): the same seed gives the same id."""
    return hashlib.sha256(seed_bytes).hexdigest()[:EVALUATION_ID_LENGTH]


def _check_evaluation_id(evaluation_id: str) -> None:
    if not _EVALUATION_ID.fullmatch(evaluation_id):
        raise ValueError(f"invalid evaluation id {evaluation_id!r}")


def shard_instance_id(evaluation_id: str, shard_index: int) -> str:
    """The shard sub-orchestration's instance id (deterministic, so a replay finds it)."""
    _check_evaluation_id(evaluation_id)
    if shard_index < 0:
        raise ValueError("shard_index must not be negative")
    return f"{evaluation_id}:s{shard_index}"


def worker_instance_id(evaluation_id: str, slot: int) -> str:
    """The worker sub-orchestration's instance id of slot `slot` (queue distribution)."""
    _check_evaluation_id(evaluation_id)
    if slot < 0:
        raise ValueError("slot must not be negative")
    return f"{evaluation_id}:w{slot}"


def job_name(evaluation_id: str, shard_index: int, attempt: int) -> str:
    """E.g. "waa-3f9a0c1d2e4b-s7-a2" for attempt 2 of shard 7."""
    _check_evaluation_id(evaluation_id)
    if not 0 <= shard_index <= 999_999 or not 0 <= attempt <= 999_999:
        raise ValueError("shard_index and attempt must be between 0 and 999999")
    name = f"{JOB_NAME_PREFIX}-{evaluation_id}-s{shard_index}-a{attempt}"
    # Holds by construction; checked because three services reject anything else.
    if len(name) > MAX_JOB_NAME_LENGTH or not _JOB_NAME.fullmatch(name):
        raise ValueError(f"job name {name!r} would be invalid")
    return name


def parse_job_name(name: str) -> tuple[str, int, int] | None:
    """(evaluation_id, shard_index, attempt) of a name made by `job_name`, else None."""
    match = _PARSE.fullmatch(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))
