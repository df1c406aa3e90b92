"""Live alerts end to end on the devhost: the simulated Azure misbehaves, the app notices while
the evaluation runs, records each alert once on the evaluation, shows it in the status and
delivers it to a loopback incoming webhook — and a failing webhook changes nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from adapters import runtime
from adapters.compute.simulated import HangAfter, LostEvents, NeverStarts
from devhost.simulation import Simulation
from domain.jobs import JobSpec
from tests.alerts.receiver import WebhookReceiver
from tests.e2e.scenario_support import assert_invariants, start

MakeSimulation = Callable[..., Simulation]
SMOKE = {"task_set": "waa-smoke", "workers": 3}
WAIT = 120.0


def _first(shard: int) -> Callable[[JobSpec], bool]:
    return lambda spec: spec.shard_index == shard and spec.attempt == 1


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    fail_first = getattr(request, "param", 0)
    with WebhookReceiver(fail_first=fail_first) as hook:
        os.environ["ALERT_WEBHOOK_URL"] = hook.url
        runtime.reset_services()
        try:
            yield hook
        finally:
            os.environ.pop("ALERT_WEBHOOK_URL", None)
            runtime.reset_services()


def _kinds(view: dict[str, object]) -> list[str]:
    return [a["kind"] for a in view["alerts"]]  # type: ignore[index, union-attr]


def test_never_started_and_stuck_jobs_alert_while_the_evaluation_runs(
    make_simulation: MakeSimulation, webhook: WebhookReceiver
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    sim.cloud.script(lambda spec: True, LostEvents(statuses=frozenset()))
    sim.cloud.script(_first(1), HangAfter(1), times=1)
    seen_running: list[list[str]] = []

    def progress(view: dict[str, object]) -> None:
        if view["state"] == "running" and view["alerts"]:
            seen_running.append(_kinds(view))

    eid = start(sim, {**SMOKE, "heartbeat_timeout_minutes": 5})
    final = sim.wait(eid, timeout=WAIT, on_progress=progress)
    assert_invariants(sim, eid, final)
    assert set(t["outcome"] for t in final["tasks"]) == {"completed"}

    # Noticed while it ran, not only in the end-of-evaluation summary.
    assert seen_running and "start_deadline" in seen_running[-1], seen_running
    kinds = _kinds(final)
    assert kinds.count("start_deadline") == 1 and kinds.count("job_stuck") == 1, kinds
    assert kinds[-1] == "evaluation_finished", kinds
    by_kind = {a["kind"]: a for a in final["alerts"]}
    assert "never started" in by_kind["start_deadline"]["text"]
    assert "cancelled the job" in by_kind["job_stuck"]["action"]
    assert by_kind["job_stuck"]["severity"] == "error"

    texts = webhook.wait_for("never started", "is stuck", f"evaluation {eid} completed")
    # At least once, and once per cause here (nothing failed).
    assert len(texts) == len(kinds), texts
    assert all(t.startswith(("[WARNING]", "[ERROR]", "[INFO]")) for t in texts)
    runtime.services().alerter().drain()
    delivered = sim.status(eid, tasks=False)["alerts"]
    assert all(a["delivered"] for a in delivered), delivered


@pytest.mark.parametrize("webhook", [3], indirect=True)
def test_a_failing_webhook_never_slows_or_breaks_the_evaluation(
    make_simulation: MakeSimulation, webhook: WebhookReceiver
) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(_first(0), NeverStarts(), times=1)
    eid = start(sim, SMOKE)
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final)
    assert final["counts"]["completed"] == final["counts"]["total"]
    # The first deliveries were refused; the sweeper delivered them later, with backoff.
    texts = webhook.wait_for("never started", f"evaluation {eid} completed", timeout=90)
    assert webhook.refused == 3
    assert sum("never started" in t for t in texts) == 1, texts


def test_budget_alerts_fire_before_the_budget_runs_out(
    make_simulation: MakeSimulation, webhook: WebhookReceiver
) -> None:
    sim = make_simulation(profile="none")
    eid = start(sim, {**SMOKE, "budget_usd": 0.25})
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final)
    kinds = _kinds(final)
    assert "budget_warning" in kinds and "budget_exhausted" in kinds, kinds
    at = {a["kind"]: a["at"] for a in final["alerts"]}
    assert at["budget_warning"] <= at["budget_exhausted"], at
    webhook.wait_for("budget at", "budget exhausted")


def test_the_breaker_opening_is_an_alert(make_simulation: MakeSimulation) -> None:
    sim = make_simulation(profile="none")
    sim.cloud.script(
        lambda spec: spec.tier.value == "azureml" and spec.shard_index < 3, NeverStarts()
    )
    eid = start(sim, {"task_set": "waa-smoke", "workers": 4})
    final = sim.wait(eid, timeout=WAIT)
    assert_invariants(sim, eid, final)
    kinds = _kinds(final)
    assert kinds.count("breaker_open") == 1, kinds
    assert kinds.count("start_deadline") >= 3
    # Three of at least six jobs needed a retry: more than 20%.
    assert "retry_rate" in kinds, kinds
    # No webhook configured: recorded and shown, and counted as delivered (nothing to send to).
    assert all(a["delivered"] for a in final["alerts"])
