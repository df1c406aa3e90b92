"""Live alerts, recorded once and delivered at least once where people look.

`fire` records an alert on the evaluation (once per kind and cause, `StateStore.record_alert`)
and, when it is new:
- writes an Application Insights custom event: a log record carrying the attribute
  `microsoft.custom_event.name`, which the Azure Monitor exporter sends as a customEvent
  (azure-monitor-opentelemetry-exporter 1.0.0b58, `export/logs/_exporter.py`, which checks
  `_MICROSOFT_CUSTOM_EVENT_NAME`); with telemetry off it is just a structured log line;
- hands the webhook delivery to a small background pool, so the activity, heartbeat or sweep
  that noticed the problem never waits for a slow or failing webhook.
The alert's outbox row stays until the webhook answered 2xx; the sweeper re-delivers what is
due (`redeliver`) with exponential backoff, so a delivery lost with its process is sent later.

The webhook gets incoming-webhook JSON: `{"text": ...}` is what a Slack incoming webhook posts
(api.slack.com/messaging/webhooks) and what a Teams incoming-webhook connector shows; `summary`
is the Teams notification line and is ignored by Slack. The URL itself is a secret (whoever
has it can post to the channel): it is never logged, and errors name only its host.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests

from adapters.logs import ids
from adapters.state.table_store import StateStore, outbox_key
from domain import bounds
from domain.alerts import LiveAlert
from domain.clock import parse_time

log = logging.getLogger(__name__)

CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"
CUSTOM_EVENT_NAME = "WaaAlert"


class DeliveryError(Exception):
    pass


def delivery_backoff_seconds(attempts: int) -> float | None:
    """When to try again after `attempts` failed deliveries; None: give up."""
    if attempts >= bounds.ALERT_DELIVERY_ATTEMPTS:
        return None
    return float(min(bounds.ALERT_RETRY_BASE_SECONDS * 2 ** (attempts - 1), 3600))


def webhook_payload(row: Mapping[str, Any]) -> dict[str, str]:
    icon = {"error": "[ERROR]", "warning": "[WARNING]"}.get(str(row.get("severity")), "[INFO]")
    text = (
        f"{icon} WAA evaluation {row['evaluation_id']}: {row['text']}\n"
        f"What the control plane did: {row['action']}"
    )
    return {"text": text, "summary": f"WAA {row['kind']}: {row['evaluation_id']}"}


class Webhook:
    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        self._url = url
        self._host = urlsplit(url).hostname or "?"
        self._session = session or requests.Session()

    def post(self, row: Mapping[str, Any]) -> None:
        try:
            response = self._session.post(
                self._url,
                json=webhook_payload(row),
                timeout=(bounds.ALERT_CONNECT_TIMEOUT, bounds.ALERT_READ_TIMEOUT),
            )
        except requests.RequestException as err:
            # Not str(err): requests puts the whole URL (with its secret path) in the message.
            raise DeliveryError(f"webhook at {self._host}: {type(err).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook at {self._host} answered {response.status_code}")


class Alerter:
    """Records and delivers an evaluation's live alerts."""

    def __init__(self, store: StateStore, webhook: Webhook | None) -> None:
        self._store = store
        self._webhook = webhook
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="alert-delivery")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()

    def fire(self, evaluation_id: str, alert: LiveAlert, now: datetime) -> bool:
        """Record `alert`; True when it is new (and so was sent to the channels)."""
        row = self._store.record_alert(evaluation_id, alert, now, deliver=self._webhook is not None)
        if row is None:
            return False
        log.warning(
            "alert %s: %s",
            alert.kind.value,
            alert.text,
            extra={
                CUSTOM_EVENT_ATTRIBUTE: CUSTOM_EVENT_NAME,
                "alert_kind": alert.kind.value,
                "alert_cause": alert.cause,
                "alert_severity": alert.severity.value,
                "alert_action": alert.action,
                **ids(evaluation_id=evaluation_id)["extra"],
            },
        )
        if self._webhook is not None:
            self._submit(row, now)
        return True

    def _submit(self, row: Mapping[str, Any], now: datetime) -> None:
        key = outbox_key(str(row["evaluation_id"]), str(row["key"]))
        with self._lock:
            if key in self._in_flight:
                return
            self._in_flight.add(key)
        self._pool.submit(self._deliver, dict(row), int(row.get("delivery_attempts", 0)), now)

    def _deliver(self, row: dict[str, Any], attempts: int, now: datetime) -> bool:
        eid, key = str(row["evaluation_id"]), str(row["key"])
        try:
            return self._post_and_record(row, attempts, now)
        except Exception:  # never let a delivery thread die silently
            log.exception("alert delivery crashed", **ids(evaluation_id=eid))
            return False
        finally:
            # Only once the outcome is recorded: a sweep that finds the key free then finds
            # the outbox row gone (delivered) or rescheduled (failed).
            with self._lock:
                self._in_flight.discard(outbox_key(eid, key))

    def _post_and_record(self, row: dict[str, Any], attempts: int, now: datetime) -> bool:
        eid, key = str(row["evaluation_id"]), str(row["key"])
        try:
            assert self._webhook is not None
            self._webhook.post(row)
        except DeliveryError as err:
            attempts += 1
            delay = delivery_backoff_seconds(attempts)
            log.warning(
                "alert delivery failed (attempt %d): %s%s",
                attempts,
                err,
                "; giving up" if delay is None else "",
                **ids(evaluation_id=eid),
            )
            self._store.alert_delivery_failed(
                eid,
                key,
                attempts=attempts,
                next_at=None if delay is None else now + timedelta(seconds=delay),
                error=str(err),
            )
            return False
        self._store.alert_delivered(eid, key, now)
        return True

    def redeliver(self, now: datetime, budget_seconds: float) -> int:
        """Deliver the outbox rows that are due (the sweeper's part), within a time budget.
        Returns how many were delivered."""
        if self._webhook is None:
            return 0
        started = time.monotonic()
        delivered = 0
        for row in self._store.undelivered_alerts():
            if time.monotonic() - started > budget_seconds:
                break
            due = parse_time(row.get("next_delivery_at"))
            if due is not None and due > now:
                continue
            key = outbox_key(str(row["evaluation_id"]), str(row["key"]))
            with self._lock:
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
            # Read it again now that nobody else delivers it: a delivery that ended since the
            # outbox was listed has removed or rescheduled it.
            fresh = self._store.undelivered_alert(str(row["evaluation_id"]), str(row["key"]))
            if fresh is None or fresh.get("next_delivery_at") != row.get("next_delivery_at"):
                with self._lock:
                    self._in_flight.discard(key)
                continue
            if self._deliver(fresh, int(fresh.get("delivery_attempts", 0)), now):
                delivered += 1
        return delivered

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for deliveries in flight (tests, and the devhost at shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._in_flight:
                    return
            time.sleep(0.02)
