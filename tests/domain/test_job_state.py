from __future__ import annotations

import itertools

import pytest

from domain.job_state import (
    advance,
    batch_node_failure,
    from_azureml,
    from_batch_task,
    from_docker,
)
from domain.jobs import FailureKind, JobState

S = JobState


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NotStarted", S.SUBMITTED),
        ("Queued", S.QUEUED),
        ("Preparing", S.PREPARING),
        ("Provisioning", S.PREPARING),
        ("Starting", S.PREPARING),
        ("Running", S.RUNNING),
        ("Finalizing", S.RUNNING),
        ("NotResponding", S.RUNNING),
        ("Paused", S.QUEUED),
        ("CancelRequested", S.CANCELLED),
        ("Completed", S.COMPLETED),
        ("Failed", S.FAILED),
        ("Canceled", S.CANCELLED),
        ("Unknown", S.SUBMITTED),
        # Event Grid and the SDK disagree on case; compare case-insensitively.
        ("running", S.RUNNING),
        ("COMPLETED", S.COMPLETED),
        (" Failed ", S.FAILED),
        # Never crash on something new.
        ("SomethingNew", S.SUBMITTED),
        ("", S.SUBMITTED),
    ],
)
def test_azureml(status: str, state: JobState) -> None:
    assert from_azureml(status) is state


@pytest.mark.parametrize(
    ("state", "exit_code", "category", "code", "expected"),
    [
        ("active", None, None, None, (S.QUEUED, None)),
        ("preparing", None, None, None, (S.PREPARING, None)),
        ("running", None, None, None, (S.RUNNING, None)),
        ("Running", None, None, None, (S.RUNNING, None)),
        ("completed", 0, None, None, (S.COMPLETED, None)),
        ("completed", 1, "usererror", "FailureExitCode", (S.FAILED, FailureKind.JOB_FAILED)),
        ("completed", 3, None, None, (S.FAILED, FailureKind.JOB_FAILED)),
        ("completed", None, None, None, (S.FAILED, FailureKind.JOB_FAILED)),
        (
            "completed",
            None,
            "usererror",
            "ContainerInvalidImage",
            (S.FAILED, FailureKind.PERMANENT_FOR_TIER),
        ),
        (
            "completed",
            None,
            "UserError",
            "ContainerInvalidRegistry",
            (S.FAILED, FailureKind.PERMANENT_FOR_TIER),
        ),
        (
            "completed",
            None,
            "usererror",
            "ContainerPoolNotSupported",
            (S.FAILED, FailureKind.PERMANENT_FOR_TIER),
        ),
        (
            "completed",
            None,
            "usererror",
            "containerinvalidsettings",
            (S.FAILED, FailureKind.PERMANENT_FOR_TIER),
        ),
        (
            "completed",
            None,
            "servererror",
            "ContainerMiscError",
            (S.FAILED, FailureKind.TRANSIENT),
        ),
        ("completed", None, "servererror", "SomethingElse", (S.FAILED, FailureKind.TRANSIENT)),
        ("completed", 0, "usererror", "SomethingElse", (S.FAILED, FailureKind.JOB_FAILED)),
        ("weird", None, None, None, (S.SUBMITTED, None)),
    ],
)
def test_batch_task(
    state: str,
    exit_code: int | None,
    category: str | None,
    code: str | None,
    expected: tuple[JobState, FailureKind | None],
) -> None:
    assert from_batch_task(state, exit_code, category, code) == expected


@pytest.mark.parametrize(
    ("node_state", "kind"),
    [
        ("unusable", FailureKind.PERMANENT_FOR_TIER),
        ("starttaskfailed", FailureKind.PERMANENT_FOR_TIER),
        ("StartTaskFailed", FailureKind.PERMANENT_FOR_TIER),
        ("preempted", FailureKind.TRANSIENT),
        ("offline", FailureKind.TRANSIENT),
        ("idle", None),
        ("running", None),
        ("creating", None),
        ("waitingforstarttask", None),
    ],
)
def test_batch_node(node_state: str, kind: FailureKind | None) -> None:
    assert batch_node_failure(node_state) is kind


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"Status": "created"}, S.PREPARING),
        ({"Status": "running", "Running": True}, S.RUNNING),
        ({"Status": "paused"}, S.RUNNING),
        ({"Status": "restarting"}, S.RUNNING),
        ({"Status": "exited", "ExitCode": 0, "OOMKilled": False}, S.COMPLETED),
        ({"Status": "exited", "ExitCode": 0, "OOMKilled": True}, S.FAILED),
        ({"Status": "exited", "ExitCode": 1}, S.FAILED),
        ({"Status": "exited", "ExitCode": 137}, S.FAILED),
        ({"Status": "exited"}, S.FAILED),
        ({"Status": "dead", "ExitCode": 0}, S.FAILED),
        ({"Status": "removing"}, S.SUBMITTED),
        ({}, S.SUBMITTED),
    ],
)
def test_docker(state: dict[str, object], expected: JobState) -> None:
    assert from_docker(state) is expected


def test_advance_moves_forward_only() -> None:
    assert advance(S.SUBMITTED, S.QUEUED)
    assert advance(S.QUEUED, S.RUNNING)
    assert advance(S.RUNNING, S.COMPLETED)
    assert advance(S.PREPARING, S.FAILED)
    assert not advance(S.RUNNING, S.QUEUED)
    assert not advance(S.RUNNING, S.RUNNING)


def test_terminal_is_final() -> None:
    terminal = [S.COMPLETED, S.FAILED, S.CANCELLED]
    for current, new in itertools.product(terminal, list(JobState)):
        assert not advance(current, new)


def test_out_of_order_events_end_in_the_same_state() -> None:
    events = [S.QUEUED, S.PREPARING, S.RUNNING, S.COMPLETED]
    finals = set()
    for order in itertools.permutations(events):
        current = S.SUBMITTED
        for state in order:
            if advance(current, state):
                current = state
        finals.add(current)
    assert finals == {S.COMPLETED}


def test_unknown_statuses_never_move_a_known_state() -> None:
    for current in JobState:
        assert not advance(current, from_azureml("Unknown"))
        assert not advance(current, from_azureml("brand-new-status"))
