from __future__ import annotations

import re

import pytest

from domain.messages import JOB_NAME_PATTERN
from domain.naming import (
    job_name,
    new_evaluation_id,
    parse_job_name,
    shard_instance_id,
)

# Docker container names, Azure Batch task ids (<= 64) and Azure ML job names all accept these.
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
BATCH_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def test_evaluation_id_is_short_lowercase_and_stable() -> None:
    first = new_evaluation_id(b"seed-1")
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert new_evaluation_id(b"seed-1") == first
    assert new_evaluation_id(b"seed-2") != first


def test_shard_instance_id() -> None:
    assert shard_instance_id("abc123", 7) == "abc123:s7"
    with pytest.raises(ValueError):
        shard_instance_id("abc123", -1)


def test_job_name_shape() -> None:
    ev = new_evaluation_id(b"x")
    name = job_name(ev, 3, 2)
    assert name == f"waa-{ev}-s3-a2"
    longest = job_name("z" * 32, 999_999, 999_999)
    for candidate in (name, longest):
        assert re.match(JOB_NAME_PATTERN, candidate)
        assert len(candidate) <= 63
        assert candidate == candidate.lower()
        assert candidate[0].isalpha()
        assert DOCKER_NAME.match(candidate)
        assert BATCH_TASK_ID.match(candidate)


def test_job_names_are_unique_across_shards_and_attempts() -> None:
    names = {job_name(ev, s, a) for ev in ("a1", "a11") for s in range(30) for a in range(1, 12)}
    assert len(names) == 2 * 30 * 11


def test_job_name_round_trip() -> None:
    for ev, shard, attempt in [("abc", 0, 1), ("0f3a9c", 12, 6), ("z" * 32, 999_999, 0)]:
        assert parse_job_name(job_name(ev, shard, attempt)) == (ev, shard, attempt)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "waa-abc-s1",
        "waa-abc-s1-a",
        "waa-ABC-s1-a1",
        "waa-abc-s01-a1",
        "waa-abc-s1-a1-extra",
        "other-abc-s1-a1",
        "waa--s1-a1",
        "waa-abc-s1-a1\n",
    ],
)
def test_parse_rejects_foreign_names(name: str) -> None:
    assert parse_job_name(name) is None


@pytest.mark.parametrize("bad", ["", "ABC", "a-b", "a:b", "abc\n", "x" * 33])
def test_invalid_evaluation_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        job_name(bad, 0, 1)


def test_out_of_range_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        job_name("abc", -1, 1)
    with pytest.raises(ValueError):
        job_name("abc", 0, 1_000_000)
