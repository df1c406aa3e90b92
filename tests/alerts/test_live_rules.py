"""The live alert rules (domain/alerts.py), the state they keep, and the webhook channel."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.alerting import CUSTOM_EVENT_ATTRIBUTE, Alerter, Webhook, delivery_backoff_seconds
from adapters.state.table_store import StateStore
from domain import alerts, bounds
from domain.alerts import LiveAlertKind
from tests.alerts.receiver import WebhookReceiver

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _job(n: int, outcome: str | None, state: str = "failed") -> dict[str, Any]:
    return {
        "job_name": f"waa-e1-s{n}-a1",
        "tier": "azureml",
        "shard_index": n,
        "attempt": 1,
        "state": state,
        **({"attempt_outcome": outcome} if outcome else {}),
    }


def test_retry_rate_fires_above_twenty_percent_of_jobs_only() -> None:
    ok = [_job(i, "completed", "completed") for i in range(8)]
    two_of_ten = [*ok, _job(8, "start_timeout"), _job(9, "stuck")]
    assert alerts.retry_rate(two_of_ten) is None  # 20% is not more than 20%
    three_of_ten = [*ok[:7], _job(7, "job_failed"), _job(8, "start_timeout"), _job(9, "stuck")]
    alert = alerts.retry_rate(three_of_ten)
    assert alert is not None and alert.kind is LiveAlertKind.RETRY_RATE
    assert "3 of 10 jobs (30%)" in alert.text
    # Too few jobs say nothing about a rate; cancelled and budget-stopped jobs are no retry.
    assert alerts.retry_rate([_job(0, "stuck"), _job(1, "stuck")]) is None
    cancelled = [_job(i, "cancelled", "cancelled") for i in range(6)]
    assert alerts.retry_rate(cancelled) is None


def test_breaker_alert_from_the_threshold_on() -> None:
    assert alerts.breaker_opened("batch", 2, 3) is None
    opened = alerts.breaker_opened("batch", 3, 3)
    assert opened is not None and opened.cause == "batch" and "breaker open" in opened.text


def test_budget_alerts_at_eighty_percent_and_when_refused() -> None:
    ev = {"budget_usd": 10.0, "spent_usd": 5.0, "reserved_usd": 2.9}
    assert alerts.budget_alerts(ev) == []
    warned = alerts.budget_alerts({**ev, "reserved_usd": 3.0})
    assert [a.kind for a in warned] == [LiveAlertKind.BUDGET_WARNING]
    refused = alerts.budget_alerts({**ev, "reserved_usd": 0.0}, refused=True)
    assert [a.kind for a in refused] == [
        LiveAlertKind.BUDGET_WARNING,
        LiveAlertKind.BUDGET_EXHAUSTED,
    ]
    assert alerts.budget_alerts({"spent_usd": 1e9}) == []  # no budget, no budget alerts


def test_slow_image_pull_after_five_minutes() -> None:
    job = _job(0, None, "preparing")
    assert alerts.slow_image_pull(job, 300) is None
    slow = alerts.slow_image_pull(job, 301)
    assert slow is not None and "5.0 min" in slow.text


def test_an_alert_is_recorded_once_per_cause(store: StateStore) -> None:
    store.create_evaluation(
        {"evaluation_id": "e1", "created_at": NOW.isoformat()}, shards=[], tasks=[]
    )
    stuck = alerts.job_stuck(_job(0, None, "running"), "no heartbeat for 11 min")
    first = store.record_alert("e1", stuck, NOW)
    assert first is not None and first["kind"] == "job_stuck"
    assert store.record_alert("e1", stuck, NOW + timedelta(minutes=2)) is None
    other = alerts.job_stuck(_job(1, None, "running"), "no heartbeat for 12 min")
    assert store.record_alert("e1", other, NOW) is not None
    rows = store.get_evaluation_rows("e1")
    assert rows is not None and [a["cause"] for a in rows["alerts"]] == [
        "waa-e1-s0-a1",
        "waa-e1-s1-a1",
    ]
    assert len(store.undelivered_alerts()) == 2
    store.alert_delivered("e1", first["key"], NOW)
    assert [r["cause"] for r in store.undelivered_alerts()] == ["waa-e1-s1-a1"]


def test_webhook_delivery_retries_with_backoff_and_never_logs_the_url(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.create_evaluation(
        {"evaluation_id": "e1", "created_at": NOW.isoformat()}, shards=[], tasks=[]
    )
    caplog.set_level(logging.INFO)
    with WebhookReceiver(fail_first=2) as hook:
        alerter = Alerter(store, Webhook(hook.url))
        stuck = alerts.job_stuck(_job(0, None, "running"), "no heartbeat for 11 min")
        assert alerter.fire("e1", stuck, NOW) is True
        assert alerter.fire("e1", stuck, NOW) is False  # once per cause
        alerter.drain()
        assert hook.refused == 1 and hook.received == []
        (pending,) = store.undelivered_alerts()
        assert pending["delivery_attempts"] == 1
        # Not due yet: the sweeper leaves it alone.
        assert alerter.redeliver(NOW + timedelta(seconds=30), 10) == 0
        due = NOW + timedelta(seconds=delivery_backoff_seconds(1) or 0)
        assert alerter.redeliver(due, 10) == 0  # refused a second time
        later = due + timedelta(seconds=delivery_backoff_seconds(2) or 0)
        assert alerter.redeliver(later, 10) == 1
        assert store.undelivered_alerts() == []
        (body,) = hook.received
    assert "is stuck" in body["text"] and "cancelled the job" in body["text"]
    assert body["summary"] == "WAA job_stuck: e1"
    rows = store.get_evaluation_rows("e1")
    assert rows is not None and rows["alerts"][0]["delivered_at"]
    assert "secret-path-of-the-hook" not in caplog.text
    # The Application Insights custom event: one record carrying the event-name attribute.
    events = [r for r in caplog.records if getattr(r, CUSTOM_EVENT_ATTRIBUTE, None)]
    assert len(events) == 1 and events[0].__dict__["alert_kind"] == "job_stuck"
    assert events[0].__dict__["evaluation_id"] == "e1"


def test_delivery_gives_up_after_its_attempts() -> None:
    assert delivery_backoff_seconds(1) == bounds.ALERT_RETRY_BASE_SECONDS
    assert delivery_backoff_seconds(bounds.ALERT_DELIVERY_ATTEMPTS) is None


def test_an_unreachable_webhook_is_an_error_naming_only_its_host() -> None:
    from adapters.alerting import DeliveryError

    hook = Webhook("http://127.0.0.1:9/services/T/B/secret-path")
    with pytest.raises(DeliveryError) as err:
        hook.post(
            {
                "evaluation_id": "e1",
                "text": "t",
                "action": "a",
                "kind": "job_stuck",
                "severity": "error",
            }
        )
    assert "127.0.0.1" in str(err.value) and "secret-path" not in str(err.value)


def test_alerts_of_one_instant_keep_the_order_they_were_noticed_in(store: StateStore) -> None:
    store.create_evaluation(
        {"evaluation_id": "e1", "created_at": NOW.isoformat()}, shards=[], tasks=[]
    )
    stuck = alerts.job_stuck(_job(0, None, "running"), "no heartbeat for 11 min")
    opened = alerts.breaker_opened("azureml", 3, 3)
    assert opened is not None
    store.record_alert("e1", stuck, NOW)
    store.record_alert("e1", opened, NOW)  # the same virtual instant, noticed after
    rows = store.get_evaluation_rows("e1")
    assert rows is not None
    assert [a["kind"] for a in rows["alerts"]] == ["job_stuck", "breaker_open"]


def test_a_crash_between_the_two_writes_leaves_the_alert_to_deliver() -> None:
    """The second of record_alert's two writes fails once (the process dies there): whatever
    noticed the alert runs again (an activity is re-run), and the alert is then both recorded
    and waiting in the outbox — never recorded but forgotten by delivery."""
    from typing import cast

    from azure.data.tables import TableClient

    from tests.fakes.memory_tables import MemoryTableClient

    class DiesOnSecondWrite(MemoryTableClient):
        writes = 0

        def _count(self) -> None:
            self.writes += 1
            if self.writes == 2:
                raise RuntimeError("the process died here")

        def create_entity(self, entity: Any, **kwargs: Any) -> dict[str, Any]:
            self._count()
            return super().create_entity(entity, **kwargs)

        def upsert_entity(self, entity: Any, *args: Any, **kwargs: Any) -> Any:
            self._count()
            return super().upsert_entity(entity, *args, **kwargs)

    table = DiesOnSecondWrite()
    store = StateStore(cast(TableClient, table))
    stuck = alerts.job_stuck(_job(0, None, "running"), "no heartbeat for 11 min")
    with pytest.raises(RuntimeError):
        store.record_alert("e1", stuck, NOW)
    assert store.record_alert("e1", stuck, NOW) is not None  # the re-run records it
    assert [r["cause"] for r in store.undelivered_alerts()] == ["waa-e1-s0-a1"]
    assert store.record_alert("e1", stuck, NOW) is None  # and once only
