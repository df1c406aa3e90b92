"""Each fault kind, forced with `cloud.script`, and the post retry behaviour."""

from __future__ import annotations

import pytest

from adapters.compute.simulated import (
    DuplicatedEvents,
    HangAfter,
    ImagePullFailure,
    LateEvents,
    LostEvents,
    LostMessages,
    NeverStarts,
    NoNestedVirtualization,
    QuotaExceeded,
    SpotEviction,
    TransientSubmitErrors,
)
from domain.jobs import (
    CapacitySpec,
    FailureKind,
    JobState,
    PermanentTierError,
    Tier,
    TransientBackendError,
)
from domain.messages import MessageKind
from tests.simulated.support import make_cloud, spec


def _kinds(rec, job_name: str) -> list[str]:
    return [m.body["kind"] for m in rec.messages(job_name)]


def _statuses(rec, job_name: str) -> list[str]:
    return [e.body[0]["data"]["runStatus"] for e in rec.events(job_name)]


def test_never_starts_on_azure_ml_looks_running_until_the_kill_switch() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(timeout_seconds=3 * 3600)
    cloud.script(s.job_name, NeverStarts())
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.advance(2 * 3600)
    assert rec.messages(s.job_name) == []
    status = backend.status(s.job_name)
    assert status.state is JobState.RUNNING and status.raw_status == "Running"
    assert _statuses(rec, s.job_name) == ["Queued", "Preparing", "Running"]
    sched.run_all()
    assert backend.status(s.job_name).state is JobState.FAILED
    entry = cloud.ledger[s.job_name]
    assert entry.fault == "NeverStarts" and entry.started_at is None and entry.tasks_run == 0
    # The money burns from node allocation until the kill switch.
    assert entry.billed_seconds == (entry.ended_at - entry.node_allocated_at).total_seconds()
    assert entry.billed_seconds > 2.5 * 3600


@pytest.mark.parametrize("tier", [Tier.BATCH, Tier.VM])
def test_never_starts_on_batch_and_vm_looks_preparing(tier: Tier) -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tier=tier)
    cloud.script(s.job_name, NeverStarts())
    backend = cloud.backend(tier)
    backend.submit(s)
    sched.advance(3600)
    assert rec.messages(s.job_name) == []
    assert backend.status(s.job_name).state is JobState.PREPARING


def test_no_nested_virtualization_reports_a_permanent_failure() -> None:
    cloud, sched, rec = make_cloud()
    s = spec()
    cloud.script(s.job_name, NoNestedVirtualization())
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.run_all()
    msgs = rec.messages(s.job_name)
    assert [m.body["kind"] for m in msgs] == ["failure"]
    failure = msgs[0].body["failure"]
    assert failure["code"] == "no_nested_virtualization" and failure["permanent"] is True
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED
    assert status.failure_kind is FailureKind.PERMANENT_FOR_TIER
    assert _statuses(rec, s.job_name)[-1] == "Failed"


def test_transient_image_pull_failure() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tier=Tier.BATCH)
    cloud.script(s.job_name, ImagePullFailure())
    backend = cloud.backend(Tier.BATCH)
    backend.submit(s)
    sched.run_all()
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED and "ImagePull" in status.detail
    assert status.failure_kind is FailureKind.TRANSIENT
    assert rec.messages(s.job_name) == []


def test_invalid_image_fails_the_pull_permanently_and_fast() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(image="Windows Arena/WinArena!!")
    backend = cloud.backend(Tier.AZURE_ML)
    start = sched.now()
    backend.submit(s)
    sched.run_all()
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED and "ImagePull" in status.detail
    assert status.failure_kind is FailureKind.PERMANENT_FOR_TIER
    assert (cloud.ledger[s.job_name].ended_at - start).total_seconds() < 400
    assert rec.messages(s.job_name) == []


def test_hang_after_k_tasks_stops_heartbeats_and_stays_running() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tasks=4, timeout_seconds=6 * 3600)
    cloud.script(s.job_name, HangAfter(tasks=2))
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.advance(4 * 3600)
    kinds = _kinds(rec, s.job_name)
    assert kinds.count("task_result") == 2 and "finished" not in kinds
    last = rec.messages(s.job_name)[-1]
    assert last.body["kind"] == "task_result"
    assert backend.status(s.job_name).state is JobState.RUNNING
    # Hung: nothing more until the kill switch ends it.
    sched.run_all()
    assert rec.messages(s.job_name)[-1] is last
    assert backend.status(s.job_name).state is JobState.FAILED
    assert cloud.ledger[s.job_name].tasks_run == 2


def test_spot_eviction_fails_the_job_mid_run_as_transient() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tasks=4, spot=True)
    cloud.script(s.job_name, SpotEviction(tasks=1))
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.run_all()
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED and "preempted" in status.detail
    assert status.failure_kind is FailureKind.TRANSIENT
    assert _kinds(rec, s.job_name).count("task_result") == 1
    assert all(m.at <= cloud.ledger[s.job_name].ended_at for m in rec.messages(s.job_name))
    # Spot capacity is billed at the discounted price.
    entry = cloud.ledger[s.job_name]
    assert entry.cost_usd < 0.208 * entry.billed_seconds / 3600


def test_transient_submit_errors_then_success() -> None:
    cloud, _, _ = make_cloud()
    s = spec()
    cloud.script(s.job_name, TransientSubmitErrors(count=2, status_code=503))
    backend = cloud.backend(Tier.AZURE_ML)
    for _ in range(2):
        with pytest.raises(TransientBackendError) as err:
            backend.submit(s)
        assert err.value.code == "503" and err.value.is_transient
    assert backend.submit(s).created is True
    assert backend.submit(s).created is False


def test_scripted_quota_on_submit_and_exhausted_tier_on_ensure_capacity() -> None:
    cloud, _, _ = make_cloud()
    backend = cloud.backend(Tier.BATCH)
    s = spec(tier=Tier.BATCH)
    cloud.script(s.job_name, QuotaExceeded())
    with pytest.raises(PermanentTierError):
        backend.submit(s)
    cap = CapacitySpec(
        evaluation_id="eval1", tier=Tier.BATCH, vm_size="Standard_D4s_v5", max_nodes=10
    )
    report = backend.ensure_capacity(cap)
    assert report.created and report.tier is Tier.BATCH
    assert not backend.ensure_capacity(cap).created
    assert backend.ensure_capacity(cap.model_copy(update={"max_nodes": 5})).updated
    cloud.exhaust_quota(Tier.BATCH)
    with pytest.raises(PermanentTierError) as err:
        backend.ensure_capacity(cap)
    assert err.value.kind is FailureKind.PERMANENT_FOR_TIER
    with pytest.raises(PermanentTierError):
        backend.submit(spec("eval1-s3-a1", tier=Tier.BATCH, shard=3))
    # Other tiers are unaffected.
    cloud.backend(Tier.VM).ensure_capacity(cap.model_copy(update={"tier": Tier.VM}))


def test_script_by_predicate_applies_to_matching_jobs_at_most_times() -> None:
    cloud, sched, _ = make_cloud()
    cloud.script(lambda s: s.shard_index == 0, NeverStarts(), times=1)
    backend = cloud.backend(Tier.VM)
    first, second, other = (
        spec("eval1-s0-a1", tier=Tier.VM, attempt=1),
        spec("eval1-s0-a2", tier=Tier.VM, attempt=2),
        spec("eval1-s1-a1", tier=Tier.VM, shard=1),
    )
    for s in (first, second, other):
        backend.submit(s)
    sched.run_all()
    assert cloud.ledger[first.job_name].fault == "NeverStarts"
    assert cloud.ledger[second.job_name].state is JobState.COMPLETED
    assert cloud.ledger[other.job_name].state is JobState.COMPLETED
    with pytest.raises(TypeError):
        cloud.script("x", "not a fault")  # type: ignore[arg-type]


def test_lost_events() -> None:
    cloud, sched, rec = make_cloud()
    s = spec()
    cloud.script(s.job_name, LostEvents(statuses=frozenset({"Running", "Completed"})))
    cloud.backend(Tier.AZURE_ML).submit(s)
    sched.run_all()
    assert _statuses(rec, s.job_name) == ["Queued", "Preparing"]
    assert cloud.ledger[s.job_name].events_lost == 3


def test_duplicated_events_keep_their_id() -> None:
    cloud, sched, rec = make_cloud()
    s = spec()
    cloud.script(s.job_name, DuplicatedEvents())
    cloud.backend(Tier.AZURE_ML).submit(s)
    sched.run_all()
    events = rec.events(s.job_name)
    assert len(events) == 10
    ids = [e.body[0]["id"] for e in events]
    assert all(ids.count(i) == 2 for i in ids)


def test_late_event_arrives_after_later_ones() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tasks=1)
    cloud.script(s.job_name, LateEvents(delay_seconds=3 * 3600, statuses=frozenset({"Running"})))
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.run_all()
    statuses = _statuses(rec, s.job_name)
    assert statuses == ["Queued", "Preparing", "Completed", "Completed", "Running"]
    running = rec.events(s.job_name)[-1]
    # The event still says when it happened; only its delivery is late.
    assert running.body[0]["eventTime"] < rec.events(s.job_name)[2].body[0]["eventTime"]
    assert backend.status(s.job_name).state is JobState.COMPLETED


def test_lost_heartbeats() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tasks=2)
    cloud.script(s.job_name, LostMessages(kinds=frozenset({MessageKind.HEARTBEAT})))
    cloud.backend(Tier.VM).submit(s)
    sched.run_all()
    assert _kinds(rec, s.job_name) == ["task_result", "task_result", "finished"]
    entry = cloud.ledger[s.job_name]
    assert entry.messages_lost == entry.messages_sent - 3 > 10


def test_failed_posts_are_retried_then_dropped() -> None:
    cloud, sched, rec = make_cloud()
    calls: dict[str, int] = {}

    def flaky(url, headers, body) -> int:
        # The app answers 503 twice for each message, then accepts it.
        key = body if isinstance(body, list) else (body["kind"], body.get("sent_at"))
        key = repr(key)
        calls[key] = calls.get(key, 0) + 1
        return 503 if calls[key] <= 2 else 200

    rec.answer = flaky
    s = spec(tasks=1)
    cloud.backend(Tier.AZURE_ML).submit(s)
    sched.run_all()
    delivered = [m for m in rec.messages(s.job_name)]
    assert sum(1 for m in delivered if m.body["kind"] == "finished") == 3
    assert calls and all(n == 3 for n in calls.values())
    # Event Grid retries carry their delivery count.
    queued = [e for e in rec.events(s.job_name) if e.body[0]["data"]["runStatus"] == "Queued"]
    assert [e.headers["aeg-delivery-count"] for e in queued] == ["0", "1", "2"]


def test_refused_connection_is_retried_a_few_times_then_dropped() -> None:
    cloud, sched, rec = make_cloud()

    def refused(url, headers, body) -> int:
        raise ConnectionError("connection refused")

    rec.answer = refused
    s = spec(tasks=1, tier=Tier.VM)
    cloud.backend(Tier.VM).submit(s)
    sched.run_all()
    finished = [m for m in rec.messages(s.job_name) if m.body["kind"] == "finished"]
    assert len(finished) == 4  # the first try and three retries
    assert cloud.backend(Tier.VM).status(s.job_name).state is JobState.COMPLETED


def test_rejected_message_is_not_retried() -> None:
    cloud, sched, rec = make_cloud()
    rec.answer = lambda url, headers, body: 401
    s = spec(tasks=1, tier=Tier.VM)
    cloud.backend(Tier.VM).submit(s)
    sched.run_all()
    kinds = _kinds(rec, s.job_name)
    assert kinds.count("finished") == 1 and kinds.count("task_result") == 1


def test_cancel_drops_pending_message_retries() -> None:
    cloud, sched, rec = make_cloud()
    rec.answer = lambda url, headers, body: 503
    s = spec(tasks=3, tier=Tier.VM)
    backend = cloud.backend(Tier.VM)
    backend.submit(s)
    while not rec.messages(s.job_name):
        sched.advance(1)
    backend.cancel(s.job_name)
    cancelled_at = sched.now()
    sched.run_all()
    assert all(m.at <= cancelled_at for m in rec.messages(s.job_name))
