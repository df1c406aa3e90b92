"""Structured logging: every record about a job carries its ids as fields.

Usage: `log.info("job submitted", **ids(evaluation_id=e, shard=s, attempt=a, job_name=j))`.
In Azure the fields become custom dimensions through OpenTelemetry's logging handler (the worker's
own log forwarding drops them; see adapters.telemetry); the local host prints them as JSON. Never
pass secrets (tokens, keys, connection strings) as fields or in messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

FIELDS = ("evaluation_id", "shard", "attempt", "job_name", "tier", "instance_id")
REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove secret values from text that may echo a request (service error messages and a
    failed SSH command's output do)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def ids(**fields: Any) -> dict[str, Any]:
    return {"extra": {k: v for k, v in fields.items() if v is not None}}


def configure_json_logging(handler: logging.Handler, level: int = logging.INFO) -> None:
    """Structured logs for a local host: the app's records as JSON lines; the Azure SDKs'
    per-request HTTP logging (INFO) is left out as noise. Replaces the root logger's handlers,
    except OpenTelemetry's (adapters.telemetry), so with telemetry on the same records go to
    both."""
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if not type(old).__module__.startswith("opentelemetry."):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("azure").setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, default=str)
