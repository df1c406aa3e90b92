"""Properties of the world as a whole: determinism, profile rates, billing, installation."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.compute.realtime import ThreadingScheduler
from adapters.compute.simulated import (
    PROFILES,
    FaultProfile,
    HangAfter,
    RunnerCrash,
    SimulatedCloud,
    SpotEviction,
    TierFaults,
    current_cloud,
    eventgrid_url_for,
    get_profile,
    http_post,
    install_cloud,
)
from adapters.compute.simulated import install as simulated  # the process-wide cloud
from adapters.settings import load_settings
from domain.jobs import JobNotFoundError, JobState, Tier, TransientBackendError
from tests.simulated.support import make_cloud, spec


def _submit(backend, s) -> int:
    """Submit like the app's retry policy would; returns how many transient errors it took."""
    errors = 0
    while True:
        try:
            backend.submit(s)
            return errors
        except TransientBackendError:
            errors += 1


def _run_world(seed: int, extra_first: bool = False):
    cloud, sched, rec = make_cloud("chaos", seed=seed)
    if extra_first:
        _submit(cloud.backend(Tier.AZURE_ML), spec("other-s9-a1", shard=9, evaluation_id="other"))
    for i in range(12):
        tier = (Tier.AZURE_ML, Tier.VM)[i % 2]
        _submit(cloud.backend(tier), spec(f"eval1-s{i}-a1", tier=tier, shard=i, spot=i % 3 == 0))
        sched.advance(7)
    sched.run_all()
    return cloud, rec


def test_same_seed_same_world() -> None:
    a, rec_a = _run_world(5)
    b, rec_b = _run_world(5)
    assert a.ledger == b.ledger
    assert [(p.at, p.url, p.body) for p in rec_a.posts] == [
        (p.at, p.url, p.body) for p in rec_b.posts
    ]
    c, _ = _run_world(6)
    assert c.ledger != a.ledger


def test_adding_a_job_does_not_reshuffle_the_others() -> None:
    a, _ = _run_world(5)
    b, _ = _run_world(5, extra_first=True)
    for name, entry in a.ledger.items():
        other = b.ledger[name]
        # Same draws, same story; only the wall-clock offset differs (the extra submit took
        # no virtual time, so even that is equal).
        assert (other.fault, other.state, other.tasks_run, other.billed_seconds) == (
            entry.fault,
            entry.state,
            entry.tasks_run,
            entry.billed_seconds,
        )


def test_seed_profile_rates_per_tier() -> None:
    cloud, sched, _ = make_cloud("seed", seed=3)
    n = 400
    submit_errors: Counter[Tier] = Counter()
    for tier in (Tier.AZURE_ML, Tier.BATCH):
        for i in range(n):
            s = spec(f"ev-{tier.value}-s{i}-a1", tier=tier, shard=i, tasks=1)
            submit_errors[tier] += _submit(cloud.backend(tier), s) > 0
    faults = {
        tier: Counter(e.fault for e in cloud.ledger.values() if e.tier is tier)
        for tier in (Tier.AZURE_ML, Tier.BATCH)
    }
    aml, batch = faults[Tier.AZURE_ML], faults[Tier.BATCH]
    assert 0.4 * n <= aml["NeverStarts"] <= 0.6 * n
    assert 0.05 * n <= aml["HangAfter"] <= 0.16 * n
    assert aml["SpotEviction"] == 0  # no spot jobs, no evictions
    assert 0.01 * n <= submit_errors[Tier.AZURE_ML] <= 0.1 * n
    assert batch["NeverStarts"] <= 0.1 * n and batch["HangAfter"] <= 0.07 * n
    assert batch[""] >= 0.85 * n

    # What the app sees matches the drawn faults.
    sched.run_all()
    for e in cloud.ledger.values():
        if e.fault == "NeverStarts":
            assert e.started_at is None and e.state is JobState.FAILED
        elif e.fault == "":
            assert e.state is JobState.COMPLETED and e.tasks_run == 1


def test_chaos_profile_loses_and_duplicates_events() -> None:
    cloud, sched, rec = make_cloud("chaos", seed=4)
    for i in range(150):
        _submit(cloud.backend(Tier.AZURE_ML), spec(f"ev-s{i}-a1", shard=i, tasks=1, spot=True))
    sched.run_all()
    entries = list(cloud.ledger.values())
    sent = sum(e.events_sent for e in entries)
    lost = sum(e.events_lost for e in entries)
    assert 0.05 * sent <= lost <= 0.15 * sent
    ids = Counter(p.body[0]["id"] for p in rec.events())
    duplicated = sum(1 for c in ids.values() if c > 1)
    assert 0.04 * len(ids) <= duplicated <= 0.2 * len(ids)
    kinds = Counter(e.fault for e in entries)
    assert kinds["SpotEviction"] > 0 and kinds["NoNestedVirtualization"] > 0


def test_none_profile_has_no_faults() -> None:
    cloud, sched, rec = make_cloud("none", seed=9)
    for i in range(30):
        tier = list(Tier)[i % 3]
        assert _submit(cloud.backend(tier), spec(f"ev-s{i}-a1", tier=tier, shard=i)) == 0
    sched.run_all()
    assert all(e.state is JobState.COMPLETED for e in cloud.ledger.values())
    assert all(e.tasks_completed == 3 and e.messages_lost == 0 for e in cloud.ledger.values())
    assert not any(m.body["kind"] == "failure" for m in rec.messages())


def test_profiles_are_valid_and_lookup_fails_clearly() -> None:
    assert set(PROFILES) == {"none", "seed", "chaos"}
    assert get_profile("seed") is PROFILES["seed"]
    custom = FaultProfile("custom", vm=TierFaults(hang=1.0))
    assert get_profile(custom) is custom
    with pytest.raises(ValueError, match="unknown fault profile"):
        get_profile("mayhem")
    with pytest.raises(ValueError):
        TierFaults(never_starts=0.7, hang=0.5)
    with pytest.raises(ValueError):
        TierFaults(event_loss=1.5)


def test_custom_profile_drives_every_job() -> None:
    cloud, sched, _ = make_cloud(FaultProfile("all-hang", vm=TierFaults(hang=1.0)))
    for i in range(5):
        cloud.backend(Tier.VM).submit(spec(f"ev-s{i}-a1", tier=Tier.VM, shard=i, tasks=4))
    sched.run_all()
    assert all(e.fault == "HangAfter" and e.tasks_run < 4 for e in cloud.ledger.values())


def test_runner_crash_reports_a_transient_job_failure() -> None:
    cloud, sched, rec = make_cloud()
    s = spec(tasks=3)
    cloud.script(s.job_name, RunnerCrash(tasks=1))
    backend = cloud.backend(Tier.AZURE_ML)
    backend.submit(s)
    sched.run_all()
    kinds = [m.body["kind"] for m in rec.messages(s.job_name)]
    assert kinds.count("task_result") == 1 and kinds[-1] == "failure"
    assert rec.messages(s.job_name)[-1].body["failure"]["permanent"] is False
    status = backend.status(s.job_name)
    assert status.state is JobState.FAILED and status.failure_kind.value == "job_failed"


def test_inject_into_a_running_job() -> None:
    cloud, sched, rec = make_cloud()
    backend = cloud.backend(Tier.VM)
    hang, evict = spec("ev-s0-a1", tier=Tier.VM), spec("ev-s1-a1", tier=Tier.VM, shard=1)
    backend.submit(hang)
    backend.submit(evict)
    sched.advance(600)
    cloud.inject(hang.job_name, HangAfter(0))
    cloud.inject(evict.job_name, SpotEviction())
    at = sched.now()
    sched.advance(3600)
    assert all(m.at <= at for m in rec.messages())
    assert backend.status(hang.job_name).state is JobState.RUNNING
    assert "preempted" in backend.status(evict.job_name).detail
    with pytest.raises(JobNotFoundError):
        cloud.inject("nope-s0-a1", HangAfter(0))
    with pytest.raises(TypeError):
        cloud.inject(hang.job_name, "crash")  # type: ignore[arg-type]


def test_billing_batch_reuse_and_never_started_jobs() -> None:
    cloud, sched, _ = make_cloud()
    backend = cloud.backend(Tier.BATCH)
    first = spec("ev-s0-a1", tier=Tier.BATCH)
    backend.submit(first)
    sched.run_all()
    second = spec("ev-s1-a1", tier=Tier.BATCH, shard=1)
    backend.submit(second)
    submitted = sched.now()
    sched.run_all()
    a, b = cloud.ledger[first.job_name], cloud.ledger[second.job_name]
    # The new node pays provisioning and pull; the reused node starts billing when the task
    # lands on it, and its job is shorter by exactly that set-up.
    assert (a.started_at - a.node_allocated_at).total_seconds() > 480
    assert (b.started_at - b.node_allocated_at).total_seconds() <= 120
    assert (b.node_allocated_at - submitted).total_seconds() <= 30
    for e in (a, b):
        assert e.billed_seconds == (e.ended_at - e.node_allocated_at).total_seconds()
    assert b.billed_seconds < a.billed_seconds
    assert a.cost_usd == pytest.approx(0.208 * a.billed_seconds / 3600)


def test_ledger_bills_a_running_job_up_to_now() -> None:
    cloud, sched, _ = make_cloud()
    s = spec()
    cloud.backend(Tier.AZURE_ML).submit(s)
    sched.advance(1200)
    entry = cloud.ledger[s.job_name]
    assert entry.ended_at is None
    assert entry.billed_seconds == (sched.now() - entry.node_allocated_at).total_seconds()


def test_http_post_reaches_a_loopback_server() -> None:
    seen: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            seen.append((self.path, self.headers["Authorization"], self.rfile.read(length)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/heartbeats"
        assert http_post(url, {"Authorization": "Bearer x"}, b'{"a": 1}') == 202
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("/api/heartbeats", "Bearer x", b'{"a": 1}')]


def test_threading_scheduler_runs_callbacks_in_time_order_and_honours_cancel() -> None:
    sched = ThreadingScheduler()
    try:
        ran: list[str] = []
        done = threading.Event()
        base = sched.now()
        sched.call_at(base + timedelta(milliseconds=60), lambda: (ran.append("c"), done.set()))
        sched.call_at(base + timedelta(milliseconds=20), lambda: ran.append("a"))
        handle = sched.call_at(base + timedelta(milliseconds=40), lambda: ran.append("x"))
        sched.call_at(base - timedelta(seconds=1), lambda: ran.append("past"))
        sched.call_at(base + timedelta(milliseconds=30), lambda: 1 / 0)  # logged, not fatal
        handle.cancel()
        assert done.wait(10)
        assert ran == ["past", "a", "c"]
        assert sched.now().tzinfo is UTC
    finally:
        sched.close()
    with pytest.raises(RuntimeError):
        sched.call_at(datetime.now(UTC), lambda: None)


@pytest.fixture
def clean_install() -> Iterator[None]:
    install_cloud(None)
    load_settings.cache_clear()
    yield
    cloud = simulated._installed
    if cloud is not None and isinstance(cloud.scheduler, ThreadingScheduler):
        cloud.scheduler.close()
    install_cloud(None)
    load_settings.cache_clear()


def test_install_cloud_wins(clean_install: None) -> None:
    cloud, _, _ = make_cloud()
    install_cloud(cloud)
    assert current_cloud() is cloud


def test_current_cloud_from_settings(clean_install: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("HEARTBEAT_SECRET", "s" * 32)
    monkeypatch.setenv("SIM_PROFILE", "chaos")
    monkeypatch.setenv("SIM_SEED", "42")
    monkeypatch.setenv("PUBLIC_BASE_URL", "http://127.0.0.1:7071/")
    cloud = current_cloud()
    assert current_cloud() is cloud
    assert isinstance(cloud, SimulatedCloud) and isinstance(cloud.scheduler, ThreadingScheduler)
    assert cloud.profile.name == "chaos" and cloud.seed == 42
    assert cloud.eventgrid_url == eventgrid_url_for("http://127.0.0.1:7071")
    assert cloud.eventgrid_url == (
        "http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=aml_job_events"
    )
