"""One job at a time through the simulator: the happy path and its timings per tier."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from adapters.compute.simulated import (
    AML_TOPIC,
    BOOT_SECONDS,
    DOCKER_HUB_PULL_SECONDS,
    PROVISION_SECONDS,
    QUEUE_SECONDS,
    REGIONAL_PULL_SECONDS,
    TASK_SPREAD,
    image_registry,
)
from domain.jobs import JobNotFoundError, JobState, PermanentTierError, Tier
from domain.messages import AML_RUN_COMPLETED, AML_RUN_STATUS_CHANGED, JobMessage
from domain.planning import DOMAIN_MINUTES, UNKNOWN_DOMAIN_MINUTES
from domain.tasksets import FULL_SET, load_task_set
from tests.simulated.support import HEARTBEAT_URL, make_cloud, spec


def _secs(a, b) -> float:
    return (b - a).total_seconds()


def test_azure_ml_happy_path_messages_events_and_timing() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.AZURE_ML)
    s = spec(tasks=3)
    submitted = sched.now()
    result = backend.submit(s)
    assert result.created and result.job_name == s.job_name
    assert backend.status(s.job_name).state is JobState.QUEUED
    assert rec.posts == []  # nothing is posted from inside submit

    sched.run_all()

    msgs = rec.messages(s.job_name)
    for m in msgs:
        JobMessage.model_validate(m.body)  # every message honours the wire contract
        assert m.headers["Authorization"] == "Bearer t0ken-for-tests"
    kinds = [m.body["kind"] for m in msgs]
    assert kinds[0] == "heartbeat"
    assert kinds[-1] == "finished" and msgs[-1].body["exit_code"] == 0
    results = [m.body["task_result"] for m in msgs if m.body["kind"] == "task_result"]
    assert [r["task_id"] for r in results] == list(s.task_ids)
    assert all(r["status"] == "completed" and 0.0 <= r["score"] <= 1.0 for r in results)

    # First heartbeat after queue + provisioning + Docker Hub pull + boot.
    first = _secs(submitted, msgs[0].at)
    low = QUEUE_SECONDS[0] + PROVISION_SECONDS[0] + DOCKER_HUB_PULL_SECONDS[0] + BOOT_SECONDS[0]
    high = QUEUE_SECONDS[1] + PROVISION_SECONDS[1] + DOCKER_HUB_PULL_SECONDS[1] + BOOT_SECONDS[1]
    assert low <= first <= high
    # Tasks run one after another, each around the planner's expectation for its domain.
    task_times = [msgs[0].at] + [m.at for m in msgs if m.body["kind"] == "task_result"]
    for (a, b), result in zip(itertools.pairwise(task_times), results, strict=True):
        expected = 60 * UNKNOWN_DOMAIN_MINUTES  # the test's task ids are not WAA ids
        assert (1 - TASK_SPREAD) * expected <= _secs(a, b) <= (1 + TASK_SPREAD) * expected
        assert result["duration_seconds"] == pytest.approx(_secs(a, b), abs=0.01)
    # Heartbeats every 30 s from the first one until the tasks are done.
    beats = [m.at for m in msgs if m.body["kind"] == "heartbeat"]
    assert all(_secs(a, b) == pytest.approx(30.0) for a, b in itertools.pairwise(beats))
    assert beats[-1] <= msgs[-1].at
    assert len(beats) >= _secs(beats[0], task_times[-1]) // 30

    events = rec.events(s.job_name)
    statuses = [(e.body[0]["eventType"], e.body[0]["data"]["runStatus"]) for e in events]
    assert statuses == [
        (AML_RUN_STATUS_CHANGED, "Queued"),
        (AML_RUN_STATUS_CHANGED, "Preparing"),
        (AML_RUN_STATUS_CHANGED, "Running"),
        (AML_RUN_STATUS_CHANGED, "Completed"),
        (AML_RUN_COMPLETED, "Completed"),
    ]
    ev = events[0]
    assert ev.headers["aeg-event-type"] == "Notification"
    body = ev.body[0]
    assert body["topic"] == AML_TOPIC and body["dataVersion"] == "2"
    assert body["subject"].startswith("experiments/")
    assert body["subject"].endswith(f"/runs/{s.job_name}")
    assert body["data"]["runTags"] == {
        "waa_evaluation": "eval1",
        "waa_shard": "0",
        "waa_attempt": "1",
    }
    assert body["data"]["experimentName"] == "waa-eval1"
    assert len({e.body[0]["id"] for e in events}) == len(events)
    # The Running event comes before the first heartbeat, Completed after `finished`.
    assert events[2].at <= msgs[0].at
    assert events[3].at >= msgs[-1].at

    status = backend.status(s.job_name)
    assert status.state is JobState.COMPLETED and status.raw_status == "Completed"
    entry = cloud.ledger[s.job_name]
    assert entry.state is JobState.COMPLETED
    assert entry.tasks_run == entry.tasks_completed == 3
    assert entry.started_at == msgs[0].at
    assert entry.billed_seconds == _secs(entry.node_allocated_at, entry.ended_at)
    assert entry.cost_usd == pytest.approx(0.208 * entry.billed_seconds / 3600)
    assert sched.pending() == 0


def test_regional_registry_pulls_fast() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(image="waaregistry.azurecr.io/winarena:1.2")
    cloud.backend(Tier.AZURE_ML).submit(s)
    start = sched.now()
    sched.run_all()
    first = _secs(start, rec.messages(s.job_name)[0].at)
    high = QUEUE_SECONDS[1] + PROVISION_SECONDS[1] + REGIONAL_PULL_SECONDS[1] + BOOT_SECONDS[1]
    assert first <= high
    assert REGIONAL_PULL_SECONDS[1] < 120


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("windowsarena/winarena:latest", None),
        ("docker.io/windowsarena/winarena", None),
        ("waa.azurecr.io/winarena:1", "waa.azurecr.io"),
        ("localhost:5000/winarena", "localhost:5000"),
    ],
)
def test_image_registry(image: str, registry: str | None) -> None:
    assert image_registry(image) == registry


def test_task_durations_follow_the_planners_domain_profile() -> None:
    cloud, sched, rec = make_cloud()
    calc = load_task_set(FULL_SET)["libreoffice_calc"][:4]
    s = spec().model_copy(update={"task_ids": calc})
    cloud.backend(Tier.VM).submit(s)
    sched.run_all()
    results = [m.body["task_result"] for m in rec.messages() if m.body["kind"] == "task_result"]
    assert [r["task_id"] for r in results] == calc
    expected = 60 * DOMAIN_MINUTES["libreoffice_calc"]
    for r in results:
        assert (1 - TASK_SPREAD) * expected <= r["duration_seconds"] <= (1 + TASK_SPREAD) * expected


def test_unpriced_vm_size_is_refused() -> None:
    cloud, _, _ = make_cloud()
    with pytest.raises(PermanentTierError):
        cloud.backend(Tier.AZURE_ML).submit(spec().model_copy(update={"vm_size": "Standard_X1"}))


def test_image_registry_rejects_invalid_reference() -> None:
    with pytest.raises(ValueError):
        image_registry("Not A/valid image!")


def test_vm_tier_only_boots_and_sends_no_events() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tier=Tier.VM)
    backend = cloud.backend(Tier.VM)
    backend.submit(s)
    start = sched.now()
    sched.run_all()
    first = _secs(start, rec.messages(s.job_name)[0].at)
    assert first <= QUEUE_SECONDS[1] + BOOT_SECONDS[1]
    assert rec.events() == []
    assert backend.status(s.job_name).state is JobState.COMPLETED
    assert backend.status(s.job_name).raw_status == "exited(0)"


def test_batch_pays_provisioning_and_pull_once_per_node() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.BATCH)
    first_spec = spec("eval1-s0-a1", tier=Tier.BATCH)
    backend.submit(first_spec)
    start1 = sched.now()
    sched.run_all()
    first_delay = _secs(start1, rec.messages(first_spec.job_name)[0].at)
    assert first_delay >= PROVISION_SECONDS[0] + DOCKER_HUB_PULL_SECONDS[0]

    # The idle node is reused within its scale-down time: no provisioning, no pull.
    sched.advance(60)
    second = spec("eval1-s1-a1", tier=Tier.BATCH, shard=1)
    backend.submit(second)
    start2 = sched.now()
    sched.run_all()
    assert _secs(start2, rec.messages(second.job_name)[0].at) <= QUEUE_SECONDS[1] + BOOT_SECONDS[1]
    assert backend.status(second.job_name).raw_status == "completed:success"

    # Once the pool scaled the node down, a new node is provisioned again.
    sched.advance(3600)
    third = spec("eval1-s2-a1", tier=Tier.BATCH, shard=2)
    backend.submit(third)
    start3 = sched.now()
    sched.run_all()
    assert _secs(start3, rec.messages(third.job_name)[0].at) >= PROVISION_SECONDS[0]


def test_submit_is_idempotent_on_job_name() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.AZURE_ML)
    s = spec()
    first = backend.submit(s)
    sched.advance(100)
    again = backend.submit(s)
    assert again.created is False and again.backend_job_id == first.backend_job_id
    sched.run_all()
    kinds = [m.body["kind"] for m in rec.messages(s.job_name)]
    assert kinds.count("finished") == 1 and kinds.count("task_result") == 3
    assert len(cloud.ledger) == 1


def test_unknown_job() -> None:
    cloud, _, _ = make_cloud()
    backend = cloud.backend(Tier.BATCH)
    with pytest.raises(JobNotFoundError):
        backend.status("nope-s0-a1")
    backend.cancel("nope-s0-a1")  # cancelling an unknown job is not an error
    # Tiers are separate: a job on Azure ML is unknown to Batch.
    cloud.backend(Tier.AZURE_ML).submit(spec())
    with pytest.raises(JobNotFoundError):
        backend.status(spec().job_name)


def test_cancel_stops_every_message_and_is_idempotent() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.AZURE_ML)
    s = spec(tasks=5)
    backend.submit(s)
    sched.advance(2000)  # first heartbeat within ~1050 s, a task takes at most ~580 s
    assert any(m.body["kind"] == "task_result" for m in rec.messages(s.job_name))
    cancelled_at = sched.now()
    backend.cancel(s.job_name)
    backend.cancel(s.job_name)
    sched.run_all()
    assert all(m.at <= cancelled_at for m in rec.messages(s.job_name))
    status = backend.status(s.job_name)
    assert status.state is JobState.CANCELLED and status.raw_status == "Canceled"
    terminal = [e.body[0]["data"]["runStatus"] for e in rec.events(s.job_name)][-1]
    assert terminal == "Canceled"
    entry = cloud.ledger[s.job_name]
    assert entry.ended_at == cancelled_at
    assert entry.billed_seconds == _secs(entry.node_allocated_at, cancelled_at)
    assert sched.pending() == 0


def test_kill_switch_fails_the_job_at_its_timeout() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.AZURE_ML)
    s = spec(tasks=10, timeout_seconds=2400)
    start = sched.now()
    backend.submit(s)
    sched.run_all()
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED and "timeout" in status.detail
    entry = cloud.ledger[s.job_name]
    assert entry.ended_at == start + timedelta(seconds=2400)
    assert 0 < entry.tasks_run < 10
    assert all(m.at <= entry.ended_at for m in rec.messages(s.job_name))
    assert [m.body["kind"] for m in rec.messages(s.job_name)].count("finished") == 0
    assert rec.events(s.job_name)[-1].body[0]["data"]["runStatus"] == "Failed"


def test_messages_go_to_the_spec_heartbeat_url_only() -> None:
    cloud, sched, rec = make_cloud()
    cloud.backend(Tier.BATCH).submit(spec(tier=Tier.BATCH))
    sched.run_all()
    assert {p.url for p in rec.posts} == {HEARTBEAT_URL}
